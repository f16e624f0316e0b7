//! What a cluster node holds of its cluster for as long as its vault is open: the etcd handle,
//! its live registration and its watch-fed view (see `vault/cluster.rs`).
//!
//! A file of its own so that the vault handle can hold one without importing the cluster code
//! that opens it.

use std::sync::{Arc, OnceLock};

use crate::Result;
use crate::storage::etcd::EtcdState;
use crate::storage::etcd::registry::Registration;
use crate::storage::etcd::watch::View;

/// A cluster node's etcd handle, live registration (revoked when the vault closes) and view.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) state: Arc<EtcdState>,
    pub(crate) registration: Registration,
    /// The watch-fed view, started once the vault is open.
    pub(crate) view: OnceLock<View>,
}

impl Node {
    /// Registers the node `state` was opened for (refused if its id is live elsewhere).
    pub(crate) fn register(state: Arc<EtcdState>) -> Result<Node> {
        let registration = state.register()?;
        Ok(Node {
            state,
            registration,
            view: OnceLock::new(),
        })
    }
}
