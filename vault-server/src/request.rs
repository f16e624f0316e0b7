//! Each request's id and its one log line.
//!
//! The id is the caller's `x-request-id` when that is 1 to 128 visible ASCII characters, else a
//! fresh random one; it goes back in the response's `x-request-id` and into the request's
//! extensions as a [`RequestId`] for handlers (and later the audit log) to name.
//!
//! The log line names the request id, method, matched route (`/v1/keys/{id}`, never the raw path
//! or query string), status and latency. Headers and bodies are never logged: `x-api-key`,
//! `authorization`, a query string or a body may each carry a secret.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::http::header::HeaderName;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tracing::Instrument;
use vault_core::{Actor, Context};

use crate::error::ApiError;

/// The request-id header, read and written.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-chosen request id kept.
const MAX_ID_LEN: usize = 128;

/// A request's id, found in the request's extensions (`Extension<RequestId>`) in every handler.
/// Held as its header value only (visible ASCII, so also its text): one buffer, shared by
/// every copy, made once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    header: HeaderValue,
}

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Both ways of making one allow visible ASCII only, which `to_str` always accepts.
        self.header.to_str().unwrap_or_default()
    }

    /// The caller's id, if it is 1 to 128 visible ASCII characters.
    fn from_header(value: &HeaderValue) -> Option<RequestId> {
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_ID_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        Some(RequestId {
            header: value.clone(),
        })
    }

    /// 128 random bits as 32 lowercase hex digits.
    fn generate() -> RequestId {
        // From the thread's CSPRNG (ChaCha12, seeded and reseeded from the OS), not the kernel:
        // an id must be unique and not guessable, not fresh key material, and a `getrandom`
        // call per request was the busiest route's only syscall of its own.
        let bytes: [u8; 16] = rand::random();
        let mut text = vec![0u8; 32];
        // 16 bytes make exactly 32 digits.
        if hex::encode_to_slice(bytes, &mut text).is_err() {
            unreachable!("16 bytes are 32 hex digits");
        }
        // Hex digits are visible ASCII, which a header value always accepts.
        let header = HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .expect("hex is a valid header value");
        RequestId { header }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request comes from: its id and the peer's address (when served by
/// [`serve`](crate::serve)). Handlers turn it into the [`Context`] a vault-core call records in
/// the audit log, given the actor the auth check found.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request's id.
    pub request_id: RequestId,
    /// The TCP peer, if known (not under `oneshot`).
    pub peer: Option<SocketAddr>,
}

impl Origin {
    /// The audit context of this request, made by `actor`.
    pub fn context(&self, actor: Actor) -> Context {
        self.context_for(actor, None)
    }

    /// The audit context of this request, made by `actor`, from `end_user` (the address a
    /// trusted proxy named) if given, else from the peer.
    pub(crate) fn context_for(&self, actor: Actor, end_user: Option<IpAddr>) -> Context {
        let ctx = Context::new(actor).with_request_id(self.request_id.as_str());
        match end_user.or(self.peer.map(|peer| peer.ip())) {
            Some(ip) => ctx.with_client(ip_text(ip)),
            None => ctx,
        }
    }
}

/// An address as `to_string` writes it. An IPv4 one (every peer of a usual deployment) is
/// written without the formatting machinery, which cost more than the rest of a verify's
/// audit context.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // `track` puts the id in every request `app` serves; a handler mounted elsewhere gets a
        // fresh one rather than none.
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(Origin { request_id, peer })
    }
}

/// The outermost middleware: assigns the request id, runs the request in a span that names it,
/// turns a handler's panic into a 500, echoes the id and logs the outcome.
pub(crate) async fn track(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(RequestId::from_header)
        .unwrap_or_else(RequestId::generate);
    // A shared copy of the route's name (not a new string per request).
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("-", MatchedPath::as_str);
    // Verify and forward-auth are the hot path, and their outcome is in the audit log and the
    // metrics already: a line (or an enabled span) per request at info would be most of the
    // log and of its cost.
    let quiet = QUIET_ROUTES.contains(&route);
    let span = if quiet {
        tracing::debug_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            route = %route,
        )
    } else {
        tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            route = %route,
        )
    };
    req.extensions_mut().insert(id.clone());

    // A panic must not take the connection down without an answer. Unwind safety: the handlers
    // share only the vault, whose locks recover from poisoning by design.
    let outcome = AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    let mut response = match outcome {
        Ok(response) => response,
        // The panic's message may quote data; the default hook has printed it already.
        Err(_) => ApiError::internal(&"a handler panicked").into_response(),
    };
    response.headers_mut().insert(X_REQUEST_ID, id.header);
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(status, latency_ms, "request");
    } else if quiet {
        tracing::debug!(status, latency_ms, "request");
    } else {
        tracing::info!(status, latency_ms, "request");
    }
    response
}

/// Routes logged at debug, not info (see [`track`]).
const QUIET_ROUTES: &[&str] = &["/v1/keys/verify", "/v1/auth", "/v1/auth/{*path}"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_written_as_to_string_writes_it() {
        let mut addresses: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.7",
            "203.0.113.90",
            "1.20.199.250",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8::7",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        addresses.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)])));
        for ip in addresses {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
