//! The arguments of `keyvault key ...`.

use clap::{Args, Subcommand, ValueEnum};

use super::duration::duration;

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
        after_help = "Examples:\n  keyvault key list --owner customer-42\n  keyvault key list --name mobile-app --owner customer-42\n  keyvault key list --status revoked --limit 50"
    )]
    List {
        /// Only this owner's keys.
        #[arg(long)]
        owner: Option<String>,
        /// Only keys with exactly this name (case as given, no prefix match; through the name
        /// index). A vault upgraded from an older build refuses it until that index is built
        /// in the background after unseal: try again later.
        #[arg(long)]
        name: Option<String>,
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
    /// Import existing keys from a JSON Lines file (one key a line, by its text or its
    /// SHA-256); safe to run again: keys already in the vault are reported `exists`.
    #[command(
        after_help = "Each line: {\"key\": \"<the key's text>\", \"owner\": \"customer-42\", ...} or {\"sha256\": \"<64 lowercase hex>\", \"owner\": ...}, with the fields of POST /v1/keys.\n\nExamples:\n  keyvault key import keys.jsonl\n  keyvault --json key import keys.jsonl > results.jsonl"
    )]
    Import {
        /// The JSON Lines file.
        file: std::path::PathBuf,
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
    #[command(flatten)]
    pub refill: RefillArgs,
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
    /// Set the credits left (with --refill-amount: and how they come back; without: the
    /// refill stays as it is).
    #[arg(long, conflicts_with = "unlimited")]
    pub credits: Option<u64>,
    #[command(flatten)]
    pub refill: RefillArgs,
    /// Remove the credit limit.
    #[arg(long)]
    pub unlimited: bool,
}

/// How often credits come back.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RefillInterval {
    /// At 00:00 UTC every day.
    Daily,
    /// At 00:00 UTC of --refill-day every month.
    Monthly,
}

/// Credits that come back: `--refill-amount N --refill-interval daily|monthly [--refill-day D]`.
#[derive(Debug, Args)]
pub struct RefillArgs {
    /// Restore the credits to this many at each interval's start (needs --credits).
    #[arg(long, requires_all = ["credits", "refill_interval"])]
    pub refill_amount: Option<u64>,
    /// How often the credits come back (UTC).
    #[arg(long, value_enum, requires = "refill_amount")]
    pub refill_interval: Option<RefillInterval>,
    /// Monthly: the day of the month (1 to 31, default 1; a shorter month refills on its last).
    #[arg(long, requires = "refill_amount", value_parser = clap::value_parser!(u8).range(1..=31))]
    pub refill_day: Option<u8>,
}
