//! Acknowledgements (DESIGN section 10): each node tells the others, within milliseconds, the
//! etcd revision up to which its caches hold every change, so a revoke is answered as soon as
//! every live node has applied it rather than after the view-age bound (`vault/cluster.rs`,
//! `Vault::await_cluster`, holds the safety argument).
//!
//! One key per node, beside the registrations:
//!
//! ```text
//! P/0xFF "ack/" node id   on the node's lease; value: u8 version (1), i64 BE revision up to
//!                         which the node's watch has applied every change to its caches
//! ```
//!
//! A thread per node writes it whenever the watch has delivered events (`watch.rs` signals
//! it after the sink applied them), with the revision the watch stands at then. Writes are
//! coalesced: one at a time, and a burst of events arriving while one is in flight costs one
//! more write, of the newest revision. Progress notifications alone do not wake it, so the
//! writes do not feed each other (every write raises etcd's revision, which the next progress
//! notification would report); a revision with no event of the watched rows is never a
//! revoke's, so no revoke waits for one. On the lease, so a node that dies takes its row with
//! it; a node registered again writes under its new lease from its next write.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use etcd_client::PutOptions;

use super::watch::ViewState;
use super::{EtcdState, Reader};

/// The version byte of an acknowledgement.
const VERSION: u8 = 1;
/// How often a revoking node reads the acknowledgements while it waits: a read costs etcd
/// little (no write, no fsync), and the revoke's answer waits at most this long past the
/// last acknowledgement.
const POLL: Duration = Duration::from_millis(2);
/// How long the acknowledging thread sleeps between checks that its view still runs.
const IDLE: Duration = Duration::from_millis(200);

fn encode(revision: i64) -> Vec<u8> {
    let mut value = vec![VERSION];
    value.extend_from_slice(&revision.to_be_bytes());
    value
}

/// The revision an acknowledgement names, if it is one this build reads.
fn decode(value: &[u8]) -> Option<i64> {
    let (&version, rest) = value.split_first()?;
    if version != VERSION {
        return None;
    }
    Some(i64::from_be_bytes(rest.get(..8)?.try_into().ok()?))
}

impl Reader {
    fn ack_key(&self, node: &str) -> Vec<u8> {
        self.named(b"ack/", node)
    }

    fn put_ack(&self, node: &str, lease: i64, revision: i64) -> bool {
        let k = self.ack_key(node);
        let value = encode(revision);
        self.members
            .call(move |mut client| {
                let (k, value) = (k.clone(), value.clone());
                async move {
                    client
                        .put(k, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .is_ok()
    }
}

/// Starts the thread that acknowledges what `view` has applied, as node `node` under the
/// lease `lease` holds (the registration changes it when it registers again). It ends when
/// the view stops.
pub(super) fn start(
    reader: Arc<Reader>,
    node: String,
    lease: Arc<AtomicI64>,
    view: &Arc<ViewState>,
) {
    let view = Arc::downgrade(view);
    let spawned = std::thread::Builder::new()
        .name("etcd-ack".into())
        .spawn(move || acknowledge(&reader, &node, &lease, &view));
    if let Err(e) = spawned {
        // Without acknowledgements every revoke takes the timed wait: slower, still safe.
        tracing::error!(error = %e, "starting the etcd acknowledgement thread failed");
    }
}

fn acknowledge(reader: &Reader, node: &str, lease: &AtomicI64, view: &Weak<ViewState>) {
    let mut acked = 0;
    loop {
        let Some(state) = view.upgrade() else { return };
        if state.stopped() {
            return;
        }
        let revision = state.wait_applied(acked, IDLE);
        drop(state);
        if revision > acked && reader.put_ack(node, lease.load(Ordering::Acquire), revision) {
            acked = revision;
        }
    }
}

impl EtcdState {
    /// The revision of this node's latest write: at or past the commit of any change it made
    /// before the call.
    pub fn last_write_revision(&self) -> i64 {
        self.lock_writes().marker_revision
    }

    /// Waits until every node registered live now has acknowledged revision `target` or
    /// later: true once they have, false at `deadline` (or if the live nodes cannot be read).
    /// The live set is read once, after the call began: see `Vault::await_cluster` for why a
    /// node registered later need not be waited for.
    pub fn await_acks(&self, target: i64, deadline: Instant) -> bool {
        let Ok(live) = self.reader.list(b"live/") else {
            return false;
        };
        loop {
            if let Ok(acks) = self.reader.list(b"ack/") {
                let acked = |node: &str| {
                    acks.iter()
                        .any(|(id, value)| id == node && decode(value).is_some_and(|r| r >= target))
                };
                if live.iter().all(|(node, _)| acked(node)) {
                    return true;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_reads_back_and_another_version_is_not_read() {
        let value = encode(1234);
        assert_eq!(value, [1, 0, 0, 0, 0, 0, 0, 4, 0xD2]);
        assert_eq!(decode(&value), Some(1234));
        let mut newer = value.clone();
        newer[0] = 2;
        assert_eq!(decode(&newer), None);
        assert_eq!(decode(&value[..8]), None);
    }
}
