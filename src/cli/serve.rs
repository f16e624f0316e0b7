//! The arguments of `init` and `serve`: the commands that make a vault in a data directory and
//! run the server over it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// `keyvault init`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("method").required(true).args(["passphrase_file", "shares"])))]
pub struct InitArgs {
    /// Data directory of the new vault (created 0700 if missing; must be empty).
    #[arg(long, env = "KEYVAULT_DATA_DIR", required_unless_present = "config")]
    pub data_dir: Option<PathBuf>,
    /// The node's TOML config file (`keyvault serve --config`): its data_dir, and with a
    /// `[storage]` table of `backend = "etcd"`, a cluster vault made once under its prefix.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unseal with the passphrase in this file (at least 12 characters; one trailing newline is
    /// not part of it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["shares", "threshold"])]
    pub passphrase_file: Option<PathBuf>,
    /// Unseal with Shamir shares: make this many (at most 255).
    #[arg(long, value_name = "N", requires = "threshold")]
    pub shares: Option<u8>,
    /// Shares needed to unseal (2 <= T <= N).
    #[arg(long, value_name = "T")]
    pub threshold: Option<u8>,
    /// Prefix of the API keys this vault issues: 2 to 8 lowercase letters.
    #[arg(long, default_value = "pvk")]
    pub prefix: String,
    /// Use test-grade Argon2id parameters (64 KiB, t=1). Only for tests and demos: the vault is
    /// marked and every unseal warns.
    #[arg(long)]
    pub insecure_kdf: bool,
}

/// `keyvault serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory of the vault.
    #[arg(long, env = "KEYVAULT_DATA_DIR", required_unless_present_any = ["dev", "config"])]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8731); loopback only unless `--insecure-listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Listen on this Unix socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    pub unix_socket: Option<PathBuf>,
    /// A TOML config file (listen, data_dir, unix_socket, trusted_proxies, limits); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Allow a non-loopback address without TLS (traffic, tokens and keys in the clear).
    #[arg(long)]
    pub insecure_listen: bool,
    /// Serve TLS with this PEM certificate chain (with --tls-key); required for a non-loopback
    /// address unless --insecure-listen.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Unseal at start with the passphrase in this file.
    #[arg(long, value_name = "FILE")]
    pub unseal_passphrase_file: Option<PathBuf>,
    /// A throwaway vault in a temporary directory, unsealed, with test-grade Argon2: prints a
    /// root token, a sample key and curl lines; removes its data on exit.
    #[arg(long, conflicts_with_all = ["data_dir", "unseal_passphrase_file"])]
    pub dev: bool,
}
