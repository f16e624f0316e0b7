//! The audit log writer: group commit of state changes with their entries, the stored Merkle
//! tree, and checkpoint signing.
//!
//! Every operation hands its store changes and its [`Event`] to [`AuditLog::commit`] and waits.
//! One writer thread takes everything queued (up to [`MAX_GROUP`] jobs), gives each entry its
//! sequence number, appends the entries and the perfect-subtree hashes they complete to the same
//! store batch as the state changes, and applies that batch with one flush. (The frontier is not
//! stored: at open it is read back from the stored subtree hashes.)
//! Only then does any waiting operation get its answer, so a state change and its entry are
//! durable together or not at all, and durability costs one flush per group, not per request.
//! If the batch fails, every operation of the group gets [`Error::AuditUnavailable`] and the
//! in-memory tree is left as it was.
//!
//! While unsealed, the writer signs a checkpoint at most once a second while entries arrive,
//! and on seal and on every export. Before signing it checks that the stored tree still holds
//! the last checkpoint's root and the frontier's root, and that the entries appended since hash
//! to the stored leaves. A mismatch stops the log: every later commit fails until an operator
//! looks.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::entry::{Entry, Event};
use super::merkle::{self, Frontier, Hash};
use super::note::{Checkpoint, NoteSigner};
use crate::context::Context;
use crate::storage::{Batch, Space, Store};
use crate::usage::Observation;
use crate::{Error, Result};

/// Most jobs committed in one group.
pub const MAX_GROUP: usize = 1024;
/// Checkpoints are signed at most this often while entries arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

const META_CHECKPOINT: &[u8] = b"audit-checkpoint";

struct Job {
    batch: Batch,
    event: Event,
    ctx: Context,
    reply: SyncSender<Result<u64>>,
}

/// The latest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its signed-note text.
    pub note: String,
}

#[derive(Debug)]
struct State {
    frontier: Frontier,
    last: Option<SignedCheckpoint>,
    last_at: Instant,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    origin: String,
    checkpoint_file: PathBuf,
    state: Mutex<State>,
    signer: RwLock<Option<NoteSigner>>,
    stopped: AtomicBool,
    queued: AtomicUsize,
    /// Where each durable group's entries go next (the usage thread), if anywhere.
    observer: Mutex<Option<Sender<Vec<Observation>>>>,
}

/// The audit log of one vault.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn node_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The frontier of the stored log, from its perfect-subtree hashes: the size is one past the
/// last entry's sequence number, and each set bit of the size is a stored subtree (largest
/// first). Nothing is rehashed.
fn stored_frontier(store: &Store) -> Result<Frontier> {
    let size = match store.last(Space::Audit)? {
        None => 0,
        Some((seq, _)) => {
            let seq: [u8; 8] = seq
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("an audit entry key is malformed".into()))?;
            u64::from_be_bytes(seq) + 1
        }
    };
    let mut hashes = Vec::new();
    let mut offset = 0u64;
    for level in (0..64u8).rev() {
        if size & (1 << level) != 0 {
            let bytes = store
                .get(Space::AuditNode, &node_key(level, offset >> level))?
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "audit tree node ({level}, {}) is missing",
                        offset >> level
                    ))
                })?;
            hashes.push(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("an audit tree node is malformed".into()))?,
            );
            offset += 1 << level;
        }
    }
    Frontier::from_parts(size, hashes)
        .map_err(|e| Error::Corrupt(format!("the audit frontier: {e}")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AuditLog {
    /// Opens the log stored in `store` and starts its writer thread.
    pub fn open(store: Store, origin: String, checkpoint_file: PathBuf) -> Result<AuditLog> {
        let frontier = stored_frontier(&store)?;
        let last = match store.get(Space::Meta, META_CHECKPOINT)? {
            None => None,
            Some(size) => {
                let note = store
                    .get(Space::Checkpoint, &size)?
                    .ok_or_else(|| Error::Corrupt("the last audit checkpoint is missing".into()))?;
                let note = String::from_utf8(note)
                    .map_err(|_| Error::Corrupt("an audit checkpoint is not UTF-8".into()))?;
                let text = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
                let checkpoint = Checkpoint::parse_note_text(&text)
                    .map_err(|e| Error::Corrupt(format!("the last audit checkpoint: {e}")))?;
                Some(SignedCheckpoint { checkpoint, note })
            }
        };
        let shared = Arc::new(Shared {
            store,
            origin,
            checkpoint_file,
            state: Mutex::new(State {
                frontier,
                last,
                last_at: Instant::now(),
            }),
            signer: RwLock::new(None),
            stopped: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
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
        })
    }

    /// Commits `batch` and the entry for `event` together; returns the entry's sequence number
    /// once both are durable.
    pub fn commit(&self, ctx: &Context, batch: Batch, event: Event) -> Result<u64> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            batch,
            event,
            ctx: ctx.clone(),
            reply,
        };
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let tx = tx
                .as_ref()
                .ok_or_else(|| Error::AuditUnavailable("the audit log is closed".into()))?;
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
            tx.send(job)
                .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))?;
        }
        answer
            .recv()
            .map_err(|_| Error::AuditUnavailable("the audit writer stopped".into()))?
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

    /// Entries in the log.
    pub fn size(&self) -> u64 {
        self.shared.lock().frontier.size()
    }

    /// The checkpoint signer's origin (also the key name).
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// Sets (on unseal) or clears (on seal) the key that signs checkpoints.
    pub fn set_signer(&self, signer: Option<NoteSigner>) {
        *self
            .shared
            .signer
            .write()
            .unwrap_or_else(|e| e.into_inner()) = signer;
    }

    /// Signs a checkpoint of the whole log now (unless the last one already covers it) and
    /// returns the latest. [`Error::Sealed`] without a signer.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint> {
        self.shared.checkpoint(true)?;
        self.shared.lock().last.clone().ok_or(Error::Sealed)
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

    /// The stored entry bytes at `seq`.
    pub fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.shared.store.get(Space::Audit, &seq.to_be_bytes())?)
    }

    /// Entries from `from` in sequence order, as `(seq, bytes)`.
    pub fn entries(&self, from: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + use<> {
        self.shared
            .store
            .scan_from(Space::Audit, &from.to_be_bytes())
            .map(|item| {
                let (k, v) = item?;
                let seq: [u8; 8] = k
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("an audit entry key is malformed".into()))?;
                Ok((u64::from_be_bytes(seq), v))
            })
    }

    /// Stops the writer after the queued jobs; later commits fail.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is replaced only after a successful batch; a panic leaves the old state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        let bytes = self
            .store
            .get(Space::AuditNode, &node_key(level, index))?
            .ok_or_else(|| {
                Error::Corrupt(format!("audit tree node ({level}, {index}) is missing"))
            })?;
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt(format!("audit tree node ({level}, {index}) is malformed")))
    }

    fn run(self: Arc<Self>, rx: Receiver<Job>) {
        loop {
            let first = match rx.recv_timeout(CHECKPOINT_EVERY) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint_quietly(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
            self.commit_group(jobs);
            self.checkpoint_quietly(false);
        }
        self.checkpoint_quietly(true);
    }

    fn commit_group(&self, jobs: Vec<Job>) {
        let mut state = self.lock();
        if self.stopped.load(Ordering::Relaxed) {
            for job in jobs {
                let _ = job.reply.send(Err(Error::AuditUnavailable(
                    "the audit log is stopped after an integrity failure".into(),
                )));
            }
            return;
        }
        let mut frontier = state.frontier.clone();
        let time_ms = now_ms();
        let mut batch = Batch::default();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut observer = self.observer.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = Vec::with_capacity(if observer.is_some() { jobs.len() } else { 0 });
        for job in jobs {
            let seq = frontier.size();
            let entry = Entry::new(seq, time_ms, job.event, &job.ctx);
            let bytes = entry.to_bytes();
            if observer.is_some() {
                entries.push(Observation::from(entry));
            }
            for (level, index, hash) in frontier.push(merkle::leaf_hash(&bytes)) {
                batch.insert(Space::AuditNode, &node_key(level, index), &hash);
            }
            batch.insert(Space::Audit, &seq.to_be_bytes(), &bytes);
            batch.extend(job.batch);
            replies.push((seq, job.reply));
        }
        match self.store.apply(batch) {
            Ok(()) => {
                state.frontier = frontier;
                for (seq, reply) in replies {
                    let _ = reply.send(Ok(seq));
                }
                if let Some(tx) = observer.as_ref()
                    && tx.send(entries).is_err()
                {
                    *observer = None;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit commit failed: the operations of this group fail");
                for (_, reply) in replies {
                    let _ = reply.send(Err(Error::AuditUnavailable(
                        "the audit log could not be written".into(),
                    )));
                }
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
        let signer = self.signer.read().unwrap_or_else(|e| e.into_inner());
        let Some(signer) = signer.as_ref() else {
            return Ok(());
        };
        let mut state = self.lock();
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
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        };
        let note = signer
            .sign(&checkpoint.to_note_text())
            .map_err(|e| Error::Corrupt(format!("signing a checkpoint: {e}")))?;
        let mut batch = Batch::default();
        batch.insert(Space::Checkpoint, &size.to_be_bytes(), note.as_bytes());
        batch.insert(Space::Meta, META_CHECKPOINT, &size.to_be_bytes());
        self.store.apply(batch)?;
        self.append_to_file(&note)?;
        state.last = Some(SignedCheckpoint { checkpoint, note });
        state.last_at = Instant::now();
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
        for seq in from..size {
            let Some(bytes) = self.store.get(Space::Audit, &seq.to_be_bytes())? else {
                return Ok(Some(format!("entry {seq} is missing")));
            };
            let leaf = match self.node(0, seq) {
                Ok(leaf) => leaf,
                Err(e) => return mismatch(e),
            };
            if merkle::leaf_hash(&bytes) != leaf {
                return Ok(Some(format!(
                    "entry {seq} does not match its stored leaf hash"
                )));
            }
        }
        Ok(None)
    }

    /// Appends a checkpoint to the checkpoint file: one JSON line per checkpoint.
    fn append_to_file(&self, note: &str) -> Result<()> {
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
