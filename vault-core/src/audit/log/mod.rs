//! The audit log writer: group commit of state changes with their entries, the stored Merkle
//! tree, and checkpoint signing.
//!
//! Every operation hands its store changes and its [`Event`] to [`AuditLog::commit`] and waits.
//! The writer is a few worker threads taking turns at the write token (see `writer`): the one
//! holding it takes everything queued (up to [`MAX_GROUP`] jobs) and gives each entry its
//! sequence number. It writes the entries to the active segment file (see [`segment`]) and the
//! subtree hashes they complete to the tree file (see [`tree`]; not synced, since the entries
//! rebuild it), takes the group's turn, passes the token on and runs the group's `fdatasync`
//! itself (see `pipeline`), while the next worker writes the next group: a leader/follower
//! group commit, where no thread is woken just to sync a group. A sync covers every record
//! written before it started, so it covers its group and all earlier ones; several may run at
//! once (the file system overlaps them), and groups commit strictly in turn order whichever
//! sync returns first (a sync that returns early leaves its group to the worker that commits
//! the turn before). Callers never sync: threads and async tasks alike queue their job and
//! wait for the answer, so no tokio worker ever blocks in a sync (a task cannot lead a group
//! without blocking its worker; a calling thread could, but would need the token shared with
//! callers for the one wake-up, of the worker waiting for jobs, that the pool leaves).
//! If any job changes state, the group's commit applies one store batch holding those changes
//! and the log's new *tail* (its size and the segment's committed length), with one flush: the
//! group is committed when that batch is, and segment bytes past the stored tail from such a
//! group are cut off (at once, or at the next open after a crash). A group that changes nothing
//! else (a verify without a credit spend) is *replayable*: its records are marked so, its
//! segment sync commits it, and the store learns of it when the writer next *records* the log
//! (at most a second later: tree file synced, then tail, held index entries and synced tree
//! size in one batch); past the stored tail, whole replayable records are taken back at open.
//! Only then does any waiting operation get its answer, so a state change and its entry are
//! durable together or not at all, and durability costs one segment sync (plus one store flush
//! if state changed) per group, not per request.
//!
//! What the pipeline keeps, and why:
//! - a group's store batch (a credit spent, a key created) is applied only after the sync that
//!   covers its entry has returned, and after every earlier group has committed. Applied any
//!   sooner, a reader of the store (the next verify of the same key, a listing) would see a
//!   change whose entry a crash could still lose, and the tail in that batch would claim segment
//!   bytes that may not be on disk, which open refuses as lost entries. So the store, the tail
//!   and the in-memory tree (what readers, exports and checkpoints see) only ever hold
//!   committed groups; written groups are visible to no one;
//! - answers go out in that same order, after that same commit, so an answered entry is
//!   durable and so is every entry before it;
//! - if a step fails (a sync, a store batch, a write, or the log is stopped meanwhile), that
//!   group and every group written after it get [`Error::AuditUnavailable`], even a later one
//!   whose own sync succeeded: its records follow records that may not be on disk (and after a
//!   failed `fdatasync` the kernel may have dropped them). The writer then waits for the
//!   groups in flight, cuts the written records back to the committed length and goes on from
//!   the committed tree, as a failed group did before the pipeline; the log is not stopped for
//!   it (only an integrity failure stops it, below);
//! - a crash at any point leaves the store's tail at the last committed non-replayable group or
//!   record; open takes back the whole replayable records after it and cuts the rest, exactly
//!   as for one group in flight: written records past the tail were never answered;
//! - a new segment file is started, and a key rotation's group written, only once every group
//!   in flight has committed (the roll cuts the old file to its committed records; the
//!   rotation reads the rotations the store holds).
//!
//! [`segment`]: super::segment
//! [`tree`]: super::tree
//!
//! While unsealed, the writer signs a checkpoint at most once a second while entries arrive,
//! and on seal and on every export. Before signing it checks that the stored tree still holds
//! the last checkpoint's root and the frontier's root, and that the entries appended since hash
//! to the stored leaves. A mismatch stops the log: every later commit fails until an operator
//! looks.

mod checkpoint;
mod group;
mod open;
mod pipeline;
mod queue;
mod signing;
mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod witnessing;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::archive::ArchiveDigest;
use super::entry::{Entry, Event, Prepared};
use super::merkle::Hash;
use super::note::{NoteSigner, NoteVerifier};
use super::observation::Observation;
use super::rotation::{self, KeyRotation};
use super::segment::{Reader, Segments, Tail};
use super::tree::TreeFile;
use crate::clock::Clock;
use crate::context::Context;
use crate::storage::{Batch, Space, Store};
use crate::witness::client::WitnessConfig;
use crate::{Error, Result};
pub use checkpoint::SignedCheckpoint;
pub use group::NewSigner;
use group::Pipe;
use group::Reply;
pub(crate) use open::{
    FirstSegment, META_ARCHIVED, META_TAIL, META_TREE, decode_meta_u64, node_id, remove_keys_while,
};
use open::{
    meta_u64, move_nodes_to_tree, prefix_hashes, rebuild_tree, remove_keys_below, start_segments,
};
use pipeline::WORKERS;
use queue::{Job, Msg, Writing};
use signing::META_CHECKPOINT;
use state::{Retiring, Shared, State};
use witnessing::Witnesses;
use writer::Queued;
pub use writer::{Durable, MAX_GROUP};

/// The last archive written in full: its end (u64 BE) then the SHA-256 of its bytes (32 B).
/// Entries may be dropped up to that end by a caller who sends that digest back.
const META_ARCHIVE_SHA256: &[u8] = b"audit-archive-sha256";
/// Earlier builds' record of the last archive written: its end only (u64 BE). Read by nothing
/// now (a drop needs the digest); removed when the next archive is written.
const META_ARCHIVE_WRITTEN: &[u8] = b"audit-archive-written";

/// The audit log of one vault.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Msg>>>,
    /// The writer's worker threads (see `writer`): they exit once the queue is closed.
    workers: Mutex<Vec<JoinHandle<()>>>,
    witness_thread: Mutex<Option<JoinHandle<()>>>,
}

/// What an archive's drop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropReport {
    /// Entries that left the live log.
    pub entries: u64,
    /// Bytes of segment files removed (entries of the file holding `upto` stay on disk until
    /// a later archive covers the whole file).
    pub bytes_freed: u64,
}

impl AuditLog {
    /// Opens the log whose tree and tail are in `store` and whose entries are in the segment
    /// files of `segment_dir`, and starts its writer thread; entries are stamped with the time
    /// of `clock`. A format-1 log (entries in the store) is moved into segment files first.
    pub fn open(
        store: Store,
        segment_dir: &Path,
        origin: String,
        checkpoint_file: PathBuf,
        clock: Clock,
    ) -> Result<AuditLog> {
        let archived = meta_u64(&store, META_ARCHIVED)?.unwrap_or(0);
        let tail = match store.get(Space::Local, META_TAIL)? {
            Some(bytes) => Tail::decode(&bytes)?,
            None => start_segments(&store, segment_dir)?,
        };
        // Format-1 entries left over from a move interrupted after its commit.
        remove_keys_below(&store, Space::Audit, u64::MAX)?;
        let (segments, replayed) = Segments::open(segment_dir, tail, |i, bytes| {
            Entry::parse(bytes).is_ok_and(|e| e.seq == tail.size + i)
        })?;
        let tree = TreeFile::open(segment_dir)?;
        let synced = match meta_u64(&store, META_TREE)? {
            Some(synced) => synced,
            None => move_nodes_to_tree(&store, &tree, tail.size)?,
        };
        // The store's copies of the subtree hashes (format 2), once the tree file has them.
        remove_keys_while(&store, Space::AuditNode, |_| Ok(true))?;
        let (frontier, tail) = rebuild_tree(&store, &segments, &tree, synced, tail, &replayed)?;
        let last = match store.get(Space::Local, META_CHECKPOINT)? {
            None => None,
            Some(size) => {
                let note = store
                    .get(Space::Checkpoint, &size)?
                    .ok_or_else(|| Error::Corrupt("the last audit checkpoint is missing".into()))?;
                let note = String::from_utf8(note)
                    .map_err(|_| Error::Corrupt("an audit checkpoint is not UTF-8".into()))?;
                Some(SignedCheckpoint::from_note(note)?)
            }
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            store,
            origin,
            checkpoint_file,
            clock,
            state: Mutex::new(State {
                frontier,
                last,
                floor: None,
                last_at: Instant::now(),
                held: Batch::default(),
                unrecorded_since: None,
                tree_synced: tail.size,
                recorded_file: tail.active,
                signer: None,
                retiring: None,
            }),
            stopped: AtomicBool::new(false),
            witnesses: OnceLock::new(),
            queued: AtomicUsize::new(0),
            archived: AtomicU64::new(archived),
            segments,
            tree,
            observer: Mutex::new(None),
            pipe: Pipe::default(),
            writing: Mutex::new(Writing::new(rx)),
        });
        let mut workers = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            let worker_shared = Arc::clone(&shared);
            let worker = std::thread::Builder::new()
                .name("keyvault-audit".into())
                .spawn(move || worker_shared.work());
            match worker {
                Ok(worker) => workers.push(worker),
                // Dropping `tx` closes the queue: the workers started exit.
                Err(e) => {
                    return Err(Error::Io {
                        context: "starting an audit writer thread".into(),
                        source: e,
                    });
                }
            }
        }
        Ok(AuditLog {
            shared,
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            witness_thread: Mutex::new(None),
        })
    }

    /// Commits `batch` and the entry for `event` together; returns the entry's sequence number
    /// once both are durable.
    pub fn commit(&self, ctx: &Context, batch: Batch, event: Event) -> Result<u64> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue(ctx, batch, event, Reply::Blocking(reply))?;
        answer
            .recv()
            .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))?
    }

    /// [`AuditLog::commit`] without blocking: the job is queued before this returns (so jobs
    /// queued one after the other commit in that order), and the returned future resolves
    /// once it is durable. For async callers, which must not block a worker thread on a sync.
    pub fn commit_deferred(&self, ctx: &Context, batch: Batch, event: Event) -> Durable {
        let (reply, answer) = oneshot::channel();
        Durable(
            match self.queue(ctx, batch, event, Reply::Deferred(reply)) {
                Ok(()) => Queued::Waiting(answer),
                Err(e) => Queued::Refused(Some(e)),
            },
        )
    }

    /// [`AuditLog::commit_deferred`] for many commits, each its own job (its entry committed
    /// with its batch), in the order given. Every entry is encoded before any is queued, and
    /// then all are queued back to back: the writer finds them together and commits them in as
    /// few groups (so as few fdatasyncs and store flushes) as it can, rather than in small
    /// groups as they trickle in.
    pub fn commit_deferred_many(
        &self,
        ctx: &Context,
        commits: Vec<(Batch, Event)>,
    ) -> Vec<Durable> {
        let prepared: Vec<(Batch, Prepared)> = commits
            .into_iter()
            .map(|(batch, event)| (batch, Prepared::new(event, ctx)))
            .collect();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        prepared
            .into_iter()
            .map(|(batch, entry)| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    batch,
                    entry,
                    reply: Reply::Deferred(reply),
                    rotation: None,
                };
                let sent = match tx.as_ref() {
                    None => Err(Error::AuditUnavailable("the audit log is closed".into())),
                    Some(tx) => {
                        self.shared.queued.fetch_add(1, Ordering::Relaxed);
                        tx.send(Msg::Commit(job))
                            .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))
                    }
                };
                Durable(match sent {
                    Ok(()) => Queued::Waiting(answer),
                    Err(e) => Queued::Refused(Some(e)),
                })
            })
            .collect()
    }

    fn queue(&self, ctx: &Context, batch: Batch, event: Event, reply: Reply) -> Result<()> {
        self.queue_job(ctx, batch, event, reply, None)
    }

    fn queue_job(
        &self,
        ctx: &Context,
        batch: Batch,
        event: Event,
        reply: Reply,
        rotation: Option<Box<NewSigner>>,
    ) -> Result<()> {
        let job = Job {
            batch,
            entry: Prepared::new(event, ctx),
            reply,
            rotation,
        };
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let tx = tx
            .as_ref()
            .ok_or_else(|| Error::AuditUnavailable("the audit log is closed".into()))?;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        tx.send(Msg::Commit(job))
            .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))
    }

    /// Hands what the usage figures need of every group's entries to `observer` once they are
    /// durable, from now on. The writer
    /// never waits for it: the channel is unbounded, and a receiver that is gone is forgotten.
    pub fn set_observer(&self, observer: Option<Sender<Vec<Observation>>>) {
        *self
            .shared
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = observer;
    }

    /// Jobs waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Whether the log is stopped (an integrity failure, a rollback or a fork): every later
    /// commit fails until an operator looks.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Relaxed)
    }

    /// Entries in the log.
    pub fn size(&self) -> u64 {
        self.shared.lock().frontier.size()
    }

    /// The checkpoint signer's origin (also the key name).
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// Sets (on unseal) or clears (on seal) the key that signs checkpoints. `previous` is the
    /// key of the generation before `signer`'s: if the latest audit key rotation has no
    /// transition checkpoint yet (a crash came between its entry and that checkpoint), the next
    /// checkpoint is signed by both.
    pub fn set_signer(
        &self,
        signer: Option<NoteSigner>,
        previous: Option<NoteSigner>,
    ) -> Result<()> {
        let pending = match (&signer, previous) {
            (Some(_), Some(previous)) => rotation::read(&self.shared.store)?
                .last()
                .filter(|r| r.checkpoint.is_none())
                .map(|r| Retiring {
                    seq: r.seq,
                    signer: previous,
                }),
            _ => None,
        };
        let mut state = self.shared.lock();
        state.signer = signer;
        state.retiring = pending;
        Ok(())
    }

    /// Commits the `audit.key_rotated` entry of `event` with `batch` (the keyring that holds
    /// the new generation): from that entry on, the writer signs with `new`, and the first
    /// checkpoint that includes the entry with the old key too. Returns the entry's sequence
    /// number.
    pub fn commit_rotation(
        &self,
        ctx: &Context,
        batch: Batch,
        event: Event,
        new: NewSigner,
    ) -> Result<u64> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue_job(
            ctx,
            batch,
            event,
            Reply::Blocking(reply),
            Some(Box::new(new)),
        )?;
        answer
            .recv()
            .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))?
    }

    /// The audit key rotations, oldest first.
    pub fn rotations(&self) -> Result<Vec<KeyRotation>> {
        rotation::read(&self.shared.store)
    }

    /// Signs a checkpoint of the whole log now (unless the last one already covers it) and
    /// returns the latest. [`Error::Sealed`] without a signer.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint> {
        self.shared.checkpoint(true)?;
        self.shared.lock().last.clone().ok_or(Error::Sealed)
    }

    /// The last signed checkpoint, as stored (signed now or by an earlier process).
    pub fn last_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.shared.lock().last.clone()
    }

    /// The signed checkpoint of tree size `size`, if one was signed.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>> {
        Ok(self
            .shared
            .store
            .get(Space::Checkpoint, &size.to_be_bytes())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The stored perfect-subtree hash at `(level, index)`.
    pub fn node(&self, level: u8, index: u64) -> Result<Hash> {
        self.shared.node(level, index)
    }

    /// The stored leaf hashes of entries `from, from + 1, ...`, read in order in one pass (for
    /// a reader of every entry; [`AuditLog::node`] reads one hash).
    pub fn leaves(&self, from: u64) -> Result<crate::audit::tree::Leaves> {
        self.shared.tree.leaves(from)
    }

    /// Writes the log's end (its tail and the tree file's synced size) to the store now, as
    /// the writer otherwise does within a second of a commit.
    pub fn record(&self) -> Result<()> {
        let mut state = self.shared.lock();
        self.shared.record(&mut state)
    }

    /// Calls `f` with every stored subtree hash of the log's first `size` entries, as
    /// `(level, index, hash)`, in the order they completed.
    pub fn for_each_node(
        &self,
        size: u64,
        f: impl FnMut(u8, u64, &Hash) -> Result<()>,
    ) -> Result<()> {
        self.shared.tree.for_each(size.min(self.size()), f)
    }

    /// The stored entry bytes at `seq` (`None` past the end or before the first live entry).
    pub fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        if seq < self.first_live() {
            return Ok(None);
        }
        self.entries(seq)
            .next()
            .transpose()
            .map(|e| e.map(|(_, bytes)| bytes))
    }

    /// The committed entries from `from` (or the first live one) in sequence order, as
    /// `(seq, bytes)`; the entries committed after this call are not included.
    pub fn entries(&self, from: u64) -> Reader<'_> {
        self.shared.committed_entries(from)
    }

    /// A handle that reads the committed entries, for readers that outlive a borrow of the
    /// log (the usage thread).
    pub fn reader_handle(&self) -> LogReader {
        LogReader(Arc::clone(&self.shared))
    }

    /// Bytes in the segment files.
    pub fn segment_bytes(&self) -> u64 {
        self.shared.segments.bytes()
    }

    /// Starts a new segment file at the current size and signs a checkpoint of that size, so
    /// that an archive up to it can remove every file before. [`Error::Sealed`] without a
    /// signer.
    pub fn roll(&self) -> Result<SignedCheckpoint> {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let tx = tx
                .as_ref()
                .ok_or_else(|| Error::AuditUnavailable("the audit log is closed".into()))?;
            tx.send(Msg::Roll(reply))
                .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))?;
        }
        answer
            .recv()
            .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))?
    }

    /// The first live sequence number: entries before it were archived.
    pub fn first_live(&self) -> u64 {
        self.shared.archived.load(Ordering::Acquire)
    }

    /// The perfect-subtree hashes that make up `[0, size)`, largest first: what a verifier
    /// needs, with the entries from `size` on, to recompute a root without the entries before.
    pub fn prefix(&self, size: u64) -> Result<Vec<Hash>> {
        prefix_hashes(size, |level, index| self.shared.node(level, index))
    }

    /// Records that an archive of every entry before `upto`, whose bytes hash to `sha256`, was
    /// written in full, so the entries may now be dropped with [`AuditLog::drop_archived`] by
    /// a caller who stored those bytes. Replaces the record of any earlier archive.
    pub fn archive_written(&self, upto: u64, sha256: &ArchiveDigest) -> Result<()> {
        let mut value = Vec::with_capacity(40);
        value.extend_from_slice(&upto.to_be_bytes());
        value.extend_from_slice(sha256.as_bytes());
        let mut batch = Batch::default();
        batch.insert(Space::Local, META_ARCHIVE_SHA256, &value);
        batch.remove(Space::Local, META_ARCHIVE_WRITTEN);
        Ok(self.shared.store.apply(batch)?)
    }

    /// The end and the SHA-256 of the last archive written in full.
    pub fn last_archive_written(&self) -> Result<Option<(u64, ArchiveDigest)>> {
        let Some(bytes) = self.shared.store.get(Space::Local, META_ARCHIVE_SHA256)? else {
            return Ok(None);
        };
        let malformed = || Error::Corrupt("audit-archive-sha256 is malformed".into());
        let (upto, sha256) = bytes.split_at_checked(8).ok_or_else(malformed)?;
        let upto: [u8; 8] = upto.try_into().map_err(|_| malformed())?;
        let sha256: [u8; 32] = sha256.try_into().map_err(|_| malformed())?;
        Ok(Some((
            u64::from_be_bytes(upto),
            ArchiveDigest::from_bytes(sha256),
        )))
    }

    /// Drops every entry before `upto` from the live log, after first recording (durably) that
    /// they are archived, so that proofs and exports refuse them from then on; then removes the
    /// segment files that hold nothing else, and their index entries. The subtree hashes stay:
    /// the tree keeps its frontier, so later proofs and consistency with older checkpoints still
    /// work. Running it again after a crash finishes the job.
    pub fn drop_archived(&self, upto: u64) -> Result<DropReport> {
        let shared = &self.shared;
        let upto = upto.min(self.size());
        let before = self.first_live();
        {
            // The entries rebuild the tree file's unsynced nodes at open: keep them until the
            // nodes are synced; and the store's tail must name the active file before older
            // files go.
            let mut state = shared.lock();
            if state.tree_synced < upto || shared.segments.position().0 != state.recorded_file {
                shared.record(&mut state)?;
            }
        }
        if upto > before {
            let mut batch = Batch::default();
            batch.insert(Space::Local, META_ARCHIVED, &upto.to_be_bytes());
            shared.store.apply(batch)?;
            shared.archived.fetch_max(upto, Ordering::AcqRel);
        }
        let bytes_freed = shared.segments.remove_below(upto)?;
        if let Some((oldest, _)) = shared.segments.holding(upto) {
            remove_keys_below(&shared.store, Space::AuditIndex, oldest)?;
        }
        Ok(DropReport {
            entries: upto.saturating_sub(before),
            bytes_freed,
        })
    }

    /// Sends every checkpoint signed from now on to `witnesses` (on a thread of its own), and
    /// makes [`AuditLog::check_rollback`] ask them. Called once, after open; a second call
    /// changes nothing.
    pub fn set_witnesses(&self, witnesses: Vec<WitnessConfig>) -> Result<()> {
        if witnesses.is_empty() {
            return Ok(());
        }
        let witnesses = Arc::new(Witnesses::new(witnesses));
        if self.shared.witnesses.set(Arc::clone(&witnesses)).is_err() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new()
            .name("keyvault-witness".into())
            .spawn(move || witnessing::run(shared, witnesses))
            .map_err(|e| Error::Io {
                context: "starting the audit witness thread".into(),
                source: e,
            })?;
        *self
            .witness_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    /// Checks, before the first checkpoint of an unseal is signed, that the log extends the
    /// largest checkpoint of its own (signed by any of `verifiers`, one per audit key
    /// generation) that the store, the checkpoint file and the reachable witnesses hold
    /// ([`Error::RolledBack`] otherwise, naming the sizes); that checkpoint becomes the floor no
    /// later checkpoint may fall below. See the private `audit::witnessing` module.
    pub fn check_rollback(&self, verifiers: &[NoteVerifier]) -> Result<()> {
        witnessing::check_rollback(
            &*self.shared,
            self.shared.witnesses.get().map(|w| &**w),
            verifiers,
            &self.shared.checkpoint_file,
        )
    }

    /// Like [`AuditLog::check_rollback`], against one more checkpoint `note` that `source`
    /// (named in the error) holds: a cluster node's latest, as it published it in etcd.
    pub fn check_rollback_against(
        &self,
        note: &str,
        verifiers: &[NoteVerifier],
        source: &str,
    ) -> Result<()> {
        witnessing::check_note(&*self.shared, verifiers, note, source)
    }

    /// A checkpoint at least as large as the latest, after waiting (a few seconds at most) for
    /// one round of submissions to the witnesses: the one that round sent, with the
    /// cosignatures of the witnesses that answered. Without witnesses, the latest.
    pub fn witnessed_checkpoint(&self) -> Result<SignedCheckpoint> {
        let latest = self.shared.lock().last.clone().ok_or(Error::Sealed)?;
        let Some(witnesses) = self.shared.witnesses.get() else {
            return Ok(latest);
        };
        let Some(size) = witnesses.wait_round(witnessing::EXPORT_WAIT) else {
            return Ok(latest);
        };
        match self.checkpoint_at(size)? {
            Some(note) if size >= latest.checkpoint.size => SignedCheckpoint::from_note(note),
            _ => Ok(latest),
        }
    }

    /// Stops the writer after the queued jobs; later commits fail.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
        if let Some(witnesses) = self.shared.witnesses.get() {
            witnesses.stop();
        }
        let thread = self
            .witness_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        // Nothing more will be observed: the usage thread sees the end at once instead of at
        // its next wake.
        self.set_observer(None);
    }
}

/// Reads the committed entries of a log (see [`AuditLog::reader_handle`]).
#[derive(Debug, Clone)]
pub struct LogReader(Arc<Shared>);

impl LogReader {
    /// The committed entries from `from` (or the first live one), as `(seq, bytes)`.
    pub fn entries(&self, from: u64) -> Reader<'_> {
        self.0.committed_entries(from)
    }

    /// The number of entries committed (the next sequence number).
    pub fn size(&self) -> u64 {
        self.0.lock().frontier.size()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}
