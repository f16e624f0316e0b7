//! Disk use of a vault: what the data directory holds, what its filesystem has left, and how
//! old the live audit log is. The audit log is what grows (a few hundred bytes per verify), so
//! these are the figures an operator watches to archive before the disk fills; a full disk
//! stops every verify (fail closed).
//!
//! # The reserve
//! On a full disk nothing can be written, not even what an archive must write before it can
//! remove anything (its own audit entries, a checkpoint, the store's notes). So the vault keeps
//! `DIR/reserve`, a file of [`reserve_size`] bytes made when the vault opens with room for it.
//! An archive that finds the filesystem with less than that left removes the file first, which
//! gives it the room to run; once the archive has freed space (twice the reserve), the file is
//! made again.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::Result;
use crate::audit::Entry;
use crate::audit::log::AuditLog;
use crate::error::io;

/// Disk figures of one vault, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes allocated on disk to the data directory's files (the store, audit log included).
    pub data_bytes: u64,
    /// Size of the filesystem that holds the data directory.
    pub fs_total_bytes: u64,
    /// Bytes of that filesystem still available to this process.
    pub fs_available_bytes: u64,
    /// Entries in the live audit log (archived ones not counted).
    pub audit_live_entries: u64,
    /// Time (Unix ms) of the oldest live audit entry, if any.
    pub oldest_audit_ms: Option<u64>,
    /// Bytes in the audit segment files (part of `data_bytes`).
    pub audit_bytes: u64,
    /// Bytes held back for archiving on a full disk (part of `data_bytes`; see the module notes).
    pub reserve_bytes: u64,
}

/// The file that holds the reserve.
pub const RESERVE_FILE: &str = "reserve";

/// The reserve for a filesystem of `total` bytes: a hundredth of it, at least 2 MiB and at most
/// 64 MiB (room for an archive's few writes, with sled's 512 KiB segments, many times over).
pub fn reserve_size(total: u64) -> u64 {
    (total / 100).clamp(2 << 20, 64 << 20)
}

fn statvfs(dir: &Path) -> Result<(u64, u64)> {
    let fs = rustix::fs::statvfs(dir)
        .map_err(|e| io(|| format!("reading the free space of {}", dir.display()))(e.into()))?;
    Ok((
        fs.f_blocks.saturating_mul(fs.f_frsize),
        fs.f_bavail.saturating_mul(fs.f_frsize),
    ))
}

/// Makes the reserve in `dir` if it is missing and the filesystem has room for it and as much
/// again. Never fails the caller: without room, there is simply no reserve (and the disk alarm
/// is what matters).
pub(crate) fn make_reserve(dir: &Path) {
    let path = dir.join(RESERVE_FILE);
    if path.exists() {
        return;
    }
    let Ok((total, available)) = statvfs(dir) else {
        return;
    };
    let size = reserve_size(total);
    if available < size.saturating_mul(2) {
        tracing::warn!(
            available_bytes = available,
            reserve_bytes = size,
            "no room for the disk reserve: an archive on a full disk may not be able to run"
        );
        return;
    }
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|file| {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
            file.sync_all()
        });
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        tracing::warn!(error = %e, "making the disk reserve failed");
    }
}

/// Removes the reserve if the filesystem has less than it left, so that an archive can run.
pub(crate) fn release_reserve_if_full(dir: &Path) {
    let path = dir.join(RESERVE_FILE);
    let Ok(meta) = fs::metadata(&path) else {
        return;
    };
    let Ok((_, available)) = statvfs(dir) else {
        return;
    };
    if available < meta.len() {
        match fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                reserve_bytes = meta.len(),
                "the disk is full: released the disk reserve so that the archive can run"
            ),
            Err(e) => tracing::warn!(error = %e, "releasing the disk reserve failed"),
        }
    }
}

impl DiskUsage {
    /// Percent of the filesystem in use, as `df` counts it (0 to 100).
    pub fn used_percent(&self) -> f64 {
        if self.fs_total_bytes == 0 {
            return 0.0;
        }
        let used = self.fs_total_bytes.saturating_sub(self.fs_available_bytes);
        used as f64 * 100.0 / self.fs_total_bytes as f64
    }
}

impl DiskUsage {
    /// Reads the figures of the data directory `dir` and its audit log: a walk of the
    /// directory, one `statvfs`, one audit entry.
    pub(crate) fn read(dir: &Path, audit: &AuditLog) -> Result<DiskUsage> {
        let (fs_total_bytes, fs_available_bytes) = statvfs(dir)?;
        let first = audit.first_live();
        let oldest_audit_ms = match audit.entry(first)? {
            Some(bytes) => Some(
                Entry::parse(&bytes)
                    .map_err(|e| crate::Error::Corrupt(format!("audit entry {first}: {e}")))?
                    .time_ms,
            ),
            None => None,
        };
        Ok(DiskUsage {
            data_bytes: allocated(dir)?,
            fs_total_bytes,
            fs_available_bytes,
            audit_live_entries: audit.size().saturating_sub(first),
            oldest_audit_ms,
            audit_bytes: audit.segment_bytes(),
            reserve_bytes: fs::metadata(dir.join(RESERVE_FILE)).map_or(0, |m| m.len()),
        })
    }
}

/// Bytes allocated to `path` and everything under it (sparse files count what they use).
fn allocated(path: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(path).map_err(io(|| format!("reading {}", path.display())))?;
    let mut total = meta.blocks().saturating_mul(512);
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io(|| format!("reading {}", path.display())))? {
            let entry = entry.map_err(io(|| format!("reading {}", path.display())))?;
            match allocated(&entry.path()) {
                Ok(bytes) => total = total.saturating_add(bytes),
                // A file removed while we walk (sled's temporary files) is simply gone.
                Err(crate::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}
