//! What the server will put up with: body and header size, time, requests in flight; and the
//! guards that enforce it, each answering with a JSON error instead of a hang.
//!
//! | limit | default | over it |
//! | --- | --- | --- |
//! | body | 64 KiB | 413 `body_too_large` |
//! | body of `POST /v1/keys/import` (up to 1,000 keys) | 2 MiB | 413 `body_too_large` |
//! | request headers (in [`serve`](crate::serve), by hyper) | 16 KiB | 431, connection closed |
//! | time to send the headers (by hyper; also the keep-alive idle time) | 30 s | connection closed |
//! | time to answer | 10 s | 503 `timeout` |
//! | requests in flight | 1024 | 503 `overloaded`, at once (shed, not queued) |

use std::time::Duration;

use axum::BoxError;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;

use crate::error::ApiError;

/// Server settings; [`ServerConfig::default`] is right for production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Size, time and concurrency limits.
    pub limits: Limits,
    /// Added to every failed unseal attempt before answering, to slow guessing. Never a lockout:
    /// a correct attempt is never delayed. Default 1 s.
    pub unseal_failure_delay: Duration,
    /// Peers (the photo service's proxies) whose `x-forwarded-for` names the end user. Empty by
    /// default: no header is trusted. The end user is the rightmost address in the header that
    /// is not one of these (so every proxy in the chain must be listed), and entries a client
    /// wrote to the left of it count for nothing; see the `auth` module.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Failed verifies (`MALFORMED`, `NOT_FOUND`) one end-user address may make in a minute
    /// before its failing verifies are answered 429 `throttled`. Default 100; 0 turns the
    /// throttle off. Only addresses named by a trusted proxy are counted.
    pub verify_failures_per_minute: u32,
    /// How long an `Idempotency-Key`'s first answer is kept for retries. Default 24 h.
    pub idempotency_ttl: Duration,
    /// Most `Idempotency-Key` answers kept in memory (the oldest is forgotten first). Default
    /// 100,000.
    pub idempotency_max_entries: usize,
    /// The disk alarm rises when the data directory's filesystem is this full, in percent
    /// (1 to 100). Default 80: the audit log grows by a few hundred bytes per verify and a full
    /// disk stops every verify, so the alarm leaves a fifth of the disk, hours of headroom even
    /// at full load, to archive the log or add space.
    pub disk_high_water_percent: u8,
    /// How often the disk figures are read. Default 10 s.
    pub disk_check_interval: Duration,
    /// When suspicious-activity signals fire (see [`Thresholds`] for each default and why).
    ///
    /// [`Thresholds`]: vault_core::usage::Thresholds
    pub usage: vault_core::usage::Thresholds,
    /// Whether the web console is served under `/ui/` (`[ui] enabled`). Default true.
    pub ui_enabled: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            unseal_failure_delay: Duration::from_secs(1),
            trusted_proxies: Vec::new(),
            verify_failures_per_minute: 100,
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            idempotency_max_entries: 100_000,
            disk_high_water_percent: 80,
            disk_check_interval: Duration::from_secs(10),
            usage: vault_core::usage::Thresholds::default(),
            ui_enabled: true,
        }
    }
}

/// Size, time and concurrency limits (see the module table for what happens over each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub body_bytes: usize,
    /// Largest body of `POST /v1/keys/import`, in bytes: a thousand keys with their fields.
    pub import_body_bytes: usize,
    /// Largest request head (request line and headers), in bytes; enforced by [`serve`].
    ///
    /// [`serve`]: crate::serve
    pub header_bytes: usize,
    /// Longest time a client may take to send a request head, and so also the longest an idle
    /// keep-alive connection stays open; enforced by [`serve`].
    ///
    /// [`serve`]: crate::serve
    pub header_read_timeout: Duration,
    /// Longest time from the request head to the response head, body reading included.
    pub request_timeout: Duration,
    /// Most requests in flight at once (at least 1); more are refused at once.
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 * 1024,
            import_body_bytes: 2 * 1024 * 1024,
            header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            concurrency: 1024,
        }
    }
}

/// Refuses a body longer than the limit: at once when `content-length` says so, else when the
/// stream passes it (the [`ApiJson`](crate::json::ApiJson) extractor then answers 413). The
/// `Limited` wrapper also covers a handler that reads the body without an extractor.
pub(crate) async fn limit_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let limit = if req.uri().path() == IMPORT_PATH {
        limits.import_body_bytes
    } else {
        limits.body_bytes
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::body_too_large(limit).into_response();
    }
    next.run(req.map(|body| Body::new(Limited::new(body, limit))))
        .await
}

/// The route whose body may be larger (`import_body_bytes`).
const IMPORT_PATH: &str = "/v1/keys/import";

/// The layer telling axum's body extractors the larger limit: `limit_body` has already
/// wrapped each body in the limit of its route.
pub(crate) fn extractor_body_limit(limits: &Limits) -> DefaultBodyLimit {
    DefaultBodyLimit::max(limits.body_bytes.max(limits.import_body_bytes))
}

/// Abandons a request that takes longer than the limit. A blocking task it started (an Argon2
/// evaluation) runs to its end; only the answer is given up.
pub(crate) async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// The load-shedding layer's only error: no capacity left.
pub(crate) async fn overloaded(_: BoxError) -> ApiError {
    ApiError::overloaded()
}
