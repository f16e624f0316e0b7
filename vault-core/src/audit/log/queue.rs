//! What reaches the writer: the messages callers queue ([`Msg`], a [`Job`] per entry) and the
//! *write token* ([`Writing`]), the queue with what has been written ahead of the commits,
//! which the writer's workers take in turns (see `writer`). Apart from `writer` so that the
//! state the workers share (`state`) can hold the token without importing the writer.

use std::sync::mpsc::{Receiver, SyncSender};

use super::checkpoint::SignedCheckpoint;
use super::group::{NewSigner, Reply};
use crate::Result;
use crate::audit::entry::Prepared;
use crate::audit::merkle::Frontier;
use crate::storage::Batch;

/// What the writer is asked to do.
// `Commit` is every operation's message and `Roll` a rare one: boxing the job to even them out
// would cost an allocation per verify for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
    /// Commit a group member.
    Commit(Job),
    /// Start a new segment file at the current size and sign a checkpoint there (so that an
    /// archive up to it can remove every older file).
    Roll(SyncSender<Result<SignedCheckpoint>>),
}

pub(super) struct Job {
    pub(super) batch: Batch,
    pub(super) entry: Prepared,
    pub(super) reply: Reply,
    /// Set on the `audit.key_rotated` entry: the new generation's signer (boxed: one job in
    /// millions has one).
    pub(super) rotation: Option<Box<NewSigner>>,
}

/// What the writer has written ahead of the commits: the tree and the segment file the
/// store's tail names once every group in flight has committed.
pub(super) struct Pending {
    pub(super) frontier: Frontier,
    pub(super) recorded_file: u64,
}

/// The write token: what the worker writing holds (see the module notes).
pub(super) struct Writing {
    /// The queue of jobs; dropped when the log closes or a worker panicked while writing, so
    /// that every job still queued is answered (its caller hears the writer stopped), and
    /// the workers exit.
    pub(super) rx: Option<Receiver<Msg>>,
    /// `None` until the first worker takes the token.
    pub(super) pending: Option<Pending>,
    /// A message taken from the queue but left for the next group.
    pub(super) held: Option<Msg>,
    /// The size of the last group written.
    pub(super) last_group: usize,
}

impl Writing {
    pub(super) fn new(rx: Receiver<Msg>) -> Writing {
        Writing {
            rx: Some(rx),
            pending: None,
            held: None,
            last_group: 0,
        }
    }
}

impl std::fmt::Debug for Writing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writing")
            .field("last_group", &self.last_group)
            .field("closed", &self.rx.is_none())
            .finish_non_exhaustive()
    }
}
