//! A cluster node's audit log against a real etcd (`scripts/check-cluster.sh`): one log per
//! node, its origin `keyvault/<vault id>/<node id>`, signed with the vault's audit key, so the
//! key init printed verifies every node's export and one node's checkpoints are not another's.

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
