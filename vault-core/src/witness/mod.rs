//! Witnesses (C2SP `tlog-witness` and `tlog-cosignature`): what makes the audit log
//! rollback-proof beyond the vault's own disk.
//!
//! # Layout
//! - [`protocol`]: the `add-checkpoint` request body and the refusals, as on the wire.
//! - [`server`]: a witness (`keyvault witness serve`): its key, its state, the checks.

pub mod protocol;
pub mod server;

pub use protocol::{AddCheckpoint, Refusal};
pub use server::Witness;
