//! The arguments of `keyvault token ...`.

use clap::{Subcommand, ValueEnum};

use super::duration::duration;

/// Token roles.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Verify keys.
    Verifier,
    /// Manage keys (and verify).
    Manager,
    /// Read the audit log.
    Auditor,
    /// Seal, rotate, rewrap, rekey.
    Operator,
    /// Everything.
    Admin,
}

/// `keyvault token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its text is shown once.
    #[command(
        after_help = "Examples:\n  keyvault token create --role verifier --name photo-service\n  keyvault token create --role auditor --ttl 7d"
    )]
    Create {
        /// The token's role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime (never longer than the creating token's): seconds, or 90s, 15m, 1h, 7d.
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        ttl: Option<u64>,
    },
    /// List tokens (never a secret).
    #[command(
        after_help = "Examples:\n  keyvault token list\n  keyvault --json token list | jq '.tokens[] | select(.role == \"admin\")'"
    )]
    List,
    /// Revoke a token at once.
    #[command(after_help = "Examples:\n  keyvault token revoke 0123456789abcdef01234567")]
    Revoke {
        /// Token id (24 hex digits).
        id: String,
    },
}
