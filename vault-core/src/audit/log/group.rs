//! A group on its way through the writer: what a job's answer goes to, the written group the
//! sync stage commits, and the pipe that puts the groups in flight in their turns (see
//! `pipeline`).

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::audit::merkle::Frontier;
use crate::audit::note::NoteSigner;
use crate::audit::observation::Observation;
use crate::storage::{Batch, Conflict, StorageError};
use crate::{Error, Result};

/// The signer of a new audit key generation, handed to the writer with the entry that
/// announces it.
#[derive(Debug)]
pub struct NewSigner {
    /// The generation's number.
    pub generation: u32,
    /// Its signer.
    pub signer: NoteSigner,
}

/// Where a job's outcome goes: a thread blocked in [`AuditLog::commit`](super::AuditLog::commit), or the future of
/// [`AuditLog::commit_deferred`](super::AuditLog::commit_deferred).
pub(super) enum Reply {
    Blocking(SyncSender<Result<u64>>),
    Deferred(oneshot::Sender<Result<u64>>),
}

impl Reply {
    pub(super) fn send(self, outcome: Result<u64>) {
        // A waiter that is gone (a dropped future, say) no longer needs the answer.
        let _ = match self {
            Reply::Blocking(tx) => tx.send(outcome).map_err(drop),
            Reply::Deferred(tx) => tx.send(outcome).map_err(drop),
        };
    }
}

/// A group whose records are written to the active segment (not synced) and whose subtree
/// hashes are in the tree file: what its commit needs.
pub(super) struct Written {
    /// Every job's sequence number and where its answer goes, in order.
    pub(super) replies: Vec<(u64, Reply)>,
    /// The tree once the group is in.
    pub(super) frontier: Frontier,
    /// The active file and where the group's records end in it.
    pub(super) file: u64,
    pub(super) len: u64,
    /// Whether the segment's sync alone commits the group (see [`log`](super)).
    pub(super) replayable: bool,
    /// The index entries of the group's records.
    pub(super) index: Batch,
    /// The jobs' store changes (empty if replayable).
    pub(super) batch: Batch,
    /// The `audit.key_rotated` entry's number and the new signer, if the group has one.
    pub(super) rotated: Option<(u64, Box<NewSigner>)>,
    /// What the usage figures need of the entries, if an observer was set when written.
    pub(super) observations: Option<Vec<Observation>>,
}

/// The turns of the groups in flight: each group written gets the next, and they commit in
/// that order whichever sync returns first.
#[derive(Default)]
pub(super) struct Pipe {
    inner: Mutex<Flow>,
    wake: Condvar,
}

#[derive(Default)]
struct Flow {
    /// Turns whose sync returned before every earlier turn was done, with the sync's outcome:
    /// the worker that ends the turn before one commits it (see [`Pipe::post`]).
    synced: BTreeMap<u64, Synced>,
    /// The turn the next group written gets: turns commit in that order.
    next_turn: u64,
    /// Turns below this one have committed or failed.
    done: u64,
    /// A group failed: every group written before the writer next finds the pipe empty fails
    /// too, since its records follow ones that may not be on disk.
    failed: bool,
    /// Every failure since the last drain was a refused conflict (a cluster node's shared
    /// rows changed by another node): nothing of those groups was applied and nothing failed
    /// on disk, so the groups failed with them are answered as a conflict too, which callers
    /// may redo, rather than [`UNWRITTEN`].
    conflict: bool,
    /// Threads waiting in [`Pipe::drain`]: a turn's end wakes them only if there are any
    /// (std's `Condvar::notify_all` is a system call even with no one waiting, and a turn
    /// ends with every group).
    draining: usize,
}

/// A turn's groups once its sync has returned, with the sync's outcome.
type Synced = (Vec<Written>, Result<()>);

/// A turn whose groups are to be committed now, by the worker that holds them: every earlier
/// turn is done.
pub(super) struct Ready {
    pub(super) groups: Vec<Written>,
    pub(super) synced: Result<()>,
    /// A group of an earlier turn failed: these must fail too.
    pub(super) failed: bool,
    /// Every failure behind `failed` was a conflict (see `Flow::conflict`).
    pub(super) conflict: bool,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe").finish_non_exhaustive()
    }
}

impl Pipe {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        // Only plain fields, changed in single steps: a panic cannot leave them half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn of a group just written, in which its worker syncs and commits it; `None` if
    /// an earlier group failed (the writer must then fail it and [`Pipe::drain`]).
    #[must_use]
    pub(super) fn turn(&self) -> Option<u64> {
        let mut flow = self.flow();
        if flow.failed {
            return None;
        }
        let turn = flow.next_turn;
        flow.next_turn += 1;
        Some(turn)
    }

    /// Whether no group is being synced or committed.
    pub(super) fn is_idle(&self) -> bool {
        let flow = self.flow();
        flow.done == flow.next_turn
    }

    /// Whether an earlier group failed (see [`Pipe::drain`]).
    pub(super) fn has_failed(&self) -> bool {
        self.flow().failed
    }

    /// Whether every failure since the last drain was a conflict (see `Flow::conflict`).
    pub(super) fn failed_by_conflict(&self) -> bool {
        let flow = self.flow();
        flow.failed && flow.conflict
    }

    /// Waits until every group handed over has committed or failed; returns whether one
    /// failed since the last drain (the failure is then cleared: the writer must cut off the
    /// written records and start again from the committed state).
    pub(super) fn drain(&self) -> bool {
        let mut flow = self.flow();
        flow.draining += 1;
        while flow.done != flow.next_turn {
            flow = self.wake.wait(flow).unwrap_or_else(|e| e.into_inner());
        }
        flow.draining -= 1;
        flow.conflict = false;
        std::mem::replace(&mut flow.failed, false)
    }

    /// Hands over the groups of `turn` once their sync has returned with `synced`: if every
    /// earlier turn is done, gives them back to be committed now (by the caller, then
    /// [`Pipe::end_turn`]); otherwise keeps them for the worker that ends the turn before.
    /// A worker thus never sleeps waiting for its turn, and a turn whose sync returned early
    /// is committed without waking another thread.
    pub(super) fn post(
        &self,
        turn: u64,
        groups: Vec<Written>,
        synced: Result<()>,
    ) -> Option<Ready> {
        let mut flow = self.flow();
        if flow.done == turn {
            return Some(Ready {
                groups,
                synced,
                failed: flow.failed,
                conflict: flow.conflict,
            });
        }
        flow.synced.insert(turn, (groups, synced));
        None
    }

    /// Marks a failure before its groups are answered, so that a caller who retries after the
    /// answer finds the writer cutting off the failed records first, not writing after them.
    /// `conflict`: the failure is a refused conflict (see `Flow::conflict`).
    pub(super) fn mark_failed(&self, conflict: bool) {
        let mut flow = self.flow();
        flow.conflict = conflict && (flow.conflict || !flow.failed);
        flow.failed = true;
    }

    /// Ends the current turn; `ok` says whether all its groups committed. Gives back the next
    /// turn if its sync has already returned (see [`Pipe::post`]): the caller commits it now.
    #[must_use]
    pub(super) fn end_turn(&self, ok: bool) -> Option<Ready> {
        let mut flow = self.flow();
        flow.failed |= !ok;
        flow.done += 1;
        if flow.draining > 0 {
            self.wake.notify_all();
        }
        let next = flow.done;
        let (groups, synced) = flow.synced.remove(&next)?;
        Some(Ready {
            groups,
            synced,
            failed: flow.failed,
            conflict: flow.conflict,
        })
    }
}

/// The answer of a group that could not be made durable.
pub(super) const UNWRITTEN: &str = "the audit log could not be written";
/// The answer of a group once the log is stopped.
pub(super) const STOPPED: &str = "the audit log is stopped after an integrity failure";

/// Answers every reply of `replies` with [`Error::AuditUnavailable`] saying `why` (logging
/// `cause`, the failure that dooms them).
pub(super) fn fail(
    replies: impl IntoIterator<Item = Reply>,
    why: &str,
    cause: Option<&dyn std::fmt::Display>,
) {
    if let Some(cause) = cause {
        tracing::error!(error = %cause, "audit commit failed: the operations of the groups in flight fail");
    }
    for reply in replies {
        reply.send(Err(Error::AuditUnavailable(why.into())));
    }
}

/// Answers `replies` with a [`Conflict`](crate::storage::Conflict): their group was refused
/// whole because another writer changed a shared row one of its jobs had read.
pub(super) fn fail_conflict(replies: impl IntoIterator<Item = Reply>) {
    for reply in replies {
        reply.send(Err(Error::Storage(StorageError::other(Conflict))));
    }
}

/// Answers `replies` with a [`StorageError`] saying what `cause` (the store's failure) says:
/// their group was not applied because a cluster node's store failed.
pub(super) fn fail_storage(replies: impl IntoIterator<Item = Reply>, cause: &Error) {
    tracing::error!(error = %cause, "a cluster node's store failed: the operations of the groups in flight fail");
    for reply in replies {
        reply.send(Err(Error::Storage(StorageError::other(cause.to_string()))));
    }
}

/// Answers the replies of groups failed because an earlier group failed: as a conflict if
/// every failure behind them was one (nothing was applied, the callers may redo), else with
/// [`UNWRITTEN`].
pub(super) fn fail_after(replies: impl IntoIterator<Item = Reply>, conflict: bool) {
    if conflict {
        fail_conflict(replies);
    } else {
        fail(replies, UNWRITTEN, None);
    }
}

/// The replies of every job of `groups`.
pub(super) fn replies(groups: impl IntoIterator<Item = Written>) -> impl Iterator<Item = Reply> {
    groups
        .into_iter()
        .flat_map(|group| group.replies.into_iter().map(|(_, reply)| reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups failed behind a refused conflict are answered as one only while every failure
    /// since the last drain was a conflict: a real failure (a sync, the store) among them
    /// makes them `UNWRITTEN`, which callers do not redo.
    #[test]
    fn groups_fail_as_a_conflict_only_behind_conflicts_alone() {
        let pipe = Pipe::default();
        assert!(!pipe.failed_by_conflict());
        pipe.mark_failed(true);
        assert!(pipe.failed_by_conflict());
        pipe.mark_failed(true);
        assert!(pipe.failed_by_conflict());
        pipe.mark_failed(false);
        assert!(!pipe.failed_by_conflict());
        pipe.mark_failed(true);
        assert!(
            !pipe.failed_by_conflict(),
            "a real failure stays until the drain"
        );
        assert!(pipe.drain());
        assert!(!pipe.failed_by_conflict());
        pipe.mark_failed(false);
        pipe.mark_failed(true);
        assert!(!pipe.failed_by_conflict());
        assert!(pipe.drain());
        pipe.mark_failed(true);
        assert!(pipe.failed_by_conflict());
    }
}
