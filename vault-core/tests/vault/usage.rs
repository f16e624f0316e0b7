//! Usage summaries and suspicious-activity signals: figures against a plain count over the audit
//! log, the rebuild against the live figures, each signal on a scripted scenario and quiet on
//! steady traffic, and owners kept apart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use secrecy::ExposeSecret;
use serde_json::Value;
use vault_core::apikey::KeyId;
use vault_core::audit::Entry;
use vault_core::keys::{NewKey, VerifyCode, VerifyRequest};
use vault_core::usage::{
    Aggregate, Counts, Granularity, Signal, SignalKind, Subject, Thresholds, UsageQuery,
    client_hash,
};
use vault_core::{Context, Vault, VaultOptions};

use crate::common::*;

const SYNC: Duration = Duration::from_secs(20);

fn from(client: &str) -> Context {
    ctx().with_client(client)
}

fn verify(vault: &Vault, client: &str, key: &str) -> VerifyCode {
    vault
        .verify(&from(client), VerifyRequest::new(key))
        .unwrap()
        .code
}

fn signals_of(vault: &Vault, kind: SignalKind) -> Vec<Signal> {
    assert!(vault.usage_sync(SYNC).unwrap());
    vault
        .signals(None, 0)
        .unwrap()
        .into_iter()
        .filter(|s| s.kind == kind)
        .collect()
}

/// Makes a key and rotates it with no grace: returns (id, dead old text, live new text). The
/// old text is what someone holding the id with a wrong secret presents: its checksum is right.
fn rotated_away(vault: &Vault, owner: &str) -> (KeyId, String, String) {
    let issued = vault.create_key(&ctx(), NewKey::new(owner)).unwrap();
    let old = issued.key.expose_secret_text().expose_secret().to_owned();
    let new = vault.rotate_key(&ctx(), &issued.info.key_id, 0).unwrap();
    let new = new.key.expose_secret_text().expose_secret().to_owned();
    (issued.info.key_id, old, new)
}

fn new_key(vault: &Vault, owner: &str) -> (KeyId, String) {
    let issued = vault.create_key(&ctx(), NewKey::new(owner)).unwrap();
    let text = issued.key.expose_secret_text().expose_secret().to_owned();
    (issued.info.key_id, text)
}

// ---- Summaries against a plain count over the log ---------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Create {
        owner: usize,
        credits: bool,
    },
    Verify {
        key: usize,
        client: usize,
        how: How,
        cost: u8,
    },
    Revoke {
        key: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum How {
    Right,
    Wrong,
    Malformed,
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        3 => Just(How::Right),
        1 => Just(How::Wrong),
        1 => Just(How::Malformed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0usize..3, any::<bool>()).prop_map(|(owner, credits)| Op::Create { owner, credits }),
        4 => (0usize..6, 0usize..4, how(), 0u8..3)
            .prop_map(|(key, client, how, cost)| Op::Verify { key, client, how, cost }),
        1 => (0usize..6).prop_map(|key| Op::Revoke { key }),
    ]
}

/// Per (size, subject, bucket start): codes, credits, distinct clients, counted straight from
/// the stored entries.
type Plain = BTreeMap<(Granularity, Subject, u64), (BTreeMap<String, u64>, u64, BTreeSet<u64>)>;

fn plain_count(vault: &Vault) -> Plain {
    let mut plain = Plain::new();
    for seq in 0..vault.audit_size() {
        let entry = Entry::parse(&vault.audit_entry(seq).unwrap().unwrap()).unwrap();
        if entry.event != "key.verify" {
            continue;
        }
        let (Some(key), Some(owner)) = (&entry.key_id, &entry.owner) else {
            continue;
        };
        let secs = entry.time_ms / 1000;
        for g in [Granularity::Hour, Granularity::Day] {
            for subject in [Subject::Key(key.clone()), Subject::Owner(owner.clone())] {
                let start = secs - secs % g.seconds();
                let b = plain.entry((g, subject, start)).or_default();
                *b.0.entry(entry.outcome.clone()).or_default() += 1;
                b.1 += entry
                    .details
                    .get("cost")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if let Some(c) = &entry.client {
                    b.2.insert(client_hash(c));
                }
            }
        }
    }
    plain
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For random workloads, every bucket the vault reports (per key and per owner, per hour and
    /// per day) equals a plain count over the audit log, and the rebuild equals the live figures.
    #[test]
    fn summaries_equal_a_plain_count_over_the_log(ops in proptest::collection::vec(op(), 1..40)) {
        let (_tmp, vault) = passphrase_vault();
        let owners = ["alice", "bob", "carol"];
        let clients = ["192.0.2.1", "192.0.2.2", "2001:db8::7", "198.51.100.9"];
        // (id, live text, dead text of the same id)
        let mut keys: Vec<(KeyId, String, String)> = Vec::new();
        for op in ops {
            match op {
                Op::Create { owner, credits } => {
                    let mut new = NewKey::new(owners[owner]);
                    if credits {
                        new.credits = Some(3);
                    }
                    let issued = vault.create_key(&ctx(), new).unwrap();
                    let dead = issued.key.expose_secret_text().expose_secret().to_owned();
                    let id = issued.info.key_id;
                    let live = vault.rotate_key(&ctx(), &id, 0).unwrap();
                    let live = live.key.expose_secret_text().expose_secret().to_owned();
                    keys.push((id, live, dead));
                }
                Op::Verify { key, client, how, cost } => {
                    let Some((_, live, dead)) = keys.get(key % keys.len().max(1)) else { continue };
                    let presented = match how {
                        How::Right => live.clone(),
                        How::Malformed => format!("{live}x"),
                        How::Wrong => dead.clone(),
                    };
                    let req = VerifyRequest { key: &presented, scope: None, cost: u64::from(cost) };
                    vault.verify(&from(clients[client]), req).unwrap();
                }
                Op::Revoke { key } => {
                    if let Some((id, _, _)) = keys.get(key % keys.len().max(1)) {
                        vault.revoke_key(&ctx(), id).unwrap();
                    }
                }
            }
        }

        prop_assert!(vault.usage_sync(SYNC).unwrap());
        let plain = plain_count(&vault);
        let live = vault.usage_snapshot().unwrap();
        let reported: Plain = live
            .buckets()
            .map(|(id, c)| (id, (c.codes.to_map(), c.credits_spent, c.clients.iter().copied().collect())))
            .collect();
        prop_assert_eq!(&reported, &plain);
        // And through the query API, bucket by bucket, for every key and owner.
        for ((g, subject, start), (codes, credits, clients)) in &plain {
            let q = UsageQuery { bucket: *g, from: *start, to: start + g.seconds() };
            let report = match subject {
                Subject::Key(k) => vault.key_usage(&KeyId::parse_hex(k).unwrap(), &q).unwrap(),
                Subject::Owner(o) => vault.owner_usage(o, &q).unwrap(),
            };
            prop_assert_eq!(report.buckets.len(), 1);
            prop_assert_eq!(&report.buckets[0].counts, codes);
            prop_assert_eq!(report.buckets[0].total, codes.values().sum::<u64>());
            prop_assert_eq!(report.buckets[0].credits_spent, *credits);
            prop_assert_eq!(report.buckets[0].distinct_clients, clients.len() as u64);
        }
        prop_assert_eq!(vault.usage_from_log().unwrap(), live);
    }
}

#[test]
fn rebuilt_figures_equal_the_live_ones_and_survive_a_restart() {
    let (_tmp, vault) = passphrase_vault();
    let (_, a) = new_key(&vault, "alice");
    let (_, old, new) = rotated_away(&vault, "bob");
    for i in 0..20 {
        verify(&vault, &format!("192.0.2.{}", i % 3), &a);
    }
    verify(&vault, "192.0.2.50", &old);
    verify(&vault, "192.0.2.50", &new);
    assert!(vault.usage_sync(SYNC).unwrap());
    let live = vault.usage_snapshot().unwrap();
    assert!(live.covers() > 0);
    assert_eq!(vault.usage_from_log().unwrap(), live);
    assert!(live.signals().count() >= 1, "the wrong secret is a signal");

    // The rebuild command stores exactly the live figures.
    assert_eq!(vault.rebuild_usage().unwrap(), live.covers());
    assert_eq!(vault.usage_snapshot().unwrap(), live);

    // Stored at close, loaded at open: the same figures, with the entries logged since
    // (the seal, the unseal) folded on top, still equal to a fold of the whole log.
    let path = vault.dir().to_path_buf();
    vault.seal(&ctx()).unwrap();
    drop(vault);
    let vault = Vault::open(&path).unwrap();
    vault
        .unseal_passphrase(&ctx(), &vault_core::kdf::Passphrase::new(PASSPHRASE))
        .unwrap();
    verify(&vault, "192.0.2.1", &a);
    assert!(vault.usage_sync(SYNC).unwrap());
    let reopened = vault.usage_snapshot().unwrap();
    assert_eq!(vault.usage_from_log().unwrap(), reopened);
    let day = UsageQuery::last(Granularity::Day, 2);
    let id = reopened
        .buckets()
        .find_map(|((_, s, _), _)| match s {
            Subject::Key(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap();
    let report = vault
        .key_usage(&KeyId::parse_hex(&id).unwrap(), &day)
        .unwrap();
    assert!(report.totals.total >= 1);
}

#[test]
fn a_vault_opened_without_usage_answers_usage_calls_with_an_error() {
    let (_tmp, vault) = passphrase_vault();
    let path = vault.dir().to_path_buf();
    drop(vault);
    let options = VaultOptions {
        usage: false,
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&path, &options).unwrap();
    assert!(matches!(
        vault.usage_snapshot(),
        Err(vault_core::Error::InvalidInput(_))
    ));
}

// ---- Owners apart ---------------------------------------------------------------------------

#[test]
fn one_owners_usage_and_signals_never_show_under_another_owners_filter() {
    let (_tmp, vault) = passphrase_vault();
    let (a_id, a) = new_key(&vault, "alice");
    let (_, b_old, b) = rotated_away(&vault, "bob");
    for _ in 0..5 {
        verify(&vault, "192.0.2.1", &a);
    }
    verify(&vault, "192.0.2.2", &b);
    verify(&vault, "192.0.2.2", &b_old);
    // An owner whose name is a prefix of another's.
    let (_, ab) = new_key(&vault, "ali");
    verify(&vault, "192.0.2.3", &ab);
    assert!(vault.usage_sync(SYNC).unwrap());

    let q = UsageQuery::last(Granularity::Day, 2);
    let alice = vault.owner_usage("alice", &q).unwrap();
    assert_eq!(alice.totals.total, 5);
    assert_eq!(alice.totals.counts.get("VALID"), Some(&5));
    assert_eq!(alice.totals.distinct_clients, 1);
    let bob = vault.owner_usage("bob", &q).unwrap();
    assert_eq!(bob.totals.total, 2);
    assert_eq!(bob.totals.counts.get("NOT_FOUND"), Some(&1));
    assert_eq!(vault.owner_usage("ali", &q).unwrap().totals.total, 1);
    assert_eq!(vault.owner_usage("nobody", &q).unwrap().totals.total, 0);
    assert_eq!(vault.key_usage(&a_id, &q).unwrap().owner, "alice");

    let bobs = vault.signals(Some("bob"), 0).unwrap();
    assert!(bobs.iter().any(|s| s.kind == SignalKind::WrongSecret));
    assert!(vault.signals(Some("alice"), 0).unwrap().is_empty());
    assert!(bobs.iter().all(|s| s.owner.as_deref() == Some("bob")));
    assert!(vault.key_signals(&a_id).unwrap().is_empty());
}

#[test]
fn usage_queries_refuse_bad_ranges_and_unknown_keys() {
    let (_tmp, vault) = passphrase_vault();
    let q = UsageQuery {
        bucket: Granularity::Hour,
        from: 0,
        to: 10 * 365 * 86_400,
    };
    assert!(matches!(
        vault.owner_usage("a", &q),
        Err(vault_core::Error::InvalidInput(_))
    ));
    let backwards = UsageQuery {
        bucket: Granularity::Day,
        from: 100 * 86_400,
        to: 99 * 86_400,
    };
    assert!(matches!(
        vault.owner_usage("a", &backwards),
        Err(vault_core::Error::InvalidInput(_))
    ));
    let unknown = KeyId::from_bytes([7; 12]);
    assert!(matches!(
        vault.key_usage(&unknown, &UsageQuery::last(Granularity::Day, 7)),
        Err(vault_core::Error::NotFound(_))
    ));
    assert!(matches!(
        vault.key_signals(&unknown),
        Err(vault_core::Error::NotFound(_))
    ));
}

// ---- Signals, through the vault -------------------------------------------------------------

#[test]
fn wrong_secret_for_a_known_id_is_a_signal_with_its_evidence() {
    let (_tmp, vault) = passphrase_vault();
    let (id, old, new) = rotated_away(&vault, "alice");
    // Steady, right traffic: quiet.
    for _ in 0..10 {
        assert_eq!(verify(&vault, "192.0.2.1", &new), VerifyCode::Valid);
    }
    assert!(signals_of(&vault, SignalKind::WrongSecret).is_empty());
    // Unknown ids and malformed keys are no key's business.
    verify(&vault, "192.0.2.66", "pvk_nonsense");
    assert!(signals_of(&vault, SignalKind::WrongSecret).is_empty());

    assert_eq!(verify(&vault, "203.0.113.5", &old), VerifyCode::NotFound);
    assert_eq!(verify(&vault, "203.0.113.6", &old), VerifyCode::NotFound);
    let found = signals_of(&vault, SignalKind::WrongSecret);
    assert_eq!(found.len(), 1, "{found:?}");
    let s = &found[0];
    assert_eq!(s.key_id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(s.owner.as_deref(), Some("alice"));
    assert_eq!(s.count, 2);
    assert_eq!(s.clients, ["203.0.113.5", "203.0.113.6"]);
    assert!(s.first_seq.unwrap() < s.last_seq.unwrap());
    assert!(s.first_at_ms <= s.last_at_ms);
    // The evidence names no secret.
    let text = serde_json::to_string(s).unwrap();
    assert!(!text.contains(&old[4..20]) && !text.contains(&new[4..20]));
    assert_eq!(vault.key_signals(&id).unwrap(), found);
}

#[test]
fn an_old_secret_used_early_in_its_grace_is_no_signal() {
    let (_tmp, vault) = passphrase_vault();
    // A long grace: the old secret in use early on is normal.
    let (long_id, long_old) = new_key(&vault, "alice");
    vault.rotate_key(&ctx(), &long_id, 7 * 86_400).unwrap();
    assert_eq!(verify(&vault, "192.0.2.1", &long_old), VerifyCode::Valid);
    assert!(signals_of(&vault, SignalKind::PreviousSecretNearExpiry).is_empty());

    // A grace of the warning window itself (the README's `--grace 3600`), the old secret used
    // right after the rotation, before clients switched: no signal either. (Late in a grace the
    // signal fires: `usage::aggregate` tests it with the entries' times.)
    let (id, old) = new_key(&vault, "alice");
    vault.rotate_key(&ctx(), &id, 3_600).unwrap();
    assert_eq!(verify(&vault, "192.0.2.1", &old), VerifyCode::Valid);
    assert!(signals_of(&vault, SignalKind::PreviousSecretNearExpiry).is_empty());
    // The verify's entry says since when the secret is the previous one.
    let info = vault.show_key(&id).unwrap();
    let export = export(&vault);
    let entry = export
        .lines()
        .find(|l| l.contains("\"previous_secret\":true") && l.contains(&id.to_string()))
        .unwrap();
    assert!(
        entry.contains(&format!("\"previous_secret_since\":{}", info.updated_at)),
        "{entry}"
    );
}

#[test]
fn a_new_client_address_is_a_signal_but_steady_use_from_one_is_not() {
    let (_tmp, vault) = passphrase_vault();
    let (id, key) = new_key(&vault, "alice");
    for _ in 0..30 {
        verify(&vault, "192.0.2.1", &key);
    }
    assert!(signals_of(&vault, SignalKind::NewClient).is_empty());
    assert!(
        vault.signals(None, 0).unwrap().is_empty(),
        "steady traffic is quiet"
    );
    verify(&vault, "203.0.113.9", &key);
    verify(&vault, "203.0.113.9", &key);
    let found = signals_of(&vault, SignalKind::NewClient);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].clients, ["203.0.113.9"]);
    assert_eq!(found[0].count, 1, "an address is news once");
    assert_eq!(found[0].key_id.as_deref(), Some(id.to_string().as_str()));
}

#[test]
fn failures_without_an_end_user_address_raise_a_signal_past_the_threshold() {
    let (_tmp, vault) = passphrase_vault();
    vault.set_usage_thresholds(Thresholds {
        unattributed_failures_per_minute: 3,
        ..Thresholds::default()
    });
    let raised = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&raised);
    vault.on_usage_signal(std::sync::Arc::new(move |s: &Signal| {
        assert_eq!(s.kind, SignalKind::UnattributedFailures);
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    vault.note_unattributed_failure(Some("127.0.0.1"));
    vault.note_unattributed_failure(Some("127.0.0.1"));
    assert!(signals_of(&vault, SignalKind::UnattributedFailures).is_empty());
    vault.note_unattributed_failure(Some("127.0.0.2"));
    vault.note_unattributed_failure(Some("127.0.0.2"));
    let found = signals_of(&vault, SignalKind::UnattributedFailures);
    // Unless the minute turned between the calls, one signal, seen twice.
    assert!(!found.is_empty() && found.len() <= 2, "{found:?}");
    assert!(found[0].key_id.is_none() && found[0].owner.is_none());
    assert!(
        found
            .iter()
            .flat_map(|s| &s.clients)
            .any(|c| c == "127.0.0.2")
    );
    assert_eq!(
        raised.load(std::sync::atomic::Ordering::SeqCst),
        found.len()
    );
    // Never under an owner's filter.
    assert!(vault.signals(Some("alice"), 0).unwrap().is_empty());
}

// ---- Signals, on scripted entries (times the tests choose) ----------------------------------

const KEY: &str = "0a0b0c0d0e0f101112131415";
const T0: u64 = 1_764_000_000_000; // an hour boundary, in ms

fn entry(seq: u64, time_ms: u64, outcome: &str, client: &str) -> Entry {
    Entry {
        seq,
        time_ms,
        event: "key.verify".into(),
        outcome: outcome.into(),
        key_id: Some(KEY.into()),
        owner: Some("alice".into()),
        actor: "embedded".into(),
        client: Some(client.into()),
        request_id: None,
        details: BTreeMap::new(),
        salt: "00000000000000000000000000000000".into(),
    }
}

/// `per_hour` verifies from one address every hour for `hours` hours from `start_ms`.
fn steady(agg: &mut Aggregate, seq: &mut u64, start_ms: u64, hours: u64, per_hour: u64) {
    let th = Thresholds::default();
    for h in 0..hours {
        for i in 0..per_hour {
            let t = start_ms + h * 3_600_000 + i * (3_600_000 / per_hour);
            agg.fold(&th, &entry(*seq, t, "VALID", "192.0.2.1"));
            *seq += 1;
        }
    }
}

#[test]
fn a_rate_several_times_the_keys_baseline_is_a_signal() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    let mut seq = 0;
    // Three days of 150 an hour (above the minimum, never above the baseline): quiet.
    steady(&mut agg, &mut seq, T0, 72, 150);
    assert_eq!(
        agg.signals().count(),
        0,
        "{:?}",
        agg.signals().collect::<Vec<_>>()
    );
    // Then 800 in one hour, more than 5 x 150.
    let spike = T0 + 72 * 3_600_000;
    for i in 0..800 {
        agg.fold(&th, &entry(seq, spike + i * 4_000, "VALID", "192.0.2.1"));
        seq += 1;
    }
    let found: Vec<_> = agg.signals().collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, SignalKind::RateSpike);
    assert_eq!(found[0].baseline_per_hour, Some(150));
    assert_eq!(found[0].count, 800);
    assert!(found[0].first_at_ms >= spike);
}

#[test]
fn a_late_entry_counts_in_the_baseline_it_belongs_to() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    let mut seq = 0;
    steady(&mut agg, &mut seq, T0, 72, 150);
    let hour = |h: u64| T0 + h * 3_600_000;
    let mut fold = |agg: &mut Aggregate, at: u64, outcome: &str| {
        agg.fold(&th, &entry(seq, at, outcome, "192.0.2.1"));
        seq += 1;
    };
    // 700 in hour 72: below 5 x the baseline of 150 an hour.
    for i in 0..700 {
        fold(&mut agg, hour(72) + i * 1_000, "VALID");
    }
    // 550 wrong secrets logged late, with times in hour 71 (a clock stepped back): the baseline
    // (every verify of the key counts) is now (23 x 150 + 700) / 24 an hour, so 800 in hour 72
    // is still no spike.
    for i in 0..550 {
        fold(&mut agg, hour(71) + i * 1_000, "NOT_FOUND");
    }
    for i in 0..100 {
        fold(&mut agg, hour(72) + 700_000 + i * 1_000, "VALID");
    }
    let spikes: Vec<_> = agg
        .signals()
        .filter(|s| s.kind == SignalKind::RateSpike)
        .collect();
    assert!(spikes.is_empty(), "{spikes:?}");
}

#[test]
fn a_young_or_quiet_key_has_no_rate_signal() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    let mut seq = 0;
    // A new key straight at 1000 an hour: no baseline yet, so no spike.
    steady(&mut agg, &mut seq, T0, 3, 1000);
    // Below the minimum, however sudden.
    let mut quiet = Aggregate::default();
    let mut s2 = 0;
    steady(&mut quiet, &mut s2, T0, 48, 1);
    for i in 0..90 {
        quiet.fold(
            &th,
            &entry(s2, T0 + 48 * 3_600_000 + i, "VALID", "192.0.2.1"),
        );
        s2 += 1;
    }
    assert_eq!(agg.signals().count(), 0);
    assert_eq!(quiet.signals().count(), 0);
}

#[test]
fn an_address_seen_within_the_window_is_not_new_and_one_gone_for_longer_is() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    let day = 86_400_000;
    agg.fold(&th, &entry(0, T0, "VALID", "192.0.2.1"));
    agg.fold(&th, &entry(1, T0 + 1_000, "VALID", "192.0.2.2"));
    assert_eq!(agg.signals().count(), 1);
    // 20 days later, both known.
    agg.fold(&th, &entry(2, T0 + 20 * day, "VALID", "192.0.2.1"));
    agg.fold(&th, &entry(3, T0 + 20 * day + 1, "VALID", "192.0.2.2"));
    assert_eq!(agg.signals().count(), 1);
    // .2 last seen on day 20; on day 55 it is news again (the key has used .1 meanwhile).
    agg.fold(&th, &entry(4, T0 + 54 * day, "VALID", "192.0.2.1"));
    agg.fold(&th, &entry(5, T0 + 55 * day, "VALID", "192.0.2.2"));
    let kinds: Vec<_> = agg.signals().map(|s| (s.kind, s.clients.clone())).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(
        kinds[1],
        (SignalKind::NewClient, vec!["192.0.2.2".to_owned()])
    );
}

#[test]
fn an_address_that_first_failed_is_still_new_when_it_presents_the_right_secret() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    agg.fold(&th, &entry(0, T0, "VALID", "192.0.2.1"));
    // A wrong secret from .9 counts its address in the hour's bucket, but is not a use of the
    // key: the right secret from .9 a minute later is still a new address.
    agg.fold(&th, &entry(1, T0 + 1_000, "NOT_FOUND", "192.0.2.9"));
    agg.fold(&th, &entry(2, T0 + 60_000, "VALID", "192.0.2.9"));
    let kinds: Vec<_> = agg.signals().map(|s| s.kind).collect();
    assert_eq!(kinds, [SignalKind::WrongSecret, SignalKind::NewClient]);
    let hour = agg
        .counts(Granularity::Hour, &Subject::Key(KEY.into()), T0 / 1_000)
        .unwrap();
    assert_eq!(hour.clients.len(), 2);
}

#[test]
fn past_the_addresses_a_key_remembers_new_ones_are_no_longer_news() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    let remembered = vault_core::usage::aggregate::SEEN_PER_KEY as u64;
    for i in 0..remembered {
        agg.fold(
            &th,
            &entry(i, T0 + i, "VALID", &format!("10.0.{}.{}", i / 256, i % 256)),
        );
    }
    // Every address after the first was news, merged into one signal.
    let news = |agg: &Aggregate| signals_count(agg, SignalKind::NewClient);
    assert_eq!(news(&agg), remembered - 1);
    agg.fold(
        &th,
        &entry(remembered, T0 + remembered, "VALID", "192.0.2.200"),
    );
    assert_eq!(news(&agg), remembered - 1);
    // A remembered address is still known.
    agg.fold(
        &th,
        &entry(remembered + 1, T0 + remembered + 1, "VALID", "10.0.0.7"),
    );
    assert_eq!(news(&agg), remembered - 1);
}

fn signals_count(agg: &Aggregate, kind: SignalKind) -> u64 {
    agg.signals()
        .filter(|s| s.kind == kind)
        .map(|s| s.count)
        .sum()
}

#[test]
fn old_buckets_are_dropped_after_their_retention() {
    let th = Thresholds::default();
    let mut agg = Aggregate::default();
    let day = 86_400_000;
    agg.fold(&th, &entry(0, T0, "VALID", "192.0.2.1"));
    agg.fold(&th, &entry(1, T0 + 40 * day, "VALID", "192.0.2.1"));
    let key = Subject::Key(KEY.into());
    assert!(agg.counts(Granularity::Hour, &key, T0 / 1000).is_none());
    let first_day = Granularity::Day.floor(T0 / 1000);
    assert_eq!(
        agg.counts(Granularity::Day, &key, first_day)
            .unwrap()
            .total(),
        1
    );
}

/// Codes are counted in an array for the vault's own and a map for any other, but read, stored
/// and compared as one map of the codes that occurred, as before (stored figures and backups
/// hold that JSON).
#[test]
fn verify_codes_count_and_store_as_one_map() {
    let mut counts = Counts::default();
    counts.codes.add("VALID", 2);
    counts.codes.add("NOT_FOUND", 1);
    counts.codes.add("FROM_A_NEWER_BUILD", 3);
    assert_eq!(counts.codes.get("VALID"), 2);
    assert_eq!(counts.codes.get("EXPIRED"), 0);
    assert_eq!(counts.codes.get("FROM_A_NEWER_BUILD"), 3);
    assert_eq!(counts.total(), 6);
    let json = serde_json::to_value(&counts).unwrap();
    assert_eq!(
        json["codes"],
        serde_json::json!({"FROM_A_NEWER_BUILD": 3, "NOT_FOUND": 1, "VALID": 2})
    );
    let back: Counts = serde_json::from_value(json).unwrap();
    assert_eq!(back, counts);
    let mut sum = Counts::default();
    sum.codes.add_all(&counts.codes);
    sum.codes.add_all(&counts.codes);
    assert_eq!(sum.codes.get("VALID"), 4);
    assert_eq!(sum.codes.get("FROM_A_NEWER_BUILD"), 6);
    assert_eq!(sum.codes.to_map().len(), 3);
}
