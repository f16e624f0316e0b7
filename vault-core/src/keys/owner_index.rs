//! The owner index under each audit key generation's index key, and its online rebuild (which
//! moves the name index's entries, `name_index`, with the owner's).
//!
//! An index entry is `tag || first 16 bytes of HMAC(index key, owner) || key id` (see
//! `owner_index_prefix`). After `rotate-audit-key`, new keys are indexed under the new
//! generation's index key, and [`Vault::rebuild_owner_index`](crate::Vault::rebuild_owner_index) moves the others: through the key
//! ids in order, a batch at a time, under the keys' cache locks (in id order, as rewrap takes
//! them), it writes each key's entry under the new index key and removes its entries under the
//! older ones, and commits the batch with an audit entry. When every key is moved it records
//! the generation as rebuilt (`Meta/index-generation`, u32 big-endian; absent means 1) in the
//! same commit as its `audit.index_rebuild` entry. A crash loses at most the batch in flight;
//! running it again finishes the job.
//!
//! Until the rebuild is recorded, listing by owner reads the entries of every generation from
//! the last rebuilt one to the newest, oldest first, and merges them: a batch moves a key's
//! entry from an older generation to the newest in one commit, so a list that reads the older
//! generation first sees the key in one or both (counted once), never in neither.

use super::book::{Commit, KeyBook, id_from};
use super::cache::lock;
use super::generation::META_INDEX_GENERATION;
use super::generation::read_generations;
pub(crate) use super::generation::rebuilt_generation;
use super::name_index::name_entry;
use crate::Result;
use crate::apikey::KeyId;
use crate::audit::Event;
use crate::context::Context;
use crate::crypto::{self, SecretKey};
use crate::keyring::Keyring;
use crate::storage::{Batch, Space, Store};

/// Index entries: `tag || first 16 bytes of HMAC(index key, value) || key id`.
const OWNER_INDEX: u8 = 1;

/// Bytes of an owner index entry before the key id: the tag and the truncated HMAC.
const OWNER_INDEX_PREFIX: usize = 1 + 16;

/// Keys moved per commit.
const BATCH: usize = 256;

/// What an owner index rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRebuild {
    /// The audit key generation whose index key every entry is now under.
    pub generation: u32,
    /// Keys looked at (0 when the index was already under that generation).
    pub seen: u64,
}

/// The prefixes of `owner`'s entries under every generation not older than the last rebuilt
/// one, oldest first (one but while a rebuild is owed).
pub(crate) fn owner_prefixes(
    store: &Store,
    keyring: &Keyring,
    owner: &str,
) -> Result<Vec<Vec<u8>>> {
    Ok(read_generations(store, keyring)?
        .map(|g| owner_index_prefix(&g.index, owner))
        .collect())
}

/// The ids of the entries under `prefixes` after `after`, in id order, each once: every entry
/// read, for the merge while a rebuild is owed (one prefix is walked lazily, in `list`).
pub(crate) fn ids_under(
    store: &Store,
    prefixes: &[Vec<u8>],
    after: Option<KeyId>,
) -> Result<Vec<KeyId>> {
    let mut ids = Vec::new();
    // Oldest first: see the module documentation.
    for prefix in prefixes {
        let after = after.map(|a| [prefix.as_slice(), a.as_bytes()].concat());
        let items: Vec<_> = store
            .scan_prefix(Space::Index, prefix, after.as_deref())
            .collect();
        for item in items {
            let (k, _) = item?;
            // A corrupt store must give an error, never a panic: `id_from` refuses an entry
            // too short to hold a key id.
            ids.push(id_from(k.get(prefix.len()..).unwrap_or_default())?);
        }
    }
    ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    ids.dedup();
    Ok(ids)
}

/// The start of every index entry of `owner`'s keys under `index_key`.
pub(crate) fn owner_index_prefix(index_key: &SecretKey, owner: &str) -> Vec<u8> {
    let mac = crypto::hmac(index_key, &[&[OWNER_INDEX], owner.as_bytes()]);
    let mut prefix = Vec::with_capacity(OWNER_INDEX_PREFIX + 12);
    prefix.push(OWNER_INDEX);
    prefix.extend_from_slice(&mac[..16]);
    prefix
}

impl KeyBook {
    /// Moves every owner index entry under the newest audit key generation's index key, online;
    /// see the module documentation. `progress(done, total)` is called after each batch.
    pub(crate) fn rebuild_owner_index(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<IndexRebuild> {
        let store = &self.store;
        let target = keyring.audit_current();
        let rebuilt = rebuilt_generation(store)?;
        let mut report = IndexRebuild {
            generation: target.number,
            seen: 0,
        };
        if rebuilt >= target.number {
            return Ok(report);
        }
        let older: Vec<_> = keyring
            .audit_generations()
            .filter(|g| g.number >= rebuilt && g.number < target.number)
            .collect();
        // Records put under other ids through `Vault::put_record` are no keys: they have no
        // index entry.
        let ids: Vec<KeyId> = store
            .scan(Space::Keys)
            .filter_map(|item| match item {
                Ok((id, _)) => id_from(&id).ok().map(Ok),
                Err(e) => Some(Err(e.into())),
            })
            .collect::<Result<_>>()?;
        let total = ids.len() as u64;
        // Each key changes two entries (owner and name) per generation: the new ones, and the
        // older ones removed.
        let per_key = 2 * (1 + older.len());
        let keys_per_batch = (self.store.max_shared_keys() / per_key).clamp(1, BATCH);
        for ids in ids.chunks(keys_per_batch) {
            let slots: Vec<_> = ids.iter().map(|id| self.cache.slot(id)).collect();
            let mut batch = Batch::default();
            let mut touched: Vec<(Space, Vec<u8>)> = Vec::new();
            let mut guards = Vec::with_capacity(slots.len());
            for (slot, id) in slots.iter().zip(ids) {
                let guard = self.fill(keyring, lock(slot), id)?;
                if let Some(cached) = guard.as_ref() {
                    let owner = cached.record.owner();
                    let mut entry = owner_index_prefix(&target.index, owner);
                    entry.extend_from_slice(id.as_bytes());
                    batch.insert(Space::Index, &entry, &[]);
                    let name = cached.record.name();
                    let named = name_entry(&target.index, name, id);
                    batch.insert(Space::Index, &named, &[]);
                    touched.extend([(Space::Index, entry), (Space::Index, named)]);
                    for old in &older {
                        let mut entry = owner_index_prefix(&old.index, owner);
                        entry.extend_from_slice(id.as_bytes());
                        batch.remove(Space::Index, &entry);
                        let named = name_entry(&old.index, name, id);
                        batch.remove(Space::Index, &named);
                        touched.extend([(Space::Index, entry), (Space::Index, named)]);
                    }
                }
                guards.push(guard);
            }
            report.seen += ids.len() as u64;
            let event = Event::new("audit.index_rebuild", "progress")
                .detail("generation", target.number)
                .detail("seen", report.seen);
            commit_redone(store, audit, ctx, batch, event, &touched)?;
            drop(guards);
            progress(report.seen, total);
        }
        let mut batch = Batch::default();
        batch.insert(
            Space::Meta,
            META_INDEX_GENERATION,
            &target.number.to_be_bytes(),
        );
        let event = Event::new("audit.index_rebuild", "ok")
            .detail("generation", target.number)
            .detail("seen", report.seen);
        commit_redone(
            store,
            audit,
            ctx,
            batch,
            event,
            &[(Space::Meta, META_INDEX_GENERATION.to_vec())],
        )?;
        Ok(report)
    }
}

/// Tries of a rebuild batch refused as a conflict.
const TRIES: usize = 4;

/// Commits `batch` with `event`; on a cluster, a batch refused because another node changed
/// one of its rows (`touched`: index entries of keys that node made, which this handle never
/// read, so its write compared them as absent) reads them again, so that the next try compares the revisions etcd holds, and goes
/// again. The batch itself does not depend on what the rows held: an entry present is
/// inserted again or removed as planned. One host never conflicts.
fn commit_redone(
    store: &Store,
    audit: &impl Commit,
    ctx: &Context,
    batch: Batch,
    event: Event,
    touched: &[(Space, Vec<u8>)],
) -> Result<()> {
    let mut tries = 1;
    loop {
        match audit.commit(ctx, batch.clone(), event.clone()) {
            Err(e) if e.is_conflict() && tries < TRIES => {
                tries += 1;
                for (space, id) in touched {
                    store.get(*space, id)?;
                }
            }
            other => return other.map(|_| ()),
        }
    }
}
