//! Rate limits shared approximately between the nodes of a cluster (DESIGN section 10): the
//! node's tally sealed for etcd and the other nodes' tallies opened and taken out of its
//! buckets (the accounting is `keys/rate_share.rs`, the etcd rows `storage/etcd/rates.rs`).
//!
//! Key ids and counts are not secrets, but which keys are busy, and how busy, is: so a tally
//! goes to etcd as every other row this vault writes there, a record envelope (`record.rs`)
//! under the keyring's current term, its associated data binding it to the node:
//!
//! ```text
//! envelope: record::seal(keyring, Space::Meta, "rates/" node id, version, tally bytes)
//! version:  the publishing node's clock (Unix ms) when it sealed the tally
//! ```
//!
//! No `Meta` row has such an id, so a tally can never pass for a row, nor one node's for
//! another's. A node takes a node's tally only if its version is later than the last it took
//! from that node: a tally put back in etcd (or seen twice) is not counted twice. A tally
//! that does not open (a keyring term this node does not know yet, say) is skipped.

use std::collections::HashMap;
use std::sync::Arc;

use super::node::Node;
use super::{Inner, Vault};
use crate::Result;
use crate::clock::Clock;
use crate::keys::Tally;
use crate::record;
use crate::storage::Space;

/// The envelope id of node `node`'s tally (see the module doc).
fn envelope_id(node: &str) -> Vec<u8> {
    let mut id = b"rates/".to_vec();
    id.extend_from_slice(node.as_bytes());
    id
}

impl Vault {
    /// Starts sharing this node's rate limits: its tally published beside each report, the
    /// others' taken out of its buckets.
    pub(super) fn share_rates(&self, node: &Node) -> Result<()> {
        self.inner.key_book.share_rates();
        let own = node.state.node_id().to_owned();
        let weak = Arc::downgrade(&self.inner);
        node.registration.set_rates(Box::new(move || {
            let vault = Vault {
                inner: weak.upgrade()?,
            };
            let sealed = vault.sealed_tally(&own);
            let_go(vault);
            sealed
        }));
        let own = node.state.node_id().to_owned();
        let weak = Arc::downgrade(&self.inner);
        let mut last = HashMap::new();
        let watch = node.state.watch_rates(Box::new(move |from, value| {
            if from == own {
                return;
            }
            if let Some(inner) = weak.upgrade() {
                let vault = Vault { inner };
                vault.take_tally(from, value, &mut last);
                let_go(vault);
            }
        }))?;
        let _ = node.rates.set(watch);
        Ok(())
    }

    /// This node's tally since the last one, sealed, if it has one (and is unsealed).
    fn sealed_tally(&self, own: &str) -> Option<Vec<u8>> {
        let keys = self.keys().ok()?;
        let tally = self.inner.key_book.tally_taken();
        if tally.is_empty() {
            return None;
        }
        // The wall clock, not the vault's: versions must grow across the node's restarts.
        let version = Clock::system().now_ms();
        Some(record::seal(
            &keys.keyring,
            Space::Meta,
            &envelope_id(own),
            version,
            &tally.encode(),
        ))
    }

    /// Takes node `from`'s tally `value` out of this node's buckets, unless it does not open,
    /// or is not later than the last one taken from that node (`last`, by node).
    fn take_tally(&self, from: &str, value: &[u8], last: &mut HashMap<String, u64>) {
        let Ok(keys) = self.keys() else {
            return;
        };
        let opened = match record::open_versioned(
            &keys.keyring,
            Space::Meta,
            &envelope_id(from),
            value,
        ) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(node = %from, error = %e, "a node's rate-limit tally in etcd does not open; skipped");
                return;
            }
        };
        // Only a node that sealed a tally under the vault's keyring gets an entry: the map
        // holds at most the cluster's nodes.
        let seen = last.entry(from.to_owned()).or_default();
        if opened.version <= *seen {
            return;
        }
        *seen = opened.version;
        match Tally::decode(&opened.plain) {
            Some(tally) => self.inner.key_book.lose_taken(&tally),
            None => {
                tracing::warn!(node = %from, "a node's rate-limit tally is not one this build reads; skipped")
            }
        }
    }
}

/// Drops a handle taken from a weak reference on a thread of its own if it is the vault's
/// last: closing the vault stops the registration thread and joins it, which the
/// registration thread itself (where the tally is taken) must not do.
fn let_go(vault: Vault) {
    if Arc::strong_count(&vault.inner) == 1 {
        std::thread::spawn(move || drop::<Arc<Inner>>(vault.inner));
    }
}
