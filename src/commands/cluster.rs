//! Cluster mode in the CLI (DESIGN section 10): `init` and `serve` of a node whose config file
//! has `[storage] backend = "etcd"`, and `keyvault cluster status`.
//!
//! Serving a node needs vault-core's `etcd` feature, which this crate's `etcd` feature turns on
//! (its build needs `protoc`, so it is off by default). A build without it still reads and
//! checks the `[storage]` table, and refuses a cluster node with a message saying how to get a
//! build that serves one.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use vault_core::apikey::Prefix;
use vault_core::storage::etcd_config::EtcdConfig;
use vault_core::{Issued, UnsealMethod, Vault, VaultOptions};

use crate::cli::ClusterCommand;
use crate::client::client;
use crate::output::{Out, print_table, when};

/// `keyvault cluster ...`.
pub fn run(command: &ClusterCommand, out: &Out) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Status => status(out),
    }
}

/// `keyvault cluster status`: `GET /v1/sys/cluster` as a table (or its JSON).
fn status(out: &Out) -> anyhow::Result<ExitCode> {
    let answer = client(&out.client)?.call("GET", "/v1/sys/cluster", None)?;
    out.value(&answer, || status_table(&answer));
    Ok(ExitCode::SUCCESS)
}

fn status_table(answer: &Value) -> String {
    let this = answer["node_id"].as_str().unwrap_or_default();
    let rows: Vec<Vec<String>> = answer["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|node| {
            let id = node["id"].as_str().unwrap_or("?");
            vec![
                if id == this {
                    format!("{id} (this node)")
                } else {
                    id.to_owned()
                },
                node["health"].as_str().unwrap_or("?").to_owned(),
                node["applied_revision"]
                    .as_i64()
                    .map_or_else(|| "-".to_owned(), |r| r.to_string()),
                node["last_seen"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), when),
            ]
        })
        .collect();
    print_table(&["NODE", "HEALTH", "APPLIED REVISION", "LAST SEEN"], &rows)
}

/// Initialises the cluster vault under `etcd.prefix` (once: refused if it holds one) as node
/// `etcd.node_id` with data directory `dir`.
#[cfg(feature = "etcd")]
pub fn init(
    dir: &Path,
    etcd: &EtcdConfig,
    method: &UnsealMethod,
    prefix: &Prefix,
) -> anyhow::Result<(Vault, Issued)> {
    Vault::init_cluster(dir, etcd, method, prefix).map_err(|e| match e {
        vault_core::Error::AlreadyInitialized(_) => anyhow::anyhow!(
            "etcd prefix {} already holds a vault: it is initialised once; start every node \
             with `keyvault serve --config FILE` and unseal it",
            etcd.prefix
        ),
        e => anyhow::Error::new(e).context(format!(
            "initialising a cluster vault under etcd prefix {} as node {} in {}",
            etcd.prefix,
            etcd.node_id,
            dir.display()
        )),
    })
}

/// Opens node `etcd.node_id` of the cluster vault under `etcd.prefix`, sealed.
#[cfg(feature = "etcd")]
pub fn open(dir: &Path, etcd: &EtcdConfig, options: &VaultOptions) -> anyhow::Result<Vault> {
    Vault::open_cluster(dir, etcd, options).map_err(|e| match e {
        vault_core::Error::NotInitialized(_) => anyhow::anyhow!(
            "etcd prefix {} holds no vault: initialise it once with `keyvault init --config FILE`",
            etcd.prefix
        ),
        e => anyhow::Error::new(e).context(format!(
            "opening node {} of the cluster vault under etcd prefix {} in {}",
            etcd.node_id,
            etcd.prefix,
            dir.display()
        )),
    })
}

/// Publishes `address` (where this node's API serves) in the node's reports; nothing on one
/// host.
#[cfg(feature = "etcd")]
pub fn publish_address(vault: &Vault, address: &str) {
    vault.set_cluster_address(address);
}

#[cfg(not(feature = "etcd"))]
pub fn publish_address(_vault: &Vault, _address: &str) {}

/// Frees the node id of `vault` (a cluster node) before the process exits, so that the node
/// can be started again at once; nothing on one host.
#[cfg(feature = "etcd")]
pub fn leave(vault: &Vault) {
    vault.leave_cluster();
}

#[cfg(not(feature = "etcd"))]
pub fn leave(_vault: &Vault) {}

#[cfg(not(feature = "etcd"))]
pub fn init(
    _dir: &Path,
    _etcd: &EtcdConfig,
    _method: &UnsealMethod,
    _prefix: &Prefix,
) -> anyhow::Result<(Vault, Issued)> {
    Err(without_feature())
}

#[cfg(not(feature = "etcd"))]
pub fn open(_dir: &Path, _etcd: &EtcdConfig, _options: &VaultOptions) -> anyhow::Result<Vault> {
    Err(without_feature())
}

#[cfg(not(feature = "etcd"))]
fn without_feature() -> anyhow::Error {
    anyhow::anyhow!(
        "storage.backend = \"etcd\" (a cluster node) needs a keyvault built with cluster support: \
         `cargo build --release --features etcd` (which needs protoc: apt-get install \
         protobuf-compiler); this build serves backend = \"sled\" only"
    )
}
