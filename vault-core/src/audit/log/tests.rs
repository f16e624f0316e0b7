//! The writer's pipeline driven through [`AuditLog`]: concurrent committers all get their
//! entries durable and in order, and a failed sync fails every group written after the one it
//! covered, with nothing of them in the store or the reopened log.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::AuditLog;
use crate::audit::entry::{Entry, Event};
use crate::audit::segment::SyncHook;
use crate::clock::Clock;
use crate::context::Context;
use crate::storage::{Batch, Space, Store};

fn open(dir: &Path) -> AuditLog {
    let store = Store::open(&dir.join("store")).unwrap();
    AuditLog::open(
        store,
        &dir.join("audit"),
        "test.example/log".into(),
        dir.join("checkpoint"),
        Clock::system(),
    )
    .unwrap()
}

/// A store change naming `tag`, so that a test can tell whether it was applied.
fn change(tag: &str) -> Batch {
    let mut batch = Batch::default();
    batch.insert(Space::Meta, format!("test-{tag}").as_bytes(), b"1");
    batch
}

fn applied(log: &AuditLog, tag: &str) -> bool {
    log.shared
        .store
        .get(Space::Meta, format!("test-{tag}").as_bytes())
        .unwrap()
        .is_some()
}

/// The reopened log's entries, as `(seq, outcome)`, checking that each parses with its seq.
fn entries(log: &AuditLog) -> Vec<(u64, String)> {
    log.entries(0)
        .map(|item| {
            let (seq, bytes) = item.unwrap();
            let entry = Entry::parse(&bytes).unwrap();
            assert_eq!(entry.seq, seq);
            (seq, entry.outcome)
        })
        .collect()
}

/// Commits from `threads` threads, `each` entries apiece; the entries `i` with
/// `changes(i)` carry a store change. Returns every thread's sequence numbers.
fn commit_concurrently(
    log: &Arc<AuditLog>,
    threads: usize,
    each: usize,
    changes: fn(usize) -> bool,
) -> Vec<Vec<u64>> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                (0..each)
                    .map(|i| {
                        let tag = format!("{t}-{i}");
                        let batch = if changes(i) {
                            change(&tag)
                        } else {
                            Batch::default()
                        };
                        let event = Event::new("test.commit", tag);
                        log.commit(&Context::embedded(), batch, event).unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap()).collect()
}

/// Every committer got distinct sequence numbers covering the log, in the order it committed,
/// and the reopened log holds each entry at the number its committer was given, with its
/// store change.
fn check_committed(dir: &Path, seqs: &[Vec<u64>], each: usize, changes: fn(usize) -> bool) {
    let total = seqs.iter().map(Vec::len).sum::<usize>() as u64;
    let mut all: Vec<u64> = seqs.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..total).collect::<Vec<_>>());
    for mine in seqs {
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
    }
    let log = open(dir);
    assert_eq!(log.size(), total);
    let found = entries(&log);
    assert_eq!(found.len() as u64, total);
    for (t, mine) in seqs.iter().enumerate() {
        for (i, &seq) in mine.iter().enumerate() {
            assert_eq!(found[seq as usize].1, format!("{t}-{i}"));
            assert_eq!(applied(&log, &format!("{t}-{i}")), changes(i));
        }
    }
    assert!(each == 0 || total > 0);
}

#[test]
fn concurrent_committers_all_get_their_entries_durable_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let changes: fn(usize) -> bool = |i| i % 7 == 3;
    let log = Arc::new(open(tmp.path()));
    let seqs = commit_concurrently(&log, 16, 60, changes);
    drop(Arc::into_inner(log).unwrap());
    check_committed(tmp.path(), &seqs, 60, changes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Any number of committers, with or without store changes, each committing a run of
    /// entries: all are durable, at distinct numbers, in each committer's order.
    #[test]
    fn committers_in_any_number_get_durable_ordered_entries(
        threads in 1usize..24,
        each in 1usize..40,
        every in 1usize..5,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        // A `fn` cannot capture `every`: pick among fixed patterns.
        let changes: fn(usize) -> bool = match every {
            1 => |_| false,
            2 => |i| i % 2 == 0,
            3 => |i| i % 3 == 1,
            _ => |_| true,
        };
        let log = Arc::new(open(tmp.path()));
        let seqs = commit_concurrently(&log, threads, each, changes);
        drop(Arc::into_inner(log).unwrap());
        check_committed(tmp.path(), &seqs, each, changes);
    }
}

/// A sync hook whose first call waits for `release` and then fails, and whose later calls
/// succeed; each call reports its number on `entered` first.
fn failing_first_sync(entered: mpsc::Sender<u64>, release: mpsc::Receiver<()>) -> SyncHook {
    let release = Mutex::new(release);
    let entered = Mutex::new(entered);
    SyncHook(Box::new(move |call| {
        let _ = entered.lock().unwrap().send(call);
        if call == 0 {
            let _ = release.lock().unwrap().recv();
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        Ok(())
    }))
}

#[test]
fn a_failed_sync_fails_every_later_group_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(open(tmp.path()));
    let ctx = Context::embedded();
    let first = log
        .commit(&ctx, change("before"), Event::new("test.commit", "before"))
        .unwrap();
    assert_eq!(first, 0);

    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    log.shared
        .segments
        .set_sync_hook(Some(failing_first_sync(entered_tx, release_rx)));
    let (seq_first, entered_first) = {
        let log = Arc::clone(&log);
        let outcome = std::thread::spawn(move || {
            let event = Event::new("test.commit", "failed-sync");
            log.commit(&Context::embedded(), change("failed-sync"), event)
        });
        (outcome, entered.recv().unwrap())
    };
    assert_eq!(entered_first, 0);
    // Written while the first group's sync is in progress: its own sync succeeds, but it
    // follows records that never reached the disk.
    let later = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let event = Event::new("test.commit", "later");
            log.commit(&Context::embedded(), change("later"), event)
        })
    };
    assert_eq!(entered.recv().unwrap(), 1);
    release.send(()).unwrap();
    assert!(matches!(
        seq_first.join().unwrap(),
        Err(crate::Error::AuditUnavailable(_))
    ));
    assert!(matches!(
        later.join().unwrap(),
        Err(crate::Error::AuditUnavailable(_))
    ));
    assert!(!applied(&log, "failed-sync"));
    assert!(!applied(&log, "later"));
    assert_eq!(log.size(), 1);
    // As before the pipeline: the groups fail, the log goes on from the committed state.
    assert!(!log.is_stopped());
    log.shared.segments.set_sync_hook(None);
    let after = log
        .commit(&ctx, Batch::default(), Event::new("test.commit", "after"))
        .unwrap();
    assert_eq!(after, 1);
    drop(Arc::into_inner(log).unwrap());

    let log = open(tmp.path());
    assert_eq!(
        entries(&log),
        vec![(0, "before".to_owned()), (1, "after".to_owned())]
    );
    assert!(applied(&log, "before"));
    assert!(!applied(&log, "failed-sync"));
    assert!(!applied(&log, "later"));
}

#[test]
fn deferred_commits_queued_in_turn_commit_in_that_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let ctx = Context::embedded();
    let pending: Vec<_> = (0..200)
        .map(|i| {
            let batch = if i % 5 == 0 {
                change(&i.to_string())
            } else {
                Batch::default()
            };
            log.commit_deferred(&ctx, batch, Event::new("test.commit", i.to_string()))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (i, durable) in pending.into_iter().enumerate() {
        assert_eq!(runtime.block_on(durable).unwrap(), i as u64);
    }
    drop(log);
    let log = open(tmp.path());
    let found = entries(&log);
    assert_eq!(found.len(), 200);
    for (i, (seq, outcome)) in found.into_iter().enumerate() {
        assert_eq!((seq, outcome), (i as u64, i.to_string()));
    }
}

/// How long a test waits for a sync to start before failing (not hanging).
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A sync hook whose call `n` (for `n` below `gates.len()`) reports `n` on `entered`, waits
/// for its gate and then succeeds or fails as the gate says; later calls succeed at once.
fn gated_syncs(entered: mpsc::Sender<u64>, gates: Vec<(mpsc::Receiver<()>, bool)>) -> SyncHook {
    let entered = Mutex::new(entered);
    let gates: Vec<_> = gates.into_iter().map(Mutex::new).collect();
    SyncHook(Box::new(move |call| {
        let _ = entered.lock().unwrap().send(call);
        let Some(gate) = usize::try_from(call).ok().and_then(|c| gates.get(c)) else {
            return Ok(());
        };
        let gate = gate.lock().unwrap();
        let _ = gate.0.recv();
        if gate.1 {
            Ok(())
        } else {
            Err(std::io::Error::other("injected fdatasync failure"))
        }
    }))
}

/// Commits a change tagged `tag` on a thread of its own.
fn commit_on_thread(
    log: &Arc<AuditLog>,
    tag: &'static str,
) -> std::thread::JoinHandle<crate::Result<u64>> {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        log.commit(
            &Context::embedded(),
            change(tag),
            Event::new("test.commit", tag),
        )
    })
}

#[test]
fn a_later_sync_that_returns_first_commits_after_the_earlier_group() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(open(tmp.path()));
    let (entered_tx, entered) = mpsc::channel();
    let (release, gate) = mpsc::channel();
    log.shared
        .segments
        .set_sync_hook(Some(gated_syncs(entered_tx, vec![(gate, true)])));
    let first = commit_on_thread(&log, "first");
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 0);
    let second = commit_on_thread(&log, "second");
    // The second group's sync has returned; it waits for the first group's commit, which
    // then commits it too.
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!second.is_finished());
    assert!(!applied(&log, "second"));
    release.send(()).unwrap();
    assert_eq!(first.join().unwrap().unwrap(), 0);
    assert_eq!(second.join().unwrap().unwrap(), 1);
    assert!(applied(&log, "first") && applied(&log, "second"));
    log.shared.segments.set_sync_hook(None);
    drop(Arc::into_inner(log).unwrap());
    let log = open(tmp.path());
    assert_eq!(
        entries(&log),
        vec![(0, "first".to_owned()), (1, "second".to_owned())]
    );
}

#[test]
fn a_failed_sync_between_two_fails_its_group_and_the_later_one_only() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(open(tmp.path()));
    let (entered_tx, entered) = mpsc::channel();
    let (release_first, first_gate) = mpsc::channel();
    let (release_middle, middle_gate) = mpsc::channel();
    let gates = vec![(first_gate, true), (middle_gate, false)];
    log.shared
        .segments
        .set_sync_hook(Some(gated_syncs(entered_tx, gates)));
    // Three syncs in flight at once: the middle one fails before the first returns, and the
    // last one has already returned.
    let first = commit_on_thread(&log, "first");
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 0);
    let middle = commit_on_thread(&log, "middle");
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 1);
    let last = commit_on_thread(&log, "last");
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 2);
    release_middle.send(()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!middle.is_finished() && !last.is_finished());
    release_first.send(()).unwrap();
    assert_eq!(first.join().unwrap().unwrap(), 0);
    assert!(matches!(
        middle.join().unwrap(),
        Err(crate::Error::AuditUnavailable(_))
    ));
    assert!(matches!(
        last.join().unwrap(),
        Err(crate::Error::AuditUnavailable(_))
    ));
    assert!(applied(&log, "first"));
    assert!(!applied(&log, "middle") && !applied(&log, "last"));
    assert_eq!(log.size(), 1);
    assert!(!log.is_stopped());
    log.shared.segments.set_sync_hook(None);
    let after = log
        .commit(
            &Context::embedded(),
            Batch::default(),
            Event::new("test.commit", "after"),
        )
        .unwrap();
    assert_eq!(after, 1);
    drop(Arc::into_inner(log).unwrap());
    let log = open(tmp.path());
    assert_eq!(
        entries(&log),
        vec![(0, "first".to_owned()), (1, "after".to_owned())]
    );
    assert!(!applied(&log, "middle") && !applied(&log, "last"));
}
