//! What a verify asks and answers: the request, the code, the verdict.
//!
//! Plain types that import nothing of the audit log, so that the audit entries can name a
//! [`VerifyCode`] while the key operations make audit events: no import circle between them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::apikey::KeyId;

/// The answer of verify, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    /// Not a key of this vault's format, or a bad checksum.
    Malformed,
    /// Unknown id or wrong secret (one answer: no oracle).
    NotFound,
    /// Revoked.
    Revoked,
    /// Disabled.
    Disabled,
    /// Past its expiry.
    Expired,
    /// Lacks the required scope.
    InsufficientScope,
    /// Over its rate limit.
    RateLimited,
    /// Out of credits.
    UsageExceeded,
    /// Valid.
    Valid,
}

impl VerifyCode {
    /// The code as the API writes it (the same text as its serde form).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// The presented key text.
    pub key: &'a str,
    /// A scope the key must hold: at most [`MAX_SCOPE`](crate::keys::MAX_SCOPE) bytes, else the
    /// verify is refused ([`Error::InvalidInput`](crate::Error::InvalidInput)) before anything
    /// is logged.
    pub scope: Option<&'a str>,
    /// Credits to spend (default 1; 0 checks without spending).
    pub cost: u64,
}

impl<'a> VerifyRequest<'a> {
    /// Verify `key` with no scope and a cost of 1.
    pub fn new(key: &'a str) -> VerifyRequest<'a> {
        VerifyRequest {
            key,
            scope: None,
            cost: 1,
        }
    }
}

/// Rate-limit state reported with a verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimitState {
    /// Requests per period.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until one more request is allowed.
    pub reset_seconds: u64,
}

/// The old secret used during a rotation's grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PreviousSecret {
    /// When it stops working.
    pub expires_at: u64,
}

/// The answer to a verify. Key id and owner are set only when the secret matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// `code == VALID`.
    pub valid: bool,
    /// The code.
    pub code: VerifyCode,
    /// The key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    /// The owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Scopes (VALID only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Meta (VALID only), as the key's JSON object text: [`RawMeta::to_map`] parses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<RawMeta>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Credits left after this verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_remaining: Option<u64>,
    /// Rate-limit state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimitState>,
    /// Set when the old secret of a rotation was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
}

impl Verdict {
    pub(super) fn refused(code: VerifyCode) -> Verdict {
        Verdict {
            valid: false,
            code,
            key_id: None,
            owner: None,
            scopes: None,
            meta: None,
            expires_at: None,
            credits_remaining: None,
            ratelimit: None,
            previous_secret: None,
        }
    }
}

/// A key's meta object as JSON text, serialised as that object.
///
/// A verify hands the meta on (to an HTTP answer, most often) rather than reading it, so it is
/// copied out of the key as the text the key record holds instead of parsed into a map: the
/// parse and the map's many small allocations were a third of a typical key's verify cost
/// outside hashing. The text is what serialising the key's [`Map`] gives (`serde_json`,
/// compact, keys in the map's order), so a verdict serialises to the same bytes as with the map.
#[derive(Clone)]
pub struct RawMeta(Box<RawValue>);

impl RawMeta {
    /// The meta of a key whose record holds `text`: an empty text (no meta) or one that is not
    /// JSON reads as the empty object, as when it was parsed into a map.
    pub(crate) fn from_text(text: &str) -> RawMeta {
        // Validating is a scan without allocation, far cheaper than building the map; records
        // hold text that `serde_json` wrote, so the fallback is for damaged ones only.
        match RawValue::from_string(text.to_owned()) {
            Ok(raw) if raw.get().starts_with('{') => RawMeta(raw),
            _ => RawMeta::empty(),
        }
    }

    fn empty() -> RawMeta {
        // `{}` is JSON, so this cannot fail.
        RawMeta(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    }

    /// The JSON text, compact.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The meta parsed into a map (empty if the text is, against expectation, no object).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.json()).unwrap_or_default()
    }
}

impl From<&Map<String, Value>> for RawMeta {
    fn from(map: &Map<String, Value>) -> RawMeta {
        // A map of JSON values always serialises (its keys are strings).
        serde_json::to_string(map).map_or_else(|_| RawMeta::empty(), |t| RawMeta::from_text(&t))
    }
}

impl Serialize for RawMeta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Equal when the texts are: two texts that `serde_json` wrote from equal maps are equal.
impl PartialEq for RawMeta {
    fn eq(&self, other: &RawMeta) -> bool {
        self.json() == other.json()
    }
}

impl Eq for RawMeta {}

/// The JSON text: meta is the key's public description, no secret.
impl fmt::Debug for RawMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}
