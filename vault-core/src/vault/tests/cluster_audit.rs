//! A cluster node's audit log against a real etcd (`scripts/check-cluster.sh`): one log per
//! node, its origin `keyvault/<vault id>/<node id>`, signed with the vault's audit key, so the
//! key init printed verifies every node's export and one node's checkpoints are not another's;
//! an audit key rotation through one node followed in every node's log.

use super::cluster::Cluster;
use super::*;
use crate::audit::export::verify_export;
use crate::audit::note::NoteVerifier;

#[test]
fn each_node_signs_its_own_log_with_the_vault_key_under_its_own_origin() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let vault_id = hex::encode(a.vault_id());
    assert_eq!(a.origin(), format!("keyvault/{vault_id}/a"));
    assert_eq!(b.origin(), format!("keyvault/{vault_id}/b"));

    // The key init printed: the vault's, under the vault's own name.
    let printed = String::from_utf8(stored(&a, Space::Meta, META_AUDIT_KEY)).unwrap();
    let vault_key = NoteVerifier::parse(&printed).unwrap();
    assert_eq!(vault_key.name(), format!("keyvault/{vault_id}"));

    for node in [&a, &b] {
        issue(node, "alice");
        node.audit_checkpoint().unwrap();
        let own = verifier(node);
        assert_eq!(
            own.name(),
            node.origin(),
            "a node's key is named by its origin"
        );
        assert_eq!(own, vault_key.renamed(node.origin()).unwrap());
        let text = export_text(node).unwrap();
        assert!(text.lines().next().unwrap().contains(node.origin()));
        for key in [&vault_key, &own] {
            let report = verify_export(text.as_bytes(), key, None, |_| {}).unwrap();
            assert!(report.entries >= 3, "init or unseal, a key, the export");
        }
    }

    // One node's key does not pass for another's log.
    let text = export_text(&b).unwrap();
    let e = verify_export(text.as_bytes(), &verifier(&a), None, |_| {}).unwrap_err();
    assert!(e.why.contains("does not verify"), "{e}");
}

/// `rotate-audit-key` through one node (DESIGN section 10: "done once, through any node; the
/// others follow"): a node that runs through it and one that is sealed meanwhile each announce
/// the new key in their own log, and every node's export verifies with the key init printed
/// (the rotation followed) and with the new key the rotation printed.
#[test]
fn every_node_log_follows_an_audit_key_rotation_made_through_another_node() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let c = cluster.node("c");
    let printed = String::from_utf8(stored(&a, Space::Meta, META_AUDIT_KEY)).unwrap();
    let init_key = NoteVerifier::parse(&printed).unwrap();
    c.seal(&ctx()).unwrap();

    let rotation = a.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let new_key = NoteVerifier::parse(&rotation.public_key).unwrap();
    assert_eq!(new_key.name(), init_key.name(), "named as init's key");
    assert_ne!(new_key, init_key);
    c.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();

    for node in [&a, &b, &c] {
        // B follows from its watch, on a thread of its own: within a few seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while node
            .logged_audit_generation(&node.keys().unwrap().keyring)
            .unwrap()
            < rotation.generation
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not follow",
                node.origin()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        issue(node, "after the rotation");
        node.audit_checkpoint().unwrap();
        let text = export_text(node).unwrap();
        let announced = text
            .lines()
            .filter(|l| l.contains("\"event\":\"audit.key_rotated\""))
            .count();
        assert_eq!(
            announced,
            1,
            "{}: one announcement in its log",
            node.origin()
        );
        for key in [&init_key, &new_key] {
            let report = verify_export(text.as_bytes(), key, None, |_| {})
                .unwrap_or_else(|e| panic!("{} with {key}: {e}", node.origin()));
            assert!(report.entries >= 3);
        }
    }
    // Nothing more to follow: a later unseal announces nothing again.
    b.seal(&ctx()).unwrap();
    b.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    assert_eq!(b.follow_audit_key().unwrap(), None);
}
