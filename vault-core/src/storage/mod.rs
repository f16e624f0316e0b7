//! The vault's store: key spaces, atomic batches, and where each space lives.
//!
//! Every stored value is at a key `(space, id)`: a [`Space`], told apart by the key's first
//! byte, and an id. [`Store`] is what the rest of the crate reads and writes through. It routes
//! each operation by its space: the *shared* spaces ([`Space::is_shared`]: what every node of a
//! vault must agree on) through a [`SharedState`] trait object, the *node-local* ones to the
//! node's own sled database (`storage/sled.rs`; sled `0.34.7`, which nothing else in the crate
//! names). On one host ([`Store::open`]) both are the same sled database, and a batch that
//! touches both kinds is one sled batch, atomic and durable as a whole.
//! [`Store::open_with_shared`] puts the shared spaces in another store; what that store must
//! guarantee, and what then becomes of a batch that spans both, is in [`SharedState`]'s doc.
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

mod capture;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod etcd_config;
mod shared;
mod sled;
mod space;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use capture::{CAPTURE_MEMORY, Capture, CapturedOp, CapturedOps};
use capture::{CaptureLog, Writes};
pub use shared::{Scan, SharedSnapshot, SharedState};
pub use sled::Fault;
use sled::SledState;
pub(crate) use space::is_shared_key;
pub(crate) use space::key;
pub use space::{Batch, Conflict, Item, Space, StorageError};

/// An open store. Clones share one store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    /// The node's own database: the node-local spaces, and the shared ones unless `shared`.
    local: Arc<SledState>,
    /// Where the shared spaces live when not in `local`.
    shared: Option<Arc<dyn SharedState>>,
    /// Held by every [`Store::apply`] for its whole length; holds the running capture.
    writes: Arc<Writes>,
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`: one sled database holding
    /// every space, the one-host configuration.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        Store::assemble(path, None)
    }

    /// Opens the node-local store in directory `path` with the shared spaces in `shared` (see
    /// [`SharedState`] for what it must guarantee and how a batch spanning both is applied).
    pub fn open_with_shared(
        path: &Path,
        shared: Arc<dyn SharedState>,
    ) -> Result<Store, StorageError> {
        Store::assemble(path, Some(shared))
    }

    fn assemble(path: &Path, shared: Option<Arc<dyn SharedState>>) -> Result<Store, StorageError> {
        Ok(Store {
            inner: Arc::new(StoreInner {
                local: Arc::new(SledState::open(path)?),
                shared,
                writes: Arc::default(),
            }),
        })
    }

    /// The store holding `space`.
    fn holder(&self, space: Space) -> &dyn SharedState {
        match &self.inner.shared {
            Some(shared) if space.is_shared() => shared.as_ref(),
            _ => self.inner.local.as_ref(),
        }
    }

    /// The value at `space/id`.
    pub fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.holder(space).get(space, id)
    }

    /// Applies `batch` atomically and makes it durable before returning (with the shared
    /// spaces in another store, its node-local part first, then its shared part: see
    /// [`SharedState`]). Applies are serialised; a running capture gets a copy of every batch
    /// made durable.
    pub fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let mut capture = self.inner.writes.lock();
        let result = self.apply_locked(&batch);
        match (capture.as_mut(), &result) {
            (Some(capture), Ok(())) => {
                let (bytes, ops) = CaptureLog::encode(&batch);
                capture.append(&bytes, ops);
            }
            (Some(capture), Err(_)) => {
                // What the failed batch left in sled's memory is undone by the reopen, but a
                // scan running meanwhile may have read it: the backup cannot be trusted.
                capture.fail("a store write failed while the backup ran");
            }
            (None, _) => {}
        }
        result
    }

    fn apply_locked(&self, batch: &Batch) -> Result<(), StorageError> {
        let Some(shared) = &self.inner.shared else {
            return self.inner.local.apply(batch);
        };
        let (shared_part, local_part) = batch.clone().split();
        if let Some(cap) = shared.max_batch_keys()
            && shared_part.shared_changes() > cap
        {
            // Refused before the local part is applied: nothing of it happens.
            return Err(StorageError::other(format!(
                "a batch of {} shared changes is more than the shared store takes in one \
                 ({cap}); it was not applied",
                shared_part.shared_changes()
            )));
        }
        // What the local part replaces, to put back if the shared part is refused.
        let undo = if local_part.is_empty() || shared_part.is_empty() {
            Batch::default()
        } else {
            self.undo_of(&local_part)?
        };
        if !local_part.is_empty() {
            self.inner.local.apply(&local_part)?;
        }
        if !shared_part.is_empty()
            && let Err(e) = shared.apply(&shared_part)
        {
            // A conflict is a definite refusal (nothing of the shared part was applied), so
            // the local part is taken back and the batch as a whole did not happen: an audit
            // log's tail never names entries whose change was refused. Another failure may
            // have been applied after all (a write in doubt), so its local part stays (see
            // `SharedState`).
            if e.is_conflict() && !undo.is_empty() {
                self.inner.local.apply(&undo)?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// The batch that puts back what `local` replaces, as the node's database holds it now.
    fn undo_of(&self, local: &Batch) -> Result<Batch, StorageError> {
        let mut undo = Batch::default();
        let mut done = std::collections::HashSet::new();
        for (k, _) in local.changes() {
            if !done.insert(k.to_vec()) {
                continue;
            }
            match self.inner.local.get_raw(k)? {
                Some(old) => undo.insert_raw(k, &old),
                None => undo.remove_raw(k),
            }
        }
        Ok(undo)
    }

    /// The most distinct shared keys one batch may change ([`SharedState::max_batch_keys`]);
    /// `usize::MAX` on one host, where sled takes a batch of any size.
    pub fn max_shared_keys(&self) -> usize {
        self.inner
            .shared
            .as_ref()
            .and_then(|shared| shared.max_batch_keys())
            .unwrap_or(usize::MAX)
    }

    /// Whether the shared spaces live in another store than the node's database (a cluster
    /// node).
    pub fn is_clustered(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// Starts capturing every batch applied from now on (see the module doc); spill files go in
    /// `spill_dir`. `None` if a capture is already running.
    pub fn start_capture(&self, spill_dir: &Path) -> Option<Capture> {
        Capture::start(&self.inner.writes, spill_dir)
    }

    /// Makes every later write to the node's database fail as `fault` says, until
    /// [`Store::clear_fault`]. The seam through which tests inject storage failures; a healthy
    /// vault never sets it.
    pub fn inject_fault(&self, fault: Fault) {
        self.inner.local.set_fault(Some(fault));
    }

    /// Ends an injected fault.
    pub fn clear_fault(&self) {
        self.inner.local.set_fault(None);
    }

    /// Every `(id, value)` in `space` whose id starts with `prefix` and sorts after `after`
    /// (all of them without `after`), in id order.
    pub fn scan_prefix<'a>(
        &'a self,
        space: Space,
        prefix: &'a [u8],
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<Item, StorageError>> + use<'a> {
        self.holder(space).scan_prefix(space, prefix, after)
    }

    /// Every `(id, value)` in `space` from id `start` (inclusive), in id order.
    pub fn scan_from(
        &self,
        space: Space,
        start: &[u8],
    ) -> impl Iterator<Item = Result<Item, StorageError>> + use<> {
        self.holder(space).scan_from(space, start)
    }

    /// The `(id, value)` of `space` with the largest id at or below `id`.
    pub fn floor(&self, space: Space, id: &[u8]) -> Result<Option<Item>, StorageError> {
        self.holder(space).floor(space, id)
    }

    /// The `(id, value)` of `space` with the largest id.
    pub fn last(&self, space: Space) -> Result<Option<Item>, StorageError> {
        self.holder(space).last(space)
    }

    /// Every `(id, value)` in `space`, in id order.
    pub fn scan(&self, space: Space) -> impl Iterator<Item = Result<Item, StorageError>> + use<> {
        self.scan_from(space, &[])
    }

    /// Every raw `(key, value)` of the store (space byte first), in key order. Not a snapshot:
    /// it may or may not see a write applied while it runs (a [`Capture`] covers those).
    pub fn scan_raw(&self) -> impl Iterator<Item = Result<Item, StorageError>> + use<> {
        let all = self.inner.local.range(Vec::new());
        let Some(shared) = self.inner.shared.clone() else {
            return Box::new(all) as Box<dyn Iterator<Item = _>>;
        };
        let local = all.filter(|item| !matches!(item, Ok((k, _)) if is_shared_key(k)));
        let shared = Space::ALL
            .into_iter()
            .filter(|space| space.is_shared())
            .flat_map(move |space| {
                shared
                    .scan_from(space, &[])
                    .map(move |item| item.map(|(id, v)| (key(space, &id), v)))
            });
        Box::new(Merged {
            a: local.peekable(),
            b: shared.peekable(),
        })
    }
}

/// Raw `(key, value)` rows of the store (space byte first), in key order.
pub type RawRows = Box<dyn Iterator<Item = Result<Item, StorageError>>>;

impl Store {
    /// What a backup reads as its snapshot: on one host every raw `(key, value)` of the store
    /// ([`Store::scan_raw`], with no revision); on a cluster node the node's own rows (read as
    /// `scan_raw` reads them) merged with every shared row at one revision of the shared store
    /// ([`SharedState::snapshot`]), and that revision.
    pub fn scan_for_backup(&self) -> Result<(Option<u64>, RawRows), StorageError> {
        let Some(shared) = &self.inner.shared else {
            return Ok((None, Box::new(self.scan_raw())));
        };
        let snapshot = shared.snapshot()?;
        let local = self
            .inner
            .local
            .range(Vec::new())
            .filter(|item| !matches!(item, Ok((k, _)) if is_shared_key(k)));
        let merged = Merged {
            a: local.peekable(),
            b: snapshot.rows.peekable(),
        };
        Ok((Some(snapshot.revision), Box::new(merged)))
    }
}

/// Two iterators of raw rows, each in key order (with errors where they fail), merged into one
/// in key order. The two hold different keys (node-local and shared ones).
struct Merged<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for Merged<A, B>
where
    A: Iterator<Item = Result<Item, StorageError>>,
    B: Iterator<Item = Result<Item, StorageError>>,
{
    type Item = Result<Item, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => true,
            (None, Some(_)) | (_, Some(Err(_))) => false,
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => ka <= kb,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}
