//! A revoke's wait for the other nodes against a real etcd (`scripts/check-cluster.sh`): answered
//! as soon as every live node acknowledged it, and only after the timed wait when one did not,
//! which has then fenced itself.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::keys::{VerifyCode, VerifyRequest};
use crate::storage::etcd::watch::MAX_VIEW_AGE;

/// How long a change may take to reach a node that follows etcd again (the watch delivers in
/// milliseconds; the bound is for a loaded 2-core host).
const WITHIN: Duration = Duration::from_secs(5);

fn code(vault: &Vault, text: &str) -> Result<VerifyCode> {
    let request = VerifyRequest {
        cost: 0,
        ..VerifyRequest::new(text)
    };
    vault.verify(&ctx(), request).map(|v| v.code)
}

#[test]
fn a_revoke_acknowledged_by_every_live_node_is_answered_without_the_timed_wait() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    // A sealed node is live too: it acknowledges what its watch applies.
    let c = cluster.node("c");
    c.seal(&ctx()).unwrap();
    for round in 0..3 {
        let (issued, text) = issue(&a, &format!("owner-{round}"));
        assert_eq!(code(&b, &text).unwrap(), VerifyCode::Valid);
        a.revoke_key(&ctx(), &issued.key.id()).unwrap();
        // Refused at once on the other node, from its own cache.
        assert_eq!(code(&b, &text).unwrap(), VerifyCode::Revoked);
        assert_eq!(code(&a, &text).unwrap(), VerifyCode::Revoked);
    }
    assert_eq!(a.cluster_timed_waits(), 0, "every node acknowledged");
    // A revoke through B waits for A and C the same way.
    let (issued, text) = issue(&b, "owner-b");
    assert_eq!(code(&a, &text).unwrap(), VerifyCode::Valid);
    b.revoke_key(&ctx(), &issued.key.id()).unwrap();
    assert_eq!(code(&a, &text).unwrap(), VerifyCode::Revoked);
    assert_eq!(b.cluster_timed_waits(), 0);
    // The sealed node, unsealed, refuses it too.
    c.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    assert_eq!(code(&c, &text).unwrap(), VerifyCode::Revoked);
}

#[test]
fn a_node_that_stops_following_etcd_is_waited_for_and_fences_itself() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let (issued, text) = issue(&a, "owner-1");
    assert_eq!(code(&b, &text).unwrap(), VerifyCode::Valid);
    // B's watch stops (as a paused process's): it neither applies nor acknowledges the revoke.
    let view = b.node().unwrap().view.get().unwrap();
    view.pause(true);
    let started = Instant::now();
    a.revoke_key(&ctx(), &issued.key.id()).unwrap();
    assert_eq!(a.cluster_timed_waits(), 1, "B did not acknowledge");
    assert!(started.elapsed() >= MAX_VIEW_AGE);
    // B never answers VALID: its view is older than a second, so it refuses every verify.
    let fenced = code(&b, &text).unwrap_err();
    assert!(matches!(fenced, Error::ClusterUnavailable), "{fenced}");
    // Following etcd again, B catches up and refuses the key as revoked.
    view.pause(false);
    let resumed = Instant::now();
    loop {
        match code(&b, &text) {
            Ok(VerifyCode::Revoked) => break,
            Err(Error::ClusterUnavailable) => {}
            other => panic!("B answered {other:?} after the revoke"),
        }
        assert!(resumed.elapsed() < WITHIN, "B did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And acknowledges again: the next revoke does not wait.
    let (issued, text) = issue(&a, "owner-2");
    let start = Instant::now();
    while code(&b, &text).ok() != Some(VerifyCode::Valid) {
        assert!(start.elapsed() < WITHIN, "the new key did not reach B");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.revoke_key(&ctx(), &issued.key.id()).unwrap();
    assert_eq!(a.cluster_timed_waits(), 1);
    assert_eq!(code(&b, &text).unwrap(), VerifyCode::Revoked);
}
