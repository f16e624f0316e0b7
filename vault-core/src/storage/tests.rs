//! The store: change capture, routing by space, and the contract of `SharedState` checked on
//! sled and on an in-memory model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use proptest::prelude::*;

use super::sled::SledState;
use super::*;

#[test]
fn a_capture_spills_to_disk_and_reads_back_in_apply_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let capture = store.start_capture(tmp.path()).unwrap();
    assert!(
        store.start_capture(tmp.path()).is_none(),
        "one capture at a time"
    );
    let value = vec![7u8; 64 * 1024];
    let batches = CAPTURE_MEMORY / value.len() + 8;
    for i in 0..batches as u64 {
        let mut batch = Batch::default();
        batch.insert(Space::Keys, &i.to_be_bytes(), &value);
        batch.remove(Space::Keys, &(i + 1_000_000).to_be_bytes());
        store.apply(batch).unwrap();
    }
    let ops = capture.finish().unwrap();
    assert_eq!(ops.len(), 2 * batches as u64);
    for (n, op) in ops.enumerate() {
        let (key, v) = op.unwrap();
        let i = (n / 2) as u64;
        if n % 2 == 0 {
            assert_eq!(key[1..], i.to_be_bytes());
            assert_eq!(v.as_deref(), Some(value.as_slice()));
        } else {
            assert_eq!(key[1..], (i + 1_000_000).to_be_bytes());
            assert!(v.is_none());
        }
    }
    // Finished: writes are no longer captured, and a new capture can start.
    assert!(store.start_capture(tmp.path()).is_some());
}

#[test]
fn a_write_that_fails_during_a_capture_fails_the_capture_not_the_next_write() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let capture = store.start_capture(tmp.path()).unwrap();
    store.inject_fault(Fault::Sync);
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"a", b"1");
    assert!(store.apply(batch).is_err());
    store.clear_fault();
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"b", b"2");
    store.apply(batch).unwrap();
    assert!(capture.finish().is_err());
}

/// A second implementation of [`SharedState`]: a `BTreeMap` of raw keys behind a mutex, the
/// simplest store that keeps every promise of the trait. The contract tests below hold it and
/// sled to the same answers.
#[derive(Debug, Default)]
struct MemoryState {
    rows: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// When set, every apply fails before changing anything.
    refuse: std::sync::atomic::AtomicBool,
}

impl MemoryState {
    fn rows(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // Only these test methods take the lock, and none panics holding it.
        self.rows.lock().unwrap()
    }
}

impl SharedState for MemoryState {
    fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.rows().get(&key(space, id)).cloned())
    }

    fn apply(&self, batch: &Batch) -> Result<(), StorageError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::other("the shared store refused the batch"));
        }
        let mut rows = self.rows();
        for (k, v) in batch.changes() {
            match v {
                Some(v) => rows.insert(k.to_vec(), v.to_vec()),
                None => rows.remove(k),
            };
        }
        Ok(())
    }

    fn scan_from(&self, space: Space, start: &[u8]) -> Scan {
        let rows: Vec<Item> = self
            .rows()
            .range(key(space, start)..)
            .take_while(|(k, _)| k[0] == space as u8)
            .map(|(k, v)| (k[1..].to_vec(), v.clone()))
            .collect();
        Box::new(rows.into_iter().map(Ok))
    }

    fn floor(&self, space: Space, id: &[u8]) -> Result<Option<Item>, StorageError> {
        Ok(self
            .rows()
            .range(..=key(space, id))
            .next_back()
            .filter(|(k, _)| k[0] == space as u8)
            .map(|(k, v)| (k[1..].to_vec(), v.clone())))
    }

    fn last(&self, space: Space) -> Result<Option<Item>, StorageError> {
        Ok(self
            .rows()
            .range(key(space, &[])..)
            .take_while(|(k, _)| k[0] == space as u8)
            .last()
            .map(|(k, v)| (k[1..].to_vec(), v.clone())))
    }
}

/// One change of a generated batch: a space, an id and a new value (`None`: remove).
pub(super) type Change = (Space, Vec<u8>, Option<Vec<u8>>);

/// Changes over a few spaces of both kinds and a small alphabet of short ids, so that batches
/// often touch one key twice, ids share prefixes, and spaces sit side by side.
fn change() -> impl Strategy<Value = Change> {
    let space = prop::sample::select(vec![
        Space::Meta,
        Space::Keys,
        Space::Tokens,
        Space::Audit,
        Space::Checkpoint,
        Space::AuditIndex,
        Space::Local,
    ]);
    let id = prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xFF]), 0..4);
    let value = prop::option::weighted(0.75, prop::collection::vec(any::<u8>(), 0..6));
    (space, id, value)
}

pub(super) fn batches() -> impl Strategy<Value = Vec<Vec<Change>>> {
    prop::collection::vec(prop::collection::vec(change(), 0..8), 1..8)
}

fn to_batch(changes: &[Change]) -> Batch {
    let mut batch = Batch::default();
    for (space, id, value) in changes {
        match value {
            Some(v) => batch.insert(*space, id, v),
            None => batch.remove(*space, id),
        }
    }
    batch
}

/// The ids every read of the contract is asked about: every id the alphabet makes up to
/// three bytes long, and the empty one.
fn probes() -> Vec<Vec<u8>> {
    let alphabet = [0u8, 1, 2, 0x7F, 0xFF];
    let mut ids = vec![Vec::new()];
    let mut last = vec![Vec::new()];
    for _ in 0..3 {
        last = last
            .iter()
            .flat_map(|id: &Vec<u8>| {
                alphabet.iter().map(move |&b| {
                    let mut next = id.clone();
                    next.push(b);
                    next
                })
            })
            .collect();
        ids.extend(last.iter().cloned());
    }
    ids
}

/// Applies `batches` to `state` and checks every read against a naive model (a sorted list of
/// rows, searched linearly): the contract of [`SharedState`], minus durability (which the
/// crash tests check on the real vault).
pub(super) fn check_contract(state: &dyn SharedState, batches: &[Vec<Change>]) {
    let mut model: BTreeMap<(u8, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for changes in batches {
        state.apply(&to_batch(changes)).unwrap();
        for (space, id, value) in changes {
            match value {
                Some(v) => model.insert((*space as u8, id.clone()), v.clone()),
                None => model.remove(&(*space as u8, id.clone())),
            };
        }
        // Read your writes: every read after the apply sees it.
        let rows = |space: Space| -> Vec<Item> {
            model
                .iter()
                .filter(|((s, _), _)| *s == space as u8)
                .map(|((_, id), v)| (id.clone(), v.clone()))
                .collect()
        };
        // The spaces are read at once, one thread each: the same reads and the same checks,
        // in a fraction of the time against a store a network away (etcd).
        std::thread::scope(|threads| {
            for space in Space::ALL {
                threads.spawn(move || check_space(state, space, rows(space)));
            }
        });
    }
}

/// Checks every read of `space` against `all`, its rows in the model (in id order).
fn check_space(state: &dyn SharedState, space: Space, all: Vec<Item>) {
    let scanned: Vec<Item> = state.scan_from(space, &[]).map(Result::unwrap).collect();
    assert_eq!(scanned, all, "scan of {space:?}");
    assert_eq!(
        state.last(space).unwrap(),
        all.last().cloned(),
        "last of {space:?}"
    );
    for probe in probes() {
        let expect = all
            .iter()
            .find(|(id, _)| *id == probe)
            .map(|(_, v)| v.clone());
        assert_eq!(
            state.get(space, &probe).unwrap(),
            expect,
            "get {space:?}/{probe:?}"
        );
        let from: Vec<Item> = all.iter().filter(|(id, _)| *id >= probe).cloned().collect();
        let scanned: Vec<Item> = state.scan_from(space, &probe).map(Result::unwrap).collect();
        assert_eq!(scanned, from, "scan of {space:?} from {probe:?}");
        let floor = all.iter().rfind(|(id, _)| *id <= probe).cloned();
        assert_eq!(
            state.floor(space, &probe).unwrap(),
            floor,
            "floor {space:?}/{probe:?}"
        );
        let prefixed: Vec<Item> = all
            .iter()
            .filter(|(id, _)| id.starts_with(&probe))
            .cloned()
            .collect();
        let scanned: Vec<Item> = state
            .scan_prefix(space, &probe, None)
            .map(Result::unwrap)
            .collect();
        assert_eq!(scanned, prefixed, "prefix {probe:?} of {space:?}");
        if let Some((after, _)) = prefixed.first() {
            let rest: Vec<Item> = prefixed[1..].to_vec();
            let scanned: Vec<Item> = state
                .scan_prefix(space, &probe, Some(after))
                .map(Result::unwrap)
                .collect();
            assert_eq!(
                scanned, rest,
                "prefix {probe:?} of {space:?} after {after:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn sled_keeps_the_shared_state_contract(batches in batches()) {
        let tmp = tempfile::tempdir().unwrap();
        let sled = SledState::open(&tmp.path().join("store")).unwrap();
        check_contract(&sled, &batches);
    }

    #[test]
    fn a_map_behind_a_mutex_keeps_the_shared_state_contract(batches in batches()) {
        check_contract(&MemoryState::default(), &batches);
    }

    #[test]
    fn a_store_with_its_shared_spaces_elsewhere_reads_as_one_store(batches in batches()) {
        let tmp = tempfile::tempdir().unwrap();
        let one = Store::open(&tmp.path().join("one")).unwrap();
        let shared = Arc::new(MemoryState::default());
        let split = Store::open_with_shared(&tmp.path().join("split"), shared.clone()).unwrap();
        for changes in &batches {
            one.apply(to_batch(changes)).unwrap();
            split.apply(to_batch(changes)).unwrap();
        }
        let raw = |store: &Store| -> Vec<Item> { store.scan_raw().map(Result::unwrap).collect() };
        prop_assert_eq!(raw(&one), raw(&split));
        for space in Space::ALL {
            let rows = |store: &Store| -> Vec<Item> { store.scan(space).map(Result::unwrap).collect() };
            prop_assert_eq!(rows(&one), rows(&split));
            // Each row is where its space says: shared rows in the shared store only.
            let in_shared: Vec<Item> = shared.scan_from(space, &[]).map(Result::unwrap).collect();
            if space.is_shared() {
                prop_assert_eq!(&in_shared, &rows(&one));
            } else {
                prop_assert!(in_shared.is_empty());
            }
        }
    }
}

#[test]
fn every_space_is_found_by_its_byte_and_known_as_shared_or_local() {
    for space in Space::ALL {
        assert_eq!(Space::from_byte(space as u8), Some(space));
    }
    assert_eq!(Space::from_byte(Space::ALL.len() as u8), None);
    let shared: Vec<Space> = Space::ALL.into_iter().filter(|s| s.is_shared()).collect();
    assert_eq!(
        shared,
        [
            Space::Meta,
            Space::Keys,
            Space::Tokens,
            Space::Index,
            Space::Credits,
            Space::Reveal
        ]
    );
}

/// A batch with a shared change and a node-local one, as most vault writes are.
fn spanning_batch() -> Batch {
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"record", b"v");
    batch.insert(Space::AuditIndex, b"tail", b"t");
    batch
}

#[test]
fn on_one_host_a_batch_spanning_both_kinds_is_one_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    let store = Store::open(&path).unwrap();
    store.inject_fault(Fault::Write);
    assert!(store.apply(spanning_batch()).is_err());
    store.clear_fault();
    assert_eq!(store.get(Space::Keys, b"record").unwrap(), None);
    assert_eq!(store.get(Space::AuditIndex, b"tail").unwrap(), None);
    // A failed flush leaves whatever sled recovers at the reopen: both parts or neither.
    store.inject_fault(Fault::Sync);
    assert!(store.apply(spanning_batch()).is_err());
    store.clear_fault();
    assert_eq!(
        store.get(Space::Keys, b"record").unwrap().is_some(),
        store.get(Space::AuditIndex, b"tail").unwrap().is_some()
    );
    store.apply(spanning_batch()).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.get(Space::Keys, b"record").unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(
        store.get(Space::AuditIndex, b"tail").unwrap(),
        Some(b"t".to_vec())
    );
}

#[test]
fn with_the_shared_spaces_elsewhere_the_local_part_applies_first() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Arc::new(MemoryState::default());
    let store = Store::open_with_shared(&tmp.path().join("store"), shared.clone()).unwrap();
    // The local part fails first: nothing is applied anywhere.
    store.inject_fault(Fault::Write);
    assert!(store.apply(spanning_batch()).is_err());
    store.clear_fault();
    assert_eq!(shared.get(Space::Keys, b"record").unwrap(), None);
    // The shared part fails: the local part (the audit trail's) stays, and the batch fails.
    shared
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let capture = store.start_capture(tmp.path()).unwrap();
    assert!(store.apply(spanning_batch()).is_err());
    assert!(
        capture.finish().is_err(),
        "a failed write fails the capture"
    );
    assert_eq!(store.get(Space::Keys, b"record").unwrap(), None);
    assert_eq!(
        store.get(Space::AuditIndex, b"tail").unwrap(),
        Some(b"t".to_vec())
    );
    // Both up: both parts land, each in its own store.
    shared
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    store.apply(spanning_batch()).unwrap();
    assert_eq!(
        shared.get(Space::Keys, b"record").unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(shared.get(Space::AuditIndex, b"tail").unwrap(), None);
}

/// The newest snapshot file sled wrote in `dir`.
fn newest_snapshot(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap.") && !n.ends_with(".generating"))
        .max()
}

#[test]
fn closing_after_many_changes_writes_a_snapshot_and_keeps_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    let store = Store::open(&path).unwrap();
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"first", b"1");
    store.apply(batch).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    // sled writes a snapshot as it opens, and otherwise only as this store closes.
    let before = newest_snapshot(&path);
    for chunk in 0..25u32 {
        let mut batch = Batch::default();
        for i in 0..1_000u32 {
            batch.insert(Space::Keys, &(chunk * 1_000 + i).to_be_bytes(), b"v");
        }
        store.apply(batch).unwrap();
    }
    drop(store);
    let after = newest_snapshot(&path);
    assert!(after > before, "{before:?} then {after:?}");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.scan(Space::Keys).count(), 25_001);
    assert_eq!(
        store.get(Space::Keys, b"first").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}
