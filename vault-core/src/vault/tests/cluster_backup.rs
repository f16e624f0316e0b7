//! Backup and restore of a cluster vault against a real etcd (`scripts/check-cluster.sh`): a
//! backup through each node (the shared rows at one etcd revision, the node's own log) taken
//! while another node writes, restored into a new prefix and new data directories, and the
//! restores that must be refused before they write anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::cluster::Cluster;
use super::*;
use crate::audit::export::verify_export;
use crate::backup::verify_backup;
use crate::keys::{VerifyCode, VerifyRequest};
use crate::storage::etcd_config::{EtcdConfig, NodeId};

/// Node `node` of the vault under `prefix`, with the cluster's etcd members.
fn config_under(cluster: &Cluster, prefix: &str, node: &str) -> EtcdConfig {
    let base = cluster.config(node);
    EtcdConfig::new(
        base.endpoints.clone(),
        prefix,
        NodeId::parse(node).unwrap(),
        None,
        None,
        None,
    )
    .unwrap()
}

fn new_prefix() -> String {
    let mut id = [0u8; 8];
    fill_random(&mut id);
    format!("/keyvault-restore-test/{}", hex::encode(id))
}

/// A backup of `vault` written to `path`.
fn backup_to(vault: &Vault, path: &Path) -> crate::backup::BackupReport {
    let mut bytes = Vec::new();
    let report = vault.backup(&ctx(), &mut bytes, |_| {}).unwrap();
    fs::write(path, &bytes).unwrap();
    report
}

fn code(vault: &Vault, text: &str) -> VerifyCode {
    let request = VerifyRequest {
        cost: 0,
        ..VerifyRequest::new(text)
    };
    vault.verify(&ctx(), request).unwrap().code
}

fn restore_err(file: &Path, dir: &Path, etcd: &EtcdConfig) -> String {
    Vault::restore_cluster(file, dir, etcd, |_| {})
        .unwrap_err()
        .to_string()
}

#[test]
fn a_backup_through_each_node_restores_a_cluster_that_verifies_every_key_on_every_node() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let (_, on_a) = issue(&a, "owner-a");
    let (_, on_b) = issue(&b, "owner-b");
    let (revoked, revoked_text) = issue(&a, "owner-r");
    a.revoke_key(&ctx(), &revoked.key.id()).unwrap();

    // B keeps writing and both keep verifying while the backups run.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (b, stop, on_a) = (b.clone(), stop.clone(), on_a.clone());
        std::thread::spawn(move || {
            let mut made = 0;
            while !stop.load(Ordering::Relaxed) {
                issue(&b, "owner-busy");
                assert_eq!(code(&b, &on_a), VerifyCode::Valid);
                made += 1;
                // A steady trickle, not a flood: the other cluster tests of this binary run
                // beside this one and their nodes' views must keep up on two cores.
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            made
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let (file_a, file_b) = (tmp.path().join("a.kvbak"), tmp.path().join("b.kvbak"));
    let report_a = backup_to(&a, &file_a);
    let report_b = backup_to(&b, &file_b);
    stop.store(true, Ordering::Relaxed);
    assert!(busy.join().unwrap() > 0, "writes ran during the backups");
    let (revision_a, revision_b) = (report_a.revision.unwrap(), report_b.revision.unwrap());
    assert!(revision_a < revision_b, "B wrote between the two backups");
    let summary = verify_backup(File::open(&file_a).unwrap(), |_| {}).unwrap();
    let origin = summary.cluster.unwrap();
    assert_eq!(
        (origin.node_id.as_str(), origin.revision),
        ("a", revision_a)
    );

    // Refused before anything is written: a prefix holding a vault, another node's log, a
    // one-host backup, a truncated file.
    let prefix = new_prefix();
    let e = restore_err(&file_a, &tmp.path().join("x"), &cluster.config("a"));
    assert!(e.contains("holds a vault"), "{e}");
    let e = restore_err(
        &file_b,
        &tmp.path().join("x"),
        &config_under(&cluster, &prefix, "a"),
    );
    assert!(
        e.contains("holds the audit log of node b, not of node a"),
        "{e}"
    );
    let (_one_tmp, one_host) = new_vault();
    let one_file = tmp.path().join("one.kvbak");
    backup_to(&one_host, &one_file);
    let e = restore_err(
        &one_file,
        &tmp.path().join("x"),
        &config_under(&cluster, &prefix, "a"),
    );
    assert!(e.contains("one-host vault"), "{e}");
    let cut = tmp.path().join("cut.kvbak");
    let bytes = fs::read(&file_a).unwrap();
    fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let e = restore_err(
        &cut,
        &tmp.path().join("x"),
        &config_under(&cluster, &prefix, "a"),
    );
    assert!(e.contains("truncated"), "{e}");
    assert!(!tmp.path().join("x").exists());
    // A one-host restore of a node's backup names what it is.
    let e = Vault::restore(File::open(&file_a).unwrap(), &tmp.path().join("x"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("backup of node a of a cluster vault"), "{e}");

    // The later backup's shared rows would hold changes the earlier node's log lacks: the
    // earlier backup is then refused.
    let other = new_prefix();
    Vault::restore_cluster(
        &file_b,
        &tmp.path().join("ob"),
        &config_under(&cluster, &other, "b"),
        |_| {},
    )
    .unwrap();
    let e = restore_err(
        &file_a,
        &tmp.path().join("oa"),
        &config_under(&cluster, &other, "a"),
    );
    assert!(
        e.contains("before the one the shared state comes from"),
        "{e}"
    );
    // Another vault's backup into that prefix is refused too.
    let Some((_elsewhere, stranger)) = Cluster::new() else {
        return;
    };
    let stranger_file = tmp.path().join("stranger.kvbak");
    backup_to(&stranger, &stranger_file);
    let e = restore_err(
        &stranger_file,
        &tmp.path().join("oa"),
        &config_under(&cluster, &other, "a"),
    );
    assert!(e.contains("of another vault"), "{e}");
    drop(stranger);

    // The earliest backup first: it writes the shared rows; the next only its node's part.
    let restored_a = Vault::restore_cluster(
        &file_a,
        &tmp.path().join("ra"),
        &config_under(&cluster, &prefix, "a"),
        |_| {},
    )
    .unwrap();
    assert!(restored_a.shared_rows.unwrap() > 0);
    let restored_b = Vault::restore_cluster(
        &file_b,
        &tmp.path().join("rb"),
        &config_under(&cluster, &prefix, "b"),
        |_| {},
    )
    .unwrap();
    assert_eq!(restored_b.shared_rows, None);
    assert_eq!(
        restored_a.node.audit_public_key,
        a.audit_public_keys().unwrap()[0]
    );

    // With the first backup giving the shared rows (a `backup --cluster` directory), the
    // nodes restore in any order.
    let third = new_prefix();
    let first_b = Vault::restore_cluster_from(
        &file_a,
        &file_b,
        &tmp.path().join("tb"),
        &config_under(&cluster, &third, "b"),
        |_| {},
    )
    .unwrap();
    assert!(first_b.shared_rows.is_some());
    let then_a = Vault::restore_cluster_from(
        &file_a,
        &file_a,
        &tmp.path().join("ta"),
        &config_under(&cluster, &third, "a"),
        |_| {},
    )
    .unwrap();
    assert_eq!(then_a.shared_rows, None);
    // A node's backup taken before the one giving the shared rows is refused.
    let e = Vault::restore_cluster_from(
        &file_b,
        &file_a,
        &tmp.path().join("x"),
        &config_under(&cluster, &new_prefix(), "a"),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("before the one the shared state comes from"),
        "{e}"
    );

    for (node, report) in [("a", &restored_a), ("b", &restored_b)] {
        let vault = Vault::open_cluster(
            &tmp.path().join(format!("r{node}")),
            &config_under(&cluster, &prefix, node),
            &VaultOptions::default(),
        )
        .unwrap();
        assert_eq!(vault.vault_id(), a.vault_id());
        // The credential of the backup's time.
        vault
            .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
            .unwrap();
        assert_eq!(code(&vault, &on_a), VerifyCode::Valid, "node {node}");
        assert_eq!(code(&vault, &on_b), VerifyCode::Valid, "node {node}");
        assert_eq!(
            code(&vault, &revoked_text),
            VerifyCode::Revoked,
            "node {node}"
        );
        // Its log goes on from the backed-up one: the first entry after it is the restore's.
        let text = export_text(&vault).unwrap();
        verify_export(text.as_bytes(), &verifier(&vault), None, |_| {}).unwrap();
        let restore_entry = text
            .lines()
            .find(|line| line.contains("\"sys.restore\""))
            .unwrap();
        assert!(
            restore_entry.contains(&format!("\"seq\":{}", report.node.audit_entries)),
            "{restore_entry}"
        );
        assert!(
            restore_entry.contains(&format!("\"node\":\"{node}\"")),
            "{restore_entry}"
        );
        vault.leave_cluster();
    }
}
