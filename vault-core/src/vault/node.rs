//! What a cluster node holds of its cluster for as long as its vault is open: the etcd handle,
//! its live registration, its watch-fed view and the watch of the others' rate-limit tallies
//! (see `vault/cluster.rs`).
//!
//! A file of its own so that the vault handle can hold one without importing the cluster code
//! that opens it.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

use crate::Result;
use crate::storage::etcd::EtcdState;
use crate::storage::etcd::rates::RatesWatch;
use crate::storage::etcd::registry::Registration;
use crate::storage::etcd::watch::View;

/// A cluster node's etcd handle, live registration (revoked when the vault closes) and view.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) state: Arc<EtcdState>,
    pub(crate) registration: Registration,
    /// The watch-fed view, started once the vault is open.
    pub(crate) view: OnceLock<View>,
    /// The watch of the other nodes' rate-limit tallies, started with the view.
    pub(crate) rates: OnceLock<RatesWatch>,
    /// A cluster seal reached this node and its audited seal is under way: verifies are
    /// refused from the moment the change is applied (`vault/cluster_seal.rs`).
    pub(crate) sealing: AtomicBool,
    /// The `Meta/seal-epoch` value of the cluster seal this node asked for, which its own
    /// watch brings back: it seals itself, once, as the one that asked.
    pub(crate) own_seal: Mutex<Option<Vec<u8>>>,
    /// Waits for the cluster that took the timed wait (`Vault::await_cluster`).
    pub(crate) timed_waits: AtomicU64,
}

impl Node {
    /// Registers the node `state` was opened for (refused if its id is live elsewhere).
    pub(crate) fn register(state: Arc<EtcdState>) -> Result<Node> {
        let registration = state.register()?;
        Ok(Node {
            state,
            registration,
            view: OnceLock::new(),
            rates: OnceLock::new(),
            sealing: AtomicBool::new(false),
            own_seal: Mutex::new(None),
            timed_waits: AtomicU64::new(0),
        })
    }
}
