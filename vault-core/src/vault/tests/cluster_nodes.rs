//! Node registration against a real etcd (`scripts/check-cluster.sh`): a node id live
//! elsewhere is refused, every node ever registered is listed, live or not, a node id that
//! has served is refused on a fresh data directory, and a node that dies stops being live
//! when its lease expires.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::storage::etcd::registry::{LEASE_TTL, NodeStatus};

fn status(vault: &Vault, id: &str) -> NodeStatus {
    vault
        .cluster_nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("node {id} is not listed"))
}

#[test]
fn a_node_id_live_elsewhere_is_refused_and_every_node_ever_registered_is_listed() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    // The same node id from another data directory (another host) is refused while B lives.
    let twin = Vault::open_cluster(
        &cluster.dir("b-twin"),
        &cluster.config("b"),
        &VaultOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&twin, Error::Conflict(m) if m.contains("node id b is live")),
        "{twin}"
    );
    assert!(!cluster.dir("b-twin").join(STORE_DIR).exists());
    let nodes = a.cluster_nodes().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(nodes.iter().all(|n| n.live && n.first_registered_ms > 0));
    assert!(a.cluster_node_live().unwrap() && b.cluster_node_live().unwrap());
    assert_eq!(b.cluster_node_id().unwrap(), "b");

    // Each live node reports the revision its view has applied, whether it is current and
    // whether it is sealed, within about a second.
    let report = |want_sealed: bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = status(&a, "b").report
                && r.sealed == want_sealed
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no report with sealed = {want_sealed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = report(false);
    assert!(
        before.view_current && before.applied_revision > 0,
        "{before:?}"
    );
    issue(&a, "alice");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&a, "b")
        .report
        .is_none_or(|r| r.applied_revision <= before.applied_revision)
    {
        assert!(
            Instant::now() < deadline,
            "the applied revision did not move"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.seal(&ctx()).unwrap();
    report(true);
    b.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    report(false);

    // A node closed is no longer live, but stays listed; it starts again.
    let first = status(&a, "b").first_registered_ms;
    drop(b);
    let gone = status(&a, "b");
    assert!(!gone.live);
    assert!(gone.last_seen_ms >= first);
    // Its id on a fresh data directory (another host, or the directory lost) is refused: it
    // would start a second audit log under the node's origin. Nothing is made there.
    let fresh = Vault::open_cluster(
        &cluster.dir("b-fresh"),
        &cluster.config("b"),
        &VaultOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&fresh, Error::InvalidInput(m) if m.contains("node id b has served this cluster before")),
        "{fresh}"
    );
    assert!(!cluster.dir("b-fresh").join(STORE_DIR).exists());
    assert!(!status(&a, "b").live);
    let b = cluster.node("b");
    assert!(status(&a, "b").live);
    assert_eq!(status(&a, "b").first_registered_ms, first);

    // A node that dies (its lease no longer kept alive, never revoked) stops being live once
    // the lease expires, and its id is free again.
    b.node().unwrap().registration.abandon();
    let deadline = Instant::now() + Duration::from_secs(LEASE_TTL as u64 + 5);
    while status(&a, "b").live {
        assert!(Instant::now() < deadline, "a dead node stayed live");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(b);
    let again = cluster.node("b");
    assert!(status(&a, "b").live);
    // A process about to exit frees its id at once, whichever thread drops the last handle.
    again.leave_cluster();
    assert!(!status(&a, "b").live);
    // One host has no cluster.
    let (_tmp, one) = testing::passphrase_vault();
    assert!(matches!(one.cluster_nodes(), Err(Error::InvalidInput(_))));
}
