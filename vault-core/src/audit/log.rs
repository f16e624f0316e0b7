//! The audit log writer: group commit of state changes with their entries, the stored Merkle
//! tree, and checkpoint signing.
//!
//! Every operation hands its store changes and its [`Event`] to [`AuditLog::commit`] and waits.
//! One writer thread takes everything queued (up to [`MAX_GROUP`] jobs) and gives each entry its
//! sequence number. It appends the entries to the active segment file (see [`segment`]) and
//! syncs it, and writes the subtree hashes they complete to the tree file (see [`tree`]; not
//! synced, since the entries rebuild it). If any job changes state, it then applies one store
//! batch holding those changes and the log's new *tail* (its size and the segment's committed
//! length), with one flush: the group is committed when that batch is, and segment bytes past
//! the stored tail from such a group are cut off (at once, or at the next open after a crash).
//! A group that changes nothing else (a verify without a credit spend) is *replayable*: its
//! records are marked so, its segment sync commits it, and the store learns of it when the
//! writer next *records* the log (at most a second later: tree file synced, then tail, held
//! index entries and synced tree size in one batch); past the stored tail, whole replayable
//! records are taken back at open. Only then does any waiting operation get its answer, so a
//! state change and its entry are durable together or not at all, and durability costs one
//! segment sync (plus one store flush if state changed) per group, not per request. If a step
//! fails, every operation of the group gets [`Error::AuditUnavailable`] and the in-memory tree
//! is left as it was.
//!
//! [`segment`]: super::segment
//! [`tree`]: super::tree
//!
//! While unsealed, the writer signs a checkpoint at most once a second while entries arrive,
//! and on seal and on every export. Before signing it checks that the stored tree still holds
//! the last checkpoint's root and the frontier's root, and that the entries appended since hash
//! to the stored leaves. A mismatch stops the log: every later commit fails until an operator
//! looks.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::archive::ArchiveDigest;
use super::entry::{Entry, Event, Prepared};
use super::merkle::{self, Frontier, Hash};
use super::note::{Checkpoint, NoteSigner, NoteVerifier};
use super::observation::Observation;
use super::rotation::{self, KeyRotation, META_ROTATIONS};
use super::segment::{self, Reader, Segments, Tail};
use super::tree::{self, TreeFile};
use super::witnessing::{self, Witnesses};
use crate::clock::now_ms;
use crate::context::Context;
use crate::storage::{Batch, Space, Store};
use crate::witness::client::WitnessConfig;
use crate::{Error, Result};

/// Most jobs committed in one group.
pub const MAX_GROUP: usize = 1024;
/// Checkpoints are signed at most this often while entries arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

const META_CHECKPOINT: &[u8] = b"audit-checkpoint";
/// The first live sequence number: entries before it were moved to an archive (u64 BE).
pub(crate) const META_ARCHIVED: &[u8] = b"audit-archived";
/// The last archive written in full: its end (u64 BE) then the SHA-256 of its bytes (32 B).
/// Entries may be dropped up to that end by a caller who sends that digest back.
const META_ARCHIVE_SHA256: &[u8] = b"audit-archive-sha256";
/// Earlier builds' record of the last archive written: its end only (u64 BE). Read by nothing
/// now (a drop needs the digest); removed when the next archive is written.
const META_ARCHIVE_WRITTEN: &[u8] = b"audit-archive-written";
/// Where the committed log ends (a [`Tail`]).
pub(crate) const META_TAIL: &[u8] = b"audit-tail";
/// Store keys removed per batch (format-1 entries after their move, archived index entries),
/// so that no commit waits long behind one.
const DROP_CHUNK: usize = 2048;
/// The active segment file is closed, and a new one started, once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Every this many entries, the index records where the entry sits.
pub(crate) const INDEX_EVERY: u64 = 256;
/// The tree file is synced, and the tail and tree size recorded in the store, at least this
/// often while entries arrive (a crash leaves at most this much of the log to rebuild at open).
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// How far the tree file is synced (u64 BE): its nodes up to this size need no rebuilding.
pub(crate) const META_TREE: &[u8] = b"audit-tree-synced";
/// How long the writer waits for more jobs when a group is smaller than the one before (whose
/// callers are likely on their way back): a fraction of one fdatasync, so that a group of
/// callers answered together is synced together rather than split into two syncs.
const GATHER: Duration = Duration::from_micros(60);

/// What the writer thread is asked to do.
// `Commit` is every operation's message and `Roll` a rare one: boxing the job to even them out
// would cost an allocation per verify for nothing.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// Commit a group member.
    Commit(Job),
    /// Start a new segment file at the current size and sign a checkpoint there (so that an
    /// archive up to it can remove every older file).
    Roll(SyncSender<Result<SignedCheckpoint>>),
}

struct Job {
    batch: Batch,
    entry: Prepared,
    reply: Reply,
    /// Set on the `audit.key_rotated` entry: the new generation's signer (boxed: one job in
    /// millions has one).
    rotation: Option<Box<NewSigner>>,
}

/// The signer of a new audit key generation, handed to the writer with the entry that
/// announces it.
#[derive(Debug)]
pub struct NewSigner {
    /// The generation's number.
    pub generation: u32,
    /// Its signer.
    pub signer: NoteSigner,
}

/// The key being retired: it signs, with the new one, the first checkpoint whose tree holds
/// entry `seq` (the `audit.key_rotated` entry).
#[derive(Debug)]
pub(super) struct Retiring {
    seq: u64,
    signer: NoteSigner,
}

/// Where a job's outcome goes: a thread blocked in [`AuditLog::commit`], or the future of
/// [`AuditLog::commit_deferred`].
enum Reply {
    Blocking(SyncSender<Result<u64>>),
    Deferred(oneshot::Sender<Result<u64>>),
}

impl Reply {
    fn send(self, outcome: Result<u64>) {
        // A waiter that is gone (a dropped future, say) no longer needs the answer.
        let _ = match self {
            Reply::Blocking(tx) => tx.send(outcome).map_err(drop),
            Reply::Deferred(tx) => tx.send(outcome).map_err(drop),
        };
    }
}

/// The answer to [`AuditLog::commit_deferred`]: resolves to the entry's sequence number once it
/// and its batch are durable. Dropping it does not cancel the commit.
#[derive(Debug)]
pub struct Durable(Queued);

#[derive(Debug)]
enum Queued {
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

/// The latest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its signed-note text.
    pub note: String,
}

impl SignedCheckpoint {
    /// A stored note (the vault's own, so its signatures were checked when it was made) with the
    /// checkpoint its text holds.
    fn from_note(note: String) -> Result<SignedCheckpoint> {
        let text = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
        let checkpoint = Checkpoint::parse_note_text(&text)
            .map_err(|e| Error::Corrupt(format!("a stored audit checkpoint: {e}")))?;
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

/// The largest checkpoint of this log seen outside the writer's own memory (see
/// [`witnessing`](super::witnessing)): no checkpoint is signed that does not extend it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Floor {
    pub(super) size: u64,
    /// Known when the checkpoint was read whole; a witness's 409 tells only the size.
    pub(super) root: Option<Hash>,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) frontier: Frontier,
    pub(super) last: Option<SignedCheckpoint>,
    pub(super) floor: Option<Floor>,
    last_at: Instant,
    /// The store changes of replayable groups not yet written (their index entries), which
    /// go with the next store write of the writer.
    held: Batch,
    /// When the oldest group not yet recorded in the store (tail and synced tree) committed.
    unrecorded_since: Option<Instant>,
    /// The log size up to which the tree file is synced and recorded as such.
    tree_synced: u64,
    /// The segment file the store's tail names. A group is replayable only in that file: open
    /// removes any file started after it.
    recorded_file: u64,
    /// The key that signs checkpoints, while unsealed. Kept under the state's lock so that the
    /// writer switches keys at the very entry that announces a new one (see [`rotation`]).
    ///
    /// [`rotation`]: super::rotation
    signer: Option<NoteSigner>,
    /// Set from an `audit.key_rotated` entry until its transition checkpoint is signed.
    retiring: Option<Retiring>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) origin: String,
    checkpoint_file: PathBuf,
    state: Mutex<State>,
    pub(super) stopped: AtomicBool,
    /// The witnesses checkpoints are sent to, if any are configured.
    witnesses: OnceLock<Arc<Witnesses>>,
    queued: AtomicUsize,
    /// The first live sequence number (see [`META_ARCHIVED`]).
    archived: AtomicU64,
    /// The entries' files.
    segments: Segments,
    /// The subtree hashes' file.
    tree: TreeFile,
    /// Where each durable group's entries go next (the usage thread), if anywhere.
    observer: Mutex<Option<Sender<Vec<Observation>>>>,
}

/// The audit log of one vault.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    witness_thread: Mutex<Option<JoinHandle<()>>>,
}

fn meta_u64(store: &Store, name: &[u8]) -> Result<Option<u64>> {
    store
        .get(Space::Meta, name)?
        .map(|bytes| decode_meta_u64(name, &bytes))
        .transpose()
}

/// The u64 BE value of meta record `name`.
pub(crate) fn decode_meta_u64(name: &[u8], bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{} is malformed", String::from_utf8_lossy(name))))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The id of subtree `(level, index)` in the store's node space, where formats 1 and 2 kept
/// the tree and backups carry it: level u8 | index u64 BE.
pub(crate) fn node_id(level: u8, index: u64) -> [u8; 9] {
    let mut id = [0u8; 9];
    id[0] = level;
    id[1..].copy_from_slice(&index.to_be_bytes());
    id
}

/// The perfect-subtree hashes that make up `[0, size)`, largest first.
fn prefix_hashes(size: u64, mut get: impl FnMut(u8, u64) -> Result<Hash>) -> Result<Vec<Hash>> {
    let mut hashes = Vec::new();
    let mut offset = 0u64;
    for level in (0..64u8).rev() {
        if size & (1 << level) != 0 {
            hashes.push(get(level, offset >> level)?);
            offset += 1 << level;
        }
    }
    Ok(hashes)
}

fn seq_of(key: &[u8]) -> Result<u64> {
    let seq: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt("an audit key is malformed".into()))?;
    Ok(u64::from_be_bytes(seq))
}

pub(crate) fn index_value(first: u64, offset: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&first.to_be_bytes());
    v[8..].copy_from_slice(&offset.to_be_bytes());
    v
}

/// Adds entry `bytes` (the next one) to `frontier`, appends the subtree hashes it completes to
/// `nodes` (the tree file's next bytes), and every [`INDEX_EVERY`] entries stages its place
/// (`offset` in the file starting at `file`) in `index`.
fn push_entry(
    frontier: &mut Frontier,
    nodes: &mut Vec<u8>,
    index: &mut Batch,
    bytes: &[u8],
    place: Option<(u64, u64)>,
) {
    let seq = frontier.size();
    for (_, _, hash) in frontier.push(merkle::leaf_hash(bytes)) {
        nodes.extend_from_slice(&hash);
    }
    if let Some((file, offset)) = place
        && seq.is_multiple_of(INDEX_EVERY)
    {
        index.insert(
            Space::AuditIndex,
            &seq.to_be_bytes(),
            &index_value(file, offset),
        );
    }
}

/// Copies a format-2 log's subtree hashes from the store into the tree file (the store's
/// copies are removed once the store records the file as synced). Returns `size`.
fn move_nodes_to_tree(store: &Store, tree: &TreeFile, size: u64) -> Result<u64> {
    let wanted = tree::nodes_in(size);
    let mut found = 0u64;
    for item in store.scan(Space::AuditNode) {
        let (key, hash) = item?;
        let bad = || Error::Corrupt("an audit tree node is malformed".into());
        // A `node_id`.
        let (&level, index) = key.split_first().ok_or_else(bad)?;
        let index = u64::from_be_bytes(index.try_into().map_err(|_| bad())?);
        if hash.len() != 32 {
            return Err(bad());
        }
        match tree::position(level, index) {
            Some(at) if at < wanted => {
                tree.write(at, &hash)?;
                found += 1;
            }
            _ => {}
        }
    }
    if found != wanted {
        return Err(Error::Corrupt(format!(
            "the audit tree of {size} entries should have {wanted} subtree hashes but the store holds {found}"
        )));
    }
    tree.cut(wanted)?;
    tree.sync()?;
    let mut batch = Batch::default();
    batch.insert(Space::Meta, META_TREE, &size.to_be_bytes());
    store.apply(batch)?;
    if size > 0 {
        tracing::info!(entries = size, "moved the audit tree into its node file");
    }
    Ok(size)
}

/// Brings the tree file up to the log: its nodes from `synced` on are computed again from the
/// committed entries, then from the `replayed` ones (taken back past the stored `tail`), and
/// anything past them is cut. The file is then synced and the store records it, with the tail
/// that commits the replayed entries. Returns the frontier and that tail.
fn rebuild_tree(
    store: &Store,
    segments: &Segments,
    tree: &TreeFile,
    synced: u64,
    tail: Tail,
    replayed: &[segment::Replayed],
) -> Result<(Frontier, Tail)> {
    if synced > tail.size {
        return Err(Error::Corrupt(format!(
            "the audit tree is recorded as synced to {synced} entries but the log holds {}",
            tail.size
        )));
    }
    let hashes = prefix_hashes(synced, |level, index| tree.node(level, index))?;
    let mut frontier = Frontier::from_parts(synced, hashes)
        .map_err(|e| Error::Corrupt(format!("the audit frontier: {e}")))?;
    let mut nodes = Vec::new();
    let mut index = Batch::default();
    for item in read_range(store, segments, synced, tail.size) {
        let (_, bytes) = item?;
        push_entry(&mut frontier, &mut nodes, &mut index, &bytes, None);
    }
    if frontier.size() != tail.size {
        return Err(Error::Corrupt(format!(
            "audit entries {}..{} are missing",
            frontier.size(),
            tail.size
        )));
    }
    let mut len = tail.len;
    for (offset, bytes) in replayed {
        let place = Some((tail.active, *offset));
        push_entry(&mut frontier, &mut nodes, &mut index, bytes, place);
        len = offset + segment::RECORD_HEADER + bytes.len() as u64;
    }
    let size = frontier.size();
    let tail = Tail { size, len, ..tail };
    if size != synced || tree.hashes()? != tree::nodes_in(size) {
        tree.write(tree::nodes_in(synced), &nodes)?;
        tree.cut(tree::nodes_in(size))?;
        tree.sync()?;
        index.insert(Space::Meta, META_TREE, &size.to_be_bytes());
        index.insert(Space::Meta, META_TAIL, &tail.encode());
        store.apply(index)?;
    }
    if !replayed.is_empty() {
        tracing::info!(
            entries = replayed.len(),
            "took back the audit entries synced after the store last recorded the log's end"
        );
    }
    Ok((frontier, tail))
}

/// A reader of the committed entries `[from, end)`: it starts in the file holding `from`, at
/// the indexed entry nearest below it if that is in the same file, else at the file's start.
fn read_range<'a>(store: &Store, segments: &'a Segments, from: u64, end: u64) -> Reader<'a> {
    let Some((first, _)) = segments.holding(from) else {
        return Reader::new(segments, from, 0, from, from, end.min(from));
    };
    let indexed = store
        .floor(Space::AuditIndex, &from.to_be_bytes())
        .ok()
        .flatten()
        .and_then(|(key, value)| {
            let at = seq_of(&key).ok()?;
            let value: [u8; 16] = value.as_slice().try_into().ok()?;
            let file = u64::from_be_bytes(value[..8].try_into().ok()?);
            let offset = u64::from_be_bytes(value[8..].try_into().ok()?);
            (file == first && at >= first).then_some((offset, at))
        });
    let (offset, at) = indexed.unwrap_or((0, first));
    Reader::new(segments, first, offset, at, from, end)
}

/// Starts the segment files of a log that has none: a new vault's, or a format-1 vault's,
/// whose entries are in the store. Copies those into the first file and commits it (see
/// [`FirstSegment`]); until that commit the directory counts for nothing, so an interrupted
/// move starts over at the next open. The store's copies are removed afterwards, at open.
fn start_segments(store: &Store, dir: &Path) -> Result<Tail> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(crate::error::io(|| {
            format!("removing the unfinished {}", dir.display())
        }))?;
    }
    let mut segment = FirstSegment::create(dir, 0)?;
    for item in store.scan(Space::Audit) {
        let (key, bytes) = item?;
        segment.push(seq_of(&key)?, &bytes)?;
    }
    let tail = segment.commit(store, Batch::default())?;
    if tail.size > 0 {
        tracing::info!(
            entries = tail.size,
            "moved the audit log into its segment files"
        );
    }
    Ok(tail)
}

/// Writes the first segment file of a log from its entries, given in sequence order, then
/// commits its tail and entry index: a format-1 vault's log moved out of the store, or a
/// restored one. Until the commit the file counts for nothing.
pub(crate) struct FirstSegment {
    path: PathBuf,
    out: BufWriter<File>,
    first: u64,
    next: u64,
    len: u64,
    index: Batch,
    record: Vec<u8>,
}

impl FirstSegment {
    /// Creates the file for entries from `first` on in `dir` (made 0700 if missing).
    pub(crate) fn create(dir: &Path, first: u64) -> Result<FirstSegment> {
        crate::datadir::create_private_dir(dir)?;
        let path = dir.join(segment::file_name(first));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(crate::error::io(|| format!("creating {}", path.display())))?;
        Ok(FirstSegment {
            path,
            out: BufWriter::new(file),
            first,
            next: first,
            len: 0,
            index: Batch::default(),
            record: Vec::new(),
        })
    }

    /// The entries written so far: `[first, next)`.
    pub(crate) fn range(&self) -> (u64, u64) {
        (self.first, self.next)
    }

    /// Appends entry `seq`, which must follow the last one.
    pub(crate) fn push(&mut self, seq: u64, bytes: &[u8]) -> Result<()> {
        if seq != self.next {
            return Err(Error::Corrupt(format!(
                "the audit log skips from entry {} to {seq}",
                self.next
            )));
        }
        if seq.is_multiple_of(INDEX_EVERY) {
            self.index.insert(
                Space::AuditIndex,
                &seq.to_be_bytes(),
                &index_value(self.first, self.len),
            );
        }
        self.record.clear();
        segment::frame(&mut self.record, bytes, false);
        self.out
            .write_all(&self.record)
            .map_err(crate::error::io(|| {
                format!("writing {}", self.path.display())
            }))?;
        self.len += self.record.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Syncs the file and its directory, then applies `batch` with the file's index and the
    /// tail naming it.
    pub(crate) fn commit(self, store: &Store, mut batch: Batch) -> Result<Tail> {
        let path = self.path;
        let file = self.out.into_inner().map_err(|e| {
            crate::error::io(|| format!("writing {}", path.display()))(e.into_error())
        })?;
        file.sync_all()
            .map_err(crate::error::io(|| format!("syncing {}", path.display())))?;
        if let Some(dir) = path.parent() {
            crate::datadir::sync_dir(dir)?;
        }
        let tail = Tail {
            size: self.next,
            active: self.first,
            len: self.len,
        };
        batch.extend(self.index);
        batch.insert(Space::Meta, META_TAIL, &tail.encode());
        store.apply(batch)?;
        Ok(tail)
    }
}

/// Removes, a chunk at a time, the store's keys of `space` below `upto` (keys that are
/// sequence numbers).
fn remove_keys_below(store: &Store, space: Space, upto: u64) -> Result<u64> {
    remove_keys_while(store, space, |key| Ok(seq_of(key)? < upto))
}

/// Removes, a chunk at a time, the store's keys of `space` from its first on, as long as
/// `doomed` says so; returns how many.
pub(crate) fn remove_keys_while(
    store: &Store,
    space: Space,
    doomed: impl Fn(&[u8]) -> Result<bool>,
) -> Result<u64> {
    let mut removed = 0;
    loop {
        let mut batch = Batch::default();
        let mut n = 0;
        for item in store.scan(space) {
            let (key, _) = item?;
            if n == DROP_CHUNK || !doomed(&key)? {
                break;
            }
            batch.remove(space, &key);
            n += 1;
        }
        if n == 0 {
            return Ok(removed);
        }
        store.apply(batch)?;
        removed += n as u64;
    }
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
    /// files of `segment_dir`, and starts its writer thread. A format-1 log (entries in the
    /// store) is moved into segment files first.
    pub fn open(
        store: Store,
        segment_dir: &Path,
        origin: String,
        checkpoint_file: PathBuf,
    ) -> Result<AuditLog> {
        let archived = meta_u64(&store, META_ARCHIVED)?.unwrap_or(0);
        let tail = match store.get(Space::Meta, META_TAIL)? {
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
        let last = match store.get(Space::Meta, META_CHECKPOINT)? {
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
        let shared = Arc::new(Shared {
            store,
            origin,
            checkpoint_file,
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
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("keyvault-audit".into())
            .spawn(move || writer_shared.run(rx))
            .map_err(|e| Error::Io {
                context: "starting the audit writer thread".into(),
                source: e,
            })?;
        Ok(AuditLog {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
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
        batch.insert(Space::Meta, META_ARCHIVE_SHA256, &value);
        batch.remove(Space::Meta, META_ARCHIVE_WRITTEN);
        Ok(self.shared.store.apply(batch)?)
    }

    /// The end and the SHA-256 of the last archive written in full.
    pub fn last_archive_written(&self) -> Result<Option<(u64, ArchiveDigest)>> {
        let Some(bytes) = self.shared.store.get(Space::Meta, META_ARCHIVE_SHA256)? else {
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
            batch.insert(Space::Meta, META_ARCHIVED, &upto.to_be_bytes());
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
            &self.shared,
            self.shared.witnesses.get().map(|w| &**w),
            verifiers,
            &self.shared.checkpoint_file,
        )
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
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
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

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is replaced only after a successful batch; a panic leaves the old state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn node(&self, level: u8, index: u64) -> Result<Hash> {
        self.tree.node(level, index)
    }

    /// The entries committed now, from `from` or the first live one.
    fn committed_entries(&self, from: u64) -> Reader<'_> {
        let end = self.lock().frontier.size();
        self.reader(from.max(self.archived.load(Ordering::Acquire)), end)
    }

    /// A reader of the committed entries `[from, end)` (see [`read_range`]).
    fn reader(&self, from: u64, end: u64) -> Reader<'_> {
        read_range(&self.store, &self.segments, from, end)
    }

    fn run(self: Arc<Self>, rx: Receiver<Msg>) {
        let mut held: Option<Msg> = None;
        let mut last_group = 0;
        loop {
            let first = match held.take() {
                Some(msg) => msg,
                None => match rx.recv_timeout(RECORD_EVERY.min(CHECKPOINT_EVERY)) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        last_group = 0;
                        self.checkpoint_quietly(false);
                        self.record_quietly(false);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut jobs = match first {
                Msg::Commit(job) => vec![job],
                Msg::Roll(reply) => {
                    let _ = reply.send(self.roll());
                    continue;
                }
            };
            let gather_until = Instant::now() + GATHER;
            while jobs.len() < MAX_GROUP {
                let next = if jobs.len() < last_group {
                    match gather_until.checked_duration_since(Instant::now()) {
                        Some(wait) => rx.recv_timeout(wait).map_err(|_| ()),
                        None => rx.try_recv().map_err(|_| ()),
                    }
                } else {
                    rx.try_recv().map_err(|_| ())
                };
                match next {
                    Ok(Msg::Commit(job)) => jobs.push(job),
                    Ok(roll) => {
                        held = Some(roll);
                        break;
                    }
                    Err(()) => break,
                }
            }
            last_group = jobs.len();
            self.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
            self.commit_group(jobs);
            self.checkpoint_quietly(false);
            self.record_quietly(false);
        }
        self.checkpoint_quietly(true);
        self.record_quietly(true);
        if let Err(e) = self.segments.trim() {
            tracing::warn!(error = %e, "cutting the audit segment's allocated space failed");
        }
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
    fn record(&self, state: &mut State) -> Result<()> {
        self.tree.sync()?;
        let size = state.frontier.size();
        let (active, len) = self.segments.position();
        let mut batch = state.held.clone();
        batch.insert(Space::Meta, META_TAIL, &Tail { size, active, len }.encode());
        batch.insert(Space::Meta, META_TREE, &size.to_be_bytes());
        self.store.apply(batch)?;
        state.held = Batch::default();
        state.unrecorded_since = None;
        state.tree_synced = size;
        state.recorded_file = active;
        Ok(())
    }

    /// Starts a new segment file at the current size, commits the tail naming it, and signs a
    /// checkpoint of that size.
    fn roll(&self) -> Result<SignedCheckpoint> {
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

    fn commit_group(&self, jobs: Vec<Job>) {
        let mut state = self.lock();
        if self.stopped.load(Ordering::Relaxed) {
            for job in jobs {
                job.reply.send(Err(Error::AuditUnavailable(
                    "the audit log is stopped after an integrity failure".into(),
                )));
            }
            return;
        }
        let mut frontier = state.frontier.clone();
        let time_ms = now_ms();
        let mut batch = Batch::default();
        let mut index = Batch::default();
        let mut nodes = Vec::with_capacity(jobs.len() * 2 * 32);
        let first_node = tree::nodes_in(frontier.size());
        let mut replies = Vec::with_capacity(jobs.len());
        let fail = |replies: Vec<(u64, Reply)>, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "audit commit failed: the operations of this group fail");
            for (_, reply) in replies {
                reply.send(Err(Error::AuditUnavailable(
                    "the audit log could not be written".into(),
                )));
            }
        };
        let (mut file, mut start) = self.segments.position();
        if start >= SEGMENT_BYTES {
            match self.segments.roll(frontier.size()) {
                Ok(()) => (file, start) = self.segments.position(),
                Err(e) => {
                    let replies = jobs.into_iter().map(|j| (0, j.reply)).collect();
                    return fail(replies, &e);
                }
            }
        }
        let mut records = Vec::with_capacity(jobs.len() * 512);
        let mut observer = self.observer.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = Vec::with_capacity(if observer.is_some() { jobs.len() } else { 0 });
        // A group whose jobs change nothing but the log is replayable: the segment's fdatasync
        // alone makes it durable, and the store learns of it later (see `record`). A new
        // segment file must be named by a tail in the store first (after a roll, here or in
        // `roll`, groups write the tail until one succeeds).
        let replayable = file == state.recorded_file && jobs.iter().all(|job| job.batch.is_empty());
        let mut rotated: Option<(u64, Box<NewSigner>)> = None;
        for job in jobs {
            let seq = frontier.size();
            let mut entry = job.entry;
            let bytes = entry.finish(seq, time_ms);
            if let Some(new) = job.rotation {
                // Not replayable: the job's batch holds the keyring.
                let mut rotations = match rotation::read(&self.store) {
                    Ok(r) => r,
                    Err(e) => {
                        replies.push((seq, job.reply));
                        return fail(replies, &e);
                    }
                };
                rotations.push(KeyRotation {
                    generation: new.generation,
                    seq,
                    public_key: new.signer.verifier().to_string(),
                    checkpoint: None,
                    entry: String::from_utf8_lossy(&bytes).into_owned(),
                });
                batch.insert(Space::Meta, META_ROTATIONS, &rotation::encode(&rotations));
                rotated = Some((seq, new));
            }
            if observer.is_some() {
                entries.push(entry.observation);
            }
            let place = Some((file, start + records.len() as u64));
            push_entry(&mut frontier, &mut nodes, &mut index, &bytes, place);
            segment::frame(&mut records, &bytes, replayable);
            batch.extend(job.batch);
            replies.push((seq, job.reply));
        }
        let len = start + records.len() as u64;
        // The tree's nodes first (a failure there leaves no record behind) and unsynced (they
        // are rebuilt from the entries if lost); the entries are durable before the batch that
        // commits them and their state changes.
        if let Err(e) = self
            .tree
            .write(first_node, &nodes)
            .and_then(|()| self.segments.append(&records))
        {
            self.segments.abandon();
            return fail(replies, &e);
        }
        let applied = if replayable {
            state.held.extend(index);
            Ok(())
        } else {
            let tail = Tail {
                size: frontier.size(),
                active: file,
                len,
            };
            let mut store_batch = state.held.clone();
            store_batch.extend(index);
            store_batch.extend(batch);
            store_batch.insert(Space::Meta, META_TAIL, &tail.encode());
            self.store.apply(store_batch).map_err(Error::from)
        };
        match applied {
            Ok(()) => {
                if !replayable {
                    state.held = Batch::default();
                    state.recorded_file = file;
                }
                state.unrecorded_since.get_or_insert_with(Instant::now);
                self.segments.committed(len);
                state.frontier = frontier;
                // Sealed meanwhile (never while a rotation runs, which holds the vault's admin
                // lock): the next unseal sets the signers from the keyring and the record.
                if let Some((seq, new)) = rotated
                    && let Some(old) = state.signer.take()
                {
                    state.signer = Some(new.signer);
                    state.retiring = Some(Retiring { seq, signer: old });
                }
                for (seq, reply) in replies {
                    reply.send(Ok(seq));
                }
                if let Some(tx) = observer.as_ref()
                    && tx.send(entries).is_err()
                {
                    *observer = None;
                }
            }
            Err(e) => {
                self.segments.abandon();
                fail(replies, &e);
            }
        }
    }

    fn checkpoint_quietly(&self, force: bool) {
        if let Err(e) = self.checkpoint(force) {
            tracing::error!(error = %e, "signing an audit checkpoint failed");
        }
    }

    /// Signs a checkpoint if there is a signer and something new (at most once a second unless
    /// `force`).
    fn checkpoint(&self, force: bool) -> Result<()> {
        let mut state = self.lock();
        if state.signer.is_none() {
            return Ok(());
        }
        let size = state.frontier.size();
        let last_size = state.last.as_ref().map(|l| l.checkpoint.size);
        if last_size == Some(size) || (!force && state.last_at.elapsed() < CHECKPOINT_EVERY) {
            return Ok(());
        }
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Error::AuditUnavailable(
                "the audit log is stopped after an integrity failure".into(),
            ));
        }
        let root = state.frontier.root();
        if let Some(why) = self.check_integrity(&state, root)? {
            self.stopped.store(true, Ordering::Relaxed);
            tracing::error!(%why, "AUDIT LOG INTEGRITY FAILURE: the stored log no longer matches its tree; the log is stopped and no checkpoint is signed");
            return Err(Error::AuditUnavailable(format!(
                "integrity check failed: {why}"
            )));
        }
        if let Some(floor) = state.floor {
            let extends = size >= floor.size
                && floor.root.is_none_or(|r| {
                    merkle::root_at(floor.size, |l, i| self.node(l, i)).is_ok_and(|ours| ours == r)
                });
            if !extends {
                let e = Error::RolledBack(format!(
                    "the log of size {size} does not extend the checkpoint of size {} seen \
                     before; no checkpoint is signed",
                    floor.size
                ));
                self.stop_for(&e);
                return Err(e);
            }
        }
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        };
        let signing =
            |e: super::note::NoteError| Error::Corrupt(format!("signing a checkpoint: {e}"));
        let text = checkpoint.to_note_text();
        // Invariant: checked at the top, under the same lock.
        let signer = state.signer.as_ref().expect("a signer is set");
        let mut batch = Batch::default();
        let transition = state.retiring.as_ref().filter(|r| size > r.seq);
        let note = match transition {
            // The transition checkpoint: the old key, then the new one.
            Some(retiring) => {
                let old = retiring.signer.sign(&text).map_err(signing)?;
                let mut rotations = rotation::read(&self.store)?;
                if let Some(r) = rotations.iter_mut().find(|r| r.seq == retiring.seq) {
                    r.checkpoint = Some(size);
                }
                batch.insert(Space::Meta, META_ROTATIONS, &rotation::encode(&rotations));
                signer.add_signature(&old).map_err(signing)?
            }
            None => signer.sign(&text).map_err(signing)?,
        };
        let transition = transition.is_some();
        batch.insert(Space::Checkpoint, &size.to_be_bytes(), note.as_bytes());
        batch.insert(Space::Meta, META_CHECKPOINT, &size.to_be_bytes());
        self.store.apply(batch)?;
        if transition {
            state.retiring = None;
        }
        self.append_to_file(&note)?;
        state.last = Some(SignedCheckpoint { checkpoint, note });
        state.last_at = Instant::now();
        drop(state);
        if let Some(witnesses) = self.witnesses.get() {
            witnesses.notify();
        }
        Ok(())
    }

    /// Stored tree against the last checkpoint and the frontier; new entries against their
    /// stored leaf hashes. `Ok(Some(why))` is a mismatch (tampering or corruption: the log must
    /// stop); an `Err` only means the store could not be read now (a full disk, say), which
    /// stops nothing: the checkpoint is simply not signed this time.
    fn check_integrity(&self, state: &State, root: Hash) -> Result<Option<String>> {
        let mismatch = |e: Error| match e {
            Error::Corrupt(why) => Ok(Some(why)),
            other => Err(other),
        };
        let size = state.frontier.size();
        let get = |level: u8, index: u64| self.node(level, index);
        let stored = match merkle::root_at(size, get) {
            Ok(root) => root,
            Err(e) => return mismatch(e),
        };
        if stored != root {
            return Ok(Some(format!(
                "the stored tree of size {size} does not match the frontier"
            )));
        }
        let from = match &state.last {
            None => 0,
            Some(last) => {
                let old = match merkle::root_at(last.checkpoint.size, get) {
                    Ok(root) => root,
                    Err(e) => return mismatch(e),
                };
                if old != last.checkpoint.root {
                    return Ok(Some(format!(
                        "the stored tree no longer extends the checkpoint of size {}",
                        last.checkpoint.size
                    )));
                }
                last.checkpoint.size
            }
        };
        // The stored leaves of the new entries, in one read of the tree file.
        let mut leaves = Vec::with_capacity((size - from).min(1 << 20) as usize);
        let read = self.tree.for_each_from(from, size, |level, _, hash| {
            if level == 0 {
                leaves.push(*hash);
            }
            Ok(())
        });
        if let Err(e) = read {
            return mismatch(e);
        }
        let mut next = from;
        for (item, leaf) in self.reader(from, size).zip(leaves) {
            let (seq, bytes) = match item {
                Ok(entry) => entry,
                Err(e) => return mismatch(e),
            };
            next = seq + 1;
            if merkle::leaf_hash(&bytes) != leaf {
                return Ok(Some(format!(
                    "entry {seq} does not match its stored leaf hash"
                )));
            }
        }
        if next < size {
            return Ok(Some(format!("entries {next}..{size} are missing")));
        }
        Ok(None)
    }

    /// Appends a checkpoint to the checkpoint file: one JSON line per checkpoint.
    pub(super) fn append_to_file(&self, note: &str) -> Result<()> {
        let path = &self.checkpoint_file;
        let line = serde_json::json!({ "checkpoint": note }).to_string() + "\n";
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(crate::error::io(|| format!("opening {}", path.display())))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(crate::error::io(|| format!("writing {}", path.display())))
    }
}
