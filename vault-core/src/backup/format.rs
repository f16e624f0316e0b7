//! The backup file's format, what a backup and a restore report, and the audit log's bounds a
//! backup carries: what the writer, the reader and the restore share (the format itself is
//! described in the [module doc](super)). It names none of them, so all three import it.

use std::path::PathBuf;

use crate::audit::log::{META_ARCHIVED, META_TAIL, decode_meta_u64};
use crate::audit::segment::Tail;
use crate::shamir::VaultId;
use crate::storage::Space;
use crate::{Error, Result};

/// The newest backup file format this build reads: [`ONE_HOST_FORMAT`] or
/// [`CLUSTER_FORMAT`].
pub const BACKUP_FORMAT: u16 = CLUSTER_FORMAT;
/// The format of a one-host vault's backup (unchanged since the first).
pub const ONE_HOST_FORMAT: u16 = 1;
/// The format of a cluster node's backup: format 1 with a node frame first.
pub const CLUSTER_FORMAT: u16 = 2;

pub(super) const MAGIC: &[u8; 8] = b"KVBACKUP";
pub(super) const HEADER_LEN: usize = 8 + 2 + 2 + 8 + 8;
pub(super) const TAG_SNAPSHOT: u8 = 0x01;
pub(super) const TAG_PUT: u8 = 0x02;
pub(super) const TAG_REMOVE: u8 = 0x03;
pub(super) const TAG_ENTRY: u8 = 0x04;
/// Format 2's first frame: key the node id (UTF-8), value the etcd revision (u64).
pub(super) const TAG_NODE: u8 = 0x05;
pub(super) const TAG_END: u8 = 0xFF;
/// Longest key a backup may hold; store keys are a space byte and a short id.
pub(super) const MAX_KEY: u32 = 64 * 1024;
/// Largest value a backup may hold; records and entries are far smaller. A corrupted length is
/// refused instead of allocated.
pub(super) const MAX_VALUE: u32 = 64 * 1024 * 1024;
/// Progress is reported every this many frames.
pub(super) const PROGRESS_EVERY: u64 = 4096;
/// Bytes of frames a restore writes per store batch.
pub(super) const RESTORE_BATCH_BYTES: usize = 4 * 1024 * 1024;

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
    /// On a cluster node, the etcd revision the shared rows were read at.
    pub revision: Option<u64>,
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
    /// A cluster node's backup: which node's log it holds and the etcd revision its shared
    /// rows were read at. `None` for a one-host vault's backup.
    pub cluster: Option<ClusterOrigin>,
}

/// Where a cluster node's backup comes from (its node frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOrigin {
    /// The node whose audit log and checkpoints the backup holds.
    pub node_id: String,
    /// The etcd revision at which every shared row in it was read.
    pub revision: u64,
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
pub(super) struct LogBounds {
    tail: Option<Vec<u8>>,
    archived: Option<Vec<u8>>,
}

impl LogBounds {
    pub(super) fn see(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some((&space, name)) = key.split_first() else {
            return;
        };
        if space != Space::Local as u8 {
            return;
        }
        if name == META_TAIL {
            self.tail = value.map(<[u8]>::to_vec);
        } else if name == META_ARCHIVED {
            self.archived = value.map(<[u8]>::to_vec);
        }
    }

    pub(super) fn bounds(&self) -> Result<(u64, u64)> {
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

pub(super) fn bad(why: impl Into<String>) -> Error {
    Error::Backup(why.into())
}
