//! vault-core: keyvault's library.
//!
//! # Layout
//! - [`apikey`]: the API-key and vault-token text format (parse, don't validate).
//! - [`audit`]: the tamper-evident audit log (RFC 6962 Merkle tree, signed checkpoints).

pub mod apikey;
pub mod audit;
pub mod codec;
pub mod context;
pub mod crypto;
mod error;
pub mod kdf;
pub mod keyring;
pub mod keys;
pub mod record;
pub mod rewrap;
pub mod seal;
pub mod shamir;
pub mod storage;
pub mod tokens;
mod vault;

pub use context::{Actor, Context};
pub use error::{Error, Result};
pub use vault::{
    Credential, FORMAT_VERSION, Issued, RecordTree, SealStatus, UnsealMethod, Vault, error_code,
};
