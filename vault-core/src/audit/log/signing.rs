//! Checkpoint signing and the log's integrity: before each checkpoint the stored tree is
//! checked against the last checkpoint and the frontier, and the new entries against their
//! stored leaves; a mismatch stops the log. Also the floor (see `witnessing`), the
//! cosignatures the witnesses add, and the checkpoint file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::checkpoint::{Floor, SignedCheckpoint};
use super::state::{Shared, State};
use super::witnessing::WitnessedLog;
use crate::audit::cosignature::add_signatures;
use crate::audit::merkle::{self, Hash};
use crate::audit::note::{self, Checkpoint, NoteError};
use crate::audit::rotation::{self, META_ROTATIONS};
use crate::storage::{Batch, Space, Store};
use crate::{Error, Result};

/// Checkpoints are signed at most this often while entries arrive.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
pub(super) const META_CHECKPOINT: &[u8] = b"audit-checkpoint";

impl Shared {
    pub(super) fn checkpoint_quietly(&self, force: bool) {
        if let Err(e) = self.checkpoint(force) {
            tracing::error!(error = %e, "signing an audit checkpoint failed");
        }
    }

    /// Signs a checkpoint if there is a signer and something new (at most once a second unless
    /// `force`).
    pub(super) fn checkpoint(&self, force: bool) -> Result<()> {
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
        let signing = |e: NoteError| Error::Corrupt(format!("signing a checkpoint: {e}"));
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
                batch.insert(Space::Local, META_ROTATIONS, &rotation::encode(&rotations));
                signer.add_signature(&old).map_err(signing)?
            }
            None => signer.sign(&text).map_err(signing)?,
        };
        let transition = transition.is_some();
        batch.insert(Space::Checkpoint, &size.to_be_bytes(), note.as_bytes());
        batch.insert(Space::Local, META_CHECKPOINT, &size.to_be_bytes());
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

impl WitnessedLog for Shared {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn latest(&self) -> Option<SignedCheckpoint> {
        self.lock().last.clone()
    }

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        Shared::node(self, level, index)
    }

    /// Raises the floor to the checkpoint of `size` (with `root`, if known) that `source`
    /// holds, after checking that the log extends it.
    fn raise_floor(&self, size: u64, root: Option<Hash>, source: &str) -> Result<()> {
        let mut state = self.lock();
        let have = state.frontier.size();
        if size > have {
            return Err(Error::RolledBack(format!(
                "{source} holds a checkpoint of size {size}, but the log has {have} entries: the \
                 data directory was rolled back (restore the newest copy, or its entries are lost)"
            )));
        }
        if let Some(root) = root {
            // Only where the tree still has the nodes (an archive may have dropped them).
            if let Ok(ours) = merkle::root_at(size, |l, i| self.node(l, i))
                && ours != root
            {
                return Err(Error::RolledBack(format!(
                    "{source} holds a checkpoint of size {size} whose root is not the log's at \
                     that size: the log was forked"
                )));
            }
        }
        let higher = state.floor.as_ref().is_none_or(|f| {
            size > f.size || (size == f.size && f.root.is_none() && root.is_some())
        });
        if higher {
            state.floor = Some(Floor { size, root });
        }
        Ok(())
    }

    /// Stops the log for `e`, loudly: no later commit or checkpoint until an operator looks.
    fn stop_for(&self, e: &Error) {
        self.stopped.store(true, Ordering::Relaxed);
        tracing::error!(error = %e, "AUDIT LOG ROLLBACK OR FORK: the log is stopped and no checkpoint is signed");
    }

    /// Adds cosignature `lines` to the stored checkpoint of `size`, the checkpoint file and the
    /// latest checkpoint if it is that one.
    fn add_cosignatures(&self, size: u64, lines: &str) -> Result<()> {
        let mut state = self.lock();
        let key = size.to_be_bytes();
        let Some(stored) = self.store.get(Space::Checkpoint, &key)? else {
            return Ok(());
        };
        let stored = String::from_utf8_lossy(&stored).into_owned();
        let note = add_signatures(&stored, lines);
        if note == stored {
            return Ok(());
        }
        // Still a well-formed note: the lines were checked by the caller.
        note::split(&note).map_err(|e| Error::Corrupt(format!("a cosigned checkpoint: {e}")))?;
        let mut batch = Batch::default();
        batch.insert(Space::Checkpoint, &key, note.as_bytes());
        self.store.apply(batch)?;
        self.append_to_file(&note)?;
        if let Some(last) = state.last.as_mut()
            && last.checkpoint.size == size
        {
            last.note = note;
        }
        Ok(())
    }
}
