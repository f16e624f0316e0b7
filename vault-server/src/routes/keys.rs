//! `/v1/keys`: create, list, show, update, rotate, revoke and reveal API keys.
//!
//! All need a `manager` token but reveal, which needs `admin`. Each handler turns its request
//! into one vault-core call; calls that commit run on the blocking pool (see
//! [`blocking`](crate::blocking)). The full text of a key appears only in the answers of create,
//! rotate and reveal, rendered once from [`ApiKey::expose_secret_text`] into a zeroizing buffer
//! (see [`SecretBody`]); every other answer is a [`KeyInfo`], which holds no secret.
//!
//! Times are RFC 3339 text in requests (see [`rfc3339`](crate::rfc3339)) and Unix seconds in
//! answers, as vault-core reports them.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::apikey::{ApiKey, KeyId};
use vault_core::keys::{KeyFilter, KeyInfo, KeyStatus, KeyUpdate, MAX_PAGE, NewKey, RateLimit};
use vault_core::tokens::Role;

use crate::auth::{Caller, require};
use crate::body::{Object, OptionalJson};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::secret_json;
use crate::idempotency::{self, Begin, Claim, Idempotency, SecretBody};
use crate::json::{ApiJson, ApiPath, ApiQuery, key_id};
use crate::rfc3339::{Timestamp, unix_now};
use crate::schemas::{
    CreditsBody, IssuedKeyDoc, KeyInfoDoc, KeyStatusDoc, RateLimitBody, RevealedKey,
};
use crate::{AppState, ServerConfig};

/// Longest rotation grace period, in seconds (30 days): an old secret should not linger.
pub(crate) const MAX_GRACE_SECONDS: u64 = 30 * 24 * 60 * 60;

/// The key routes, each group behind its role check, sharing one idempotency store.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let manager = OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(show_key, update_key))
        .routes(routes!(rotate_key))
        .routes(routes!(revoke_key))
        .routes(routes!(revoke_owner))
        .route_layer(from_fn(|req, next| require(Role::Manager, req, next)));
    let admin = OpenApiRouter::new()
        .routes(routes!(reveal_key))
        .route_layer(from_fn(|req, next| require(Role::Admin, req, next)));
    manager
        .merge(admin)
        .layer(Extension(Arc::new(Idempotency::default())))
}

// ---- Requests ----------------------------------------------------------------------------

/// Body of `POST /v1/keys`. Give `expires_at` or `ttl_seconds`, not both.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The photo service's customer id (1 to 128 bytes).
    pub(crate) owner: String,
    /// A label (up to 256 bytes).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Scopes the key grants (up to 64, each 1 to 128 bytes).
    #[serde(default)]
    pub(crate) scopes: Option<Vec<String>>,
    /// A small JSON object (up to 4 KiB) returned by verify.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) meta: Option<Map<String, Value>>,
    /// When the key stops working (RFC 3339, in the future).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime, example = "2030-01-31T12:00:00Z")]
    pub(crate) expires_at: Option<Timestamp>,
    /// Seconds from now until the key stops working (at least 1).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub(crate) ttl_seconds: Option<u64>,
    /// Whether the key starts enabled (default true).
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    /// Requests allowed per period.
    #[serde(default)]
    pub(crate) ratelimit: Option<RateLimitBody>,
    /// Uses left (each verify spends its `cost`), as a number or as `{"remaining", "refill"}`;
    /// none for unlimited.
    #[serde(default)]
    pub(crate) credits: Option<CreditsBody>,
    /// Keep an encrypted copy of the secret that an admin can reveal (default false).
    #[serde(default)]
    pub(crate) recoverable: Option<bool>,
}

/// Body of `PATCH /v1/keys/{id}`: only the fields given change. `expires_at`, `ratelimit` and
/// `credits` take `null` to remove the expiry, the rate limit, or the credit limit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// New name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    name: Option<String>,
    /// New scopes (replacing the old ones).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Vec<String>, required = false)]
    scopes: Option<Vec<String>>,
    /// New meta object (replacing the old one).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object, required = false)]
    meta: Option<Map<String, Value>>,
    /// New expiry (RFC 3339, in the future), or `null` for none.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2030-01-31T12:00:00Z")]
    expires_at: Option<Option<Timestamp>>,
    /// Enable or disable.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, required = false)]
    enabled: Option<bool>,
    /// New rate limit, or `null` for none.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitBody>)]
    ratelimit: Option<Option<RateLimitBody>>,
    /// New credits, or `null` for unlimited. A number keeps the refill; an object
    /// `{"remaining", "refill"?}` replaces it (no `refill`: the credits no longer come back).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<CreditsBody>)]
    credits: Option<Option<CreditsBody>>,
}

/// A field that may be absent (`None`) but not `null` (an error naming the field).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value (`Some(Some(v))`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /v1/keys/{id}/rotate` (the body may be left out).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// Seconds the old secret keeps working (default 0: it ends at once; at most 30 days;
    /// never past the key's expiry).
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// Query of `GET /v1/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this owner's keys.
    owner: Option<String>,
    /// Only keys of exactly this name (case as given; no prefix or partial match), found
    /// through the name index; with `owner`, keys that have both.
    name: Option<String>,
    /// Only keys in this state.
    #[param(value_type = Option<KeyStatusDoc>)]
    status: Option<KeyStatus>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<String>)]
    cursor: Option<KeyId>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// Query of `POST /v1/keys/revoke`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevokeOwnerQuery {
    /// Revoke every key of this owner.
    owner: String,
}

// ---- Answers ----------------------------------------------------------------------------

/// A page of keys, in key-id order.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyPage)]
pub struct KeyPageBody {
    #[schema(value_type = Vec<KeyInfoDoc>)]
    keys: Vec<KeyInfo>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    next_cursor: Option<KeyId>,
}

/// The answer of `POST /v1/keys/revoke`.
#[derive(Serialize, ToSchema)]
pub struct RevokedCount {
    /// Keys revoked now (keys already revoked are not counted).
    revoked: usize,
}

// ---- Handlers ----------------------------------------------------------------------------

/// `POST /v1/keys`: creates a key; its full text is in this answer only.
///
/// With an `Idempotency-Key` header, a retry of the same request by the same token within 24 h
/// gets this same answer (with `idempotent-replayed: true`) instead of a second key.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = CreateKeyRequest,
    params(("idempotency-key" = Option<String>, Header, description = "Makes retries safe: the same value (1 to 255 visible ASCII characters) within 24 h returns the first answer")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new key, shown once", body = IssuedKeyDoc),
        (status = 400, description = "Bad body (`invalid_body`, naming the field), a value out of range (`invalid_input`), a bad `Idempotency-Key` (`invalid_header`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` was used for another request, or its first request is still running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Idempotency>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(Object(request)): ApiJson<Object<CreateKeyRequest>>,
) -> Result<Response, ApiError> {
    // The canonical form of the request is what a retry must match (whitespace and field
    // order aside). Invariant: plain data with string keys always serialises.
    let canonical = serde_json::to_vec(&request).expect("a parsed request serialises");
    let new = request.into_new_key()?;
    let claim = match claim(&store, &state, &caller, &headers, &[b"create", &canonical])? {
        Some(Begin::Replay(answer)) => return Ok(answer),
        Some(Begin::Fresh(claim)) => Some(claim),
        None => None,
    };
    let vault = state.vault().clone();
    let ctx = caller.context();
    let body = blocking(move || {
        let issued = vault.create_key(&ctx, new)?;
        Ok(finish(
            claim,
            StatusCode::CREATED,
            issued_body(&issued.key, &issued.info),
        ))
    })
    .await?;
    Ok(body.response(StatusCode::CREATED))
}

impl CreateKeyRequest {
    pub(crate) fn into_new_key(self) -> Result<NewKey, ApiError> {
        let expires_at = match (self.expires_at, self.ttl_seconds) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_input(
                    "give expires_at or ttl_seconds, not both",
                ));
            }
            (Some(Timestamp(at)), None) => Some(at),
            (None, Some(0)) => {
                return Err(ApiError::invalid_input("ttl_seconds must be at least 1"));
            }
            (None, Some(ttl)) => Some(unix_now().saturating_add(ttl)),
            (None, None) => None,
        };
        let credits = self.credits.map(CreditsBody::parts);
        Ok(NewKey {
            owner: self.owner,
            name: self.name.unwrap_or_default(),
            scopes: self.scopes.unwrap_or_default(),
            meta: self.meta.unwrap_or_default(),
            expires_at,
            disabled: !self.enabled.unwrap_or(true),
            ratelimit: self.ratelimit.map(RateLimit::from),
            credits: credits.map(|(n, _)| n),
            refill: credits.and_then(|(_, refill)| refill),
            recoverable: self.recoverable.unwrap_or(false),
        })
    }
}

/// `GET /v1/keys`: a page of keys, by owner, exact name and status. Never a secret.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of keys", body = KeyPageBody),
        (status = 400, description = "A bad query parameter (`invalid_query`, naming it)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 409, description = "`name` given while the name index of a vault upgraded from an older build is being built (in the background after unseal); try again later", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<KeyPageBody>, ApiError> {
    let limit = match query.limit {
        None => None,
        Some(n) if (1..=MAX_PAGE).contains(&(n as usize)) => Some(n as usize),
        Some(_) => {
            return Err(ApiError::invalid_query(format!(
                "limit: must be 1 to {MAX_PAGE}"
            )));
        }
    };
    let filter = KeyFilter {
        owner: query.owner,
        name: query.name,
        status: query.status,
        after: query.cursor,
        limit,
    };
    let vault = state.vault().clone();
    // A scan of up to a thousand records: off the async workers.
    let page = blocking(move || vault.list_keys(&filter)).await?;
    Ok(ApiJson(KeyPageBody {
        keys: page.keys,
        next_cursor: page.next,
    }))
}

/// `GET /v1/keys/{id}`: one key. Never a secret.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key id: 24 hex characters")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key", body = KeyInfoDoc),
        (status = 400, description = "Not a key id (`invalid_path`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn show_key(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<KeyInfo>, ApiError> {
    let id = key_id(&id)?;
    Ok(ApiJson(state.vault().show_key(&id)?))
}

/// `PATCH /v1/keys/{id}`: changes the fields given; `null` removes an expiry, a rate limit or a
/// credit limit. A revoked key cannot be changed.
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key id: 24 hex characters")),
    request_body = UpdateKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key as changed", body = KeyInfoDoc),
        (status = 400, description = "Bad body (`invalid_body`), a value out of range (`invalid_input`), not a key id (`invalid_path`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key is revoked", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(Object(request)): ApiJson<Object<UpdateKeyRequest>>,
) -> Result<ApiJson<KeyInfo>, ApiError> {
    let id = key_id(&id)?;
    let update = KeyUpdate {
        name: request.name,
        scopes: request.scopes,
        meta: request.meta,
        expires_at: request.expires_at.map(|e| e.map(|Timestamp(at)| at)),
        enabled: request.enabled,
        ratelimit: request.ratelimit.map(|r| r.map(RateLimit::from)),
        credits: request.credits.map(|c| c.map(|c| c.parts().0)),
        refill: request
            .credits
            .and_then(|c| c.filter(CreditsBody::is_object))
            .map(|c| c.parts().1),
    };
    let vault = state.vault().clone();
    let ctx = caller.context();
    Ok(ApiJson(
        blocking(move || vault.update_key(&ctx, &id, update)).await?,
    ))
}

/// `POST /v1/keys/{id}/rotate`: a new secret for the same key id; the old one keeps working for
/// `grace_seconds`. Takes `Idempotency-Key` as create does.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    tag = "keys",
    params(
        ("id" = String, Path, description = "The key id: 24 hex characters"),
        ("idempotency-key" = Option<String>, Header, description = "Makes retries safe: the same value within 24 h returns the first answer"),
    ),
    request_body(content = Option<RotateKeyRequest>, description = "May be left out: no grace period"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key with its new secret, shown once", body = IssuedKeyDoc),
        (status = 400, description = "Bad body, `grace_seconds` over 30 days, not a key id, a bad `Idempotency-Key`", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key is revoked; or the `Idempotency-Key` was used for another request or is still running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Idempotency>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    OptionalJson(request): OptionalJson<Object<RotateKeyRequest>>,
) -> Result<Response, ApiError> {
    let id = key_id(&id)?;
    let grace = request.map_or(0, |Object(r)| r.grace_seconds.unwrap_or(0));
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid_input(format!(
            "grace_seconds must be at most {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    let request = [b"rotate".as_slice(), id.as_bytes(), &grace.to_be_bytes()];
    let claim = match claim(&store, &state, &caller, &headers, &request)? {
        Some(Begin::Replay(answer)) => return Ok(answer),
        Some(Begin::Fresh(claim)) => Some(claim),
        None => None,
    };
    let vault = state.vault().clone();
    let ctx = caller.context();
    let body = blocking(move || {
        let issued = vault.rotate_key(&ctx, &id, grace)?;
        Ok(finish(
            claim,
            StatusCode::OK,
            issued_body(&issued.key, &issued.info),
        ))
    })
    .await?;
    Ok(body.response(StatusCode::OK))
}

/// `POST /v1/keys/{id}/revoke`: revokes a key for good, effective on the very next verify. The
/// record stays, revoked. Revoking a revoked key changes nothing.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/revoke",
    tag = "keys",
    params(("id" = String, Path, description = "The key id: 24 hex characters")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key, revoked", body = KeyInfoDoc),
        (status = 400, description = "Not a key id (`invalid_path`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<KeyInfo>, ApiError> {
    let id = key_id(&id)?;
    let vault = state.vault().clone();
    let ctx = caller.context();
    Ok(ApiJson(
        blocking(move || vault.revoke_key(&ctx, &id)).await?,
    ))
}

/// `POST /v1/keys/revoke?owner=...`: revokes every key of an owner.
#[utoipa::path(
    post,
    path = "/v1/keys/revoke",
    tag = "keys",
    params(RevokeOwnerQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many keys were revoked now", body = RevokedCount),
        (status = 400, description = "No or a bad `owner` (`invalid_query`, `invalid_input`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke_owner(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RevokeOwnerQuery>,
) -> Result<ApiJson<RevokedCount>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let revoked = blocking(move || vault.revoke_owner(&ctx, &query.owner)).await?;
    Ok(ApiJson(RevokedCount { revoked }))
}

/// `POST /v1/keys/{id}/reveal`: the full key of a key created `recoverable` (audited).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/reveal",
    tag = "keys",
    params(("id" = String, Path, description = "The key id: 24 hex characters")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The full key", body = RevealedKey),
        (status = 400, description = "Not a key id (`invalid_path`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not an admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key was not created recoverable, or is revoked", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn reveal_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = key_id(&id)?;
    let vault = state.vault().clone();
    let ctx = caller.context();
    let body = blocking(move || {
        let key = vault.reveal_key(&ctx, &id)?;
        Ok(secret_json(&Revealed {
            key: key.expose_secret_text().expose_secret(),
            key_id: &key.id(),
        }))
    })
    .await?;
    Ok(body.response(StatusCode::OK))
}

// ---- Shared parts ------------------------------------------------------------------------

/// Claims the request's `Idempotency-Key`: `None` without the header, else a claim to run the
/// request or a stored answer to send.
fn claim(
    store: &Arc<Idempotency>,
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: &[&[u8]],
) -> Result<Option<Begin>, ApiError> {
    let Some(key) = idempotency::header(headers)? else {
        return Ok(None);
    };
    store.forget_on_seal(state.vault());
    let config: &ServerConfig = state.config();
    store
        .begin(config, &caller.token.token_id, key, request)
        .map(Some)
}

/// Stores `body` under the claim, if any, and hands it on.
fn finish(claim: Option<Claim>, status: StatusCode, body: SecretBody) -> SecretBody {
    if let Some(claim) = claim {
        claim.complete(status, body.clone());
    }
    body
}

#[derive(Serialize)]
struct Issued<'a> {
    key: &'a str,
    #[serde(flatten)]
    info: &'a KeyInfo,
}

#[derive(Serialize)]
struct Revealed<'a> {
    key: &'a str,
    key_id: &'a KeyId,
}

/// `{"key", ...KeyInfo}`, the only place a created or rotated key is rendered.
fn issued_body(key: &ApiKey, info: &KeyInfo) -> SecretBody {
    let text = key.expose_secret_text();
    secret_json(&Issued {
        key: text.expose_secret(),
        info,
    })
}
