//! The seam between a vault and the store of its shared state ([`SharedState`]).
//!
//! A vault's state is of two kinds (see [`Space::is_shared`]). Its *shared* state (the key and
//! token records, their indexes, credits and reveal copies, the seal configuration and the
//! keyring) is what every node serving one vault must agree on; its *node-local* state (the
//! audit log's tree, index and checkpoints, the usage figures) is each node's own. Today one
//! sled database holds both; the trait here is what a store of the shared state alone (etcd,
//! for several nodes) must offer, so that it can take the shared spaces over without keys,
//! tokens or the handle changing: they all go through [`Store`](super::Store), which routes
//! each operation by its space.

use std::fmt;

use super::space::{Batch, Item, Space, StorageError};

/// The rows of one space, in id order, as a [`SharedState`] reads them. Owned (it borrows
/// nothing from the store), so a caller may hold it across other calls.
pub type Scan = Box<dyn Iterator<Item = Result<Item, StorageError>> + Send>;

/// Every shared row at one instant of a store that several nodes write, as
/// [`SharedState::snapshot`] reads it for a cluster vault's backup.
pub struct SharedSnapshot {
    /// The store's revision the rows are read at (etcd's revision).
    pub revision: u64,
    /// Every raw `(key, value)` of the shared spaces (space byte first), in key order.
    pub rows: Scan,
}

impl fmt::Debug for SharedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSnapshot")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// A store of the vault's shared spaces: an ordered key-value store with atomic batches.
///
/// Keys are `(space, id)`: a [`Space`] and a byte string, ordered by space and then by id as
/// bytes (the raw form, space byte first, is what [`Batch::changes`] gives). [`Store`]
/// calls an implementation only with shared spaces, unless the implementation is also the
/// local database (one host: [`Store::open`]).
///
/// # What an implementation must guarantee
/// - **Atomic batches.** [`SharedState::apply`] applies every change of the batch or none, in
///   order (a later change to the same key wins), and is durable when it returns `Ok`: a
///   crash after `Ok` loses nothing of it, a crash before leaves all of it or none of it. An
///   `Err` must mean *not applied*: an implementation that cannot tell (a timeout after the
///   request left) must find out before it answers, or answer only once the outcome is known,
///   because the vault tells its caller and its audit log the operation failed.
/// - **Read your writes.** A read that starts after `apply` returned `Ok` sees the batch, on
///   every handle of this process: the vault reads a record right after writing it (a rotated
///   key, a spent credit) and its caches trust the store.
/// - **Ordered scans.** [`SharedState::scan_from`] yields the rows of one space from an id on,
///   in increasing id order, each once. A scan need not be a snapshot, but each row it yields
///   must be a value the row held at some instant during the scan (never a torn or
///   half-applied value), and a row that exists throughout the scan must be yielded. Listing
///   keys page by page relies on the order; the online backup relies on the rest (see
///   `backup`).
/// - **Floor and last** answer from the same ordered view: the row with the largest id at or
///   below an id, the row with the largest id of a space.
/// - **Errors are errors.** A failure is a [`StorageError`] (see [`StorageError::other`]),
///   never a panic and never a silently empty answer.
/// - **Conflicts are refusals.** A store that several nodes write must not let one overwrite
///   another's change it never saw: it refuses such a batch whole with a
///   [`Conflict`](super::Conflict) ([`StorageError::is_conflict`]), judged against what this
///   handle last read or wrote of each key the batch changes or names in
///   [`Batch::expect_unchanged`]. A store with one writer never refuses.
///
/// # A batch that spans both kinds of space
/// Most vault writes are one batch with a shared change and its node-local bookkeeping (a key
/// record and the audit log's tail that records its entry, say). In one sled database that is
/// one atomic batch. When the shared spaces live elsewhere, [`Store::apply`] applies the
/// node-local part first and the shared part second, and the two are no longer atomic
/// together. Local first, because the local part is the audit trail's: a crash between the two
/// leaves an audit entry for a change that did not happen (an operation that answered with an
/// error, which the log then over-reports) rather than a shared change other nodes already
/// serve with no entry anywhere (which would make the log lie by omission). A failed shared
/// apply is returned as the batch's error; the local part stays. The audit log's bookkeeping
/// (its tail, tree mark, archive marks, last checkpoint and key rotations) is node-local: it
/// lives in [`Space::Local`] (format 6 on; older data directories are moved at open). An
/// online backup's change capture sees only the batches this process applies, so a store that
/// other nodes write too offers [`SharedState::snapshot`] instead, every shared row at one
/// instant, and the backup captures only the node's own rows.
///
/// [`Store`]: super::Store
/// [`Store::open`]: super::Store::open
/// [`Store::apply`]: super::Store::apply
pub trait SharedState: fmt::Debug + Send + Sync {
    /// The value at `space/id`.
    fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies `batch` atomically and durably (see the trait doc).
    fn apply(&self, batch: &Batch) -> Result<(), StorageError>;

    /// Every `(id, value)` of `space` from id `start` (inclusive) on, in id order.
    fn scan_from(&self, space: Space, start: &[u8]) -> Scan;

    /// The `(id, value)` of `space` with the largest id at or below `id`.
    fn floor(&self, space: Space, id: &[u8]) -> Result<Option<Item>, StorageError>;

    /// The `(id, value)` of `space` with the largest id.
    fn last(&self, space: Space) -> Result<Option<Item>, StorageError>;

    /// The most distinct keys one batch may change, if the store has a limit (etcd: one
    /// transaction's operations). A larger batch is refused whole, so whatever writes many rows
    /// (rewrap, the owner index rebuild, the audit log's commit groups) splits its work into
    /// batches no larger than this.
    fn max_batch_keys(&self) -> Option<usize> {
        None
    }

    /// Every row of the shared spaces at one instant, read however long it takes (a cluster
    /// vault's backup: the other nodes' writes meanwhile are no part of it). A store that
    /// cannot read at one instant refuses.
    fn snapshot(&self) -> Result<SharedSnapshot, StorageError> {
        Err(StorageError::other(
            "this shared store cannot be read at one instant",
        ))
    }

    /// Every `(id, value)` of `space` whose id starts with `prefix` and sorts after `after`
    /// (all of them without `after`), in id order.
    fn scan_prefix(&self, space: Space, prefix: &[u8], after: Option<&[u8]>) -> Scan {
        let prefix = prefix.to_vec();
        let skip = after.map(<[u8]>::to_vec);
        let start = after.unwrap_or(&prefix).to_vec();
        Box::new(
            self.scan_from(space, &start)
                .filter(move |item| !matches!((item, &skip), (Ok((id, _)), Some(s)) if id == s))
                .take_while(move |item| match item {
                    Ok((id, _)) => id.starts_with(&prefix),
                    Err(_) => true,
                }),
        )
    }
}
