//! [`EtcdState`] against a real etcd: the storage contract (the random batches of
//! `storage/tests.rs`, read back against the same naive model), conflicts between two handles
//! on one prefix, batches too large for a transaction, writes in doubt, a watch's sink waiting
//! for a writer, client certificates (with `KEYVAULT_ETCD_TLS`), and a member killed under a
//! handle.
//!
//! They need `KEYVAULT_ETCD_ENDPOINTS` (comma-separated member URLs, as
//! `scripts/check-cluster.sh` sets it); without it they have nothing to run against and say
//! so. With it, an etcd that does not answer fails them. The member-kill test also needs
//! `KEYVAULT_ETCD_KILL_PID`, the process id of the first endpoint's member, which it kills.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::storage::etcd_config::NodeId;
use crate::storage::tests::{batches, check_contract};

/// The member URLs to test against, if given.
fn endpoints() -> Option<Vec<String>> {
    let text = std::env::var("KEYVAULT_ETCD_ENDPOINTS").ok()?;
    Some(text.split(',').map(|e| e.trim().to_owned()).collect())
}

/// A prefix no other test (or earlier run) uses.
fn fresh_prefix() -> String {
    format!("/keyvault-test/{}", hex::encode(random_id().unwrap()))
}

fn open_on(endpoints: Vec<String>, prefix: &str, node: &str, timing: Timing) -> EtcdState {
    let config = EtcdConfig::new(
        endpoints,
        prefix,
        NodeId::parse(node).unwrap(),
        None,
        None,
        None,
    )
    .unwrap();
    EtcdState::open(&config, timing).unwrap()
}

/// A handle on `prefix` as node `node`, or `None` (and a note) without endpoints.
fn open(prefix: &str, node: &str) -> Option<EtcdState> {
    let Some(endpoints) = endpoints() else {
        eprintln!("KEYVAULT_ETCD_ENDPOINTS is not set: scripts/check-cluster.sh runs this test");
        return None;
    };
    Some(open_on(endpoints, prefix, node, Timing::default()))
}

proptest! {
    // Each case reads every probe of every space after every batch: tens of thousands of
    // requests (the spaces at once, a thread each), 20 to 30 s on a 2-core host.
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn etcd_keeps_the_shared_state_contract(batches in batches()) {
        if let Some(state) = open(&fresh_prefix(), "contract") {
            check_contract(&state, &batches);
        }
    }
}

fn put(state: &EtcdState, id: &[u8], value: &[u8]) -> Result<(), StorageError> {
    let mut batch = Batch::default();
    batch.insert(Space::Keys, id, value);
    state.apply(&batch)
}

fn value(state: &EtcdState, id: &[u8]) -> Option<Vec<u8>> {
    state.get(Space::Keys, id).unwrap()
}

#[test]
fn two_nodes_on_one_prefix_never_overwrite_each_other() {
    let prefix = fresh_prefix();
    let (Some(a), Some(b)) = (open(&prefix, "node-a"), open(&prefix, "node-b")) else {
        return;
    };
    // Both create the same row without having seen it: the second is refused.
    put(&a, b"k", b"a1").unwrap();
    let e = put(&b, b"k", b"b1").unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert_eq!(value(&a, b"k").as_deref(), Some(&b"a1"[..]));
    // Both read it, A changes it, B's change from the old read is refused.
    assert_eq!(value(&b, b"k").as_deref(), Some(&b"a1"[..]));
    put(&a, b"k", b"a2").unwrap();
    let e = put(&b, b"k", b"b2").unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert!(e.to_string().contains("nothing was applied"), "{e}");
    // B reads again and its change goes through; now A's view is the old one.
    assert_eq!(value(&b, b"k").as_deref(), Some(&b"a2"[..]));
    put(&b, b"k", b"b2").unwrap();
    assert!(put(&a, b"k", b"a3").unwrap_err().is_conflict());
    let mut remove = Batch::default();
    remove.remove(Space::Keys, b"k");
    assert!(a.apply(&remove).unwrap_err().is_conflict());
    assert_eq!(value(&a, b"k").as_deref(), Some(&b"b2"[..]));
    // A refused batch leaves none of its rows, also those that alone would have gone through.
    put(&b, b"k", b"b3").unwrap();
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"other", b"x");
    batch.insert(Space::Keys, b"k", b"a4");
    assert!(a.apply(&batch).unwrap_err().is_conflict());
    assert_eq!(value(&b, b"other"), None);
    assert_eq!(value(&b, b"k").as_deref(), Some(&b"b3"[..]));
    // A batch that depends on a row it does not change is refused when that row changed.
    assert_eq!(value(&a, b"k").as_deref(), Some(&b"b3"[..]));
    put(&b, b"k", b"b4").unwrap();
    let mut batch = Batch::default();
    batch.insert(Space::Credits, b"from-k", b"derived from b3");
    batch.expect_unchanged(Space::Keys, b"k");
    assert!(a.apply(&batch).unwrap_err().is_conflict());
    assert_eq!(b.get(Space::Credits, b"from-k").unwrap(), None);
    assert_eq!(value(&a, b"k").as_deref(), Some(&b"b4"[..]));
    a.apply(&batch).unwrap();
    assert_eq!(
        b.get(Space::Credits, b"from-k").unwrap().as_deref(),
        Some(&b"derived from b3"[..])
    );
    // A scan counts as a read: after A's write, B's scan lets B write again.
    put(&a, b"k", b"a5").unwrap();
    assert!(put(&b, b"k", b"b5").unwrap_err().is_conflict());
    let rows: Vec<Item> = b.scan_from(Space::Keys, &[]).map(Result::unwrap).collect();
    assert_eq!(rows, [(b"k".to_vec(), b"a5".to_vec())]);
    put(&b, b"k", b"b5").unwrap();
}

/// A writer may hold a lock across its etcd write that the watch's sink then waits for (a key's
/// cache slot, in a revoke): the write's own event can reach the watch before its answer. The
/// sink runs on the view's own thread, never on the etcd client's runtime, so the runtime
/// delivers the answer while the sink waits, and the sink applies the change once the writer
/// lets go, in order. On the runtime, the waiting sink stopped a worker that the answer could
/// need, and the write was answered only at the runtime's next timer.
#[test]
fn a_watch_sink_waiting_for_a_writer_runs_off_the_client_runtime() {
    let Some(state) = open(&fresh_prefix(), "writer") else {
        return;
    };
    let slot = Arc::new(Mutex::new(()));
    let (applied, seen) = mpsc::channel();
    let sink_slot = Arc::clone(&slot);
    let view = state
        .watch(Box::new(move |change| {
            if let watch::Change::Row { id, .. } = change {
                let _held = sink_slot.lock().unwrap_or_else(|e| e.into_inner());
                let thread = std::thread::current().name().map(str::to_owned);
                let _ = applied.send((thread, id.to_vec()));
            }
        }))
        .unwrap();
    for i in 0..20u8 {
        let held = slot.lock().unwrap();
        put(&state, &[b'w', i], b"value").unwrap();
        drop(held);
        let (thread, id) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(thread.as_deref(), Some("etcd-view-apply"));
        assert_eq!(id, [b'w', i], "changes are applied in order");
    }
    drop(view);
}

#[test]
fn a_batch_too_large_for_one_transaction_is_refused_whole() {
    let Some(state) = open(&fresh_prefix(), "large") else {
        return;
    };
    let mut batch = Batch::default();
    for i in 0..=MAX_BATCH_KEYS as u32 {
        batch.insert(Space::Keys, &i.to_be_bytes(), b"v");
    }
    let e = state.apply(&batch).unwrap_err();
    assert!(
        e.to_string().contains("larger than one etcd transaction"),
        "{e}"
    );
    assert_eq!(state.scan_from(Space::Keys, &[]).count(), 0);
    // The largest that fits, and a key changed twice counts once.
    let mut batch = Batch::default();
    for i in 0..MAX_BATCH_KEYS as u32 {
        batch.insert(Space::Keys, &i.to_be_bytes(), b"v");
    }
    batch.insert(Space::Keys, &0u32.to_be_bytes(), b"last wins");
    state.apply(&batch).unwrap();
    assert_eq!(state.scan_from(Space::Keys, &[]).count(), MAX_BATCH_KEYS);
    assert_eq!(
        value(&state, &0u32.to_be_bytes()).as_deref(),
        Some(&b"last wins"[..])
    );
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"big", &vec![7u8; MAX_BATCH_BYTES + 1]);
    assert!(state.apply(&batch).is_err());
    assert_eq!(value(&state, b"big"), None);
    // A scan longer than a page reads every row once, in order.
    let ids: Vec<Vec<u8>> = state
        .scan_from(Space::Keys, &[])
        .map(|r| r.unwrap().0)
        .collect();
    let expected: Vec<Vec<u8>> = (0..MAX_BATCH_KEYS as u32)
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    assert_eq!(ids, expected);
}

#[test]
fn unreachable_etcd_is_a_storage_error_within_the_deadline() {
    if endpoints().is_none() {
        return;
    }
    // A port nothing listens on (the discard port, closed on a test host).
    let timing = Timing {
        attempt: Duration::from_millis(300),
        deadline: Duration::from_secs(1),
    };
    let config = EtcdConfig::new(
        vec!["http://127.0.0.1:9".into()],
        "/nowhere",
        NodeId::parse("n").unwrap(),
        None,
        None,
        None,
    )
    .unwrap();
    let start = Instant::now();
    let e = EtcdState::open(&config, timing).unwrap_err();
    assert!(e.to_string().contains("etcd is unreachable"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// A TCP proxy in front of one member that can stop passing on what either side sends: the
/// member that took a request and never answered, or never got it.
struct Proxy {
    url: String,
    mute_requests: Arc<AtomicBool>,
    mute_answers: Arc<AtomicBool>,
}

fn proxy(member: &str) -> Proxy {
    let target = member.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mute_requests = Arc::new(AtomicBool::new(false));
    let mute_answers = Arc::new(AtomicBool::new(false));
    let (requests, answers) = (mute_requests.clone(), mute_answers.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                requests.clone(),
            );
            pipe(server, client, answers.clone());
        }
    });
    Proxy {
        url,
        mute_requests,
        mute_answers,
    }
}

/// Copies `from` to `to` on a thread of its own, dropping what comes while `mute` is set.
fn pipe(mut from: TcpStream, mut to: TcpStream, mute: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !mute.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

/// A write whose member took it and never answered was applied; one whose member never got
/// it was not. Either way the handle finds out through another member and answers `Ok` with
/// the batch applied exactly once (its next write, which compares the revision it recorded,
/// goes through).
#[test]
fn a_write_in_doubt_is_settled_through_another_member_and_applied_once() {
    let Some(members) = endpoints() else {
        eprintln!("KEYVAULT_ETCD_ENDPOINTS is not set: scripts/check-cluster.sh runs this test");
        return;
    };
    let timing = Timing {
        attempt: Duration::from_millis(800),
        deadline: Duration::from_secs(8),
    };
    let prefix = fresh_prefix();
    let observer = open_on(members.clone(), &prefix, "observer", Timing::default());
    for (node, mute_answers) in [("answer-lost", true), ("request-lost", false)] {
        let proxy = proxy(&members[0]);
        let mut through = vec![proxy.url.clone()];
        through.extend(members[1..].iter().cloned());
        let state = open_on(through, &prefix, node, timing);
        let id = node.as_bytes();
        put(&state, id, b"1").unwrap();
        if mute_answers {
            proxy.mute_answers.store(true, Ordering::SeqCst);
        } else {
            proxy.mute_requests.store(true, Ordering::SeqCst);
        }
        let start = Instant::now();
        put(&state, id, b"2").unwrap();
        // It waited for the muted member, then settled elsewhere.
        assert!(
            start.elapsed() >= timing.attempt,
            "{node}: {:?}",
            start.elapsed()
        );
        assert_eq!(value(&observer, id).as_deref(), Some(&b"2"[..]), "{node}");
        put(&state, id, b"3").unwrap();
        assert_eq!(value(&observer, id).as_deref(), Some(&b"3"[..]), "{node}");
    }
}

/// Kills the member at the first endpoint (the script puts the leader there) under a handle
/// that has been using it: reads and writes go on through the others, after the election.
#[test]
fn a_killed_member_is_left_for_the_others() {
    let Some(members) = endpoints() else {
        eprintln!("KEYVAULT_ETCD_ENDPOINTS is not set: scripts/check-cluster.sh runs this test");
        return;
    };
    let pid = std::env::var("KEYVAULT_ETCD_KILL_PID")
        .expect("KEYVAULT_ETCD_KILL_PID: the pid of the first endpoint's member, to kill");
    let prefix = fresh_prefix();
    let state = open_on(members.clone(), &prefix, "survivor", Timing::default());
    for i in 0..20u32 {
        put(&state, &i.to_be_bytes(), b"before").unwrap();
    }
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
    let start = Instant::now();
    for i in 0..20u32 {
        assert_eq!(
            value(&state, &i.to_be_bytes()).as_deref(),
            Some(&b"before"[..])
        );
        let mut batch = Batch::default();
        batch.insert(Space::Keys, &i.to_be_bytes(), b"after");
        state.apply(&batch).unwrap();
    }
    let took = start.elapsed();
    eprintln!("40 requests with the first member killed took {took:?}");
    let rows: Vec<Item> = state
        .scan_from(Space::Keys, &[])
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|(_, v)| v == b"after"));
    // A second handle, started after the kill, finds the living members too.
    let late = open_on(members, &prefix, "late", Timing::default());
    assert_eq!(
        value(&late, &0u32.to_be_bytes()).as_deref(),
        Some(&b"after"[..])
    );
}

/// Against an etcd that requires client certificates (`KEYVAULT_ETCD_TLS`: its `https://` URL
/// and a directory holding `ca.crt`, `client.crt` and `client.key`, comma-separated): a node
/// with its certificate reads and writes; one without is refused, as an unreachable etcd.
#[test]
fn client_certificates_open_an_etcd_that_requires_them() {
    let Ok(given) = std::env::var("KEYVAULT_ETCD_TLS") else {
        eprintln!("KEYVAULT_ETCD_TLS is not set: scripts/check-cluster.sh runs this test");
        return;
    };
    let (endpoint, dir) = given.split_once(',').expect("KEYVAULT_ETCD_TLS: URL,DIR");
    let dir = std::path::Path::new(dir);
    let config = |identity: bool| {
        EtcdConfig::new(
            vec![endpoint.to_owned()],
            &fresh_prefix(),
            NodeId::parse("tls").unwrap(),
            Some(dir.join("ca.crt")),
            identity.then(|| dir.join("client.crt")),
            identity.then(|| dir.join("client.key")),
        )
        .unwrap()
    };
    let state = EtcdState::open(&config(true), Timing::default()).unwrap();
    put(&state, b"k", b"over tls").unwrap();
    assert_eq!(value(&state, b"k").as_deref(), Some(&b"over tls"[..]));
    let timing = Timing {
        attempt: Duration::from_millis(500),
        deadline: Duration::from_secs(1),
    };
    let e = EtcdState::open(&config(false), timing).unwrap_err();
    assert!(e.to_string().contains("etcd is unreachable"), "{e}");
    // A missing certificate file is named.
    let mut missing = config(true);
    missing.tls.as_mut().unwrap().ca_cert = dir.join("nope.crt");
    let e = EtcdState::open(&missing, timing).unwrap_err();
    assert!(e.to_string().contains("nope.crt"), "{e}");
}
