//! The sled (`0.34.7`) database: a node's local state and, on one host, the shared state too.
//!
//! Everything lives in sled's default tree, in key spaces told apart by a first byte
//! ([`Space`]), so that one `apply_batch` changes several spaces atomically: a key record, its
//! index entries and the audit log's tail become durable together or not at all.
//!
//! sled is stable but stalled, with reports of corruption after abrupt stops; keeping it behind
//! this file lets the crash tests decide whether another engine must take its place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use super::shared::{Scan, SharedState};
use super::space::{Batch, Item, Space, StorageError, key};

/// A storage failure to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes fail before anything is applied (as with a full disk).
    Write,
    /// Writes are applied in memory but the flush to disk fails (as with an fsync error).
    Sync,
}

#[derive(Debug, Default)]
struct FaultSwitch(Mutex<Option<Fault>>);

impl FaultSwitch {
    fn set(&self, fault: Option<Fault>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    fn check(&self, at: Fault) -> Result<(), StorageError> {
        if *self.0.lock().unwrap_or_else(|e| e.into_inner()) == Some(at) {
            let what = match at {
                Fault::Write => "injected write failure",
                Fault::Sync => "injected fsync failure",
            };
            return Err(sled::Error::Io(std::io::Error::other(what)).into());
        }
        Ok(())
    }
}

/// One sled database.
///
/// After a failed write (a full disk, an I/O error) sled's in-memory state holds changes that
/// never reached the disk, and sled 0.34 keeps failing once its log has seen an I/O error. So a
/// failure marks the database broken, and the next read or write first closes and reopens it,
/// which recovers exactly what was flushed: an operation that failed leaves nothing behind, and
/// the database works again once the fault is gone.
#[derive(Debug)]
pub(crate) struct SledState {
    path: PathBuf,
    db: RwLock<Option<sled::Db>>,
    broken: AtomicBool,
    fault: FaultSwitch,
    /// Changes applied since the database was opened: how much log the next open replays.
    changes: AtomicU64,
}

/// Changes since open past which closing writes a snapshot (see [`SledState`]'s `Drop`).
const SNAPSHOT_AT_CLOSE_AFTER: u64 = 20_000;

impl SledState {
    /// Opens (creating if needed) the database in directory `path`.
    ///
    /// sled's background flusher is off: every write is flushed by [`SledState::apply`] before
    /// it is acknowledged, and without that thread the database is closed (and its file lock
    /// released) as soon as the last handle drops. A handle dropped by another thread of this
    /// process can still be closing, so a held sled lock is retried for a short while; another
    /// process is kept out before this point by the vault's own lock file.
    pub(crate) fn open(path: &Path) -> Result<SledState, StorageError> {
        Ok(SledState {
            path: path.to_path_buf(),
            db: RwLock::new(Some(open_db(path)?)),
            broken: AtomicBool::new(false),
            fault: FaultSwitch::default(),
            changes: AtomicU64::new(0),
        })
    }

    /// A handle on the database, reopened first if a write failed.
    fn db(&self) -> Result<sled::Db, StorageError> {
        if self.broken.load(Ordering::Acquire) {
            // Writers replace the whole value; a poisoned lock still holds a whole one.
            let mut guard = self.db.write().unwrap_or_else(|e| e.into_inner());
            if self.broken.load(Ordering::Acquire) {
                tracing::warn!("reopening the store after a failed write");
                *guard = None; // close it, releasing sled's file lock
                *guard = Some(open_db(&self.path)?);
                self.broken.store(false, Ordering::Release);
            }
        }
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        guard
            .clone()
            .ok_or_else(|| sled::Error::ReportableBug("the store is closed".into()).into())
    }

    /// Sets or clears the fault every later [`SledState::apply`] simulates.
    pub(crate) fn set_fault(&self, fault: Option<Fault>) {
        self.fault.set(fault);
    }

    /// The value at raw key `key` (space byte first).
    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db()?.get(key)?.map(|v| v.to_vec()))
    }

    /// Every raw `(key, value)` from `start` on; an error first if the database cannot be
    /// opened.
    pub(crate) fn range(
        &self,
        start: Vec<u8>,
    ) -> impl Iterator<Item = Result<Item, StorageError>> + Send + use<> {
        let (iter, error) = match self.db() {
            Ok(db) => (Some(db.range(start..)), None),
            Err(e) => (None, Some(e)),
        };
        error
            .map(Err)
            .into_iter()
            .chain(iter.into_iter().flatten().map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StorageError::from)
            }))
    }
}

/// Closing writes a snapshot when much was written since open.
///
/// sled 0.34 writes its snapshot (the page table) only when it opens: an open reads the last
/// snapshot, then replays the whole log written since, and writes a new snapshot. After a day of
/// writes, or a million keys created, that replay took more than a second. So a database that
/// took more than [`SNAPSHOT_AT_CLOSE_AFTER`] changes is opened once more as it closes, which
/// replays the log then and writes the snapshot, and the next open (a restart) reads it and
/// replays nearly nothing. Nothing is written that was not durable already; if the process
/// stops meanwhile, the next open replays as it would have. Closing takes the replay's time
/// instead (the vault's lock file is still held).
impl Drop for SledState {
    fn drop(&mut self) {
        if *self.changes.get_mut() <= SNAPSHOT_AT_CLOSE_AFTER || *self.broken.get_mut() {
            return;
        }
        let db = self.db.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        drop(db);
        match open_db(&self.path) {
            Ok(db) => drop(db),
            // An iterator still open somewhere holds sled's lock: the next open replays.
            Err(e) => {
                tracing::warn!(error = %e, "could not write a snapshot of the store at close")
            }
        }
    }
}

impl SharedState for SledState {
    fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db()?.get(key(space, id))?.map(|v| v.to_vec()))
    }

    /// One sled batch, then a flush, whatever spaces the batch touches.
    fn apply(&self, batch: &Batch) -> Result<(), StorageError> {
        let db = self.db()?;
        self.fault.check(Fault::Write)?;
        let mut sled_batch = sled::Batch::default();
        for (k, v) in batch.changes() {
            match v {
                Some(v) => sled_batch.insert(k, v),
                None => sled_batch.remove(k),
            }
        }
        self.changes
            .fetch_add(batch.changes().count() as u64, Ordering::Relaxed);
        let result = db
            .apply_batch(sled_batch)
            .map_err(StorageError::from)
            .and_then(|()| self.fault.check(Fault::Sync))
            .and_then(|()| db.flush().map(|_| ()).map_err(StorageError::from));
        if result.is_err() {
            drop(db);
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    fn scan_from(&self, space: Space, start: &[u8]) -> Scan {
        Box::new(
            self.range(key(space, start))
                .take_while(move |item| match item {
                    Ok((k, _)) => k.first() == Some(&(space as u8)),
                    Err(_) => true,
                })
                .map(|item| {
                    let (k, v) = item?;
                    Ok((k[1..].to_vec(), v))
                }),
        )
    }

    fn floor(&self, space: Space, id: &[u8]) -> Result<Option<Item>, StorageError> {
        let db = self.db()?;
        match db.range(..=key(space, id)).next_back().transpose()? {
            Some((k, v)) if k.first() == Some(&(space as u8)) => {
                Ok(Some((k[1..].to_vec(), v.to_vec())))
            }
            _ => Ok(None),
        }
    }

    fn last(&self, space: Space) -> Result<Option<Item>, StorageError> {
        Ok(self
            .db()?
            .scan_prefix([space as u8])
            .next_back()
            .transpose()?
            .map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
    }
}

/// Bytes of pages sled keeps in memory (its default is 1 GiB).
///
/// Verifies answer from the key cache, which holds every key of a vault of a million keys
/// decrypted; sled's page cache only serves what misses it (a key read once after unseal, a
/// list, an index scan) and the writes. Left at sled's default, it fills with pages whose
/// records the key cache already holds, up to a gigabyte at a million keys: the whole budget of
/// 1 KiB of resident memory per key. 64 MiB keeps the pages of the tree's inner nodes and the
/// audit tail, and a read that misses costs a read of the log file (from the OS page cache, as
/// a rule).
const PAGE_CACHE_BYTES: u64 = 64 << 20;

/// Opens sled at `path` with the background flusher off (see [`SledState::open`]).
fn open_db(path: &Path) -> Result<sled::Db, StorageError> {
    remove_unfinished_snapshots(path)?;
    let config = sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        .cache_capacity(PAGE_CACHE_BYTES);
    let mut wait = std::time::Duration::from_millis(5);
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && wait < std::time::Duration::from_secs(2) =>
            {
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes the snapshot files sled never finished (`snap.*.generating`).
///
/// sled 0.34 writes a snapshot to `snap.N.generating`, syncs it and renames it to `snap.N`; a
/// write that fails part way (on a full disk, when the database is closed) leaves the
/// `.generating` file behind, and sled's next open takes it for the newest snapshot and fails
/// with "corrupted data", so the store could never reopen, even once space is freed. Such a
/// file is by construction unfinished: sled itself only ever reads the renamed ones, plus its
/// log, which holds everything the unfinished snapshot would have summarised.
fn remove_unfinished_snapshots(path: &Path) -> Result<(), StorageError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(sled::Error::Io(e).into()),
    };
    for entry in entries {
        let entry = entry.map_err(sled::Error::Io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a snapshot file sled did not finish writing");
            std::fs::remove_file(entry.path()).map_err(sled::Error::Io)?;
        }
    }
    Ok(())
}
