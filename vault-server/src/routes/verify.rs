//! `POST /v1/keys/verify` and forward-auth (`/v1/auth`, `/v1/auth/{*path}`), for `verifier`
//! tokens (and managers and admins).
//!
//! Every verify awaits its audit entry's group commit without holding a thread
//! (`Vault::verify_async`); one that spends credits (committed under its key's lock), or whose
//! key is locked by a change being committed, runs on the blocking pool. Each is observed in
//! the metrics, and, when it fails as `MALFORMED` or `NOT_FOUND`, counts against the end
//! user's address in the [`Throttle`](crate::throttle::Throttle).
//!
//! The throttle never refuses a key whose secret matches: an address over its threshold still
//! has its verify run, and only a verify that fails anyway is answered 429 `throttled`. This
//! costs one verify per refused request, but another client's guessing from the same address
//! (a NAT, a proxy) can never lock a real key out. A refused attempt gets no audit entry of its
//! own (`Vault::verify_throttled`): the refusals of each address are summed per minute into
//! one `key.verify.throttled` entry (see `throttle`). With no end-user address (no
//! trusted proxy named one), nothing is refused; the failure is counted in
//! `keyvault_verify_failures_unattributed_total` instead, and past
//! `unattributed_failures_per_minute` in a minute an `unattributed_failures` usage signal fires,
//! naming the peers (the photo service's instances) that sent them.

use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::apikey::KeyId;
use vault_core::keys::{AsyncVerify, Verdict, VerifyCode, VerifyRequest};
use vault_core::tokens::Role;

use crate::AppState;
use crate::auth::{Caller, require};
use crate::body::{Object, OptionalJson};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::routes::verdict;
use crate::schemas::{AuthRefusalDoc, VerdictDoc};

/// The header carrying the presented API key.
pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Forward-auth: the scope to require, when the proxy's URL names none.
pub(crate) const X_REQUIRED_SCOPE: HeaderName = HeaderName::from_static("x-required-scope");
/// Forward-auth answers: the key's id, owner and comma-joined scopes (on 200).
const X_KEY_ID: HeaderName = HeaderName::from_static("x-key-id");
const X_KEY_OWNER: HeaderName = HeaderName::from_static("x-key-owner");
const X_KEY_SCOPES: HeaderName = HeaderName::from_static("x-key-scopes");
/// Forward-auth answers: the precise outcome, a verify code or `THROTTLED` or `SCOPE_CONFLICT`.
const X_KEYVAULT_CODE: HeaderName = HeaderName::from_static("x-keyvault-code");

/// `retry-after` for `USAGE_EXCEEDED`: credits come back only when a manager adds some, so no
/// time is right; a minute keeps a well-behaved client from retrying in a loop.
const CREDITS_RETRY_AFTER: u64 = 60;

/// The verify routes, behind the verifier check; they share the state's throttle.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let forward_auth = OpenApiRouter::new()
        .routes(routes!(forward_auth))
        .routes(routes!(forward_auth_path))
        .route_layer(from_fn(|req, next| require(Role::Verifier, req, next)))
        // Outside the token check, so that its sealed answer gets the code too.
        .route_layer(from_fn(sealed_code));
    OpenApiRouter::new()
        .routes(routes!(verify_key))
        .route_layer(from_fn(|req, next| require(Role::Verifier, req, next)))
        .merge(forward_auth)
}

/// Forward-auth answers name their code in `x-keyvault-code`, the sealed ones too (503,
/// `SEALED`), so that a proxy's logs say why it was refused.
async fn sealed_code(req: Request, next: axum::middleware::Next) -> Response {
    let sealed_before = req
        .extensions()
        .get::<AppState>()
        .is_some_and(|s| s.vault().is_sealed());
    let mut response = next.run(req).await;
    if sealed_before
        && response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(X_KEYVAULT_CODE)
    {
        response
            .headers_mut()
            .insert(X_KEYVAULT_CODE, HeaderValue::from_static("SEALED"));
    }
    response
}

/// Body of `POST /v1/keys/verify`. The key may come in `x-api-key` instead (then the body may
/// be left out), but not in both.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyRequest {
    /// The presented key: held zeroizing from the moment it is parsed, redacted in `Debug`.
    /// (The same shortcut as the unseal body's secrets: a string with JSON escapes passes
    /// through serde_json's scratch buffer, which is not wiped; a real key has no escapes.)
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    key: Option<SecretString>,
    /// A scope the key must hold.
    #[serde(default)]
    scope: Option<String>,
    /// Credits to spend (default 1; 0 checks without spending).
    #[serde(default)]
    cost: Option<u64>,
}

// ---- Handlers ----------------------------------------------------------------------------

/// `POST /v1/keys/verify`: 200 with the verdict, whatever its code. The key comes in the body's
/// `key` or in `x-api-key`; both at once is 400 (one of them is a mistake, and guessing which
/// could verify the wrong key).
#[utoipa::path(
    post,
    path = "/v1/keys/verify",
    tag = "verify",
    params(("x-api-key" = Option<String>, Header, description = "The key, if not in the body")),
    request_body(content = Option<VerifyKeyRequest>, description = "May be left out when the key is in `x-api-key`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verdict, valid or not", body = VerdictDoc),
        (status = 400, description = "Bad body (`invalid_body`), no key, a key in both places, or a `scope` over 128 bytes, longer than any key's scope may be (`invalid_input`); nothing is logged", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a verifier, manager or admin token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json`", body = ErrorBody),
        (status = 429, description = "Too many failed verifies from this end-user address (`throttled`); see `retry-after`. Never for a key whose secret matches", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds until the address may fail again"))),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn verify_key(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    // The head is read in place (no copy of the headers or the extensions): this is the
    // busiest route.
    let (mut parts, body) = req.into_parts();
    let caller = take_caller(&mut parts)?;
    let header = parts.headers.get(X_API_KEY).map(header_key);
    let OptionalJson(body) = OptionalJson::<Object<VerifyKeyRequest>>::from_request(
        Request::from_parts(parts, body),
        &state,
    )
    .await?;
    let body = body.map_or_else(VerifyKeyRequest::default, |Object(b)| b);
    let key = match (body.key, header) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_input(
                "send the key in the body or in the x-api-key header, not both",
            ));
        }
        (Some(key), None) => trimmed(key),
        (None, Some(header)) => header,
        (None, None) => {
            return Err(ApiError::invalid_input(
                "no key: send {\"key\": \"...\"} in the body or the x-api-key header",
            ));
        }
    };
    let cost = body.cost.unwrap_or(1);
    Ok(match check(&state, &caller, key, body.scope, cost).await? {
        Checked::Verdict(verdict) => verdict::response(StatusCode::OK, &verdict, None),
        Checked::Throttled(seconds) => throttled(seconds),
    })
}

/// The [`Caller`] that `require` left, taken rather than copied.
fn take_caller(parts: &mut Parts) -> Result<Caller, ApiError> {
    // Present on every route behind `require`; missing would be a wiring mistake, answered as
    // "no token" like the `Caller` extractor does.
    parts
        .extensions
        .remove::<Caller>()
        .ok_or_else(|| ApiError::from(vault_core::Error::Unauthorized))
}

/// `/v1/auth`, any method: forward-auth (see [`forward_auth_path`]).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/v1/auth",
    tag = "verify",
    params(
        ("scope" = Option<String>, Query, description = "The scope to require (set in the proxy's URL)"),
        ("deny_status" = Option<String>, Query, description = "`403`: answer 403 instead of 429 (nginx `auth_request` turns anything but 2xx, 401 and 403 into 500)"),
        ("x-api-key" = Option<String>, Header, description = "The presented key"),
        ("x-required-scope" = Option<String>, Header, description = "The scope to require, if the URL names none"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Valid: the request may go on", body = VerdictDoc, headers(
            ("x-key-id" = String, description = "The key id"),
            ("x-key-owner" = String, description = "The key's owner"),
            ("x-key-scopes" = String, description = "The key's scopes, comma-joined"),
            ("x-keyvault-code" = String, description = "`VALID`"),
        )),
        (status = 400, description = "A required scope over 128 bytes, longer than any key's scope may be (`invalid_input`); nothing is logged", body = ErrorBody),
        (status = 401, description = "No valid key (`x-keyvault-code`: MALFORMED, NOT_FOUND, REVOKED, DISABLED or EXPIRED); or no valid vault token (an error body, no `x-keyvault-code`)", body = AuthRefusalDoc,
            headers(("x-keyvault-code" = String, description = "The verify code"))),
        (status = 403, description = "INSUFFICIENT_SCOPE; SCOPE_CONFLICT (the URL and `x-required-scope` name different scopes); with `deny_status=403`, what would be 429; or a token that is not a verifier (an error body)", body = AuthRefusalDoc,
            headers(("x-keyvault-code" = String, description = "The verify code, `SCOPE_CONFLICT` or `THROTTLED`"))),
        (status = 429, description = "RATE_LIMITED or USAGE_EXCEEDED (a verdict), or THROTTLED (an error body: too many failed verifies from this end-user address)", body = AuthRefusalDoc,
            headers(
                ("x-keyvault-code" = String, description = "RATE_LIMITED, USAGE_EXCEEDED or THROTTLED"),
                ("retry-after" = u64, description = "Seconds to wait"),
            )),
        (status = 503, description = "Sealed (then `x-keyvault-code: SEALED`), audit log unavailable, overloaded or timed out", body = ErrorBody,
            headers(("x-keyvault-code" = String, description = "`SEALED` while the vault is sealed"))),
    ),
)]
pub(crate) async fn forward_auth(State(state): State<AppState>, req: Request) -> Response {
    authorize(&state, req).await
}

/// The forward-auth route under which a proxy may append the original path (axum's wildcard).
pub(crate) const AUTH_WILDCARD: &str = "/v1/auth/{*path}";
/// The same route as the OpenAPI document writes it (see `finish` in `router.rs`).
pub(crate) const AUTH_WILDCARD_DOC: &str = "/v1/auth/{path}";

/// `/v1/auth/{*path}`, any method: forward-auth for nginx `auth_request`, Traefik ForwardAuth
/// and Envoy ext_authz (which appends the original path, ignored here). The body is ignored.
///
/// The key comes from `x-api-key`. The scope to require comes from `?scope=` in the URL the
/// proxy is configured with, else from `x-required-scope`. Where a client can add to either
/// (nginx and Traefik pass the client's headers on; Envoy appends the client's query string),
/// a client could only name a scope the proxy did not: so when several scopes are named and
/// they differ, the request is refused (403 `SCOPE_CONFLICT`) rather than one of them trusted.
///
/// 200 valid; 401 no valid key; 403 wrong scope; 429 (with `retry-after`) rate limit or credits,
/// or 403 for those with `?deny_status=403`. `x-keyvault-code` always says the precise code.
/// The body is the verdict (or, for a throttled address, the error).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = AUTH_WILDCARD,
    tag = "verify",
    params(
        ("*path" = String, Path, description = "The original request's path (appended by Envoy); ignored"),
        ("scope" = Option<String>, Query, description = "The scope to require (set in the proxy's URL)"),
        ("deny_status" = Option<String>, Query, description = "`403`: answer 403 instead of 429"),
        ("x-api-key" = Option<String>, Header, description = "The presented key"),
        ("x-required-scope" = Option<String>, Header, description = "The scope to require, if the URL names none"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Valid: the request may go on", body = VerdictDoc, headers(
            ("x-key-id" = String, description = "The key id"),
            ("x-key-owner" = String, description = "The key's owner"),
            ("x-key-scopes" = String, description = "The key's scopes, comma-joined"),
            ("x-keyvault-code" = String, description = "`VALID`"),
        )),
        (status = 400, description = "A required scope over 128 bytes (`invalid_input`); nothing is logged", body = ErrorBody),
        (status = 401, description = "No valid key, or no valid vault token", body = AuthRefusalDoc,
            headers(("x-keyvault-code" = String, description = "The verify code"))),
        (status = 403, description = "INSUFFICIENT_SCOPE, SCOPE_CONFLICT, or a 429 under `deny_status=403`", body = AuthRefusalDoc,
            headers(("x-keyvault-code" = String, description = "The code"))),
        (status = 429, description = "RATE_LIMITED, USAGE_EXCEEDED or THROTTLED", body = AuthRefusalDoc,
            headers(
                ("x-keyvault-code" = String, description = "The code"),
                ("retry-after" = u64, description = "Seconds to wait"),
            )),
        (status = 503, description = "Sealed (then `x-keyvault-code: SEALED`), audit log unavailable, overloaded or timed out", body = ErrorBody,
            headers(("x-keyvault-code" = String, description = "`SEALED` while the vault is sealed"))),
    ),
)]
pub(crate) async fn forward_auth_path(State(state): State<AppState>, req: Request) -> Response {
    authorize(&state, req).await
}

/// Forward-auth: the body is ignored, the head read in place.
async fn authorize(state: &AppState, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let caller = match take_caller(&mut parts) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let (headers, uri) = (&parts.headers, &parts.uri);
    let mut scopes = Vec::new();
    let mut deny_403 = false;
    if let Some(query) = uri.query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "scope" => scopes.push(value.into_owned()),
                // Any other value is ignored: the query may be the client's (Envoy), and an
                // error would reach nginx as a 500.
                "deny_status" => deny_403 |= value == "403",
                _ => {}
            }
        }
    }
    for value in headers.get_all(X_REQUIRED_SCOPE) {
        scopes.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if scopes.iter().any(|s| *s != scopes[0]) {
        let mut response = ApiError::new(
            StatusCode::FORBIDDEN,
            "scope_conflict",
            "the URL's scope and x-required-scope name different scopes",
        )
        .into_response();
        code_header(&mut response, "SCOPE_CONFLICT");
        return response;
    }
    let key = headers
        .get(X_API_KEY)
        .map_or_else(|| SecretString::from(""), header_key);
    let checked = match check(state, &caller, key, scopes.pop(), 1).await {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    let too_many = if deny_403 {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let verdict = match checked {
        Checked::Throttled(seconds) => {
            let mut response = throttled(seconds);
            *response.status_mut() = too_many;
            code_header(&mut response, "THROTTLED");
            return response;
        }
        Checked::Verdict(verdict) => verdict,
    };
    let (status, retry_after) = match verdict.code {
        VerifyCode::Valid => (StatusCode::OK, None),
        VerifyCode::Malformed
        | VerifyCode::NotFound
        | VerifyCode::Revoked
        | VerifyCode::Disabled
        | VerifyCode::Expired => (StatusCode::UNAUTHORIZED, None),
        VerifyCode::InsufficientScope => (StatusCode::FORBIDDEN, None),
        VerifyCode::RateLimited => (
            too_many,
            Some(verdict.ratelimit.map_or(1, |r| r.reset_seconds.max(1))),
        ),
        VerifyCode::UsageExceeded => (too_many, Some(CREDITS_RETRY_AFTER)),
    };
    let id = verdict.key_id.as_ref().map(KeyId::hex);
    let mut response = verdict::response(status, &verdict, id.as_ref());
    let headers = response.headers_mut();
    if status == StatusCode::OK {
        if let Some(id) = &id {
            headers.insert(X_KEY_ID, text_header(id.as_str()));
        }
        if let Some(owner) = &verdict.owner {
            headers.insert(X_KEY_OWNER, text_header(owner));
        }
        let scopes = verdict
            .scopes
            .as_ref()
            .map(|s| s.join(","))
            .unwrap_or_default();
        headers.insert(X_KEY_SCOPES, text_header(&scopes));
    }
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    code_header(&mut response, verdict.code.as_str());
    response
}

/// What a verify came to: a verdict to report, or a refusal of a throttled address.
enum Checked {
    Verdict(Verdict),
    /// Seconds until the address may fail again.
    Throttled(u64),
}

/// Runs one verify, records it in the metrics and, if it failed as
/// `MALFORMED` or `NOT_FOUND`, in the throttle.
async fn check(
    state: &AppState,
    caller: &Caller,
    key: SecretString,
    scope: Option<String>,
    cost: u64,
) -> Result<Checked, ApiError> {
    let throttle = state.throttle();
    let threshold = state.config().verify_failures_per_minute;
    // An address already over its threshold: its failures are refused and summed, not logged
    // one by one.
    let refusing = caller
        .end_user
        .and_then(|ip| Some((ip, throttle.over(ip, threshold, Instant::now())?)));
    let vault = state.vault().clone();
    let ctx = caller.context();
    let quiet = refusing.is_some();
    let started = Instant::now();
    let req = VerifyRequest {
        key: key.expose_secret(),
        scope: scope.as_deref(),
        cost,
    };
    let verdict = match vault.verify_async(&ctx, req, quiet).await? {
        AsyncVerify::Verdict(verdict) => verdict,
        // A credit spend (committed under its key's lock), or a key whose lock a change holds
        // through its commit: on the blocking pool, going on from what was parsed and hashed.
        AsyncVerify::MustBlock(pending) => {
            blocking(move || vault.finish_verify(&ctx, pending)).await?
        }
    };
    crate::metrics::verify_observed(verdict.code, started.elapsed().as_secs_f64());
    if matches!(verdict.code, VerifyCode::Malformed | VerifyCode::NotFound) {
        if let Some((ip, seconds)) = refusing {
            throttle.refused(ip, &caller.context(), Instant::now());
            return Ok(Checked::Throttled(seconds));
        }
        match caller.end_user {
            Some(ip) => {
                // This failure was audited; if it is past the threshold (others raced it
                // there), it is refused all the same.
                if let Some(seconds) = throttle.fail(ip, threshold, Instant::now()) {
                    return Ok(Checked::Throttled(seconds));
                }
            }
            None => {
                metrics::counter!(crate::metrics::UNATTRIBUTED).increment(1);
                let peer = caller.origin.peer.map(|p| p.ip().to_string());
                state.vault().note_unattributed_failure(peer.as_deref());
            }
        }
    }
    Ok(Checked::Verdict(verdict))
}

/// A key from a body, trimmed like the header (HTTP drops the whitespace around a header value)
/// and stdin: a key pasted with its newline is the same key. Copied only if there is whitespace
/// to drop.
fn trimmed(key: SecretString) -> SecretString {
    let text = key.expose_secret();
    let trimmed = text.trim();
    if trimmed.len() == text.len() {
        return key;
    }
    SecretString::from(trimmed)
}

/// The key in an `x-api-key` header. Bytes that are not UTF-8 cannot be a key; they are passed
/// on (replaced) so that the verify answers, and audits, `MALFORMED`.
fn header_key(value: &HeaderValue) -> SecretString {
    SecretString::from(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// 429 `throttled` with `retry-after`.
fn throttled(seconds: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        format!("too many failed verifies from this address; retry after {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn code_header(response: &mut Response, code: &'static str) {
    response
        .headers_mut()
        .insert(X_KEYVAULT_CODE, HeaderValue::from_static(code));
}

/// A header value from record text (an owner id, scopes). vault-core refuses control characters
/// in them, so every byte is allowed (UTF-8 goes out as obs-text); should that ever change, the
/// value is left empty rather than the answer failing.
fn text_header(text: &str) -> HeaderValue {
    HeaderValue::from_bytes(text.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
}
