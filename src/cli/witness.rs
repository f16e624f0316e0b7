//! The arguments of `keyvault witness ...`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `keyvault witness ...`.
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Run a witness: it cosigns a vault's audit checkpoint only if it extends the largest one
    /// of that log it has cosigned, so a vault whose data directory is rolled back to an older
    /// copy cannot get a second history cosigned. Run it on another host than the vaults.
    ///
    /// It speaks C2SP tlog-witness over HTTP at the root of --listen: a vault configured with
    /// the witness URL http://HOST:PORT posts to http://HOST:PORT/add-checkpoint, and monitors
    /// read GET /ORIGIN_HASH/checkpoint (the SHA-256 of the log's origin, hex). At the first
    /// start it makes its Ed25519 key in DIR and prints its verifier key (later starts log it).
    /// Keep DIR safe: a witness that lost its state must be retired, never restarted blank.
    #[command(after_help = "Example:\n  \
        keyvault witness serve --data-dir /var/lib/keyvault-witness \\\n    \
        --listen 0.0.0.0:8732 --insecure-listen --log @/etc/keyvault-witness/vault-a.pub")]
    Serve(WitnessServeArgs),
    /// Print the verifier key of the witness in DIR (it may be running), as vault operators
    /// configure it in `[[audit.witness]]` and auditors give it to `audit verify --witness`.
    #[command(after_help = "Example:\n  keyvault witness key --data-dir /var/lib/keyvault-witness")]
    Key {
        /// The witness's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// `keyvault witness serve`.
#[derive(Debug, Args)]
pub struct WitnessServeArgs {
    /// The witness's data directory: its key and what it has cosigned (created 0700).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to listen on; loopback only unless --insecure-listen.
    #[arg(long, default_value = "127.0.0.1:8732")]
    pub listen: SocketAddr,
    /// A log to witness: a vault's audit public key as `keyvault init` printed it, or @FILE.
    /// Repeat for several vaults, and for a vault whose audit key was rotated give its new key
    /// beside the old one (`operator rotate-audit-key` prints it): any of a log's keys is
    /// accepted for it.
    #[arg(long = "log", value_name = "KEY", required = true)]
    pub logs: Vec<String>,
    /// The witness's key name, used only at the first start [default:
    /// keyvault-witness/HOSTNAME].
    #[arg(long)]
    pub name: Option<String>,
    /// Allow a non-loopback address. The witness speaks plain HTTP: what it receives and
    /// returns is signed, so TLS is optional, but without it anyone on the path sees which
    /// checkpoints (sizes and roots, nothing secret) it is sent and can delay or drop them. Put
    /// a TLS reverse proxy in front if that matters.
    #[arg(long)]
    pub insecure_listen: bool,
}
