//! The sync stage of the writer: groups whose records are written wait here for the
//! `fdatasync` that makes them durable, then commit in sequence order (store batch, tail,
//! in-memory tree) and are answered. It runs on [`SYNCERS`] threads so that the writer writes
//! the next group while a group's sync runs, and so that a group written during one sync need
//! not wait for it to end before its own starts (the file system overlaps them; see the
//! notes of [`log`](super) for what this keeps and why). A syncer whose sync returns before
//! the earlier turns are done does not wait for them: it leaves its groups in the pipe, and
//! the syncer that ends the turn before commits them, so no thread is woken just to commit.

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

/// Threads that sync groups, so as many syncs may be in progress at once. Measured with 8
/// closed-loop callers: concurrent syncs of the segment take about as long as one alone, and
/// with two threads a written group waited 40 to 100 µs for a free one (under 30 µs with
/// four).
pub(super) const SYNCERS: usize = 4;

impl Shared {
    /// A syncer's loop: takes every written group waiting, syncs the segment, and commits
    /// them in their turn: at once if every earlier turn is done, else (left in the pipe) by
    /// the syncer that ends the turn before, which then commits every later turn whose sync
    /// has returned.
    pub(super) fn sync_groups(&self) {
        while let Some((groups, turn)) = self.pipe.take() {
            // Covers the groups taken (written before they were handed over) and any before.
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
