//! Restoring a backup into a new data directory, all or nothing, and checking the vault it
//! made before it is renamed into place.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{LogBounds, RESTORE_BATCH_BYTES, RestoreReport, bad};
use super::reader::{BackupReader, Frame};
use crate::audit::Event;
use crate::audit::log::{AuditLog, FirstSegment, META_TREE};
use crate::audit::merkle::{self, Hash};
use crate::audit::note::{Checkpoint, NoteVerifier};
use crate::context::{Actor, Context};
use crate::datadir::{
    AUDIT_DIR, CHECKPOINT_FILE, FORMAT_VERSION, LOCAL_SPACE_SINCE, STORE_DIR, create_private_dir,
    is_empty_but_for, relocated_key, sync_dir,
};
use crate::error::io;
use crate::shamir::VaultId;
use crate::storage::{Batch, Item, Space, Store, is_shared_key};
use crate::{Error, Result};

/// The vault a restore built, opened (sealed, by the function the restore is given): what the
/// restore needs of it to check it and to record itself in its log. The handle implements it
/// (`vault/backup.rs`); a restore knows no handle.
pub(crate) trait Reopen: Sized {
    /// The vault's id.
    fn vault_id(&self) -> VaultId;
    /// Its store.
    fn store(&self) -> &Store;
    /// Its audit log.
    fn audit(&self) -> &AuditLog;
    /// Every audit public key it signed with, oldest (the one printed at init) first.
    fn audit_public_keys(&self) -> Result<Vec<String>>;
    /// The root of its audit tree of size `size`.
    fn audit_root(&self, size: u64) -> Result<Hash>;
    /// Closes it: a cluster node gives up its registration at once, so that the node can
    /// start as soon as the restore returns.
    fn close(self) {}
}

/// Where a restore puts the backup's rows.
// Only cluster support (the `etcd` feature) restores a node.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// One host: every row into the data directory.
    OneHost,
    /// Node `node_id` of a cluster vault: the node's rows into its data directory; the shared
    /// rows were written into etcd beforehand (`vault/cluster_backup.rs`).
    Node { node_id: &'a str },
}

/// Refuses a target directory that exists and is not an empty directory.
pub(crate) fn check_new_dir(dir: &Path) -> Result<()> {
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
    Ok(())
}

/// The rows of a cluster node's backup that go into etcd: its shared snapshot rows, in key
/// order, as the backup is read again (it was checked whole before; a file that changed since
/// fails here).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) fn shared_rows(input: impl Read) -> Result<impl Iterator<Item = Result<Item>>> {
    let mut reader = BackupReader::new(input)?;
    Ok(std::iter::from_fn(move || {
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::Put(key, value))) if is_shared_key(&key) => {
                    return Some(Ok((key, value)));
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }))
}

/// Restores the backup read from `input` into `dir` (see `Vault::restore`), checking
/// the vault it made as `V` opens it.
pub(crate) fn restore<V: Reopen>(
    input: impl Read,
    dir: &Path,
    target: Target<'_>,
    open: &dyn Fn(&Path) -> Result<V>,
    mut progress: impl FnMut(u64),
) -> Result<RestoreReport> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} names no directory", dir.display())))?;
    check_new_dir(dir)?;
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
    let restored =
        restore_into::<V>(input, &staging, target, open, &mut progress).and_then(|report| {
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

fn restore_into<V: Reopen>(
    input: impl Read,
    staging: &Path,
    target: Target<'_>,
    open: &dyn Fn(&Path) -> Result<V>,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreReport> {
    let mut reader = BackupReader::new(input)?;
    if reader.vault_format > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            found: reader.vault_format,
            supported: FORMAT_VERSION,
        });
    }
    match (&reader.cluster, target) {
        (None, Target::OneHost) => {}
        (Some(origin), Target::OneHost) => {
            return Err(bad(format!(
                "it is the backup of node {} of a cluster vault: restore it into a cluster, \
                 with that node's configuration",
                origin.node_id
            )));
        }
        (None, Target::Node { .. }) => {
            return Err(bad(
                "it is the backup of a one-host vault: restore it into a data directory",
            ));
        }
        (Some(origin), Target::Node { node_id }) if origin.node_id != node_id => {
            return Err(bad(format!(
                "it holds the audit log of node {}, not of node {node_id}: each node restores \
                 its own log",
                origin.node_id
            )));
        }
        (Some(_), Target::Node { .. }) => {}
    }
    // A cluster node's shared rows went into etcd; its data directory holds only its own.
    let in_store = |key: &[u8]| matches!(target, Target::OneHost) || !is_shared_key(key);
    {
        let store = Store::open(&staging.join(STORE_DIR))?;
        let mut batch = Batch::default();
        let mut pending = 0usize;
        let mut log = LogBounds::default();
        let mut segment: Option<FirstSegment> = None;
        // Up to format 5 the node's audit bookkeeping sat in `Meta`: restored where the vault
        // now looks for it, so the checks below and the vault's open read one layout.
        let old_layout = reader.vault_format < LOCAL_SPACE_SINCE;
        let place = |key: Vec<u8>| match old_layout {
            true => relocated_key(&key).into_owned(),
            false => key,
        };
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Put(key, _) if !in_store(&key) => {}
                Frame::Put(key, value) => {
                    let key = place(key);
                    pending += key.len() + value.len();
                    log.see(&key, Some(&value));
                    batch.insert_raw(&key, &value);
                }
                Frame::Remove(key) => {
                    let key = place(key);
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
        batch.remove(Space::Local, META_TREE);
        for item in store.scan(Space::AuditIndex) {
            let (key, _) = item?;
            batch.remove(Space::AuditIndex, &key);
        }
        segment.commit(&store, batch)?;
    }
    let backup = reader.summary()?;

    let vault = open(staging).map_err(|e| match e {
        Error::NotAVault(_) | Error::NotInitialized(_) => {
            bad("it holds no vault (its format or seal configuration is missing)")
        }
        Error::Corrupt(why) => bad(format!("the vault in it is damaged: {why}")),
        other => other,
    })?;
    if vault.vault_id() != backup.vault_id {
        return Err(bad("the vault in it is not the vault its header names"));
    }
    let audit_public_keys = vault
        .audit_public_keys()
        .map_err(|e| bad(format!("the vault in it is damaged: {e}")))?;
    // Never empty: the keys start with the one stored at init.
    let audit_public_key = audit_public_keys.last().cloned().unwrap_or_default();
    check_leaves(vault.audit())?;
    let last = vault.audit().last_checkpoint();
    if let Some(last) = &last {
        check_checkpoint(&vault, &audit_public_keys, &last.note, &last.checkpoint)?;
    }
    write_checkpoint_file(vault.store(), &staging.join(CHECKPOINT_FILE))?;
    let audit_entries = vault.audit().size();
    // The log itself says it was restored, and from what (committed sealed: no key needed).
    let mut event = Event::new("sys.restore", "ok")
        .detail("backup_sha256", hex::encode(backup.sha256))
        .detail("backup_created_at", backup.created_at)
        .detail("entries", audit_entries);
    if let Some(origin) = &backup.cluster {
        event = event
            .detail("node", origin.node_id.as_str())
            .detail("etcd_revision", origin.revision);
    }
    vault
        .audit()
        .commit(&Context::new(Actor::Operator), Batch::default(), event)?;
    vault.close();
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
fn check_leaves(audit: &AuditLog) -> Result<()> {
    let mut next = audit.first_live();
    let mut leaves = audit
        .leaves(next)
        .map_err(|e| bad(format!("its audit tree cannot be read: {e}")))?;
    for item in audit.entries(next) {
        let (seq, entry) = item.map_err(|e| bad(format!("its audit log is damaged: {e}")))?;
        if seq != next {
            return Err(bad(format!(
                "its audit log has no entry {next} (the entries are not contiguous)"
            )));
        }
        let leaf = leaves
            .next_leaf()
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
    vault: &impl Reopen,
    public_keys: &[String],
    note: &str,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let public_key = public_keys.last().map_or("", String::as_str);
    let verifier = NoteVerifier::parse(public_key)
        .map_err(|e| bad(format!("its audit public key does not parse: {e}")))?;
    // Signed by the current key, or (a crash before a rotation's transition checkpoint) by
    // an earlier generation's.
    let by_earlier = public_keys
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
    if checkpoint.origin != vault.audit().origin() {
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
