//! Restoring a cluster node's backup (format 2, see [`crate::backup`]): the vault's shared
//! rows into a new etcd prefix, once for the whole cluster, and the node's own audit log and
//! checkpoints into its new data directory.
//!
//! A backup taken through node N holds every shared row at one etcd revision and N's own rows
//! and log; each node of the restored cluster is restored from the backup taken through it,
//! all of them into the same prefix. The first restore into an empty prefix *claims* it
//! (`storage/etcd/backup.rs`) and writes the shared rows of its backup; the restores after it
//! find the prefix already restored and write only their node's part. Which backup's shared
//! rows a restored cluster runs on is what the first restore wrote; the claim names that
//! backup, and a restore from a backup of another vault is refused before anything is written.
//!
//! The file is read twice: once whole, to check it (a truncated or corrupted file writes
//! nothing, in etcd or on disk), then again for each part. The node part is the one-host
//! restore's (`backup/restore.rs`): built in a staging directory, opened as the node (which
//! registers it under the prefix), checked, given its `sys.restore` entry, renamed into place.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{Vault, VaultOptions};
use crate::backup::restore::{Target, check_new_dir, restore, shared_rows};
use crate::backup::{RestoreReport, verify_backup};
use crate::error::io;
use crate::storage::StorageError;
use crate::storage::etcd::backup::Claim;
use crate::storage::etcd::{EtcdState, Timing};
use crate::storage::etcd_config::EtcdConfig;
use crate::{Error, Result};

/// What [`Vault::restore_cluster`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRestoreReport {
    /// The node's part: its data directory, its log.
    pub node: RestoreReport,
    /// Shared rows this restore wrote into the prefix; `None` when an earlier restore of the
    /// same backup had written them, and only the node's part was left.
    pub shared_rows: Option<u64>,
}

impl Vault {
    /// Restores node `etcd.node_id` of a cluster vault from the backup in `file` (taken
    /// through that node): the shared rows into `etcd.prefix` if it is empty (refused if it
    /// holds anything but an earlier restore of the same vault), the node's log into `dir`, a
    /// new or empty directory. See the module doc. The node is left closed and sealed; it
    /// unseals with the credentials that were current when the backup ran. `progress` gets
    /// the bytes read, pass by pass.
    pub fn restore_cluster(
        file: &Path,
        dir: &Path,
        etcd: &EtcdConfig,
        progress: impl FnMut(u64),
    ) -> Result<ClusterRestoreReport> {
        Vault::restore_cluster_from(file, file, dir, etcd, progress)
    }

    /// As [`Vault::restore_cluster`], with the shared rows taken from backup `shared` (of
    /// any node of the vault, taken at or before `node`) and the node's log from backup
    /// `node`: what restoring from a `backup --cluster` directory does, where the first
    /// node's backup gives every node its shared rows, so the nodes restore in any order.
    pub fn restore_cluster_from(
        shared: &Path,
        node: &Path,
        dir: &Path,
        etcd: &EtcdConfig,
        mut progress: impl FnMut(u64),
    ) -> Result<ClusterRestoreReport> {
        check_new_dir(dir)?;
        let node_summary = verify_backup(open(node)?, &mut progress)?;
        let Some(origin) = &node_summary.cluster else {
            return Err(Error::Backup(
                "it is the backup of a one-host vault: restore it into a data directory".into(),
            ));
        };
        if origin.node_id != etcd.node_id.as_str() {
            return Err(Error::Backup(format!(
                "it holds the audit log of node {}, not of node {}: each node restores its own \
                 log",
                origin.node_id,
                etcd.node_id.as_str()
            )));
        }
        let node_claim = ClaimValue {
            vault_id: node_summary.vault_id,
            revision: origin.revision,
            sha256: node_summary.sha256,
        };
        let ours = if shared == node {
            node_claim
        } else {
            let summary = verify_backup(open(shared)?, &mut progress)?;
            let Some(first) = &summary.cluster else {
                return Err(Error::Backup(format!(
                    "{} is the backup of a one-host vault",
                    shared.display()
                )));
            };
            let claim = ClaimValue {
                vault_id: summary.vault_id,
                revision: first.revision,
                sha256: summary.sha256,
            };
            node_claim.covered_by(&claim)?;
            claim
        };
        let state = EtcdState::open(etcd, Timing::default())?;
        let write_shared = match state.claim_restore(&ours.encode())? {
            Claim::Claimed => true,
            Claim::Found { claim, complete } => {
                ours.against(&ClaimValue::decode(&claim)?, complete)?
            }
        };
        let rows = match write_shared {
            true => {
                let rows = shared_rows(open(shared)?)?
                    .map(|row| row.map_err(|e| StorageError::other(e.to_string())));
                Some(state.write_restored(rows, &mut progress)?)
            }
            false => None,
        };
        drop(state);
        let node = restore(
            open(node)?,
            dir,
            Target::Node {
                node_id: etcd.node_id.as_str(),
            },
            &|d| Vault::open_cluster(d, etcd, &VaultOptions::default()),
            progress,
        )?;
        Ok(ClusterRestoreReport {
            node,
            shared_rows: rows,
        })
    }
}

/// What a restore's claim on its prefix holds, naming the backup whose shared rows it writes:
///
/// ```text
/// u8        claim format (1)
/// [u8; 8]   vault id
/// u64       etcd revision of the shared rows
/// [u8; 32]  SHA-256 of the backup file
/// ```
struct ClaimValue {
    vault_id: [u8; 8],
    revision: u64,
    sha256: [u8; 32],
}

const CLAIM_FORMAT: u8 = 1;
const CLAIM_LEN: usize = 1 + 8 + 8 + 32;

impl ClaimValue {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CLAIM_LEN);
        bytes.push(CLAIM_FORMAT);
        bytes.extend_from_slice(&self.vault_id);
        bytes.extend_from_slice(&self.revision.to_be_bytes());
        bytes.extend_from_slice(&self.sha256);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<ClaimValue> {
        let unknown = || {
            Error::Backup(
                "the prefix holds a restore this keyvault does not know; restore into a new \
                 prefix"
                    .into(),
            )
        };
        if bytes.len() != CLAIM_LEN || bytes[0] != CLAIM_FORMAT {
            return Err(unknown());
        }
        let mut claim = ClaimValue {
            vault_id: [0; 8],
            revision: 0,
            sha256: [0; 32],
        };
        claim.vault_id.copy_from_slice(&bytes[1..9]);
        let mut revision = [0u8; 8];
        revision.copy_from_slice(&bytes[9..17]);
        claim.revision = u64::from_be_bytes(revision);
        claim.sha256.copy_from_slice(&bytes[17..]);
        Ok(claim)
    }

    /// Whether this restore, finding `found` (complete or not), writes the shared rows
    /// (`true`: its own claim, cut short before) or only its node's part (`false`); refused
    /// when the prefix holds another vault, another backup's unfinished restore, or shared
    /// rows newer than this node's log covers.
    fn against(&self, found: &ClaimValue, complete: bool) -> Result<bool> {
        if found.sha256 == self.sha256 && found.vault_id == self.vault_id {
            return Ok(!complete);
        }
        if found.vault_id == self.vault_id && !complete {
            return Err(Error::Backup(
                "the prefix is being restored from another backup, whose restore has not \
                 finished: finish it first (run it again)"
                    .into(),
            ));
        }
        self.covered_by(found)?;
        Ok(false)
    }

    /// Refuses shared rows `shared` that this node's backup does not cover: of another
    /// vault, or read at a later revision (this node's log would then lack entries of its
    /// own changes that the rows hold).
    fn covered_by(&self, shared: &ClaimValue) -> Result<()> {
        if shared.vault_id != self.vault_id {
            return Err(Error::Backup(format!(
                "the shared state is of another vault ({}, this backup is of {}); restore \
                 into a new prefix",
                hex::encode(shared.vault_id),
                hex::encode(self.vault_id)
            )));
        }
        if self.revision < shared.revision {
            return Err(Error::Backup(format!(
                "this backup was taken at etcd revision {}, before the one the shared state \
                 comes from ({}): this node's log would lack entries for changes the restored \
                 vault holds; restore first from the backup taken first",
                self.revision, shared.revision
            )));
        }
        Ok(())
    }
}

fn open(file: &Path) -> Result<impl Read> {
    let f = File::open(file).map_err(io(|| format!("opening {}", file.display())))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}
