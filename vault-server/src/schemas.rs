//! Documentation-only types: the OpenAPI schemas of answers that are vault-core's own types
//! (`KeyInfo`, `Verdict`, ...), sent as vault-core serialises them. vault-core does not depend on
//! utoipa, so each is mirrored here under the same schema name; a test compares the documented
//! properties with real answers, so a field added on one side and not the other fails it.
//!
//! Also the body types that requests and those schemas share ([`RateLimitBody`]), so that route
//! modules depend on this one and never the other way round.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault_core::keys::{RateLimit, Refill, RefillInterval};

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
    /// How the credits come back, if they do.
    refill: Option<RefillBody>,
    /// When the credits were last refilled (or the refill set), if they come back.
    refilled_at: Option<u64>,
    /// Whether the key was imported (`POST /v1/keys/import`).
    imported: bool,
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

/// Credits: a number of uses left, or the uses left and how they come back.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreditsBody {
    /// Uses left (each verify spends its `cost`).
    Count(u64),
    /// Uses left, and a refill.
    Limited(CreditsObject),
}

/// Credits with a refill: `remaining` now, restored to `refill.amount` at each interval.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsObject {
    /// Uses left now.
    remaining: u64,
    /// How the credits come back (none: they do not).
    #[serde(default)]
    refill: Option<RefillBody>,
}

/// By hand rather than `#[serde(untagged)]`, whose one message ("did not match any variant")
/// would not say what is wrong with a number or with a field of the object.
impl<'de> Deserialize<'de> for CreditsBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CreditsBody, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CreditsBody;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of credits (0 or more) or {\"remaining\", \"refill\"}")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CreditsBody, E> {
                Ok(CreditsBody::Count(n))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CreditsBody, E> {
                u64::try_from(n)
                    .map(CreditsBody::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CreditsBody, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                CreditsObject::deserialize(d).map(CreditsBody::Limited)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl CreditsBody {
    /// The credits left and the refill (none for a plain number).
    pub(crate) fn parts(self) -> (u64, Option<Refill>) {
        match self {
            CreditsBody::Count(n) => (n, None),
            CreditsBody::Limited(c) => (c.remaining, c.refill.map(Refill::from)),
        }
    }

    /// Whether the refill was spelt out (an object), so that an update replaces it.
    pub(crate) fn is_object(&self) -> bool {
        matches!(self, CreditsBody::Limited(_))
    }
}

/// Credits that come back at the start of each interval (UTC), at the first verify after it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Refill)]
pub struct RefillBody {
    /// What the credits are set to at each interval's start.
    #[schema(minimum = 1)]
    amount: u64,
    interval: RefillIntervalBody,
    /// Monthly only: the day of the month (1 to 31, default 1); a shorter month refills on
    /// its last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31)]
    day: Option<u8>,
}

/// How often credits come back: at 00:00 UTC every day, or on the refill's day every month.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = RefillInterval)]
pub enum RefillIntervalBody {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every month at 00:00 UTC of `day`.
    Monthly,
}

impl From<RefillBody> for Refill {
    fn from(r: RefillBody) -> Refill {
        Refill {
            amount: r.amount,
            interval: match r.interval {
                RefillIntervalBody::Daily => RefillInterval::Daily,
                RefillIntervalBody::Monthly => RefillInterval::Monthly,
            },
            day: r.day,
        }
    }
}
