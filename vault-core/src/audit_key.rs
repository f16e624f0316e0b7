//! Rotating the audit key: a new audit key generation (signing key, digest key, index key).
//!
//! After an operator leaves, anyone who once unwrapped the keyring could otherwise sign
//! checkpoints forever. [`Vault::rotate_audit_key`] adds a generation to the keyring (a new
//! random secret; the old generations stay, so old checkpoints still verify and digests made
//! under them can still be computed), and commits it with an `audit.key_rotated` entry that
//! carries the new verifier key. The audit writer switches keys at that entry: the first
//! checkpoint that includes it is signed by the old key and the new one, later ones by the new
//! one only (see [`audit::rotation`](crate::audit::rotation)). Then the owner index is rebuilt
//! under the new index key, online (see `keys::owner_index`).

use crate::audit::Event;
use crate::audit::log::NewSigner;
use crate::audit::rotation::KEY_ROTATED;
use crate::clock::now;
use crate::context::Context;
use crate::keys::IndexRebuild;
use crate::storage::{Batch, Space};
use crate::vault::{META_KEYRING, generation_signer};
use crate::{Error, Result, Vault};

/// What [`Vault::rotate_audit_key`] did.
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

impl Vault {
    /// Makes a new audit key generation and rebuilds the owner index under it; see the module
    /// documentation. `progress(done, total)` is called after each batch of the rebuild. An
    /// interrupted rebuild is finished by calling this again (it moves the entries of every
    /// generation not yet rebuilt) or [`Vault::rebuild_owner_index`].
    pub fn rotate_audit_key(
        &self,
        ctx: &Context,
        progress: impl FnMut(u64, u64),
    ) -> Result<AuditKeyRotation> {
        let (generation, public_key, seq, transition_size) = self.start_audit_key_rotation(ctx)?;
        let index = self.rebuild_owner_index(ctx, progress)?;
        Ok(AuditKeyRotation {
            generation,
            public_key,
            seq,
            transition_size,
            index,
        })
    }

    /// The rotation without the index rebuild: the new generation committed with its entry
    /// and the transition checkpoint signed. Returns the generation, its verifier key, the
    /// entry's sequence number and the transition checkpoint's size.
    pub(crate) fn start_audit_key_rotation(
        &self,
        ctx: &Context,
    ) -> Result<(u32, String, u64, u64)> {
        self.keys()?;
        // The transition of an earlier rotation is signed by now (a checkpoint after its entry
        // is signed with both keys): never start another before it, or the older key's
        // auditors could not follow.
        self.inner.audit.checkpoint()?;
        if self
            .inner
            .audit
            .rotations()?
            .last()
            .is_some_and(|r| r.checkpoint.is_none())
        {
            return Err(Error::Conflict(
                "the previous audit key rotation has no transition checkpoint yet; try again"
                    .into(),
            ));
        }
        let (generation, public_key, seq) = {
            let _admin = self.admin();
            // Key creation holds this shared from reading the index key to committing.
            let _gate = self
                .inner
                .index_gate
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let keys = self.keys()?;
            let keyring = keys.keyring.audit_rotated(now());
            let generation = keyring.audit_current().number;
            let signer = generation_signer(keyring.audit_current(), &self.vault_id())?;
            let public_key = signer.verifier().to_string();
            let mut batch = Batch::default();
            batch.insert(
                Space::Meta,
                META_KEYRING,
                &self.seal_keyring(&keys, &keyring),
            );
            let event = Event::new(KEY_ROTATED, "ok")
                .detail("generation", generation)
                .detail("public_key", public_key.as_str());
            let new = NewSigner { generation, signer };
            let seq = self.inner.audit.commit_rotation(ctx, batch, event, new)?;
            self.set_keyring(&keys, keyring);
            (generation, public_key, seq)
        };
        // The transition checkpoint now, rather than within the second.
        let signed = self.inner.audit.checkpoint()?;
        let transition_size = self
            .inner
            .audit
            .rotations()?
            .iter()
            .find(|r| r.seq == seq)
            .and_then(|r| r.checkpoint)
            .unwrap_or(signed.checkpoint.size);
        Ok((generation, public_key, seq, transition_size))
    }
}
