//! vault-core: keyvault's library. A [`Vault`] is a sealed, encrypted store of API keys and
//! vault tokens in sled, with a tamper-evident audit log of every operation; the HTTP server and
//! the CLI only translate to it.
//!
//! Unseal runs Argon2id (about 0.2 s): on an async runtime call it inside
//! `tokio::task::spawn_blocking`. Every write waits for a group commit (an fsync): the same.
//!
//! # Layout
//! - [`vault`](Vault): the handle, its seal state machine, init, open, unseal, seal, rotate,
//!   rekey, generate-root, encrypted records.
//! - [`keys`]: API keys and their lifecycle; verify. [`tokens`]: vault tokens and roles.
//! - [`apikey`]: the API-key and vault-token text format (parse, don't validate).
//! - [`audit`]: the tamper-evident audit log (RFC 6962 Merkle tree, signed checkpoints,
//!   export, offline verify).
//! - [`ceremony`]: the rekey and generate-root ceremonies (shares one per call under a nonce,
//!   the configuration digest, age recipients).
//! - [`rewrap`]: re-encrypting every record under the newest keyring term.
//! - [`audit_key`]: rotating the audit key (a new signing, digest and index key generation).
//! - [`backup`]: online backup (a snapshot plus the changes captured meanwhile) and restore.
//! - [`seal`], [`keyring`], [`record`]: the key hierarchy and the record envelope.
//! - [`crypto`], [`kdf`], [`shamir`]: primitives (XChaCha20-Poly1305, HKDF, HMAC, Argon2id,
//!   Shamir shares).
//! - [`storage`] owns sled and [`codec`] owns bincode: nothing else names either.
//! - [`context`]: who asks, for the audit log.
//! - [`usage`]: per-key and per-owner usage summaries and suspicious-activity signals, folded
//!   from the audit log off the verify path.

pub mod apikey;
pub mod audit;
pub mod audit_key;
pub mod backup;
pub mod ceremony;
pub mod clock;
pub mod codec;
pub mod context;
pub mod crypto;
mod datadir;
pub mod disk;
mod error;
mod heap;
pub mod kdf;
pub mod keyring;
pub mod keys;
pub mod record;
pub mod rewrap;
pub mod seal;
pub mod shamir;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokens;
pub mod usage;
mod vault;
pub mod witness;

pub use context::{Actor, Context};
pub use datadir::FORMAT_VERSION;
pub use error::{Error, Result};
#[cfg(feature = "etcd")]
pub use vault::cluster_backup::ClusterRestoreReport;
pub use vault::danger::{Danger, RecordTree};
pub use vault::{Credential, Issued, SealStatus, UnsealMethod, Vault, VaultOptions};
