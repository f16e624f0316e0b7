//! What every console answer carries and every console form must prove.
//!
//! [`headers`] puts on every answer under `/ui/` a strict `Content-Security-Policy` (scripts,
//! styles, images and connections from the console itself only; no inline script or style; no
//! framing; forms post only here), `X-Frame-Options: DENY`, `Referrer-Policy: same-origin`,
//! `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store` unless the answer set its
//! own (the vendored assets, which never change within a build).
//!
//! [`same_origin`] refuses (403) any request but GET and HEAD that does not come from the
//! console's own origin: its `Origin` must be the console's (`http[s]://` + its `Host`), or,
//! where a browser sends `Origin: null` or none, `Sec-Fetch-Site` must be `same-origin`. The
//! CSRF token each form carries is checked beside it (see `form`).

use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, HOST, ORIGIN, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::layout;
use crate::AppState;

/// The console's policy: everything from itself, nothing inline, never framed.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Middleware: the security headers of every console answer.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Middleware: a state-changing request must come from the console's own origin.
pub(crate) async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let tls = req
        .extensions()
        .get::<AppState>()
        .is_some_and(AppState::tls);
    if !from_console(req.headers(), tls) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "This form did not come from the console's own pages, so it was refused.",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether the headers show a request from the console's own origin.
fn from_console(headers: &HeaderMap, tls: bool) -> bool {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    match origin {
        Some(origin) if origin != "null" => {
            let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let scheme = if tls { "https" } else { "http" };
            origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        }
        // No origin, or `null` (a `no-referrer` policy): the fetch metadata must say so.
        _ => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn only_the_consoles_own_origin_passes() {
        let host = ("host", "127.0.0.1:8731");
        assert!(from_console(
            &h(&[host, ("origin", "http://127.0.0.1:8731")]),
            false
        ));
        assert!(!from_console(
            &h(&[host, ("origin", "http://127.0.0.1:8731")]),
            true
        ));
        assert!(from_console(
            &h(&[host, ("origin", "https://127.0.0.1:8731")]),
            true
        ));
        assert!(!from_console(
            &h(&[host, ("origin", "http://evil.example")]),
            false
        ));
        assert!(!from_console(
            &h(&[host, ("origin", "http://127.0.0.1:8731.evil")]),
            false
        ));
        assert!(!from_console(
            &h(&[("origin", "http://127.0.0.1:8731")]),
            false
        ));
        // No origin or `null`: only with `Sec-Fetch-Site: same-origin`.
        assert!(!from_console(&h(&[host]), false));
        assert!(!from_console(&h(&[host, ("origin", "null")]), false));
        assert!(from_console(
            &h(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")]),
            false
        ));
        assert!(from_console(
            &h(&[host, ("sec-fetch-site", "same-origin")]),
            false
        ));
        assert!(!from_console(
            &h(&[host, ("sec-fetch-site", "cross-site")]),
            false
        ));
        // An origin that is present and wrong is not saved by fetch metadata.
        assert!(!from_console(
            &h(&[
                host,
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "same-origin")
            ]),
            false
        ));
    }
}
