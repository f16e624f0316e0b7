//! The name index: finding keys by their exact name without reading every record.
//!
//! Key names live inside encrypted records, so a search by name would otherwise decrypt every
//! record. An entry is `0x04 || first 8 bytes of HMAC(index key, 0x04 || name) || key id`, empty
//! value, in the Index space, under the same audit key generation's index key as the owner
//! index (`owner_index`): so no name is in the clear on disk or in etcd, and the entries move
//! with the owner index's rebuild after `rotate-audit-key`. Eight bytes are enough: a listing
//! compares the record's name with the one asked for, so an HMAC collision (about 2^-24 for a
//! pair among a million distinct names) only costs a record read, never a wrong answer.
//!
//! Every path that gives a key a name writes its entry in the same batch as the record: create,
//! import (`manage::stage_new`) and a rename (`update`, which removes the old name's entry).
//! Rotate keeps the key id and the name; revoke keeps the record (and its entries). A restore
//! copies the entries with the rest of the store.
//!
//! Vaults made by builds without the index have none: unseal starts a thread that builds it
//! ([`KeyBook::start_name_index`]) while the vault already answers (at a million keys the build
//! takes tens of seconds, far over the unseal budget), from a scan of the key records in id
//! order, a batch at a time, and records it as built (`Meta/name-index`, one byte: 1) in the
//! commit of its last batch. Until the mark exists a search by name is refused (a conflict),
//! never answered from a partial index. Seal and close stop the thread and wait for it (at most
//! one batch's commit); the next unseal starts over from the first id (entries written twice
//! are the same bytes), as after a crash part-way. A failed build is logged and leaves the
//! vault serving everything else; the next unseal tries again.
//!
//! **Changes during the build.** Each batch reads the current keyring and holds the index gate
//! (shared) from reading its records until its commit is durable, as create does; so:
//! - a key created or imported during the build has its entry from its own batch, whether or
//!   not the scan reaches its id;
//! - a rename writes the new name's entry in its own batch; if the build read the record
//!   before the rename and commits after it, the old name's entry stays too: a stale entry,
//!   which a listing passes over (it compares each record's name), so it costs a record read,
//!   never a wrong answer;
//! - `rotate-audit-key` takes the gate exclusively to commit the new index key, so no batch
//!   writes under the retired key after the owner index rebuild listed the keys to move, and
//!   that rebuild writes every key's entry under the new key from the record itself.
//!
//! So when the last batch writes the mark, every key has an entry for its current name: those
//! the scan passed by the build, those made or renamed meanwhile by their own batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::book::{Background, Commit, KeyBook, id_from};
use super::generation::read_generations;
use super::packed::Packed;
use crate::apikey::KeyId;
use crate::audit::Event;
use crate::context::Context;
use crate::crypto::{self, SecretKey};
use crate::keyring::Keyring;
use crate::storage::{Batch, Space, Store};
use crate::{Error, Result, record};

/// Present (one byte, 1) once every key has its name index entry.
const META_NAME_INDEX: &[u8] = b"name-index";

/// Name index entries: `tag || first 8 bytes of HMAC(index key, tag || name) || key id`.
const NAME_INDEX: u8 = 4;

/// Bytes of the truncated HMAC in an entry.
const MAC_BYTES: usize = 8;

/// Keys indexed per commit while building (fewer where the shared store takes fewer keys).
const BATCH: usize = 1024;

/// Tries a build batch gets when another node writes one of its entries first.
const CONFLICT_TRIES: u32 = 4;

/// The start of every index entry of keys named `name` under `index_key`.
pub(crate) fn name_index_prefix(index_key: &SecretKey, name: &str) -> Vec<u8> {
    let mac = crypto::hmac(index_key, &[&[NAME_INDEX], name.as_bytes()]);
    let mut prefix = Vec::with_capacity(1 + MAC_BYTES + 12);
    prefix.push(NAME_INDEX);
    prefix.extend_from_slice(&mac[..MAC_BYTES]);
    prefix
}

/// Key `id`'s entry for `name` under `index_key`.
pub(crate) fn name_entry(index_key: &SecretKey, name: &str, id: &KeyId) -> Vec<u8> {
    let mut entry = name_index_prefix(index_key, name);
    entry.extend_from_slice(id.as_bytes());
    entry
}

/// Marks the name index complete: in a new vault's first batch, and in a build's last.
pub(crate) fn mark_built(batch: &mut Batch) {
    batch.insert(Space::Meta, META_NAME_INDEX, &[1]);
}

/// Whether every key has its name index entry.
pub(crate) fn is_built(store: &Store) -> Result<bool> {
    Ok(store.get(Space::Meta, META_NAME_INDEX)?.is_some())
}

/// The prefixes of the entries of keys named `name` under every generation the owner index is
/// read from (`owner_index::owner_prefixes`). Refused until the index is built.
pub(crate) fn name_prefixes(store: &Store, keyring: &Keyring, name: &str) -> Result<Vec<Vec<u8>>> {
    if !is_built(store)? {
        return Err(Error::Conflict(
            "the name index is being built (in the background, after the first unseal since an \
             upgrade); try again later, or search by owner meanwhile"
                .into(),
        ));
    }
    Ok(read_generations(store, keyring)?
        .map(|g| name_index_prefix(&g.index, name))
        .collect())
}

/// Stages a rename of key `id` from `old` to `new`: the old name's entries (under every
/// generation the owner index may still be read from) removed and the new one's written.
pub(crate) fn stage_rename(
    store: &Store,
    keyring: &Keyring,
    batch: &mut Batch,
    id: &KeyId,
    old: &str,
    new: &str,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    for generation in read_generations(store, keyring)? {
        let entry = name_entry(&generation.index, old, id);
        // Read first: a shared store other nodes write (etcd) refuses to change a row this
        // handle has not seen, and an absent entry needs no removal.
        if store.get(Space::Index, &entry)?.is_some() {
            batch.remove(Space::Index, &entry);
        }
    }
    let entry = name_entry(&keyring.index, new, id);
    if store.get(Space::Index, &entry)?.is_none() {
        batch.insert(Space::Index, &entry, &[]);
    }
    Ok(())
}

impl KeyBook {
    /// Starts building the name index in the background (see the module documentation), unless
    /// it is built; a build already running is stopped first. `keys` gives the keyring the
    /// vault holds now, or `None` once it is sealed; `audit` commits each batch with its entry.
    /// Neither may hold the vault handle: the thread must not keep a dropped vault open.
    pub(crate) fn start_name_index<K, C>(
        self: &Arc<Self>,
        keys: impl Fn() -> Option<Arc<K>> + Send + 'static,
        audit: Arc<C>,
    ) where
        K: AsRef<Keyring>,
        C: Commit + Send + Sync + 'static,
    {
        let mut builder = self.name_builder.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = builder.take() {
            old.stop();
        }
        // A store error here is met again (and logged) by the thread.
        if is_built(&self.store).unwrap_or(false) {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (book, halt) = (Arc::clone(self), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("keyvault-name-index".into())
            .spawn(move || {
                let ctx = Context::new(crate::context::Actor::Operator);
                if let Err(e) = book.build_name_index(&ctx, &keys, audit.as_ref(), &halt) {
                    // The vault serves everything else; a name search stays refused.
                    tracing::error!(error = %e, "could not build the name index; the next unseal tries again");
                }
            });
        match thread {
            Ok(thread) => *builder = Some(Background { stop, thread }),
            Err(e) => tracing::error!(
                error = %e,
                "could not start building the name index; the next unseal tries again"
            ),
        }
    }

    /// Stops a running name index build, if any, and waits for it (at most one batch).
    pub(crate) fn stop_name_index(&self) {
        let builder = self
            .name_builder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(builder) = builder {
            builder.stop();
        }
    }

    /// Whether a name index build is still running.
    pub(crate) fn name_index_building(&self) -> bool {
        let builder = self.name_builder.lock().unwrap_or_else(|e| e.into_inner());
        builder.as_ref().is_some_and(|b| !b.is_finished())
    }

    /// The build's loop: a batch at a time until the last, the vault seals or `stop` is set.
    /// Returns the keys indexed, or `None` when stopped before the end.
    fn build_name_index<K: AsRef<Keyring>>(
        &self,
        ctx: &Context,
        keys: &impl Fn() -> Option<Arc<K>>,
        audit: &impl Commit,
        stop: &AtomicBool,
    ) -> Result<Option<u64>> {
        let store = &self.store;
        if is_built(store)? {
            return Ok(Some(0));
        }
        let started = std::time::Instant::now();
        let per_batch = store.max_shared_keys().saturating_sub(1).clamp(1, BATCH);
        let mut seen = 0u64;
        let mut pending: Vec<Vec<u8>> = Vec::with_capacity(per_batch);
        let mut after: Option<Vec<u8>> = None;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            // From reading the keyring until the commit is durable, as create: see the module
            // documentation.
            let _gate = self.index_shared();
            let Some(keys) = keys() else {
                return Ok(None); // sealed: the next unseal starts again
            };
            let keyring = keys.as_ref().as_ref();
            pending.clear();
            // One page of records at a time: a scan is never held across a commit.
            for item in store.scan_prefix(Space::Keys, &[], after.as_deref()) {
                let (id, sealed) = item?;
                after = Some(id.clone());
                // Records put under other ids through `Vault::put_record` are no keys.
                let Ok(id) = id_from(&id) else { continue };
                // A record that does not open or decode is reported when it is read (show, list,
                // verify); it must not keep the other keys out of the index.
                let record = record::open(keyring, Space::Keys, id.as_bytes(), &sealed)
                    .ok()
                    .and_then(|plain| Packed::decode(&plain).ok());
                let Some(record) = record else {
                    tracing::warn!(key_id = %id, "a key record does not decode: not in the name index");
                    continue;
                };
                pending.push(name_entry(&keyring.index, record.name(), &id));
                if pending.len() == per_batch {
                    break;
                }
            }
            #[cfg(test)]
            self.hold_name_index(stop);
            if stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            let last = pending.len() < per_batch;
            seen += pending.len() as u64;
            self.commit_name_batch(ctx, audit, &pending, last, seen)?;
            if last {
                tracing::info!(
                    keys = seen,
                    seconds = started.elapsed().as_secs_f64(),
                    "built the name index"
                );
                return Ok(Some(seen));
            }
        }
    }

    /// Waits while a test holds the build (`name_index_paused`), or until it is stopped.
    #[cfg(test)]
    fn hold_name_index(&self, stop: &AtomicBool) {
        while self.name_index_paused.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn commit_name_batch(
        &self,
        ctx: &Context,
        audit: &impl Commit,
        entries: &[Vec<u8>],
        last: bool,
        seen: u64,
    ) -> Result<()> {
        let mut tries = 1;
        loop {
            let mut batch = Batch::default();
            for entry in entries {
                // On a shared store other nodes write, an entry they wrote meanwhile must be
                // read before this handle may write it; there it is already right.
                if self.store.is_clustered() && self.store.get(Space::Index, entry)?.is_some() {
                    continue;
                }
                batch.insert(Space::Index, entry, &[]);
            }
            let outcome = if last { "ok" } else { "progress" };
            // Read first for the same reason; another node may have finished the build.
            if last && !is_built(&self.store)? {
                mark_built(&mut batch);
            }
            let event = Event::new("keys.name_index_build", outcome).detail("seen", seen);
            match audit.commit(ctx, batch, event) {
                Err(e) if e.is_conflict() && tries < CONFLICT_TRIES => tries += 1,
                other => return other.map(|_| ()),
            }
        }
    }
}
