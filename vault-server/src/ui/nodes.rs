//! The overview's cluster nodes: a small table of the nodes of a cluster vault (DESIGN section
//! 10), or "single node" for a vault on one host. The table takes a plain list of rows, so that
//! it does not depend on how the cluster is read; the one call that reads it is behind the
//! `etcd` feature, which one-host builds leave out.

use maud::{Markup, html};
use vault_core::Vault;

use super::layout;

/// One node as the overview shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRow {
    /// The node's id.
    pub(crate) id: String,
    /// Whether it holds a live registration now.
    pub(crate) live: bool,
    /// The etcd revision the node has applied, when the cluster reports it.
    pub(crate) revision: Option<i64>,
    /// When it was last known live (Unix ms).
    pub(crate) last_seen_ms: u64,
}

/// The cluster's nodes, or `None` for a vault on one host.
pub(crate) fn cluster_nodes(vault: &Vault) -> vault_core::Result<Option<Vec<NodeRow>>> {
    #[cfg(feature = "etcd")]
    {
        match vault.cluster_nodes() {
            Ok(nodes) => Ok(Some(
                nodes
                    .into_iter()
                    .map(|n| NodeRow {
                        // As `GET /v1/sys/cluster` reads it: a node that is not live has no
                        // current report, whatever etcd still holds until its lease ends.
                        revision: n.report.filter(|_| n.live).map(|r| r.applied_revision),
                        id: n.id,
                        live: n.live,
                        last_seen_ms: n.last_seen_ms,
                    })
                    .collect(),
            )),
            // What `cluster_nodes` answers on one host.
            Err(vault_core::Error::InvalidInput(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(feature = "etcd"))]
    {
        // A build without etcd opens only one-host vaults.
        let _ = vault;
        Ok(None)
    }
}

/// The nodes table, or "single node".
pub(crate) fn table(nodes: Option<&[NodeRow]>) -> Markup {
    let Some(nodes) = nodes else {
        return html! { p id="nodes" { "Single node: this vault runs on one host, not in a cluster." } };
    };
    let revisions = nodes.iter().any(|n| n.revision.is_some());
    html! {
        div class="table-wrap" {
            table id="nodes" {
                caption { (nodes.len()) " nodes of the cluster" }
                thead { tr {
                    th scope="col" { "Node" }
                    @if revisions { th scope="col" class="num" { "Revision applied" } }
                    th scope="col" { "Health" }
                    th scope="col" { "Last seen" }
                } }
                tbody {
                    @for n in nodes {
                        tr {
                            th scope="row" { code { (n.id) } }
                            @if revisions {
                                td class="num" { @if let Some(r) = n.revision { (r) } @else { "not reported" } }
                            }
                            td {
                                @if n.live { span class="state-ok" { "live" } }
                                @else { span class="state-alarm" { "not live" } }
                            }
                            td { (layout::time(n.last_seen_ms / 1000)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_shows_each_node_with_its_health_and_one_host_says_single_node() {
        let nodes = [
            NodeRow {
                id: "node-a".into(),
                live: true,
                revision: Some(42),
                last_seen_ms: 1_893_456_000_000,
            },
            NodeRow {
                id: "node-<b>".into(),
                live: false,
                revision: None,
                last_seen_ms: 1_893_455_000_000,
            },
        ];
        let html = table(Some(&nodes)).into_string();
        assert!(html.contains("2 nodes of the cluster"), "{html}");
        assert!(html.contains("<code>node-a</code>"));
        assert!(html.contains("node-&lt;b&gt;"), "ids are escaped: {html}");
        assert!(html.contains(">42<") && html.contains("not reported"));
        assert!(html.contains(">live<") && html.contains(">not live<"));
        assert!(html.contains("2030-01-01 00:00:00 UTC"));
        // No revision reported by any node: no column for it.
        let html = table(Some(&nodes[1..])).into_string();
        assert!(!html.contains("Revision applied"));
        let html = table(None).into_string();
        assert!(html.contains("Single node"));
        assert!(!html.contains("<table"));
    }
}
