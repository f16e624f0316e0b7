//! Cluster vaults against a real etcd (`scripts/check-cluster.sh` sets
//! `KEYVAULT_ETCD_ENDPOINTS`): init once per prefix, nodes opened and unsealed on their own, the
//! node data directory's marker, and work larger than one etcd transaction (rewrap, the owner
//! index rebuild, audit groups of many writers) split to fit. Without the variable there is no
//! etcd to run against and each test says so; with it, an etcd that does not answer fails them.

use std::sync::Arc;

use super::*;
use crate::keys::VerifyRequest;
use crate::storage::etcd::MAX_BATCH_KEYS;
use crate::storage::etcd_config::{EtcdConfig, NodeId};
use crate::testing::passphrase_method;

/// The etcd members to run against, if given.
fn endpoints() -> Option<Vec<String>> {
    let Ok(text) = std::env::var("KEYVAULT_ETCD_ENDPOINTS") else {
        eprintln!("KEYVAULT_ETCD_ENDPOINTS is not set: scripts/check-cluster.sh runs this test");
        return None;
    };
    Some(text.split(',').map(|e| e.trim().to_owned()).collect())
}

/// A prefix no other test (or earlier run) uses.
fn fresh_prefix() -> String {
    let mut id = [0u8; 8];
    fill_random(&mut id);
    format!("/keyvault-cluster-test/{}", hex::encode(id))
}

fn config(endpoints: &[String], prefix: &str, node: &str) -> EtcdConfig {
    EtcdConfig::new(
        endpoints.to_vec(),
        prefix,
        NodeId::parse(node).unwrap(),
        None,
        None,
        None,
    )
    .unwrap()
}

/// A new cluster vault under a fresh prefix, made by node `a` in a temporary directory.
pub(super) struct Cluster {
    tmp: tempfile::TempDir,
    endpoints: Vec<String>,
    prefix: String,
}

impl Cluster {
    pub(super) fn new() -> Option<(Cluster, Vault)> {
        let endpoints = endpoints()?;
        let cluster = Cluster {
            tmp: tempfile::tempdir().unwrap(),
            endpoints,
            prefix: fresh_prefix(),
        };
        let (vault, issued) = Vault::init_cluster(
            &cluster.dir("a"),
            &cluster.config("a"),
            &passphrase_method(PASSPHRASE),
            &Prefix::default(),
        )
        .unwrap();
        assert!(issued.root_token.is_some());
        Some((cluster, vault))
    }

    pub(super) fn dir(&self, node: &str) -> PathBuf {
        self.tmp.path().join(node)
    }

    pub(super) fn config(&self, node: &str) -> EtcdConfig {
        config(&self.endpoints, &self.prefix, node)
    }

    /// Node `node` opened (with its own data directory) and unsealed.
    pub(super) fn node(&self, node: &str) -> Vault {
        let vault = Vault::open_cluster(
            &self.dir(node),
            &self.config(node),
            &VaultOptions::default(),
        )
        .unwrap();
        assert!(vault.is_sealed(), "a node starts sealed");
        vault
            .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
            .unwrap();
        vault
    }
}

fn verify(vault: &Vault, text: &str) -> crate::keys::Verdict {
    vault
        .verify(
            &ctx(),
            VerifyRequest {
                cost: 0,
                ..VerifyRequest::new(text)
            },
        )
        .unwrap()
}

#[test]
fn a_cluster_vault_is_made_once_per_prefix_and_each_node_unseals_on_its_own() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    // A second init on the prefix is refused, and leaves no node directory behind.
    let again = Vault::init_cluster(
        &cluster.dir("c"),
        &cluster.config("c"),
        &passphrase_method("another passphrase here"),
        &Prefix::default(),
    )
    .unwrap_err();
    assert!(matches!(again, Error::AlreadyInitialized(_)), "{again}");
    assert!(!cluster.dir("c").join(STORE_DIR).exists());

    // Node B starts sealed, refuses a wrong passphrase, and unseals with the vault's.
    let b = Vault::open_cluster(
        &cluster.dir("b"),
        &cluster.config("b"),
        &VaultOptions::default(),
    )
    .unwrap();
    assert!(b.is_sealed());
    assert_eq!(b.vault_id(), a.vault_id());
    let wrong = b
        .unseal_passphrase(&ctx(), &Passphrase::new("not the passphrase at all"))
        .unwrap_err();
    assert!(matches!(wrong, Error::WrongCredential), "{wrong}");
    b.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();

    // A key made on A verifies on B; each node logs in its own audit log.
    let (issued, text) = issue(&a, "owner-1");
    let verdict = verify(&b, &text);
    assert!(verdict.valid, "{:?}", verdict.code);
    assert_eq!(verdict.key_id, Some(issued.key.id()));
    assert!(a.audit_size() >= 3 && b.audit_size() >= 2);

    // Sealing B seals B alone.
    b.seal(&ctx()).unwrap();
    assert!(b.is_sealed() && !a.is_sealed());
    drop(b);

    // A node's data directory is its own: another node's id, a one-host open, a prefix
    // without a vault are all refused.
    drop(a);
    let wrong_node = Vault::open_cluster(
        &cluster.dir("a"),
        &cluster.config("b"),
        &VaultOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&wrong_node, Error::InvalidInput(m) if m.contains("node a")),
        "{wrong_node}"
    );
    let one_host = Vault::open(&cluster.dir("a")).unwrap_err();
    assert!(matches!(one_host, Error::NotAVault(_)), "{one_host}");
    let empty = config(&cluster.endpoints, &fresh_prefix(), "a");
    let none = Vault::open_cluster(&cluster.dir("d"), &empty, &VaultOptions::default());
    assert!(matches!(none, Err(Error::NotInitialized(_))));
    // Its own node reopens it, sealed, and the key is still there.
    let a = cluster.node("a");
    assert!(verify(&a, &text).valid);
}

#[test]
fn work_larger_than_one_etcd_transaction_is_split_to_fit() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    // Many writers at once: the audit log's commit groups stay within one transaction.
    let writers = 48;
    let each = 4;
    let texts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let a = &a;
                s.spawn(move || {
                    (0..each)
                        .map(|i| issue(a, &format!("owner-{}", (w * each + i) % 7)).1)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(texts.len() > MAX_BATCH_KEYS);
    // Rewrap of more records than one transaction takes.
    let term = a.rotate(&ctx()).unwrap();
    let report = a.rewrap(&ctx(), |_, _| {}).unwrap();
    assert_eq!(report.term, term);
    assert!(
        report.rewritten as usize > MAX_BATCH_KEYS,
        "rewritten {}",
        report.rewritten
    );
    assert_eq!(a.rewrap(&ctx(), |_, _| {}).unwrap().rewritten, 0);
    // The owner index rebuild of a rotated audit key, over more keys than one transaction.
    a.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    // Another node, unsealed with the rotated keyring, verifies every key.
    let b = Arc::new(cluster.node("b"));
    for text in &texts {
        assert!(verify(&b, text).valid);
    }
    // The rebuilt owner index finds each owner's keys on B.
    let owner3 = (0..writers * each).filter(|n| n % 7 == 3).count();
    let page = b
        .list_keys(&crate::keys::KeyFilter {
            owner: Some("owner-3".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.keys.len(), owner3);
}

#[test]
fn a_change_from_a_stale_view_is_redone_never_lost() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let paid = a
        .create_key(
            &ctx(),
            crate::keys::NewKey {
                credits: Some(10),
                ..crate::keys::NewKey::new("owner-1")
            },
        )
        .unwrap();
    let (id, text) = (paid.key.id(), key_text(&paid));
    // B reads the key (its cache now holds it), then A changes it.
    assert!(verify(&b, &text).valid);
    let renamed = crate::keys::KeyUpdate {
        name: Some("renamed on a".into()),
        ..Default::default()
    };
    a.update_key(&ctx(), &id, renamed).unwrap();
    // B's revoke was computed from the record before A's change: refused by etcd, then redone
    // on A's record. Both changes stand.
    let info = b.revoke_key(&ctx(), &id).unwrap();
    assert!(info.revoked_at.is_some());
    assert_eq!(info.name, "renamed on a");
    // What etcd holds, as a node that never read the key sees it.
    let stored = cluster.node("c").show_key(&id).unwrap();
    assert_eq!(stored.name, "renamed on a");
    assert!(stored.revoked_at.is_some());

    // Credits: a spend from a stale count is refused by etcd (never counted twice) and redone
    // on the count etcd holds, so the caller never hears of it; every spend is counted once
    // across the nodes.
    let paid = a
        .create_key(
            &ctx(),
            crate::keys::NewKey {
                credits: Some(10),
                ..crate::keys::NewKey::new("owner-2")
            },
        )
        .unwrap();
    let text = key_text(&paid);
    let spend = |vault: &Vault| vault.verify(&ctx(), VerifyRequest::new(&text));
    assert_eq!(spend(&a).unwrap().credits_remaining, Some(9));
    assert_eq!(spend(&b).unwrap().credits_remaining, Some(8));
    assert_eq!(spend(&a).unwrap().credits_remaining, Some(7));
    assert_eq!(spend(&b).unwrap().credits_remaining, Some(6));
    // Each redone verify left one entry, the one of the try that committed.
    for node in [&a, &b] {
        let spends = export_text(node)
            .unwrap()
            .lines()
            .filter(|l| l.contains(r#""event":"key.verify""#) && l.contains(r#""owner":"owner-2""#))
            .count();
        assert_eq!(spends, 2);
    }
    // Each node's log holds its own spends only, and no entry of a refused one: a refused
    // group is cut from the log and its tail in the node's store put back.
    drop((a, b));
    let a = cluster.node("a");
    assert_eq!(spend(&a).unwrap().credits_remaining, Some(5));
}
