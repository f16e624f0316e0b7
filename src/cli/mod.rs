//! The command-line grammar: `Cli` with its global flags and the top-level commands here, the
//! arguments of each command family in its own file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod audit;
mod backup;
mod ceremony;
mod cluster;
mod duration;
mod keys;
mod operator;
mod serve;
mod tokens;
mod witness;

pub use audit::{AuditCommand, AuditFilter, Format};
pub use backup::{BackupArgs, RestoreArgs};
pub use ceremony::{CeremonyArgs, GenerateRootArgs, RekeyArgs};
pub use cluster::ClusterCommand;
pub use keys::{KeyCommand, KeyCreateArgs, KeyUpdateArgs, RefillArgs, RefillInterval, Status};
pub use operator::{OperatorCommand, UnsealArgs};
pub use serve::{InitArgs, ServeArgs};
pub use tokens::TokenCommand;
pub use witness::{WitnessCommand, WitnessServeArgs};

/// keyvault: an API-key vault with encrypted records and a tamper-evident audit log.
///
/// Most commands talk to a running server (`keyvault serve`) at --addr with a vault token;
/// `init`, `serve`, `audit verify`, `operator restore` and `witness` work on files.
#[derive(Debug, Parser)]
#[command(
    name = "keyvault",
    bin_name = "keyvault",
    version,
    after_help = "Exit codes: 0 success; 1 error; 2 the vault is sealed (`keyvault status` only).\n\
                  Environment: KEYVAULT_ADDR, KEYVAULT_TOKEN, KEYVAULT_CACERT (a PEM CA for https),\n\
                  KEYVAULT_DATA_DIR, KEYVAULT_LOG (log filter, default info).\n\n\
                  Examples:\n  keyvault serve --dev\n  keyvault key create --owner customer-42\n  \
                  keyvault audit export -o audit.jsonl"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the server is and which token to send: before or after the command.
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is and which token to send.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The vault's address: http://HOST:PORT, https://HOST:PORT or unix:///PATH.
    #[arg(
        long,
        env = "KEYVAULT_ADDR",
        default_value = "http://127.0.0.1:8731",
        global = true
    )]
    pub addr: String,
    /// For https: trust the vault's certificate when this PEM CA (or the self-signed
    /// certificate itself) signed it.
    #[arg(long, env = "KEYVAULT_CACERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// A vault token. Visible in `ps` and shell history: prefer --token-file or KEYVAULT_TOKEN.
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the vault token.
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialise a new vault in a data directory; prints the root token, the shares and the
    /// audit public key once.
    #[command(
        after_help = "Examples:\n  keyvault init --data-dir /var/lib/keyvault --shares 5 --threshold 3\n  keyvault init --data-dir ./vault --passphrase-file pass.txt\n  keyvault init --config node.toml --shares 5 --threshold 3   # a cluster vault, once per etcd prefix\n  keyvault --json init --data-dir ./vault --shares 3 --threshold 2 > init.json"
    )]
    Init(InitArgs),
    /// Run the HTTP server over a vault (sealed until unsealed), or a throwaway dev vault.
    #[command(
        after_help = "Examples:\n  keyvault serve --dev\n  keyvault serve --data-dir /var/lib/keyvault\n  keyvault serve --config /etc/keyvault/keyvault.toml --unseal-passphrase-file /run/credentials/keyvault.service/passphrase"
    )]
    Serve(ServeArgs),
    /// Show whether the vault is sealed (exit 0 unsealed, 2 sealed, 1 error).
    #[command(
        after_help = "Examples:\n  keyvault status\n  keyvault status --addr unix:///run/keyvault/keyvault.sock || echo sealed or down"
    )]
    Status,
    /// Unseal with the passphrase or one share (prompts without echo when neither is given).
    #[command(
        after_help = "Examples:\n  keyvault unseal                       # prompts for a share or the passphrase, without echo\n  keyvault unseal --share - < share.txt\n  keyvault unseal --reset               # forget the progress (asks for a share you gave)"
    )]
    Unseal(UnsealArgs),
    /// Seal the vault: every key leaves memory until it is unsealed again.
    #[command(
        after_help = "Examples:\n  keyvault seal\n  keyvault seal --cluster   # every node of a cluster vault; each unseals on its own"
    )]
    Seal {
        /// Seal every node of a cluster vault, this one last (answered once every live node
        /// has begun sealing or fenced itself).
        #[arg(long)]
        cluster: bool,
    },
    /// Create, list, show, update, rotate, revoke, reveal and verify API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create, list and revoke vault tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Export, verify and follow the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Keyring rotation, rewrap, rekey, root-token generation, backup and restore (operator).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// List the open suspicious-activity signals with their evidence (manager or auditor):
    /// wrong secrets for a key's id, a new client address, a rate spike, an old secret near its
    /// end, failures from no end-user address.
    #[command(
        after_help = "Examples:\n  keyvault signals\n  keyvault signals --owner customer-42 --since 2026-12-01T00:00:00Z\n  keyvault --json signals | jq '.signals[] | select(.kind == \"wrong_secret\")'"
    )]
    Signals {
        /// Only the signals of this owner's keys.
        #[arg(long)]
        owner: Option<String>,
        /// Only signals seen at or after this time (RFC 3339, or Unix seconds).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// Run a witness that cosigns vaults' audit checkpoints (C2SP tlog-witness), or print its
    /// key.
    #[command(subcommand)]
    Witness(WitnessCommand),
    /// A cluster vault's nodes (DESIGN section 10).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  keyvault completions bash > /etc/bash_completion.d/keyvault"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod example_tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Every command's help has examples, and every example parses (the part before any pipe,
    /// redirection, `&&` or comment).
    #[test]
    fn every_help_has_examples_that_parse() {
        fn walk(cmd: &clap::Command, path: &mut Vec<String>, seen: &mut usize) {
            let leaf = cmd.get_subcommands().next().is_none();
            let help = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            // A line ending in `\` goes on on the next.
            let help = help.replace("\\\n", " ");
            if leaf && cmd.get_name() != "help" {
                assert!(
                    help.contains("Example"),
                    "`{}` has no example",
                    path.join(" ")
                );
            }
            for line in help
                .lines()
                .filter(|l| l.trim_start().starts_with("keyvault "))
            {
                let cut = ["|", ">", "<", "&&", "#", "$("]
                    .iter()
                    .filter_map(|m| line.find(m))
                    .min()
                    .unwrap_or(line.len());
                let args: Vec<String> = line[..cut]
                    .split_whitespace()
                    .map(|a| a.trim_matches('\'').to_owned())
                    .collect();
                if let Err(e) = Cli::try_parse_from(&args) {
                    panic!("the example `{}` does not parse: {e}", line.trim());
                }
                *seen += 1;
            }
            for sub in cmd.get_subcommands() {
                path.push(sub.get_name().to_owned());
                walk(sub, path, seen);
                path.pop();
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), &mut vec!["keyvault".into()], &mut seen);
        assert!(seen > 30, "{seen} examples");
    }
}
