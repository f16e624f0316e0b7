//! `keyvault operator restore FILE --config node.toml`: one node of a cluster vault restored
//! from the backup taken through it (the vault's shared state into etcd, once; the node's log
//! into its data directory). FILE may be a `backup --cluster` directory: the shared state then
//! comes from its first backup and the log from the node's own. The backup family's cluster side, apart so that a build without
//! cluster support carries none of it.

use std::path::Path;
#[cfg(feature = "etcd")]
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "etcd")]
use anyhow::{Context, bail};
#[cfg(feature = "etcd")]
use serde_json::{Value, json};
#[cfg(feature = "etcd")]
use vault_core::Vault;
use vault_core::storage::etcd_config::EtcdConfig;

use crate::output::Out;
#[cfg(feature = "etcd")]
use crate::output::with_bytes_progress;

/// The manifest's name in a `backup --cluster` directory (`backup_cluster.rs` has its layout).
pub(super) const MANIFEST: &str = "cluster.json";
/// The manifest's `format`.
pub(super) const MANIFEST_FORMAT: &str = "keyvault-cluster-backup/1";

/// Restores node `etcd.node_id` from `file` into `dir` and the prefix (see
/// [`Vault::restore_cluster`]).
#[cfg(feature = "etcd")]
pub fn restore(file: &Path, dir: &Path, etcd: &EtcdConfig, out: &Out) -> anyhow::Result<ExitCode> {
    let (shared, own) = match file.is_dir() {
        true => from_directory(file, etcd.node_id.as_str())?,
        false => (file.to_path_buf(), file.to_path_buf()),
    };
    let size = std::fs::metadata(&own).map(|m| m.len()).ok();
    let result = with_bytes_progress("restoring", size, |done| {
        Vault::restore_cluster_from(&shared, &own, dir, etcd, done)
    });
    let report = result.with_context(|| {
        format!(
            "restoring {} as node {} under etcd prefix {} into {}",
            file.display(),
            etcd.node_id,
            etcd.prefix,
            dir.display()
        )
    })?;
    let node = &report.node;
    // Invariant: a cluster restore succeeds only with a node's backup, which names its origin.
    let revision = node.backup.cluster.as_ref().map_or(0, |c| c.revision);
    let value = json!({
        "data_dir": node.dir,
        "node_id": etcd.node_id.as_str(),
        "prefix": etcd.prefix,
        "etcd_revision": revision,
        "shared_rows": report.shared_rows,
        "vault_id": hex::encode(node.backup.vault_id),
        "audit_entries": node.audit_entries,
        "checkpoint_size": node.checkpoint_size,
        "public_key": node.audit_public_key,
        "sha256": hex::encode(node.backup.sha256),
    });
    out.value(&value, || {
        let shared = match report.shared_rows {
            Some(rows) => format!(
                "wrote the vault's shared state ({rows} rows, as of etcd revision {revision}) \
                 under etcd prefix {}",
                etcd.prefix
            ),
            None => format!(
                "etcd prefix {} already held this vault's restored shared state; restored this \
                 node's part only",
                etcd.prefix
            ),
        };
        format!(
            "restored node {} of vault {} into {}: {shared}.\n\
             Audit log: {} entries restored, then a sys.restore entry. Audit public key \
             (compare it with the one pinned at init):\n  {}\n\
             Next: restore the other nodes the same way, each from the backup taken through it; \
             then keyvault serve --config FILE on each, and keyvault unseal with the passphrase \
             or shares that were current when the backup was taken.",
            etcd.node_id,
            hex::encode(node.backup.vault_id),
            node.dir.display(),
            node.audit_entries,
            node.audit_public_key,
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// The backups a `backup --cluster` directory gives node `node`: the first backup's (for the
/// shared state) and its own.
#[cfg(feature = "etcd")]
fn from_directory(dir: &Path, node: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: a directory written by `keyvault operator backup --cluster` has one \
             (without it the backup is not whole)",
            path.display()
        )
    })?;
    let manifest: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if manifest["format"] != MANIFEST_FORMAT {
        bail!("{} is not a {MANIFEST_FORMAT} manifest", path.display());
    }
    let nodes = manifest["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let file_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n["node_id"] == id)
            .and_then(|n| n["file"].as_str())
            // The manifest names files inside the directory, never a path elsewhere.
            .filter(|f| !f.contains('/') && !f.starts_with('.'))
            .map(|f| dir.join(f))
    };
    let Some(own) = file_of(node) else {
        let ids: Vec<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
        bail!(
            "the backup in {} holds no log of node {node} (its nodes: {}): restore each node \
             under the node id it was backed up as",
            dir.display(),
            ids.join(", ")
        );
    };
    let first = manifest["first"].as_str().and_then(file_of);
    let shared = first.with_context(|| format!("{} names no first backup", path.display()))?;
    Ok((shared, own))
}

#[cfg(not(feature = "etcd"))]
pub fn restore(
    _file: &Path,
    _dir: &Path,
    _etcd: &EtcdConfig,
    _out: &Out,
) -> anyhow::Result<ExitCode> {
    Err(anyhow::anyhow!(
        "restoring a cluster node (storage.backend = \"etcd\") needs a keyvault built with \
         cluster support: `cargo build --release --features etcd`"
    ))
}
