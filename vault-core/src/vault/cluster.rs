//! Cluster vaults (DESIGN section 10): one vault's shared spaces in etcd under a prefix, each
//! node's own state (its audit log, usage figures, caches) in its data directory.
//!
//! [`Vault::init_cluster`] makes a vault under a prefix that holds none, and the data directory
//! of the node that made it; [`Vault::open_cluster`] opens a node (making its data directory
//! the first time the node starts). Each node starts sealed and is unsealed on its own, with
//! the vault's passphrase or shares (the seal configuration and keyring are shared).
//!
//! A node registers before it writes anything (`storage/etcd/registry.rs`: a node id live
//! elsewhere is refused) and, once open, follows every change of the shared rows through a
//! watch (`storage/etcd/watch.rs`), which [`apply_change`] applies to its caches; a verify on
//! a node whose view is more than a second old fails [`Error::ClusterUnavailable`].
//!
//! # The node's data directory
//! The same layout as one host's (`DIR/store/` is a sled database, with the audit log beside
//! it), but its store holds only the node-local spaces: `Meta` (where one host keeps its format
//! version) is in etcd. So the node's store carries its own marker, `Local/cluster-node`:
//!
//! ```text
//! u8        node format (1)
//! [u8; 8]   vault id
//! ..        node id (UTF-8, the rest)
//! ```
//!
//! A node opens only a data directory whose marker names the vault under the prefix and its
//! own node id: a directory of another vault, of another node, or of a one-host vault (no
//! marker) is refused, so a misconfigured node cannot append to a log that is not its own. A
//! newer node format is refused as [`Error::UnsupportedFormat`]. The vault's own format version
//! is `Meta/format` in etcd, checked as on one host.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::cluster_seal::META_SEAL_EPOCH;
use super::node::Node;
use super::{
    Genesis, Inner, Issued, META_FORMAT, META_KEYRING, META_SEAL, State, UnsealMethod, Vault,
    VaultOptions, decode_config, read_config,
};
use crate::apikey::KeyId;
use crate::apikey::Prefix;
use crate::audit::note::NoteVerifier;
use crate::datadir::{
    INIT_DIR, LOCK_FILE, STORE_DIR, create_private_dir, is_empty_but_for, lock, sync_dir,
};
use crate::error::io;
use crate::keyring::Keyring;
use crate::shamir::VaultId;
use crate::storage::etcd::registry::NodeStatus;
use crate::storage::etcd::watch::{Change, MAX_VIEW_AGE};
use crate::storage::etcd::{EtcdState, Timing};
use crate::storage::etcd_config::{EtcdConfig, NodeId};
use crate::storage::{Batch, SharedState, Space, Store};
use crate::{Error, Result};

/// What [`Vault::await_cluster`] adds to [`MAX_VIEW_AGE`] for clocks that run at slightly
/// different rates on different hosts, and the instants taken just before and after a call.
const CLOCK_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// The node marker's name in [`Space::Local`].
const NODE_MARKER: &[u8] = b"cluster-node";
/// The node format this build writes and the newest it reads.
const NODE_FORMAT: u8 = 1;

impl Vault {
    /// Initialises a cluster vault under `etcd.prefix` (refused if the prefix holds one) and
    /// opens it unsealed as node `etcd.node_id` with data directory `dir` (created if missing,
    /// or empty), with the shares to hand out. The vault's first rows are one etcd transaction
    /// that requires them absent, so of two inits racing on one prefix only one makes a vault.
    pub fn init_cluster(
        dir: &Path,
        etcd: &EtcdConfig,
        method: &UnsealMethod,
        prefix: &Prefix,
    ) -> Result<(Vault, Issued)> {
        create_private_dir(dir)?;
        if !is_empty_but_for(dir, &[LOCK_FILE, INIT_DIR])? {
            return Err(Error::NotAVault(dir.to_path_buf()));
        }
        let lock = lock(dir)?;
        let etcd_state = open_shared(etcd)?;
        let shared: Arc<dyn SharedState> = etcd_state.clone();
        if shared.get(Space::Meta, META_FORMAT)?.is_some() {
            return Err(Error::AlreadyInitialized(prefix_path(etcd)));
        }
        let genesis = Genesis::new(method, prefix)?;
        let mut batch = genesis.batch();
        batch.insert(
            Space::Local,
            NODE_MARKER,
            &marker(&genesis.config.vault_id, &etcd.node_id),
        );
        let store = build_node_store(dir, shared, |store| match store.apply(batch) {
            Err(e) if e.is_conflict() => Err(Error::AlreadyInitialized(prefix_path(etcd))),
            other => other.map_err(Error::from),
        })?;
        let node = Node::register(etcd_state)?;
        let vault = Vault::open_store(
            dir,
            lock,
            store,
            &VaultOptions::default(),
            Some(etcd.node_id.as_str()),
        )?;
        vault.set_node(node)?;
        genesis.finish(vault)
    }

    /// Opens node `etcd.node_id` of the cluster vault under `etcd.prefix`, sealed, with data
    /// directory `dir`: made (empty of any log) the first time the node starts, refused if it
    /// belongs to another vault or node (see the module doc).
    pub fn open_cluster(dir: &Path, etcd: &EtcdConfig, options: &VaultOptions) -> Result<Vault> {
        create_private_dir(dir)?;
        let lock = lock(dir)?;
        let etcd_state = open_shared(etcd)?;
        let shared: Arc<dyn SharedState> = etcd_state.clone();
        if shared.get(Space::Meta, META_FORMAT)?.is_none() {
            return Err(Error::NotInitialized(prefix_path(etcd)));
        }
        let store_dir = dir.join(STORE_DIR);
        if !store_dir.is_dir() {
            refuse_served_id(&etcd_state, dir, &etcd.node_id)?;
        }
        // Before the node's directory is made or its log opened: a node id live elsewhere is
        // refused before this process writes anything as that node.
        let node = Node::register(etcd_state)?;
        let store = if store_dir.is_dir() {
            Store::open_with_shared(&store_dir, shared)?
        } else {
            if !is_empty_but_for(dir, &[LOCK_FILE, INIT_DIR])? {
                return Err(Error::NotAVault(dir.to_path_buf()));
            }
            build_node_store(dir, shared, |store| {
                let config = read_config(store)?;
                let mut batch = Batch::default();
                batch.insert(
                    Space::Local,
                    NODE_MARKER,
                    &marker(&config.vault_id, &etcd.node_id),
                );
                store.apply(batch).map_err(Error::from)
            })?
        };
        let config = read_config(&store)?;
        check_marker(dir, &store, &config.vault_id, &etcd.node_id)?;
        let vault = Vault::open_store(dir, lock, store, options, Some(etcd.node_id.as_str()))?;
        vault.set_node(node)?;
        Ok(vault)
    }

    /// Every node the cluster has ever registered, live or not, with when each was first
    /// registered and last seen. [`Error::InvalidInput`] on one host.
    pub fn cluster_nodes(&self) -> Result<Vec<NodeStatus>> {
        let node = self.node()?;
        Ok(node.state.nodes()?)
    }

    /// Whether this node holds its live registration (false while a lost lease is not yet
    /// registered again: the other nodes do not count it as live). [`Error::InvalidInput`] on
    /// one host.
    pub fn cluster_node_live(&self) -> Result<bool> {
        Ok(!self.node()?.registration.is_lost())
    }

    /// Ends this node's registration now (its lease revoked, so its id is free at once), for
    /// a process about to exit: the vault's last handle may otherwise be dropped on the
    /// watch's thread, which the exit cuts short, leaving the id live for the lease's 5 s. The
    /// vault stays open; call it last. Nothing on one host.
    pub fn leave_cluster(&self) {
        if let Some(node) = self.inner.node.get() {
            node.registration.release();
        }
    }

    /// Publishes the address this node's API serves on (`http://127.0.0.1:8731`, as the server
    /// bound it) in its reports, where `GET /v1/sys/cluster` lists it for `audit export
    /// --node` and `--cluster`; nothing on one host.
    pub fn set_cluster_address(&self, address: &str) {
        if let Some(node) = self.inner.node.get() {
            node.registration.set_address(address);
        }
    }

    /// This node's id, or [`Error::InvalidInput`] on one host.
    pub fn cluster_node_id(&self) -> Result<&str> {
        Ok(self.node()?.state.node_id())
    }

    /// Tells this node's reports (`storage/etcd/report.rs`) whether it is sealed; nothing on
    /// one host.
    pub(crate) fn report_sealed(&self, sealed: bool) {
        if let Some(node) = self.inner.node.get() {
            node.registration.set_sealed(sealed);
        }
        if !sealed {
            self.clear_cluster_seal();
        }
    }

    /// At unseal, before its first checkpoint is signed: a node's log must extend the latest
    /// checkpoint the node published in etcd (`storage/etcd/published.rs`), or the node stays
    /// sealed ([`Error::RolledBack`]: its data directory was rolled back). Then the log's
    /// checkpoints are published from now on. Nothing on one host.
    pub(crate) fn check_published_checkpoint(&self, verifiers: &[NoteVerifier]) -> Result<()> {
        let Some(node) = self.inner.node.get() else {
            return Ok(());
        };
        if let Some(note) = node.state.published_checkpoint()? {
            self.inner.audit.check_rollback_against(
                &note,
                verifiers,
                "the checkpoint this node published in etcd",
            )?;
        }
        let audit = Arc::downgrade(&self.inner.audit);
        node.registration.publish_checkpoints(Box::new(move || {
            let latest = audit.upgrade()?.last_checkpoint()?;
            Some((latest.checkpoint.size, latest.note))
        }));
        Ok(())
    }

    /// This node's registration in the cluster, or [`Error::InvalidInput`] on one host.
    pub(crate) fn node(&self) -> Result<&Node> {
        self.inner
            .node
            .get()
            .ok_or_else(|| Error::InvalidInput("this vault is not a cluster vault".into()))
    }

    /// Attaches the node's registration and starts its watch-fed view and the sharing of its
    /// rate limits (`rate_share.rs`), once, right after open, before the handle is shared.
    fn set_node(&self, node: Node) -> Result<()> {
        let state = Arc::clone(&node.state);
        let _ = self.inner.node.set(node);
        let weak = Arc::downgrade(&self.inner);
        let watched = Arc::clone(&state);
        let view = state.watch(Box::new(move |change| {
            if let Some(inner) = weak.upgrade() {
                let vault = Vault { inner };
                apply_change(&vault, &watched, change);
                if Arc::strong_count(&vault.inner) == 1 {
                    // The vault was closed meanwhile: closing it (its audit log, its
                    // registration) blocks, which the watch's task must not.
                    std::thread::spawn(move || drop(vault));
                }
            }
        }))?;
        let node = self.node()?;
        node.registration.report_view(&view);
        let _ = node.view.set(view);
        self.share_rates(node)
    }

    /// On a cluster node, returns once every live node has applied every change this node
    /// committed before the call, or fenced itself: a revoke is answered only then (DESIGN
    /// section 10). Nothing on one host.
    ///
    /// # Fast: every live node acknowledged
    /// Each node acknowledges the revision up to which its caches hold every change
    /// (`storage/etcd/ack.rs`, written right after its watch applied events). The target is
    /// this node's latest write revision, at or past the change's commit. The live nodes are
    /// read once, after the commit; the call returns as soon as each of them has acknowledged
    /// the target or later. Such a node never answers from an older record again: its caches
    /// only move forward (a record older than one seen is refused, a reset empties them and
    /// they refill from etcd, which has the change), so a view that goes stale later, or a
    /// seal and unseal, cannot bring the revoked key back. A sealed node acknowledges as any
    /// other (its watch runs; it caches nothing until unsealed, then reads etcd afresh).
    /// The nodes not in the set read:
    /// - a node that registered after the read: it starts sealed, its watch starts from a
    ///   revision read after its registration (so after the commit), and its caches fill only
    ///   after that, from etcd;
    /// - a node whose lease etcd had dropped by the read (expired, or the process stopping):
    ///   it answers no verify any more, because it answers only while it knows its lease holds
    ///   (`Registration::may_answer`: [`LEASE_TTL`](crate::storage::etcd::registry::LEASE_TTL)
    ///   less a margin after a keep-alive it sent that etcd confirmed, which etcd received no
    ///   earlier, so that instant is before the lease's end, itself before the read), and
    ///   after it registers again only once its view is current as of an instant after that
    ///   registration, itself after the read, so after the commit.
    ///
    /// # Slow: a live node that did not acknowledge
    /// A live node that has not acknowledged by then (paused, cut off from etcd, its watch
    /// behind) is waited for no longer than [`MAX_VIEW_AGE`] and a margin after the commit: a
    /// node answers a verify only while its view is current as of an instant at most
    /// [`MAX_VIEW_AGE`] ago, that is, once a linearizable read sent then has been matched by
    /// its watch, events applied first (`storage/etcd/watch.rs`). Any such read sent after the
    /// change committed sees it, so past the wait every node still answering has the change
    /// in its caches: the node that did not acknowledge has applied it or fenced itself. The
    /// margin covers the hosts' clocks running at slightly different rates.
    pub(crate) fn await_cluster(&self) {
        let Some(node) = self.inner.node.get() else {
            return;
        };
        let deadline = Instant::now() + MAX_VIEW_AGE + CLOCK_MARGIN;
        let target = node.state.last_write_revision();
        if node.state.await_acks(target, deadline) {
            return;
        }
        node.timed_waits.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    /// How many of this node's waits for the cluster (`Vault::await_cluster`) took the
    /// timed wait because a live node had not acknowledged; 0 on one host.
    pub fn cluster_timed_waits(&self) -> u64 {
        self.inner
            .node
            .get()
            .map_or(0, |node| node.timed_waits.load(Ordering::Relaxed))
    }

    /// Refuses a verify on a cluster node whose view is more than a second old
    /// ([`Error::ClusterUnavailable`]), or that a cluster seal reached ([`Error::Sealed`]);
    /// nothing on one host.
    pub(crate) fn check_view(&self) -> Result<()> {
        let Some(node) = self.inner.node.get() else {
            return Ok(());
        };
        // A cluster seal under way (`cluster_seal.rs`): verifies answer as sealed meanwhile.
        if node.sealing.load(Ordering::Acquire) {
            return Err(Error::Sealed);
        }
        match node.view.get() {
            Some(view)
                if !view.is_current() || !node.registration.may_answer(view.current_at()) =>
            {
                Err(Error::ClusterUnavailable)
            }
            _ => Ok(()),
        }
    }
}

/// Refuses to start node `id` on `dir`, a data directory holding no node yet, when the
/// cluster has registered that id before: the node's audit log (origin `keyvault/<vault
/// id>/<node id>`) is in the directory it ran with, and a new one here would start a second
/// log under the same origin, which no checkpoint an auditor kept extends. A node that died
/// between its registration and the making of its directory (a few milliseconds of local
/// work) is refused too: it takes a new node id.
fn refuse_served_id(state: &EtcdState, dir: &Path, id: &NodeId) -> Result<()> {
    let Some(served) = state.nodes()?.into_iter().find(|n| n.id == id.as_str()) else {
        return Ok(());
    };
    if served.live {
        // Registering refuses it, saying so.
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "node id {id} has served this cluster before (first registered {}), and {} holds no \
         node: its audit log is in the data_dir it ran with. Start it on that directory (copy \
         the whole directory to move a node to another host), or give this host a new node_id",
        crate::audit::export::rfc3339_ms(served.first_registered_ms),
        dir.display()
    )))
}

/// A keyring's term and audit generation: a newer keyring has a later one of either, never an
/// earlier one of both.
fn generations(keyring: &Keyring) -> (u32, u32) {
    (keyring.current().number, keyring.audit_current().number)
}

/// Applies a change another node made (or this one: its own come back too, and change
/// nothing) to the node's caches. Sealed, there is nothing cached to change.
fn apply_change(vault: &Vault, state: &EtcdState, change: Change<'_>) {
    let inner: &Inner = &vault.inner;
    let Change::Row {
        space,
        id,
        value,
        revision,
    } = change
    else {
        inner.key_book.clear_cached();
        inner.token_book.clear();
        return;
    };
    if space == Space::Meta && id == META_SEAL {
        // Sealed or not: a node sealed now unseals later with the new credential.
        if let Some(value) = value {
            follow_rekey(vault, value);
        }
        return;
    }
    let Ok(keys) = vault.keys() else {
        return;
    };
    match space {
        Space::Keys | Space::Credits => {
            let Ok(bytes) = <[u8; 12]>::try_from(id) else {
                return;
            };
            let raw = crate::storage::key(space, id);
            inner.key_book.apply_remote(
                &keys.keyring,
                space,
                &KeyId::from_bytes(bytes),
                value,
                || {
                    state
                        .seen_revision(&raw)
                        .is_some_and(|seen| seen > revision)
                },
            );
        }
        Space::Tokens => inner.token_book.clear(),
        Space::Meta if id == META_SEAL_EPOCH => {
            if let Some(value) = value {
                vault.follow_cluster_seal(value);
            }
        }
        Space::Meta if id == META_KEYRING => {
            // A rotation (of the keyring or the audit key) made through another node.
            let Some(sealed) = value else { return };
            match Keyring::open(&keys.root, &vault.vault_id(), sealed) {
                Ok(keyring) if generations(&keyring) > generations(&keys.keyring) => {
                    let audit_rotated =
                        keyring.audit_current().number > keys.keyring.audit_current().number;
                    vault.set_keyring(&keys, keyring);
                    if audit_rotated {
                        // This node's log announces the new audit key in an entry of its own
                        // (`audit_key.rs`): a commit, which the watch's task must not wait for.
                        let vault = vault.clone();
                        std::thread::spawn(move || vault.follow_audit_key_or_log());
                    }
                }
                Ok(_) => {}
                // A rekey through another node seals the same keyring under its new root key,
                // which this node (unsealed with the old credential) does not hold: the copy
                // it has is still the keyring, so it goes on. Any keyring change after that
                // adds a term or an audit generation, so it is longer, and this node cannot
                // follow it: rather than fail on records under a term it does not have, it
                // seals, to be unsealed with the new credential (its watch brought the new
                // seal configuration).
                Err(_) if sealed.len() == vault.seal_keyring(&keys, &keys.keyring).len() => {
                    tracing::warn!(
                        "the keyring in etcd is sealed under a new root key (a rekey through \
                         another node): this node keeps its copy until it is unsealed again"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "a keyring changed in etcd does not open with this node's root key: sealing");
                    vault.seal_for_keyring();
                }
            }
        }
        _ => {}
    }
}

/// A rekey made through another node: the seal configuration this node checks an unseal
/// against (which it read at open) is replaced by the new one, so that once sealed (or
/// restarted) it unseals with the new passphrase or shares only. Shares submitted toward an
/// unseal under the old split are dropped: they can no longer complete one.
fn follow_rekey(vault: &Vault, value: &[u8]) {
    let config = match decode_config(value) {
        Ok(config) if config.vault_id == vault.vault_id() => config,
        Ok(_) => {
            tracing::error!("a seal configuration of another vault changed in etcd: ignored");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "a seal configuration changed in etcd does not decode");
            return;
        }
    };
    *vault
        .inner
        .config
        .write()
        .unwrap_or_else(|e| e.into_inner()) = config;
    if let State::Sealed { submitted } = &mut *vault.state_mut() {
        submitted.clear();
    }
}

fn open_shared(etcd: &EtcdConfig) -> Result<Arc<EtcdState>> {
    Ok(Arc::new(EtcdState::open(etcd, Timing::default())?))
}

/// How errors name the vault under a prefix (in place of a directory).
fn prefix_path(etcd: &EtcdConfig) -> PathBuf {
    PathBuf::from(format!("etcd prefix {}", etcd.prefix))
}

fn marker(vault_id: &VaultId, node: &NodeId) -> Vec<u8> {
    let mut bytes = vec![NODE_FORMAT];
    bytes.extend_from_slice(vault_id);
    bytes.extend_from_slice(node.as_str().as_bytes());
    bytes
}

/// Builds the node's store in `DIR/store.init` (`fill` writes its first rows, the marker among
/// them) and renames it into place once complete, so that a crash leaves no half-made node
/// directory; returns the store reopened in place.
fn build_node_store(
    dir: &Path,
    shared: Arc<dyn SharedState>,
    fill: impl FnOnce(&Store) -> Result<()>,
) -> Result<Store> {
    let staging = dir.join(INIT_DIR);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(|| format!("removing {}", staging.display())))?;
    }
    {
        let store = Store::open_with_shared(&staging, shared.clone())?;
        fill(&store)?;
    }
    let target = dir.join(STORE_DIR);
    fs::rename(&staging, &target).map_err(io(|| format!("renaming {}", staging.display())))?;
    sync_dir(dir)?;
    Ok(Store::open_with_shared(&target, shared)?)
}

/// Refuses a data directory that is not node `node`'s of vault `vault_id`.
fn check_marker(dir: &Path, store: &Store, vault_id: &VaultId, node: &NodeId) -> Result<()> {
    let bytes = store
        .get(Space::Local, NODE_MARKER)?
        .ok_or_else(|| Error::NotAVault(dir.to_path_buf()))?;
    let Some((&format, rest)) = bytes.split_first() else {
        return Err(Error::Corrupt("the cluster node marker is empty".into()));
    };
    if format > NODE_FORMAT {
        return Err(Error::UnsupportedFormat {
            found: u16::from(format),
            supported: u16::from(NODE_FORMAT),
        });
    }
    let (id, name) = rest
        .split_at_checked(vault_id.len())
        .ok_or_else(|| Error::Corrupt("the cluster node marker is truncated".into()))?;
    if id != vault_id || name != node.as_str().as_bytes() {
        return Err(Error::InvalidInput(format!(
            "{} is the data directory of node {} of vault {}, not of node {node} of vault {}",
            dir.display(),
            String::from_utf8_lossy(name),
            hex::encode(id),
            hex::encode(vault_id),
        )));
    }
    Ok(())
}
