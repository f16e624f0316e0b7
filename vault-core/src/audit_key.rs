//! Rotating the audit key: a new audit key generation (signing key, digest key, index key).
//!
//! After an operator leaves, anyone who once unwrapped the keyring could otherwise sign
//! checkpoints forever. [`Vault::rotate_audit_key`](crate::Vault::rotate_audit_key) adds a generation to the keyring (a new
//! random secret; the old generations stay, so old checkpoints still verify and digests made
//! under them can still be computed), and commits it with an `audit.key_rotated` entry that
//! carries the new verifier key. The audit writer switches keys at that entry: the first
//! checkpoint that includes it is signed by the old key and the new one, later ones by the new
//! one only (see [`audit::rotation`](crate::audit::rotation)). Then the owner index is rebuilt
//! under the new index key, online (see `keys::owner_index`).
//!
//! The rotation is an operation of the vault handle as a whole (its keyring, its audit log, its
//! key component): it runs in `vault/audit_key.rs`; this module holds what it reports.

use crate::keys::IndexRebuild;

/// What [`Vault::rotate_audit_key`](crate::Vault::rotate_audit_key) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditKeyRotation {
    /// The new generation's number (the vault's first is 1).
    pub generation: u32,
    /// The new verifier key (`name+hash+base64`), which signs every checkpoint from now on.
    pub public_key: String,
    /// The sequence number of the `audit.key_rotated` entry.
    pub seq: u64,
    /// The size of the checkpoint signed by both keys.
    pub transition_size: u64,
    /// The owner index rebuild under the new index key.
    pub index: IndexRebuild,
}
