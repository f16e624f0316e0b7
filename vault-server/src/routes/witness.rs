//! A witness's HTTP face (C2SP `tlog-witness`, <https://c2sp.org/tlog-witness>) over a
//! vault-core [`Witness`], which holds every check and the state; this module only reads the
//! body, runs it off the async threads and writes the answer.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `POST /add-checkpoint` | 200 cosignature lines; 400 malformed (or not UTF-8); 403 no valid signature of the log; 404 unknown log; 409 `text/x.tlog.size` with the witness's size; 413 over 64 KiB; 422 inconsistent (a fork or a rollback); 503 state not stored |
//! | `GET /{origin_hash}/checkpoint` | the monitor retrieval mechanism: 200 the latest cosigned checkpoint of the log whose origin hashes (SHA-256, lowercase hex) to `origin_hash`; 404 none |
//!
//! Any other path is 404, another method on these paths 405. The submission and monitoring
//! prefixes are both the server root: a vault configured with the witness URL
//! `http://witness-host:8732` posts to `http://witness-host:8732/add-checkpoint`. Answers are
//! `text/plain` (but the 409's `text/x.tlog.size`), as the protocol writes them, not the vault
//! API's JSON errors. Every request gets the time and concurrency limits of [`Limits`]'s
//! defaults.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use vault_core::witness::protocol::{MAX_BODY, SIZE_CONTENT_TYPE};
use vault_core::witness::{Refusal, Witness};

use crate::Limits;

/// The content type of every answer but a 409.
const TEXT: &str = "text/plain; charset=utf-8";

/// The witness's router: `add-checkpoint` and the monitor retrieval mechanism at the root.
pub fn witness_app(witness: Arc<Witness>) -> Router {
    let limits = Limits::default();
    let guards = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency.max(1)))
        .layer(from_fn(timeout));
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(checkpoint))
        .fallback(not_found)
        .layer(guards)
        .with_state(witness)
}

async fn add_checkpoint(
    State(witness): State<Arc<Witness>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the request body is not UTF-8\n");
    };
    // A cosignature must not carry the time 0; a clock before 1970 cannot give a real one.
    let Some(now) = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
        .filter(|&s| s > 0)
    else {
        tracing::error!("the system clock is before 1970: not cosigning");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the witness's clock is wrong; nothing was cosigned\n",
        );
    };
    // The blocking pool: an accepted checkpoint is synced to disk before the answer.
    match tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await {
        Ok(Ok(lines)) => {
            tracing::debug!("cosigned a checkpoint");
            text(StatusCode::OK, lines)
        }
        Ok(Err(refusal)) => refused(&refusal),
        Err(e) => {
            tracing::error!(error = %e, "the add-checkpoint task failed");
            internal()
        }
    }
}

/// The answer to a refusal, as the protocol writes it.
fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match refusal {
        Refusal::Conflict(size) => {
            tracing::debug!(size, "add-checkpoint with an old size that is not ours");
            (status, [(CONTENT_TYPE, SIZE_CONTENT_TYPE)], refusal.body()).into_response()
        }
        Refusal::Unavailable(why) => {
            // The reason names files of the data directory: logged, not sent.
            tracing::error!(error = %why, "the witness could not store its state");
            text(
                status,
                "the witness could not store its state; nothing was cosigned\n",
            )
        }
        Refusal::Unprocessable(why) => {
            // A validly signed checkpoint that does not extend what was cosigned: the log
            // forked or was rolled back, which its operators and auditors want to know.
            tracing::warn!(reason = %why, "refused an inconsistent checkpoint of a known log");
            text(status, refusal.body())
        }
        _ => {
            tracing::debug!(status = status.as_u16(), reason = %refusal, "add-checkpoint refused");
            text(status, refusal.body())
        }
    }
}

async fn checkpoint(
    State(witness): State<Arc<Witness>>,
    Path(origin_hash): Path<String>,
) -> Response {
    let well_formed = origin_hash.len() == 64
        && origin_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return not_found().await;
    }
    // The blocking pool: the state's lock may be held across an `add-checkpoint`'s sync.
    match tokio::task::spawn_blocking(move || witness.latest(&origin_hash)).await {
        Ok(Some(note)) => text(StatusCode::OK, note),
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            "this witness has cosigned no checkpoint of that log\n",
        ),
        Err(e) => {
            tracing::error!(error = %e, "the checkpoint task failed");
            internal()
        }
    }
}

/// The body, at most [`MAX_BODY`] bytes: refused at once when `content-length` says it is
/// larger, else as soon as the stream passes the limit.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => {
            tracing::debug!(error = %e, "reading an add-checkpoint body failed");
            Err(text(
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            ))
        }
    }
}

fn too_large() -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {MAX_BODY} bytes\n"),
    )
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(CONTENT_TYPE, TEXT)], body.into()).into_response()
}

fn internal() -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// Abandons a request that takes longer than the default request timeout. An accepted
/// checkpoint whose answer is abandoned stays accepted: the client learns the size on its next
/// request (409).
async fn timeout(req: Request, next: Next) -> Response {
    let limit = Limits::default().request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long\n",
        ),
    }
}

/// The load-shedding layer's only error: no capacity left.
async fn overloaded(_: BoxError) -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the witness is overloaded; retry later\n",
    )
}
