//! One key's credits spent from two nodes at once against a real etcd
//! (`scripts/check-cluster.sh`): a spend that loses a race to the other node is redone on the
//! count etcd holds, so the callers see exactly the credits as `VALID`, the rest
//! `USAGE_EXCEEDED`, and never the conflict; a verify that spends nothing, racing them, never
//! fails; and each verify leaves exactly one audit entry, the one of the try that committed.

use std::sync::Arc;

use super::cluster::Cluster;
use super::*;
use crate::keys::{AsyncVerify, NewKey, Verdict, VerifyCode, VerifyRequest};

/// Credits of the contested key.
const CREDITS: u64 = 40;
/// Threads per node spending from it, and spends each tries.
const SPENDERS: usize = 6;
const SPENDS: usize = 10;
/// Threads per node verifying without spending, and verifies each makes.
const LOOKERS: usize = 2;
const LOOKS: usize = 15;

/// A verify as the server makes it (async first, finished on a blocking thread when it must
/// be), or the blocking call; `Err` is any error, which the test counts as a failure.
fn verify(vault: &Vault, text: &str, cost: u64, through_async: bool) -> Result<Verdict> {
    let req = VerifyRequest {
        cost,
        ..VerifyRequest::new(text)
    };
    if !through_async {
        return vault.verify(&ctx(), req);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    match runtime.block_on(vault.verify_async(&ctx(), req, false))? {
        AsyncVerify::Verdict(verdict) => Ok(verdict),
        AsyncVerify::MustBlock(pending) => vault.finish_verify(&ctx(), pending),
    }
}

/// `key.verify` entries of `owner` in a node's log, by outcome.
fn verify_entries(vault: &Vault, owner: &str) -> Vec<String> {
    export_text(vault)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["event"] == "key.verify" && e["owner"] == owner)
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn credits_spent_from_two_nodes_at_once_are_exact_and_no_caller_sees_a_conflict() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    let contested = a
        .create_key(
            &ctx(),
            NewKey {
                credits: Some(CREDITS),
                ..NewKey::new("racer")
            },
        )
        .unwrap();
    let contested = Arc::new(key_text(&contested));
    let (_, bystander) = issue(&a, "bystander");
    let bystander = Arc::new(bystander);
    // Both nodes have read both keys before the race.
    for node in [&a, &b] {
        assert!(verify(node, &contested, 0, false).unwrap().valid);
        assert!(verify(node, &bystander, 0, false).unwrap().valid);
    }

    let nodes = [Arc::new(a), Arc::new(b)];
    let mut spenders = Vec::new();
    let mut lookers = Vec::new();
    for node in &nodes {
        for t in 0..SPENDERS {
            let (node, text) = (Arc::clone(node), Arc::clone(&contested));
            spenders.push(std::thread::spawn(move || {
                (0..SPENDS)
                    .map(|i| verify(&node, &text, 1, (t + i) % 2 == 0))
                    .collect::<Vec<_>>()
            }));
        }
        for t in 0..LOOKERS {
            let node = Arc::clone(node);
            let (contested, bystander) = (Arc::clone(&contested), Arc::clone(&bystander));
            lookers.push(std::thread::spawn(move || {
                (0..LOOKS)
                    .flat_map(|i| {
                        let through_async = (t + i) % 2 == 0;
                        [
                            verify(&node, &contested, 0, through_async),
                            verify(&node, &bystander, 1, through_async),
                        ]
                    })
                    .collect::<Vec<_>>()
            }));
        }
    }

    let (mut valid, mut exceeded, mut failed) = (0, 0, Vec::new());
    for thread in spenders {
        for answer in thread.join().unwrap() {
            match answer {
                Ok(v) if v.valid => valid += 1,
                Ok(v) if v.code == VerifyCode::UsageExceeded => exceeded += 1,
                Ok(v) => failed.push(format!("spend answered {:?}", v.code)),
                Err(e) => failed.push(format!("spend failed: {e}")),
            }
        }
    }
    for thread in lookers {
        for answer in thread.join().unwrap() {
            match answer {
                Ok(v) if v.valid => {}
                Ok(v) => failed.push(format!("look answered {:?}", v.code)),
                Err(e) => failed.push(format!("look failed: {e}")),
            }
        }
    }
    assert!(failed.is_empty(), "{} failures: {failed:?}", failed.len());
    let spends = 2 * SPENDERS * SPENDS;
    assert_eq!(valid, CREDITS as usize);
    assert_eq!(exceeded, spends - CREDITS as usize);
    for node in &nodes {
        let left = node.show_key(&contested_id(&contested)).unwrap().credits;
        assert_eq!(left, Some(0));
    }

    // Exactly one entry per verify across the two logs (a refused try's entry was cut), each
    // with the outcome its caller was given.
    let mut outcomes = Vec::new();
    for node in &nodes {
        outcomes.extend(verify_entries(node, "racer"));
    }
    let count = |code: &str| outcomes.iter().filter(|o| *o == code).count();
    let looks = 2 * LOOKERS * LOOKS;
    // Two cost-0 verifies before the race, one per node.
    assert_eq!(count("VALID"), CREDITS as usize + looks + 2, "{outcomes:?}");
    assert_eq!(count("USAGE_EXCEEDED"), spends - CREDITS as usize);
    assert_eq!(outcomes.len(), spends + looks + 2);
    let mut bystanders = 0;
    for node in &nodes {
        bystanders += verify_entries(node, "bystander").len();
    }
    assert_eq!(bystanders, looks + 2);
}

/// The id a key's text names.
fn contested_id(text: &str) -> crate::apikey::KeyId {
    ApiKey::parse(text, &Prefix::default()).unwrap().id()
}
