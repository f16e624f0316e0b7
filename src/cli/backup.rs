//! The arguments of `operator backup` and `operator restore`.

use std::path::PathBuf;

use clap::Args;

/// `keyvault operator backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (created 0600).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `keyvault operator restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`keyvault operator backup -o FILE`).
    pub file: PathBuf,
    /// Data directory to restore into: must not exist, or be empty (created 0700).
    #[arg(long, env = "KEYVAULT_DATA_DIR")]
    pub data_dir: PathBuf,
}
