//! The arguments of the ceremonies, `operator rekey` and `operator generate-root`.

use std::path::PathBuf;

use clap::Args;

/// One holder's part in a ceremony: which ceremony, and their own current credential.
#[derive(Debug, Args)]
pub struct CeremonyArgs {
    /// Join the ceremony with this nonce (the initiator prints it).
    #[arg(long, value_name = "NONCE")]
    pub nonce: Option<String>,
    /// Your own current share: `-` to be prompted without echo (or read from stdin when piped).
    /// A literal share works but is visible in `ps` and shell history. Without --share or
    /// --passphrase-file you are prompted.
    #[arg(long, value_name = "SHARE", conflicts_with = "passphrase_file")]
    pub share: Option<String>,
    /// The current passphrase in this file (a passphrase vault).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Give your share only if the ceremony's configuration digest is this one (as the
    /// initiator read it to you); else nothing is given.
    #[arg(long, value_name = "HEX", requires = "nonce")]
    pub digest: Option<String>,
    /// Only show the ceremony: its progress, description and digest.
    #[arg(long, requires = "nonce", conflicts_with_all = ["share", "passphrase_file", "cancel"])]
    pub status: bool,
    /// Cancel the ceremony (anyone who may start one and knows its nonce).
    #[arg(long, requires = "nonce", conflicts_with_all = ["share", "passphrase_file"])]
    pub cancel: bool,
}

/// `keyvault operator rekey`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
  # The initiator: 3 new shares, 2 to unseal, each encrypted to its holder's age key\n  \
  keyvault operator rekey --new-shares 3 --new-threshold 2 \\\n    \
  --new-share-recipient age1alice... --new-share-recipient age1bob... --new-share-recipient age1carol...\n  \
  # Each holder of a current share, in their own shell (prompted without echo):\n  \
  keyvault operator rekey --nonce 3f2a...\n  \
  # A passphrase vault to a new passphrase: start, then give the current one\n  \
  keyvault operator rekey --new-passphrase-file new.txt --passphrase-file current.txt\n  \
  # Show or cancel the ceremony\n  \
  keyvault operator rekey --nonce 3f2a... --status\n  \
  keyvault operator rekey --nonce 3f2a... --cancel")]
pub struct RekeyArgs {
    /// Start: the new passphrase in this file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["new_shares", "new_threshold", "nonce"])]
    pub new_passphrase_file: Option<PathBuf>,
    /// Start: make this many new shares.
    #[arg(
        long,
        value_name = "N",
        requires = "new_threshold",
        conflicts_with = "nonce"
    )]
    pub new_shares: Option<u8>,
    /// Start: new shares needed to unseal.
    #[arg(long, value_name = "T", requires = "new_shares")]
    pub new_threshold: Option<u8>,
    /// Start: encrypt a new share to this age X25519 recipient (`age1...`); repeat once per new
    /// share, in order. Without it the new shares are shown once, in clear, to the holder whose
    /// share completes the ceremony.
    #[arg(
        long = "new-share-recipient",
        value_name = "AGE_RECIPIENT",
        requires = "new_shares"
    )]
    pub new_share_recipients: Vec<String>,
    #[command(flatten)]
    pub ceremony: CeremonyArgs,
}

/// `keyvault operator generate-root`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
  # The initiator (no token needed); waits for the holders, then prints the token\n  \
  keyvault operator generate-root\n  \
  # Or keep the one-time key in a file and come back later\n  \
  keyvault operator generate-root --identity-file gen-root.key\n  \
  # Each holder of a current share, in their own shell (prompted without echo):\n  \
  keyvault operator generate-root --nonce 3f2a...\n  \
  # The initiator opens the encrypted token the last holder got\n  \
  keyvault operator generate-root --decrypt token.age --identity-file gen-root.key")]
pub struct GenerateRootArgs {
    /// Start: write the one-time age identity to this new file (0600) and end once started;
    /// without it the key stays in this process, which waits for the token. With --decrypt:
    /// the identity to decrypt with.
    #[arg(long, value_name = "FILE")]
    pub identity_file: Option<PathBuf>,
    /// Decrypt an encrypted token (armored age, as the ceremony answered it; `-` for stdin)
    /// with --identity-file, and print it. Talks to no server.
    #[arg(long, value_name = "FILE", requires = "identity_file", conflicts_with_all = ["nonce", "share", "passphrase_file", "status", "cancel"])]
    pub decrypt: Option<PathBuf>,
    #[command(flatten)]
    pub ceremony: CeremonyArgs,
}
