//! Tests of the fold, its buckets and its signals.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// An old secret used at `at` (Unix s) of a key rotated at `since` with grace until `until`.
fn old_secret(seq: u64, at: u64, since: Option<u64>, until: u64) -> Observation {
    Observation {
        seq,
        time_ms: at * 1_000,
        verify: true,
        outcome: "VALID".into(),
        key_id: Some("00112233445566778899aabb".into()),
        owner: Some("alice".into()),
        client: Some("192.0.2.1".into()),
        credits: 0,
        previous_until: Some(until),
        previous_since: since,
    }
}

fn near_expiry_signals(obs: &[Observation]) -> usize {
    let th = Thresholds::default();
    let (mut agg, mut ch) = (Aggregate::default(), Changes::default());
    for o in obs {
        agg.apply(&th, o, &mut ch);
    }
    agg.signals()
        .filter(|s| s.kind == SignalKind::PreviousSecretNearExpiry)
        .count()
}

/// The README's walkthrough: rotate with `--grace 3600` (the warning window) and use the old
/// key at once. Clients have not switched yet: no signal. Still in use past half of that
/// grace: a signal. A long grace warns in its last hour; an entry written before `since`
/// was logged keeps the plain rule.
#[test]
fn an_old_secret_is_near_expiry_late_in_its_grace_not_right_after_the_rotation() {
    let t = 1_900_000_000;
    assert_eq!(
        near_expiry_signals(&[old_secret(1, t + 1, Some(t), t + 3_600)]),
        0
    );
    assert_eq!(
        near_expiry_signals(&[old_secret(1, t + 1_799, Some(t), t + 3_600)]),
        0
    );
    assert_eq!(
        near_expiry_signals(&[old_secret(1, t + 1_800, Some(t), t + 3_600)]),
        1
    );
    // A 10-minute grace: the second five minutes.
    assert_eq!(
        near_expiry_signals(&[old_secret(1, t + 60, Some(t), t + 600)]),
        0
    );
    assert_eq!(
        near_expiry_signals(&[old_secret(1, t + 300, Some(t), t + 600)]),
        1
    );
    // A week of grace: the last hour only.
    let week = t + 7 * 86_400;
    assert_eq!(
        near_expiry_signals(&[old_secret(1, week - 3_601, Some(t), week)]),
        0
    );
    assert_eq!(
        near_expiry_signals(&[old_secret(1, week - 3_600, Some(t), week)]),
        1
    );
    // No `since` (an entry from before it was logged): the last hour, as it always was.
    assert_eq!(
        near_expiry_signals(&[old_secret(1, t + 1, None, t + 3_600)]),
        1
    );
}

#[derive(Debug, Clone)]
enum Op {
    Count(u64),
    Insert(u64, u64),
    Remove(u64),
    DropOlder(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    // Starts in a small range, so that operations meet the same buckets.
    let start = 0..40u64;
    prop_oneof![
        4 => start.clone().prop_map(Op::Count),
        1 => (start.clone(), 1..5u64).prop_map(|(s, n)| Op::Insert(s, n)),
        1 => start.clone().prop_map(Op::Remove),
        1 => (0..10u64, start).prop_map(|(keep, now)| Op::DropOlder(keep, now)),
    ]
}

fn counted(n: u64) -> Counts {
    let mut counts = Counts::default();
    counts.codes.add("VALID", n);
    counts
}

/// A key busy for a month and idle since gives the room of its buckets back as they expire.
#[test]
fn pruned_buckets_give_their_room_back() {
    let mut buckets: Buckets = Buckets::default();
    for hour in 0..840 {
        buckets.at(hour * HOUR).add(Code::Known(0), 1, None);
    }
    assert!(buckets.capacity() >= 840);
    buckets.drop_older(HOURLY_RETENTION, 800 * HOUR + HOURLY_RETENTION);
    assert_eq!(buckets.iter().count(), 40);
    assert!(buckets.capacity() <= 80, "{}", buckets.capacity());
    buckets.drop_older(HOURLY_RETENTION, 900 * HOUR + HOURLY_RETENTION);
    assert!(buckets.is_empty());
    assert_eq!(buckets.capacity(), 0);
}

proptest! {
    /// Buckets answer as a sorted map of the same operations does.
    #[test]
    fn buckets_behave_as_a_sorted_map(ops in proptest::collection::vec(op(), 0..200)) {
        let (mut buckets, mut model): (Buckets, _) = (Buckets::default(), BTreeMap::<u64, Counts>::new());
        for op in ops {
            match op {
                Op::Count(s) => {
                    buckets.at(s).add(Code::Known(0), 1, None);
                    model.entry(s).or_default().add(Code::Known(0), 1, None);
                }
                Op::Insert(s, n) => {
                    buckets.insert(s, counted(n));
                    model.insert(s, counted(n));
                }
                Op::Remove(s) => {
                    buckets.remove(s);
                    model.remove(&s);
                }
                Op::DropOlder(keep, now) => {
                    buckets.drop_older(keep, now);
                    model.retain(|s, _| s + keep >= now);
                }
            }
            let all: Vec<_> = buckets.iter().map(|(s, c)| (s, c.clone())).collect();
            let want: Vec<_> = model.iter().map(|(s, c)| (*s, c.clone())).collect();
            prop_assert_eq!(all, want);
            prop_assert_eq!(buckets.is_empty(), model.is_empty());
            for s in 0..41 {
                prop_assert_eq!(buckets.get(s), model.get(&s));
                let range: Vec<_> = buckets.range(s, s + 7).map(|(s, _)| s).collect();
                let want: Vec<_> = model.range(s..s + 7).map(|(s, _)| *s).collect();
                prop_assert_eq!(range, want);
            }
        }
    }
}

/// The writer's observation of an event (made from the typed event before it is serialised)
/// and the fold's of the stored entry read back (`observe`) are the same, whatever the event:
/// the live figures and a rebuild from the log count alike.
#[allow(clippy::unwrap_used)]
mod observation_agrees {
    use super::*;
    use crate::apikey::KeyId;
    use crate::audit::Event;
    use crate::audit::entry::Prepared;
    use crate::context::{Actor, Context};

    fn detail() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "[a-z0-9 ]{0,12}".prop_map(serde_json::Value::from),
        ]
    }

    proptest! {
        #[test]
        fn the_typed_event_and_the_stored_entry_give_the_same_observation(
            name in prop_oneof![Just("key.verify"), Just("key.create"), Just("sys.seal")],
            outcome in prop_oneof![
                Just("VALID".to_owned()),
                Just("NOT_FOUND".to_owned()),
                Just("ok".to_owned()),
                "[A-Za-z_]{0,30}",
            ],
            key in proptest::option::of((any::<[u8; 12]>(), "\\PC{0,40}")),
            client in proptest::option::of("\\PC{0,40}"),
            details in proptest::collection::btree_map(
                prop_oneof![
                    Just("cost".to_owned()),
                    Just("previous_secret".to_owned()),
                    Just("previous_secret_expires_at".to_owned()),
                    Just("previous_secret_since".to_owned()),
                    "[a-z_]{1,12}",
                ],
                detail(),
                0..6,
            ),
            seq in any::<u64>(),
            time_ms in any::<u64>(),
        ) {
            let mut event = match key {
                Some((id, owner)) => Event::key(name, outcome, KeyId::from_bytes(id), &owner),
                None => Event::new(name, outcome),
            };
            for (name, value) in details {
                event = event.detail(&name, value);
            }
            let mut ctx = Context::new(Actor::Operator);
            if let Some(client) = client {
                ctx = ctx.with_client(client);
            }
            let mut prepared = Prepared::new(event, &ctx);
            let bytes = prepared.finish(seq, time_ms);
            let stored = Entry::parse(&bytes).unwrap();
            prop_assert_eq!(&prepared.observation, &observe(stored));
        }
    }
}

#[test]
fn every_signal_kind_is_written_the_same_by_as_str_and_serde() {
    for kind in SignalKind::ALL {
        let json = serde_json::to_string(&kind).expect("a unit variant serialises");
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
    }
}
