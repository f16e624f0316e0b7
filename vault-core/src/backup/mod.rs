//! Online backup and offline restore: the file format and what a backup and a restore report.
//! `writer.rs` writes the file, `reader.rs` reads and checks it, `restore.rs` turns it back
//! into a data directory; the handle's methods (`vault/backup.rs`) only hand them the store,
//! the audit log and the usage figures.
//!
//! [`Vault::backup`](crate::Vault::backup) writes a consistent copy of a running vault
//! (records, keyring, seal configuration, audit log, its tree and checkpoints: the whole store; and the usage figures)
//! without pausing any operation; [`restore`] builds a new data directory from it, all or
//! nothing. The restored vault unseals with the passphrase or shares that were current when the
//! backup ran, and its audit log goes on from the backed-up one, so its next checkpoint extends
//! the last one in the backup.
//!
//! # Consistency
//! A backup starts a change capture in the store ([`Store::start_capture`](crate::storage::Store::start_capture)), then reads every
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

mod reader;
pub(crate) mod restore;
mod writer;

use std::path::PathBuf;

use crate::audit::log::{META_ARCHIVED, META_TAIL, decode_meta_u64};
use crate::audit::segment::Tail;
use crate::shamir::VaultId;
use crate::storage::Space;
use crate::{Error, Result};

pub use reader::verify_backup;
pub(crate) use restore::Reopen;
pub(crate) use writer::{Source, write};
// A restore opens the vault it built to check it, so its entry point is the handle's
// (`vault/backup.rs`, through `Reopen`); its public path stays here.
pub use crate::vault::restore;

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

fn bad(why: impl Into<String>) -> Error {
    Error::Backup(why.into())
}
