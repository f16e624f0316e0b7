//! The group-committing writer: worker threads take turns at the *write token* (the queue
//! and what has been written ahead of the commits, `queue`). The worker holding it takes every job
//! queued (up to [`MAX_GROUP`], and no more shared changes than the store takes in one
//! batch), gives each entry its sequence number, writes the entries to the active segment and
//! their subtree hashes to the tree file, passes the token on and syncs the group itself,
//! committing its store changes with the log's new tail in the group's turn (see `pipeline`
//! and the module notes of [`log`](super)). A leader/follower pool, as a leader-based group
//! commit has: a group costs no hand-off from the thread that wrote it to one that syncs it,
//! and the next group is written, by the next worker, while its sync runs.

use std::pin::Pin;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::checkpoint::SignedCheckpoint;
use super::group::{NewSigner, STOPPED, UNWRITTEN, Written, fail, fail_after};
use super::open::{META_TAIL, META_TREE, push_entry};
use super::queue::{Job, Msg, Pending, Writing};
use super::signing::CHECKPOINT_EVERY;
use super::state::{Shared, State};
use crate::audit::rotation::{self, KeyRotation, META_ROTATIONS};
use crate::audit::segment::{self, Tail};
use crate::audit::tree;
use crate::storage::{Batch, Space};
use crate::{Error, Result};

/// Most jobs committed in one group.
pub const MAX_GROUP: usize = 1024;
/// The active segment file is closed, and a new one started, once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The tree file is synced, and the tail and tree size recorded in the store, at least this
/// often while entries arrive (a crash leaves at most this much of the log to rebuild at open).
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// How long the writer waits for more jobs when a group is smaller than the one before (whose
/// callers are likely on their way back): a fraction of one fdatasync, so that a group of
/// callers answered together is synced together rather than split into two syncs.
const GATHER: Duration = Duration::from_micros(60);

/// The answer to [`AuditLog::commit_deferred`](super::AuditLog::commit_deferred): resolves to the entry's sequence number once it
/// and its batch are durable. Dropping it does not cancel the commit.
#[derive(Debug)]
pub struct Durable(pub(super) Queued);

#[derive(Debug)]
pub(super) enum Queued {
    Waiting(oneshot::Receiver<Result<u64>>),
    /// The job could not be queued (taken by the first poll).
    Refused(Option<Error>),
}

impl Future for Durable {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Result<u64>> {
        let stopped = || Error::AuditUnavailable("the audit writer stopped".into());
        match &mut self.0 {
            Queued::Refused(e) => Poll::Ready(Err(e.take().unwrap_or_else(stopped))),
            Queued::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|outcome| outcome.unwrap_or_else(|_| Err(stopped()))),
        }
    }
}

/// What a worker did with the token.
// Returned once per group and matched at once: boxing the group would cost an allocation per
// group for nothing.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Wrote a group, which it syncs in the turn given, once it has let go of the token.
    Wrote(Written, u64),
    /// Nothing left to sync (no job came, a roll, a group that failed).
    Nothing,
    /// The queue is closed and everything in it committed or failed.
    Closed,
}

impl Shared {
    /// A worker's loop: takes the write token, writes the next group, lets go of the token
    /// and syncs and commits its group, until the log closes.
    pub(super) fn work(&self) {
        loop {
            let mut writing = match self.writing.lock() {
                Ok(writing) => writing,
                Err(poisoned) => {
                    // A worker panicked while writing: what it had written ahead may be
                    // half-changed, so nothing more is written.
                    poisoned.into_inner().rx = None;
                    return;
                }
            };
            if writing.rx.is_none() {
                return;
            }
            match self.step(&mut writing) {
                Step::Wrote(group, turn) => {
                    drop(writing);
                    self.sync_turn(vec![group], turn);
                }
                Step::Nothing => {}
                Step::Closed => {
                    let pending = writing.pending.get_or_insert_with(|| self.pending());
                    self.settle(pending);
                    self.checkpoint_quietly(true);
                    self.record_quietly(true);
                    if let Err(e) = self.segments.trim() {
                        tracing::warn!(error = %e, "cutting the audit segment's allocated space failed");
                    }
                    writing.rx = None;
                    return;
                }
            }
        }
    }

    /// What the worker holding the token does: waits for a job (or a roll) and writes the
    /// group it opens.
    fn step(&self, writing: &mut MutexGuard<'_, Writing>) -> Step {
        let Writing {
            rx,
            pending,
            held,
            last_group,
            ..
        } = &mut **writing;
        let Some(rx) = rx.as_ref() else {
            return Step::Closed;
        };
        let pending = pending.get_or_insert_with(|| self.pending());
        let first = match held.take() {
            Some(msg) => msg,
            None => match rx.recv_timeout(RECORD_EVERY.min(CHECKPOINT_EVERY)) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    *last_group = 0;
                    self.checkpoint_quietly(false);
                    self.record_quietly(false);
                    return Step::Nothing;
                }
                Err(RecvTimeoutError::Disconnected) => return Step::Closed,
            },
        };
        // A group's store changes are one batch: its shared changes stay within what the
        // store takes in one (etcd: one transaction), or the whole group would be refused.
        let cap = self.store.max_shared_keys();
        let (mut jobs, mut shared) = match first {
            Msg::Commit(job) => {
                let shared = job.batch.shared_changes();
                (vec![job], shared)
            }
            Msg::Roll(reply) => {
                self.settle(pending);
                let _ = reply.send(self.roll());
                self.settle(pending);
                return Step::Nothing;
            }
        };
        // Waiting for the callers of the last group pays only while no sync runs: during
        // one, the group goes to its sync as it is, and later ones follow it.
        let gather = jobs.len() < *last_group && self.pipe.is_idle();
        let gather_until = Instant::now() + GATHER;
        while jobs.len() < MAX_GROUP {
            let next = if gather && jobs.len() < *last_group {
                match gather_until.checked_duration_since(Instant::now()) {
                    Some(wait) => rx.recv_timeout(wait).map_err(|_| ()),
                    None => rx.try_recv().map_err(|_| ()),
                }
            } else {
                rx.try_recv().map_err(|_| ())
            };
            match next {
                Ok(Msg::Commit(job)) => {
                    let more = job.batch.shared_changes();
                    if shared.saturating_add(more) > cap {
                        *held = Some(Msg::Commit(job));
                        break;
                    }
                    shared += more;
                    jobs.push(job);
                }
                Ok(roll) => {
                    *held = Some(roll);
                    break;
                }
                Err(()) => break,
            }
        }
        *last_group = jobs.len();
        self.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        let wrote = self.write_group(jobs, pending);
        self.checkpoint_quietly(false);
        self.record_quietly(false);
        match wrote {
            Some((group, turn)) => Step::Wrote(group, turn),
            None => Step::Nothing,
        }
    }

    /// The committed state, which the writer continues from.
    fn pending(&self) -> Pending {
        let state = self.lock();
        Pending {
            frontier: state.frontier.clone(),
            recorded_file: state.recorded_file,
        }
    }

    /// Waits until every group in flight has committed or failed; then cuts off
    /// the records that did not commit (those of failed groups) and continues from the
    /// committed state.
    fn settle(&self, pending: &mut Pending) {
        self.pipe.drain();
        if self.segments.written() != self.segments.position() {
            self.segments.abandon();
        }
        *pending = self.pending();
    }

    /// Records the log's end in the store if the oldest group not recorded is [`RECORD_EVERY`]
    /// old (or at all, if `force`).
    fn record_quietly(&self, force: bool) {
        let mut state = self.lock();
        let Some(since) = state.unrecorded_since else {
            return;
        };
        if !force && since.elapsed() < RECORD_EVERY {
            return;
        }
        if let Err(e) = self.record(&mut state) {
            tracing::warn!(error = %e, "recording the audit log's end failed; retrying later");
        }
    }

    /// Syncs the tree file, then writes the held store changes, the tail and the tree's synced
    /// size in one store batch.
    pub(super) fn record(&self, state: &mut State) -> Result<()> {
        self.tree.sync()?;
        let size = state.frontier.size();
        let (active, len) = self.segments.position();
        let mut batch = state.held.clone();
        batch.insert(
            Space::Local,
            META_TAIL,
            &Tail { size, active, len }.encode(),
        );
        batch.insert(Space::Local, META_TREE, &size.to_be_bytes());
        self.store.apply(batch)?;
        state.held = Batch::default();
        state.unrecorded_since = None;
        state.tree_synced = size;
        state.recorded_file = active;
        Ok(())
    }

    /// Starts a new segment file at the current size, commits the tail naming it, and signs a
    /// checkpoint of that size.
    pub(super) fn roll(&self) -> Result<SignedCheckpoint> {
        if self.lock().signer.is_none() {
            return Err(Error::Sealed);
        }
        {
            let mut state = self.lock();
            let size = state.frontier.size();
            let (active, len) = self.segments.position();
            if !(active == size && len == 0) {
                self.segments.roll(size)?;
            }
            // Also when an earlier roll's record failed.
            if self.segments.position().0 != state.recorded_file {
                self.record(&mut state)?;
            }
        }
        self.checkpoint(true)?;
        self.lock().last.clone().ok_or(Error::Sealed)
    }

    /// Gives each job's entry its sequence number, writes the entries to the active segment
    /// and their subtree hashes to the tree file; gives back the group and its turn, for the
    /// worker to sync and commit (`None` if the group failed).
    fn write_group(&self, jobs: Vec<Job>, pending: &mut Pending) -> Option<(Written, u64)> {
        let replies_of = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.reply);
        if self.pipe.has_failed() {
            self.settle(pending);
        }
        if self.stopped.load(Ordering::Relaxed) {
            fail(replies_of(jobs), STOPPED, None);
            return None;
        }
        if jobs.iter().any(|job| job.rotation.is_some()) {
            // It reads the rotations in the store: those of earlier groups must be there.
            self.settle(pending);
        }
        let (mut file, mut start) = self.segments.written();
        if start >= SEGMENT_BYTES {
            // A new file only once the old one's records have all committed.
            self.settle(pending);
            match self.segments.roll(pending.frontier.size()) {
                Ok(()) => (file, start) = self.segments.written(),
                Err(e) => {
                    fail(replies_of(jobs), UNWRITTEN, Some(&e));
                    return None;
                }
            }
        }
        let mut frontier = pending.frontier.clone();
        let time_ms = self.clock.now_ms();
        let mut batch = Batch::default();
        let mut index = Batch::default();
        let mut nodes = Vec::with_capacity(jobs.len() * 2 * 32);
        let first_node = tree::nodes_in(frontier.size());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut records = Vec::with_capacity(jobs.len() * 512);
        let observing = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let mut observations = Vec::with_capacity(if observing { jobs.len() } else { 0 });
        // A group whose jobs change nothing but the log is replayable: the segment's fdatasync
        // alone makes it durable, and the store learns of it later (see `record`). A new
        // segment file must be named by a tail in the store first (after a roll, here or in
        // `roll`, groups write the tail until one succeeds).
        // A rotation's job writes the rotation record (below) even when its own batch is
        // empty (a cluster node following another node's rotation, `vault/audit_key.rs`).
        let replayable = file == pending.recorded_file
            && jobs
                .iter()
                .all(|job| job.batch.is_empty() && job.rotation.is_none());
        let mut rotated: Option<(u64, Box<NewSigner>)> = None;
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let seq = frontier.size();
            let mut entry = job.entry;
            let bytes = entry.finish(seq, time_ms);
            if let Some(new) = job.rotation {
                // Not replayable: the group's batch holds the rotation record.
                let mut rotations = match rotation::read(&self.store) {
                    Ok(r) => r,
                    Err(e) => {
                        let done = replies.into_iter().map(|(_, reply)| reply);
                        let rest = std::iter::once(job.reply).chain(jobs.map(|j| j.reply));
                        fail(done.chain(rest), UNWRITTEN, Some(&e));
                        return None;
                    }
                };
                rotations.push(KeyRotation {
                    generation: new.generation,
                    seq,
                    public_key: new.signer.verifier().to_string(),
                    checkpoint: None,
                    entry: String::from_utf8_lossy(&bytes).into_owned(),
                });
                batch.insert(Space::Local, META_ROTATIONS, &rotation::encode(&rotations));
                rotated = Some((seq, new));
            }
            if observing {
                observations.push(entry.observation);
            }
            let place = Some((file, start + records.len() as u64));
            push_entry(&mut frontier, &mut nodes, &mut index, &bytes, place);
            segment::frame(&mut records, &bytes, replayable);
            batch.extend(job.batch);
            replies.push((seq, job.reply));
        }
        // The tree's nodes first (a failure there leaves no record behind) and unsynced (they
        // are rebuilt from the entries if lost); the entries are durable before the batch that
        // commits them and their state changes (in the sync stage).
        let written = self
            .tree
            .write(first_node, &nodes)
            .and_then(|()| self.segments.write(&records));
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                fail(
                    replies.into_iter().map(|(_, reply)| reply),
                    UNWRITTEN,
                    Some(&e),
                );
                self.settle(pending);
                return None;
            }
        };
        let group = Written {
            replies,
            frontier: frontier.clone(),
            file,
            len,
            replayable,
            index,
            batch,
            rotated,
            observations: observing.then_some(observations),
        };
        let Some(turn) = self.pipe.turn() else {
            // An earlier group failed: this one's records follow its.
            let conflict = self.pipe.failed_by_conflict();
            fail_after(group.replies.into_iter().map(|(_, reply)| reply), conflict);
            self.settle(pending);
            return None;
        };
        pending.frontier = frontier;
        if !replayable {
            pending.recorded_file = file;
        }
        Some((group, turn))
    }
}
