//! The verify hot path: parse, look up the cached record, check the secret in constant time,
//! decide the code, take a rate-limit token and spend credits.
//!
//! Verification reads a cached, decrypted copy of the record: the hot path does no store read
//! and no decryption once a key has been seen. Rate limits are a token bucket per key
//! (capacity `limit`, refilled at `limit` per `period_seconds`), kept in memory: they reset
//! when the process restarts. Credits are durable: a spend is committed (with its audit entry)
//! before the verify answers, while the key's lock is held, so N concurrent verifies of a key
//! with C credits give exactly C successes.
//!
//! A verify that may not block and would have to (a credit spend, or a key locked by a change)
//! stops before anything changed and hands back what it parsed and hashed
//! ([`PendingVerify`]); [`KeyBook::finish_step`] goes on from there.

use super::book::{Commit, KeyBook};
use super::cache::{Cached, Lookup, lock, try_lock};
use super::code::{PreviousSecret, Verdict, VerifyCode, VerifyRequest};
use super::presented::{PendingVerify, Presented};
use super::record::{Bucket, Credits, Digest, stage_credits};
use super::refill;
use super::types::MAX_SCOPE;
use crate::apikey::{ApiKey, KeyId, Prefix};
use crate::audit::Event;
use crate::context::Context;
use crate::crypto;
use crate::keyring::Keyring;
use crate::storage::Batch;
use crate::{Error, Result};

/// A decided verify (see [`KeyBook::verify_step`]).
pub(crate) enum Step {
    /// Answered, with nothing (more) to commit.
    Done(Verdict),
    /// Answer once this batch and entry are committed.
    Commit(Batch, Event, Verdict),
    /// A credit spend, or a key locked by a change, where blocking is not allowed: nothing
    /// changed, and what was parsed and hashed so far is handed over.
    MustBlock(PendingVerify),
}

/// How a verify runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    /// Whether a `MALFORMED` or `NOT_FOUND` answer gets an audit entry of its own (not for a
    /// caller whose guessing is being refused and summed).
    pub(crate) audit_failures: bool,
    /// Whether the verify may block: wait for its key's lock, and commit a credit spend.
    pub(crate) may_block: bool,
}

impl KeyBook {
    /// Decides a verify. An entry to commit comes back as [`Step::Commit`], except that of a
    /// credit spend, which is committed here under the key's lock if `may_block`. Without
    /// `may_block`, a credit spend or a key whose lock is held answers [`Step::MustBlock`]
    /// before anything changed.
    pub(crate) fn verify_step(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        prefix: &Prefix,
        audit: &impl Commit,
        req: VerifyRequest<'_>,
        mode: Mode,
    ) -> Result<Step> {
        // No key can hold a longer scope: refused before anything is logged, so that a client
        // cannot grow the log with it.
        if let Some(scope) = req.scope.filter(|s| s.len() > MAX_SCOPE) {
            return Err(Error::InvalidInput(format!(
                "scope: at most {MAX_SCOPE} bytes, the longest a key's scope may be (got {})",
                scope.len()
            )));
        }
        let key = match ApiKey::parse(req.key, prefix) {
            Ok(key) => Presented::new(key),
            // A vault token stays MALFORMED as an API key (DESIGN 4), imports or not.
            Err(_) if self.holds_imports()? && ApiKey::parse(req.key, &Prefix::TOKEN).is_err() => {
                match self.find_imported(keyring, req.key)? {
                    Some(presented) => presented,
                    None => {
                        let verdict = Verdict::refused(VerifyCode::NotFound);
                        if mode.audit_failures {
                            let event = Event::verify(VerifyCode::NotFound)
                                .presented(self.presented_digest(keyring, req.key));
                            return Ok(Step::Commit(Batch::default(), event, verdict));
                        }
                        return Ok(Step::Done(verdict));
                    }
                }
            }
            Err(_) => {
                let verdict = Verdict::refused(VerifyCode::Malformed);
                if mode.audit_failures {
                    let event = Event::verify(VerifyCode::Malformed)
                        .presented(self.presented_digest(keyring, req.key));
                    return Ok(Step::Commit(Batch::default(), event, verdict));
                }
                return Ok(Step::Done(verdict));
            }
        };
        let request = Request {
            text: Some(req.key),
            scope: req.scope,
            cost: req.cost,
        };
        self.decide(ctx, keyring, audit, key, request, mode)
    }

    /// Goes on with a verify that answered [`Step::MustBlock`], blocking where it must: the
    /// key is not parsed again, and its secret is hashed only under a term not hashed before
    /// (the record changed meanwhile); the record as it is now decides.
    pub(crate) fn finish_step(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        pending: PendingVerify,
    ) -> Result<Step> {
        let PendingVerify {
            presented,
            scope,
            cost,
            audit_failures,
        } = pending;
        let request = Request {
            text: None,
            scope: scope.as_deref(),
            cost,
        };
        let mode = Mode {
            audit_failures,
            may_block: true,
        };
        self.decide(ctx, keyring, audit, presented, request, mode)
    }

    /// Decides the verify of a well-formed key (see [`KeyBook::verify_step`]).
    fn decide(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        mut key: Presented,
        req: Request<'_>,
        mode: Mode,
    ) -> Result<Step> {
        let Mode {
            audit_failures,
            may_block,
        } = mode;
        let id = key.id();
        let slot = match self.cache.lookup(&id) {
            Lookup::Slot(slot) => slot,
            Lookup::Unknown => {
                return Ok(self.not_found(keyring, &mut key, req.text, None, audit_failures));
            }
        };
        let guard = if may_block {
            lock(&slot)
        } else {
            match try_lock(&slot) {
                Some(guard) => guard,
                None => return Ok(Step::MustBlock(req.pending(key, audit_failures))),
            }
        };
        let mut cached = self.fill(keyring, guard, &id)?;
        let Some(c) = cached.as_mut() else {
            drop(cached);
            self.cache.release_unknown(&id, slot);
            return Ok(self.not_found(keyring, &mut key, req.text, None, audit_failures));
        };
        // One reading of the clock for expiry, grace and the rate-limit bucket.
        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        let previous_secret = if key.matches(keyring, &c.record.current) {
            None
        } else {
            match c.record.previous() {
                Some((digest, until)) if until > now && key.matches(keyring, &digest) => {
                    Some(PreviousSecret { expires_at: until })
                }
                _ => {
                    let owner = Some(c.record.owner());
                    return Ok(self.not_found(keyring, &mut key, req.text, owner, audit_failures));
                }
            }
        };
        // Credits that came back since the key's last verify: committed with their own entry
        // under the key's lock before this verify goes on, so a refill is applied once.
        if c.record.revoked_at.is_none()
            && let (Some(refill), Some(credits)) = (c.record.refill(), c.credits)
            && refill::due(&refill, credits.refilled_at, now)
        {
            if !may_block {
                return Ok(Step::MustBlock(req.pending(key, audit_failures)));
            }
            let refilled = Credits::new(refill.amount, now);
            let mut batch = Batch::default();
            let version = c.versions.credits + 1;
            stage_credits(&mut batch, keyring, &id, refilled, true, version);
            let event = Event::key("key.credits_refilled", "ok", id, c.record.owner())
                .detail("credits_before", credits.remaining)
                .detail("credits_remaining", refill.amount)
                .detail("interval_start", refill::interval_start(&refill, now));
            if let Err(e) = audit.commit(ctx, batch, event) {
                self.forget_on_conflict(&mut cached, &id, &e);
                return Err(e);
            }
            c.credits = Some(refilled);
            c.versions.credits = version;
        }
        let r = &c.record;
        let mut verdict = Verdict::refused(VerifyCode::Valid);
        verdict.key_id = Some(id);
        verdict.owner = Some(r.owner().to_owned());
        verdict.expires_at = r.expires_at;
        let code = if r.revoked_at.is_some() {
            VerifyCode::Revoked
        } else if !r.enabled {
            VerifyCode::Disabled
        } else if r.expires_at.is_some_and(|e| e <= now) {
            VerifyCode::Expired
        } else if req.scope.is_some_and(|s| !r.scopes().any(|have| have == s)) {
            VerifyCode::InsufficientScope
        } else {
            VerifyCode::Valid
        };
        let mut code = code;
        let mut spend = None;
        if code == VerifyCode::Valid {
            if let Some(limit) = r.ratelimit {
                let bucket = c
                    .bucket
                    .get_or_insert_with(|| Box::new(Bucket::full(&limit, now_ms)));
                bucket.refill(&limit, now_ms);
                if bucket.tokens < 1.0 {
                    code = VerifyCode::RateLimited;
                }
                verdict.ratelimit = Some(bucket.state(&limit));
            }
            if code == VerifyCode::Valid
                && let Some(Credits {
                    remaining: credits, ..
                }) = c.credits
            {
                if credits < req.cost {
                    code = VerifyCode::UsageExceeded;
                } else if req.cost > 0 {
                    if !may_block {
                        return Ok(Step::MustBlock(req.pending(key, audit_failures)));
                    }
                    spend = Some(credits - req.cost);
                }
                verdict.credits_remaining = Some(spend.unwrap_or(credits));
            }
        }
        verdict.code = code;
        verdict.valid = code == VerifyCode::Valid;
        if verdict.valid {
            verdict.scopes = Some(r.shared_scopes());
            verdict.meta = Some(r.shared_meta());
            verdict.previous_secret = previous_secret;
        }
        let mut event = Event::key("key.verify", code.as_str(), id, r.owner());
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
        let refilled_at = c.credits.map_or(0, |c| c.refilled_at);
        let spend = spend.map(|left| Credits::new(left, refilled_at));
        if let Some(left) = spend {
            let version = c.versions.credits + 1;
            stage_credits(
                &mut batch,
                keyring,
                &id,
                left,
                r.refill().is_some(),
                version,
            );
            let left = left.remaining;
            event = event
                .detail("cost", req.cost)
                .detail("credits_remaining", left);
        }
        // A VALID verify takes its rate-limit token now, under the key's lock, so concurrent
        // verifies of the key cannot all pass on the same token. If the commit then fails the
        // token stays spent: the limit errs on the strict side.
        if verdict.valid
            && let (Some(limit), Some(bucket)) = (c.record.ratelimit, c.bucket.as_deref_mut())
        {
            bucket.tokens -= 1.0;
            self.rates.taken(id, bucket);
            verdict.ratelimit = Some(bucket.state(&limit));
        }
        if spend.is_none() {
            // Nothing durable of the key changes: let other verifies of it go on while this
            // one's entry is committed.
            return Ok(Step::Commit(batch, event, verdict));
        }
        // A credit spend is committed under the key's lock, so spends are ordered and exact.
        if let Err(e) = audit.commit(ctx, batch, event) {
            self.forget_on_conflict(&mut cached, &id, &e);
            return Err(e);
        }
        c.credits = spend;
        c.versions.credits += 1;
        Ok(Step::Done(verdict))
    }

    /// The answer to a key whose secret matched nothing stored: `owner` is the owner of the
    /// key that holds the id, if one does. A wrong secret for an existing key id is recorded
    /// against the key (the answer stays NOT_FOUND, so the caller learns nothing): someone
    /// holds the id.
    ///
    /// `text` is the presented text, if at hand; a finished verify spells it again from the
    /// key, which gives the same text: a key has one spelling that parses (fixed-width digits,
    /// one checksum, the vault's prefix).
    fn not_found(
        &self,
        keyring: &Keyring,
        key: &mut Presented,
        text: Option<&str>,
        owner: Option<&str>,
        audit_failures: bool,
    ) -> Step {
        let id: KeyId = key.id();
        if owner.is_none() {
            // Same work as a wrong secret, so the answer's timing says nothing either.
            let dummy = Digest {
                term: keyring.current().number,
                mac: [0; 32],
            };
            let _ = key.matches(keyring, &dummy);
        }
        let verdict = Verdict::refused(VerifyCode::NotFound);
        if !audit_failures {
            return Step::Done(verdict);
        }
        let presented = match text {
            Some(text) => self.presented_digest(keyring, text),
            None => key.audit_digest(keyring),
        };
        let event = match owner {
            Some(owner) => Event::key("key.verify", VerifyCode::NotFound.as_str(), id, owner),
            None => Event::verify(VerifyCode::NotFound),
        }
        .presented(presented);
        Step::Commit(Batch::default(), event, verdict)
    }

    /// The keyed digest the audit log keeps of a presented string that matched nothing.
    pub(crate) fn presented_digest(&self, keyring: &Keyring, presented: &str) -> [u8; 32] {
        crypto::hmac(&keyring.audit_digest, &[presented.as_bytes()])
    }
}

/// What a verify of a well-formed key goes on with.
#[derive(Clone, Copy)]
struct Request<'a> {
    /// The presented text: none once the verify was handed over as pending.
    text: Option<&'a str>,
    scope: Option<&'a str>,
    cost: u64,
}

impl Request<'_> {
    /// The verify handed over, to finish where a thread may block.
    fn pending(self, key: Presented, audit_failures: bool) -> PendingVerify {
        PendingVerify {
            presented: key,
            scope: self.scope.map(str::to_owned),
            cost: self.cost,
            audit_failures,
        }
    }
}

impl KeyBook {
    /// Empties a key's cache slot when its commit was refused as a conflict (another node of
    /// a cluster changed its credits or record): the next verify reads the key again rather
    /// than spending from what this node last saw, which would conflict again and again.
    pub(super) fn forget_on_conflict(
        &self,
        cached: &mut Option<Cached>,
        id: &KeyId,
        error: &Error,
    ) {
        if error.is_conflict() {
            self.empty(cached, id);
        }
    }
}
