//! `keyvault operator backup` (a running vault, over HTTP) and `operator restore` (offline).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;
use vault_core::Vault;
use vault_core::backup::{BackupSummary, verify_backup};

use crate::cli::{BackupArgs, RestoreArgs};
use crate::client::client;
use crate::config::Config;
use crate::output::{Out, bytes_progress, with_bytes_progress};

/// `FILE.tmp` next to `FILE`.
fn temp_path(file: &Path) -> anyhow::Result<PathBuf> {
    let name = file
        .file_name()
        .with_context(|| format!("-o {}: give a file name", file.display()))?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(file.with_file_name(tmp))
}

/// The directory holding `file`, for the fsync after the rename.
fn parent_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `keyvault operator backup -o FILE`.
pub fn backup(args: &BackupArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let file = &args.output;
    if file.is_dir() {
        bail!("-o {} is a directory: give a file name", file.display());
    }
    if fs::symlink_metadata(file).is_ok() && !args.force {
        bail!(
            "{} exists: choose another file, or pass --force to replace it",
            file.display()
        );
    }
    let tmp = temp_path(file)?;
    let client = client(&out.client)?;
    let written = download(&client, &tmp).and_then(|summary| {
        fs::rename(&tmp, file)
            .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
        let parent = parent_of(file);
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", parent.display()))?;
        Ok(summary)
    });
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            // Only our own partial download is removed; FILE itself is untouched.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let value = json!({
        "file": file,
        "bytes": summary.bytes,
        "records": summary.records,
        "captured": summary.captured,
        "vault_id": hex::encode(summary.vault_id),
        "created_at": summary.created_at,
        "sha256": hex::encode(summary.sha256),
    });
    out.value(&value, || {
        format!(
            "wrote a backup of vault {} to {} ({} bytes: {} records, and {} store writes captured while \
             it was read, the audit log's own bookkeeping among them)\n\
             sha256 {}\n\
             It restores with `keyvault operator restore {} --data-dir DIR` and unseals with the \
             passphrase or shares that are current now.",
            hex::encode(summary.vault_id),
            file.display(),
            summary.bytes,
            summary.records,
            summary.captured,
            hex::encode(summary.sha256),
            file.display(),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Streams the backup into `tmp` (0600), syncs it, and checks it end to end.
pub(super) fn download(
    client: &crate::client::Client,
    tmp: &Path,
) -> anyhow::Result<BackupSummary> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // A leftover FILE.tmp keeps its old mode through `open`: make it owner-only.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    let mut sink = BufWriter::new(&file);
    let bar = bytes_progress("backing up", None);
    let streamed = client.stream("/v1/sys/backup", |chunk| {
        sink.write_all(chunk)
            .with_context(|| format!("writing {}", tmp.display()))?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    streamed?;
    sink.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(sink);
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    let reread = File::open(tmp).with_context(|| format!("reading {}", tmp.display()))?;
    verify_backup(BufReader::with_capacity(1 << 20, reread), |_| {}).with_context(|| {
        "the backup the vault sent does not check out (the connection may have broken off); \
         run the backup again"
    })
}

/// `keyvault operator restore FILE --data-dir DIR` (or `--config FILE`: a cluster node, in
/// `cluster_restore.rs`).
pub fn restore(args: &RestoreArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    let Some(data_dir) = args.data_dir.clone().or(config.data_dir.clone()) else {
        bail!("give --data-dir DIR (or --config FILE with data_dir, or KEYVAULT_DATA_DIR)");
    };
    if let Some(etcd) = config.cluster().map_err(anyhow::Error::msg)? {
        return super::cluster_restore::restore(&args.file, &data_dir, &etcd, out);
    }
    let input =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let size = input.metadata().map(|m| m.len()).ok();
    let result = with_bytes_progress("restoring", size, |done| {
        Vault::restore(BufReader::with_capacity(1 << 20, input), &data_dir, done)
    });
    let report = result.with_context(|| {
        format!(
            "restoring {} into {}",
            args.file.display(),
            data_dir.display()
        )
    })?;
    let value = json!({
        "data_dir": report.dir,
        "vault_id": hex::encode(report.backup.vault_id),
        "records": report.backup.records,
        "captured": report.backup.captured,
        "audit_entries": report.audit_entries,
        "checkpoint_size": report.checkpoint_size,
        "public_key": report.audit_public_key,
        "sha256": hex::encode(report.backup.sha256),
    });
    out.value(&value, || {
        let checkpoint = match report.checkpoint_size {
            Some(size) => format!("its last signed checkpoint covers {size}"),
            None => "no checkpoint was signed yet".to_owned(),
        };
        format!(
            "restored vault {} into {}: {} records and {} changes made during the backup.\n\
             Audit log: {} entries restored, then a sys.restore entry; {checkpoint}. Audit public key (compare it with the one \
             pinned at init):\n  {}\n\
             Next: keyvault serve --data-dir {}, then keyvault unseal with the passphrase or \
             shares that were current when the backup was taken.",
            hex::encode(report.backup.vault_id),
            report.dir.display(),
            report.backup.records,
            report.backup.captured,
            report.audit_entries,
            report.audit_public_key,
            report.dir.display(),
        )
    });
    Ok(ExitCode::SUCCESS)
}
