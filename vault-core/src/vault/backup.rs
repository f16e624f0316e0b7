//! The handle's online backup and restore: thin delegations to [`crate::backup`], which knows
//! no handle, only the store, the audit log and the usage figures handed to it here.

use std::io::{Read, Write};
use std::path::Path;

use super::Vault;
use crate::Result;
use crate::audit::Event;
use crate::audit::log::AuditLog;
use crate::audit::merkle::Hash;
use crate::backup::restore::Target;
use crate::backup::{self, BackupReport, Reopen, RestoreReport, Source};
use crate::context::Context;
use crate::shamir::VaultId;
use crate::storage::{Batch, Store};

impl Vault {
    /// Writes a consistent copy of the whole vault to `out` while it keeps serving (see
    /// [`crate::backup`]). Works sealed or unsealed (sealed, no new checkpoint is signed).
    /// Memory use does not grow with the vault; changes made during the backup spill to an
    /// unnamed temporary file in the data directory past [`crate::storage::CAPTURE_MEMORY`]
    /// bytes. `progress` gets the count of frames written. One backup runs at a time: another
    /// answers [`crate::Error::Conflict`]. Audited as `sys.backup`.
    pub fn backup(
        &self,
        ctx: &Context,
        out: &mut dyn Write,
        mut progress: impl FnMut(u64),
    ) -> Result<BackupReport> {
        let source = Source {
            store: &self.inner.store,
            audit: &self.inner.audit,
            spill_dir: self.dir(),
            vault_id: self.vault_id(),
            figures: &|| self.usage_for_backup(),
            figures_apart: self.inner.usage.is_some(),
            node_id: self.backup_node_id(),
        };
        let result = backup::write(&source, ctx, out, &mut progress);
        if let Err(e) = &result {
            let event = Event::new("sys.backup", e.code());
            if let Err(logged) = self.commit(ctx, Batch::default(), event) {
                tracing::warn!(error = %logged, "the failed backup could not be audited");
            }
        }
        result
    }

    /// On a cluster node, its id (a backup of it is a cluster node's backup).
    #[cfg(feature = "etcd")]
    fn backup_node_id(&self) -> Option<&str> {
        self.cluster_node_id().ok()
    }

    /// Without cluster support, every vault is one host's.
    #[cfg(not(feature = "etcd"))]
    fn backup_node_id(&self) -> Option<&str> {
        None
    }

    /// Restores the backup read from `input` into `dir`, a new or empty directory, all or nothing:
    /// the vault is built in a staging directory next to `dir` (`.NAME.restoring`, removed on any
    /// failure; a leftover from an interrupted restore is replaced), checked (it opens, every audit
    /// entry hashes to its stored leaf, its last checkpoint verifies with its audit public key and
    /// matches its stored tree), given a checkpoint file rebuilt from its stored checkpoints, then
    /// renamed into place. The directory is 0700 and every file in it 0600. The restored log gets a
    /// `sys.restore` entry (actor `operator`) naming the backup's SHA-256 and creation time. The
    /// vault is left closed and sealed; it unseals with the credentials that were current when the
    /// backup ran. `progress` gets the bytes read.
    pub fn restore(
        input: impl Read,
        dir: &Path,
        progress: impl FnMut(u64),
    ) -> Result<RestoreReport> {
        backup::restore::restore::<Vault>(
            input,
            dir,
            Target::OneHost,
            &|d| Vault::open(d),
            progress,
        )
    }
}

impl Reopen for Vault {
    fn vault_id(&self) -> VaultId {
        Vault::vault_id(self)
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    fn audit_public_keys(&self) -> Result<Vec<String>> {
        Vault::audit_public_keys(self)
    }

    fn audit_root(&self, size: u64) -> Result<Hash> {
        Vault::audit_root(self, size)
    }

    fn close(self) {
        #[cfg(feature = "etcd")]
        self.leave_cluster();
    }
}
