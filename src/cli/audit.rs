//! The arguments of `keyvault audit ...`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Verifiable JSON Lines.
    Jsonl,
    /// CSV for spreadsheets.
    Csv,
}

/// Filters shared by export and tail.
#[derive(Debug, Args, Clone)]
pub struct AuditFilter {
    /// Entries at or after this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    pub until: Option<String>,
    /// Entries of this owner.
    #[arg(long)]
    pub owner: Option<String>,
    /// Entries of this key id.
    #[arg(long)]
    pub key: Option<String>,
    /// Entries of this event (key.verify, key.create, sys.unseal, ...).
    #[arg(long)]
    pub event: Option<String>,
    /// Entries with this outcome (VALID, NOT_FOUND, ... for verifies; ok, denied, ...).
    #[arg(long)]
    pub outcome: Option<String>,
}

/// `keyvault audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the audit log (auditor), streamed, ending with a fresh signed checkpoint.
    #[command(
        after_help = "Examples:\n  keyvault audit export -o audit.jsonl\n  keyvault audit export --owner customer-42 --since 2026-12-01T00:00:00Z --format csv -o customer-42.csv\n  keyvault audit export --node web-2 -o web-2.jsonl\n  keyvault audit export --cluster -o cluster.jsonl"
    )]
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// A cluster vault: export node ID's log, fetched from that node's own address as the
        /// server given by --addr lists it (`keyvault cluster status`), with the same token.
        #[arg(long, value_name = "ID", conflicts_with = "cluster")]
        node: Option<String>,
        /// A cluster vault: export every node's log into one file (JSON Lines only): a first
        /// line naming the vault and every node the cluster ever registered, then each node's
        /// export. Fails, naming the node, if any node cannot be reached.
        #[arg(long)]
        cluster: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify an export offline with the vault's public key (no server needed). Exit 0 when it
    /// verifies, 1 with the entry that failed otherwise. A cluster export (`audit export
    /// --cluster`) is verified node by node, each log against its own checkpoints, and fails
    /// if a node the cluster registered has no log in it.
    #[command(
        after_help = "Examples:\n  keyvault audit verify audit.jsonl --public-key @audit.pub\n  keyvault audit verify audit.jsonl --public-key @audit.pub --complete --checkpoint kept-checkpoint.txt\n  keyvault audit verify audit.jsonl --public-key @audit.pub --witness @w1.pub --witness @w2.pub --min-cosignatures 2"
    )]
    Verify {
        /// The JSON Lines export.
        file: PathBuf,
        /// The audit public key as `init` printed it, or @FILE. Keep it after `operator
        /// rotate-audit-key`: the export carries each rotation, signed by the old key and the
        /// new one, and verify follows it (a newer key works too).
        #[arg(long)]
        public_key: String,
        /// An earlier signed checkpoint (a file) the export's log must extend.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Also fail unless the export is the whole log from entry 0 (or --from) to its
        /// checkpoint: unfiltered, with no entry missing (each node's log, in a cluster
        /// export). The `filtered` mark in the header
        /// is not signed, so this is checked on what the signed root proves.
        #[arg(long)]
        complete: bool,
        /// With --complete: the first entry the export must hold, when you hold the archives
        /// of every entry before it (the `upto` of the last one) [default: 0].
        #[arg(long, value_name = "SEQ", requires = "complete")]
        from: Option<u64>,
        /// A witness's verifier key (as `keyvault witness key` printed it, or @FILE) whose
        /// cosignature on the export's checkpoint counts; repeat for each witness.
        #[arg(long, value_name = "KEY")]
        witness: Vec<String>,
        /// Fail unless at least K of the --witness keys cosigned the export's checkpoint: a
        /// cosignature says the witness saw no other history of the log up to it [default:
        /// every --witness given].
        #[arg(long, value_name = "K", requires = "witness")]
        min_cosignatures: Option<usize>,
    },
    /// Follow the audit log as entries arrive (auditor). Ends when the token is revoked or
    /// expires, or the vault seals.
    #[command(
        after_help = "Examples:\n  keyvault audit tail\n  keyvault audit tail --event key.verify --owner customer-42"
    )]
    Tail {
        #[command(flatten)]
        filter: AuditFilter,
        /// Start with the last N entries of the log (those of them the filters select), then
        /// follow; 0 shows only new ones.
        #[arg(short = 'n', long = "lines", default_value_t = 10, value_name = "N")]
        lines: u64,
    },
    /// Move the entries up to a signed checkpoint out of the live log into an archive file
    /// (operator). The file is written, synced and verified before the vault drops anything;
    /// it verifies on its own with `keyvault audit verify`. Verifies keep running throughout.
    /// Keep archives off the vault's host: they are the only copy of those entries.
    #[command(
        after_help = "Examples:\n  keyvault audit archive --upto latest\n  keyvault audit archive --upto 1000000 -o /srv/archives/audit-0-1000000.jsonl"
    )]
    Archive {
        /// The tree size of a checkpoint the vault signed (see `checkpoints.jsonl` in the data
        /// directory, or `GET /v1/audit/checkpoint`), or `latest` to archive the whole log.
        #[arg(long, value_name = "CHECKPOINT")]
        upto: String,
        /// The archive file to write [default: keyvault-audit-FIRST-UPTO.jsonl]. An existing
        /// file is never overwritten.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Check the archive against this audit public key (as `init` printed it, or @FILE)
        /// instead of the one the vault sends with it.
        #[arg(long)]
        public_key: Option<String>,
    },
}
