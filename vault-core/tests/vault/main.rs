//! vault-core through its public API: init, unseal, seal, rotate, rekey, records, bad input.
//! One integration-test binary for the crate (link time matters); modules by topic.
#![allow(clippy::unwrap_used)]

mod archive;
mod audit;
mod audit_key;
mod backup;
mod backup_node;
mod common;
mod golden;
mod import;
mod keys;
mod model;
mod name_index;
mod seal_state;
mod tokens;
mod usage;
mod usage_minutes;
mod verdict_meta;
mod witness;
