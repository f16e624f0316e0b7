//! The data directory: its format version, its layout, owner-only creation, durable directory entries and the
//! advisory lock that keeps a second process out.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::io;
use crate::storage::{self, Batch, Space, Store};
use crate::{Error, Result};

/// The on-disk format version this build writes and the newest it reads. Version 1 kept the
/// audit entries in the store; version 2 keeps them in segment files in `DIR/audit/`; version 3
/// keeps the tree's subtree hashes in `DIR/audit/tree` too, and marks the segment records that
/// can be taken back past the stored tail; version 4 lets the keyring hold several audit key
/// generations (`rotate-audit-key`), so that a build that knows only the first never opens a
/// vault whose audit key was rotated and signs with the retired key; version 5 writes key
/// records packed (record format 2, see `keys::packed`), which older builds cannot decode, so
/// they refuse the vault (and its backups) by version rather than call its records corrupt.
/// Version 6 keeps the node's own audit bookkeeping (the names of `datadir::NODE_LOCAL_NAMES`)
/// in the store's `Local` space instead of `Meta`, so that `Meta` holds only what every node
/// of a cluster shares. Opening an older vault moves what changed and marks it version 6; its
/// key records are rewritten packed as they change.
pub const FORMAT_VERSION: u16 = 6;

/// The first format version with the `Local` space.
pub(crate) const LOCAL_SPACE_SINCE: u16 = 6;

/// The store names of the node's own audit bookkeeping: in space `Meta` up to format 5, in
/// space `Local` from format 6 on. Each node of a cluster keeps its own audit log, so none of
/// these may be shared (`audit-verifier`, the vault's audit key, is the vault's and stays in
/// `Meta`).
pub(crate) const NODE_LOCAL_NAMES: [&[u8]; 7] = [
    b"audit-tail",
    b"audit-tree-synced",
    b"audit-archived",
    b"audit-checkpoint",
    b"audit-archive-sha256",
    b"audit-archive-written",
    b"audit-rotations",
];

/// The changes that move a format-5 store's node-local names ([`NODE_LOCAL_NAMES`]) from
/// `Meta` to `Local`. The caller applies them in one batch with the new format version, so a
/// crash leaves the old layout with the old version or the new layout with the new one, and
/// an older build never opens a store whose bookkeeping it cannot find.
pub(crate) fn move_node_local_names(store: &Store) -> Result<Batch> {
    let mut batch = Batch::default();
    for name in NODE_LOCAL_NAMES {
        if let Some(value) = store.get(Space::Meta, name)? {
            batch.insert(Space::Local, name, &value);
            batch.remove(Space::Meta, name);
        }
    }
    Ok(batch)
}

/// The raw store key (space byte first) at which format 6 keeps what a format-5 store held at
/// raw key `key`: a backup of an older vault is restored into the new layout.
pub(crate) fn relocated_key(key: &[u8]) -> Cow<'_, [u8]> {
    match key.split_first() {
        Some((&space, name)) if space == Space::Meta as u8 && NODE_LOCAL_NAMES.contains(&name) => {
            Cow::Owned(storage::key(Space::Local, name))
        }
        _ => Cow::Borrowed(key),
    }
}

/// The sled store's directory.
pub(crate) const STORE_DIR: &str = "store";
/// Where `init` builds a new store before renaming it to [`STORE_DIR`].
pub(crate) const INIT_DIR: &str = "store.init";
/// The advisory lock file.
pub(crate) const LOCK_FILE: &str = "lock";
/// The append-only copy of every signed checkpoint.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
/// The audit segment files and tree.
pub(crate) const AUDIT_DIR: &str = "audit";

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(|| format!("creating {}", dir.display())))
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(|| format!("syncing {}", dir.display())))
}

pub(crate) fn is_empty_but_for(dir: &Path, allowed: &[&str]) -> Result<bool> {
    let entries = fs::read_dir(dir).map_err(io(|| format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(|| format!("reading {}", dir.display())))?;
        if !allowed.iter().any(|a| entry.file_name() == *a) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the advisory lock on `DIR/lock`; another process (or another open in this one) holding
/// it makes this [`Error::InUse`].
pub(crate) fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(|| format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::InUse(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io(|| format!("locking {}", path.display()))(e)),
    }
}

/// Sets the data directory and everything in it to owner-only: directories 0700, files 0600.
pub(crate) fn restrict_permissions(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(io(|| format!("reading {}", dir.display())))?;
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io(|| format!("setting the mode of {}", dir.display())))?;
    if meta.is_dir() {
        for entry in fs::read_dir(dir).map_err(io(|| format!("reading {}", dir.display())))? {
            let entry = entry.map_err(io(|| format!("reading {}", dir.display())))?;
            restrict_permissions(&entry.path())?;
        }
    }
    Ok(())
}
