//! The vault handle: init, open, unseal, seal, rotate, rekey, and encrypted records.
//!
//! A [`Vault`] is cheap to clone and shared between threads. Its state is either sealed (no key
//! material in memory, only the shares submitted so far) or unsealed (the root key and keyring).
//! Sealing drops the unsealed keys, which zeroize themselves; an operation already running holds
//! its own reference until it returns.
//!
//! Unsealing with a passphrase runs Argon2id (about 0.2 s at the defaults); callers on an async
//! runtime call [`Vault::unseal_passphrase`] and [`Vault::submit_share`] inside
//! `tokio::task::spawn_blocking`.
//!
//! Data directory layout (directory mode 0700, files 0600):
//!
//! ```text
//! DIR/lock         advisory lock held while a process has the vault open
//! DIR/store/       the sled database (see `storage`)
//! DIR/store.init/  only while `init` runs; renamed to `store/` when complete
//! DIR/checkpoints.jsonl  every signed audit checkpoint, one JSON line each
//! ```

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::apikey::{ApiKey, Prefix};
use crate::audit::Event;
use crate::audit::log::AuditLog;
use crate::audit::note::NoteSigner;
use crate::ceremony::Ceremonies;
use crate::clock::{Clock, now};
use crate::codec;
use crate::context::{Actor, Context};
use crate::crypto::{SecretKey, fill_random};
use crate::datadir::{
    AUDIT_DIR, CHECKPOINT_FILE, FORMAT_VERSION, INIT_DIR, LOCK_FILE, STORE_DIR, create_private_dir,
    is_empty_but_for, lock, move_node_local_names, restrict_permissions, sync_dir,
};
use crate::error::io;
use crate::kdf::Passphrase;
use crate::keyring::{AuditGeneration, Keyring};
use crate::keys::KeyBook;
pub use crate::seal::{Credential, UnsealMethod};
use crate::seal::{SealConfig, SealMethod};
use crate::shamir::{self, Share, VaultId};
use crate::storage::{Batch, Space, Store};
use crate::tokens::{Role, TokenBook};
use crate::usage::Usage;
use crate::{Error, Result};

mod audit;
pub(crate) mod options;
mod usage;

pub use options::VaultOptions;

const META_FORMAT: &[u8] = b"format";
const META_SEAL: &[u8] = b"seal";
pub(crate) const META_KEYRING: &[u8] = b"keyring";
/// The audit verifier key printed at init (generation 1's); later generations' keys are in
/// the audit key rotations (`audit::rotation`).
pub(crate) const META_AUDIT_KEY: &[u8] = b"audit-verifier";

/// What `init` and `rekey` hand out once.
#[derive(Debug)]
pub struct Issued {
    /// The new shares (empty with a passphrase). Show each to its operator once.
    pub shares: Vec<Share>,
    /// The root `admin` token, made at init only. Show it once.
    pub root_token: Option<ApiKey>,
    /// The audit log's public key (`name+hash+base64`), which auditors pin.
    pub audit_public_key: String,
}

/// What `seal-status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealStatus {
    /// Whether the vault is sealed.
    pub sealed: bool,
    /// `"passphrase"` or `"shares"`.
    pub method: &'static str,
    /// Shares needed (1 for a passphrase).
    pub threshold: u8,
    /// Shares made (1 for a passphrase).
    pub shares: u8,
    /// Shares submitted so far while sealed.
    pub progress: u8,
}

/// An open vault. Clone it to share it; all clones are one vault.
#[derive(Debug, Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    pub(crate) store: Store,
    config: RwLock<SealConfig>,
    /// Shared with the name index build, which reads the current keyring for each batch
    /// without holding the handle (`keys/name_index.rs`).
    state: Arc<RwLock<State>>,
    /// Serialises seal, rotate and rekey, which replace the state as a whole.
    admin: Mutex<()>,
    /// The rekey and generate-root ceremonies in progress.
    ceremonies: Ceremonies,
    /// Shared with the name index build, which commits its batches through it.
    pub(crate) audit: Arc<AuditLog>,
    /// Usage summaries and signals, unless opened without them.
    pub(crate) usage: Option<Usage>,
    /// API keys (`vault/keys.rs` is the handle's API for them).
    pub(crate) key_book: Arc<KeyBook>,
    /// Vault tokens (`vault/tokens.rs`).
    pub(crate) token_book: TokenBook,
    /// The time every expiry, grace period and rate-limit window reads.
    pub(crate) clock: Clock,
    /// A cluster node's registration and etcd handle (`vault/cluster.rs`); empty on one host.
    #[cfg(feature = "etcd")]
    pub(crate) node: std::sync::OnceLock<node::Node>,
    /// The audit log's origin (see [`origin`]), which names its signing key too.
    origin: String,
    /// Held for the life of the vault: the advisory lock on `DIR/lock`.
    _lock: File,
}

#[derive(Debug)]
enum State {
    Sealed { submitted: Vec<Share> },
    Unsealed(Arc<Keys>),
}

/// The key material of an unsealed vault; zeroized when the last reference drops.
#[derive(Debug)]
pub(crate) struct Keys {
    root: SecretKey,
    pub(crate) keyring: Keyring,
}

impl AsRef<Keyring> for Keys {
    fn as_ref(&self) -> &Keyring {
        &self.keyring
    }
}

impl Drop for Inner {
    /// The audit writer stops first, so that the usage thread has every entry before it stores
    /// its figures and stops.
    fn drop(&mut self) {
        // The warm and the name index build hold the store open: stopped first, so that the
        // database closes with the handle. An unsealed vault's recently used keys are warmed
        // first when it next opens; its name index build starts again.
        self.key_book.stop_warm();
        self.key_book.stop_name_index();
        if matches!(
            *self.state.read().unwrap_or_else(|e| e.into_inner()),
            State::Unsealed(_)
        ) {
            self.key_book.save_recent(&self.dir);
        }
        self.audit.close();
        if let Some(usage) = &self.usage {
            usage.close();
        }
    }
}

/// The audit log's origin line and signing-key name: `keyvault/<vault id>` on one host (the
/// vault's own name, which the public key printed at init carries), and
/// `keyvault/<vault id>/<node id>` on a cluster node, whose log is its own (DESIGN section 10).
pub(crate) fn origin(vault_id: &VaultId, node: Option<&str>) -> String {
    match node {
        None => format!("keyvault/{}", hex::encode(vault_id)),
        Some(node) => format!("keyvault/{}/{node}", hex::encode(vault_id)),
    }
}

fn audit_signer(keyring: &Keyring, origin: &str) -> Result<NoteSigner> {
    generation_signer(keyring.audit_current(), origin)
}

/// The checkpoint signer of one audit key generation, named `origin` (the log's).
pub(crate) fn generation_signer(generation: &AuditGeneration, origin: &str) -> Result<NoteSigner> {
    NoteSigner::from_seed(origin, generation.signing_seed.expose())
        .map_err(|e| Error::Corrupt(format!("the audit signing key: {e}")))
}

impl Vault {
    /// Initialises a vault in `dir` (created if missing, or empty) and returns it unsealed, with
    /// the shares to hand out. All or nothing: the vault is built in `DIR/store.init` and renamed
    /// into place only when complete.
    pub fn init(dir: &Path, method: &UnsealMethod, prefix: &Prefix) -> Result<(Vault, Issued)> {
        create_private_dir(dir)?;
        if dir.join(STORE_DIR).exists() {
            return Err(Error::AlreadyInitialized(dir.to_path_buf()));
        }
        if !is_empty_but_for(dir, &[LOCK_FILE, INIT_DIR])? {
            return Err(Error::NotAVault(dir.to_path_buf()));
        }
        let lock = lock(dir)?;
        if dir.join(STORE_DIR).exists() {
            return Err(Error::AlreadyInitialized(dir.to_path_buf()));
        }

        let genesis = Genesis::new(method, prefix)?;
        let staging = dir.join(INIT_DIR);
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .map_err(io(|| format!("removing {}", staging.display())))?;
        }
        {
            let store = Store::open(&staging)?;
            store.apply(genesis.batch())?;
        }
        let target = dir.join(STORE_DIR);
        fs::rename(&staging, &target).map_err(io(|| format!("renaming {}", staging.display())))?;
        sync_dir(dir)?;

        let store = Store::open(&dir.join(STORE_DIR))?;
        let vault = Vault::open_store(dir, lock, store, &VaultOptions::default(), None)?;
        genesis.finish(vault)
    }

    /// Opens the vault in `dir`, sealed, with usage summaries on and the default thresholds.
    pub fn open(dir: &Path) -> Result<Vault> {
        Vault::open_with(dir, &VaultOptions::default())
    }

    /// Opens the vault in `dir`, sealed, as `options` say.
    pub fn open_with(dir: &Path, options: &VaultOptions) -> Result<Vault> {
        let store = dir.join(STORE_DIR);
        // `is_dir` would take a directory this user may not enter for no vault at all.
        match fs::metadata(&store) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(io(|| format!("reading {}", store.display()))(e));
            }
            _ => {}
        }
        if !store.is_dir() {
            return Err(
                if !dir.exists() || is_empty_but_for(dir, &[LOCK_FILE, INIT_DIR])? {
                    Error::NotInitialized(dir.to_path_buf())
                } else {
                    Error::NotAVault(dir.to_path_buf())
                },
            );
        }
        let lock = lock(dir)?;
        Vault::open_locked(dir, lock, options)
    }

    fn open_locked(dir: &Path, lock: File, options: &VaultOptions) -> Result<Vault> {
        let store = Store::open(&dir.join(STORE_DIR))?;
        Vault::open_store(dir, lock, store, options, None)
    }

    /// Opens the vault whose store is `store` (the node-local part in `dir`), sealed; `node` is
    /// a cluster node's id (its log's origin names it), none on one host.
    fn open_store(
        dir: &Path,
        lock: File,
        store: Store,
        options: &VaultOptions,
        node: Option<&str>,
    ) -> Result<Vault> {
        let format = store
            .get(Space::Meta, META_FORMAT)?
            .ok_or_else(|| Error::NotAVault(dir.to_path_buf()))?;
        let format: [u8; 2] = format
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("the format version is not two bytes".into()))?;
        let found = u16::from_be_bytes(format);
        if found > FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                found,
                supported: FORMAT_VERSION,
            });
        }
        if found < FORMAT_VERSION && store.is_clustered() {
            // Cluster vaults start at format 6; an older one was never made.
            return Err(Error::Corrupt(format!(
                "the cluster vault's format version {found} is older than any cluster vault"
            )));
        }
        if found < FORMAT_VERSION {
            // Before the audit log opens, which looks for its bookkeeping where format 6 keeps
            // it; the new version in the same batch keeps older builds out from here on.
            let mut batch = move_node_local_names(&store)?;
            batch.insert(Space::Meta, META_FORMAT, &FORMAT_VERSION.to_be_bytes());
            store.apply(batch)?;
        }
        let config = read_config(&store)?;
        restrict_permissions(dir)?;
        let origin = origin(&config.vault_id, node);
        let audit = AuditLog::open(
            store.clone(),
            &dir.join(AUDIT_DIR),
            origin.clone(),
            dir.join(CHECKPOINT_FILE),
            options.clock.clone(),
        )?;
        audit.set_witnesses(options.witnesses.clone())?;
        crate::disk::make_reserve(dir);
        let usage = if options.usage {
            // The observer is set before the usage thread reads the log, so no entry falls
            // between the two; one read both ways is counted once (by sequence number).
            let (tx, rx) = std::sync::mpsc::channel();
            audit.set_observer(Some(tx));
            Some(Usage::open(
                store.clone(),
                audit.reader_handle(),
                dir,
                options.thresholds,
                rx,
            )?)
        } else {
            None
        };
        Ok(Vault {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                audit: Arc::new(audit),
                usage,
                key_book: Arc::new(KeyBook::new(
                    store.clone(),
                    options.keys_cached,
                    options.unknown_ids_cached,
                    options.clock.clone(),
                )),
                token_book: TokenBook::new(store.clone(), options.clock.clone()),
                clock: options.clock.clone(),
                store,
                config: RwLock::new(config),
                state: Arc::new(RwLock::new(State::Sealed {
                    submitted: Vec::new(),
                })),
                admin: Mutex::new(()),
                ceremonies: Ceremonies::default(),
                #[cfg(feature = "etcd")]
                node: std::sync::OnceLock::new(),
                origin,
                _lock: lock,
            }),
        })
    }

    /// The vault's clock: the time every expiry reads, which a test moves with
    /// [`Clock::advance`] (the server's console times its sessions by it too).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The audit log's origin: `keyvault/<vault id>`, or `keyvault/<vault id>/<node id>` on a
    /// cluster node. Its checkpoints are signed under this name.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The API-key prefix chosen at init.
    pub fn prefix(&self) -> Prefix {
        // Invariant: checked when the vault was opened and never changed.
        Prefix::new(&self.config().prefix).expect("the prefix was checked at open")
    }

    /// The vault's public id.
    pub fn vault_id(&self) -> VaultId {
        self.config().vault_id
    }

    /// Whether the stored Argon2 parameters are marked test-grade (warn at every unseal).
    pub fn insecure_kdf(&self) -> bool {
        matches!(self.config().method, SealMethod::Passphrase { params, .. } if params.insecure)
    }

    /// Sealed or not, method and share progress.
    pub fn seal_status(&self) -> SealStatus {
        let (threshold, shares) = match self.config().method {
            SealMethod::Passphrase { .. } => (1, 1),
            SealMethod::Shares { threshold, shares } => (threshold, shares),
        };
        let state = self.state();
        let (sealed, progress) = match &*state {
            State::Sealed { submitted } => (true, submitted.len() as u8),
            State::Unsealed(_) => (false, 0),
        };
        SealStatus {
            sealed,
            method: self.config().method.name(),
            threshold,
            shares,
            progress,
        }
    }

    /// Unseals with the passphrase. Slow (Argon2id): run it off an async runtime's workers.
    /// Answers at once if the vault is already unsealed.
    pub fn unseal_passphrase(&self, ctx: &Context, passphrase: &Passphrase) -> Result<()> {
        if !self.is_sealed() {
            return Ok(());
        }
        let config = self.config().clone();
        let result = config
            .passphrase_key(passphrase)
            .and_then(|key| self.finish_unseal(&config, &key));
        self.audit_unseal(ctx, "passphrase", result.as_ref().map(|_| ()))?;
        result
    }

    /// Records an unseal attempt. If a successful unseal cannot be recorded, the vault seals
    /// again and the unseal fails: nothing happens without its entry.
    fn audit_unseal(
        &self,
        ctx: &Context,
        method: &str,
        outcome: std::result::Result<(), &Error>,
    ) -> Result<()> {
        let code = outcome.err().map_or("ok", Error::code);
        let event = Event::new("sys.unseal", code).detail("method", method);
        let logged = self.commit(ctx, Batch::default(), event);
        if logged.is_err() && outcome.is_ok() {
            tracing::error!("the unseal could not be audited: sealing again");
            self.seal_without_audit();
        }
        logged.map(|_| ())
    }

    /// Submits one share. When the threshold is reached the vault unseals, or, if the shares do
    /// not unseal it, forgets them all and answers [`Error::WrongCredential`]. A share that is
    /// malformed, of another vault or already submitted is refused and progress is kept.
    pub fn submit_share(&self, ctx: &Context, share: Share) -> Result<SealStatus> {
        let was_sealed = self.is_sealed();
        let result = self.submit_share_inner(share);
        match &result {
            Ok(status) if was_sealed && !status.sealed => {
                self.audit_unseal(ctx, "shares", Ok(()))?;
            }
            Ok(_) => {}
            Err(e) => self.audit_unseal(ctx, "shares", Err(e))?,
        }
        result
    }

    fn submit_share_inner(&self, share: Share) -> Result<SealStatus> {
        let config = self.config().clone();
        let SealMethod::Shares { threshold, .. } = config.method else {
            return Err(Error::WrongMethod {
                expected: "a passphrase",
                given: "a share",
            });
        };
        let complete = {
            let mut state = self.state_mut();
            let State::Sealed { submitted } = &mut *state else {
                drop(state);
                return Ok(self.seal_status());
            };
            config.admit_share(submitted, &share)?;
            submitted.push(share);
            if submitted.len() < usize::from(threshold) {
                None
            } else {
                Some(std::mem::take(submitted))
            }
        };
        if let Some(shares) = complete {
            let key = shamir::combine(&shares).ok_or(Error::WrongCredential)?;
            self.finish_unseal(&config, &key)?;
        }
        Ok(self.seal_status())
    }

    /// Forgets the shares submitted so far, for a caller who proves to be one of their
    /// submitters by giving one of them again: anyone else gets [`Error::Forbidden`] and the
    /// progress stays, so that a stranger cannot undo the share holders' work. With no progress
    /// (or unsealed, or a passphrase vault) there is nothing to forget and any share is
    /// accepted. (A share proves nothing on its own: a forged one looks like a real one until
    /// the threshold is reached and the shares are combined. Matching a submitted one is the
    /// only proof available.)
    pub fn reset_unseal(&self, submitted_share: &Share) -> Result<()> {
        if let State::Sealed { submitted } = &mut *self.state_mut() {
            if submitted.is_empty() {
                return Ok(());
            }
            if !submitted.iter().any(|s| s.same_as(submitted_share)) {
                return Err(Error::Forbidden(
                    "only the holder of a share submitted so far may reset the progress: give \
                     that share again"
                        .into(),
                ));
            }
            submitted.clear();
        }
        Ok(())
    }

    fn finish_unseal(&self, config: &SealConfig, unseal_key: &SecretKey) -> Result<()> {
        let root = config.unwrap_root(unseal_key)?;
        let sealed_keyring = self
            .inner
            .store
            .get(Space::Meta, META_KEYRING)?
            .ok_or_else(|| Error::Corrupt("the keyring is missing".into()))?;
        let keyring = Keyring::open(&root, &config.vault_id, &sealed_keyring)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        if self.insecure_kdf() {
            tracing::warn!(
                "this vault uses test-grade Argon2id parameters (insecure_kdf): never use it for real keys"
            );
        }
        self.set_unsealed(Keys { root, keyring })?;
        // A cluster node unsealed after another node rotated the audit key: its own log
        // announces the new key now.
        self.follow_audit_key_or_log();
        Ok(())
    }

    fn set_unsealed(&self, keys: Keys) -> Result<()> {
        let _admin = self.admin();
        let origin = self.origin();
        let (signer, previous) = self.unseal_signers(&keys.keyring)?;
        let verifiers = keys
            .keyring
            .audit_generations()
            .map(|g| generation_signer(g, origin).map(|s| s.verifier()))
            .collect::<Result<Vec<_>>>()?;
        // Before anything is signed: a data directory rolled back behind a checkpoint that the
        // store, the checkpoint file, a witness or (on a cluster node) etcd holds stays sealed.
        self.inner.audit.check_rollback(&verifiers)?;
        #[cfg(feature = "etcd")]
        self.check_published_checkpoint(&verifiers)?;
        self.inner.audit.set_signer(Some(signer), previous)?;
        let keys = Arc::new(keys);
        *self.state_mut() = State::Unsealed(Arc::clone(&keys));
        #[cfg(feature = "etcd")]
        self.report_sealed(false);
        // In the background, so that unseal does not wait for it (`keys/warm.rs`).
        self.inner.key_book.start_warm(&self.inner.dir, keys);
        // Likewise; nothing but for the first unseals of a vault made before the name index
        // (`keys/name_index.rs`). It holds the state and the log, never the handle.
        let state = Arc::clone(&self.inner.state);
        let current = move || match &*state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Unsealed(keys) => Some(Arc::clone(keys)),
            State::Sealed { .. } => None,
        };
        self.inner
            .key_book
            .start_name_index(current, Arc::clone(&self.inner.audit));
        Ok(())
    }

    /// Seals: records the seal, signs a last checkpoint, and drops every key from memory.
    /// Every later read or write answers [`Error::Sealed`]. The vault is sealed whatever
    /// happens; an error means the seal's audit entry or checkpoint could not be written.
    pub fn seal(&self, ctx: &Context) -> Result<()> {
        self.seal_with(ctx, Event::new("sys.seal", "ok"))
    }

    /// [`Vault::seal`], recorded as `event`.
    fn seal_with(&self, ctx: &Context, event: Event) -> Result<()> {
        if self.is_sealed() {
            return Ok(());
        }
        // Before the seal's entry, so that no build entry follows it.
        self.inner.key_book.stop_name_index();
        let logged = self.commit(ctx, Batch::default(), event);
        let checkpoint = self.inner.audit.checkpoint().map(|_| ());
        self.seal_without_audit();
        logged.and(checkpoint)
    }

    fn seal_without_audit(&self) {
        let _admin = self.admin();
        if let Some(usage) = &self.inner.usage {
            usage.persist_soon();
        }
        // Clearing the signer reads nothing, so it cannot fail.
        let _ = self.inner.audit.set_signer(None, None);
        *self.state_mut() = State::Sealed {
            submitted: Vec::new(),
        };
        #[cfg(feature = "etcd")]
        self.report_sealed(true);
        // The shares a ceremony holds are dropped with the keys.
        self.inner.ceremonies.clear(None);
        self.inner.key_book.stop_warm();
        self.inner.key_book.stop_name_index();
        self.inner.key_book.save_recent(&self.inner.dir);
        self.inner.key_book.clear();
        self.inner.token_book.clear();
    }

    /// Commits store changes with their audit entry (see [`crate::audit`]); returns the
    /// entry's sequence number once both are durable.
    pub(crate) fn commit(&self, ctx: &Context, batch: Batch, event: Event) -> Result<u64> {
        self.inner.audit.commit(ctx, batch, event)
    }

    /// Whether the vault is sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(&*self.state(), State::Sealed { .. })
    }

    /// The unsealed keys, or [`Error::Sealed`].
    pub(crate) fn keys(&self) -> Result<Arc<Keys>> {
        match &*self.state() {
            State::Unsealed(keys) => Ok(Arc::clone(keys)),
            State::Sealed { .. } => Err(Error::Sealed),
        }
    }

    /// Adds a keyring term: new writes use it, records of older terms still decrypt.
    /// Returns the new term's number.
    pub fn rotate(&self, ctx: &Context) -> Result<u32> {
        let _admin = self.admin();
        let keys = self.keys()?;
        let keyring = keys.keyring.rotated(self.inner.clock.now());
        let term = keyring.current().number;
        let mut batch = Batch::default();
        batch.insert(
            Space::Meta,
            META_KEYRING,
            &keyring.seal(&keys.root, &self.vault_id()),
        );
        self.commit(
            ctx,
            batch,
            Event::new("sys.rotate", "ok").detail("term", term),
        )?;
        let root = keys.root.clone();
        *self.state_mut() = State::Unsealed(Arc::new(Keys { root, keyring }));
        Ok(term)
    }

    fn config(&self) -> RwLockReadGuard<'_, SealConfig> {
        // A poisoned lock means a panic while replacing the config, which is a plain
        // assignment; the value is whole either way.
        self.inner.config.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        // As for `config`: writers only assign whole values.
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the unsealed keyring (the root key stays) once the new one is committed.
    pub(crate) fn set_keyring(&self, keys: &Keys, keyring: Keyring) {
        let root = keys.root.clone();
        *self.state_mut() = State::Unsealed(Arc::new(Keys { root, keyring }));
    }

    /// `keyring` sealed under the root key of `keys`, as stored.
    pub(crate) fn seal_keyring(&self, keys: &Keys, keyring: &Keyring) -> Vec<u8> {
        keyring.seal(&keys.root, &self.vault_id())
    }

    pub(crate) fn admin(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.admin.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new vault's first state, made by `init` (one host or a cluster) before anything is
/// stored: its shared rows, and what the init hands out once the vault is open.
struct Genesis {
    config: SealConfig,
    root: SecretKey,
    keyring: Keyring,
    shares: Vec<Share>,
    audit_public_key: String,
}

impl Genesis {
    fn new(method: &UnsealMethod, prefix: &Prefix) -> Result<Genesis> {
        let mut vault_id: VaultId = [0; 8];
        fill_random(&mut vault_id);
        let (method, unseal_key, shares) = method.prepare(vault_id)?;
        let root = SecretKey::random();
        let keyring = Keyring::generate(now());
        let config = SealConfig::new(
            vault_id,
            prefix.as_str().to_owned(),
            now(),
            method,
            &root,
            &unseal_key,
        );
        let audit_public_key = audit_signer(&keyring, &origin(&vault_id, None))?
            .verifier()
            .to_string();
        Ok(Genesis {
            config,
            root,
            keyring,
            shares,
            audit_public_key,
        })
    }

    /// The vault's first rows, all in `Meta` (shared).
    fn batch(&self) -> Batch {
        let mut batch = Batch::default();
        batch.insert(Space::Meta, META_FORMAT, &FORMAT_VERSION.to_be_bytes());
        batch.insert(Space::Meta, META_SEAL, &codec::encode(&self.config));
        batch.insert(
            Space::Meta,
            META_KEYRING,
            &self.keyring.seal(&self.root, &self.config.vault_id),
        );
        batch.insert(
            Space::Meta,
            META_AUDIT_KEY,
            self.audit_public_key.as_bytes(),
        );
        // A new vault has no keys, so its name index is complete.
        crate::keys::name_index::mark_built(&mut batch);
        batch
    }

    /// Unseals the newly opened `vault`, records the init and makes the root token.
    fn finish(self, vault: Vault) -> Result<(Vault, Issued)> {
        let method_name = self.config.method.name();
        vault.set_unsealed(Keys {
            root: self.root,
            keyring: self.keyring,
        })?;
        let ctx = Context::new(Actor::Operator);
        let event = Event::new("sys.init", "ok").detail("method", method_name);
        vault.commit(&ctx, Batch::default(), event)?;
        let root_token = vault
            .create_token(&ctx, None, Role::Admin, "root", None)?
            .token;
        let issued = Issued {
            shares: self.shares,
            root_token: Some(root_token),
            audit_public_key: self.audit_public_key,
        };
        Ok((vault, issued))
    }
}

/// Reads and checks the seal configuration.
fn read_config(store: &Store) -> Result<SealConfig> {
    let bytes = store
        .get(Space::Meta, META_SEAL)?
        .ok_or_else(|| Error::Corrupt("the seal configuration is missing".into()))?;
    decode_config(&bytes)
}

/// The seal configuration stored as `bytes`, checked as at open.
fn decode_config(bytes: &[u8]) -> Result<SealConfig> {
    let config: SealConfig = codec::decode(bytes)
        .map_err(|_| Error::Corrupt("the seal configuration does not decode".into()))?;
    match config.method {
        SealMethod::Passphrase { params, .. } => params.check_for_read()?,
        SealMethod::Shares { threshold, shares } if threshold < 2 || threshold > shares => {
            return Err(Error::Corrupt(
                "the seal configuration's threshold is impossible".into(),
            ));
        }
        SealMethod::Shares { .. } => {}
    }
    Prefix::new(&config.prefix)
        .map_err(|_| Error::Corrupt("the stored key prefix is invalid".into()))?;
    Ok(config)
}

mod ceremony;

mod audit_key;
#[cfg(feature = "etcd")]
mod cluster;
#[cfg(feature = "etcd")]
pub(crate) mod cluster_backup;
#[cfg(feature = "etcd")]
mod cluster_seal;
mod keys;
#[cfg(feature = "etcd")]
mod node;
#[cfg(feature = "etcd")]
mod rate_share;
mod rewrap;
mod tokens;
#[cfg(feature = "etcd")]
mod verify_retry;

pub(crate) mod backup;
pub(crate) mod danger;

#[cfg(test)]
mod tests;
