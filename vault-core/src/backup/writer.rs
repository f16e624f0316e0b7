//! Writing a backup: the snapshot, the captured changes, the audit tree and entries, each
//! frame hashed into the trailer's digest (the format is in the module doc). On a cluster node
//! the snapshot's shared rows are read at one etcd revision and the file starts with a node
//! frame naming the node and the revision.

use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::format::{
    BackupReport, CLUSTER_FORMAT, HEADER_LEN, LogBounds, MAGIC, MAX_KEY, MAX_VALUE,
    ONE_HOST_FORMAT, PROGRESS_EVERY, TAG_END, TAG_ENTRY, TAG_NODE, TAG_PUT, TAG_REMOVE,
    TAG_SNAPSHOT,
};
use crate::audit::Event;
use crate::audit::log::{AuditLog, node_id};
use crate::clock::now;
use crate::context::Context;
use crate::datadir::FORMAT_VERSION;
use crate::shamir::VaultId;
use crate::storage::{Batch, Space, Store, is_shared_key};
use crate::usage::aggregate::Aggregate;
use crate::{Error, Result};

/// What a backup reads, handed over by the vault.
pub(crate) struct Source<'a> {
    /// The store, read whole and captured meanwhile.
    pub(crate) store: &'a Store,
    /// The audit log: its entries, its tree, and the backup's own entry.
    pub(crate) audit: &'a AuditLog,
    /// Where the change capture spills (the data directory).
    pub(crate) spill_dir: &'a Path,
    /// The vault's id, for the header.
    pub(crate) vault_id: VaultId,
    /// The live usage figures (none with usage off), taken when the backup asks.
    pub(crate) figures: &'a dyn Fn() -> Option<Aggregate>,
    /// Whether the usage figures live in their own file (usage on): then the backup carries
    /// the live ones in the store's old usage space instead of whatever that space holds.
    pub(crate) figures_apart: bool,
    /// On a cluster node, its id: the backup then holds the shared rows at one etcd revision
    /// and this node's own rows and log (format 2).
    pub(crate) node_id: Option<&'a str>,
}

/// Writes a consistent copy of the whole vault to `out` (see the module doc); `progress`
/// gets the count of frames written.
pub(crate) fn write(
    source: &Source<'_>,
    ctx: &Context,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupReport> {
    let capture = source
        .store
        .start_capture(source.spill_dir)
        .ok_or_else(|| {
            Error::Conflict("a backup is already running; wait for it to finish".into())
        })?;
    // On a cluster node the shared rows are read at one revision, picked after the capture
    // started: every change of this node's at or before it has its local part (its audit
    // entry) either in the scan below or in the capture (see the module doc).
    let (revision, rows) = source.store.scan_for_backup()?;
    let mut writer = FrameWriter::new(out);
    let cluster = match (source.node_id, revision) {
        (Some(node), Some(revision)) => Some((node, revision)),
        (None, None) => None,
        _ => {
            return Err(Error::Corrupt(
                "a cluster node's store without its node id, or the reverse".into(),
            ));
        }
    };
    let format = match cluster {
        Some(_) => CLUSTER_FORMAT,
        None => ONE_HOST_FORMAT,
    };
    writer.header(format, &source.vault_id, now())?;
    if let Some((node, revision)) = cluster {
        writer.frame(TAG_NODE, node.as_bytes(), Some(&revision.to_be_bytes()))?;
    }
    // The shared rows are those of the revision; this node's later changes to them are not.
    let skip_captured = |key: &[u8]| cluster.is_some() && is_shared_key(key);
    let mut records = 0u64;
    let mut log = LogBounds::default();
    let figures_apart = source.figures_apart;
    // With usage on, the backup carries the live figures (below) instead of that space.
    let in_usage_space = |key: &[u8]| figures_apart && key.first() == Some(&(Space::Usage as u8));
    for item in rows {
        let (key, value) = item?;
        if in_usage_space(&key) {
            continue;
        }
        log.see(&key, Some(&value));
        writer.frame(TAG_SNAPSHOT, &key, Some(&value))?;
        records += 1;
        if records.is_multiple_of(PROGRESS_EVERY) {
            if capture.has_failed() {
                // A write failed meanwhile: finishing would refuse the capture anyway.
                return Err(capture.finish().err().map_or_else(
                    || Error::AuditUnavailable("the backup's change capture failed".into()),
                    Error::from,
                ));
            }
            progress(records);
        }
    }
    // Inside the capture: the backup's own entry and, while unsealed, a checkpoint over it.
    let event = Event::new("sys.backup", "ok").detail("records", records);
    source.audit.commit(ctx, Batch::default(), event)?;
    let checkpoint_size = match source.audit.checkpoint() {
        Ok(signed) => Some(signed.checkpoint.size),
        Err(Error::Sealed) => None,
        Err(e) => return Err(e),
    };
    // The usage figures count only committed entries, so taken before the log's end is
    // recorded below, they cover no entry the backup lacks.
    let figures = (source.figures)();
    // The store learns of the log's end lazily; make it hold the end now, inside the capture.
    source.audit.record()?;
    let ops = capture.finish()?;
    let mut captured = 0;
    for (i, op) in ops.enumerate() {
        let op = op?;
        if in_usage_space(&op.0) || skip_captured(&op.0) {
            continue;
        }
        captured += 1;
        match op {
            (key, Some(value)) => {
                log.see(&key, Some(&value));
                writer.frame(TAG_PUT, &key, Some(&value))?;
            }
            (key, None) => {
                log.see(&key, None);
                writer.frame(TAG_REMOVE, &key, None)?;
            }
        }
        if (i as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            progress(records + i as u64 + 1);
        }
    }
    // The entries of the log as the store stood when the capture ended, and before them its
    // subtree hashes, as puts in the store's node space (the tree file is not in the store;
    // a restored vault moves them into its own tree file when it first opens).
    let (first, size) = log.bounds()?;
    let mut nodes = 0u64;
    source.audit.for_each_node(size, |level, index, hash| {
        let key = crate::storage::key(Space::AuditNode, &node_id(level, index));
        nodes += 1;
        writer.frame(TAG_PUT, &key, Some(hash))
    })?;
    // The usage figures, in the form a restored vault reads at its first open.
    let mut figures_frames = 0u64;
    if let Some(agg) = &figures {
        crate::usage::legacy::each(agg, |id, value| {
            figures_frames += 1;
            writer.frame(TAG_PUT, &crate::storage::key(Space::Usage, id), Some(value))
        })?;
    }
    let captured = captured + nodes + figures_frames;
    let mut next = first;
    for item in source.audit.entries(first) {
        let (seq, bytes) = item?;
        if seq >= size {
            break;
        }
        if seq != next {
            return Err(Error::Conflict(format!(
                "audit entries {next}..{seq} were archived while the backup ran; back up again"
            )));
        }
        writer.frame(TAG_ENTRY, &seq.to_be_bytes(), Some(&bytes))?;
        next += 1;
        if next.is_multiple_of(PROGRESS_EVERY) {
            progress(records + captured + next - first);
        }
    }
    if next != size {
        return Err(Error::Conflict(format!(
            "audit entries {next}..{size} could not be read while the backup ran; back up again"
        )));
    }
    let entries = size - first;
    let (bytes, sha256) = writer.finish(records, captured, entries)?;
    progress(records + captured + entries);
    Ok(BackupReport {
        records,
        captured,
        entries,
        bytes,
        sha256,
        checkpoint_size,
        revision,
    })
}

/// Writes frames while hashing them.
struct FrameWriter<'a> {
    out: BufWriter<&'a mut dyn Write>,
    hash: Sha256,
    bytes: u64,
}

fn write_error(e: std::io::Error) -> Error {
    Error::Io {
        context: "writing the backup".into(),
        source: e,
    }
}

impl<'a> FrameWriter<'a> {
    fn new(out: &'a mut dyn Write) -> FrameWriter<'a> {
        FrameWriter {
            out: BufWriter::with_capacity(64 * 1024, out),
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(write_error)
    }

    fn header(&mut self, format: u16, vault_id: &VaultId, created_at: u64) -> Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&format.to_be_bytes());
        header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        header.extend_from_slice(vault_id);
        header.extend_from_slice(&created_at.to_be_bytes());
        self.put(&header)
    }

    fn frame(&mut self, tag: u8, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let too_big =
            key.len() > MAX_KEY as usize || value.is_some_and(|v| v.len() > MAX_VALUE as usize);
        if too_big {
            return Err(Error::Corrupt(format!(
                "a store entry of {} bytes is larger than a backup can hold",
                key.len() + value.map_or(0, <[u8]>::len)
            )));
        }
        self.put(&[tag])?;
        // Both lengths were just checked to fit.
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        if let Some(value) = value {
            self.put(&(value.len() as u32).to_be_bytes())?;
            self.put(value)?;
        }
        Ok(())
    }

    fn finish(mut self, records: u64, captured: u64, entries: u64) -> Result<(u64, [u8; 32])> {
        self.put(&[TAG_END])?;
        self.put(&records.to_be_bytes())?;
        self.put(&captured.to_be_bytes())?;
        self.put(&entries.to_be_bytes())?;
        let digest: [u8; 32] = self.hash.finalize().into();
        self.out.write_all(&digest).map_err(write_error)?;
        self.out.flush().map_err(write_error)?;
        Ok((self.bytes + 32, digest))
    }
}
