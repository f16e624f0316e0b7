//! `keyvault operator backup --cluster -o DIR`: a backup of every node of a cluster vault,
//! taken through each node in turn, into one directory.
//!
//! Each node's backup holds the vault's shared state at one etcd revision and that node's own
//! log (`vault_core::backup`, format 2). Taken one after another, each backup's revision is
//! later than the one before, so every node's log covers the shared state of the *first*
//! backup: a restore takes the shared state from the first one and each node's log from its
//! own (`keyvault operator restore DIR --config node.toml`, in `cluster_restore.rs`), in any
//! order. The directory:
//!
//! ```text
//! DIR/NODE.kvbak     one backup per node the cluster ever registered (0600)
//! DIR/cluster.json   {"format": "keyvault-cluster-backup/1", "vault_id", "first": NODE,
//!                     "nodes": [{"node_id", "file", "etcd_revision", "sha256", "bytes"}]}
//! ```
//!
//! `cluster.json` is written last: a directory without it is not a whole backup. Every node
//! must be live before anything is written, and a node that fails midway fails the command,
//! removing what it wrote: never a backup silently missing a node's log.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::audit_cluster::{cluster, node_client, vault_and_nodes};
use super::backup::download;
use super::cluster_restore::{MANIFEST, MANIFEST_FORMAT};
use crate::cli::BackupArgs;
use crate::output::Out;

/// `keyvault operator backup --cluster -o DIR`.
pub fn backup(args: &BackupArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let dir = &args.output;
    let made = match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let empty = fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_none();
            if !empty {
                bail!(
                    "-o {} is not empty: a cluster backup goes into a new or empty directory",
                    dir.display()
                );
            }
            false
        }
        Ok(_) => bail!(
            "-o {} exists and is not a directory: with --cluster, give a new directory",
            dir.display()
        ),
        Err(_) => {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            true
        }
    };
    let result = backup_into(dir, out);
    if result.is_err() {
        // Only what this command wrote: the directory was new or empty.
        let cleanup = match made {
            true => fs::remove_dir_all(dir),
            false => fs::read_dir(dir).and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .try_for_each(|e| fs::remove_file(e.path()))
            }),
        };
        if let Err(e) = cleanup {
            eprintln!(
                "warning: removing the incomplete backup in {}: {e}",
                dir.display()
            );
        }
    }
    result
}

fn backup_into(dir: &Path, out: &Out) -> anyhow::Result<ExitCode> {
    let answer = cluster(&out.client)?;
    let (vault_id, ids) = vault_and_nodes(&answer)?;
    if ids.is_empty() {
        bail!("the cluster lists no nodes");
    }
    // Every node reachable before anything is written.
    let clients = ids
        .iter()
        .map(|id| node_client(&out.client, &answer, id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut nodes = Vec::with_capacity(ids.len());
    for (id, client) in ids.iter().zip(&clients) {
        let file = dir.join(format!("{id}.kvbak"));
        let tmp = dir.join(format!("{id}.kvbak.tmp"));
        let summary = download(client, &tmp).with_context(|| format!("backing up node {id}"))?;
        let Some(origin) = &summary.cluster else {
            bail!("node {id} sent the backup of a one-host vault");
        };
        if origin.node_id != *id || hex::encode(summary.vault_id) != vault_id {
            bail!(
                "node {id} sent the backup of node {} of vault {}, not of node {id} of vault \
                 {vault_id}",
                origin.node_id,
                hex::encode(summary.vault_id)
            );
        }
        fs::rename(&tmp, &file)
            .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
        nodes.push(json!({
            "node_id": id,
            "file": format!("{id}.kvbak"),
            "etcd_revision": origin.revision,
            "sha256": hex::encode(summary.sha256),
            "bytes": summary.bytes,
        }));
    }
    let manifest = json!({
        "format": MANIFEST_FORMAT,
        "vault_id": vault_id,
        "first": ids[0],
        "nodes": nodes,
    });
    write_manifest(&dir.join(MANIFEST), &manifest)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    out.value(&manifest, || {
        let lines: Vec<String> = ids
            .iter()
            .zip(&nodes)
            .map(|(id, n)| format!("  {id}.kvbak  etcd revision {}", n["etcd_revision"]))
            .collect();
        format!(
            "wrote a backup of every node of vault {vault_id} to {}:\n{}\n\
             Restore each node on its host with `keyvault operator restore {} --config \
             node.toml` (the shared state comes from {}.kvbak, the first); it unseals with the \
             passphrase or shares that are current now.",
            dir.display(),
            lines.join("\n"),
            dir.display(),
            ids[0],
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn write_manifest(path: &Path, manifest: &Value) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let text = serde_json::to_string_pretty(manifest).context("encoding the manifest")?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
