//! Disk use of a vault: what the data directory holds, what its filesystem has left, and how
//! old the live audit log is. The audit log is what grows (a few hundred bytes per verify), so
//! these are the figures an operator watches to archive before the disk fills; a full disk
//! stops every verify (fail closed).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::audit::Entry;
use crate::error::io;
use crate::{Result, Vault};

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

impl Vault {
    /// Reads the disk figures: a walk of the data directory, one `statvfs`, one audit entry.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let dir = self.dir();
        let fs = rustix::fs::statvfs(dir)
            .map_err(|e| io(|| format!("reading the free space of {}", dir.display()))(e.into()))?;
        let first = self.audit_first_live();
        let oldest_audit_ms = match self.inner.audit.entry(first)? {
            Some(bytes) => Some(
                Entry::parse(&bytes)
                    .map_err(|e| crate::Error::Corrupt(format!("audit entry {first}: {e}")))?
                    .time_ms,
            ),
            None => None,
        };
        Ok(DiskUsage {
            data_bytes: allocated(dir)?,
            fs_total_bytes: fs.f_blocks.saturating_mul(fs.f_frsize),
            fs_available_bytes: fs.f_bavail.saturating_mul(fs.f_frsize),
            audit_live_entries: self.audit_size().saturating_sub(first),
            oldest_audit_ms,
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
