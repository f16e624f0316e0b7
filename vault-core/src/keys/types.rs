//! What key management takes and gives: new keys, updates, the reported record, pages, and
//! the limits on what a key holds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::apikey::{ApiKey, KeyId};

/// Longest owner id, in bytes.
pub const MAX_OWNER: usize = 128;
/// Longest key name, in bytes.
pub const MAX_NAME: usize = 256;
/// Most scopes on a key.
pub const MAX_SCOPES: usize = 64;
/// Longest scope, in bytes.
pub const MAX_SCOPE: usize = 128;
/// Largest meta object, in bytes of its JSON.
pub const MAX_META: usize = 4096;
/// Most keys one list call returns.
pub const MAX_PAGE: usize = 1000;

/// Requests allowed per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests per period (at least 1).
    pub limit: u32,
    /// Period length in seconds (at least 1).
    pub period_seconds: u32,
}

/// How often a key's credits are restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    /// At every 00:00 UTC.
    Daily,
    /// At 00:00 UTC of the refill's `day` of every month (clamped to the month's last day).
    Monthly,
}

/// Credits that come back: at the start of each interval (UTC) the remaining credits are set to
/// `amount`, at the first verify after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    /// What the remaining credits are set to.
    pub amount: u64,
    /// How often.
    pub interval: RefillInterval,
    /// For a monthly refill, the day of the month (1 to 31; default 1); a month without that
    /// day refills on its last day. None for a daily refill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u8>,
}

/// What `create_key` makes.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// The photo service's customer id (1 to 128 bytes).
    pub owner: String,
    /// A label (up to 256 bytes).
    pub name: String,
    /// Scopes the key grants (up to 64 of up to 128 bytes).
    pub scopes: Vec<String>,
    /// A small JSON object returned by verify (up to 4 KiB).
    pub meta: Map<String, Value>,
    /// Unix seconds after which the key is expired.
    pub expires_at: Option<u64>,
    /// Whether the key starts disabled.
    pub disabled: bool,
    /// Requests per period.
    pub ratelimit: Option<RateLimit>,
    /// Uses left; none for unlimited.
    pub credits: Option<u64>,
    /// Credits restored at each interval (needs `credits`).
    pub refill: Option<Refill>,
    /// Keep an encrypted copy of the secret that an admin can reveal.
    pub recoverable: bool,
}

impl NewKey {
    /// A key for `owner` with every other field at its default.
    pub fn new(owner: impl Into<String>) -> NewKey {
        NewKey {
            owner: owner.into(),
            ..NewKey::default()
        }
    }
}

/// Changes to a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// New name.
    pub name: Option<String>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// New meta.
    pub meta: Option<Map<String, Value>>,
    /// New expiry (`Some(None)` removes it).
    pub expires_at: Option<Option<u64>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New rate limit (`Some(None)` removes it).
    pub ratelimit: Option<Option<RateLimit>>,
    /// New credits (`Some(None)` makes the key unlimited, and drops any refill).
    pub credits: Option<Option<u64>>,
    /// New refill (`Some(None)` removes it); the key must have credits.
    pub refill: Option<Option<Refill>>,
}

/// A key's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Disabled by a manager; can be enabled again.
    Disabled,
    /// Past its expiry.
    Expired,
    /// Revoked for good.
    Revoked,
}

/// A key as show and list report it. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    /// The public key id (24 hex characters).
    pub key_id: KeyId,
    /// Owner id.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Meta object.
    pub meta: Map<String, Value>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// Unix seconds, if the key expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Whether the key is enabled.
    pub enabled: bool,
    /// Unix seconds, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimit>,
    /// Credits left, if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<u64>,
    /// How the credits come back, if they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
    /// Unix seconds of the last refill (or of when the refill was set), if the key has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refilled_at: Option<u64>,
    /// Whether the key was imported (its first secret is the text it had elsewhere).
    pub imported: bool,
    /// Whether an admin can reveal the secret.
    pub recoverable: bool,
    /// When the previous secret stops working, during a rotation grace period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<u64>,
    /// Derived state.
    pub status: KeyStatus,
}

/// A new or rotated key: the text is shown once.
#[derive(Debug)]
pub struct IssuedKey {
    /// The key; its text comes only from [`ApiKey::expose_secret_text`].
    pub key: ApiKey,
    /// The record.
    pub info: KeyInfo,
}

/// A filter and a page for `list_keys`.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this owner's keys.
    pub owner: Option<String>,
    /// Only keys of exactly this name (case as given), found through the name index.
    pub name: Option<String>,
    /// Only keys in this state.
    pub status: Option<KeyStatus>,
    /// Start after this key id (the previous page's cursor).
    pub after: Option<KeyId>,
    /// Page size (default 100, at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyPage {
    /// The keys, in key-id order.
    pub keys: Vec<KeyInfo>,
    /// Pass as `after` to get the next page; none on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<KeyId>,
}
