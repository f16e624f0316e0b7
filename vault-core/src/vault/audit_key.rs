//! The audit key rotation through the handle: a new audit key generation in the keyring, its
//! entry and transition checkpoint, then the owner index rebuilt under its index key (see
//! [`crate::audit_key`]).
//!
//! On a cluster node the rotation is made once, through any node (DESIGN section 10), but each
//! node's log is its own: a node whose keyring gained a generation its log has no
//! `audit.key_rotated` entry for (the watch brought another node's rotation, or the node was
//! sealed or down meanwhile and unsealed with the new keyring) commits its own entry for it
//! ([`Vault::follow_audit_key`]), so its transition checkpoint is signed by the old key and
//! the new one and an auditor's pinned key follows it, as on one host. Until then it signs with
//! the generation its log last announced (`set_unsealed`), never with one its log does not
//! announce.

use super::{META_KEYRING, generation_signer, origin};
use crate::audit::Event;
use crate::audit::log::NewSigner;
use crate::audit::note::NoteSigner;
use crate::audit::rotation::KEY_ROTATED;
use crate::audit_key::AuditKeyRotation;
use crate::context::{Actor, Context};
use crate::keyring::Keyring;
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
            // What the caller is given is named as init's key is, `keyvault/<vault id>`: on a
            // cluster node the log's own name would be one node's, and every node's log
            // (each named by its origin) verifies with the vault's name.
            let printed =
                generation_signer(keyring.audit_current(), &origin(&self.vault_id(), None))?
                    .verifier()
                    .to_string();
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
            (generation, printed, seq)
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

    /// [`Vault::follow_audit_key`], its failure logged rather than returned: not a reason to
    /// stay sealed or to drop a watched change, since the log goes on under the key it last
    /// announced, and the next keyring change or unseal tries again.
    pub(crate) fn follow_audit_key_or_log(&self) {
        if let Err(e) = self.follow_audit_key() {
            tracing::error!(error = %e, "this node's audit log does not follow the audit key rotation yet");
        }
    }

    /// Brings this node's log up to its keyring's audit generation (see the module doc): if the
    /// log's last `audit.key_rotated` entry (or, with none, the first generation) is older than
    /// the keyring's current generation, commits an entry for it, from which the log signs with
    /// it, and signs the transition checkpoint (old key and new). Returns the entry's sequence
    /// number, or `None` when the log was up to date. Nothing on one host, where the rotation
    /// and its entry are one commit.
    pub(crate) fn follow_audit_key(&self) -> Result<Option<u64>> {
        let behind = |keys: &super::Keys| -> Result<bool> {
            Ok(self.logged_audit_generation(&keys.keyring)? < keys.keyring.audit_current().number)
        };
        if !behind(&*self.keys()?)? {
            return Ok(None);
        }
        // An earlier rotation's transition is signed first, as before any rotation.
        self.inner.audit.checkpoint()?;
        let seq = {
            let _admin = self.admin();
            let keys = self.keys()?;
            if !behind(&keys)? {
                return Ok(None);
            }
            let current = keys.keyring.audit_current();
            let signer = generation_signer(current, self.origin())?;
            let public_key = signer.verifier().to_string();
            let event = Event::new(KEY_ROTATED, "ok")
                .detail("generation", current.number)
                .detail("public_key", public_key.as_str())
                .detail("cluster", true);
            let ctx = Context::new(Actor::Operator).with_via("cluster");
            let new = NewSigner {
                generation: current.number,
                signer,
            };
            self.inner
                .audit
                .commit_rotation(&ctx, Batch::default(), event, new)?
        };
        self.inner.audit.checkpoint()?;
        Ok(Some(seq))
    }

    /// The checkpoint signers an unseal sets: the key of the generation the log last
    /// announced (the keyring's current one, but on a cluster node whose keyring another
    /// node's rotation moved on while it was sealed or down, an older one until
    /// [`Vault::follow_audit_key`] announces the new one in this log), and the key of the
    /// generation before that, which signs a transition checkpoint still owed (see
    /// `audit::rotation`).
    pub(crate) fn unseal_signers(
        &self,
        keyring: &Keyring,
    ) -> Result<(NoteSigner, Option<NoteSigner>)> {
        let origin = self.origin();
        let rotations = self.inner.audit.rotations()?;
        let logged = self.logged_audit_generation(keyring)?;
        let signing = keyring
            .audit_generation(logged)
            .unwrap_or_else(|| keyring.audit_current());
        let signer = generation_signer(signing, origin)?;
        let previous = match rotations.len() {
            0 => None,
            1 => keyring.audit_generations().next().map(|g| g.number),
            n => Some(rotations[n - 2].generation),
        };
        let previous = previous
            .and_then(|n| keyring.audit_generation(n))
            .map(|g| generation_signer(g, origin))
            .transpose()?;
        Ok((signer, previous))
    }

    /// The audit key generation this vault's log last announced: its last rotation's, or the
    /// keyring's first when it has none.
    pub(crate) fn logged_audit_generation(&self, keyring: &Keyring) -> Result<u32> {
        let first = keyring.audit_generations().next().map_or(1, |g| g.number);
        Ok(self
            .inner
            .audit
            .rotations()?
            .last()
            .map_or(first, |r| r.generation))
    }
}
