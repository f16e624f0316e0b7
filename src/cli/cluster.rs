//! The arguments of `keyvault cluster ...`: a cluster vault's nodes (DESIGN section 10).

use clap::Subcommand;

/// `keyvault cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster's nodes (operator or auditor): each node's health (ok, sealed, fenced,
    /// starting, down), the etcd revision its view has applied and when it was last seen.
    #[command(
        after_help = "Examples:\n  keyvault cluster status\n  keyvault --json cluster status | jq '.nodes[] | select(.health != \"ok\")'"
    )]
    Status,
}
