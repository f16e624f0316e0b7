//! `seal --cluster` (DESIGN section 10 "Seal"): one request seals every node of a cluster vault.
//!
//! The node asked writes a new `Meta/seal-epoch` row (shared, so in etcd) with its audit entry
//! (`sys.seal_cluster`), in one commit. Every node's watch brings the change
//! (`vault/cluster.rs`'s `apply_change`): from that moment the node refuses verifies as sealed,
//! and a thread of its own seals it as `seal` does (its `sys.seal` entry, details `cluster`
//! and `requested_on`, and a last checkpoint in its own log). The node asked answers once
//! every live node has applied the change or fenced itself ([`Vault::await_cluster`], as a
//! revoke), sealing itself last. A node that was down meanwhile starts sealed anyway; the
//! watch starts at the revision the node opened at, so an old seal-epoch is never replayed,
//! and a node unsealed after a cluster seal stays unsealed.
//!
//! ```text
//! Meta/seal-epoch   u8 version (1), 16 random bytes (each cluster seal a new value, so each
//!                   is a change every watch delivers), the requesting node's id (UTF-8, rest)
//! ```

use std::sync::atomic::Ordering;

use super::Vault;
use crate::Result;
use crate::audit::Event;
use crate::context::{Actor, Context};
use crate::crypto::fill_random;
use crate::storage::{Batch, Space};

/// The row every node's watch acts on.
pub(crate) const META_SEAL_EPOCH: &[u8] = b"seal-epoch";
/// The seal-epoch format this build writes and reads.
const EPOCH_VERSION: u8 = 1;
/// Tries of a cluster seal whose write conflicts with another node's (two at once).
const TRIES: usize = 4;

impl Vault {
    /// Seals every node of the cluster (see the module doc); this node last. Refused on one
    /// host ([`Error::InvalidInput`](crate::Error::InvalidInput)) and while this node is sealed.
    pub fn seal_cluster(&self, ctx: &Context) -> Result<()> {
        let node = self.node()?;
        self.keys()?;
        let mut epoch = vec![EPOCH_VERSION];
        let mut random = [0u8; 16];
        fill_random(&mut random);
        epoch.extend_from_slice(&random);
        epoch.extend_from_slice(node.state.node_id().as_bytes());
        *node.own_seal.lock().unwrap_or_else(|e| e.into_inner()) = Some(epoch.clone());
        let mut tries = 0;
        loop {
            // Read first: the write compares the row's revision with the one last read.
            self.inner.store.get(Space::Meta, META_SEAL_EPOCH)?;
            let mut batch = Batch::default();
            batch.insert(Space::Meta, META_SEAL_EPOCH, &epoch);
            match self.commit(ctx, batch, Event::new("sys.seal_cluster", "ok")) {
                Ok(_) => break,
                Err(e) if e.is_conflict() && tries + 1 < TRIES => tries += 1,
                Err(e) => return Err(e),
            }
        }
        node.sealing.store(true, Ordering::Release);
        self.await_cluster();
        self.seal(ctx)
    }

    /// A new `Meta/seal-epoch` came through the watch: refuse verifies now and seal on a
    /// thread of its own (sealing commits and signs, which the watch's task must not wait
    /// for). The change this node made itself is left to [`Vault::seal_cluster`].
    pub(crate) fn follow_cluster_seal(&self, value: &[u8]) {
        let Ok(node) = self.node() else { return };
        let own = node.own_seal.lock().unwrap_or_else(|e| e.into_inner());
        if own.as_deref() == Some(value) || self.is_sealed() {
            return;
        }
        drop(own);
        let requested_on = match value.split_first() {
            Some((&EPOCH_VERSION, rest)) if rest.len() >= 16 => {
                String::from_utf8_lossy(&rest[16..]).into_owned()
            }
            // A newer format is still a seal: sealing is the safe reading of it.
            _ => "unknown".to_owned(),
        };
        node.sealing.store(true, Ordering::Release);
        let vault = self.clone();
        std::thread::spawn(move || {
            let ctx = Context::new(Actor::Operator).with_via("cluster");
            let event = Event::new("sys.seal", "ok")
                .detail("cluster", true)
                .detail("requested_on", requested_on.as_str());
            if let Err(e) = vault.seal_with(&ctx, event) {
                tracing::error!(error = %e, "sealed for a cluster seal, but its audit entry or checkpoint was not written");
            }
        });
    }

    /// A keyring changed in etcd that this node's root key does not open (rotated after a
    /// rekey through another node, `vault/cluster.rs`): refuse verifies now and seal on a
    /// thread of its own, audited as a cluster seal is, to be unsealed with the new credential.
    pub(crate) fn seal_for_keyring(&self) {
        let Ok(node) = self.node() else { return };
        if self.is_sealed() || node.sealing.swap(true, Ordering::AcqRel) {
            return;
        }
        let vault = self.clone();
        std::thread::spawn(move || {
            let ctx = Context::new(Actor::Operator).with_via("cluster");
            let event = Event::new("sys.seal", "ok")
                .detail("cluster", true)
                .detail("reason", "rekeyed");
            if let Err(e) = vault.seal_with(&ctx, event) {
                tracing::error!(error = %e, "sealed for a keyring this node cannot open, but its audit entry or checkpoint was not written");
            }
        });
    }

    /// Unsealed again: a later cluster seal applies anew.
    pub(crate) fn clear_cluster_seal(&self) {
        if let Some(node) = self.inner.node.get() {
            node.sealing.store(false, Ordering::Release);
            *node.own_seal.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}
