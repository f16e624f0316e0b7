//! The command-line grammar.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
        after_help = "Examples:\n  keyvault init --data-dir /var/lib/keyvault --shares 5 --threshold 3\n  keyvault init --data-dir ./vault --passphrase-file pass.txt\n  keyvault --json init --data-dir ./vault --shares 3 --threshold 2 > init.json"
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
    #[command(after_help = "Examples:\n  keyvault seal")]
    Seal,
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
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  keyvault completions bash > /etc/bash_completion.d/keyvault"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `keyvault init`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("method").required(true).args(["passphrase_file", "shares"])))]
pub struct InitArgs {
    /// Data directory of the new vault (created 0700 if missing; must be empty).
    #[arg(long, env = "KEYVAULT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Unseal with the passphrase in this file (at least 12 characters; one trailing newline is
    /// not part of it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["shares", "threshold"])]
    pub passphrase_file: Option<PathBuf>,
    /// Unseal with Shamir shares: make this many (at most 255).
    #[arg(long, value_name = "N", requires = "threshold")]
    pub shares: Option<u8>,
    /// Shares needed to unseal (2 <= T <= N).
    #[arg(long, value_name = "T")]
    pub threshold: Option<u8>,
    /// Prefix of the API keys this vault issues: 2 to 8 lowercase letters.
    #[arg(long, default_value = "pvk")]
    pub prefix: String,
    /// Use test-grade Argon2id parameters (64 KiB, t=1). Only for tests and demos: the vault is
    /// marked and every unseal warns.
    #[arg(long)]
    pub insecure_kdf: bool,
}

/// `keyvault serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory of the vault.
    #[arg(long, env = "KEYVAULT_DATA_DIR", required_unless_present_any = ["dev", "config"])]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8731); loopback only unless `--insecure-listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Listen on this Unix socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    pub unix_socket: Option<PathBuf>,
    /// A TOML config file (listen, data_dir, unix_socket, trusted_proxies, limits); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Allow a non-loopback address without TLS (traffic, tokens and keys in the clear).
    #[arg(long)]
    pub insecure_listen: bool,
    /// Serve TLS with this PEM certificate chain (with --tls-key); required for a non-loopback
    /// address unless --insecure-listen.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Unseal at start with the passphrase in this file.
    #[arg(long, value_name = "FILE")]
    pub unseal_passphrase_file: Option<PathBuf>,
    /// A throwaway vault in a temporary directory, unsealed, with test-grade Argon2: prints a
    /// root token, a sample key and curl lines; removes its data on exit.
    #[arg(long, conflicts_with_all = ["data_dir", "unseal_passphrase_file"])]
    pub dev: bool,
}

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

/// Key statuses for `key list --status`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    /// Usable.
    Active,
    /// Disabled.
    Disabled,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// `keyvault key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its text is shown once.
    #[command(
        after_help = "Examples:\n  keyvault key create --owner customer-42 --scope photos:write --credits 1000\n  keyvault key create --owner customer-42 --ttl 30d --rate-limit 100 --rate-period 60\n  keyvault --json key create --owner customer-42 | jq -r .key"
    )]
    Create(KeyCreateArgs),
    /// List keys (never a secret).
    #[command(
        after_help = "Examples:\n  keyvault key list --owner customer-42\n  keyvault key list --status revoked --limit 50"
    )]
    List {
        /// Only this owner's keys.
        #[arg(long)]
        owner: Option<String>,
        /// Only keys in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Page size (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this key id (the previous page's `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one key.
    #[command(after_help = "Examples:\n  keyvault key show 0123456789abcdef01234567")]
    Show {
        /// Key id (24 hex digits).
        id: String,
    },
    /// Change a key's fields.
    #[command(
        after_help = "Examples:\n  keyvault key update 0123456789abcdef01234567 --name mobile-app --scope photos:read\n  keyvault key update 0123456789abcdef01234567 --disable"
    )]
    Update(KeyUpdateArgs),
    /// Give a key a new secret (same id); the old one works for --grace.
    #[command(after_help = "Examples:\n  keyvault key rotate 0123456789abcdef01234567 --grace 1h")]
    Rotate {
        /// Key id.
        id: String,
        /// How long the old secret keeps working (never past the key's expiry): seconds, or
        /// 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "0", value_parser = duration, value_name = "DURATION")]
        grace: u64,
    },
    /// Revoke a key for good, or every key of an owner.
    #[command(
        after_help = "Examples:\n  keyvault key revoke 0123456789abcdef01234567\n  keyvault key revoke --owner customer-42"
    )]
    Revoke {
        /// Key id.
        #[arg(required_unless_present = "owner", conflicts_with = "owner")]
        id: Option<String>,
        /// Revoke all of this owner's keys.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show the secret of a key created --recoverable (admin; audited).
    #[command(after_help = "Examples:\n  keyvault key reveal 0123456789abcdef01234567")]
    Reveal {
        /// Key id.
        id: String,
    },
    /// Verify a key (exit 0 when VALID, 1 otherwise).
    #[command(
        after_help = "Examples:\n  printf %s \"$KEY\" | keyvault key verify - --scope photos:write"
    )]
    Verify {
        /// The key; `-` reads it from stdin (keeps it out of `ps`).
        key: String,
        /// A scope the key must hold.
        #[arg(long)]
        scope: Option<String>,
        /// Credits to spend.
        #[arg(long)]
        cost: Option<u64>,
    },
    /// A key's usage per day (verifies by code, credits spent, client addresses) as a chart,
    /// and its suspicious-activity signals (manager).
    #[command(after_help = "Examples:\n  keyvault key usage 0123456789abcdef01234567 --days 30")]
    Usage {
        /// Key id.
        id: String,
        /// Days to show, ending today (1 to 400).
        #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u64).range(1..=400))]
        days: u64,
    },
}

/// `keyvault key create`.
#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// The customer the key belongs to.
    #[arg(long)]
    pub owner: String,
    /// A label.
    #[arg(long)]
    pub name: Option<String>,
    /// A scope the key grants (repeat for several).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// A JSON object returned by verify.
    #[arg(long)]
    pub meta: Option<String>,
    /// Expiry as RFC 3339 (2030-01-01T00:00:00Z).
    #[arg(long, conflicts_with = "ttl")]
    pub expires_at: Option<String>,
    /// Expiry from now: seconds, or 90s, 15m, 1h, 7d.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub ttl: Option<u64>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Requests allowed per --rate-period.
    #[arg(long, requires = "rate_period")]
    pub rate_limit: Option<u32>,
    /// Rate-limit period in seconds.
    #[arg(long, requires = "rate_limit")]
    pub rate_period: Option<u32>,
    /// Uses allowed; unlimited when absent.
    #[arg(long)]
    pub credits: Option<u64>,
    /// Keep an encrypted copy an admin can reveal.
    #[arg(long)]
    pub recoverable: bool,
    /// Makes a retry safe: the same value within 24 h returns the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `keyvault key update`.
#[derive(Debug, Args)]
pub struct KeyUpdateArgs {
    /// Key id.
    pub id: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New scopes (repeat; replaces them all).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Remove every scope.
    #[arg(long, conflicts_with = "scopes")]
    pub no_scopes: bool,
    /// New meta JSON object.
    #[arg(long)]
    pub meta: Option<String>,
    /// New expiry (RFC 3339).
    #[arg(long, conflicts_with = "no_expiry")]
    pub expires_at: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    pub no_expiry: bool,
    /// Enable the key.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the key.
    #[arg(long)]
    pub disable: bool,
    /// New rate limit (with --rate-period).
    #[arg(long, requires = "rate_period", conflicts_with = "no_rate_limit")]
    pub rate_limit: Option<u32>,
    /// Rate-limit period in seconds.
    #[arg(long, requires = "rate_limit")]
    pub rate_period: Option<u32>,
    /// Remove the rate limit.
    #[arg(long)]
    pub no_rate_limit: bool,
    /// Set the credits left.
    #[arg(long, conflicts_with = "unlimited")]
    pub credits: Option<u64>,
    /// Remove the credit limit.
    #[arg(long)]
    pub unlimited: bool,
}

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
}

/// `keyvault audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the audit log (auditor), streamed, ending with a fresh signed checkpoint.
    #[command(
        after_help = "Examples:\n  keyvault audit export -o audit.jsonl\n  keyvault audit export --owner customer-42 --since 2026-12-01T00:00:00Z --format csv -o customer-42.csv"
    )]
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify an export offline with the vault's public key (no server needed). Exit 0 when it
    /// verifies, 1 with the entry that failed otherwise.
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
        /// checkpoint: unfiltered, with no entry missing. The `filtered` mark in the header
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
    #[command(
        after_help = "Examples:\n  keyvault operator backup -o /srv/backups/keyvault-$(date +%F).kvbak"
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
    #[command(
        after_help = "Examples:\n  keyvault operator restore /srv/backups/keyvault-2026-12-01.kvbak --data-dir /var/lib/keyvault-restored"
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

/// `keyvault operator backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (created 0600).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `keyvault operator restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`keyvault operator backup -o FILE`).
    pub file: PathBuf,
    /// Data directory to restore into: must not exist, or be empty (created 0700).
    #[arg(long, env = "KEYVAULT_DATA_DIR")]
    pub data_dir: PathBuf,
}

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

/// `keyvault witness ...`.
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Run a witness: it cosigns a vault's audit checkpoint only if it extends the largest one
    /// of that log it has cosigned, so a vault whose data directory is rolled back to an older
    /// copy cannot get a second history cosigned. Run it on another host than the vaults.
    ///
    /// It speaks C2SP tlog-witness over HTTP at the root of --listen: a vault configured with
    /// the witness URL http://HOST:PORT posts to http://HOST:PORT/add-checkpoint, and monitors
    /// read GET /ORIGIN_HASH/checkpoint (the SHA-256 of the log's origin, hex). At the first
    /// start it makes its Ed25519 key in DIR and prints its verifier key (later starts log it).
    /// Keep DIR safe: a witness that lost its state must be retired, never restarted blank.
    #[command(after_help = "Example:\n  \
        keyvault witness serve --data-dir /var/lib/keyvault-witness \\\n    \
        --listen 0.0.0.0:8732 --insecure-listen --log @/etc/keyvault-witness/vault-a.pub")]
    Serve(WitnessServeArgs),
    /// Print the verifier key of the witness in DIR (it may be running), as vault operators
    /// configure it in `[[audit.witness]]` and auditors give it to `audit verify --witness`.
    #[command(after_help = "Example:\n  keyvault witness key --data-dir /var/lib/keyvault-witness")]
    Key {
        /// The witness's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// `keyvault witness serve`.
#[derive(Debug, Args)]
pub struct WitnessServeArgs {
    /// The witness's data directory: its key and what it has cosigned (created 0700).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to listen on; loopback only unless --insecure-listen.
    #[arg(long, default_value = "127.0.0.1:8732")]
    pub listen: SocketAddr,
    /// A log to witness: a vault's audit public key as `keyvault init` printed it, or @FILE.
    /// Repeat for several vaults, and for a vault whose audit key was rotated give its new key
    /// beside the old one (`operator rotate-audit-key` prints it): any of a log's keys is
    /// accepted for it.
    #[arg(long = "log", value_name = "KEY", required = true)]
    pub logs: Vec<String>,
    /// The witness's key name, used only at the first start [default:
    /// keyvault-witness/HOSTNAME].
    #[arg(long)]
    pub name: Option<String>,
    /// Allow a non-loopback address. The witness speaks plain HTTP: what it receives and
    /// returns is signed, so TLS is optional, but without it anyone on the path sees which
    /// checkpoints (sizes and roots, nothing secret) it is sent and can delay or drop them. Put
    /// a TLS reverse proxy in front if that matters.
    #[arg(long)]
    pub insecure_listen: bool,
}

/// A duration in seconds from `90`, `90s`, `15m`, `1h` or `7d` (one number, one unit at most).
/// Written by hand: humantime's grammar ("1h 30m", "2 weeks") is more than the CLI promises.
pub fn duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: give seconds, or 90s, 15m, 1h, 7d"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: give seconds, or 90s, 15m, 1h, 7d"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod duration_tests {
    use super::duration;

    #[test]
    fn durations_are_seconds_or_a_number_with_a_unit() {
        assert_eq!(duration("90"), Ok(90));
        assert_eq!(duration("90s"), Ok(90));
        assert_eq!(duration("15m"), Ok(900));
        assert_eq!(duration("1h"), Ok(3_600));
        assert_eq!(duration("7d"), Ok(604_800));
        for bad in [
            "",
            "h",
            "1x",
            "1h30m",
            "-1",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
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
