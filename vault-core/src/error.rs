//! The crate's error type. Every variant is something a caller can act on, and none carries a
//! secret: messages name files, limits and states, never a key, a share or a passphrase.

use std::path::PathBuf;

use crate::kdf::{KdfError, PassphraseTooShort};
use crate::record::RecordError;
use crate::shamir::ShareError;
use crate::storage::StorageError;

/// Result alias for vault operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a vault operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The vault is sealed: no key material is in memory.
    #[error("the vault is sealed")]
    Sealed,
    /// A cluster node whose view of the shared state is more than a second old (etcd out of
    /// reach, or the node cut off from it): it answers no verify rather than risk a stale
    /// VALID, until its view has caught up.
    #[error(
        "this node's view of the cluster is more than a second old; it answers again once it \
         has caught up with etcd"
    )]
    ClusterUnavailable,
    /// No vault has been initialised in this directory.
    #[error("no vault is initialised in {0}")]
    NotInitialized(PathBuf),
    /// The directory holds something other than a vault.
    #[error("{0} is not a keyvault data directory (it is not empty and holds no vault)")]
    NotAVault(PathBuf),
    /// `init` on a directory that already holds a vault.
    #[error("a vault is already initialised in {0}")]
    AlreadyInitialized(PathBuf),
    /// The vault was written by a newer keyvault.
    #[error("the vault's format version {found} is newer than this keyvault reads ({supported})")]
    UnsupportedFormat {
        /// Version on disk.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// Another process has the data directory open.
    #[error("the data directory {0} is in use by another keyvault process")]
    InUse(PathBuf),
    /// The passphrase or the combined shares do not unwrap the root key.
    #[error("the passphrase or shares do not unseal this vault")]
    WrongCredential,
    /// A share that cannot be used.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// A credential of the other unseal method.
    #[error("this vault is unsealed with {expected}, not with {given}")]
    WrongMethod {
        /// The vault's method.
        expected: &'static str,
        /// The method of what was given.
        given: &'static str,
    },
    /// Unusable Argon2id parameters.
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// The audit log is behind (or beside) a checkpoint of its own that the vault can see in its
    /// store, its checkpoint file or at a witness: the data directory was rolled back or
    /// forked, and the vault will not sign a checkpoint over it. The message names the sizes.
    #[error("the audit log was rolled back: {0}")]
    RolledBack(String),
    /// A caller's input is out of range or malformed; the message says which limit.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No open ceremony of this kind (`rekey`, `generate-root`) has the nonce given.
    #[error(
        "no {0} ceremony with this nonce is in progress: it was cancelled, failed or expired, or the nonce is mistyped; start a new one"
    )]
    NoCeremony(&'static str),
    /// No key or token with that id.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation does not fit the record's state (rotating a revoked key, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The audit entry was moved to an archive file: its proof is there, not in the live log.
    #[error(
        "audit entry {seq} was archived: entries before {first} were moved to an archive file (keyvault audit archive); verify it against that file"
    )]
    Archived {
        /// The entry asked for.
        seq: u64,
        /// The first entry still in the live log.
        first: u64,
    },
    /// No vault token, or one that is malformed, unknown, revoked or expired.
    #[error("missing or invalid vault token")]
    Unauthorized,
    /// A token asked for more than it holds (a role or a lifetime).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The audit log cannot take the entry, so the operation did not happen (fail closed).
    #[error("the audit log is unavailable: {0}")]
    AuditUnavailable(String),
    /// Stored bytes failed authentication or do not decode.
    #[error("stored data is corrupt or was tampered with: {0}")]
    Corrupt(String),
    /// A stored key or token record that cannot be opened: truncated, of an unknown version or
    /// keyring term, or failing authentication (tampered or moved). Corruption as
    /// [`Error::Corrupt`] is, with the cause kept typed.
    #[error("stored data is corrupt or was tampered with: {0}")]
    Record(#[from] RecordError),
    /// A backup file that cannot be restored: not a backup, of a newer backup format,
    /// truncated or corrupted. The message says which.
    #[error("the backup is unusable: {0}")]
    Backup(String),
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<PassphraseTooShort> for Error {
    fn from(e: PassphraseTooShort) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

impl Error {
    /// The error's stable code: the outcome an audit entry records for it and, for the errors
    /// a caller can act on, the `code` of the HTTP error body. One table for both, so that an
    /// auditor and an API client see the same word for the same failure.
    ///
    /// The codes are part of the stored audit log and of the API: never change one.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Sealed => "sealed",
            Error::ClusterUnavailable => "cluster_unavailable",
            Error::NotInitialized(_) => "not_initialized",
            Error::NotAVault(_) => "not_a_vault",
            Error::AlreadyInitialized(_) => "already_initialized",
            Error::UnsupportedFormat { .. } => "unsupported_format",
            Error::InUse(_) => "in_use",
            Error::WrongCredential => "wrong_credential",
            Error::Share(_) => "invalid_share",
            Error::WrongMethod { .. } => "wrong_method",
            Error::Kdf(_) => "invalid_kdf_parameters",
            Error::InvalidInput(_) => "invalid_input",
            Error::NoCeremony(_) => "invalid_nonce",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Archived { .. } => "archived",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::AuditUnavailable(_) => "audit_unavailable",
            Error::RolledBack(_) => "audit_rolled_back",
            Error::Corrupt(_) | Error::Record(_) => "corrupt",
            Error::Backup(_) => "invalid_backup",
            Error::Storage(_) => "storage",
            Error::Io { .. } => "io",
        }
    }

    /// Whether this is a [`Conflict`](crate::storage::Conflict) of a cluster's shared store:
    /// another node changed a row the operation had read, and nothing of it was applied, so
    /// reading again and redoing it is safe.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_conflict())
    }

    /// Whether this is an unseal credential refused: a wrong passphrase or shares, a share
    /// that cannot be used, or a credential of the other method. Unseal and the ceremonies
    /// answer these only after a delay, to slow guessing; anything else (a malformed request,
    /// an unknown nonce) is answered at once.
    pub fn is_refused_credential(&self) -> bool {
        matches!(
            self,
            Error::WrongCredential | Error::Share(_) | Error::WrongMethod { .. }
        )
    }
}

/// Attaches a context to an I/O error.
pub(crate) fn io(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        context: context(),
        source,
    }
}
