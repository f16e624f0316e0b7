//! Online backup and offline restore.
//!
//! [`Vault::backup`] writes a consistent copy of a running vault (records, keyring, seal
//! configuration, audit log, its tree and checkpoints: the whole store; and the usage figures)
//! without pausing any operation; [`restore`] builds a new data directory from it, all or
//! nothing. The restored vault unseals with the passphrase or shares that were current when the
//! backup ran, and its audit log goes on from the backed-up one, so its next checkpoint extends
//! the last one in the backup.
//!
//! # Consistency
//! A backup starts a change capture in the store ([`Store::start_capture`]), then reads every
//! `(key, value)` of the store in key order into the file (the *snapshot*), then ends the capture
//! and appends its changes (the *tail*) in apply order, then the audit entries. The scan is not a point-in-time read: it
//! may or may not see a write applied while it runs. That does not matter, because every change
//! in the store is a whole-value put or a remove, applied in one batch with the rest of its
//! operation (a state change and its audit entry, say), and the capture holds every batch applied
//! between its start and its end, each whole. Replaying snapshot then tail, a key touched during
//! the backup ends with its last captured change, and a key not touched ends with the value the
//! scan read, which was its value throughout. So the restored store is exactly the store at the
//! instant the capture ended: each batch is in it whole or not at all, and the audit log has no
//! entry twice and none missing.
//!
//! One space is the exception: the usage figures live in their own file (`usage::file`), not
//! in the store, so the backup skips the store's usage space (where earlier builds kept them)
//! and carries the live figures instead, taken inside the capture before the log's end is
//! recorded, as puts in that space (the form `usage::legacy` reads). Folded only from committed
//! entries, they cover none the backup lacks; a restored vault moves them into its figures
//! file at its first open and folds the entries after them. So usage counted from entries
//! archived before the backup survives a restore.
//!
//! The audit entries themselves are not in the store but in append-only segment files, and the
//! tree's subtree hashes in the tree file; the store holds the log's tail (its size), which the
//! snapshot and capture carry like any other value (the backup has the writer record the
//! current tail just before the capture ends, since the store otherwise learns of a group that
//! changed nothing else up to a second late). So the backup, once the capture has ended, reads
//! from the restored-to-be store state the log's first live entry and its size at that
//! instant, and appends the tree's hashes for that size and exactly those entries from the
//! segment files, neither of which changes below the size. Restore writes the entries into one
//! fresh segment file and rebuilds the tail and the entry index for it; the hashes go into the
//! store's old node space, from which the vault's first open builds its tree file.
//!
//! The backup's own `sys.backup` entry (outcome `ok`, with the snapshot's record count) is
//! committed after the scan and before the capture ends, and while unsealed a checkpoint is then
//! signed over it; both are inside the backup, so the restored log ends with the backup's own
//! record, covered by a signed checkpoint. A backup that fails afterwards also records a
//! `sys.backup` entry with the error's code (outside the backup).
//!
//! # File format (`keyvault-backup/1`)
//! All integers big-endian:
//!
//! ```text
//! header  | "KVBACKUP" (8) | backup format u16 (= 1) | vault format u16 | vault id (8) | created_at u64 (Unix s) |
//! frame   | tag (1) | key len u32 | key | [value len u32 | value] |
//!           tag 0x01 snapshot put, 0x02 captured put (both with a value), 0x03 captured remove,
//!           0x04 audit entry (key: its sequence number, u64; value: its canonical bytes);
//!           the audit tree's hashes come as captured puts after the captured changes, keyed
//!           0x07 (the node space) | level u8 | index u64, in the order the subtrees complete,
//!           then the usage figures as captured puts keyed 0x09 (the usage space) | id
//! trailer | 0xFF | snapshot frames u64 | captured frames u64 | entry frames u64 |
//!           SHA-256 of every byte before it (32) |
//! ```
//!
//! Keys are raw store keys (space byte first, see the architecture notes); snapshot keys are in
//! strictly increasing order and come before every captured frame; entry frames come last, with
//! consecutive sequence numbers. Nothing may follow the
//! trailer. The digest catches truncation and corruption, not an attacker (who can recompute
//! it): what makes tampering evident is what the store already holds, records sealed with
//! XChaCha20-Poly1305 and an audit log whose checkpoints are signed. The file holds encrypted
//! records and the audit log, whose entries name owners and client addresses in the clear, so it
//! is as sensitive as the data directory: keep it owner-only (the CLI writes it 0600).

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::audit::Event;
use crate::audit::log::{
    FirstSegment, META_ARCHIVED, META_TAIL, META_TREE, decode_meta_u64, node_id,
};
use crate::audit::merkle;
use crate::audit::note::{Checkpoint, NoteVerifier};
use crate::audit::segment::Tail;
use crate::clock::now;
use crate::context::{Actor, Context};
use crate::datadir::{
    AUDIT_DIR, CHECKPOINT_FILE, STORE_DIR, create_private_dir, is_empty_but_for, sync_dir,
};
use crate::error::io;
use crate::shamir::VaultId;
use crate::storage::{Batch, Space, Store};
use crate::vault::FORMAT_VERSION;
use crate::{Error, Result, Vault};

/// The backup file format this build writes and the newest it reads.
pub const BACKUP_FORMAT: u16 = 1;

const MAGIC: &[u8; 8] = b"KVBACKUP";
const HEADER_LEN: usize = 8 + 2 + 2 + 8 + 8;
const TAG_SNAPSHOT: u8 = 0x01;
const TAG_PUT: u8 = 0x02;
const TAG_REMOVE: u8 = 0x03;
const TAG_ENTRY: u8 = 0x04;
const TAG_END: u8 = 0xFF;
/// Longest key a backup may hold; store keys are a space byte and a short id.
const MAX_KEY: u32 = 64 * 1024;
/// Largest value a backup may hold; records and entries are far smaller. A corrupted length is
/// refused instead of allocated.
const MAX_VALUE: u32 = 64 * 1024 * 1024;
/// Progress is reported every this many frames.
const PROGRESS_EVERY: u64 = 4096;
/// Bytes of frames a restore writes per store batch.
const RESTORE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Store entries in the snapshot.
    pub records: u64,
    /// Changes captured while the snapshot was read, appended after it.
    pub captured: u64,
    /// Audit entries (the live log, from its first unarchived entry).
    pub entries: u64,
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of the file up to its digest (as its trailer holds it).
    pub sha256: [u8; 32],
    /// Tree size of the last signed checkpoint in the backup (none if the vault never signed
    /// one; while sealed no new one is signed).
    pub checkpoint_size: Option<u64>,
}

/// What a backup file holds, as read and checked end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The vault's id.
    pub vault_id: VaultId,
    /// The vault's on-disk format version.
    pub vault_format: u16,
    /// When the backup started, Unix seconds.
    pub created_at: u64,
    /// Snapshot frames.
    pub records: u64,
    /// Captured frames.
    pub captured: u64,
    /// Audit entry frames.
    pub entries: u64,
    /// Bytes read, the whole file.
    pub bytes: u64,
    /// The file's SHA-256 (as its trailer holds it).
    pub sha256: [u8; 32],
}

/// What a restore made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The backup that was restored.
    pub backup: BackupSummary,
    /// The restored data directory.
    pub dir: PathBuf,
    /// Entries restored from the backup; the restore's own `sys.restore` entry follows them.
    pub audit_entries: u64,
    /// The last signed checkpoint of the restored log (checked against the stored tree and the
    /// vault's audit public key), if the vault ever signed one.
    pub checkpoint_size: Option<u64>,
    /// The audit public key stored in the vault (`name+hash+base64`). Auditors compare it with
    /// the one they pinned at init.
    pub audit_public_key: String,
}

impl Vault {
    /// Writes a consistent copy of the whole vault to `out` while it keeps serving (see the
    /// module doc). Works sealed or unsealed (sealed, no new checkpoint is signed). Memory use
    /// does not grow with the vault; changes made during the backup spill to an unnamed
    /// temporary file in the data directory past [`crate::storage::CAPTURE_MEMORY`] bytes.
    /// `progress` gets the count of frames written. One backup runs at a time: another
    /// answers [`Error::Conflict`]. Audited as `sys.backup`.
    pub fn backup(
        &self,
        ctx: &Context,
        out: &mut dyn Write,
        mut progress: impl FnMut(u64),
    ) -> Result<BackupReport> {
        let result = self.backup_inner(ctx, out, &mut progress);
        if let Err(e) = &result {
            let event = Event::new("sys.backup", e.code());
            if let Err(logged) = self.commit(ctx, Batch::default(), event) {
                tracing::warn!(error = %logged, "the failed backup could not be audited");
            }
        }
        result
    }

    fn backup_inner(
        &self,
        ctx: &Context,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BackupReport> {
        let capture = self.inner.store.start_capture(self.dir()).ok_or_else(|| {
            Error::Conflict("a backup is already running; wait for it to finish".into())
        })?;
        let mut writer = FrameWriter::new(out);
        writer.header(&self.vault_id(), now())?;
        let mut records = 0u64;
        let mut log = LogBounds::default();
        // With usage on, the figures live in their own file; the backup carries the live ones
        // in the store's old usage space instead of whatever that space holds (see below).
        let figures_apart = self.inner.usage.is_some();
        let in_usage_space =
            |key: &[u8]| figures_apart && key.first() == Some(&(Space::Usage as u8));
        for item in self.inner.store.scan_raw() {
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
        self.commit(ctx, Batch::default(), event)?;
        let checkpoint_size = match self.inner.audit.checkpoint() {
            Ok(signed) => Some(signed.checkpoint.size),
            Err(Error::Sealed) => None,
            Err(e) => return Err(e),
        };
        // The usage figures count only committed entries, so taken before the log's end is
        // recorded below, they cover no entry the backup lacks.
        let figures = self.usage_for_backup();
        // The store learns of the log's end lazily; make it hold the end now, inside the capture.
        self.inner.audit.record()?;
        let ops = capture.finish()?;
        let mut captured = 0;
        for (i, op) in ops.enumerate() {
            let op = op?;
            if in_usage_space(&op.0) {
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
        self.inner.audit.for_each_node(size, |level, index, hash| {
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
        for item in self.inner.audit.entries(first) {
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
        })
    }
}

/// The live log's first entry and size, from the store values a backup writes.
#[derive(Default)]
struct LogBounds {
    tail: Option<Vec<u8>>,
    archived: Option<Vec<u8>>,
}

impl LogBounds {
    fn see(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some((&space, name)) = key.split_first() else {
            return;
        };
        if space != Space::Meta as u8 {
            return;
        }
        if name == META_TAIL {
            self.tail = value.map(<[u8]>::to_vec);
        } else if name == META_ARCHIVED {
            self.archived = value.map(<[u8]>::to_vec);
        }
    }

    fn bounds(&self) -> Result<(u64, u64)> {
        let size = match &self.tail {
            Some(bytes) => Tail::decode(bytes)?.size,
            None => 0,
        };
        let first = match &self.archived {
            Some(bytes) => decode_meta_u64(META_ARCHIVED, bytes)?,
            None => 0,
        };
        Ok((first.min(size), size))
    }
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

    fn header(&mut self, vault_id: &VaultId, created_at: u64) -> Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&BACKUP_FORMAT.to_be_bytes());
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

/// One change read from a backup, in order.
#[derive(Debug)]
enum Frame {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    /// An audit entry: its sequence number and bytes.
    Entry(u64, Vec<u8>),
}

/// Reads and checks a backup frame by frame.
struct BackupReader<R> {
    input: R,
    hash: Sha256,
    bytes: u64,
    vault_id: VaultId,
    vault_format: u16,
    created_at: u64,
    records: u64,
    captured: u64,
    entries: u64,
    last_entry: Option<u64>,
    last_snapshot_key: Option<Vec<u8>>,
    done: Option<[u8; 32]>,
}

fn bad(why: impl Into<String>) -> Error {
    Error::Backup(why.into())
}

impl<R: Read> BackupReader<R> {
    fn new(input: R) -> Result<BackupReader<R>> {
        let mut reader = BackupReader {
            input,
            hash: Sha256::new(),
            bytes: 0,
            vault_id: [0; 8],
            vault_format: 0,
            created_at: 0,
            records: 0,
            captured: 0,
            entries: 0,
            last_entry: None,
            last_snapshot_key: None,
            done: None,
        };
        let mut header = [0u8; HEADER_LEN];
        reader
            .read(&mut header, "the header")
            .map_err(|e| match e {
                Error::Backup(_) => bad("not a keyvault backup (the file is too short)"),
                other => other,
            })?;
        if &header[..8] != MAGIC {
            return Err(bad("not a keyvault backup (wrong magic bytes)"));
        }
        let format = u16::from_be_bytes([header[8], header[9]]);
        if format > BACKUP_FORMAT {
            return Err(bad(format!(
                "backup format {format} is newer than this keyvault reads ({BACKUP_FORMAT})"
            )));
        }
        reader.vault_format = u16::from_be_bytes([header[10], header[11]]);
        reader.vault_id.copy_from_slice(&header[12..20]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&header[20..28]);
        reader.created_at = u64::from_be_bytes(created);
        Ok(reader)
    }

    /// Reads exactly `buf.len()` bytes into the digest; a short file is a truncated backup.
    fn read(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.read_unhashed(buf, what)?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn read_unhashed(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => bad(format!(
                "the file is truncated ({what} at byte {} is cut off)",
                self.bytes
            )),
            _ => Error::Io {
                context: "reading the backup".into(),
                source: e,
            },
        })?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn read_u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b, what)?;
        Ok(u64::from_be_bytes(b))
    }

    fn field(&mut self, max: u32, what: &str) -> Result<Vec<u8>> {
        let at = self.bytes;
        let len = self.read_u32(what)?;
        if len > max {
            return Err(bad(format!(
                "the file is corrupted (a {what} of {len} bytes at byte {at})"
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read(&mut bytes, what)?;
        Ok(bytes)
    }

    /// The next change, or `None` after a trailer whose counts and digest check out and after
    /// which the file ends.
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.done.is_some() {
            return Ok(None);
        }
        let at = self.bytes;
        let mut tag = [0u8; 1];
        self.read(&mut tag, "a frame")?;
        match tag[0] {
            TAG_SNAPSHOT | TAG_PUT | TAG_REMOVE if self.entries > 0 => Err(bad(format!(
                "the file is corrupted (a store frame after the audit entries, at byte {at})"
            ))),
            TAG_ENTRY => {
                let key = self.field(MAX_KEY, "entry number")?;
                let seq = <[u8; 8]>::try_from(key.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| {
                        bad(format!(
                            "the file is corrupted (an entry number at byte {at})"
                        ))
                    })?;
                if self.last_entry.is_some_and(|last| seq != last + 1) {
                    return Err(bad(format!(
                        "the file is corrupted (audit entry {seq} does not follow entry {} at byte {at})",
                        self.last_entry.unwrap_or_default()
                    )));
                }
                let value = self.field(MAX_VALUE, "audit entry")?;
                self.last_entry = Some(seq);
                self.entries += 1;
                Ok(Some(Frame::Entry(seq, value)))
            }
            TAG_SNAPSHOT => {
                if self.captured > 0 {
                    return Err(bad(format!(
                        "the file is corrupted (a snapshot frame after the captured changes, at byte {at})"
                    )));
                }
                let key = self.field(MAX_KEY, "key")?;
                if self.last_snapshot_key.as_ref().is_some_and(|k| *k >= key) {
                    return Err(bad(format!(
                        "the file is corrupted (snapshot keys out of order at byte {at})"
                    )));
                }
                let value = self.field(MAX_VALUE, "value")?;
                self.last_snapshot_key = Some(key.clone());
                self.records += 1;
                Ok(Some(Frame::Put(key, value)))
            }
            TAG_PUT => {
                let key = self.field(MAX_KEY, "key")?;
                let value = self.field(MAX_VALUE, "value")?;
                self.captured += 1;
                Ok(Some(Frame::Put(key, value)))
            }
            TAG_REMOVE => {
                let key = self.field(MAX_KEY, "key")?;
                self.captured += 1;
                Ok(Some(Frame::Remove(key)))
            }
            TAG_END => {
                let records = self.read_u64("the trailer")?;
                let captured = self.read_u64("the trailer")?;
                let entries = self.read_u64("the trailer")?;
                let computed: [u8; 32] = self.hash.clone().finalize().into();
                let mut stored = [0u8; 32];
                self.read_unhashed(&mut stored, "the digest")?;
                if stored != computed {
                    return Err(bad(
                        "the file is corrupted (its SHA-256 does not match the digest in its trailer)",
                    ));
                }
                if (records, captured, entries) != (self.records, self.captured, self.entries) {
                    return Err(bad(format!(
                        "the file is corrupted (its trailer counts {records} records, \
                         {captured} changes and {entries} audit entries, the file holds {}, {} \
                         and {})",
                        self.records, self.captured, self.entries
                    )));
                }
                let mut extra = [0u8; 1];
                match self.input.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => return Err(bad("bytes follow the trailer")),
                    Err(e) => {
                        return Err(Error::Io {
                            context: "reading the backup".into(),
                            source: e,
                        });
                    }
                }
                self.done = Some(computed);
                Ok(None)
            }
            other => Err(bad(format!(
                "the file is corrupted (unknown frame tag {other:#04x} at byte {at})"
            ))),
        }
    }

    fn summary(&self) -> Result<BackupSummary> {
        let sha256 = self.done.ok_or_else(|| bad("the file has no trailer"))?;
        Ok(BackupSummary {
            vault_id: self.vault_id,
            vault_format: self.vault_format,
            created_at: self.created_at,
            records: self.records,
            captured: self.captured,
            entries: self.entries,
            bytes: self.bytes,
            sha256,
        })
    }
}

/// Reads a whole backup and checks its framing, order, counts and digest without restoring it
/// (as the CLI does before it keeps a downloaded backup). `progress` gets the bytes read.
pub fn verify_backup(input: impl Read, mut progress: impl FnMut(u64)) -> Result<BackupSummary> {
    let mut reader = BackupReader::new(input)?;
    let mut frames = 0u64;
    while reader.next_frame()?.is_some() {
        frames += 1;
        if frames.is_multiple_of(PROGRESS_EVERY) {
            progress(reader.bytes);
        }
    }
    progress(reader.bytes);
    reader.summary()
}

/// Restores the backup read from `input` into `dir`, a new or empty directory, all or nothing:
/// the vault is built in a staging directory next to `dir` (`.NAME.restoring`, removed on any
/// failure; a leftover from an interrupted restore is replaced), checked (it opens, every audit
/// entry hashes to its stored leaf, its last checkpoint verifies with its audit public key and
/// matches its stored tree), given a
/// checkpoint file rebuilt from its stored checkpoints, then renamed into place. The directory
/// is 0700 and every file in it 0600. The restored log gets a `sys.restore` entry (actor
/// `operator`) naming the backup's SHA-256 and creation time. The vault is left closed and
/// sealed; it unseals with the credentials that were current when the backup ran. `progress`
/// gets the bytes read.
pub fn restore(
    input: impl Read,
    dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<RestoreReport> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} names no directory", dir.display())))?;
    if let Ok(meta) = fs::symlink_metadata(dir) {
        // A symlink is refused too: the rename at the end would not go through it.
        if !meta.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        if !is_empty_but_for(dir, &[])? {
            return Err(Error::InvalidInput(format!(
                "{} is not empty: restore into a new or empty directory",
                dir.display()
            )));
        }
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&parent)?;
    let staging = parent.join(format!(".{}.restoring", name.to_string_lossy()));
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(io(|| format!("removing {}", staging.display())))?;
    }
    create_private_dir(&staging)?;
    let restored = restore_into(input, &staging, &mut progress).and_then(|report| {
        fs::rename(&staging, dir).map_err(io(|| {
            format!("renaming {} to {}", staging.display(), dir.display())
        }))?;
        Ok(report)
    });
    let report = match restored {
        Ok(report) => report,
        Err(e) => {
            if let Err(cleanup) = fs::remove_dir_all(&staging) {
                tracing::warn!(error = %cleanup, path = %staging.display(), "removing the staging directory of a failed restore");
            }
            return Err(e);
        }
    };
    sync_dir(&parent)?;
    Ok(RestoreReport {
        dir: dir.to_path_buf(),
        ..report
    })
}

fn restore_into(
    input: impl Read,
    staging: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreReport> {
    let mut reader = BackupReader::new(input)?;
    if reader.vault_format > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            found: reader.vault_format,
            supported: FORMAT_VERSION,
        });
    }
    {
        let store = Store::open(&staging.join(STORE_DIR))?;
        let mut batch = Batch::default();
        let mut pending = 0usize;
        let mut log = LogBounds::default();
        let mut segment: Option<FirstSegment> = None;
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Put(key, value) => {
                    pending += key.len() + value.len();
                    log.see(&key, Some(&value));
                    batch.insert_raw(&key, &value);
                }
                Frame::Remove(key) => {
                    pending += key.len();
                    log.see(&key, None);
                    batch.remove_raw(&key);
                }
                Frame::Entry(seq, bytes) => {
                    if segment.is_none() {
                        store.apply(std::mem::take(&mut batch))?;
                        pending = 0;
                        segment = Some(FirstSegment::create(&staging.join(AUDIT_DIR), seq)?);
                    }
                    if let Some(segment) = segment.as_mut() {
                        segment.push(seq, &bytes).map_err(|e| match e {
                            Error::Corrupt(why) => bad(format!("the file is corrupted ({why})")),
                            other => other,
                        })?;
                    }
                }
            }
            if pending >= RESTORE_BATCH_BYTES {
                store.apply(std::mem::take(&mut batch))?;
                pending = 0;
                progress(reader.bytes);
            }
        }
        if !batch.is_empty() {
            store.apply(batch)?;
        }
        progress(reader.bytes);
        let (first, size) = log
            .bounds()
            .map_err(|e| bad(format!("the vault in it is damaged: {e}")))?;
        let segment = match segment {
            Some(segment) => segment,
            None => FirstSegment::create(&staging.join(AUDIT_DIR), first)?,
        };
        let (from, to) = segment.range();
        if (from, to) != (first, size) {
            return Err(bad(format!(
                "its audit log should hold entries {first}..{size} but the file holds {from}..{to}"
            )));
        }
        // The source's index described the source's files; the new file brings its own. The
        // tree's hashes came as store puts: the vault moves them into its tree file at open.
        let mut batch = Batch::default();
        batch.remove(Space::Meta, META_TREE);
        for item in store.scan(Space::AuditIndex) {
            let (key, _) = item?;
            batch.remove(Space::AuditIndex, &key);
        }
        segment.commit(&store, batch)?;
    }
    let backup = reader.summary()?;

    let vault = Vault::open(staging).map_err(|e| match e {
        Error::NotAVault(_) | Error::NotInitialized(_) => {
            bad("it holds no vault (its format or seal configuration is missing)")
        }
        Error::Corrupt(why) => bad(format!("the vault in it is damaged: {why}")),
        other => other,
    })?;
    if vault.vault_id() != backup.vault_id {
        return Err(bad("the vault in it is not the vault its header names"));
    }
    let audit_public_key = vault
        .audit_public_key()
        .map_err(|e| bad(format!("the vault in it is damaged: {e}")))?;
    check_leaves(&vault)?;
    let last = vault.inner.audit.last_checkpoint();
    if let Some(last) = &last {
        check_checkpoint(&vault, &audit_public_key, &last.note, &last.checkpoint)?;
    }
    write_checkpoint_file(&vault.inner.store, &staging.join(CHECKPOINT_FILE))?;
    let audit_entries = vault.audit_size();
    // The log itself says it was restored, and from what (committed sealed: no key needed).
    let event = Event::new("sys.restore", "ok")
        .detail("backup_sha256", hex::encode(backup.sha256))
        .detail("backup_created_at", backup.created_at)
        .detail("entries", audit_entries);
    vault.commit(&Context::new(Actor::Operator), Batch::default(), event)?;
    drop(vault);
    Ok(RestoreReport {
        backup,
        dir: staging.to_path_buf(),
        audit_entries,
        checkpoint_size: last.map(|l| l.checkpoint.size),
        audit_public_key,
    })
}

/// Every live audit entry, contiguous from the first one, must hash to its stored leaf
/// (level-0 subtree hash); with [`check_checkpoint`] this ties every entry to the signed tree.
fn check_leaves(vault: &Vault) -> Result<()> {
    let audit = &vault.inner.audit;
    let mut next = audit.first_live();
    for item in audit.entries(next) {
        let (seq, entry) = item.map_err(|e| bad(format!("its audit log is damaged: {e}")))?;
        if seq != next {
            return Err(bad(format!(
                "its audit log has no entry {next} (the entries are not contiguous)"
            )));
        }
        let leaf = audit
            .node(0, seq)
            .map_err(|_| bad(format!("its audit tree has no leaf for entry {seq}")))?;
        if leaf != merkle::leaf_hash(&entry) {
            return Err(bad(format!(
                "its audit entry {seq} does not match its leaf hash (tampered or corrupted)"
            )));
        }
        next += 1;
    }
    if next != audit.size() {
        return Err(bad(format!(
            "its audit log ends at entry {next} but its tree holds {}",
            audit.size()
        )));
    }
    Ok(())
}

/// The stored last checkpoint must verify with the stored audit key and match the stored tree.
fn check_checkpoint(
    vault: &Vault,
    public_key: &str,
    note: &str,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let verifier = NoteVerifier::parse(public_key)
        .map_err(|e| bad(format!("its audit public key does not parse: {e}")))?;
    // Signed by the current key, or (a crash before a rotation's transition checkpoint) by
    // an earlier generation's.
    let earlier = vault
        .audit_public_keys()
        .map_err(|e| bad(format!("the vault in it is damaged: {e}")))?;
    let by_earlier = earlier
        .iter()
        .filter_map(|k| NoteVerifier::parse(k).ok())
        .any(|k| k.verify(note).is_ok());
    if let Err(e) = verifier.verify(note)
        && !by_earlier
    {
        return Err(bad(format!(
            "its last audit checkpoint does not verify with its audit public keys: {e}"
        )));
    }
    if checkpoint.origin != vault.inner.audit.origin() {
        return Err(bad("its last audit checkpoint is of another log"));
    }
    let root = vault.audit_root(checkpoint.size).map_err(|e| {
        bad(format!(
            "its audit tree does not reach its last checkpoint (size {}): {e}",
            checkpoint.size
        ))
    })?;
    if root != checkpoint.root {
        return Err(bad(format!(
            "its audit tree does not match its last checkpoint (size {})",
            checkpoint.size
        )));
    }
    Ok(())
}

/// `DIR/checkpoints.jsonl` from the stored checkpoints, oldest first, one line each as the
/// audit writer appends them.
fn write_checkpoint_file(store: &Store, path: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(|| format!("creating {}", path.display())))?;
    let mut out = BufWriter::new(&mut file);
    for item in store.scan(Space::Checkpoint) {
        let (_, note) = item?;
        let note = String::from_utf8(note)
            .map_err(|_| bad("the vault in it is damaged: a checkpoint is not UTF-8"))?;
        let line = serde_json::json!({ "checkpoint": note }).to_string() + "\n";
        out.write_all(line.as_bytes())
            .map_err(io(|| format!("writing {}", path.display())))?;
    }
    out.flush()
        .map_err(io(|| format!("writing {}", path.display())))?;
    drop(out);
    file.sync_all()
        .map_err(io(|| format!("syncing {}", path.display())))
}
