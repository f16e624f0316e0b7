//! The arguments of `operator backup` and `operator restore`.

use std::path::PathBuf;

use clap::Args;

/// `keyvault operator backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (created 0600); with `--cluster`, a new or empty directory.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Back up every node of a cluster vault, one after another through each node: the
    /// directory gets one backup per node (`NODE.kvbak`: the shared state at one etcd
    /// revision and that node's log) and `cluster.json` naming them. Fails, naming the node,
    /// if any node the cluster ever registered is down.
    #[arg(long, conflicts_with = "force")]
    pub cluster: bool,
}

/// `keyvault operator restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`keyvault operator backup -o FILE`).
    pub file: PathBuf,
    /// Data directory to restore into: must not exist, or be empty (created 0700). With
    /// `--config`, defaults to the config's `data_dir`.
    #[arg(long, env = "KEYVAULT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A cluster node's config (`[storage] backend = "etcd"`): restore this node of a cluster
    /// vault from the backup taken through it. The first node restored writes the vault's
    /// shared state into the configured prefix, which must hold nothing; each node writes its
    /// own audit log into its `data_dir`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}
