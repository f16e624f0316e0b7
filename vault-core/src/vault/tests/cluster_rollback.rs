//! Rollbacks on a cluster (`scripts/check-cluster.sh`): a row put back older in etcd under
//! live nodes (a node that has seen a newer record version of the key refuses the watch's older
//! one, keeps answering from what it held, and counts the refusal), and a node's data
//! directory put back behind the checkpoint it published in etcd (it stays sealed).

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::keys::{NewKey, VerifyCode, VerifyRequest};

/// How long a change may take to reach another node here (a loaded 2-core host).
const WITHIN: Duration = Duration::from_secs(5);

fn code(vault: &Vault, text: &str) -> VerifyCode {
    let request = VerifyRequest {
        cost: 0,
        ..VerifyRequest::new(text)
    };
    vault.verify(&ctx(), request).unwrap().code
}

/// Polls until `done` holds, within [`WITHIN`].
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_revoke_undone_in_etcd_is_refused_by_the_nodes_that_saw_it() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let issued = a.create_key(&ctx(), NewKey::new("owner-1")).unwrap();
    let (id, text) = (issued.key.id(), key_text(&issued));
    assert_eq!(code(&b, &text), VerifyCode::Valid);
    let created = stored(&a, Space::Keys, id.as_bytes());
    a.revoke_key(&ctx(), &id).unwrap();
    eventually("the revoke reaches b", || {
        code(&b, &text) == VerifyCode::Revoked
    });
    assert_eq!(b.record_rollbacks(), 0);
    // The created record (version 1) put back over the revoked one (version 2), as a restored
    // etcd backup or someone with write access to etcd would.
    let mut batch = Batch::default();
    batch.insert(Space::Keys, id.as_bytes(), &created);
    a.inner.store.apply(batch).unwrap();
    eventually("b counts the rollback", || b.record_rollbacks() >= 1);
    assert_eq!(code(&b, &text), VerifyCode::Revoked);
    assert_eq!(code(&a, &text), VerifyCode::Revoked);
    // A conflict on b empties its slot: the row read again is refused, not served.
    b.inner.key_book.forget(&id);
    let request = VerifyRequest {
        cost: 0,
        ..VerifyRequest::new(&text)
    };
    assert!(matches!(
        b.verify(&ctx(), request),
        Err(Error::Record(crate::record::RecordError::RolledBack {
            seen: 2,
            got: 1
        }))
    ));
}

/// A node's data directory put back as it was earlier (a disk snapshot restored) opens sealed
/// and stays sealed: its log does not reach the checkpoint the node published in etcd since.
#[test]
fn a_node_rolled_back_behind_its_published_checkpoint_stays_sealed() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    b.inner.audit.checkpoint().unwrap();
    drop(b);
    let (dir, old) = (cluster.dir("b"), cluster.dir("b-old"));
    testing::copy_dir(&dir, &old);
    // B goes on: more entries, and a larger checkpoint published.
    let b = cluster.node("b");
    for owner in ["owner-1", "owner-2", "owner-3"] {
        issue(&b, owner);
    }
    let signed = b.inner.audit.checkpoint().unwrap().checkpoint.size;
    let node = b.node().unwrap();
    eventually("b publishes its checkpoint", || {
        node.state
            .published_checkpoint()
            .unwrap()
            .is_some_and(|note| note.contains(&format!("\n{signed}\n")))
    });
    drop(b);
    // The earlier copy put back: opened sealed, and the unseal refused, naming etcd.
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(&old, &dir).unwrap();
    let b = Vault::open_cluster(&dir, &cluster.config("b"), &VaultOptions::default()).unwrap();
    let refused = b
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap_err();
    assert!(
        matches!(&refused, Error::RolledBack(m) if m.contains("published in etcd")),
        "{refused}"
    );
    assert!(b.is_sealed());
    // The other nodes go on.
    issue(&a, "owner-4");
}
