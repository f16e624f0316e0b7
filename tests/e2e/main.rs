//! End-to-end tests of the built `keyvault` binary: one test binary (one link), its tests by
//! family in the modules below, what they share in `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod audit;
mod audit_cluster;
mod backup;
mod ceremony;
mod cli;
mod crash;
mod import;
mod secrets;
mod serve;
mod usage;
mod witness;
mod workflow;
