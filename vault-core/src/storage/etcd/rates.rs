//! The rate-limit tallies the nodes of a cluster publish to each other (DESIGN section 10:
//! rate limits are per node and shared approximately).
//!
//! One row per node, beside its report under `P/0xFF` (which the view's watch does not
//! cover, so a tally never moves a node's view or its caches of rows):
//!
//! ```text
//! P/0xFF "rates/" node id   on the node's lease; value: an envelope the vault sealed (its
//!                           bytes are the vault's business, see `vault/rate_share.rs`)
//! ```
//!
//! The registration thread (`registry.rs`) writes it in the same transaction as the node's
//! report, about once a second, when the node has a tally to publish: so sharing costs no
//! request of its own, and a node that dies takes its last tally with it. Each node watches
//! the others' rows and hands every new value to a thread of its own (the sink locks key
//! slots, which the etcd client's runtime must never wait for). The watch starts from the
//! current revision and, after a member fails, from the next member's: a tally published
//! meanwhile is missed, as one that comes when the queue is full is dropped, which only lets
//! a few more verifies through, never fewer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};

use super::{EtcdState, Reader};
use crate::storage::StorageError;

/// Where the other nodes' tallies go: `(node id, value)`, one at a time, on a thread of
/// their own.
pub type RatesSink = Box<dyn FnMut(&str, &[u8]) + Send>;

/// What gives the node's tally to publish, if it has one: called on the registration thread
/// about once a second.
pub type RatesSource = Box<dyn FnMut() -> Option<Vec<u8>> + Send>;

/// Tallies waiting for the sink: a few seconds of every other node's.
const QUEUE: usize = 64;
/// How long the watch waits for a message before it asks where it stands.
const QUIET: Duration = Duration::from_millis(500);

/// The running watch of the other nodes' tallies. Dropping it stops it (and the sink's
/// thread, once the queue is empty).
#[derive(Debug)]
pub struct RatesWatch {
    stop: Arc<AtomicBool>,
}

impl Drop for RatesWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Reader {
    pub(super) fn rates_key(&self, node: &str) -> Vec<u8> {
        self.named(b"rates/", node)
    }
}

impl EtcdState {
    /// Watches the tallies the other nodes publish from now on, handing each to `sink`.
    pub fn watch_rates(&self, mut sink: RatesSink) -> Result<RatesWatch, StorageError> {
        let (queue, queued): (SyncSender<(String, Vec<u8>)>, Receiver<_>) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("etcd-rates".into())
            .spawn(move || {
                while let Ok((node, value)) = queued.recv() {
                    sink(&node, &value);
                }
            })
            .map_err(StorageError::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        self.reader.members.spawn(follow(
            Arc::clone(&self.reader),
            self.node_id.clone(),
            Arc::clone(&stop),
            queue,
        ));
        Ok(RatesWatch { stop })
    }
}

/// The watch: every put of another node's tally row, to the queue; on to the next member
/// when one fails or hangs.
async fn follow(
    reader: Arc<Reader>,
    own: String,
    stop: Arc<AtomicBool>,
    queue: SyncSender<(String, Vec<u8>)>,
) {
    let from = reader.rates_key("");
    let mut end = from.clone();
    // Invariant: `from` ends with `/`, which is below 0xFF.
    *end.last_mut().expect("a kind ends with '/'") += 1;
    let mut turn = 0usize;
    while !stop.load(Ordering::Acquire) {
        let (endpoint, mut client) = reader.members.client_at(turn);
        turn += 1;
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_progress_notify();
        let watch = tokio::time::timeout(
            reader.members.attempt(),
            client.watch(from.clone(), Some(options)),
        )
        .await;
        let Ok(Ok(mut stream)) = watch else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut heard = Instant::now();
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if heard.elapsed() > reader.members.attempt() {
                // Progress was asked for and nothing came: the member hangs.
                break;
            }
            let response = match tokio::time::timeout(QUIET, stream.message()).await {
                Err(_quiet) => {
                    if stream.request_progress().await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) | Ok(Err(_)) => break,
            };
            heard = Instant::now();
            if response.canceled() {
                break;
            }
            for event in response.events() {
                let (EventType::Put, Some(kv)) = (event.event_type(), event.kv()) else {
                    continue;
                };
                let node = kv.key().get(from.len()..).unwrap_or_default();
                if node == own.as_bytes() {
                    continue;
                }
                let node = String::from_utf8_lossy(node).into_owned();
                match queue.try_send((node, kv.value().to_vec())) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        }
        tracing::debug!(member = %endpoint, "etcd watch of rate-limit tallies ended; going on from the next member");
    }
}
