//! What a verify asks and answers: the request, the code, the verdict.
//!
//! Plain types that import nothing of the audit log, so that the audit entries can name a
//! [`VerifyCode`] while the key operations make audit events: no import circle between them.

use serde::{Deserialize, Serialize};

use super::shared::{RawMeta, Scopes};
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
    /// Scopes (VALID only), shared with the key cache's copy of the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Scopes>,
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
