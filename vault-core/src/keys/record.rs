//! A key record to make or change, the digest of a secret, and a key's rate-limit bucket.
//!
//! A key record holds the HMAC-SHA256 digest of the secret under the lookup key of the term
//! that made it, never the secret; it is stored encrypted (see `record`) under its 12-byte key
//! id, its credits beside it in their own space, in the packed form of `packed`. A key's
//! rate-limit bucket lives only in its cache slot.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::code::RateLimitState;
use super::types::{KeyInfo, KeyStatus, RateLimit, Refill};
use crate::apikey::{KeyId, KeySecret};
use crate::crypto::{self, SecretKey};
use crate::keyring::Keyring;
use crate::record;
use crate::storage::{Batch, Space};

/// A secret's digest and the term whose lookup key made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Digest {
    pub term: u32,
    pub mac: [u8; 32],
}

impl Digest {
    pub(super) fn of(lookup: &SecretKey, term: u32, id: &KeyId, secret: &KeySecret) -> Digest {
        Digest {
            term,
            mac: crypto::hmac(lookup, &[id.as_bytes(), secret.expose_bytes()]),
        }
    }

    /// The digest of an imported key: of the SHA-256 of its text (what a hash-only import
    /// gives, and what a text import is reduced to), bound to the key id as a secret is.
    pub(super) fn of_imported(
        lookup: &SecretKey,
        term: u32,
        id: &KeyId,
        sha256: &[u8; 32],
    ) -> Digest {
        Digest {
            term,
            mac: crypto::hmac(lookup, &[id.as_bytes(), sha256]),
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

    /// Constant-time check of a presented token secret. (A presented API key is checked by
    /// `Presented::matches`, which keeps the digests it made.)
    pub(crate) fn matches_token(&self, keyring: &Keyring, id: &KeyId, secret: &KeySecret) -> bool {
        let Some(term) = keyring.term(self.term) else {
            return false;
        };
        let presented = Digest::of(&term.token_lookup, self.term, id, secret);
        presented.mac.ct_eq(&self.mac).into()
    }
}

/// A key record to make or change (stored as a [`Packed`]; version 1 records, which older
/// builds wrote, are its bincode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    /// The meta object as JSON text (bincode cannot carry `serde_json::Value`).
    pub(super) meta: String,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    pub(super) expires_at: Option<u64>,
    pub(super) enabled: bool,
    pub(super) revoked_at: Option<u64>,
    pub(super) ratelimit: Option<RateLimit>,
    pub(super) recoverable: bool,
    pub(super) current: Digest,
    pub(super) previous: Option<(Digest, u64)>,
    /// Not in version 1 records (skipped by bincode, so their bytes read as before).
    #[serde(skip)]
    pub(super) imported: bool,
    /// Not in version 1 records, as `imported`.
    #[serde(skip)]
    pub(super) refill: Option<Refill>,
}

impl KeyRecord {
    pub(super) fn status(&self, now: u64) -> KeyStatus {
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

    pub(super) fn info(&self, id: KeyId, credits: Option<Credits>, now: u64) -> KeyInfo {
        KeyInfo {
            key_id: id,
            owner: self.owner.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            meta: serde_json::from_str(&self.meta).unwrap_or_default(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            enabled: self.enabled,
            revoked_at: self.revoked_at,
            ratelimit: self.ratelimit,
            credits: credits.map(|c| c.remaining),
            refill: self.refill.filter(|_| credits.is_some()),
            refilled_at: credits
                .filter(|_| self.refill.is_some())
                .map(|c| c.refilled_at),
            imported: self.imported,
            recoverable: self.recoverable,
            previous_secret_expires_at: self
                .previous
                .filter(|(_, until)| *until > now)
                .map(|(_, until)| until),
            status: self.status(now),
        }
    }
}

/// Token bucket: `tokens` refills at `limit / period` per second up to `limit`. Its time is
/// the vault's clock (Unix milliseconds), so a test moves rate-limit windows as it moves expiry.
///
/// On a cluster node it also counts the tokens this node took and has not yet told the others
/// (`rate_share`), and loses the tokens the others took: down to `-limit`, a debt this node
/// repays by refilling before it answers `VALID` again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    at_ms: u64,
    /// Tokens taken here since the last tally (only counted while rates are shared).
    unshared: u32,
}

impl Bucket {
    pub(super) fn full(limit: &RateLimit, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(limit.limit),
            at_ms: now_ms,
            unshared: 0,
        }
    }

    /// Counts a token taken here for the next tally: true if it is the first since the last
    /// one (the key is then not yet on the list of keys to tally).
    pub(super) fn count_unshared(&mut self) -> bool {
        self.unshared = self.unshared.saturating_add(1);
        self.unshared == 1
    }

    // Called by the tally and by other nodes' tallies, which a build without `etcd` has not.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    /// The tokens taken here since the last tally, which starts again from zero.
    pub(super) fn take_unshared(&mut self) -> u32 {
        std::mem::take(&mut self.unshared)
    }

    // Called by the tally and by other nodes' tallies, which a build without `etcd` has not.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    /// Takes out `taken` tokens another node took, refilled up to `now_ms` first; never below
    /// `-limit`, so that a burst seen late keeps the key refused for at most two periods.
    pub(super) fn lose(&mut self, limit: &RateLimit, now_ms: u64, taken: u32) {
        self.refill(limit, now_ms);
        let floor = -f64::from(limit.limit);
        self.tokens = (self.tokens - f64::from(taken)).max(floor);
    }

    pub(super) fn refill(&mut self, limit: &RateLimit, now_ms: u64) {
        let rate = f64::from(limit.limit) / f64::from(limit.period_seconds.max(1));
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(limit.limit));
        // Never back: a clock that steps back leaves the bucket as it was.
        self.at_ms = self.at_ms.max(now_ms);
    }

    pub(super) fn state(&self, limit: &RateLimit) -> RateLimitState {
        let rate = f64::from(limit.limit) / f64::from(limit.period_seconds.max(1));
        let missing = (1.0 - self.tokens).max(0.0);
        RateLimitState {
            limit: limit.limit,
            remaining: self.tokens.floor().max(0.0) as u32,
            reset_seconds: (missing / rate).ceil() as u64,
        }
    }
}

/// A key's credits: what is left, and when they were last refilled (or the refill set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Credits {
    pub(super) remaining: u64,
    /// Unix seconds; 0 for a key without a refill.
    pub(super) refilled_at: u64,
}

impl Credits {
    pub(super) fn new(remaining: u64, refilled_at: u64) -> Credits {
        Credits {
            remaining,
            refilled_at,
        }
    }

    /// The stored plaintext: `remaining` (u64 little-endian, as older builds wrote it), then,
    /// for a key with a refill, `refilled_at` (u64 little-endian).
    fn encode(self, refill: bool) -> Vec<u8> {
        let mut out = self.remaining.to_le_bytes().to_vec();
        if refill {
            out.extend_from_slice(&self.refilled_at.to_le_bytes());
        }
        out
    }

    /// Reads 8 bytes (no refill) or 16 (with the time of the last refill).
    pub(super) fn decode(plain: &[u8]) -> Option<Credits> {
        let u64_at = |at: usize| {
            plain
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        match plain.len() {
            8 => Some(Credits::new(u64_at(0)?, 0)),
            16 => Some(Credits::new(u64_at(0)?, u64_at(8)?)),
            _ => None,
        }
    }
}

/// Stages the credits of key `id`, write number `version` of the row, encrypted under the
/// newest term; `refill`: whether the key has a refill (whose time is stored with them).
pub(super) fn stage_credits(
    batch: &mut Batch,
    keyring: &Keyring,
    id: &KeyId,
    credits: Credits,
    refill: bool,
    version: u64,
) {
    let sealed = record::seal(
        keyring,
        Space::Credits,
        id.as_bytes(),
        version,
        &credits.encode(refill),
    );
    batch.insert(Space::Credits, id.as_bytes(), &sealed);
}

/// Stages the revealable copy of key `id`'s secret, with the version of the key record written
/// beside it (a reveal row is written only with its record).
pub(super) fn stage_reveal(
    batch: &mut Batch,
    keyring: &Keyring,
    id: &KeyId,
    secret: &KeySecret,
    version: u64,
) {
    let sealed = record::seal(
        keyring,
        Space::Reveal,
        id.as_bytes(),
        version,
        secret.expose_bytes(),
    );
    batch.insert(Space::Reveal, id.as_bytes(), &sealed);
}
