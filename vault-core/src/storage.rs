//! The one place that knows sled (`0.34.7`).
//!
//! Everything lives in sled's default tree, in key spaces told apart by a first byte
//! ([`Space`]), so that one `apply_batch` changes several spaces atomically: a key record, its
//! index entries and (later) its audit entry become durable together or not at all.
//!
//! sled is stable but stalled, with reports of corruption after abrupt stops; keeping it behind
//! this module lets the crash tests decide whether another engine must take its place.

use std::path::Path;
use std::sync::Arc;

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
    /// Audit entries by sequence number (u64 BE): their canonical JSON bytes.
    Audit = 6,
    /// Perfect-subtree hashes of the audit tree by level (u8) and index (u64 BE).
    AuditNode = 7,
    /// Signed checkpoints by tree size (u64 BE): the signed note text.
    Checkpoint = 8,
    /// Usage summaries and signals, derived from the audit log (see `usage`).
    Usage = 9,
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
    path: std::path::PathBuf,
    db: std::sync::RwLock<Option<sled::Db>>,
    broken: std::sync::atomic::AtomicBool,
    fault: FaultSwitch,
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
struct FaultSwitch(std::sync::Mutex<Option<Fault>>);

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
#[derive(Debug, Default)]
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

    /// Appends `other`'s changes after this batch's.
    pub fn extend(&mut self, other: Batch) {
        self.0.extend(other.0);
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn key(space: Space, id: &[u8]) -> Vec<u8> {
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

impl Store {
    /// The value at `space/id`.
    pub fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db()?.get(key(space, id))?.map(|v| v.to_vec()))
    }

    /// Applies `batch` atomically and makes it durable before returning.
    pub fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let db = self.db()?;
        self.inner.fault.check(Fault::Write)?;
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
        }
        result
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

    /// The `(id, value)` of `space` with the largest id.
    pub fn last(&self, space: Space) -> Result<Option<Item>, StorageError> {
        Ok(self
            .db()?
            .scan_prefix([space as u8])
            .next_back()
            .transpose()?
            .map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
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
