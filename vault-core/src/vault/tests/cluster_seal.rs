//! `seal --cluster` against a real etcd (`scripts/check-cluster.sh`): one node's request seals
//! every node, each recording its own seal in its own log; verifies are refused on every node
//! once the call returns; each node unseals on its own afterwards.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::audit::Entry;
use crate::keys::VerifyRequest;

fn entries(vault: &Vault) -> Vec<Entry> {
    (0..vault.audit_size())
        .map(|seq| Entry::parse(&vault.audit_entry(seq).unwrap().unwrap()).unwrap())
        .collect()
}

fn verify(vault: &Vault, text: &str) -> Result<crate::keys::Verdict> {
    vault.verify(
        &ctx(),
        VerifyRequest {
            cost: 0,
            ..VerifyRequest::new(text)
        },
    )
}

#[test]
fn one_request_seals_every_node_each_in_its_own_log() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let c = cluster.node("c");
    let (_, text) = issue(&a, "alice");
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in [&b, &c] {
        while !verify(node, &text).is_ok_and(|v| v.valid) {
            assert!(
                Instant::now() < deadline,
                "the key did not reach every node"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    a.seal_cluster(&ctx()).unwrap();
    assert!(a.is_sealed());
    // Once the call returned, no node answers a verify.
    for node in [&b, &c] {
        assert!(matches!(verify(node, &text), Err(Error::Sealed)));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(b.is_sealed() && c.is_sealed()) {
        assert!(Instant::now() < deadline, "a node did not seal");
        std::thread::sleep(Duration::from_millis(50));
    }
    let asked = entries(&a);
    assert!(asked.iter().any(|e| e.event == "sys.seal_cluster"));
    assert_eq!(asked.last().unwrap().event, "sys.seal");
    for node in [&b, &c] {
        let seal = entries(node)
            .into_iter()
            .rfind(|e| e.event == "sys.seal")
            .unwrap();
        assert_eq!(seal.details["cluster"], true);
        assert_eq!(seal.details["requested_on"], "a");
    }

    // Each node unseals on its own and answers again; a second cluster seal (the row now
    // exists) from another node seals them all again.
    for node in [&a, &b, &c] {
        node.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
            .unwrap();
        assert!(verify(node, &text).unwrap().valid);
    }
    b.seal_cluster(&ctx()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(a.is_sealed() && b.is_sealed() && c.is_sealed()) {
        assert!(
            Instant::now() < deadline,
            "a node did not seal the second time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Sealed, or on one host, it is refused.
    assert!(matches!(b.seal_cluster(&ctx()), Err(Error::Sealed)));
    let (_tmp, one) = testing::passphrase_vault();
    assert!(matches!(
        one.seal_cluster(&ctx()),
        Err(Error::InvalidInput(_))
    ));
}
