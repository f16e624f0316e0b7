//! What the store holds and changes: key spaces, raw keys, batches of changes, and the
//! storage error.
//!
//! Plain values with no engine behind them, so that the store and both of its engines (the
//! [`SharedState`](super::SharedState) seam and the sled database) name them from one place
//! below all three.

/// A key space inside the store; the byte is the first byte of every key in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Space {
    /// Vault metadata: format version, seal configuration, keyring, the audit verifier key.
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
    /// The node's own bookkeeping of its audit log, by name: `audit-tail`,
    /// `audit-tree-synced`, `audit-archived`, `audit-checkpoint`, `audit-archive-sha256`,
    /// `audit-archive-written`, `audit-rotations`. Formats up to 5 kept them in [`Space::Meta`];
    /// opening such a data directory moves them here (see `datadir`).
    Local = 11,
}

impl Space {
    /// Every space, in byte order.
    pub const ALL: [Space; 12] = [
        Space::Meta,
        Space::Keys,
        Space::Tokens,
        Space::Index,
        Space::Credits,
        Space::Reveal,
        Space::Audit,
        Space::AuditNode,
        Space::Checkpoint,
        Space::Usage,
        Space::AuditIndex,
        Space::Local,
    ];

    /// The space whose byte is `byte`, if any.
    pub fn from_byte(byte: u8) -> Option<Space> {
        Space::ALL.get(usize::from(byte)).copied()
    }

    /// Whether the space holds state every node of a vault shares (records, their indexes,
    /// credits and reveal copies, the seal configuration and keyring), as opposed to state of
    /// one node (its audit log's tree, index, checkpoints and bookkeeping, its usage figures), which each
    /// node keeps in its own database.
    pub fn is_shared(self) -> bool {
        match self {
            Space::Meta
            | Space::Keys
            | Space::Tokens
            | Space::Index
            | Space::Credits
            | Space::Reveal => true,
            Space::Audit
            | Space::AuditNode
            | Space::Checkpoint
            | Space::Usage
            | Space::AuditIndex
            | Space::Local => false,
        }
    }
}

/// Whether the raw key `key` (space byte first) is in a shared space; keys of no known space
/// are node-local.
pub(crate) fn is_shared_key(key: &[u8]) -> bool {
    key.first()
        .and_then(|&b| Space::from_byte(b))
        .is_some_and(Space::is_shared)
}

/// The storage engine failed (I/O, corruption reported by the engine).
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageError(Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    /// A failure of a [`SharedState`](super::SharedState) implementation, as the vault reports
    /// it.
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
        StorageError(error.into())
    }

    /// Whether this is a [`Conflict`]: nothing was applied, because another writer changed a
    /// row the batch depends on.
    pub fn is_conflict(&self) -> bool {
        self.0.downcast_ref::<Conflict>().is_some()
    }
}

/// A batch refused by a store several nodes write, because a row it changes or expects
/// unchanged ([`Batch::expect_unchanged`]) was changed by another writer since this handle last
/// read or wrote it. Nothing of the batch was applied; reading the rows again and redoing the
/// change is safe.
#[derive(Debug, thiserror::Error)]
#[error("a shared row was changed by another writer since it was read; nothing was applied")]
pub struct Conflict;

impl From<::sled::Error> for StorageError {
    fn from(error: ::sled::Error) -> StorageError {
        StorageError(Box::new(error))
    }
}

/// An `(id, value)` pair read from a space.
pub type Item = (Vec<u8>, Vec<u8>);

/// Changes applied atomically by [`Store::apply`](super::Store::apply), in order (a later
/// change to the same key wins).
#[derive(Debug, Default, Clone)]
pub struct Batch {
    changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Raw keys the batch was computed from without changing them (see
    /// [`Batch::expect_unchanged`]).
    unchanged: Vec<Vec<u8>>,
}

impl Batch {
    /// Sets `space/id` to `value`.
    pub fn insert(&mut self, space: Space, id: &[u8], value: &[u8]) {
        self.changes.push((key(space, id), Some(value.to_vec())));
    }

    /// Removes `space/id`.
    pub fn remove(&mut self, space: Space, id: &[u8]) {
        self.changes.push((key(space, id), None));
    }

    /// Sets the raw key `key` (space byte first), as read by
    /// [`Store::scan_raw`](super::Store::scan_raw).
    pub fn insert_raw(&mut self, key: &[u8], value: &[u8]) {
        self.changes.push((key.to_vec(), Some(value.to_vec())));
    }

    /// Removes the raw key `key` (space byte first).
    pub fn remove_raw(&mut self, key: &[u8]) {
        self.changes.push((key.to_vec(), None));
    }

    /// Makes the batch depend on `space/id` as this handle last read it, without changing it:
    /// a store several nodes write refuses the batch with a [`Conflict`] if another writer has
    /// changed the row since. A store with one writer (sled) has nothing to check.
    pub fn expect_unchanged(&mut self, space: Space, id: &[u8]) {
        self.unchanged.push(key(space, id));
    }

    /// The raw keys of [`Batch::expect_unchanged`], in the order given.
    pub fn expected_unchanged(&self) -> impl Iterator<Item = &[u8]> {
        self.unchanged.iter().map(Vec::as_slice)
    }

    /// Appends `other`'s changes after this batch's.
    pub fn extend(&mut self, other: Batch) {
        self.changes.extend(other.changes);
        self.unchanged.extend(other.unchanged);
    }

    /// How many of the batch's changes are to shared spaces (each counted, also a key changed
    /// twice): an upper bound of the distinct shared keys it changes, which a store with a
    /// batch limit ([`SharedState::max_batch_keys`](super::SharedState::max_batch_keys)) counts.
    pub fn shared_changes(&self) -> usize {
        self.changes
            .iter()
            .filter(|(k, _)| is_shared_key(k))
            .count()
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes in order: a raw key (space byte first) and its new value, or `None` for a
    /// removal. What a [`SharedState`](super::SharedState) applies.
    pub fn changes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.changes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The batch's changes to shared spaces and to node-local ones, each in order.
    pub(super) fn split(self) -> (Batch, Batch) {
        let (shared, local) = self
            .changes
            .into_iter()
            .partition(|(k, _)| is_shared_key(k));
        let (unchanged, unchanged_local) =
            self.unchanged.into_iter().partition(|k| is_shared_key(k));
        (
            Batch {
                changes: shared,
                unchanged,
            },
            Batch {
                changes: local,
                unchanged: unchanged_local,
            },
        )
    }
}

/// The raw store key of `space/id` (space byte first), as
/// [`Store::scan_raw`](super::Store::scan_raw) gives them.
pub(crate) fn key(space: Space, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(space as u8);
    k.extend_from_slice(id);
    k
}
