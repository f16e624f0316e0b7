//! The audit key rotation through the handle: a new audit key generation in the keyring, its
//! entry and transition checkpoint, then the owner index rebuilt under its index key (see
//! [`crate::audit_key`]).

use super::{META_KEYRING, generation_signer};
use crate::audit::Event;
use crate::audit::log::NewSigner;
use crate::audit::rotation::KEY_ROTATED;
use crate::audit_key::AuditKeyRotation;
use crate::context::Context;
use crate::storage::{Batch, Space};
use crate::{Error, Result, Vault};

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
            let _gate = self.inner.key_book.index_exclusive();
            let keys = self.keys()?;
            let keyring = keys.keyring.audit_rotated(self.inner.clock.now());
            let generation = keyring.audit_current().number;
            let signer = generation_signer(keyring.audit_current(), self.origin())?;
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
