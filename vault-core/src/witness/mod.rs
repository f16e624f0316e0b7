//! Witnesses (C2SP `tlog-witness` and `tlog-cosignature`): what makes the audit log
//! rollback-proof beyond the vault's own disk.
//!
//! # Layout
//! - [`client`]: the witnesses a vault is configured with and the calls it makes to them.
//! - [`protocol`]: the `add-checkpoint` request body and the refusals, as on the wire.
//! - [`server`]: a witness (`keyvault witness serve`): its key, its state, the checks.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::WitnessConfig;
pub use protocol::{AddCheckpoint, Refusal};
pub use server::Witness;
