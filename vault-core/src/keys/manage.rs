//! Key management: create, show, update, revoke, rotate and reveal (listing is `list`).
//!
//! Every change to a key goes through the key's cache slot while holding its lock, and is
//! committed (with its audit entry) before the cached copy changes, so revoke, disable, update
//! and rotate are seen by the very next verify.

use serde_json::{Map, Value};

use super::book::{Commit, KeyBook, not_found};
use super::cache::lock;
use super::cache::{Cached, Versions};
use super::name_index::{self, name_entry};
use super::owner_index::owner_index_prefix;
use super::packed::stage_record;
use super::packed::{Malformed, Packed};
use super::record::{Bucket, Credits, Digest, KeyRecord, stage_credits, stage_reveal};
use super::refill;
use super::types::{
    IssuedKey, KeyFilter, KeyInfo, KeyUpdate, MAX_META, MAX_NAME, MAX_OWNER, MAX_PAGE, MAX_SCOPE,
    MAX_SCOPES, NewKey, RateLimit,
};
use crate::apikey::{ApiKey, KeyId, KeySecret, Prefix};
use crate::audit::Event;
use crate::context::Context;
use crate::keyring::Keyring;
use crate::storage::{Batch, Space};
use crate::{Error, Result, record};

impl KeyBook {
    /// Creates a key; the returned text is the only time the secret is shown.
    /// The caller holds [`KeyBook::index_shared`] from before it read `keyring` until this
    /// returns: see `KeyBook::index_gate`.
    pub(crate) fn create(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        prefix: &Prefix,
        audit: &impl Commit,
        new: NewKey,
    ) -> Result<IssuedKey> {
        let now = self.clock.now();
        let key = ApiKey::generate(prefix);
        let id = key.id();
        let term = keyring.current();
        let current = Digest::of(&term.key_lookup, term.number, &id, key.secret());
        let (record, credits) = checked_record(new, now, current)?;
        let packed = Packed::pack(&record).map_err(unpackable)?;
        let slot = self.cache.slot(&id);
        let mut cached = lock(&slot);
        let mut batch = stage_new(keyring, &id, &record, &packed, credits);
        if record.recoverable {
            stage_reveal(&mut batch, keyring, &id, key.secret(), 1);
        }
        let info = record.info(id, credits, now);
        audit.commit(
            ctx,
            batch,
            Event::key("key.create", "ok", id, &record.owner),
        )?;
        let bucket = record
            .ratelimit
            .as_ref()
            .map(|l| Box::new(Bucket::full(l, self.clock.now_ms())));
        *cached = Some(Cached {
            record: packed,
            credits,
            bucket,
            versions: Versions {
                record: 1,
                credits: u64::from(credits.is_some()),
            },
        });
        Ok(IssuedKey { key, info })
    }

    /// A key's record. [`Error::NotFound`] for an unknown id.
    pub(crate) fn show(&self, keyring: &Keyring, id: &KeyId) -> Result<KeyInfo> {
        let slot = self.cache.slot(id);
        let cached = self.load(keyring, &slot, id)?;
        let c = cached.as_ref().ok_or_else(|| not_found(id))?;
        Ok(c.record.info(*id, c.credits, self.clock.now()))
    }

    /// Changes a key's fields; revoked keys cannot be changed.
    pub(crate) fn update(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        id: &KeyId,
        update: KeyUpdate,
    ) -> Result<KeyInfo> {
        let now = self.clock.now();
        let slot = self.cache.slot(id);
        let mut cached = self.load(keyring, &slot, id)?;
        let c = unrevoked(&mut cached, id, "changed")?;
        let mut record = c.record.unpack();
        let mut batch = Batch::default();
        if let Some(name) = update.name {
            check_text("name", &name, 0, MAX_NAME)?;
            name_index::stage_rename(&self.store, keyring, &mut batch, id, &record.name, &name)?;
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
        let remaining = match update.credits {
            Some(n) => n,
            None => c.credits.map(|c| c.remaining),
        };
        if let Some(given) = &update.refill {
            refill::check(given, remaining.is_some())?;
        }
        let refill = match update.refill {
            Some(r) => refill::normalised(r),
            // Unlimited credits have nothing to refill.
            None if remaining.is_none() => None,
            None => record.refill,
        };
        refill::check(&refill, remaining.is_some())?;
        // A refill set anew counts from now; one kept keeps its time.
        let refilled_at = match (record.refill, update.refill, c.credits) {
            (Some(_), None, Some(old)) => old.refilled_at,
            _ if refill.is_some() => now,
            _ => 0,
        };
        record.refill = refill;
        record.updated_at = now;
        let packed = Packed::pack(&record).map_err(unpackable)?;
        let mut versions = c.versions;
        versions.record += 1;
        stage_record(&mut batch, keyring, id, &packed, versions.record);
        let credits = remaining.map(|n| Credits::new(n, refilled_at));
        if update.credits.is_some() || update.refill.is_some() {
            match credits {
                Some(credits) => {
                    versions.credits += 1;
                    let v = versions.credits;
                    stage_credits(&mut batch, keyring, id, credits, refill.is_some(), v);
                }
                None => batch.remove(Space::Credits, id.as_bytes()),
            }
        }
        audit.commit(
            ctx,
            batch,
            Event::key("key.update", "ok", *id, &record.owner),
        )?;
        if record.ratelimit != c.record.ratelimit {
            c.bucket = record
                .ratelimit
                .as_ref()
                .map(|l| Box::new(Bucket::full(l, self.clock.now_ms())));
        }
        c.record = packed;
        c.credits = credits;
        c.versions = versions;
        Ok(c.record.info(*id, c.credits, now))
    }

    /// Revokes a key for good; the record stays, revoked. Revoking twice is a no-op.
    pub(crate) fn revoke(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        id: &KeyId,
    ) -> Result<KeyInfo> {
        let now = self.clock.now();
        let slot = self.cache.slot(id);
        let mut cached = self.load(keyring, &slot, id)?;
        let c = cached.as_mut().ok_or_else(|| not_found(id))?;
        if c.record.revoked_at.is_none() {
            let mut record = c.record.unpack();
            record.revoked_at = Some(now);
            record.updated_at = now;
            record.previous = None;
            let packed = Packed::pack(&record).map_err(unpackable)?;
            let mut batch = Batch::default();
            let version = c.versions.record + 1;
            stage_record(&mut batch, keyring, id, &packed, version);
            batch.remove(Space::Reveal, id.as_bytes());
            audit.commit(
                ctx,
                batch,
                Event::key("key.revoke", "ok", *id, &record.owner),
            )?;
            c.record = packed;
            c.versions.record = version;
        }
        Ok(c.record.info(*id, c.credits, now))
    }

    /// Revokes every key of `owner`; returns how many were revoked now.
    pub(crate) fn revoke_owner(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        owner: &str,
    ) -> Result<usize> {
        check_text("owner", owner, 1, MAX_OWNER)?;
        let mut revoked = 0;
        let mut after = None;
        loop {
            let page = self.list(
                keyring,
                &KeyFilter {
                    owner: Some(owner.to_owned()),
                    name: None,
                    after,
                    limit: Some(MAX_PAGE),
                    status: None,
                },
            )?;
            for info in &page.keys {
                if info.revoked_at.is_none() {
                    self.revoke(ctx, keyring, audit, &info.key_id)?;
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
    pub(crate) fn rotate(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        prefix: &Prefix,
        audit: &impl Commit,
        id: &KeyId,
        grace_seconds: u64,
    ) -> Result<IssuedKey> {
        let now = self.clock.now();
        let slot = self.cache.slot(id);
        let mut cached = self.load(keyring, &slot, id)?;
        let c = unrevoked(&mut cached, id, "rotated")?;
        let key = ApiKey::new(*prefix, *id, KeySecret::random());
        let term = keyring.current();
        let mut record = c.record.unpack();
        let until = now.saturating_add(grace_seconds);
        let until = record.expires_at.map_or(until, |e| until.min(e));
        record.previous = (until > now).then_some((record.current, until));
        record.current = Digest::of(&term.key_lookup, term.number, id, key.secret());
        record.updated_at = now;
        let packed = Packed::pack(&record).map_err(unpackable)?;
        let mut batch = Batch::default();
        let version = c.versions.record + 1;
        stage_record(&mut batch, keyring, id, &packed, version);
        if record.recoverable {
            stage_reveal(&mut batch, keyring, id, key.secret(), version);
        }
        audit.commit(
            ctx,
            batch,
            Event::key("key.rotate", "ok", *id, &record.owner)
                .detail("grace_seconds", grace_seconds),
        )?;
        c.record = packed;
        c.versions.record = version;
        Ok(IssuedKey {
            info: c.record.info(*id, c.credits, now),
            key,
        })
    }

    /// The full key of a key created recoverable (audited).
    pub(crate) fn reveal(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        prefix: &Prefix,
        audit: &impl Commit,
        id: &KeyId,
    ) -> Result<ApiKey> {
        let info = self.show(keyring, id)?;
        let Some(sealed) = self.store.get(Space::Reveal, id.as_bytes())? else {
            let why = if info.revoked_at.is_some() {
                "is revoked"
            } else {
                "was not created recoverable"
            };
            return Err(Error::Conflict(format!(
                "key {id} {why}: its secret cannot be revealed"
            )));
        };
        let plain = record::open(keyring, Space::Reveal, id.as_bytes(), &sealed)?;
        let bytes: [u8; 24] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("a revealable secret has the wrong length".into()))?;
        audit.commit(
            ctx,
            Batch::default(),
            Event::key("key.reveal", "ok", *id, &info.owner),
        )?;
        Ok(ApiKey::new(*prefix, *id, KeySecret::from_bytes(bytes)))
    }
}

/// The record of a new key (created or imported) whose current secret's digest is `current`,
/// and its credits, once every field is checked: what create and import share.
pub(super) fn checked_record(
    new: NewKey,
    now: u64,
    current: Digest,
) -> Result<(KeyRecord, Option<Credits>)> {
    check_text("owner", &new.owner, 1, MAX_OWNER)?;
    check_text("name", &new.name, 0, MAX_NAME)?;
    check_scopes(&new.scopes)?;
    let meta = meta_text(&new.meta)?;
    check_ratelimit(&new.ratelimit)?;
    check_expiry(new.expires_at, now)?;
    refill::check(&new.refill, new.credits.is_some())?;
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
        current,
        previous: None,
        imported: false,
        refill: refill::normalised(new.refill),
    };
    let refilled_at = if record.refill.is_some() { now } else { 0 };
    let credits = new.credits.map(|n| Credits::new(n, refilled_at));
    Ok((record, credits))
}

/// The batch that stores a new key: its record, its credits and its owner and name index
/// entries.
pub(super) fn stage_new(
    keyring: &Keyring,
    id: &KeyId,
    record: &KeyRecord,
    packed: &Packed,
    credits: Option<Credits>,
) -> Batch {
    let mut batch = Batch::default();
    // A new row: its first write.
    stage_record(&mut batch, keyring, id, packed, 1);
    if let Some(credits) = credits {
        stage_credits(&mut batch, keyring, id, credits, record.refill.is_some(), 1);
    }
    let mut index = owner_index_prefix(&keyring.index, &record.owner);
    index.extend_from_slice(id.as_bytes());
    batch.insert(Space::Index, &index, &[]);
    batch.insert(
        Space::Index,
        &name_entry(&keyring.index, &record.name, id),
        &[],
    );
    batch
}

pub(super) fn check_text(what: &str, value: &str, min: usize, max: usize) -> Result<()> {
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

/// Checks an owner id as given to a call that names one.
pub(crate) fn check_owner(owner: &str) -> Result<()> {
    check_text("owner", owner, 1, MAX_OWNER)
}

/// A record that does not pack: a text past the limits (checked before, so never in practice;
/// refused before anything is committed all the same).
pub(super) fn unpackable(_: Malformed) -> Error {
    Error::InvalidInput("a key's texts exceed the stored record's limits".into())
}

/// The loaded key `id`, if it exists and is not revoked: a revoked key cannot be `done` to.
fn unrevoked<'a>(cached: &'a mut Option<Cached>, id: &KeyId, done: &str) -> Result<&'a mut Cached> {
    let c = cached.as_mut().ok_or_else(|| not_found(id))?;
    if c.record.revoked_at.is_some() {
        return Err(Error::Conflict(format!(
            "key {id} is revoked and cannot be {done}"
        )));
    }
    Ok(c)
}
