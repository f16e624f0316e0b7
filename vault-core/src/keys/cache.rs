//! The key cache: decrypted key records by id, bounded, and a bounded memory of ids that are
//! known not to exist.
//!
//! Each key has a slot, `Arc<Mutex<Option<Cached>>>`, whose lock orders every change and
//! verify of the key; an empty slot is filled from the store under that lock. The slots live in
//! [`SHARDS`] shards, each a map behind a `RwLock`, so verifies of different keys share no lock
//! but a shard's read lock. The shard is picked by a keyed hash of the id, so callers who choose
//! ids cannot pile them into one shard.
//!
//! **Bounded.** A shard holds at most its share of the capacity. When a new slot would take it
//! past that, it makes room down to seven eighths: it drops empty slots first, then slots not
//! used since its previous sweep (a second-chance sweep, an approximation of least recently
//! used), then any others. A slot that someone holds (its `Arc` is shared) is never dropped, so
//! two callers never lock two different slots for the same key, and nothing that lives only in a
//! slot is lost but a key's rate-limit bucket, which starts full again when the key is next read
//! (records and credits are durable before a slot holds them).
//!
//! **Unknown ids.** A verify of a well-formed key whose id is not stored leaves no slot behind:
//! the id goes into the shard's negative cache (a set with first-in, first-out eviction), and the
//! next verify of it answers without a store read. Making a slot for an id takes it out of the
//! negative cache under the shard's write lock, and an id is put in only when its slot is empty
//! and held by no one else, so a key that is being created is never remembered as unknown.
//!
//! Why not a cache crate: the slot's lock is the key's lock, and an entry may be dropped only
//! while no one holds it; general caches (moka, quick_cache) evict on their own schedule and
//! would need that guarantee rebuilt around them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::packed::Packed;
use super::record::{Bucket, Credits};
use crate::apikey::KeyId;

/// A key's cached state: the decrypted record, its credits and its rate-limit bucket.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(super) record: Packed,
    pub(super) credits: Option<Credits>,
    pub(super) bucket: Option<Bucket>,
    /// The record versions of the rows held (see `record`): the highest this node has seen.
    pub(super) versions: Versions,
}

/// The record versions of a key's record and credits rows. The credits' version is kept when
/// the row is removed, so credits added again continue from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Versions {
    pub(super) record: u64,
    pub(super) credits: u64,
}

/// Shards of the cache: a power of two, comfortably above the number of cores the server runs.
const SHARDS: usize = 16;

/// Keys cached by default: every key of a vault of a million keys.
pub const DEFAULT_KEYS_CACHED: usize = 1 << 20;

/// Unknown ids remembered by default (about 3 MiB).
pub const DEFAULT_UNKNOWN_IDS_CACHED: usize = 1 << 16;

/// A key's cache slot: its lock orders every change and verify of the key.
pub(crate) type Slot = Arc<Mutex<Option<Cached>>>;

/// What the cache knows of an id.
pub(crate) enum Lookup {
    /// The id's slot (possibly empty: then the store has to be read).
    Slot(Slot),
    /// The id was looked up recently and no key has it.
    Unknown,
}

/// Locks a key's slot. A slot poisoned by a panic mid-change is emptied: the next use reads
/// the store again.
pub(crate) fn lock(slot: &Mutex<Option<Cached>>) -> MutexGuard<'_, Option<Cached>> {
    slot.lock().unwrap_or_else(emptied)
}

/// The slot's lock if no one holds it.
pub(crate) fn try_lock(slot: &Mutex<Option<Cached>>) -> Option<MutexGuard<'_, Option<Cached>>> {
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

/// Decrypted key records by id, shared by every caller; cleared on seal.
#[derive(Debug)]
pub(crate) struct KeyCache {
    shards: Box<[RwLock<Shard>]>,
    /// Slots one shard holds before it makes room.
    keys_per_shard: usize,
    /// Unknown ids one shard remembers.
    unknown_per_shard: usize,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    slots: HashMap<KeyId, Entry>,
    unknown: HashSet<KeyId>,
    /// The order ids went into `unknown`, oldest first. May name ids since taken out of it (a
    /// key made for them); those are skipped when they come to the front.
    unknown_order: VecDeque<KeyId>,
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    /// Used since the shard's last sweep.
    used: AtomicBool,
}

impl KeyCache {
    /// A cache of at most about `keys` slots and `unknown` unknown ids (each at least one per
    /// shard).
    pub(crate) fn new(keys: usize, unknown: usize) -> KeyCache {
        KeyCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            keys_per_shard: keys.div_ceil(SHARDS).max(1),
            unknown_per_shard: unknown.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// Drops every slot and every unknown id.
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            *write(shard) = Shard::default();
        }
    }

    /// The slot of `id`, made empty if missing.
    pub(crate) fn slot(&self, id: &KeyId) -> Slot {
        let lock = self.shard(id);
        if let Some(slot) = read(lock).hit(id) {
            return slot;
        }
        write(lock).take(id, self.keys_per_shard)
    }

    /// For a verify: the slot of `id` (made empty if missing), or [`Lookup::Unknown`] if the
    /// id is remembered as unknown.
    pub(crate) fn lookup(&self, id: &KeyId) -> Lookup {
        let lock = self.shard(id);
        {
            let shard = read(lock);
            if let Some(slot) = shard.hit(id) {
                return Lookup::Slot(slot);
            }
            if shard.unknown.contains(id) {
                return Lookup::Unknown;
            }
        }
        let mut shard = write(lock);
        if shard.unknown.contains(id) {
            return Lookup::Unknown;
        }
        Lookup::Slot(shard.take(id, self.keys_per_shard))
    }

    /// For a change another node made to key `id`: its slot if the cache holds one (without
    /// marking it used), and `id` no longer remembered as unknown (a key made for it).
    #[cfg(feature = "etcd")]
    pub(crate) fn held(&self, id: &KeyId) -> Option<Slot> {
        let mut shard = write(self.shard(id));
        shard.unknown.remove(id);
        shard.slots.get(id).map(|entry| Arc::clone(&entry.slot))
    }

    /// The slot of `id` if the cache holds one, without making one or marking it used: for
    /// what another node tells of a key (`rate_share`), which is not a use of it here.
    pub(crate) fn peek(&self, id: &KeyId) -> Option<Slot> {
        let shard = read(self.shard(id));
        shard.slots.get(id).map(|entry| Arc::clone(&entry.slot))
    }

    /// Hands back a slot whose fill found no key: if it is still empty and no one else holds
    /// it, it is dropped and `id` is remembered as unknown.
    pub(crate) fn release_unknown(&self, id: &KeyId, slot: Slot) {
        let mut shard = write(self.shard(id));
        let Some(entry) = shard.slots.get(id) else {
            return;
        };
        // Two holders: the map and the caller. Nobody can take a third while the write lock
        // is held, since every clone is made under the shard's lock.
        if !Arc::ptr_eq(&entry.slot, &slot) || Arc::strong_count(&slot) != 2 || !is_empty(&slot) {
            return;
        }
        shard.slots.remove(id);
        shard.remember_unknown(*id, self.unknown_per_shard);
    }

    /// For the warm after unseal: a new empty slot for `id`, marked unused, if the id has none
    /// and its shard has room (never making room: the warm must not push out keys in use).
    pub(crate) fn warm_slot(&self, id: &KeyId) -> Option<Slot> {
        let mut shard = write(self.shard(id));
        if shard.slots.contains_key(id) || shard.slots.len() >= self.keys_per_shard {
            return None;
        }
        shard.unknown.remove(id);
        let slot = Slot::default();
        let entry = Entry {
            slot: Arc::clone(&slot),
            used: AtomicBool::new(false),
        };
        shard.slots.insert(*id, entry);
        Some(slot)
    }

    /// The ids of the keys used since their shard's last sweep: the recently used ones, which
    /// the next unseal warms first.
    pub(crate) fn recent_ids(&self) -> Vec<KeyId> {
        let mut ids = Vec::new();
        for shard in &self.shards {
            let shard = read(shard);
            ids.extend(
                shard
                    .slots
                    .iter()
                    .filter(|(_, e)| e.used.load(Ordering::Relaxed))
                    .map(|(id, _)| *id),
            );
        }
        ids
    }

    /// Slots and unknown ids held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(k, u), shard| {
            let shard = read(shard);
            (k + shard.slots.len(), u + shard.unknown.len())
        })
    }

    fn shard(&self, id: &KeyId) -> &RwLock<Shard> {
        let hash = self.hasher.hash_one(id.as_bytes());
        // SHARDS is a power of two; the low bits of a keyed hash are uniform.
        &self.shards[hash as usize & (SHARDS - 1)]
    }
}

impl Shard {
    /// The slot of `id` if it has one, marked used.
    fn hit(&self, id: &KeyId) -> Option<Slot> {
        let entry = self.slots.get(id)?;
        // A load first: in the common case, a key used since the last sweep, nothing is
        // written to the shared cache line.
        if !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(&entry.slot))
    }

    /// The slot of `id`, made (empty) if missing, making room first if the shard holds `room`.
    fn take(&mut self, id: &KeyId, room: usize) -> Slot {
        if let Some(slot) = self.hit(id) {
            return slot;
        }
        // A slot and an unknown mark never coexist: a key may be about to be made for `id`.
        self.unknown.remove(id);
        if self.slots.len() >= room {
            self.make_room(room - room / 8);
        }
        let slot = Slot::default();
        let entry = Entry {
            slot: Arc::clone(&slot),
            used: AtomicBool::new(true),
        };
        self.slots.insert(*id, entry);
        slot
    }

    /// Drops slots no one holds until at most `target` are left: empty ones and ones not used
    /// since the last sweep first, then any.
    fn make_room(&mut self, target: usize) {
        let mut over = self.slots.len().saturating_sub(target);
        self.slots.retain(|_, entry| {
            if Arc::strong_count(&entry.slot) > 1 {
                return true;
            }
            if is_empty(&entry.slot) || (over > 0 && !*entry.used.get_mut()) {
                over = over.saturating_sub(1);
                return false;
            }
            *entry.used.get_mut() = false;
            true
        });
        if over > 0 {
            self.slots.retain(|_, entry| {
                if over == 0 || Arc::strong_count(&entry.slot) > 1 {
                    return true;
                }
                over -= 1;
                false
            });
        }
    }

    fn remember_unknown(&mut self, id: KeyId, room: usize) {
        if !self.unknown.insert(id) {
            return;
        }
        self.unknown_order.push_back(id);
        while self.unknown_order.len() > room {
            if let Some(old) = self.unknown_order.pop_front() {
                self.unknown.remove(&old);
            }
        }
    }
}

/// Whether a slot holds no key. Only called where no one else holds the slot, so the lock is
/// free; a poisoned slot counts as empty (its next load reads the store again).
fn is_empty(slot: &Mutex<Option<Cached>>) -> bool {
    match slot.try_lock() {
        Ok(guard) => guard.is_none(),
        Err(std::sync::TryLockError::Poisoned(_)) => true,
        Err(std::sync::TryLockError::WouldBlock) => false,
    }
}

fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    shard.read().unwrap_or_else(|e| e.into_inner())
}

fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    shard.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> KeyId {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        KeyId::from_bytes(bytes)
    }

    #[test]
    fn slots_stay_within_the_capacity() {
        let cache = KeyCache::new(64, 16);
        for n in 0..10_000 {
            drop(cache.slot(&id(n)));
        }
        let (slots, _) = cache.len();
        assert!(slots <= 64 + SHARDS, "{slots} slots");
    }

    #[test]
    fn a_held_slot_is_never_dropped() {
        let cache = KeyCache::new(SHARDS, 16);
        let held = cache.slot(&id(0));
        for n in 1..1_000 {
            drop(cache.slot(&id(n)));
        }
        assert!(Arc::ptr_eq(&held, &cache.slot(&id(0))));
    }

    #[test]
    fn unknown_ids_are_remembered_within_their_room() {
        let cache = KeyCache::new(1_000, 64);
        for n in 0..10_000 {
            let Lookup::Slot(slot) = cache.lookup(&id(n)) else {
                panic!("a new id is not unknown yet");
            };
            cache.release_unknown(&id(n), slot);
        }
        let (slots, unknown) = cache.len();
        assert_eq!(slots, 0);
        assert!(unknown <= 64 + SHARDS, "{unknown} unknown ids");
        assert!(matches!(cache.lookup(&id(9_999)), Lookup::Unknown));
    }

    #[test]
    fn a_slot_taken_for_an_id_forgets_that_it_was_unknown() {
        let cache = KeyCache::new(1_000, 64);
        let Lookup::Slot(slot) = cache.lookup(&id(1)) else {
            panic!("a new id is not unknown yet");
        };
        cache.release_unknown(&id(1), slot);
        assert!(matches!(cache.lookup(&id(1)), Lookup::Unknown));
        // A key made for the id: `slot` takes it out of the negative cache.
        drop(cache.slot(&id(1)));
        assert!(matches!(cache.lookup(&id(1)), Lookup::Slot(_)));
    }

    #[test]
    fn a_slot_someone_else_holds_is_not_released() {
        let cache = KeyCache::new(1_000, 64);
        let Lookup::Slot(mine) = cache.lookup(&id(1)) else {
            panic!("a new id is not unknown yet");
        };
        let creator = cache.slot(&id(1));
        cache.release_unknown(&id(1), mine);
        assert!(matches!(cache.lookup(&id(1)), Lookup::Slot(_)));
        drop(creator);
    }
}
