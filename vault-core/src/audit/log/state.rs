//! The log's shared state: what the writer thread, the signing of checkpoints, the witness
//! thread and the readers all see, under one lock for the tree and the checkpoints.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use super::checkpoint::{Floor, SignedCheckpoint};
use super::group::Pipe;
use super::open::read_range;
use super::queue::Writing;
use super::witnessing::Witnesses;
use crate::Result;
use crate::audit::merkle::{Frontier, Hash};
use crate::audit::note::NoteSigner;
use crate::audit::observation::Observation;
use crate::audit::segment::{Reader, Segments};
use crate::audit::tree::TreeFile;
use crate::clock::Clock;
use crate::storage::{Batch, Store};

/// The key being retired: it signs, with the new one, the first checkpoint whose tree holds
/// entry `seq` (the `audit.key_rotated` entry).
#[derive(Debug)]
pub(super) struct Retiring {
    pub(super) seq: u64,
    pub(super) signer: NoteSigner,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) frontier: Frontier,
    pub(super) last: Option<SignedCheckpoint>,
    pub(super) floor: Option<Floor>,
    pub(super) last_at: Instant,
    /// The store changes of replayable groups not yet written (their index entries), which
    /// go with the next store write of the writer.
    pub(super) held: Batch,
    /// When the oldest group not yet recorded in the store (tail and synced tree) committed.
    pub(super) unrecorded_since: Option<Instant>,
    /// The log size up to which the tree file is synced and recorded as such.
    pub(super) tree_synced: u64,
    /// The segment file the store's tail names. A group is replayable only in that file: open
    /// removes any file started after it.
    pub(super) recorded_file: u64,
    /// The key that signs checkpoints, while unsealed. Kept under the state's lock so that the
    /// writer switches keys at the very entry that announces a new one (see [`rotation`]).
    ///
    /// [`rotation`]: crate::audit::rotation
    pub(super) signer: Option<NoteSigner>,
    /// Set from an `audit.key_rotated` entry until its transition checkpoint is signed.
    pub(super) retiring: Option<Retiring>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) origin: String,
    pub(super) checkpoint_file: PathBuf,
    /// The time entries are stamped with (the vault's clock).
    pub(super) clock: Clock,
    pub(super) state: Mutex<State>,
    pub(super) stopped: AtomicBool,
    /// The witnesses checkpoints are sent to, if any are configured.
    pub(super) witnesses: OnceLock<Arc<Witnesses>>,
    pub(super) queued: AtomicUsize,
    /// The first live sequence number (see [`META_ARCHIVED`](super::open::META_ARCHIVED)).
    pub(super) archived: AtomicU64,
    /// The entries' files.
    pub(super) segments: Segments,
    /// The subtree hashes' file.
    pub(super) tree: TreeFile,
    /// Where each durable group's entries go next (the usage thread), if anywhere.
    pub(super) observer: Mutex<Option<Sender<Vec<Observation>>>>,
    /// The turns of the groups in flight.
    pub(super) pipe: Pipe,
    /// The write token (see `writer`).
    pub(super) writing: Mutex<Writing>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is replaced only after a successful batch; a panic leaves the old state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn node(&self, level: u8, index: u64) -> Result<Hash> {
        self.tree.node(level, index)
    }

    /// The entries committed now, from `from` or the first live one.
    pub(super) fn committed_entries(&self, from: u64) -> Reader<'_> {
        let end = self.lock().frontier.size();
        self.reader(from.max(self.archived.load(Ordering::Acquire)), end)
    }

    /// A reader of the committed entries `[from, end)` (see [`read_range`]).
    pub(super) fn reader(&self, from: u64, end: u64) -> Reader<'_> {
        read_range(&self.store, &self.segments, from, end)
    }
}
