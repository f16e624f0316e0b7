//! One key's rate limit shared by two nodes against a real etcd (`scripts/check-cluster.sh`):
//! each node takes the tokens the other tallied out of its own bucket within about a second,
//! so the `VALID` answers across both stay near the key's limit, where two nodes that shared
//! nothing would each allow it whole.
//!
//! The bound asserted for traffic on both nodes at once: at most the limit plus what one node
//! let through in the last [`LAG`] (its tally not yet taken by the other), and the refill.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::apikey::{ApiKey, KeyId};
use crate::keys::{NewKey, RateLimit, Verdict, VerifyCode, VerifyRequest};

/// How late a node may take the other's tokens in these tests: a tally goes out with the
/// node's report about once a second, on a loaded machine up to a few hundred milliseconds
/// more, and the other node's watch brings it at once.
const LAG: Duration = Duration::from_secs(2);

fn limited(vault: &Vault, limit: u32) -> (KeyId, String) {
    let issued = vault
        .create_key(
            &ctx(),
            NewKey {
                ratelimit: Some(RateLimit {
                    limit,
                    // An hour: the refill in a test of seconds is a small fraction of a token.
                    period_seconds: 3600,
                }),
                ..NewKey::new("limited")
            },
        )
        .unwrap();
    (issued.info.key_id, key_text(&issued))
}

/// A verify, asked again while the node's view is stale (a node on a loaded host refuses
/// rather than answer from a view more than a second old; such a refusal grants nothing).
fn verify(vault: &Vault, text: &str) -> Verdict {
    let start = Instant::now();
    loop {
        match vault.verify(&ctx(), VerifyRequest::new(text)) {
            Err(Error::ClusterUnavailable) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            answer => return answer.unwrap(),
        }
    }
}

/// Waits (at most five seconds) until `vault`'s bucket for `id` holds at most `tokens`.
fn wait_for_tokens(vault: &Vault, id: &KeyId, tokens: f64) {
    let start = Instant::now();
    loop {
        let left = vault.inner.key_book.tokens_left(id).unwrap();
        if left <= tokens {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the other node's tokens never came: {left} left, {tokens} expected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_key_verified_on_two_nodes_in_turn_gets_its_limit_once_not_twice() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    const LIMIT: u32 = 20;
    let (id, text) = limited(&a, LIMIT);
    assert_eq!(ApiKey::parse(&text, &a.prefix()).unwrap().id(), id);

    assert!(verify(&b, &text).valid);
    // A read the key when it made it: it loses B's token.
    wait_for_tokens(&a, &id, f64::from(LIMIT) - 0.5);
    for _ in 0..10 {
        assert!(verify(&a, &text).valid);
    }
    wait_for_tokens(&b, &id, f64::from(LIMIT) - 10.5);
    let mut on_b = 0;
    let refused = loop {
        let verdict = verify(&b, &text);
        if !verdict.valid {
            break verdict;
        }
        on_b += 1;
        assert!(on_b <= LIMIT, "B lets the key through past its limit");
    };
    assert_eq!(refused.code, VerifyCode::RateLimited);
    let state = refused.ratelimit.unwrap();
    assert_eq!((state.limit, state.remaining), (LIMIT, 0));
    assert!(state.reset_seconds > 0);
    let total = 1 + 10 + on_b;
    // Without sharing B would have let 19 more through: 30 in all.
    assert!(
        (LIMIT..=LIMIT + 1).contains(&total),
        "{total} VALID across both nodes for a limit of {LIMIT}"
    );
    // A has heard of B's last tokens too.
    wait_for_tokens(&a, &id, 0.5);
    assert_eq!(verify(&a, &text).code, VerifyCode::RateLimited);
}

#[test]
fn two_nodes_verifying_one_key_at_once_stay_near_its_limit() {
    let Some((cluster, a)) = Cluster::new() else {
        return;
    };
    let b = cluster.node("b");
    const LIMIT: u32 = 60;
    /// Each node's traffic: one verify every `PACE`, for `FOR`: 20 a second at most, 120
    /// attempts, so that each node alone would use the whole limit.
    const PACE: Duration = Duration::from_millis(50);
    const FOR: Duration = Duration::from_secs(6);
    let (_, text) = limited(&a, LIMIT);
    let text = Arc::new(text);
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|node| {
            let text = Arc::clone(&text);
            std::thread::spawn(move || {
                let start = Instant::now();
                let (mut valid, mut limited) = (0u32, 0u32);
                while start.elapsed() < FOR {
                    let sent = Instant::now();
                    let verdict = verify(&node, &text);
                    match verdict.code {
                        VerifyCode::Valid => valid += 1,
                        VerifyCode::RateLimited => {
                            assert!(verdict.ratelimit.is_some());
                            limited += 1;
                        }
                        other => panic!("answered {other:?}"),
                    }
                    std::thread::sleep(PACE.saturating_sub(sent.elapsed()));
                }
                (valid, limited)
            })
        })
        .collect();
    let counts: Vec<(u32, u32)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let total: u32 = counts.iter().map(|(valid, _)| valid).sum();
    let per_second = (Duration::from_secs(1).as_millis() / PACE.as_millis()) as u32;
    let bound = LIMIT + per_second * LAG.as_secs() as u32 + 1;
    eprintln!("VALID per node, RATE_LIMITED per node: {counts:?}; {total} VALID in all");
    assert!(
        total <= bound,
        "{total} VALID across both nodes for a limit of {LIMIT} (at most {bound}; two nodes \
         sharing nothing allow {})",
        2 * LIMIT
    );
    assert!(total + 1 >= LIMIT, "{total} VALID: the limit was not used");
}
