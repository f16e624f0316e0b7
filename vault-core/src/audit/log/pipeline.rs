//! The sync stage of the writer: groups whose records are written wait here for the
//! `fdatasync` that makes them durable, then commit in sequence order (store batch, tail,
//! in-memory tree) and are answered. It runs on [`SYNCERS`] threads so that the writer writes
//! the next group while a group's sync runs, and so that a group written during one sync need
//! not wait for it to end before its own starts (the file system overlaps them; see the
//! notes of [`log`](super) for what this keeps and why).

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::open::META_TAIL;
use super::state::{Retiring, Shared};
use super::writer::{NewSigner, Reply};
use crate::audit::merkle::Frontier;
use crate::audit::observation::Observation;
use crate::audit::segment::Tail;
use crate::storage::{Batch, Space};
use crate::{Error, Result};

/// Threads that sync groups: two syncs may be in progress at once (a third would rarely find
/// a group the other two left).
pub(super) const SYNCERS: usize = 2;

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

/// The groups between the writer and the sync stage.
#[derive(Default)]
pub(super) struct Pipe {
    inner: Mutex<Flow>,
    wake: Condvar,
}

#[derive(Default)]
struct Flow {
    /// Written groups no syncer has taken yet, in order.
    waiting: Vec<Written>,
    /// The number the next syncer to take groups gets: syncers commit in that order.
    next_turn: u64,
    /// Turns below this one have committed or failed.
    done: u64,
    /// A group failed: every group written before the writer next finds the pipe empty fails
    /// too, since its records follow ones that may not be on disk.
    failed: bool,
    /// The writer has stopped: syncers exit once nothing waits.
    closed: bool,
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

    /// Hands `group` to the sync stage; gives it back if an earlier group failed (the writer
    /// must then fail it and [`Pipe::drain`]).
    #[must_use]
    pub(super) fn push(&self, group: Written) -> Option<Written> {
        let mut flow = self.flow();
        if flow.failed {
            return Some(group);
        }
        flow.waiting.push(group);
        self.wake.notify_all();
        None
    }

    /// Whether no group is waiting or being synced.
    pub(super) fn is_idle(&self) -> bool {
        let flow = self.flow();
        flow.waiting.is_empty() && flow.done == flow.next_turn
    }

    /// Whether an earlier group failed (see [`Pipe::drain`]).
    pub(super) fn has_failed(&self) -> bool {
        self.flow().failed
    }

    /// Waits until every group handed over has committed or failed; returns whether one
    /// failed since the last drain (the failure is then cleared: the writer must cut off the
    /// written records and start again from the committed state).
    pub(super) fn drain(&self) -> bool {
        let mut flow = self.flow();
        while !(flow.waiting.is_empty() && flow.done == flow.next_turn) {
            flow = self.wake.wait(flow).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::replace(&mut flow.failed, false)
    }

    /// Tells the syncers to exit once nothing waits.
    pub(super) fn close(&self) {
        self.flow().closed = true;
        self.wake.notify_all();
    }
}

impl Shared {
    /// A syncer's loop: takes every written group waiting, syncs the segment, and commits
    /// them in its turn.
    pub(super) fn sync_groups(&self) {
        loop {
            let (groups, turn) = {
                let mut flow = self.pipe.flow();
                while flow.waiting.is_empty() {
                    if flow.closed {
                        return;
                    }
                    flow = self.pipe.wake.wait(flow).unwrap_or_else(|e| e.into_inner());
                }
                let turn = flow.next_turn;
                flow.next_turn += 1;
                (std::mem::take(&mut flow.waiting), turn)
            };
            // Covers the groups taken (written before they were handed over) and any before.
            let synced = self.segments.sync();
            let failed_before = {
                let mut flow = self.pipe.flow();
                while flow.done != turn {
                    flow = self.pipe.wake.wait(flow).unwrap_or_else(|e| e.into_inner());
                }
                flow.failed
            };
            let ok = if failed_before {
                fail(replies(groups), UNWRITTEN, None);
                false
            } else {
                self.commit_written(groups, synced)
            };
            let mut flow = self.pipe.flow();
            flow.failed |= !ok;
            flow.done += 1;
            self.pipe.wake.notify_all();
        }
    }

    /// Commits synced groups in order (or fails them all if the sync failed, and from the
    /// first that fails on). Returns whether all committed.
    fn commit_written(&self, groups: Vec<Written>, synced: Result<()>) -> bool {
        if let Err(e) = synced {
            fail(replies(groups), UNWRITTEN, Some(&e));
            return false;
        }
        let mut state = self.lock();
        let mut observer = self.observer.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups = groups.into_iter();
        while let Some(mut group) = groups.next() {
            // A check before signing found the stored tree changed: nothing more commits.
            if self.stopped.load(Ordering::Relaxed) {
                let rest = std::iter::once(group).chain(groups);
                fail(replies(rest), STOPPED, None);
                return false;
            }
            let applied = if group.replayable {
                state.held.extend(std::mem::take(&mut group.index));
                Ok(())
            } else {
                let tail = Tail {
                    size: group.frontier.size(),
                    active: group.file,
                    len: group.len,
                };
                let mut store_batch = state.held.clone();
                store_batch.extend(std::mem::take(&mut group.index));
                store_batch.extend(std::mem::take(&mut group.batch));
                store_batch.insert(Space::Meta, META_TAIL, &tail.encode());
                self.store.apply(store_batch).map_err(Error::from)
            };
            if let Err(e) = applied {
                let rest = std::iter::once(group).chain(groups);
                fail(replies(rest), UNWRITTEN, Some(&e));
                return false;
            }
            if !group.replayable {
                state.held = Batch::default();
                state.recorded_file = group.file;
            }
            state.unrecorded_since.get_or_insert_with(Instant::now);
            self.segments.committed(group.len);
            state.frontier = group.frontier;
            // Sealed meanwhile (never while a rotation runs, which holds the vault's admin
            // lock): the next unseal sets the signers from the keyring and the record.
            if let Some((seq, new)) = group.rotated
                && let Some(old) = state.signer.take()
            {
                state.signer = Some(new.signer);
                state.retiring = Some(Retiring { seq, signer: old });
            }
            for (seq, reply) in group.replies {
                reply.send(Ok(seq));
            }
            if let Some(observations) = group.observations
                && let Some(tx) = observer.as_ref()
                && tx.send(observations).is_err()
            {
                *observer = None;
            }
        }
        true
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

/// The replies of every job of `groups`.
fn replies(groups: impl IntoIterator<Item = Written>) -> impl Iterator<Item = Reply> {
    groups
        .into_iter()
        .flat_map(|group| group.replies.into_iter().map(|(_, reply)| reply))
}
