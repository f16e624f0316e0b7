//! The etcd members a node talks to, and moving to the next when one fails.
//!
//! etcd-client balances over the endpoints it is given but keeps sending to a member that
//! died, so each member gets its own client here and a request that fails on one (refused
//! connection, timeout, "no leader") is retried on the next, until a deadline. The client is
//! async; the store's callers are not, so the requests run on a small runtime of this handle's
//! own and a caller waits for the answer on a channel (never `block_on`, which panics when the
//! caller is itself a runtime's thread).
//!
//! A request a follower forwarded to a leader that then died is lost with it, and the follower
//! answers it only at its own request timeout (about 7 s), long after the election (under a
//! second): the attempt's timeout alone would hold every write of the node for its 2 s. So an
//! attempt that runs longer than [`CHECK_AFTER`] asks its member for its status (answered
//! locally, without a quorum) every [`CHECK_EVERY`]: a raft term newer than the one known when
//! the attempt began means the leader changed meanwhile, and a status check that fails (a
//! refused or broken connection) means the member did; either way the attempt is cut and
//! goes on as a failed one (retried on the next member; a write in doubt is settled first, see
//! `mod.rs`). A status check that is only slow cuts nothing. The term known is the highest any
//! status check or probe read (`watch.rs`, every 200 ms) saw.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::storage::StorageError;
use crate::storage::etcd_config::EtcdConfig;

/// How long an attempt runs before its member is checked for a leader change.
const CHECK_AFTER: Duration = Duration::from_millis(250);
/// How often a running attempt's member is checked after [`CHECK_AFTER`].
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long one status check may take before the next is sent (a slow one cuts nothing: a
/// loaded member may be slow and still well).
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// How long requests may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// One attempt on one member: past it the member counts as failed.
    pub attempt: Duration,
    /// A request and its retries on other members: past it etcd counts as unreachable and
    /// the request fails with a [`StorageError`] (503 `storage_unavailable` at the server).
    pub deadline: Duration,
}

impl Default for Timing {
    /// An attempt of 2 s outlasts etcd's default election (1 s) and a slow fsync; 6 s lets a
    /// request try each member of a 3-member cluster once at worst.
    fn default() -> Timing {
        Timing {
            attempt: Duration::from_secs(2),
            deadline: Duration::from_secs(6),
        }
    }
}

/// What a request came to, once its deadline or a definite answer is reached.
#[derive(Debug)]
pub(super) enum Failure {
    /// A member answered with a refusal that another member would repeat (a request too large,
    /// a permission denied): the request was not carried out.
    Refused(String),
    /// No member answered in time; the last failure's text. A write may or may not have been
    /// carried out.
    Unreachable(String),
}

impl Failure {
    pub(super) fn into_storage(self) -> StorageError {
        match self {
            Failure::Refused(why) => {
                StorageError::other(format!("etcd refused the request: {why}"))
            }
            Failure::Unreachable(why) => {
                StorageError::other(format!("etcd is unreachable ({why})"))
            }
        }
    }
}

/// One client per member, the member last seen healthy first.
pub(super) struct Members {
    /// Always `Some` until dropped (taken by `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    clients: Vec<(String, Client)>,
    current: AtomicUsize,
    timing: Timing,
    /// The highest raft term seen (0 until the first is seen): a running attempt whose member
    /// reports a newer one is cut.
    term: Arc<AtomicU64>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<&str> = self.clients.iter().map(|(e, _)| e.as_str()).collect();
        f.debug_struct("Members")
            .field("endpoints", &endpoints)
            .field("timing", &self.timing)
            .finish()
    }
}

impl Members {
    /// Clients for `config`'s members (connections are made lazily, at the first request).
    pub(super) fn new(config: &EtcdConfig, timing: Timing) -> Result<Members, StorageError> {
        // Two workers: one request at a time is the rule (applies are serialised), a scan's
        // next page and a read may overlap.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StorageError::other(format!("starting the etcd client: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timing.attempt)
            .with_timeout(timing.attempt)
            .with_keep_alive(Duration::from_secs(10), timing.attempt);
        if let Some(tls) = &config.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| StorageError::other(format!("reading {}: {e}", path.display())))
            };
            let mut tls_options =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca_cert)?));
            if let Some((cert, key)) = &tls.identity {
                tls_options = tls_options.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls_options);
        }
        let mut clients = Vec::new();
        for endpoint in &config.endpoints {
            let endpoint = endpoint.clone();
            let options = options.clone();
            let client = run(&runtime, async move {
                Client::connect([endpoint.as_str()], Some(options))
                    .await
                    .map(|client| (endpoint, client))
            })
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| StorageError::other(format!("setting up the etcd client: {e}")))?;
            clients.push(client);
        }
        Ok(Members {
            runtime: Some(runtime),
            clients,
            current: AtomicUsize::new(0),
            timing,
            term: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Runs `future` on the handle's runtime in the background.
    pub(super) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.runtime().spawn(future);
    }

    /// The client of the member after the `turn`th (turns go round the members), with its
    /// endpoint: what a long-lived stream (the watch) moves on to when its member fails.
    pub(super) fn client_at(&self, turn: usize) -> (String, Client) {
        let (endpoint, client) = &self.clients[turn % self.clients.len()];
        (endpoint.clone(), client.clone())
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Invariant: set in `new`, taken only by `drop`.
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// How long one attempt on one member may take.
    pub(super) fn attempt(&self) -> Duration {
        self.timing.attempt
    }

    /// How long a request and its retries may take.
    pub(super) fn deadline(&self) -> Duration {
        self.timing.deadline
    }

    /// Notes a raft term a response carried (the probe's reads, `watch.rs`).
    pub(super) fn note_term(&self, term: u64) {
        self.term.fetch_max(term, Ordering::AcqRel);
    }

    /// Runs `op` on the current member, then on the next ones while members fail, until a
    /// definite answer or the deadline. A write must not go through here twice blindly: see
    /// [`Members::once`].
    pub(super) fn call<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        while start.elapsed() < self.timing.deadline {
            match self.once(&op) {
                Ok(value) => return Ok(value),
                Err(Failure::Unreachable(why)) => last = why,
                Err(refused) => return Err(refused),
            }
        }
        Err(Failure::Unreachable(last))
    }

    /// One attempt of `op` on the current member; a member failure moves the current member to
    /// the next and is returned as [`Failure::Unreachable`] (the attempt may have been carried
    /// out).
    pub(super) fn once<T, F, Fut>(&self, op: &F) -> Result<T, Failure>
    where
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let at = self.current.load(Ordering::Acquire) % self.clients.len();
        let (endpoint, client) = &self.clients[at];
        let attempt = self.timing.attempt;
        let future = op(client.clone());
        let watched = client.clone();
        let since = self.term.load(Ordering::Acquire);
        let terms = Arc::clone(&self.term);
        let result = race(
            self.runtime(),
            async move { tokio::time::timeout(attempt, future).await },
            leader_change(watched, since, terms),
        );
        let failure = match result {
            Ok(Ok(Ok(Ok(value)))) => return Ok(value),
            Ok(Ok(Ok(Err(e)))) => match classify(e) {
                Failure::Refused(why) => return Err(Failure::Refused(why)),
                Failure::Unreachable(why) => why,
            },
            Ok(Ok(Err(_elapsed))) => format!("no answer within {attempt:?}"),
            Ok(Err(cut)) => cut,
            Err(gone) => gone,
        };
        let next = (at + 1) % self.clients.len();
        // Only the thread that saw this member fail moves on; another may have moved already.
        let _ = self
            .current
            .compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire);
        tracing::warn!(member = %endpoint, error = %failure, "etcd member failed; trying the next");
        // A member that refuses connections fails at once: a short pause keeps a dead
        // cluster from being hammered while the deadline runs.
        std::thread::sleep(Duration::from_millis(20));
        Err(Failure::Unreachable(format!("{endpoint}: {failure}")))
    }
}

/// The last holder of a handle can be a task on its own runtime (the watch, ending): dropping
/// a runtime there would panic, so it is shut down without waiting for its tasks.
impl Drop for Members {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` on `runtime` and waits for it on this thread.
fn run<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv()
        .map_err(|_| "the etcd client's runtime stopped".to_owned())
}

/// Runs `work` and `cut` on `runtime` and waits on this thread for the first to end: `Ok` with
/// what `work` gave, or `Err` with why `cut` ended it. The other is aborted. (By hand rather
/// than `tokio::select!`, whose `macros` feature the crate does not otherwise need.)
fn race<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl Future<Output = T> + Send + 'static,
    cut: impl Future<Output = String> + Send + 'static,
) -> Result<Result<T, String>, String> {
    let (tx, rx) = mpsc::sync_channel(2);
    let cut_tx = tx.clone();
    let work = runtime.spawn(async move {
        let _ = tx.send(Ok(work.await));
    });
    let cut = runtime.spawn(async move {
        let _ = cut_tx.send(Err(cut.await));
    });
    let first = rx.recv();
    work.abort();
    cut.abort();
    first.map_err(|_| "the etcd client's runtime stopped".to_owned())
}

/// Ends (with why) once `client`'s member reports a raft term newer than `since` (the leader
/// changed while an attempt was under way: it may have been lost with the old leader) or fails
/// a status check; never while the member answers with the same term, or slowly. `since` 0
/// (no term known yet) takes the member's first answer as the term to compare with.
async fn leader_change(mut client: Client, since: u64, terms: Arc<AtomicU64>) -> String {
    tokio::time::sleep(CHECK_AFTER).await;
    let mut since = since;
    loop {
        match tokio::time::timeout(CHECK_TIMEOUT, client.status()).await {
            Ok(Ok(status)) => {
                let term = status.raft_term();
                terms.fetch_max(term, Ordering::AcqRel);
                if since == 0 {
                    since = term;
                } else if term > since {
                    return format!(
                        "the etcd leader changed while the request was under way (raft term \
                         {since} to {term}); it may have been lost with the old leader"
                    );
                }
            }
            Ok(Err(e)) => return format!("the member failed a status check: {e}"),
            // A slow answer is no sign of a failure on a loaded host: the attempt's own
            // timeout still bounds the attempt.
            Err(_elapsed) => {}
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// Whether `error` is the member's (another may do better) or the request's (every member
/// would refuse it).
fn classify(error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::GRpcStatus(status) => match status.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::NotFound
            | Code::Unimplemented => Failure::Refused(status.message().to_owned()),
            // Unavailable ("no leader", "leader changed", a member stopping), DeadlineExceeded,
            // Unknown (transport), Aborted, ResourceExhausted, Internal, Cancelled.
            _ => Failure::Unreachable(format!("{:?}: {}", status.code(), status.message())),
        },
        E::InvalidArgs(why) => Failure::Refused(why),
        other => Failure::Unreachable(other.to_string()),
    }
}
