//! Documentation-only types: the OpenAPI schemas of answers that are vault-core's own types
//! (`KeyInfo`, `Verdict`, ...), sent as vault-core serialises them. vault-core does not depend on
//! utoipa, so each is mirrored here under the same schema name; a test compares the documented
//! properties with real answers, so a field added on one side and not the other fails it.
//!
//! Also the body types that requests and those schemas share ([`RateLimitBody`]), so that route
//! modules depend on this one and never the other way round.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault_core::keys::RateLimit;

/// A key as show, list and update report it. Never a secret. Times are Unix seconds.
#[derive(ToSchema)]
#[schema(as = KeyInfo)]
#[allow(dead_code)] // Only documents `vault_core::keys::KeyInfo`, which is what is sent.
pub(crate) struct KeyInfoDoc {
    /// The public key id (24 hex characters).
    #[schema(example = "0123456789abcdef01234567")]
    key_id: String,
    owner: String,
    name: String,
    scopes: Vec<String>,
    #[schema(value_type = Object)]
    meta: (),
    created_at: u64,
    updated_at: u64,
    expires_at: Option<u64>,
    enabled: bool,
    revoked_at: Option<u64>,
    ratelimit: Option<RateLimitBody>,
    /// Credits left, if limited.
    credits: Option<u64>,
    recoverable: bool,
    /// When the previous secret stops working, during a rotation's grace period.
    previous_secret_expires_at: Option<u64>,
    status: KeyStatusDoc,
}

/// A key's state.
#[derive(ToSchema)]
#[schema(as = KeyStatus)]
#[allow(dead_code)] // Only documents `vault_core::keys::KeyStatus`.
pub(crate) enum KeyStatusDoc {
    #[schema(rename = "active")]
    Active,
    #[schema(rename = "disabled")]
    Disabled,
    #[schema(rename = "expired")]
    Expired,
    #[schema(rename = "revoked")]
    Revoked,
}

/// A new or rotated key: `key` is the full key, shown only in this answer.
#[derive(ToSchema)]
#[schema(as = IssuedKey)]
#[allow(dead_code)] // Only documents what `issued_body` writes.
pub(crate) struct IssuedKeyDoc {
    /// The full key text. Store it now: it is never shown again (unless recoverable).
    #[schema(format = Password)]
    key: String,
    #[schema(inline)]
    #[serde(flatten)]
    info: KeyInfoDoc,
}

/// The answer of `POST /v1/keys/{id}/reveal`.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents what `reveal_key` writes.
pub(crate) struct RevealedKey {
    /// The full key text.
    #[schema(format = Password)]
    key: String,
    /// The key id.
    key_id: String,
}

/// The outcome of a verify. `key_id` and `owner` are present only when the secret matched;
/// `scopes` and `meta` only when valid. Times are Unix seconds.
#[derive(ToSchema)]
#[schema(as = Verdict)]
#[allow(dead_code)] // Only documents `vault_core::keys::Verdict`, which is what is sent.
pub(crate) struct VerdictDoc {
    /// `code == "VALID"`.
    valid: bool,
    code: VerifyCodeDoc,
    key_id: Option<String>,
    owner: Option<String>,
    scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    meta: Option<()>,
    expires_at: Option<u64>,
    /// Credits left after this verify, if the key has a credit limit.
    credits_remaining: Option<u64>,
    ratelimit: Option<RateLimitStateDoc>,
    /// Present when the old secret of a rotation was used: warn its holder.
    previous_secret: Option<PreviousSecretDoc>,
}

/// Verify codes, checked in this order; the first that applies is the answer.
#[derive(ToSchema)]
#[schema(as = VerifyCode, rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)] // Only documents `vault_core::keys::VerifyCode`.
pub(crate) enum VerifyCodeDoc {
    Malformed,
    NotFound,
    Revoked,
    Disabled,
    Expired,
    InsufficientScope,
    RateLimited,
    UsageExceeded,
    Valid,
}

/// The key's rate-limit state after this verify.
#[derive(ToSchema)]
#[schema(as = RateLimitState)]
#[allow(dead_code)] // Only documents `vault_core::keys::RateLimitState`.
pub(crate) struct RateLimitStateDoc {
    limit: u32,
    remaining: u32,
    /// Seconds until one more request is allowed.
    reset_seconds: u64,
}

/// The old secret of a rotation.
#[derive(ToSchema)]
#[schema(as = PreviousSecret)]
#[allow(dead_code)] // Only documents `vault_core::keys::PreviousSecret`.
pub(crate) struct PreviousSecretDoc {
    /// When it stops working (Unix seconds).
    expires_at: u64,
}

/// A forward-auth refusal: the verdict (with `x-keyvault-code`), or an error body when no verify
/// ran (no valid vault token, a scope conflict, the throttle). Written by hand: an untagged
/// `oneOf` of two schemas that are documented elsewhere.
pub(crate) struct AuthRefusalDoc;

impl utoipa::PartialSchema for AuthRefusalDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::OneOfBuilder;
        OneOfBuilder::new()
            .item(Ref::from_schema_name("Verdict"))
            .item(Ref::from_schema_name("ErrorBody"))
            .description(Some("The verdict, or an error body when no verify ran"))
            .into()
    }
}

impl ToSchema for AuthRefusalDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "AuthRefusal".into()
    }
}

/// Usage of a key or an owner over a time range, bucket by bucket. Times are Unix seconds.
#[derive(ToSchema)]
#[schema(as = UsageReport)]
#[allow(dead_code)] // Only documents `vault_core::usage::UsageReport`, which is what is sent.
pub(crate) struct UsageReportDoc {
    /// The key (in a key's report only).
    key_id: Option<String>,
    /// The owner.
    owner: String,
    bucket: GranularityDoc,
    /// Start of the first bucket.
    from: u64,
    /// End of the last bucket (exclusive).
    to: u64,
    /// Every bucket of the range, in order, empty ones included.
    buckets: Vec<UsageBucketDoc>,
    /// The whole range: `start` is `from`, and each client address counts once.
    totals: UsageBucketDoc,
    /// Audit entries counted: those with a sequence number below this.
    covers_seq: u64,
}

/// One bucket of a usage report.
#[derive(ToSchema)]
#[schema(as = UsageBucket)]
#[allow(dead_code)] // Only documents `vault_core::usage::UsageBucket`.
pub(crate) struct UsageBucketDoc {
    /// Start of the bucket (Unix seconds).
    start: u64,
    /// Verifies by code (`VALID`, `NOT_FOUND` for a wrong secret with the key's id, ...); only
    /// codes that occurred.
    #[schema(value_type = Object)]
    counts: (),
    /// Verifies of every code.
    total: u64,
    /// Credits spent.
    credits_spent: u64,
    /// Distinct client addresses.
    distinct_clients: u64,
    /// More addresses were seen than are kept (1024 a bucket): `distinct_clients` is a lower
    /// bound.
    clients_truncated: bool,
}

/// Bucket size.
#[derive(ToSchema)]
#[schema(as = Granularity, rename_all = "lowercase")]
#[allow(dead_code)] // Only documents `vault_core::usage::Granularity`.
pub(crate) enum GranularityDoc {
    Hour,
    Day,
}

/// A suspicious-activity signal and its evidence. Never a secret. Times in ms.
#[derive(ToSchema)]
#[schema(as = Signal)]
#[allow(dead_code)] // Only documents `vault_core::usage::Signal`.
pub(crate) struct SignalDoc {
    /// Increasing id (`unattributed_failures` and `disk_alarm` signals are numbered apart).
    id: u64,
    kind: SignalKindDoc,
    /// The key concerned (none for `unattributed_failures` and `disk_alarm`).
    key_id: Option<String>,
    /// Its owner.
    owner: Option<String>,
    /// First occurrence (Unix ms).
    first_at_ms: u64,
    /// Last occurrence (Unix ms).
    last_at_ms: u64,
    /// Occurrences (for `rate_spike`: verifies in the hour).
    count: u64,
    /// Sequence number of the first audit entry that is evidence.
    first_seq: Option<u64>,
    /// Sequence number of the last one.
    last_seq: Option<u64>,
    /// Client addresses involved (at most 16).
    clients: Vec<String>,
    /// More addresses were involved than are listed.
    clients_truncated: bool,
    /// `previous_secret_near_expiry`: when the old secret stops working (Unix seconds).
    previous_secret_expires_at: Option<u64>,
    /// `rate_spike`: the key's average verifies per hour before.
    baseline_per_hour: Option<u64>,
}

/// What a signal saw.
#[derive(ToSchema)]
#[schema(as = SignalKind, rename_all = "snake_case")]
#[allow(dead_code)] // Only documents `vault_core::usage::SignalKind`.
pub(crate) enum SignalKindDoc {
    /// A wrong secret presented with an existing key id.
    WrongSecret,
    /// The old secret of a rotation used near the end of its grace period.
    PreviousSecretNearExpiry,
    /// The right secret from an address not seen for the key in the window.
    NewClient,
    /// An hour's verifies several times the key's recent hourly average.
    RateSpike,
    /// Failed verifies without an end-user address, past the threshold in a minute.
    UnattributedFailures,
    /// The data directory's filesystem passed its high-water mark (count: the readings over
    /// it).
    DiskAlarm,
}

/// A rate limit: `limit` requests per `period_seconds` (both at least 1).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// Requests per period.
    limit: u32,
    /// Period length in seconds.
    period_seconds: u32,
}

impl From<RateLimitBody> for RateLimit {
    fn from(r: RateLimitBody) -> RateLimit {
        RateLimit {
            limit: r.limit,
            period_seconds: r.period_seconds,
        }
    }
}
