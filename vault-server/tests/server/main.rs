//! vault-server's integration tests, one binary (link time matters on two cores).
//!
//! Most tests drive [`vault_server::app`] with `oneshot`; those about the connection (header
//! limits, slow clients, graceful shutdown, a real client) run [`vault_server::serve`] on port 0.
//! Every vault is made with cheap Argon2 parameters and every server with a short unseal delay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod audit_archive;
mod backup;
mod ceremonies;
mod extract;
mod guards;
mod import;
mod key_names;
mod keys;
mod keys_requests;
mod logs;
mod metrics;
mod openapi;
mod support;
mod sys;
mod sys_ops;
mod tokens;
mod ui;
mod ui_audit;
mod ui_live;
mod ui_overview;
mod ui_pages;
mod usage;
mod verify;
mod verify_logs;
mod witness;
