//! The key cache: decrypted key records by id, bounded, and a bounded memory of ids that are
//! known not to exist.
//!
//! Each key has a slot, an `Arc` of its id, a used mark and a `Mutex<Option<Cached>>`, whose
//! lock orders every change and verify of the key; an empty slot is filled from the store under
//! that lock. The slots live in [`SHARDS`] shards, each a hash table behind a `RwLock`, so
//! verifies of different keys share no lock but a shard's read lock. The shard is picked by a
//! keyed hash of the id, so callers who choose ids cannot pile them into one shard.
//!
//! **Small.** A million keys are cached, so each byte per key is a megabyte. A shard's table
//! holds only the slot's pointer (8 bytes and hashbrown's control byte; the id is compared in
//! the slot, which a hit reads anyway to take its reference): an id-keyed map held the id and
//! the used mark beside the pointer, 32 bytes a bucket, and a table at a million keys has about
//! two buckets per key. The id and the mark fit in what the allocator's 16-byte rounding left
//! unused in the slot's own block, once the rate-limit bucket, which most keys lack, is boxed
//! (a test holds the slot within its 224-byte block).
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

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use super::packed::Packed;
use super::record::{Bucket, Credits};
use crate::apikey::KeyId;

/// A key's cached state: the decrypted record, its credits and its rate-limit bucket.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(super) record: Packed,
    pub(super) credits: Option<Credits>,
    /// Boxed: most keys have no rate limit, and 24 bytes less here keep a slot within the
    /// allocator's 224-byte block (see the module doc).
    pub(super) bucket: Option<Box<Bucket>>,
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
pub(crate) type Slot = Arc<SlotCell>;

/// What a slot holds: the key's id (the shard's table holds only the pointer), whether it was
/// used since its shard's last sweep, and under the lock the key's cached state (none until
/// filled). Derefs to the lock.
#[derive(Debug)]
pub(crate) struct SlotCell {
    id: KeyId,
    used: AtomicBool,
    key: Mutex<Option<Cached>>,
}

impl SlotCell {
    fn new(id: KeyId, used: bool) -> Slot {
        Arc::new(SlotCell {
            id,
            used: AtomicBool::new(used),
            key: Mutex::new(None),
        })
    }
}

impl Deref for SlotCell {
    type Target = Mutex<Option<Cached>>;

    fn deref(&self) -> &Mutex<Option<Cached>> {
        &self.key
    }
}

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
    /// The slots, by the keyed hash of their ids ([`KeyCache::hash`]).
    slots: HashTable<Slot>,
    unknown: HashSet<KeyId>,
    /// The order ids went into `unknown`, oldest first. May name ids since taken out of it (a
    /// key made for them); those are skipped when they come to the front.
    unknown_order: VecDeque<KeyId>,
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
        let (lock, hash) = self.shard(id);
        if let Some(slot) = read(lock).hit(id, hash) {
            return slot;
        }
        write(lock).take(id, hash, self.keys_per_shard, &self.hasher)
    }

    /// For a verify: the slot of `id` (made empty if missing), or [`Lookup::Unknown`] if the
    /// id is remembered as unknown.
    pub(crate) fn lookup(&self, id: &KeyId) -> Lookup {
        let (lock, hash) = self.shard(id);
        {
            let shard = read(lock);
            if let Some(slot) = shard.hit(id, hash) {
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
        Lookup::Slot(shard.take(id, hash, self.keys_per_shard, &self.hasher))
    }

    /// For a change another node made to key `id`: its slot if the cache holds one (without
    /// marking it used), and `id` no longer remembered as unknown (a key made for it).
    #[cfg(feature = "etcd")]
    pub(crate) fn held(&self, id: &KeyId) -> Option<Slot> {
        let (lock, hash) = self.shard(id);
        let mut shard = write(lock);
        shard.unknown.remove(id);
        shard.find(id, hash).map(Arc::clone)
    }

    /// The slot of `id` if the cache holds one, without making one or marking it used: for
    /// what another node tells of a key (`rate_share`), which is not a use of it here.
    pub(crate) fn peek(&self, id: &KeyId) -> Option<Slot> {
        let (lock, hash) = self.shard(id);
        read(lock).find(id, hash).map(Arc::clone)
    }

    /// Hands back a slot whose fill found no key: if it is still empty and no one else holds
    /// it, it is dropped and `id` is remembered as unknown.
    pub(crate) fn release_unknown(&self, id: &KeyId, slot: Slot) {
        let (lock, hash) = self.shard(id);
        let mut shard = write(lock);
        let Ok(entry) = shard.slots.find_entry(hash, |s| s.id == *id) else {
            return;
        };
        // Two holders: the table and the caller. Nobody can take a third while the write lock
        // is held, since every clone is made under the shard's lock.
        let held = entry.get();
        if !Arc::ptr_eq(held, &slot) || Arc::strong_count(&slot) != 2 || !is_empty(&slot) {
            return;
        }
        entry.remove();
        shard.remember_unknown(*id, self.unknown_per_shard);
    }

    /// For the warm after unseal: a new empty slot for `id`, marked unused, if the id has none
    /// and its shard has room (never making room: the warm must not push out keys in use).
    pub(crate) fn warm_slot(&self, id: &KeyId) -> Option<Slot> {
        let (lock, hash) = self.shard(id);
        let mut shard = write(lock);
        if shard.find(id, hash).is_some() || shard.slots.len() >= self.keys_per_shard {
            return None;
        }
        shard.unknown.remove(id);
        Some(shard.insert(*id, hash, false, &self.hasher))
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
                    .filter(|slot| slot.used.load(Ordering::Relaxed))
                    .map(|slot| slot.id),
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

    /// The shard of `id` and the hash its table files it under: one keyed hash of the id, whose
    /// bits 32 to 35 pick the shard. hashbrown takes a bucket from the low bits and a control
    /// tag from the top seven, so the bits that are the same for every id of a shard are ones
    /// it never reads for a table under 2^32 buckets.
    fn shard(&self, id: &KeyId) -> (&RwLock<Shard>, u64) {
        let hash = self.hasher.hash_one(id.as_bytes());
        // SHARDS is a power of two; every bit of a keyed hash is uniform.
        (&self.shards[(hash >> 32) as usize & (SHARDS - 1)], hash)
    }
}

impl Shard {
    /// The slot of `id` if it has one.
    fn find(&self, id: &KeyId, hash: u64) -> Option<&Slot> {
        self.slots.find(hash, |slot| slot.id == *id)
    }

    /// The slot of `id` if it has one, marked used.
    fn hit(&self, id: &KeyId, hash: u64) -> Option<Slot> {
        let slot = self.find(id, hash)?;
        // A load first: in the common case, a key used since the last sweep, nothing is
        // written to the shared cache line.
        if !slot.used.load(Ordering::Relaxed) {
            slot.used.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(slot))
    }

    /// A new empty slot for `id`, which has none.
    fn insert(&mut self, id: KeyId, hash: u64, used: bool, hasher: &RandomState) -> Slot {
        let slot = SlotCell::new(id, used);
        // Growing rehashes every slot: the hash is recomputed from the id the slot holds with
        // the keyed hasher `KeyCache::shard` made `hash` with.
        self.slots.insert_unique(hash, Arc::clone(&slot), |s| {
            hasher.hash_one(s.id.as_bytes())
        });
        slot
    }

    /// The slot of `id`, made (empty) if missing, making room first if the shard holds `room`.
    fn take(&mut self, id: &KeyId, hash: u64, room: usize, hasher: &RandomState) -> Slot {
        if let Some(slot) = self.hit(id, hash) {
            return slot;
        }
        // A slot and an unknown mark never coexist: a key may be about to be made for `id`.
        self.unknown.remove(id);
        if self.slots.len() >= room {
            self.make_room(room - room / 8);
        }
        self.insert(*id, hash, true, hasher)
    }

    /// Drops slots no one holds until at most `target` are left: empty ones and ones not used
    /// since the last sweep first, then any.
    fn make_room(&mut self, target: usize) {
        let mut over = self.slots.len().saturating_sub(target);
        self.slots.retain(|slot| {
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            if is_empty(slot) || (over > 0 && !slot.used.load(Ordering::Relaxed)) {
                over = over.saturating_sub(1);
                return false;
            }
            slot.used.store(false, Ordering::Relaxed);
            true
        });
        if over > 0 {
            self.slots.retain(|slot| {
                if over == 0 || Arc::strong_count(slot) > 1 {
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

    /// The tables grow from empty, rehashing every slot from the id it holds: each id must
    /// still find its own slot after many growths, and no other.
    #[test]
    fn every_slot_is_found_by_its_id_after_the_tables_grew() {
        let cache = KeyCache::new(1 << 20, 64);
        let slots: Vec<Slot> = (0..20_000).map(|n| cache.slot(&id(n))).collect();
        for (n, slot) in (0..20_000).zip(&slots) {
            let found = cache.peek(&id(n)).expect("a slot made is held");
            assert!(Arc::ptr_eq(&found, slot), "id {n} found another slot");
            assert_eq!(found.id, id(n));
        }
        assert!(cache.peek(&id(20_000)).is_none());
        assert_eq!(cache.len().0, 20_000);
        assert_eq!(cache.recent_ids().len(), 20_000);
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

#[cfg(all(test, target_pointer_width = "64"))]
mod size {
    use super::*;

    /// A slot is an `Arc`'s block: two counts and the cell. glibc hands out blocks of a multiple
    /// of 16 bytes with an 8-byte header, so up to 216 bytes take a 224-byte block; one byte more
    /// takes 240, 16 MiB at a million keys.
    #[test]
    fn a_slot_fits_a_224_byte_block() {
        let block = 2 * size_of::<usize>() + size_of::<SlotCell>();
        assert!(block <= 216, "a slot takes {block} bytes");
    }
}
