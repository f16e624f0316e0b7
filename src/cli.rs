//! The command-line grammar.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keyvault: an API-key vault with encrypted records and a tamper-evident audit log.
#[derive(Debug, Parser)]
#[command(
    name = "keyvault",
    version,
    after_help = "Exit codes: 0 success; 1 error; 2 the vault is sealed (status)."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialise a new vault in a data directory and print its unseal shares once.
    Init(InitArgs),
    /// Run the HTTP server over a vault (sealed until unsealed).
    Serve(ServeArgs),
}

/// `keyvault init`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("method").required(true).args(["passphrase_file", "shares"])))]
pub struct InitArgs {
    /// Data directory of the new vault (created 0700 if missing; must be empty).
    #[arg(long, env = "KEYVAULT_DATA_DIR")]
    pub data_dir: PathBuf,
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
    #[arg(long, env = "KEYVAULT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on; loopback only unless `--insecure-listen`.
    #[arg(long, default_value = "127.0.0.1:8731")]
    pub listen: SocketAddr,
    /// Allow a non-loopback address without TLS (traffic, tokens and keys in the clear).
    #[arg(long)]
    pub insecure_listen: bool,
    /// Unseal at start with the passphrase in this file.
    #[arg(long, value_name = "FILE")]
    pub unseal_passphrase_file: Option<PathBuf>,
}
