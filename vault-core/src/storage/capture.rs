//! The change capture of online backups (see the [module doc](super)).

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::space::{Batch, StorageError};

/// Bytes of captured changes kept in memory before they spill to a temporary file.
pub const CAPTURE_MEMORY: usize = 4 * 1024 * 1024;

/// A running change capture (see the module doc). Dropping it without [`Capture::finish`]
/// ends it and throws its changes away.
#[derive(Debug)]
pub struct Capture {
    /// The store's write lock, which holds this capture's log while it runs.
    writes: Arc<Writes>,
}

/// One captured change: `key` (space byte first) set to `value`, or removed (`None`).
pub type CapturedOp = (Vec<u8>, Option<Vec<u8>>);

impl Capture {
    /// Registers a new capture in `writes` (a store's), its spill file to go in `spill_dir`;
    /// `None` if one is running already.
    pub(super) fn start(writes: &Arc<Writes>, spill_dir: &Path) -> Option<Capture> {
        let mut log = writes.lock();
        if log.is_some() {
            return None;
        }
        *log = Some(CaptureLog::new(spill_dir.to_path_buf()));
        Some(Capture {
            writes: Arc::clone(writes),
        })
    }

    /// Whether the capture has failed already (its owner can stop early: finishing will fail).
    pub fn has_failed(&self) -> bool {
        self.writes
            .lock()
            .as_ref()
            .is_none_or(|log| log.failed.is_some())
    }

    /// Ends the capture and returns what it captured, in apply order; an error if it failed
    /// (a write failed while it ran, or its spill file could not be written).
    pub fn finish(self) -> Result<CapturedOps, StorageError> {
        let log = self.writes.lock().take();
        let Some(log) = log else {
            return Err(capture_error("the capture was ended by another caller"));
        };
        if let Some(why) = log.failed {
            return Err(capture_error(&why));
        }
        let spill = match log.spill {
            None => None,
            Some(mut file) => {
                file.rewind()
                    .map_err(|e| capture_error(&format!("rereading the spill file: {e}")))?;
                Some(BufReader::new(file).take(log.spilled))
            }
        };
        Ok(CapturedOps {
            spill,
            memory: std::io::Cursor::new(log.memory),
            ops: log.ops,
            read: 0,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Already taken by `finish`, or an abandoned backup: either way nothing runs any more.
        self.writes.lock().take();
    }
}

fn capture_error(why: &str) -> StorageError {
    StorageError::other(std::io::Error::other(format!("change capture: {why}")))
}

/// The changes of a finished capture, read back in apply order.
#[derive(Debug)]
pub struct CapturedOps {
    spill: Option<std::io::Take<BufReader<File>>>,
    memory: std::io::Cursor<Vec<u8>>,
    ops: u64,
    read: u64,
}

impl CapturedOps {
    /// How many changes were captured.
    pub fn len(&self) -> u64 {
        self.ops
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    fn read_op(&mut self) -> std::io::Result<CapturedOp> {
        fn field(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let mut bytes = vec![0u8; u32::from_be_bytes(len) as usize];
            r.read_exact(&mut bytes)?;
            Ok(bytes)
        }
        fn op(r: &mut impl Read) -> std::io::Result<Option<CapturedOp>> {
            let mut tag = [0u8; 1];
            if r.read(&mut tag)? == 0 {
                return Ok(None);
            }
            let key = field(r)?;
            let value = if tag[0] == 1 { Some(field(r)?) } else { None };
            Ok(Some((key, value)))
        }
        if let Some(spill) = &mut self.spill {
            if let Some(op) = op(spill)? {
                return Ok(op);
            }
            self.spill = None;
        }
        op(&mut self.memory)?
            .ok_or_else(|| std::io::Error::other("the capture ended before its last change"))
    }
}

impl Iterator for CapturedOps {
    type Item = Result<CapturedOp, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.read == self.ops {
            return None;
        }
        self.read += 1;
        Some(
            self.read_op()
                .map_err(|e| capture_error(&format!("reading back a change: {e}"))),
        )
    }
}

/// The lock that serialises a store's writes, and the log of the capture running, if any.
#[derive(Debug, Default)]
pub(super) struct Writes(Mutex<Option<CaptureLog>>);

impl Writes {
    /// Takes the lock (a write holds it for its whole length).
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<CaptureLog>> {
        self.0.lock().unwrap_or_else(|poisoned| {
            // A write panicked holding the lock: it may be durable without being captured, so
            // the running capture (if any) can no longer be trusted. The store itself is as
            // the engine left it, and writes go on.
            let mut guard = poisoned.into_inner();
            if let Some(log) = guard.as_mut() {
                log.fail("a store write panicked while the backup ran");
            }
            self.0.clear_poison();
            guard
        })
    }
}

/// The capture's log: `tag (1: put, 0: remove) | key len u32 BE | key | [value len u32 BE |
/// value]` per change. Never leaves this process.
#[derive(Debug)]
pub(super) struct CaptureLog {
    memory: Vec<u8>,
    spill: Option<File>,
    spill_dir: PathBuf,
    spilled: u64,
    ops: u64,
    failed: Option<String>,
}

impl CaptureLog {
    /// An empty log whose spill file, once needed, goes in `spill_dir`.
    pub(super) fn new(spill_dir: PathBuf) -> CaptureLog {
        CaptureLog {
            memory: Vec::new(),
            spill: None,
            spill_dir,
            spilled: 0,
            ops: 0,
            failed: None,
        }
    }

    /// The log bytes of `batch`'s changes and their count.
    pub(super) fn encode(batch: &Batch) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut ops = 0;
        for (k, v) in batch.changes() {
            ops += 1;
            out.push(u8::from(v.is_some()));
            // Keys and values are far below 4 GiB: sled itself refuses larger ones.
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        (out, ops)
    }

    pub(super) fn fail(&mut self, why: &str) {
        if self.failed.is_none() {
            self.failed = Some(why.to_owned());
        }
        self.memory = Vec::new();
    }

    pub(super) fn append(&mut self, bytes: &[u8], ops: u64) {
        if self.failed.is_some() {
            return;
        }
        self.memory.extend_from_slice(bytes);
        self.ops += ops;
        if self.memory.len() >= CAPTURE_MEMORY
            && let Err(e) = self.spill()
        {
            self.fail(&format!(
                "spilling changes to a temporary file in {}: {e}",
                self.spill_dir.display()
            ));
        }
    }

    fn spill(&mut self) -> std::io::Result<()> {
        let file = match &mut self.spill {
            Some(file) => file,
            None => self.spill.insert(tempfile::tempfile_in(&self.spill_dir)?),
        };
        file.write_all(&self.memory)?;
        self.spilled += self.memory.len() as u64;
        self.memory.clear();
        Ok(())
    }
}
