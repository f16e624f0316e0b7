//! The watch-fed view (DESIGN section 10): every change other nodes make to the shared spaces,
//! in revision order, handed to the vault's caches, and whether the view is current.
//!
//! [`EtcdState::watch`] reads the store's revision `R0` (a linearizable read: a consistent
//! snapshot) and watches the prefix's space rows (`P/0x00` to `P/0xFE`, not the markers and
//! registrations) from `R0 + 1`. Each event goes to the sink as a [`Change`] with its mod
//! revision. When its member fails the watch moves to the next member and goes on from the
//! last revision it saw, so no event is skipped; if etcd compacted past it, the sink gets
//! [`Change::Reset`] (forget every cached row) and the watch goes on from the current revision.
//!
//! # Current or not
//! A watch alone cannot tell a quiet cluster from a member cut off from the others: a member
//! without a quorum still answers progress requests from its own, stale, store. So a prober
//! makes a linearizable read every `PROBE_EVERY` (it needs a quorum) and notes its revision
//! `R` and the instant `t` it was sent; the watch asks for a progress notification as often.
//! Once the watch has delivered everything up to `R` (events or a progress notification at or
//! past it), the view holds everything etcd had at `t`: the view is *current as of `t`*.
//! [`View::is_current`] is true while that is at most [`MAX_VIEW_AGE`] ago; past it, verifies
//! answer `cluster_unavailable` until the view catches up.
//!
//! # Acknowledged
//! After each response carrying events, once the sink has applied them and `watched` has
//! moved, the watch wakes the node's acknowledging thread (`ack.rs`), which tells the other
//! nodes the revision its caches now hold.
//!
//! # Two halves
//! The watch's task, on the etcd client's runtime, only receives: it hands each response to
//! the view's own thread (`etcd-view-apply`), which runs the sink, moves `watched` and wakes
//! the acknowledging thread, in the order received. The sink takes the caches' locks, and a
//! thread changing a key holds that key's lock while its etcd write is under way: a sink run
//! on the runtime would stop one of its workers until that write's answer came, which the
//! stopped worker may itself have to deliver. (It did: a write whose own event arrived before
//! its answer waited until the runtime's next timer, up to 200 ms, which was the tail of every
//! revoke.) The channel between the halves is unbounded, so receiving never waits; it holds
//! only what arrived while the sink waited for a lock, which a write holds for one etcd round
//! trip, and that is applied together, each row once, at its latest change (`apply`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, WatchOptions};

use super::members::Failure;
use super::{EtcdState, MARKER_BYTE, Reader};
use crate::storage::{Space, StorageError};

/// How old the view may be before a node stops answering verifies.
pub const MAX_VIEW_AGE: Duration = Duration::from_secs(1);
/// How often the prober reads etcd's revision and the watch asks for progress.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// One change of a shared row, as the watch delivers it.
#[derive(Debug)]
pub enum Change<'a> {
    /// Row `space/id` now holds `value` (`None`: removed), as of etcd revision `revision`.
    Row {
        /// The row's space.
        space: Space,
        /// The row's id.
        id: &'a [u8],
        /// Its new value, or `None` if removed.
        value: Option<&'a [u8]>,
        /// The revision of the change (the row's mod revision).
        revision: i64,
    },
    /// Events were lost (etcd compacted past the watch): forget every cached row.
    Reset,
}

/// Where the changes go: called on the view's own thread, one change at a time, in order; of
/// the changes waiting together, only the latest of each row (see `apply`).
pub type Sink = Box<dyn FnMut(Change<'_>) + Send>;

/// A running watch and its currency. Dropping it stops both.
#[derive(Debug)]
pub struct View {
    state: Arc<ViewState>,
}

#[derive(Debug)]
pub(super) struct ViewState {
    /// The highest revision up to which the watch has delivered everything.
    watched: AtomicI64,
    /// The probe waiting for the watch: when it was sent, and the revision it read.
    probe: Mutex<Option<(Instant, i64)>>,
    /// The instant the view was last known to hold everything etcd had.
    current_at: Mutex<Option<Instant>>,
    stop: AtomicBool,
    /// Set when the watch has applied events not yet acknowledged (`ack.rs`), with the
    /// condition the acknowledging thread waits on.
    unacked: Mutex<bool>,
    applied: Condvar,
    /// Tests hold the watch still (a node that stops following etcd, as a paused process).
    #[cfg(test)]
    paused: AtomicBool,
}

impl View {
    /// Whether the view held everything etcd had at most [`MAX_VIEW_AGE`] ago.
    pub fn is_current(&self) -> bool {
        self.age().is_some_and(|age| age <= MAX_VIEW_AGE)
    }

    /// How long ago the view was last known current (`None`: never yet).
    pub fn age(&self) -> Option<Duration> {
        self.current_at().map(|at| at.elapsed())
    }

    /// The instant the view was last known to hold everything etcd had (`None`: never yet).
    pub fn current_at(&self) -> Option<Instant> {
        *lock(&self.state.current_at)
    }

    /// Holds the watch still (`true`) or lets it go on, for tests of a node that stops
    /// following etcd: it neither applies nor acknowledges changes meanwhile.
    #[cfg(test)]
    pub fn pause(&self, paused: bool) {
        self.state.paused.store(paused, Ordering::Release);
    }
}

impl View {
    /// What the node's reports read (`report.rs`).
    pub(super) fn state(&self) -> &Arc<ViewState> {
        &self.state
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every writer replaces the value whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ViewState {
    /// The revision the watch has delivered everything up to, and whether the view is current
    /// (for the node's report, `report.rs`).
    pub(super) fn snapshot(&self) -> (i64, bool) {
        let current = lock(&self.current_at).is_some_and(|at| at.elapsed() <= MAX_VIEW_AGE);
        (self.watched.load(Ordering::Acquire), current)
    }

    /// The watch has delivered everything up to `revision`.
    fn watched_up_to(&self, revision: i64) {
        self.watched.fetch_max(revision, Ordering::AcqRel);
        self.settle_probe();
    }

    /// Wakes the acknowledging thread: events were applied.
    fn signal_applied(&self) {
        *lock(&self.unacked) = true;
        self.applied.notify_one();
    }

    /// Waits at most `timeout` for applied events not yet acknowledged: the revision the watch
    /// stands at if there are (all of it applied), else `acked`, for the acknowledging thread
    /// (`ack.rs`).
    pub(super) fn wait_applied(&self, acked: i64, timeout: Duration) -> i64 {
        let mut unacked = lock(&self.unacked);
        if !*unacked {
            unacked = self
                .applied
                .wait_timeout(unacked, timeout)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        if !std::mem::take(&mut *unacked) {
            return acked;
        }
        self.watched.load(Ordering::Acquire)
    }

    /// Whether the view was dropped.
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// A probe read revision `revision` at `sent`.
    fn probed(&self, sent: Instant, revision: i64) {
        *lock(&self.probe) = Some((sent, revision));
        self.settle_probe();
    }

    fn settle_probe(&self) {
        let mut probe = lock(&self.probe);
        if let Some((sent, revision)) = *probe
            && self.watched.load(Ordering::Acquire) >= revision
        {
            let mut current = lock(&self.current_at);
            if current.is_none_or(|at| at < sent) {
                *current = Some(sent);
            }
            *probe = None;
        }
    }
}

impl Reader {
    /// etcd's current revision, by a linearizable read (which needs a quorum).
    fn revision(&self) -> Result<i64, Failure> {
        let k = self.root.clone();
        let response = self.members.call(move |mut client| {
            let k = k.clone();
            async move {
                client
                    .get(k, Some(GetOptions::new().with_count_only()))
                    .await
            }
        })?;
        if let Some(header) = response.header() {
            self.members.note_term(header.raft_term());
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }
}

impl EtcdState {
    /// Starts watching every change of the shared rows from now on (see the module doc).
    pub fn watch(&self, sink: Sink) -> Result<View, StorageError> {
        let start = self.reader.revision().map_err(Failure::into_storage)?;
        let state = Arc::new(ViewState {
            watched: AtomicI64::new(start),
            probe: Mutex::new(None),
            current_at: Mutex::new(Some(Instant::now())),
            stop: AtomicBool::new(false),
            // The first acknowledgement names the revision the watch starts from.
            unacked: Mutex::new(true),
            applied: Condvar::new(),
            #[cfg(test)]
            paused: AtomicBool::new(false),
        });
        let reader = Arc::clone(&self.reader);
        let prober_state = Arc::clone(&state);
        std::thread::Builder::new()
            .name("etcd-view-probe".into())
            .spawn(move || probe(&reader, &prober_state))
            .map_err(StorageError::other)?;
        let (deliveries, received) = channel();
        let applier_state = Arc::clone(&state);
        let root_len = self.reader.root.len();
        std::thread::Builder::new()
            .name("etcd-view-apply".into())
            .spawn(move || apply(root_len, &applier_state, sink, &received))
            .map_err(StorageError::other)?;
        self.reader.members.spawn(follow(
            Arc::clone(&self.reader),
            Arc::clone(&state),
            deliveries,
        ));
        Ok(View { state })
    }
}

/// The prober: a linearizable read every [`PROBE_EVERY`] while the view lives.
fn probe(reader: &Reader, state: &ViewState) {
    while !state.stop.load(Ordering::Acquire) {
        let sent = Instant::now();
        if let Ok(revision) = reader.revision() {
            state.probed(sent, revision);
        }
        std::thread::sleep(PROBE_EVERY.saturating_sub(sent.elapsed()));
    }
}

/// What the watch's task hands the view's thread, in the order received.
enum Delivery {
    /// A response carrying events, or a progress notification (no events), and the revision
    /// up to which the watch has delivered everything once it is applied.
    Response {
        response: etcd_client::WatchResponse,
        upto: i64,
    },
    /// etcd compacted past the watch: forget every cached row; the watch goes on after
    /// `current`.
    Reset { current: i64 },
}

/// The view's thread: applies what the watch received, in order, until the watch ends.
///
/// Everything waiting when it looks is applied together, and a row changed more than once in
/// it reaches the sink once, at its latest change ([`latest_of_each_row`]). The sink waits for
/// a key's lock, which a credit spend holds across its commit: on a key that several nodes
/// spend at once, changes to its credits queue up meanwhile, and a wait for each of them put
/// the view one wait further behind per change (a view over a second old fences the node). So
/// a backlog costs at most one wait per row.
fn apply(root_len: usize, state: &ViewState, mut sink: Sink, received: &Receiver<Delivery>) {
    while let Ok(first) = received.recv() {
        let batch: Vec<Delivery> = std::iter::once(first).chain(received.try_iter()).collect();
        let mut changes: Vec<Change<'_>> = Vec::new();
        // Where a reset put the view, and where the responses after it moved it.
        let (mut reset_to, mut upto) = (None, None);
        let mut events = false;
        for delivery in &batch {
            match delivery {
                Delivery::Reset { current } => {
                    changes.push(Change::Reset);
                    (reset_to, upto, events) = (Some(*current), None, true);
                }
                Delivery::Response { response, upto: at } => {
                    events |= !response.events().is_empty();
                    changes.extend(response.events().iter().filter_map(|e| row_of(root_len, e)));
                    upto = Some(*at);
                }
            }
        }
        for change in latest_of_each_row(changes) {
            sink(change);
        }
        if let Some(current) = reset_to {
            state.watched.store(current, Ordering::Release);
        }
        if let Some(upto) = upto {
            state.watched_up_to(upto);
        }
        if events {
            state.signal_applied();
        }
    }
}

/// A watch event as a change of a shared row (`None`: not a row of a space).
fn row_of<'a>(root_len: usize, event: &'a etcd_client::Event) -> Option<Change<'a>> {
    let kv = event.kv()?;
    let raw = kv.key().get(root_len..).unwrap_or_default();
    let (&byte, id) = raw.split_first()?;
    let space = Space::from_byte(byte)?;
    let value = match event.event_type() {
        EventType::Put => Some(kv.value()),
        EventType::Delete => None,
    };
    Some(Change::Row {
        space,
        id,
        value,
        revision: kv.mod_revision(),
    })
}

/// `changes` without those of a row that changes again later in them, in their order. Each
/// change carries the row's whole value (or its removal), so the sink, given these, leaves the
/// caches as it would given every change one by one. A reset is always kept; a row's change
/// before it is left out if the row changes again after it (the reset forgets it anyway).
fn latest_of_each_row(changes: Vec<Change<'_>>) -> Vec<Change<'_>> {
    let mut later = HashSet::new();
    let mut kept: Vec<Change<'_>> = changes
        .into_iter()
        .rev()
        .filter(|change| match change {
            Change::Row { space, id, .. } => later.insert((*space, *id)),
            Change::Reset => true,
        })
        .collect();
    kept.reverse();
    kept
}

/// The watch: receives the rows' changes from the last revision received, moving to the next
/// member when one fails, and hands them to the view's thread (`apply`).
async fn follow(reader: Arc<Reader>, state: Arc<ViewState>, deliveries: Sender<Delivery>) {
    let from = reader.root.clone();
    let mut end = reader.root.clone();
    end.push(MARKER_BYTE);
    let mut turn = 0usize;
    // Everything up to here was received (the view's thread may still be applying it).
    let mut received = state.watched.load(Ordering::Acquire);
    while !state.stop.load(Ordering::Acquire) {
        let (endpoint, mut client) = reader.members.client_at(turn);
        let next = received + 1;
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(next)
            .with_progress_notify();
        let watch = tokio::time::timeout(
            reader.members.attempt(),
            client.watch(from.clone(), Some(options)),
        )
        .await;
        let mut stream = match watch {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(member = %endpoint, error = %e, "etcd watch failed; trying the next member");
                turn += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                turn += 1;
                continue;
            }
        };
        let mut heard = Instant::now();
        loop {
            if state.stop.load(Ordering::Acquire) {
                return;
            }
            if heard.elapsed() > reader.members.attempt() {
                // Progress was asked for and nothing came: the member hangs.
                break;
            }
            let message = tokio::time::timeout(PROBE_EVERY, stream.message()).await;
            if matches!(message, Ok(Ok(Some(_)))) {
                heard = Instant::now();
            }
            #[cfg(test)]
            while state.paused.load(Ordering::Acquire) && !state.stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                heard = Instant::now();
            }
            let response = match message {
                Err(_elapsed) => {
                    // Quiet: ask where the watch stands (answered as a progress notification).
                    if stream.request_progress().await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) | Ok(Err(_)) => break,
            };
            if response.compact_revision() > 0 {
                let current = response
                    .compact_revision()
                    .max(reader.revision().unwrap_or(0));
                received = current;
                if deliveries.send(Delivery::Reset { current }).is_err() {
                    return;
                }
                break;
            }
            if response.canceled() {
                break;
            }
            let upto = match response.events().iter().filter_map(|e| e.kv()).next_back() {
                Some(kv) => kv.mod_revision(),
                // A progress notification: every event up to the header's revision was sent.
                None => response.header().map_or(0, |h| h.revision()),
            };
            received = received.max(upto);
            if deliveries
                .send(Delivery::Response { response, upto })
                .is_err()
            {
                // The view's thread ended: the view was dropped.
                return;
            }
        }
        tracing::warn!(member = %endpoint, "etcd watch ended; following from the next member");
        turn += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{Change, latest_of_each_row};
    use crate::storage::Space;

    /// A row's change as the test owns it: space, id, value (`None`: removed).
    type Owned = (Space, Vec<u8>, Option<Vec<u8>>);

    fn changes(owned: &[Owned]) -> Vec<Change<'_>> {
        owned
            .iter()
            .enumerate()
            .map(|(n, (space, id, value))| Change::Row {
                space: *space,
                id,
                value: value.as_deref(),
                revision: n as i64 + 1,
            })
            .collect()
    }

    /// What a sink that keeps each row's latest value holds after `changes`.
    fn held(changes: &[Change<'_>]) -> BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>> {
        let mut rows = BTreeMap::new();
        for change in changes {
            if let Change::Row {
                space, id, value, ..
            } = change
            {
                rows.insert((*space as u8, id.to_vec()), value.map(<[u8]>::to_vec));
            }
        }
        rows
    }

    proptest! {
        /// The latest change of each row, in order: a sink given them holds what it would hold
        /// given every change; no row comes twice; nothing comes out of order.
        #[test]
        fn the_latest_change_of_each_row_leaves_the_same_rows(
            owned in proptest::collection::vec(
                (
                    prop_oneof![Just(Space::Keys), Just(Space::Credits)],
                    proptest::collection::vec(0u8..3, 1..2),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
                ),
                0..40,
            )
        ) {
            let all = changes(&owned);
            let latest = latest_of_each_row(changes(&owned));
            prop_assert_eq!(held(&latest), held(&all));
            let revisions: Vec<i64> = latest
                .iter()
                .filter_map(|c| match c {
                    Change::Row { revision, .. } => Some(*revision),
                    Change::Reset => None,
                })
                .collect();
            prop_assert!(revisions.windows(2).all(|w| w[0] < w[1]), "out of order: {revisions:?}");
            prop_assert_eq!(revisions.len(), held(&all).len(), "a row came twice");
        }
    }

    #[test]
    fn a_reset_is_kept_where_it_was() {
        let latest = latest_of_each_row(vec![
            Change::Row {
                space: Space::Keys,
                id: b"a",
                value: Some(b"1"),
                revision: 1,
            },
            Change::Reset,
            Change::Row {
                space: Space::Keys,
                id: b"a",
                value: Some(b"2"),
                revision: 2,
            },
        ]);
        assert!(matches!(
            latest.as_slice(),
            [Change::Reset, Change::Row { revision: 2, .. }]
        ));
    }
}
