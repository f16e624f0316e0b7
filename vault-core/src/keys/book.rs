//! The key book: the keys component. It owns the key cache, reads key records from the store
//! and reads the time from the vault's clock; the vault handle hands it the unsealed keyring
//! and a way to commit ([`Commit`]) for each call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use super::cache::{Cached, Versions};
use super::cache::{KeyCache, lock};
use super::packed::Packed;
use super::rate_share::RateShare;
use super::record::{Bucket, Credits};
use super::types::RateLimit;
use crate::apikey::KeyId;
use crate::audit::Event;
use crate::clock::Clock;
use crate::context::Context;
use crate::keyring::Keyring;
use crate::record::{self, Rollbacks};
use crate::storage::{Batch, Space, Store};
use crate::{Error, Result};

/// Commits store changes with their audit entry, durably, and returns the entry's sequence
/// number: what the vault handle does for a component. A trait, so that a component never
/// names the handle.
pub(crate) trait Commit {
    /// Commits `batch` with `event`'s entry; both are durable when it returns `Ok`.
    fn commit(&self, ctx: &Context, batch: Batch, event: Event) -> Result<u64>;
}

/// API keys: their cached records and every operation on them.
#[derive(Debug)]
pub(crate) struct KeyBook {
    pub(super) store: Store,
    pub(crate) cache: KeyCache,
    pub(super) clock: Clock,
    /// Held (shared) by key creation from the moment it reads the index key until its index
    /// entry is committed, and (exclusive) by the audit key rotation while it commits the new
    /// index key: so no entry under a retired index key is written after the owner index
    /// rebuild listed the keys to move.
    index_gate: RwLock<()>,
    /// The warm after unseal, while it runs (`warm`).
    pub(super) warmer: Mutex<Option<Background>>,
    /// The name index build after unseal, while it runs (`name_index`).
    pub(super) name_builder: Mutex<Option<Background>>,
    /// Holds a name index build between reading a batch's records and committing it, so that
    /// a test can change keys at that moment (`name_index`).
    #[cfg(test)]
    pub(crate) name_index_paused: AtomicBool,
    /// The terms under which keys were imported, once read from the store (`import`).
    pub(super) imports: RwLock<Option<Vec<u32>>>,
    /// Held by an import from its first index lookup until its last commit is durable, so
    /// two imports of one key never both make it. A Tokio mutex: it is held across the
    /// awaits of the group commits.
    pub(crate) import_gate: tokio::sync::Mutex<()>,
    /// What keys emptied from the cache after a conflict held, until the fill that follows:
    /// their record versions, so the row read again is no older than the one the slot held,
    /// and their rate-limit buckets, so the tokens already taken stay taken. An entry lives
    /// from a conflict to the retry that reads the key again.
    floors: Mutex<HashMap<KeyId, Emptied>>,
    /// Rows refused as older than one this node had seen for the id (rolled back in the
    /// store): an integrity alarm.
    rollbacks: Rollbacks,
    /// The rate-limit tokens taken here, tallied for the other nodes of a cluster.
    pub(super) rates: RateShare,
}

impl KeyBook {
    /// A key book over `store` with a cache of about `keys_cached` keys and
    /// `unknown_ids_cached` unknown ids, on `clock`.
    pub(crate) fn new(
        store: Store,
        keys_cached: usize,
        unknown_ids_cached: usize,
        clock: Clock,
    ) -> KeyBook {
        KeyBook {
            store,
            cache: KeyCache::new(keys_cached, unknown_ids_cached),
            clock,
            index_gate: RwLock::new(()),
            warmer: Mutex::new(None),
            name_builder: Mutex::new(None),
            #[cfg(test)]
            name_index_paused: AtomicBool::new(false),
            imports: RwLock::new(None),
            import_gate: tokio::sync::Mutex::new(()),
            floors: Mutex::new(HashMap::new()),
            rollbacks: Rollbacks::default(),
            rates: RateShare::default(),
        }
    }

    /// Holds off audit key rotations: taken by key creation before it reads the keyring.
    pub(crate) fn index_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.index_gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds off key creation: taken by an audit key rotation while it commits.
    pub(crate) fn index_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.index_gate.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every cached key (on seal), once a running warm has stopped.
    pub(crate) fn clear(&self) {
        self.stop_warm();
        self.cache.clear();
        *self.imports.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Forgets every cached key (the watch lost events), leaving a running warm be.
    #[cfg(feature = "etcd")]
    pub(crate) fn clear_cached(&self) {
        self.cache.clear();
    }

    /// Forgets what the cache holds of key `id`, so that the next use reads it from the store
    /// (after a conflict: another node changed it).
    pub(crate) fn forget(&self, id: &KeyId) {
        let slot = self.cache.slot(id);
        self.empty(&mut lock(&slot), id);
    }

    /// Empties a locked slot, keeping the record versions and the rate-limit bucket it held
    /// for the fill that follows.
    pub(super) fn empty(&self, guard: &mut Option<Cached>, id: &KeyId) {
        if let Some(c) = guard.take() {
            let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = c.record.ratelimit.zip(c.bucket.as_deref().copied());
            let emptied = Emptied {
                versions: c.versions,
                bucket,
            };
            floors.insert(*id, emptied);
        }
    }

    /// How many rows this node has refused as older than one it had seen for the same id.
    pub(crate) fn rollbacks(&self) -> u64 {
        self.rollbacks.count()
    }

    /// Refuses record version `got` of key `id`'s row in `space` if `seen` is newer: a row
    /// older than one seen was put back in the store (counted and reported).
    fn check_version(&self, space: Space, id: &KeyId, seen: u64, got: u64) -> Result<()> {
        Ok(self.rollbacks.check(space, id, seen, got)?)
    }

    /// Applies a change another node made to key `id`'s record (`space` [`Space::Keys`]) or
    /// credits ([`Space::Credits`]) to the cache, unless `superseded` says this node has read
    /// or written a newer version of the row: the cache never goes back to an older record.
    /// A key the cache does not hold is left to be read when used; a change that does not
    /// open or decode empties the slot, so the next use reads the store and reports it.
    #[cfg(feature = "etcd")]
    pub(crate) fn apply_remote(
        &self,
        keyring: &Keyring,
        space: Space,
        id: &KeyId,
        value: Option<&[u8]>,
        superseded: impl FnOnce() -> bool,
    ) {
        let Some(slot) = self.cache.held(id) else {
            return;
        };
        let mut guard = lock(&slot);
        if guard.is_none() || superseded() {
            return;
        }
        // A row older than the one held is refused and the slot kept (`apply_to`).
        let applied = guard
            .as_mut()
            .is_some_and(|c| self.apply_to(keyring, c, space, id, value).is_some());
        if !applied {
            *guard = None;
        }
    }

    #[cfg(feature = "etcd")]
    fn apply_to(
        &self,
        keyring: &Keyring,
        c: &mut Cached,
        space: Space,
        id: &KeyId,
        value: Option<&[u8]>,
    ) -> Option<()> {
        match (space, value) {
            (Space::Keys, Some(bytes)) => {
                let opened = record::open_versioned(keyring, Space::Keys, id.as_bytes(), bytes);
                let opened = opened.ok()?;
                let held = c.versions.record;
                if self.check_version(space, id, held, opened.version).is_err() {
                    return Some(());
                }
                let record = Packed::decode(&opened.plain).ok()?;
                if record.ratelimit != c.record.ratelimit {
                    let now_ms = self.clock.now_ms();
                    c.bucket = record
                        .ratelimit
                        .as_ref()
                        .map(|l| Box::new(Bucket::full(l, now_ms)));
                }
                c.record = record;
                c.versions.record = opened.version;
            }
            (Space::Credits, Some(bytes)) => {
                let opened = record::open_versioned(keyring, Space::Credits, id.as_bytes(), bytes);
                let opened = opened.ok()?;
                let held = c.versions.credits;
                if self.check_version(space, id, held, opened.version).is_err() {
                    return Some(());
                }
                c.credits = Some(Credits::decode(&opened.plain)?);
                c.versions.credits = opened.version;
            }
            (Space::Credits, None) => c.credits = None,
            _ => return None,
        }
        Some(())
    }

    /// Fills an empty cache slot from the store. The guard holds `None` for an unknown id.
    pub(super) fn load<'a>(
        &self,
        keyring: &Keyring,
        slot: &'a Mutex<Option<Cached>>,
        id: &KeyId,
    ) -> Result<MutexGuard<'a, Option<Cached>>> {
        self.fill(keyring, lock(slot), id)
    }

    /// Fills a locked, empty cache slot from the store.
    pub(super) fn fill<'a>(
        &self,
        keyring: &Keyring,
        mut guard: MutexGuard<'a, Option<Cached>>,
        id: &KeyId,
    ) -> Result<MutexGuard<'a, Option<Cached>>> {
        if guard.is_none() {
            let Emptied {
                versions: floor,
                bucket: kept,
            } = self.floor(id);
            let Some(bytes) = self.store.get(Space::Keys, id.as_bytes())? else {
                return Ok(guard);
            };
            let opened = record::open_versioned(keyring, Space::Keys, id.as_bytes(), &bytes)?;
            self.check_version(Space::Keys, id, floor.record, opened.version)?;
            let record = Packed::decode(&opened.plain)
                .map_err(|_| Error::Corrupt(format!("key record {id} does not decode")))?;
            let mut versions = Versions {
                record: opened.version,
                credits: floor.credits,
            };
            let credits = match self.store.get(Space::Credits, id.as_bytes())? {
                None => None,
                Some(bytes) => {
                    let space = Space::Credits;
                    let opened = record::open_versioned(keyring, space, id.as_bytes(), &bytes)?;
                    self.check_version(space, id, floor.credits, opened.version)?;
                    versions.credits = opened.version;
                    let credits = Credits::decode(&opened.plain)
                        .ok_or_else(|| Error::Corrupt(format!("credits of {id} do not decode")))?;
                    Some(credits)
                }
            };
            if floor != Versions::default() || kept.is_some() {
                let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
                floors.remove(id);
            }
            // The bucket a conflict emptied goes on if the limit is the one it counted for (a
            // changed limit starts full, as an update does).
            let bucket = match (record.ratelimit, kept) {
                (Some(limit), Some((was, bucket))) if limit == was => Some(bucket),
                (limit, _) => limit.map(|l| Bucket::full(&l, self.clock.now_ms())),
            };
            *guard = Some(Cached {
                record,
                credits,
                bucket: bucket.map(Box::new),
                versions,
            });
        }
        Ok(guard)
    }

    /// What key `id`'s slot held before a conflict emptied it, if it did.
    fn floor(&self, id: &KeyId) -> Emptied {
        let floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        floors.get(id).copied().unwrap_or_default()
    }
}

/// What an emptied slot leaves for the fill that follows (see `KeyBook::floors`).
#[derive(Debug, Clone, Copy, Default)]
struct Emptied {
    versions: Versions,
    /// The bucket and the limit it counted for, for a key with a rate limit.
    bucket: Option<(RateLimit, Bucket)>,
}

/// The error for an unknown key id.
pub(super) fn not_found(id: &KeyId) -> Error {
    Error::NotFound(format!("key {id}"))
}

/// A running job after unseal (the warm, the name index build): its stop switch and thread.
#[derive(Debug)]
pub(super) struct Background {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: JoinHandle<()>,
}

impl Background {
    /// Stops the job and waits for it (at most one key's fill, or one batch's commit).
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        // A panic in the thread only means the cache was left colder, or the name index is
        // built at the next unseal.
        let _ = self.thread.join();
    }

    pub(super) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// A key id from the bytes of a store key.
pub(super) fn id_from(bytes: &[u8]) -> Result<KeyId> {
    let bytes: [u8; 12] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("an index entry is malformed".into()))?;
    Ok(KeyId::from_bytes(bytes))
}
