//! Rewrap: re-encrypt every record under the newest keyring term, online.
//!
//! After an operator leaves, the runbook is rekey (new root key and unseal credential), rotate
//! (a new term), rewrap (no record stays under a term the leaver could have seen). Rewrap works
//! through the key ids in order, a batch at a time: for each batch it takes the keys' cache
//! locks (in id order, so it cannot deadlock with verifies and updates, which take one lock),
//! re-encrypts whatever of the key's records (record, credits, revealable secret) is under an
//! older term, and commits the batch with an audit entry. A crash loses at most the batch in
//! flight; running rewrap again finishes the job, since records already under the newest term
//! are skipped. Tokens are rewrapped the same way under the token cache's lock.
//!
//! Rewrap works on the key and token components and the store; the vault handle runs it
//! (`vault/rewrap.rs`) with the unsealed keyring and its commit.

use crate::apikey::KeyId;
use crate::audit::Event;
use crate::context::Context;
use crate::keyring::Keyring;
use crate::keys::{self, Commit, KeyBook};
use crate::storage::{Batch, Space, Store};
use crate::tokens::TokenBook;
use crate::{Error, Result, record};

/// Keys (or tokens) per commit, at most: fewer where the store takes fewer keys per batch
/// (etcd), since a key can count three records.
const BATCH: usize = 256;
/// The records one key can have rewritten (record, credits, recoverable secret).
const RECORDS_PER_KEY: usize = 3;

/// What a rewrap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapReport {
    /// Records re-encrypted: key records, their credits and recoverable secrets, and token
    /// records (a key can count up to three).
    pub rewritten: u64,
    /// Keys and tokens looked at.
    pub seen: u64,
    /// The term every record is now under.
    pub term: u32,
}

/// What rewrap works on: the store, the key and token components, the keyring whose newest
/// term every record is brought under, and the handle's commit.
pub(crate) struct Rewrap<'a, C> {
    pub(crate) store: &'a Store,
    pub(crate) keys: &'a KeyBook,
    pub(crate) tokens: &'a TokenBook,
    pub(crate) keyring: &'a Keyring,
    pub(crate) audit: &'a C,
}

impl<C: Commit> Rewrap<'_, C> {
    /// Re-encrypts every record written under an older term; `progress(done, total)` is called
    /// after each batch (total is the number of key and token records).
    pub(crate) fn run(
        &self,
        ctx: &Context,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RewrapReport> {
        let term = self.keyring.current().number;
        let ids = |space| -> Result<Vec<Vec<u8>>> {
            self.store.scan(space).map(|item| Ok(item?.0)).collect()
        };
        let key_ids = ids(Space::Keys)?;
        let token_ids = ids(Space::Tokens)?;
        let total = (key_ids.len() + token_ids.len()) as u64;
        let mut report = RewrapReport {
            rewritten: 0,
            seen: 0,
            term,
        };

        let cap = self.store.max_shared_keys();
        let keys_per_batch = (cap / RECORDS_PER_KEY).clamp(1, BATCH);
        for chunk in key_ids.chunks(keys_per_batch) {
            let ids: Vec<KeyId> = chunk
                .iter()
                .map(|id| {
                    id.as_slice()
                        .try_into()
                        .map(KeyId::from_bytes)
                        .map_err(|_| Error::Corrupt("a key id is malformed".into()))
                })
                .collect::<Result<_>>()?;
            let slots: Vec<_> = ids.iter().map(|id| self.keys.cache.slot(id)).collect();
            let _guards: Vec<_> = slots.iter().map(|s| keys::lock(s)).collect();
            let mut batch = Batch::default();
            for id in &ids {
                for space in [Space::Keys, Space::Credits, Space::Reveal] {
                    report.rewritten +=
                        u64::from(self.stage_rewrap(&mut batch, space, id.as_bytes(), term)?);
                }
            }
            report.seen += ids.len() as u64;
            self.commit_rewrap(ctx, batch, &report)?;
            progress(report.seen, total);
        }
        for chunk in token_ids.chunks(cap.clamp(1, BATCH)) {
            let _tokens = self.tokens.write_lock();
            let mut batch = Batch::default();
            for id in chunk {
                report.rewritten +=
                    u64::from(self.stage_rewrap(&mut batch, Space::Tokens, id, term)?);
            }
            report.seen += chunk.len() as u64;
            self.commit_rewrap(ctx, batch, &report)?;
            progress(report.seen, total);
        }
        let event = Event::new("sys.rewrap", "ok")
            .detail("rewritten", report.rewritten)
            .detail("term", term);
        self.audit.commit(ctx, Batch::default(), event)?;
        Ok(report)
    }

    fn commit_rewrap(&self, ctx: &Context, batch: Batch, report: &RewrapReport) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let event = Event::new("sys.rewrap", "progress").detail("rewritten", report.rewritten);
        self.audit.commit(ctx, batch, event).map(|_| ())
    }

    /// Stages the re-encryption of `space/id` if it is under an older term; whether it was.
    fn stage_rewrap(&self, batch: &mut Batch, space: Space, id: &[u8], term: u32) -> Result<bool> {
        let Some(bytes) = self.store.get(space, id)? else {
            return Ok(false);
        };
        if record::term_of(&bytes)? == term {
            return Ok(false);
        }
        // The same content under the newest term: the record version stays.
        let opened = record::open_versioned(self.keyring, space, id, &bytes)?;
        let sealed = record::seal(self.keyring, space, id, opened.version, &opened.plain);
        batch.insert(space, id, &sealed);
        Ok(true)
    }
}
