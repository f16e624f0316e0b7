//! Node registration (DESIGN section 10): which nodes of a cluster vault are live, and every
//! node it has ever had.
//!
//! Two keys per node, beside the apply markers under `P/0xFF` (no space has that byte):
//!
//! ```text
//! P/0xFF "live/" node id   on a lease of LEASE_TTL s; value: u8 version (1), u64 BE started
//!                          (Unix ms), 16 random bytes naming the process
//! P/0xFF "node/" node id   no lease, never removed; value: u8 version (1), u64 BE first
//!                          registered (Unix ms), u64 BE last seen (Unix ms)
//! ```
//!
//! (and the node's latest audit checkpoint, `published.rs`).
//!
//! [`EtcdState::register`] grants a lease and, in one transaction, creates the live key (only
//! if absent: a node id live elsewhere is refused) and writes the durable record. A thread
//! keeps the lease alive every `KEEPALIVE` and refreshes the record's last-seen time every
//! `SEEN_EVERY`; when the process dies the lease expires within `LEASE_TTL` and the live
//! key with it. Dropping the [`Registration`] revokes the lease at once. A lease lost while the
//! process lives (etcd out of reach longer than the TTL) is noted ([`Registration::is_lost`])
//! and registered again when etcd answers, if no other process took the id meanwhile.
//!
//! The durable records are what lets an auditor know the set of node logs is whole: every
//! node that ever registered has one ([`EtcdState::nodes`]). The same thread writes the node's
//! report (`report.rs`) on the lease after each keep-alive, with its rate-limit tally
//! (`rates.rs`) when it has one.
//!
//! # Knowing the lease holds
//! A revoke waits only for the nodes live when it reads the registrations (`ack.rs`,
//! `Vault::await_cluster`), so a node must stop answering verifies before etcd can drop it
//! from that set: [`Registration::may_answer`] is true only until [`LEASE_TTL`] less
//! `LEASE_MARGIN` after the latest keep-alive (or grant) that etcd confirmed was *sent*
//! (etcd received it no earlier, so the lease outlives that instant by the TTL), never while
//! the lease is known lost, and, after a lease lost and taken again, only once the view is
//! current as of an instant after the new registration (a revoke that did not wait for the
//! node committed before it, so such a view holds it).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use super::members::Failure;
use super::published::Source;
use super::rates::RatesSource;
use super::report::{NodeReport, Reporting};
use super::watch::View;
use super::{EtcdState, MARKER_BYTE, Reader, ack, random_id};
use crate::storage::StorageError;

/// Seconds a live registration outlasts its process.
pub const LEASE_TTL: i64 = 5;
/// How often the lease is kept alive.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How often the durable record's last-seen time is written.
const SEEN_EVERY: Duration = Duration::from_secs(10);
/// The version byte of both values.
const VERSION: u8 = 1;
/// What [`Registration::may_answer`] takes off the lease's TTL for clocks that run at slightly
/// different rates on this host and etcd's.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// A node of the cluster, as [`EtcdState::nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub id: String,
    /// Whether the node holds a live registration now.
    pub live: bool,
    /// When the node first registered (Unix ms).
    pub first_registered_ms: u64,
    /// When the node was last known live (Unix ms): refreshed every 10 s while it runs.
    pub last_seen_ms: u64,
    /// What the node last reported about itself (about a second old at most); `None` for a
    /// node that is not live, or has not reported yet.
    pub report: Option<NodeReport>,
}

/// This process's registration: live while it is held (see the module doc).
#[derive(Debug)]
pub struct Registration {
    lost: Arc<AtomicBool>,
    /// The lease held now (a new one after the registration is taken again).
    lease: Arc<AtomicI64>,
    /// Until when the lease surely holds, and since when the registration is the one held
    /// (see the module doc).
    holds: Arc<Mutex<Holds>>,
    /// For the acknowledging thread (`ack.rs`), started with the view.
    reader: Arc<Reader>,
    node: String,
    /// What the thread reports about the node (`report.rs`).
    reporting: Arc<Reporting>,
    /// The thread's stop switch and handle, taken when it stops.
    thread: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

/// What this process knows of its lease (see the module doc).
#[derive(Debug, Clone, Copy)]
struct Holds {
    /// The lease surely holds until then.
    until: Instant,
    /// When the registration held now was taken again after a lost lease (`None`: held since
    /// the process registered).
    retaken: Option<Instant>,
}

impl Holds {
    fn sent_at(sent: Instant) -> Holds {
        Holds {
            until: lease_holds_until(sent),
            retaken: None,
        }
    }
}

/// How long a lease granted or kept alive by a request sent at `sent` surely holds.
fn lease_holds_until(sent: Instant) -> Instant {
    // Invariant: LEASE_TTL is a small positive constant.
    sent + Duration::from_secs(LEASE_TTL.unsigned_abs()) - LEASE_MARGIN
}

fn lock_holds(holds: &Mutex<Holds>) -> std::sync::MutexGuard<'_, Holds> {
    // Every writer replaces the value whole.
    holds.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registration {
    /// Whether the lease was lost and not yet registered again: other nodes no longer see this
    /// one as live.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Whether this node may answer verifies as far as its registration goes, given the
    /// instant its view was last known current: its lease surely holds, and a registration
    /// taken again is older than the view (see the module doc).
    pub fn may_answer(&self, view_current_at: Option<Instant>) -> bool {
        let holds = *lock_holds(&self.holds);
        !self.is_lost()
            && Instant::now() < holds.until
            && holds
                .retaken
                .is_none_or(|retaken| view_current_at.is_some_and(|at| at > retaken))
    }

    /// Reports `view`'s applied revision and currency from now on, and acknowledges every
    /// revision it applies (`ack.rs`).
    pub fn report_view(&self, view: &View) {
        self.reporting.set_view(view.state());
        ack::start(
            Arc::clone(&self.reader),
            self.node.clone(),
            Arc::clone(&self.lease),
            view.state(),
        );
    }

    /// Publishes the address this node's API serves on in its reports from now on.
    pub fn set_address(&self, address: &str) {
        self.reporting.set_address(address);
    }

    /// Publishes the log's latest checkpoint, as `source` gives it, from now on
    /// (`published.rs`): call it once the log is known to extend what is published.
    pub fn publish_checkpoints(&self, source: Source) {
        self.reporting.checkpoints.set_source(source);
    }

    /// Publishes the tally `source` gives beside each report from now on (`rates.rs`).
    pub fn set_rates(&self, source: RatesSource) {
        self.reporting.set_rates(source);
    }

    /// Notes whether this node is sealed, for its reports.
    pub fn set_sealed(&self, sealed: bool) {
        self.reporting.set_sealed(sealed);
    }

    /// Ends the registration now: the lease is revoked, so the node id is free at once. The
    /// node answers no verify from then on: revokes stop waiting for it.
    pub fn release(&self) {
        self.lost.store(true, Ordering::Release);
        self.stop_thread(true);
    }

    /// Stops keeping the lease alive without revoking it, as a process that dies does: the
    /// registration ends when the lease expires. For tests of a node that dies.
    pub fn abandon(&self) {
        self.stop_thread(false);
    }

    fn stop_thread(&self, revoke: bool) {
        let taken = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, thread)) = taken {
            // Dropping the sender without a message tells the thread not to revoke.
            if revoke {
                let _ = stop.send(());
            }
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop_thread(true);
    }
}

fn now_ms() -> u64 {
    crate::clock::Clock::system().now_ms()
}

impl Reader {
    fn live_key(&self, node: &str) -> Vec<u8> {
        self.named(b"live/", node)
    }

    fn node_key(&self, node: &str) -> Vec<u8> {
        self.named(b"node/", node)
    }

    pub(super) fn named(&self, kind: &[u8], node: &str) -> Vec<u8> {
        let mut k = self.root.clone();
        k.push(MARKER_BYTE);
        k.extend_from_slice(kind);
        k.extend_from_slice(node.as_bytes());
        k
    }

    /// The first-registered time in `node`'s durable record, if it has one.
    fn first_registered(&self, node: &str) -> Result<Option<u64>, Failure> {
        let k = self.node_key(node);
        let response = self.members.call(move |mut client| {
            let k = k.clone();
            async move { client.get(k, None).await }
        })?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| decode_record(kv.value()))
            .map(|(first, _)| first))
    }

    /// Takes `node`'s live key on a new lease and writes its durable record: the lease and the
    /// instant its grant was sent, or `Ok(None)` if another process holds the live key.
    fn take(&self, node: &str) -> Result<Option<(i64, Instant)>, StorageError> {
        let sent = Instant::now();
        let lease = self
            .members
            .call(|mut client| async move { client.lease_grant(LEASE_TTL, None).await })
            .map_err(Failure::into_storage)?
            .id();
        let now = now_ms();
        let first = self
            .first_registered(node)
            .map_err(Failure::into_storage)?
            .unwrap_or(now);
        let mut live = vec![VERSION];
        live.extend_from_slice(&now.to_be_bytes());
        live.extend_from_slice(&random_id()?);
        let live_key = self.live_key(node);
        let txn = Txn::new()
            .when([Compare::create_revision(
                live_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(live_key, live, Some(PutOptions::new().with_lease(lease))),
                TxnOp::put(self.node_key(node), encode_record(first, now), None),
            ]);
        // Sent again after a member failure: the comparison makes a second take refused, and
        // the lease (named in the put) tells whether the live key is ours.
        let response = self
            .members
            .call(move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .map_err(Failure::into_storage)?;
        if response.succeeded() || self.live_lease(node)? == Some(lease) {
            return Ok(Some((lease, sent)));
        }
        let _ = self
            .members
            .call(move |mut client| async move { client.lease_revoke(lease).await });
        Ok(None)
    }

    /// The lease of `node`'s live key, if it exists.
    fn live_lease(&self, node: &str) -> Result<Option<i64>, StorageError> {
        let k = self.live_key(node);
        let response = self
            .members
            .call(move |mut client| {
                let k = k.clone();
                async move { client.get(k, None).await }
            })
            .map_err(Failure::into_storage)?;
        Ok(response.kvs().first().map(|kv| kv.lease()))
    }

    /// Keeps `lease` alive once: whether etcd still holds it.
    fn keep_alive(&self, lease: i64) -> Result<bool, Failure> {
        self.members.call(move |mut client| async move {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
    }

    fn touch(&self, node: &str, first: u64) -> Result<(), Failure> {
        let k = self.node_key(node);
        let value = encode_record(first, now_ms());
        self.members
            .call(move |mut client| {
                let (k, value) = (k.clone(), value.clone());
                async move { client.put(k, value, None).await }
            })
            .map(|_| ())
    }

    /// The rows of `P/0xFF kind` as `(node id, value)`.
    pub(super) fn list(&self, kind: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let from = self.named(kind, "");
        let mut end = from.clone();
        // Invariant: `from` ends with `/`, which is below 0xFF.
        *end.last_mut().expect("a kind ends with '/'") += 1;
        let response = self
            .members
            .call(move |mut client| {
                let (from, end) = (from.clone(), end.clone());
                async move {
                    client
                        .get(from, Some(GetOptions::new().with_range(end)))
                        .await
                }
            })
            .map_err(Failure::into_storage)?;
        let skip = self.named(kind, "").len();
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                let id = String::from_utf8_lossy(kv.key().get(skip..).unwrap_or_default());
                (id.into_owned(), kv.value().to_vec())
            })
            .collect())
    }
}

fn encode_record(first: u64, seen: u64) -> Vec<u8> {
    let mut value = vec![VERSION];
    value.extend_from_slice(&first.to_be_bytes());
    value.extend_from_slice(&seen.to_be_bytes());
    value
}

/// A durable record's (first registered, last seen), if it is one this build reads.
fn decode_record(value: &[u8]) -> Option<(u64, u64)> {
    let (&version, rest) = value.split_first()?;
    if version != VERSION {
        return None;
    }
    let first = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let seen = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    Some((first, seen))
}

impl EtcdState {
    /// Registers this node (the config's `node_id`) as live; refused if a live registration of
    /// the id exists (another process runs it, or one that died less than [`LEASE_TTL`] s ago).
    pub fn register(&self) -> Result<Registration, crate::Error> {
        let node = self.node_id.clone();
        let reader = Arc::clone(&self.reader);
        let Some((lease, sent)) = reader.take(&node)? else {
            return Err(crate::Error::Conflict(format!(
                "node id {node} is live in the cluster (another process runs it, or one that \
                 stopped less than {LEASE_TTL} s ago): give each node its own node_id"
            )));
        };
        let first = reader.first_registered(&node).ok().flatten().unwrap_or(0);
        let lost = Arc::new(AtomicBool::new(false));
        let reporting = Arc::new(Reporting::default());
        let held = Held {
            lease: Arc::new(AtomicI64::new(lease)),
            holds: Arc::new(Mutex::new(Holds::sent_at(sent))),
            lost: Arc::clone(&lost),
            reporting: Arc::clone(&reporting),
        };
        let (lease, holds) = (Arc::clone(&held.lease), Arc::clone(&held.holds));
        let (stop, stopped) = channel();
        let (thread_reader, thread_node) = (Arc::clone(&reader), node.clone());
        let thread = std::thread::Builder::new()
            .name("etcd-registration".into())
            .spawn(move || keep(thread_reader, thread_node, first, held, stopped))
            .map_err(|e| crate::Error::Storage(StorageError::other(e)))?;
        Ok(Registration {
            lost,
            lease,
            holds,
            reader,
            node,
            reporting,
            thread: Mutex::new(Some((stop, thread))),
        })
    }

    /// Every node that ever registered under the prefix, by id, live or not.
    pub fn nodes(&self) -> Result<Vec<NodeStatus>, StorageError> {
        let live: Vec<String> = self
            .reader
            .list(b"live/")?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let reports = self.reader.list(b"report/")?;
        Ok(self
            .reader
            .list(b"node/")?
            .into_iter()
            .map(|(id, value)| {
                let (first, seen) = decode_record(&value).unwrap_or((0, 0));
                let report = reports
                    .iter()
                    .find(|(r, _)| *r == id)
                    .and_then(|(_, value)| NodeReport::decode(value));
                NodeStatus {
                    live: live.contains(&id),
                    report,
                    id,
                    first_registered_ms: first,
                    last_seen_ms: seen,
                }
            })
            .collect())
    }
}

/// What the registration thread shares with the [`Registration`].
struct Held {
    lease: Arc<AtomicI64>,
    holds: Arc<Mutex<Holds>>,
    lost: Arc<AtomicBool>,
    reporting: Arc<Reporting>,
}

/// The registration thread: keeps the lease alive, refreshes the record, registers again
/// after a lost lease; on a stop message revokes the lease (a dropped sender, as
/// [`Registration::abandon`] leaves it, stops without revoking).
fn keep(reader: Arc<Reader>, node: String, first: u64, held: Held, stop: Receiver<()>) {
    let Held {
        lease: shared_lease,
        holds,
        lost,
        reporting,
    } = held;
    let mut lease = shared_lease.load(Ordering::Acquire);
    let mut touched = Instant::now();
    loop {
        match stop.recv_timeout(KEEPALIVE) {
            Ok(()) => {
                let _ = reader
                    .members
                    .call(move |mut client| async move { client.lease_revoke(lease).await });
                let _ = reader.touch(&node, first);
                return;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if lost.load(Ordering::Acquire) {
            reporting.let_rates_go();
            match reader.take(&node) {
                Ok(Some((new, sent))) => {
                    lease = new;
                    shared_lease.store(new, Ordering::Release);
                    *lock_holds(&holds) = Holds {
                        until: lease_holds_until(sent),
                        retaken: Some(Instant::now()),
                    };
                    lost.store(false, Ordering::Release);
                    tracing::warn!(node = %node, "registered in etcd again after the lease was lost");
                }
                Ok(None) => tracing::error!(
                    node = %node,
                    "this node's id was taken by another process while its lease was lost"
                ),
                Err(e) => tracing::warn!(error = %e, "registering in etcd again failed"),
            }
            continue;
        }
        let sent = Instant::now();
        match reader.keep_alive(lease) {
            Ok(true) => {
                let mut held = lock_holds(&holds);
                held.until = held.until.max(lease_holds_until(sent));
                drop(held);
                if let Err(e) = reader.publish(&node, lease, &reporting) {
                    tracing::warn!(error = ?e, "writing this node's report to etcd failed");
                }
                if let Err(e) = reader.publish_checkpoint(&node, &reporting.checkpoints) {
                    tracing::warn!(error = ?e, "writing this node's checkpoint to etcd failed");
                }
            }
            Ok(false) => {
                lost.store(true, Ordering::Release);
                reporting.let_rates_go();
                tracing::error!(node = %node, "this node's etcd lease expired: it is not live");
            }
            Err(e) => {
                reporting.let_rates_go();
                tracing::warn!(error = ?e, "keeping the etcd lease alive failed");
            }
        }
        if touched.elapsed() >= SEEN_EVERY && reader.touch(&node, first).is_ok() {
            touched = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_record_reads_back_and_another_version_is_not_read() {
        let value = encode_record(7, 9);
        assert_eq!(value.len(), 17);
        assert_eq!(decode_record(&value), Some((7, 9)));
        let mut newer = value.clone();
        newer[0] = 2;
        assert_eq!(decode_record(&newer), None);
        assert_eq!(decode_record(&value[..10]), None);
    }
}
