//! The watch-fed view against a real etcd (`scripts/check-cluster.sh`): what one node changes
//! reaches another node's caches without a store read on its verify path.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::keys::{NewKey, VerifyCode, VerifyRequest};

/// How long a change may take to reach another node here (the watch delivers in
/// milliseconds; the bound is for a loaded 2-core host).
const WITHIN: Duration = Duration::from_secs(5);

fn code(vault: &Vault, text: &str) -> VerifyCode {
    vault
        .verify(
            &ctx(),
            VerifyRequest {
                cost: 0,
                ..VerifyRequest::new(text)
            },
        )
        .unwrap()
        .code
}

/// Polls `vault` until the key's code is `want`, within [`WITHIN`].
fn until(vault: &Vault, text: &str, want: VerifyCode) -> Duration {
    let start = Instant::now();
    loop {
        let request = VerifyRequest {
            cost: 0,
            ..VerifyRequest::new(text)
        };
        // An error (a key under a keyring term that has not reached the node yet) is "not yet".
        let got = vault.verify(&ctx(), request).map(|v| v.code);
        if matches!(got, Ok(c) if c == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WITHIN,
            "still {got:?} after {WITHIN:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_revoke_and_an_update_on_one_node_reach_the_other_nodes_cache() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let (issued, text) = issue(&a, "owner-1");
    let id = issued.key.id();
    // B caches the key, then A revokes it: B answers it refused from its own cache, fed by
    // the watch (the cache is never emptied here, so the answer comes from the change).
    // A revoke is answered only once every live node has it (or fenced itself): B refuses
    // the key as soon as A's revoke returns, with no wait of its own (`cluster_revoke.rs`
    // tests the acknowledged and the timed wait).
    assert_eq!(code(&b, &text), VerifyCode::Valid);
    a.revoke_key(&ctx(), &id).unwrap();
    assert_eq!(code(&b, &text), VerifyCode::Revoked);
    // An update (scopes) too.
    let (issued, text) = issue(&a, "owner-2");
    assert_eq!(code(&b, &text), VerifyCode::Valid);
    let update = crate::keys::KeyUpdate {
        enabled: Some(false),
        ..Default::default()
    };
    a.update_key(&ctx(), &issued.key.id(), update).unwrap();
    until(&b, &text, VerifyCode::Disabled);
    // Credits spent on A are what B counts from.
    let paid = a
        .create_key(
            &ctx(),
            NewKey {
                credits: Some(5),
                ..NewKey::new("owner-3")
            },
        )
        .unwrap();
    let paid_text = key_text(&paid);
    assert_eq!(code(&b, &paid_text), VerifyCode::Valid);
    let spend = |v: &Vault| v.verify(&ctx(), VerifyRequest::new(&paid_text));
    assert_eq!(spend(&a).unwrap().credits_remaining, Some(4));
    let start = Instant::now();
    loop {
        match spend(&b) {
            Ok(verdict) => {
                assert_eq!(verdict.credits_remaining, Some(3));
                break;
            }
            // B spent from its count before the change reached it: refused, never counted.
            Err(e) if e.is_conflict() => assert!(start.elapsed() < WITHIN),
            Err(e) => panic!("{e}"),
        }
    }
    // A key rotation through A reaches B's keyring: B verifies keys made under the new term.
    a.rotate(&ctx()).unwrap();
    let (_, text) = issue(&a, "owner-4");
    until(&b, &text, VerifyCode::Valid);
    assert!(b.cluster_node_live().unwrap());
}
