//! The arguments of `unseal` and `keyvault operator ...` (the ceremonies' and backups' own
//! arguments are in `ceremony` and `backup`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::backup::{BackupArgs, RestoreArgs};
use super::ceremony::{GenerateRootArgs, RekeyArgs};

/// `keyvault unseal`.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The passphrase in this file.
    #[arg(long, value_name = "FILE", conflicts_with = "share")]
    pub passphrase_file: Option<PathBuf>,
    /// One share; `-` prompts for it without echo (or reads stdin when piped). A literal share
    /// is visible in `ps` and shell history.
    #[arg(long)]
    pub share: Option<String>,
    /// Forget the shares submitted so far. Only one of their holders may: give your submitted
    /// share again (with `--share`, or when prompted). With none submitted, nothing happens.
    #[arg(long, conflicts_with = "passphrase_file")]
    pub reset: bool,
}

/// `keyvault operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add a keyring term: new writes use it, old records still decrypt.
    #[command(after_help = "Examples:\n  keyvault operator rotate && keyvault operator rewrap")]
    Rotate,
    /// Re-encrypt every record under the newest keyring term.
    #[command(after_help = "Examples:\n  keyvault operator rewrap")]
    Rewrap,
    /// New audit signing, digest and index keys: a new audit key generation (operator).
    ///
    /// Appends an `audit.key_rotated` entry that carries the new audit public key, signs the
    /// checkpoint that first includes it with the old key and the new one, and every later
    /// checkpoint with the new key only; then rebuilds the owner index under the new index key,
    /// online. Old checkpoints still verify and old digests can still be asked for. Auditors
    /// keep the key they pinned (`audit verify` follows the rotation); give the new key to your
    /// witnesses (`keyvault witness serve --log OLD --log NEW`). Prints the new key.
    #[command(after_help = "Examples:
          keyvault operator rotate-audit-key
          keyvault operator rotate-audit-key --json | jq -r .public_key > audit-key.pub")]
    RotateAuditKey,
    /// New root key and new unseal credential (passphrase or shares, either way round),
    /// approved by the holders of the current one, each in their own process.
    ///
    /// The initiator (an operator token) starts the ceremony with the new configuration and
    /// gets a nonce and a digest of the new configuration. Each holder then runs `keyvault
    /// operator rekey --nonce N`, checks the digest with the initiator out of band, and gives
    /// their own current share (prompted without echo, or `--share -` from stdin); a passphrase
    /// vault completes with one `--passphrase-file`. The share that reaches the threshold
    /// completes the rekey: the new shares are shown to that holder once, or, with
    /// `--new-share-recipient` at the start, each comes back encrypted to its age recipient
    /// (armored), which `age -d -i IDENTITY` opens. The ceremony expires after ten minutes.
    Rekey(RekeyArgs),
    /// Mint a new admin token when every admin token is lost: no token needed, only the unseal
    /// credential, given by its holders each in their own process.
    ///
    /// The initiator runs it without --nonce: a one-time age key is made for this ceremony, the
    /// vault answers a nonce and a digest, and the token will come back encrypted to that key
    /// only. Without --identity-file the initiator's process keeps the key and waits until the
    /// holders are done, then prints the token; with it, the key is written to that file (0600)
    /// and the process ends, and `--decrypt FILE --identity-file ID` opens the encrypted token
    /// later. Each holder runs `keyvault operator generate-root --nonce N` and gives their own
    /// current share (or the passphrase). The vault must be unsealed.
    GenerateRoot(GenerateRootArgs),
    /// Write a consistent copy of the running vault to a file, without stopping it (operator).
    ///
    /// The copy holds the whole vault: seal configuration, keyring, key and token records,
    /// credits, and the audit log with its tree and signed checkpoints. Verifies and writes go
    /// on while it runs; the copy is the vault as it was at one instant near the end, each
    /// change there with its audit entry or neither. It works sealed too. The download is
    /// written to FILE.tmp, checked end to end (framing, counts, SHA-256), synced and then
    /// renamed to FILE, mode 0600.
    ///
    /// The file is as sensitive as the data directory: records are encrypted, but the audit log
    /// names owners and client addresses in the clear. Restoring it needs the passphrase or
    /// shares that are current now: keep the credential of each backup's time with it.
    ///
    /// Through a node of a cluster vault the file holds the shared state at one etcd revision
    /// and that node's own log; `--cluster` backs up every node into a directory.
    #[command(
        after_help = "Examples:\n  keyvault operator backup -o /srv/backups/keyvault-$(date +%F).kvbak\n  keyvault operator backup --cluster -o /srv/backups/keyvault-$(date +%F)"
    )]
    Backup(BackupArgs),
    /// Restore a backup file into a new data directory (offline: no server, no token).
    ///
    /// DIR must not exist or be empty. The vault is built beside it and renamed into place only
    /// once it is whole and checked (its last audit checkpoint verifies with its public key and
    /// matches its stored tree), so a failed restore leaves nothing. A truncated or corrupted
    /// file is refused. Then `keyvault serve --data-dir DIR` and unseal it with the passphrase
    /// or shares that were current when the backup was taken; its audit log goes on from the
    /// backed-up one, so exports verify against checkpoints kept from before.
    ///
    /// A cluster node's backup is restored with `--config node.toml` on each node's host, from
    /// the backup taken through that node, the earliest backup first: it writes the vault's
    /// shared state into the configured etcd prefix (which must be new), and each node's own
    /// log into its data directory.
    #[command(
        after_help = "Examples:\n  keyvault operator restore /srv/backups/keyvault-2026-12-01.kvbak --data-dir /var/lib/keyvault-restored\n  keyvault operator restore /srv/backups/node-a-2026-12-01.kvbak --config /etc/keyvault/node.toml"
    )]
    Restore(RestoreArgs),
    /// Recompute the usage summaries and signals from the whole audit log, on a stopped vault
    /// (no server, no unseal: the log needs no key).
    #[command(
        after_help = "Examples:\n  keyvault operator usage-rebuild --data-dir /var/lib/keyvault     # with the server stopped"
    )]
    UsageRebuild {
        /// Data directory of the vault.
        #[arg(long, env = "KEYVAULT_DATA_DIR")]
        data_dir: PathBuf,
        /// Signal thresholds from this config file's `[usage]` section (else the defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}
