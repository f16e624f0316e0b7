//! API keys: create, show, list, update, revoke, rotate, reveal and verify.
//!
//! A key record is stored encrypted (see `record`) under its 12-byte key id. It holds the
//! HMAC-SHA256 digest of the secret under the lookup key of the term that made it, never the
//! secret. Verification reads a cached, decrypted copy of the record: the hot path does no store
//! read and no decryption once a key has been seen. Every change to a key goes through the
//! key's cache entry while holding its lock, so revoke, disable, update and rotate are seen by
//! the very next verify.
//!
//! Rate limits are a token bucket per key (capacity `limit`, refilled at `limit` per
//! `period_seconds`), kept in memory: they reset when the process restarts. Credits are durable:
//! a spend is committed (with its audit entry) before the verify answers, while the key's lock is
//! held, so N concurrent verifies of a key with C credits give exactly C successes.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::apikey::{ApiKey, KeyId, KeySecret};
use crate::audit::Event;
use crate::clock::now;
use crate::context::Context;
use crate::crypto::{self, SecretKey};
use crate::keyring::Keyring;
use crate::storage::{Batch, Space};
use crate::{Error, Result, Vault, codec, record};

mod cache;
pub(crate) mod owner_index;

use cache::Lookup;
pub use cache::{DEFAULT_KEYS_CACHED, DEFAULT_UNKNOWN_IDS_CACHED};
pub(crate) use cache::{KeyCache, Slot};
pub use owner_index::IndexRebuild;

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
    /// New credits (`Some(None)` makes the key unlimited).
    pub credits: Option<Option<u64>>,
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

/// The answer of verify, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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
    /// The code as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Disabled => "DISABLED",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::InsufficientScope => "INSUFFICIENT_SCOPE",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::UsageExceeded => "USAGE_EXCEEDED",
            VerifyCode::Valid => "VALID",
        }
    }
}

/// What to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// The presented key text.
    pub key: &'a str,
    /// A scope the key must hold: at most [`MAX_SCOPE`] bytes, else the verify is refused
    /// ([`Error::InvalidInput`]) before anything is logged.
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

/// What [`Vault::verify_async`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum AsyncVerify {
    /// The verdict, its entry durable.
    Verdict(Verdict),
    /// The verify must wait where a thread may block: it would spend credits (committed under
    /// its key's lock), or its key is locked by a change being committed. Nothing was done;
    /// call [`Vault::verify`] on a thread that may block.
    MustBlock,
}

/// A decided verify (see `Vault::verify_step`).
enum Step {
    /// Answered, with nothing (more) to commit.
    Done(Verdict),
    /// Answer once this batch and entry are committed.
    Commit(Batch, Event, Verdict),
    /// A credit spend, or a key locked by a change, where blocking is not allowed.
    MustBlock,
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
    /// Meta (VALID only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Map<String, Value>>,
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
    fn refused(code: VerifyCode) -> Verdict {
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

/// A secret's digest and the term whose lookup key made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Digest {
    pub term: u32,
    pub mac: [u8; 32],
}

impl Digest {
    fn of(lookup: &SecretKey, term: u32, id: &KeyId, secret: &KeySecret) -> Digest {
        Digest {
            term,
            mac: crypto::hmac(lookup, &[id.as_bytes(), secret.expose_bytes()]),
        }
    }

    /// The digest of a token secret (the same construction under the token lookup key).
    pub(crate) fn of_token(
        lookup: &SecretKey,
        term: u32,
        id: &KeyId,
        secret: &KeySecret,
    ) -> Digest {
        Digest::of(lookup, term, id, secret)
    }

    /// Constant-time check of a presented token secret.
    pub(crate) fn matches_token(&self, keyring: &Keyring, id: &KeyId, secret: &KeySecret) -> bool {
        self.matches(keyring, id, secret, true)
    }

    /// Constant-time check of a presented secret.
    fn matches(&self, keyring: &Keyring, id: &KeyId, secret: &KeySecret, token: bool) -> bool {
        let Some(term) = keyring.term(self.term) else {
            return false;
        };
        let key = if token {
            &term.token_lookup
        } else {
            &term.key_lookup
        };
        let mac = crypto::hmac(key, &[id.as_bytes(), secret.expose_bytes()]);
        mac.ct_eq(&self.mac).into()
    }
}

/// The stored key record (bincode, inside the record envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    owner: String,
    name: String,
    scopes: Vec<String>,
    /// The meta object as JSON text (bincode cannot carry `serde_json::Value`).
    meta: String,
    created_at: u64,
    updated_at: u64,
    expires_at: Option<u64>,
    enabled: bool,
    revoked_at: Option<u64>,
    ratelimit: Option<RateLimit>,
    recoverable: bool,
    current: Digest,
    previous: Option<(Digest, u64)>,
}

impl KeyRecord {
    fn status(&self, now: u64) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if !self.enabled {
            KeyStatus::Disabled
        } else if self.expires_at.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    fn meta(&self) -> Map<String, Value> {
        serde_json::from_str(&self.meta).unwrap_or_default()
    }

    fn info(&self, id: KeyId, credits: Option<u64>, now: u64) -> KeyInfo {
        KeyInfo {
            key_id: id,
            owner: self.owner.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            meta: self.meta(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            enabled: self.enabled,
            revoked_at: self.revoked_at,
            ratelimit: self.ratelimit,
            credits,
            recoverable: self.recoverable,
            previous_secret_expires_at: self
                .previous
                .filter(|(_, until)| *until > now)
                .map(|(_, until)| until),
            status: self.status(now),
        }
    }
}

/// A key's cached state: the decrypted record, its credits and its rate-limit bucket.
#[derive(Debug)]
pub(crate) struct Cached {
    record: KeyRecord,
    credits: Option<u64>,
    bucket: Option<Bucket>,
}

/// Token bucket: `tokens` refills at `limit / period` per second up to `limit`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: &RateLimit) -> Bucket {
        Bucket {
            tokens: f64::from(limit.limit),
            at: Instant::now(),
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let rate = f64::from(limit.limit) / f64::from(limit.period_seconds.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(limit.limit));
        self.at = now;
    }

    fn state(&self, limit: &RateLimit) -> RateLimitState {
        let rate = f64::from(limit.limit) / f64::from(limit.period_seconds.max(1));
        let missing = (1.0 - self.tokens).max(0.0);
        RateLimitState {
            limit: limit.limit,
            remaining: self.tokens.floor().max(0.0) as u32,
            reset_seconds: (missing / rate).ceil() as u64,
        }
    }
}

impl KeyCache {
    pub(crate) fn slot_for_rewrap(&self, id: &KeyId) -> Slot {
        self.slot(id)
    }
}

/// Locks a key's slot (see [`lock`]).
pub(crate) fn lock_slot(slot: &Slot) -> MutexGuard<'_, Option<Cached>> {
    lock(slot)
}

fn lock(slot: &Mutex<Option<Cached>>) -> MutexGuard<'_, Option<Cached>> {
    slot.lock().unwrap_or_else(emptied)
}

/// The slot's lock if no one holds it.
fn try_lock(slot: &Mutex<Option<Cached>>) -> Option<MutexGuard<'_, Option<Cached>>> {
    match slot.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::WouldBlock) => None,
        Err(std::sync::TryLockError::Poisoned(e)) => Some(emptied(e)),
    }
}

/// A poisoned slot means a panic mid-change; the next load reads the store again.
fn emptied(
    e: std::sync::PoisonError<MutexGuard<'_, Option<Cached>>>,
) -> MutexGuard<'_, Option<Cached>> {
    let mut guard = e.into_inner();
    *guard = None;
    guard
}

fn check_text(what: &str, value: &str, min: usize, max: usize) -> Result<()> {
    if value.len() < min || value.len() > max {
        return Err(Error::InvalidInput(format!(
            "{what} must be {min} to {max} bytes long (got {})",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_scopes(scopes: &[String]) -> Result<()> {
    if scopes.len() > MAX_SCOPES {
        return Err(Error::InvalidInput(format!(
            "scopes: at most {MAX_SCOPES} scopes (got {})",
            scopes.len()
        )));
    }
    scopes
        .iter()
        .try_for_each(|s| check_text("each scope", s, 1, MAX_SCOPE))
}

fn meta_text(meta: &Map<String, Value>) -> Result<String> {
    let text = serde_json::to_string(meta)
        .map_err(|_| Error::InvalidInput("meta must be a JSON object".into()))?;
    if text.len() > MAX_META {
        return Err(Error::InvalidInput(format!(
            "meta must be at most {MAX_META} bytes of JSON (got {})",
            text.len()
        )));
    }
    Ok(text)
}

fn check_ratelimit(limit: &Option<RateLimit>) -> Result<()> {
    match limit {
        Some(l) if l.limit == 0 || l.period_seconds == 0 => Err(Error::InvalidInput(
            "ratelimit: limit and period_seconds must be at least 1".into(),
        )),
        _ => Ok(()),
    }
}

fn check_expiry(expires_at: Option<u64>, now: u64) -> Result<()> {
    match expires_at {
        Some(at) if at <= now => Err(Error::InvalidInput(
            "expires_at must be in the future".into(),
        )),
        _ => Ok(()),
    }
}

/// Index entries: `tag || first 16 bytes of HMAC(index key, value) || key id`.
const OWNER_INDEX: u8 = 1;

/// Bytes of an owner index entry before the key id: the tag and the truncated HMAC.
const OWNER_INDEX_PREFIX: usize = 1 + 16;

pub(crate) fn owner_index_prefix(index_key: &SecretKey, owner: &str) -> Vec<u8> {
    let mac = crypto::hmac(index_key, &[&[OWNER_INDEX], owner.as_bytes()]);
    let mut prefix = Vec::with_capacity(OWNER_INDEX_PREFIX + 12);
    prefix.push(OWNER_INDEX);
    prefix.extend_from_slice(&mac[..16]);
    prefix
}

impl Vault {
    /// Creates a key; the returned text is the only time the secret is shown.
    pub fn create_key(&self, ctx: &Context, new: NewKey) -> Result<IssuedKey> {
        // Held until the index entry is committed: see `Inner::index_gate`.
        let _gate = self
            .inner
            .index_gate
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let keys = self.keys()?;
        let now = now();
        check_text("owner", &new.owner, 1, MAX_OWNER)?;
        check_text("name", &new.name, 0, MAX_NAME)?;
        check_scopes(&new.scopes)?;
        let meta = meta_text(&new.meta)?;
        check_ratelimit(&new.ratelimit)?;
        check_expiry(new.expires_at, now)?;

        let key = ApiKey::generate(&self.prefix());
        let id = key.id();
        let term = keys.keyring.current();
        let record = KeyRecord {
            owner: new.owner,
            name: new.name,
            scopes: new.scopes,
            meta,
            created_at: now,
            updated_at: now,
            expires_at: new.expires_at,
            enabled: !new.disabled,
            revoked_at: None,
            ratelimit: new.ratelimit,
            recoverable: new.recoverable,
            current: Digest::of(&term.key_lookup, term.number, &id, key.secret()),
            previous: None,
        };
        let slot = self.inner.key_cache.slot(&id);
        let mut cached = lock(&slot);
        let mut batch = Batch::default();
        self.stage_record(&mut batch, &keys.keyring, &id, &record);
        if let Some(credits) = new.credits {
            self.stage_credits(&mut batch, &keys.keyring, &id, credits);
        }
        let mut index = owner_index_prefix(&keys.keyring.index, &record.owner);
        index.extend_from_slice(id.as_bytes());
        batch.insert(Space::Index, &index, &[]);
        if record.recoverable {
            let sealed = record::seal(
                &keys.keyring,
                Space::Reveal,
                id.as_bytes(),
                key.secret().expose_bytes(),
            );
            batch.insert(Space::Reveal, id.as_bytes(), &sealed);
        }
        let info = record.info(id, new.credits, now);
        self.commit(
            ctx,
            batch,
            Event::key("key.create", "ok", id, &record.owner),
        )?;
        let bucket = record.ratelimit.as_ref().map(Bucket::full);
        *cached = Some(Cached {
            record,
            credits: new.credits,
            bucket,
        });
        Ok(IssuedKey { key, info })
    }

    /// A key's record. [`Error::NotFound`] for an unknown id.
    pub fn show_key(&self, id: &KeyId) -> Result<KeyInfo> {
        let slot = self.inner.key_cache.slot(id);
        let cached = self.load(&slot, id)?;
        let c = cached.as_ref().ok_or_else(|| not_found(id))?;
        Ok(c.record.info(*id, c.credits, now()))
    }

    /// A page of keys, by owner and status, in key-id order. Never a secret.
    pub fn list_keys(&self, filter: &KeyFilter) -> Result<KeyPage> {
        let keys = self.keys()?;
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let mut out = Vec::new();
        let mut next = None;
        let ids: Box<dyn Iterator<Item = Result<KeyId>>> = match &filter.owner {
            Some(owner) => {
                let ids =
                    owner_index::owner_ids(&self.inner.store, &keys.keyring, owner, filter.after)?;
                Box::new(ids.into_iter().map(Ok))
            }
            None => {
                let after = filter.after.map(|a| a.as_bytes().to_vec());
                let items: Vec<_> = self
                    .inner
                    .store
                    .scan_prefix(Space::Keys, &[], after.as_deref())
                    .collect();
                Box::new(items.into_iter().map(|item| id_from(&item?.0)))
            }
        };
        for id in ids {
            let id = id?;
            let info = self.show_key(&id)?;
            if let Some(owner) = &filter.owner
                && &info.owner != owner
            {
                continue; // an index HMAC collision on 128 bits: never in practice, but exact.
            }
            if filter.status.is_some_and(|s| s != info.status) {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|i: &KeyInfo| i.key_id);
                break;
            }
            out.push(info);
        }
        Ok(KeyPage { keys: out, next })
    }

    /// Changes a key's fields; revoked keys cannot be changed.
    pub fn update_key(&self, ctx: &Context, id: &KeyId, update: KeyUpdate) -> Result<KeyInfo> {
        let keys = self.keys()?;
        let now = now();
        let slot = self.inner.key_cache.slot(id);
        let mut cached = self.load(&slot, id)?;
        let c = cached.as_mut().ok_or_else(|| not_found(id))?;
        if c.record.revoked_at.is_some() {
            return Err(Error::Conflict(format!(
                "key {id} is revoked and cannot be changed"
            )));
        }
        let mut record = c.record.clone();
        if let Some(name) = update.name {
            check_text("name", &name, 0, MAX_NAME)?;
            record.name = name;
        }
        if let Some(scopes) = update.scopes {
            check_scopes(&scopes)?;
            record.scopes = scopes;
        }
        if let Some(meta) = update.meta {
            record.meta = meta_text(&meta)?;
        }
        if let Some(expires_at) = update.expires_at {
            check_expiry(expires_at, now)?;
            record.expires_at = expires_at;
        }
        if let Some(enabled) = update.enabled {
            record.enabled = enabled;
        }
        if let Some(ratelimit) = update.ratelimit {
            check_ratelimit(&ratelimit)?;
            record.ratelimit = ratelimit;
        }
        record.updated_at = now;
        let mut batch = Batch::default();
        self.stage_record(&mut batch, &keys.keyring, id, &record);
        let credits = match update.credits {
            Some(Some(n)) => {
                self.stage_credits(&mut batch, &keys.keyring, id, n);
                Some(n)
            }
            Some(None) => {
                batch.remove(Space::Credits, id.as_bytes());
                None
            }
            None => c.credits,
        };
        self.commit(
            ctx,
            batch,
            Event::key("key.update", "ok", *id, &record.owner),
        )?;
        if record.ratelimit != c.record.ratelimit {
            c.bucket = record.ratelimit.as_ref().map(Bucket::full);
        }
        c.record = record;
        c.credits = credits;
        Ok(c.record.info(*id, c.credits, now))
    }

    /// Revokes a key for good; the record stays, revoked. Revoking twice is a no-op.
    pub fn revoke_key(&self, ctx: &Context, id: &KeyId) -> Result<KeyInfo> {
        let keys = self.keys()?;
        let now = now();
        let slot = self.inner.key_cache.slot(id);
        let mut cached = self.load(&slot, id)?;
        let c = cached.as_mut().ok_or_else(|| not_found(id))?;
        if c.record.revoked_at.is_none() {
            let mut record = c.record.clone();
            record.revoked_at = Some(now);
            record.updated_at = now;
            record.previous = None;
            let mut batch = Batch::default();
            self.stage_record(&mut batch, &keys.keyring, id, &record);
            batch.remove(Space::Reveal, id.as_bytes());
            self.commit(
                ctx,
                batch,
                Event::key("key.revoke", "ok", *id, &record.owner),
            )?;
            c.record = record;
        }
        Ok(c.record.info(*id, c.credits, now))
    }

    /// Revokes every key of `owner`; returns how many were revoked now.
    pub fn revoke_owner(&self, ctx: &Context, owner: &str) -> Result<usize> {
        check_text("owner", owner, 1, MAX_OWNER)?;
        let mut revoked = 0;
        let mut after = None;
        loop {
            let page = self.list_keys(&KeyFilter {
                owner: Some(owner.to_owned()),
                after,
                limit: Some(MAX_PAGE),
                status: None,
            })?;
            for info in &page.keys {
                if info.revoked_at.is_none() {
                    self.revoke_key(ctx, &info.key_id)?;
                    revoked += 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(revoked),
            }
        }
    }

    /// Gives the key a new secret. The old one keeps working for `grace_seconds` (never past
    /// the key's expiry); a second rotation ends the older secret at once.
    pub fn rotate_key(&self, ctx: &Context, id: &KeyId, grace_seconds: u64) -> Result<IssuedKey> {
        let keys = self.keys()?;
        let now = now();
        let slot = self.inner.key_cache.slot(id);
        let mut cached = self.load(&slot, id)?;
        let c = cached.as_mut().ok_or_else(|| not_found(id))?;
        if c.record.revoked_at.is_some() {
            return Err(Error::Conflict(format!(
                "key {id} is revoked and cannot be rotated"
            )));
        }
        let key = ApiKey::new(self.prefix(), *id, KeySecret::random());
        let term = keys.keyring.current();
        let mut record = c.record.clone();
        let until = now.saturating_add(grace_seconds);
        let until = record.expires_at.map_or(until, |e| until.min(e));
        record.previous = (until > now).then_some((record.current, until));
        record.current = Digest::of(&term.key_lookup, term.number, id, key.secret());
        record.updated_at = now;
        let mut batch = Batch::default();
        self.stage_record(&mut batch, &keys.keyring, id, &record);
        if record.recoverable {
            let sealed = record::seal(
                &keys.keyring,
                Space::Reveal,
                id.as_bytes(),
                key.secret().expose_bytes(),
            );
            batch.insert(Space::Reveal, id.as_bytes(), &sealed);
        }
        self.commit(
            ctx,
            batch,
            Event::key("key.rotate", "ok", *id, &record.owner)
                .detail("grace_seconds", grace_seconds),
        )?;
        c.record = record;
        Ok(IssuedKey {
            info: c.record.info(*id, c.credits, now),
            key,
        })
    }

    /// The full key of a key created recoverable (audited).
    pub fn reveal_key(&self, ctx: &Context, id: &KeyId) -> Result<ApiKey> {
        let keys = self.keys()?;
        let info = self.show_key(id)?;
        let Some(sealed) = self.inner.store.get(Space::Reveal, id.as_bytes())? else {
            let why = if info.revoked_at.is_some() {
                "is revoked"
            } else {
                "was not created recoverable"
            };
            return Err(Error::Conflict(format!(
                "key {id} {why}: its secret cannot be revealed"
            )));
        };
        let plain = record::open(&keys.keyring, Space::Reveal, id.as_bytes(), &sealed)?;
        let bytes: [u8; 24] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("a revealable secret has the wrong length".into()))?;
        self.commit(
            ctx,
            Batch::default(),
            Event::key("key.reveal", "ok", *id, &info.owner),
        )?;
        Ok(ApiKey::new(
            self.prefix(),
            *id,
            KeySecret::from_bytes(bytes),
        ))
    }

    /// Verifies a presented key. Callable from many threads at once. The answer is given only
    /// after its audit entry (and a credit spend) is durable; if that fails, the error is
    /// returned instead and nothing is reported valid.
    pub fn verify(&self, ctx: &Context, req: VerifyRequest<'_>) -> Result<Verdict> {
        self.verify_blocking(ctx, req, true)
    }

    /// [`Vault::verify`] for a caller whose guessing is being refused: a verify that fails as
    /// `MALFORMED` or `NOT_FOUND` (which changes nothing) gets no audit entry of its own, and
    /// the caller records the refused attempts as one summary ([`Vault::audit_throttled`]), so
    /// that a flood of junk cannot fill the disk. Any other outcome is audited as always: a key
    /// whose secret matches is never refused or unlogged.
    pub fn verify_throttled(&self, ctx: &Context, req: VerifyRequest<'_>) -> Result<Verdict> {
        self.verify_blocking(ctx, req, false)
    }

    /// [`Vault::verify`] (or, if `throttled`, [`Vault::verify_throttled`]) for an async caller:
    /// the entry is queued for the group commit without blocking the thread, and the future
    /// resolves to the verdict once the entry is durable. A verify that spends credits commits
    /// under its key's lock instead, and a key being changed holds that lock through a commit:
    /// those answer [`AsyncVerify::MustBlock`], having changed nothing, and the caller runs the
    /// blocking call on a thread that may block.
    pub async fn verify_async(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        throttled: bool,
    ) -> Result<AsyncVerify> {
        match self.verify_step(ctx, req, !throttled, false)? {
            Step::Done(verdict) => Ok(AsyncVerify::Verdict(verdict)),
            Step::Commit(batch, event, verdict) => {
                self.inner.audit.commit_deferred(ctx, batch, event).await?;
                Ok(AsyncVerify::Verdict(verdict))
            }
            Step::MustBlock => Ok(AsyncVerify::MustBlock),
        }
    }

    fn verify_blocking(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        audit_failures: bool,
    ) -> Result<Verdict> {
        match self.verify_step(ctx, req, audit_failures, true)? {
            Step::Done(verdict) => Ok(verdict),
            Step::Commit(batch, event, verdict) => {
                self.commit(ctx, batch, event)?;
                Ok(verdict)
            }
            // Only where blocking is not allowed, and here it is.
            Step::MustBlock => Err(Error::Conflict(
                "the verify could not run here and must be retried".into(),
            )),
        }
    }

    /// Records the verifies refused from one client address in one window: `refused` failed
    /// verifies between `from_ms` and `until_ms` (Unix milliseconds), not logged one by one.
    /// Works sealed too (it needs no key).
    pub fn audit_throttled(
        &self,
        ctx: &Context,
        refused: u64,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<()> {
        let event = Event::new("key.verify.throttled", "THROTTLED")
            .detail("refused", refused)
            .detail("from_ms", from_ms)
            .detail("until_ms", until_ms);
        self.commit(ctx, Batch::default(), event).map(|_| ())
    }

    /// Decides a verify. An entry to commit comes back as [`Step::Commit`], except that of a
    /// credit spend, which is committed here under the key's lock if `may_block`. Without
    /// `may_block`, a credit spend or a key whose lock is held answers [`Step::MustBlock`]
    /// before anything changed.
    fn verify_step(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        audit_failures: bool,
        may_block: bool,
    ) -> Result<Step> {
        let keys = self.keys()?;
        // No key can hold a longer scope: refused before anything is logged, so that a client
        // cannot grow the log with it.
        if let Some(scope) = req.scope.filter(|s| s.len() > MAX_SCOPE) {
            return Err(Error::InvalidInput(format!(
                "scope: at most {MAX_SCOPE} bytes, the longest a key's scope may be (got {})",
                scope.len()
            )));
        }
        let key = match ApiKey::parse(req.key, &self.prefix()) {
            Ok(key) => key,
            Err(_) => {
                let verdict = Verdict::refused(VerifyCode::Malformed);
                if audit_failures {
                    let event = Event::verify(VerifyCode::Malformed)
                        .presented(self.presented_digest(&keys.keyring, req.key));
                    return Ok(Step::Commit(Batch::default(), event, verdict));
                }
                return Ok(Step::Done(verdict));
            }
        };
        let id = key.id();
        let slot = match self.inner.key_cache.lookup(&id) {
            Lookup::Slot(slot) => slot,
            Lookup::Unknown => {
                return Ok(self.not_found(&keys.keyring, &id, &key, req.key, None, audit_failures));
            }
        };
        let guard = if may_block {
            lock(&slot)
        } else {
            match try_lock(&slot) {
                Some(guard) => guard,
                None => return Ok(Step::MustBlock),
            }
        };
        let mut cached = self.fill(guard, &id)?;
        let Some(c) = cached.as_mut() else {
            drop(cached);
            self.inner.key_cache.release_unknown(&id, slot);
            return Ok(self.not_found(&keys.keyring, &id, &key, req.key, None, audit_failures));
        };
        let now = now();
        let previous_secret = if c
            .record
            .current
            .matches(&keys.keyring, &id, key.secret(), false)
        {
            None
        } else {
            match c.record.previous {
                Some((digest, until))
                    if until > now && digest.matches(&keys.keyring, &id, key.secret(), false) =>
                {
                    Some(PreviousSecret { expires_at: until })
                }
                _ => {
                    let owner = Some(c.record.owner.as_str());
                    return Ok(self.not_found(
                        &keys.keyring,
                        &id,
                        &key,
                        req.key,
                        owner,
                        audit_failures,
                    ));
                }
            }
        };
        let r = &c.record;
        let mut verdict = Verdict::refused(VerifyCode::Valid);
        verdict.key_id = Some(id);
        verdict.owner = Some(r.owner.clone());
        verdict.expires_at = r.expires_at;
        let code = if r.revoked_at.is_some() {
            VerifyCode::Revoked
        } else if !r.enabled {
            VerifyCode::Disabled
        } else if r.expires_at.is_some_and(|e| e <= now) {
            VerifyCode::Expired
        } else if req
            .scope
            .is_some_and(|s| !r.scopes.iter().any(|have| have == s))
        {
            VerifyCode::InsufficientScope
        } else {
            VerifyCode::Valid
        };
        let mut code = code;
        let mut spend = None;
        if code == VerifyCode::Valid {
            if let Some(limit) = r.ratelimit {
                let bucket = c.bucket.get_or_insert_with(|| Bucket::full(&limit));
                bucket.refill(&limit, Instant::now());
                if bucket.tokens < 1.0 {
                    code = VerifyCode::RateLimited;
                }
                verdict.ratelimit = Some(bucket.state(&limit));
            }
            if code == VerifyCode::Valid
                && let Some(credits) = c.credits
            {
                if credits < req.cost {
                    code = VerifyCode::UsageExceeded;
                } else if req.cost > 0 {
                    if !may_block {
                        return Ok(Step::MustBlock);
                    }
                    spend = Some(credits - req.cost);
                }
                verdict.credits_remaining = Some(spend.unwrap_or(credits));
            }
        }
        verdict.code = code;
        verdict.valid = code == VerifyCode::Valid;
        if verdict.valid {
            verdict.scopes = Some(r.scopes.clone());
            verdict.meta = Some(r.meta());
            verdict.previous_secret = previous_secret;
        }
        let mut event = Event::key("key.verify", code.as_str(), id, &r.owner);
        if let Some(s) = req.scope {
            event = event.detail("scope", s);
        }
        if let Some(previous) = previous_secret {
            // `since`: when the key last changed, its rotation unless a later update; the usage
            // signal tells a grace barely begun from one running out by it.
            event = event
                .detail("previous_secret", true)
                .detail("previous_secret_expires_at", previous.expires_at)
                .detail("previous_secret_since", r.updated_at);
        }
        let mut batch = Batch::default();
        if let Some(left) = spend {
            self.stage_credits(&mut batch, &keys.keyring, &id, left);
            event = event
                .detail("cost", req.cost)
                .detail("credits_remaining", left);
        }
        // A VALID verify takes its rate-limit token now, under the key's lock, so concurrent
        // verifies of the key cannot all pass on the same token. If the commit then fails the
        // token stays spent: the limit errs on the strict side.
        if verdict.valid
            && let (Some(limit), Some(bucket)) = (c.record.ratelimit, c.bucket.as_mut())
        {
            bucket.tokens -= 1.0;
            verdict.ratelimit = Some(bucket.state(&limit));
        }
        if spend.is_none() {
            // Nothing durable of the key changes: let other verifies of it go on while this
            // one's entry is committed.
            return Ok(Step::Commit(batch, event, verdict));
        }
        // A credit spend is committed under the key's lock, so spends are ordered and exact.
        self.commit(ctx, batch, event)?;
        c.credits = spend;
        Ok(Step::Done(verdict))
    }

    /// The answer to a key whose secret matched nothing stored: `owner` is the owner of the
    /// key that holds the id, if one does. A wrong secret for an existing key id is recorded
    /// against the key (the answer stays NOT_FOUND, so the caller learns nothing): someone
    /// holds the id.
    fn not_found(
        &self,
        keyring: &Keyring,
        id: &KeyId,
        key: &ApiKey,
        presented: &str,
        owner: Option<&str>,
        audit_failures: bool,
    ) -> Step {
        if owner.is_none() {
            // Same work as a wrong secret, so the answer's timing says nothing either.
            let dummy = Digest {
                term: keyring.current().number,
                mac: [0; 32],
            };
            let _ = dummy.matches(keyring, id, key.secret(), false);
        }
        let verdict = Verdict::refused(VerifyCode::NotFound);
        if !audit_failures {
            return Step::Done(verdict);
        }
        let event = match owner {
            Some(owner) => Event::key("key.verify", VerifyCode::NotFound.as_str(), *id, owner),
            None => Event::verify(VerifyCode::NotFound),
        }
        .presented(self.presented_digest(keyring, presented));
        Step::Commit(Batch::default(), event, verdict)
    }

    /// The keyed digest the audit log keeps of a presented string that matched nothing.
    fn presented_digest(&self, keyring: &Keyring, presented: &str) -> [u8; 32] {
        crypto::hmac(&keyring.audit_digest, &[presented.as_bytes()])
    }

    /// Fills an empty cache slot from the store. The guard holds `None` for an unknown id.
    fn load<'a>(
        &self,
        slot: &'a Mutex<Option<Cached>>,
        id: &KeyId,
    ) -> Result<MutexGuard<'a, Option<Cached>>> {
        self.fill(lock(slot), id)
    }

    /// Fills a locked, empty cache slot from the store.
    fn fill<'a>(
        &self,
        mut guard: MutexGuard<'a, Option<Cached>>,
        id: &KeyId,
    ) -> Result<MutexGuard<'a, Option<Cached>>> {
        let keys = self.keys()?;
        if guard.is_none() {
            let Some(bytes) = self.inner.store.get(Space::Keys, id.as_bytes())? else {
                return Ok(guard);
            };
            let plain = record::open(&keys.keyring, Space::Keys, id.as_bytes(), &bytes)?;
            let record: KeyRecord = codec::decode(&plain)
                .map_err(|_| Error::Corrupt(format!("key record {id} does not decode")))?;
            let credits = match self.inner.store.get(Space::Credits, id.as_bytes())? {
                None => None,
                Some(bytes) => {
                    let plain = record::open(&keys.keyring, Space::Credits, id.as_bytes(), &bytes)?;
                    let n: [u8; 8] = plain
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::Corrupt(format!("credits of {id} do not decode")))?;
                    Some(u64::from_le_bytes(n))
                }
            };
            let bucket = record.ratelimit.as_ref().map(Bucket::full);
            *guard = Some(Cached {
                record,
                credits,
                bucket,
            });
        }
        Ok(guard)
    }

    fn stage_record(&self, batch: &mut Batch, keyring: &Keyring, id: &KeyId, record: &KeyRecord) {
        let sealed = record::seal(keyring, Space::Keys, id.as_bytes(), &codec::encode(record));
        batch.insert(Space::Keys, id.as_bytes(), &sealed);
    }

    fn stage_credits(&self, batch: &mut Batch, keyring: &Keyring, id: &KeyId, credits: u64) {
        let sealed = record::seal(
            keyring,
            Space::Credits,
            id.as_bytes(),
            &credits.to_le_bytes(),
        );
        batch.insert(Space::Credits, id.as_bytes(), &sealed);
    }
}

fn not_found(id: &KeyId) -> Error {
    Error::NotFound(format!("key {id}"))
}

fn id_from(bytes: &[u8]) -> Result<KeyId> {
    let bytes: [u8; 12] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("an index entry is malformed".into()))?;
    Ok(KeyId::from_bytes(bytes))
}
