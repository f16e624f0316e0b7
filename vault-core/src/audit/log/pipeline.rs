//! The sync stage of the writer: a group whose records are written waits here for the
//! `fdatasync` that makes it durable, then commits in sequence order (store batch, tail,
//! in-memory tree) and is answered. The worker that wrote the group syncs it itself, on its
//! own thread, once it has passed the writing to the next worker (see `writer`): so no thread
//! is woken to sync a group, the next group is written while a group's sync runs, and a group
//! written during one sync need not wait for it to end before its own starts (the file system
//! overlaps them; see the notes of [`log`](super) for what this keeps and why). A worker whose
//! sync returns before the earlier turns are done does not wait for them: it leaves its group
//! in the pipe, and the worker that ends the turn before commits it, so no thread is woken
//! just to commit.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::group::{
    Ready, STOPPED, UNWRITTEN, Written, fail, fail_after, fail_conflict, fail_storage, replies,
};
use super::open::META_TAIL;
use super::state::{Retiring, Shared};
use crate::audit::segment::Tail;
use crate::storage::{Batch, Space};
use crate::{Error, Result};

/// The writer's worker threads: one waits for jobs and writes while the others sync the
/// groups they wrote, so two (three while no job comes) syncs may be in progress at once;
/// concurrent syncs of the segment take about as long as one alone. Measured with the load
/// bench on two cores against five workers: three were as fast or faster at 1, 8 and 64
/// callers with fewer threads to switch between; two were too, but allow only two groups in
/// flight.
pub(super) const WORKERS: usize = 3;

impl Shared {
    /// Syncs the segment for the groups of `turn` and commits them in their turn (with every
    /// later turn whose sync has returned, if this one ends the turn before), or leaves them
    /// to the worker that ends the turn before.
    pub(super) fn sync_turn(&self, groups: Vec<Written>, turn: u64) {
        // Covers the groups of the turn (written before) and any before.
        let synced = self.segments.sync();
        let mut ready = self.pipe.post(turn, groups, synced);
        while let Some(Ready {
            groups,
            synced,
            failed,
            conflict,
        }) = ready
        {
            let ok = if failed {
                fail_after(replies(groups), conflict);
                false
            } else {
                self.commit_written(groups, synced)
            };
            ready = self.pipe.end_turn(ok);
        }
    }

    /// Commits synced groups in order (or fails them all if the sync failed, and from the
    /// first that fails on). Returns whether all committed.
    fn commit_written(&self, groups: Vec<Written>, synced: Result<()>) -> bool {
        if let Err(e) = synced {
            self.pipe.mark_failed(false);
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
                self.pipe.mark_failed(false);
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
                store_batch.insert(Space::Local, META_TAIL, &tail.encode());
                self.store.apply(store_batch).map_err(Error::from)
            };
            if let Err(e) = applied {
                let rest = std::iter::once(group).chain(groups);
                self.pipe.mark_failed(e.is_conflict());
                if e.is_conflict() {
                    // Another node changed a row a job had read: nothing of the group was
                    // applied (the store took its local part back), and each caller may read
                    // again and redo its operation, also one whose own rows did not change
                    // (its group, or a later one, failed with the refused one).
                    fail_conflict(replies(rest));
                } else if self.store.is_clustered() && matches!(e, Error::Storage(_)) {
                    // A cluster node's store failed (etcd out of reach past its deadline, or
                    // the node's own disk): the callers hear that, as a storage failure, like
                    // any write the store refused; the group failed whole all the same.
                    fail_storage(replies(rest), &e);
                } else {
                    fail(replies(rest), UNWRITTEN, Some(&e));
                }
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
