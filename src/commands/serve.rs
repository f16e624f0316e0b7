//! `keyvault serve`: the HTTP server over a vault in a data directory (flags over the config
//! file), a cluster node (`[storage] backend = "etcd"`, see `cluster.rs`), or a throwaway one
//! with `--dev`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use vault_core::Vault;
use vault_core::kdf::Passphrase;

use crate::cli::ServeArgs;
use crate::config::Config;
use crate::secret_input::read_secret_file;
use crate::server::{Endpoint, operator_ctx, run_server};

/// The default listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:8731";

/// Serves until ctrl-c or SIGTERM.
pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    let cluster = config.cluster().map_err(anyhow::Error::msg)?;
    let unix_socket = args.unix_socket.clone().or(config.unix_socket.clone());
    let listen: SocketAddr = match (args.listen, config.listen) {
        (Some(a), _) | (None, Some(a)) => a,
        // Invariant: a constant that parses.
        (None, None) => DEFAULT_LISTEN.parse().expect("the default address parses"),
    };
    let insecure_listen = args.insecure_listen || config.insecure_listen;
    let tls = match (
        args.tls_cert.as_ref().or(config.tls_cert.as_ref()),
        args.tls_key.as_ref().or(config.tls_key.as_ref()),
    ) {
        (Some(cert), Some(key)) => {
            Some(vault_server::tls_acceptor(cert, key).context("setting up TLS")?)
        }
        (None, None) => None,
        _ => bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
    };
    if unix_socket.is_none() && tls.is_none() && !listen.ip().is_loopback() && !insecure_listen {
        bail!(
            "refusing to listen on {listen} without TLS: give --tls-cert and --tls-key, use a \
             loopback address or --unix-socket, or pass --insecure-listen to accept traffic in \
             the clear"
        );
    }
    let server_config = config.server_config();
    if args.dev {
        if cluster.is_some() {
            bail!("--dev makes a throwaway one-host vault: it takes no [storage] table");
        }
        return super::dev::serve_dev(listen, unix_socket, server_config);
    }
    let socket_address = unix_socket
        .as_ref()
        .map(|p| format!("unix://{}", p.display()));
    let endpoint = Endpoint {
        listen,
        unix_socket,
        tls,
    };
    let Some(data_dir) = args.data_dir.clone().or(config.data_dir.clone()) else {
        bail!("give --data-dir DIR (or data_dir in the config file, or KEYVAULT_DATA_DIR)");
    };
    // The thresholds from the start, so that entries refolded at open are judged by them too.
    let options = vault_core::VaultOptions {
        usage: true,
        thresholds: server_config.usage,
        witnesses: config
            .witnesses()
            .map_err(|e| anyhow::anyhow!("the configuration's [[audit.witness]]: {e}"))?,
        ..vault_core::VaultOptions::default()
    };
    let vault = match cluster {
        None => Vault::open_with(&data_dir, &options)
            .with_context(|| format!("opening the vault in {}", data_dir.display()))?,
        Some(etcd) => super::cluster::open(&data_dir, &etcd, &options)?,
    };
    // Before any key material is in memory.
    crate::hardening::harden(true);
    if let Some(file) = args
        .unseal_passphrase_file
        .as_ref()
        .or(config.unseal_passphrase_file.as_ref())
    {
        let passphrase = Passphrase::new(read_secret_file(file)?.as_str());
        vault
            .unseal_passphrase(&operator_ctx(), &passphrase)
            .context("unsealing at start")?;
    }
    if vault.insecure_kdf() {
        eprintln!(
            "warning: this vault uses test-grade Argon2id parameters: never use it for real keys"
        );
    }
    // Kept to free a cluster node's id once the server stopped (see `cluster::leave`).
    let node = vault.clone();
    let published = vault.clone();
    // A cluster node publishes where it serves (the bound address, so a port 0 shows as the
    // port it got), for `audit export --node` and `--cluster` run through another node.
    let served = run_server(vault, endpoint, server_config, |base| {
        let address = socket_address.unwrap_or_else(|| base.to_owned());
        super::cluster::publish_address(&published, &address);
    });
    super::cluster::leave(&node);
    served
}
