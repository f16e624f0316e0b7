//! The one place that knows sled (`0.34.7`).
//!
//! Everything lives in sled's default tree, in key spaces told apart by a first byte
//! ([`Space`]), so that one `apply_batch` changes several spaces atomically: a key record, its
//! index entries and (later) its audit entry become durable together or not at all.
//!
//! sled is stable but stalled, with reports of corruption after abrupt stops; keeping it behind
//! this module lets the crash tests decide whether another engine must take its place.
//!
//! # Change capture (online backups)
//! [`Store::start_capture`] registers a [`Capture`]: from then on every batch that
//! [`Store::apply`] makes durable is also appended to it, op by op, in apply order, until the
//! capture is finished or dropped. Registration, appends and the end of a capture all happen
//! under the lock that serialises `apply`, so a capture holds exactly the batches applied
//! between its start and its end, each whole. A capture keeps at most [`CAPTURE_MEMORY`] bytes
//! in memory and spills the rest to an unnamed temporary file (deleted when closed), so a long
//! backup under heavy writes costs disk, not memory. A capture never makes a write fail: if it
//! cannot keep up (its spill file fails) or a write fails while it runs, the capture is marked
//! failed and only the backup that owns it fails.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A key space inside the store; the byte is the first byte of every key in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Space {
    /// Vault metadata: format version, seal configuration, keyring.
    Meta = 0,
    /// API-key records.
    Keys = 1,
    /// Vault-token records.
    Tokens = 2,
    /// Secondary indexes (keyed by HMACs of their values).
    Index = 3,
    /// Remaining credits of API keys that have them (record envelope of a u64).
    Credits = 4,
    /// Encrypted copies of the secrets of keys created recoverable.
    Reveal = 5,
    /// Format 1 only: audit entries by sequence number (u64 BE). Opening such a vault moves
    /// them into the audit segment files (`audit::segment`) and removes them here.
    Audit = 6,
    /// Perfect-subtree hashes of the audit tree by level (u8) and index (u64 BE).
    AuditNode = 7,
    /// Signed checkpoints by tree size (u64 BE): the signed note text.
    Checkpoint = 8,
    /// Usage summaries and signals, derived from the audit log (see `usage`).
    Usage = 9,
    /// Where audit entries sit in their segment files, every 256th entry, by sequence number
    /// (u64 BE): the segment's first sequence number and the record's offset (u64 BE each).
    AuditIndex = 10,
}

/// The storage engine failed (I/O, corruption reported by sled).
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageError(#[from] sled::Error);

/// An open store. Clones share one database.
///
/// After a failed write (a full disk, an I/O error) sled's in-memory state holds changes that
/// never reached the disk, and sled 0.34 keeps failing once its log has seen an I/O error. So a
/// failure marks the store broken, and the next read or write first closes and reopens the
/// database, which recovers exactly what was flushed: an operation that failed leaves nothing
/// behind, and the store works again once the fault is gone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    path: PathBuf,
    db: std::sync::RwLock<Option<sled::Db>>,
    broken: std::sync::atomic::AtomicBool,
    fault: FaultSwitch,
    /// Held by every [`Store::apply`] for its whole length; holds the running capture.
    writes: Mutex<Option<CaptureLog>>,
}

/// An `(id, value)` pair read from a space.
pub type Item = (Vec<u8>, Vec<u8>);

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
            return Err(StorageError(sled::Error::Io(std::io::Error::other(what))));
        }
        Ok(())
    }
}

/// Changes applied atomically by [`Store::apply`], in order (a later change to the same key
/// wins).
#[derive(Debug, Default, Clone)]
pub struct Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Batch {
    /// Sets `space/id` to `value`.
    pub fn insert(&mut self, space: Space, id: &[u8], value: &[u8]) {
        self.0.push((key(space, id), Some(value.to_vec())));
    }

    /// Removes `space/id`.
    pub fn remove(&mut self, space: Space, id: &[u8]) {
        self.0.push((key(space, id), None));
    }

    /// Sets the raw key `key` (space byte first), as read by [`Store::scan_raw`].
    pub fn insert_raw(&mut self, key: &[u8], value: &[u8]) {
        self.0.push((key.to_vec(), Some(value.to_vec())));
    }

    /// Removes the raw key `key` (space byte first).
    pub fn remove_raw(&mut self, key: &[u8]) {
        self.0.push((key.to_vec(), None));
    }

    /// Appends `other`'s changes after this batch's.
    pub fn extend(&mut self, other: Batch) {
        self.0.extend(other.0);
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The raw store key of `space/id` (space byte first), as [`Store::scan_raw`] gives them.
pub(crate) fn key(space: Space, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(space as u8);
    k.extend_from_slice(id);
    k
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// sled's background flusher is off: every write is flushed by [`Store::apply`] before it
    /// is acknowledged, and without that thread the database is closed (and its file lock
    /// released) as soon as the last handle drops. A handle dropped by another thread of this
    /// process can still be closing, so a held sled lock is retried for a short while; another
    /// process is kept out before this point by the vault's own lock file.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        Ok(Store {
            inner: Arc::new(StoreInner {
                path: path.to_path_buf(),
                db: std::sync::RwLock::new(Some(open_db(path)?)),
                broken: std::sync::atomic::AtomicBool::new(false),
                fault: FaultSwitch::default(),
                writes: Mutex::new(None),
            }),
        })
    }

    /// A handle on the database, reopened first if a write failed.
    fn db(&self) -> Result<sled::Db, StorageError> {
        use std::sync::atomic::Ordering;
        if self.inner.broken.load(Ordering::Acquire) {
            // Writers replace the whole value; a poisoned lock still holds a whole one.
            let mut guard = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
            if self.inner.broken.load(Ordering::Acquire) {
                tracing::warn!("reopening the store after a failed write");
                *guard = None; // close it, releasing sled's file lock
                *guard = Some(open_db(&self.inner.path)?);
                self.inner.broken.store(false, Ordering::Release);
            }
        }
        let guard = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        guard
            .clone()
            .ok_or_else(|| StorageError(sled::Error::ReportableBug("the store is closed".into())))
    }

    fn mark_broken(&self) {
        self.inner
            .broken
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Opens sled at `path` with the background flusher off (see [`Store::open`]).
fn open_db(path: &Path) -> Result<sled::Db, StorageError> {
    remove_unfinished_snapshots(path)?;
    {
        let config = sled::Config::new().path(path).flush_every_ms(None);
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

impl Store {
    /// The value at `space/id`.
    pub fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db()?.get(key(space, id))?.map(|v| v.to_vec()))
    }

    /// Applies `batch` atomically and makes it durable before returning. Applies are
    /// serialised; a running capture gets a copy of every batch made durable.
    pub fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let mut capture = self.writes();
        let result = self.apply_locked(batch, capture.as_mut());
        if result.is_err()
            && let Some(capture) = capture.as_mut()
        {
            // What the failed batch left in sled's memory is undone by the reopen, but a scan
            // running meanwhile may have read it: the backup cannot be trusted.
            capture.fail("a store write failed while the backup ran");
        }
        result
    }

    fn apply_locked(
        &self,
        batch: Batch,
        capture: Option<&mut CaptureLog>,
    ) -> Result<(), StorageError> {
        let db = self.db()?;
        self.inner.fault.check(Fault::Write)?;
        let copy = capture.as_ref().map(|_| CaptureLog::encode(&batch));
        let mut sled_batch = sled::Batch::default();
        for (k, v) in batch.0 {
            match v {
                Some(v) => sled_batch.insert(k, v),
                None => sled_batch.remove(k),
            }
        }
        let result = db
            .apply_batch(sled_batch)
            .map_err(StorageError::from)
            .and_then(|()| self.inner.fault.check(Fault::Sync))
            .and_then(|()| db.flush().map(|_| ()).map_err(StorageError::from));
        if result.is_err() {
            drop(db);
            self.mark_broken();
        } else if let (Some(capture), Some((bytes, ops))) = (capture, copy) {
            capture.append(&bytes, ops);
        }
        result
    }

    fn writes(&self) -> MutexGuard<'_, Option<CaptureLog>> {
        self.inner.writes.lock().unwrap_or_else(|poisoned| {
            // A write panicked holding the lock: it may be durable without being captured, so
            // the running capture (if any) can no longer be trusted. The store itself is as
            // sled left it, and writes go on.
            let mut guard = poisoned.into_inner();
            if let Some(log) = guard.as_mut() {
                log.fail("a store write panicked while the backup ran");
            }
            self.inner.writes.clear_poison();
            guard
        })
    }

    /// Starts capturing every batch applied from now on (see the module doc); spill files go in
    /// `spill_dir`. `None` if a capture is already running.
    pub fn start_capture(&self, spill_dir: &Path) -> Option<Capture> {
        let mut writes = self.writes();
        if writes.is_some() {
            return None;
        }
        *writes = Some(CaptureLog {
            memory: Vec::new(),
            spill: None,
            spill_dir: spill_dir.to_path_buf(),
            spilled: 0,
            ops: 0,
            failed: None,
        });
        Some(Capture {
            store: self.clone(),
        })
    }

    /// Makes every later [`Store::apply`] fail as `fault` says, until [`Store::clear_fault`].
    /// The seam through which tests inject storage failures; a healthy vault never sets it.
    pub fn inject_fault(&self, fault: Fault) {
        self.inner.fault.set(Some(fault));
    }

    /// Ends an injected fault.
    pub fn clear_fault(&self) {
        self.inner.fault.set(None);
    }

    /// Every `(id, value)` in `space` whose id starts with `prefix` and sorts after `after`
    /// (all of them without `after`), in id order.
    pub fn scan_prefix<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + use<'a> {
        let start = key(space, after.unwrap_or(prefix));
        let skip = after.map(|a| key(space, a));
        self.range(start)
            .filter(move |item| !matches!((item, &skip), (Ok((k, _)), Some(s)) if k.as_ref() == s.as_slice()))
            .take_while(move |item| match item {
                Ok((k, _)) => k.first() == Some(&(space as u8)) && k[1..].starts_with(prefix),
                Err(_) => true,
            })
            .map(|item| {
                let (k, v) = item?;
                Ok((k[1..].to_vec(), v.to_vec()))
            })
    }

    /// Every `(id, value)` in `space` from id `start` (inclusive), in id order.
    pub fn scan_from(
        &self,
        space: Space,
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + use<> {
        self.range(key(space, start))
            .take_while(move |item| match item {
                Ok((k, _)) => k.first() == Some(&(space as u8)),
                Err(_) => true,
            })
            .map(|item| {
                let (k, v) = item?;
                Ok((k[1..].to_vec(), v.to_vec()))
            })
    }

    /// The `(id, value)` of `space` with the largest id at or below `id`.
    pub fn floor(&self, space: Space, id: &[u8]) -> Result<Option<Item>, StorageError> {
        let db = self.db()?;
        match db.range(..=key(space, id)).next_back().transpose()? {
            Some((k, v)) if k.first() == Some(&(space as u8)) => {
                Ok(Some((k[1..].to_vec(), v.to_vec())))
            }
            _ => Ok(None),
        }
    }

    /// The `(id, value)` of `space` with the largest id.
    pub fn last(&self, space: Space) -> Result<Option<Item>, StorageError> {
        Ok(self
            .db()?
            .scan_prefix([space as u8])
            .next_back()
            .transpose()?
            .map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
    }

    /// Every raw `(key, value)` of the store (space byte first), in key order. Not a snapshot:
    /// it may or may not see a write applied while it runs (a [`Capture`] covers those).
    pub fn scan_raw(&self) -> impl Iterator<Item = Result<Item, StorageError>> + use<> {
        self.range(Vec::new()).map(|item| {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        })
    }

    /// Every `(id, value)` in `space`, in id order.
    pub fn scan(
        &self,
        space: Space,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + use<> {
        self.range(vec![space as u8])
            .take_while(move |item| match item {
                Ok((k, _)) => k.first() == Some(&(space as u8)),
                Err(_) => true,
            })
            .map(|item| {
                let (k, v) = item?;
                Ok((k[1..].to_vec(), v.to_vec()))
            })
    }

    /// Every raw `(key, value)` from `start` on; an error first if the store cannot be opened.
    fn range(
        &self,
        start: Vec<u8>,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StorageError>> + use<> {
        let (iter, error) = match self.db() {
            Ok(db) => (Some(db.range(start..)), None),
            Err(e) => (None, Some(e)),
        };
        error.map(Err).into_iter().chain(
            iter.into_iter()
                .flatten()
                .map(|r| r.map_err(StorageError::from)),
        )
    }
}

/// Bytes of captured changes kept in memory before they spill to a temporary file.
pub const CAPTURE_MEMORY: usize = 4 * 1024 * 1024;

/// A running change capture (see the module doc). Dropping it without [`Capture::finish`]
/// ends it and throws its changes away.
#[derive(Debug)]
pub struct Capture {
    store: Store,
}

/// One captured change: `key` (space byte first) set to `value`, or removed (`None`).
pub type CapturedOp = (Vec<u8>, Option<Vec<u8>>);

impl Capture {
    /// Whether the capture has failed already (its owner can stop early: finishing will fail).
    pub fn has_failed(&self) -> bool {
        self.store
            .writes()
            .as_ref()
            .is_none_or(|log| log.failed.is_some())
    }

    /// Ends the capture and returns what it captured, in apply order; an error if it failed
    /// (a write failed while it ran, or its spill file could not be written).
    pub fn finish(self) -> Result<CapturedOps, StorageError> {
        let log = self.store.writes().take();
        let Some(log) = log else {
            return Err(capture_error("the capture was ended by another caller"));
        };
        if let Some(why) = log.failed {
            return Err(capture_error(&why));
        }
        let spill = match log.spill {
            None => None,
            Some(mut file) => {
                file.rewind()
                    .map_err(|e| capture_error(&format!("rereading the spill file: {e}")))?;
                Some(BufReader::new(file).take(log.spilled))
            }
        };
        Ok(CapturedOps {
            spill,
            memory: std::io::Cursor::new(log.memory),
            ops: log.ops,
            read: 0,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Already taken by `finish`, or an abandoned backup: either way nothing runs any more.
        self.store.writes().take();
    }
}

fn capture_error(why: &str) -> StorageError {
    StorageError(sled::Error::Io(std::io::Error::other(format!(
        "change capture: {why}"
    ))))
}

/// The changes of a finished capture, read back in apply order.
#[derive(Debug)]
pub struct CapturedOps {
    spill: Option<std::io::Take<BufReader<File>>>,
    memory: std::io::Cursor<Vec<u8>>,
    ops: u64,
    read: u64,
}

impl CapturedOps {
    /// How many changes were captured.
    pub fn len(&self) -> u64 {
        self.ops
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    fn read_op(&mut self) -> std::io::Result<CapturedOp> {
        fn field(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let mut bytes = vec![0u8; u32::from_be_bytes(len) as usize];
            r.read_exact(&mut bytes)?;
            Ok(bytes)
        }
        fn op(r: &mut impl Read) -> std::io::Result<Option<CapturedOp>> {
            let mut tag = [0u8; 1];
            if r.read(&mut tag)? == 0 {
                return Ok(None);
            }
            let key = field(r)?;
            let value = if tag[0] == 1 { Some(field(r)?) } else { None };
            Ok(Some((key, value)))
        }
        if let Some(spill) = &mut self.spill {
            if let Some(op) = op(spill)? {
                return Ok(op);
            }
            self.spill = None;
        }
        op(&mut self.memory)?
            .ok_or_else(|| std::io::Error::other("the capture ended before its last change"))
    }
}

impl Iterator for CapturedOps {
    type Item = Result<CapturedOp, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.read == self.ops {
            return None;
        }
        self.read += 1;
        Some(
            self.read_op()
                .map_err(|e| capture_error(&format!("reading back a change: {e}"))),
        )
    }
}

/// The capture's log: `tag (1: put, 0: remove) | key len u32 BE | key | [value len u32 BE |
/// value]` per change. Never leaves this process.
#[derive(Debug)]
struct CaptureLog {
    memory: Vec<u8>,
    spill: Option<File>,
    spill_dir: PathBuf,
    spilled: u64,
    ops: u64,
    failed: Option<String>,
}

impl CaptureLog {
    /// The log bytes of `batch`'s changes and their count.
    fn encode(batch: &Batch) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        for (k, v) in &batch.0 {
            out.push(u8::from(v.is_some()));
            // Keys and values are far below 4 GiB: sled itself refuses larger ones.
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        (out, batch.0.len() as u64)
    }

    fn fail(&mut self, why: &str) {
        if self.failed.is_none() {
            self.failed = Some(why.to_owned());
        }
        self.memory = Vec::new();
    }

    fn append(&mut self, bytes: &[u8], ops: u64) {
        if self.failed.is_some() {
            return;
        }
        self.memory.extend_from_slice(bytes);
        self.ops += ops;
        if self.memory.len() >= CAPTURE_MEMORY
            && let Err(e) = self.spill()
        {
            self.fail(&format!(
                "spilling changes to a temporary file in {}: {e}",
                self.spill_dir.display()
            ));
        }
    }

    fn spill(&mut self) -> std::io::Result<()> {
        let file = match &mut self.spill {
            Some(file) => file,
            None => self.spill.insert(tempfile::tempfile_in(&self.spill_dir)?),
        };
        file.write_all(&self.memory)?;
        self.spilled += self.memory.len() as u64;
        self.memory.clear();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
