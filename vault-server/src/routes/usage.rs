//! Usage summaries and suspicious-activity signals (manager or auditor): `GET
//! /v1/keys/{id}/usage`, `GET /v1/usage?owner=`, `GET /v1/keys/{id}/signals`, `GET /v1/signals`.
//!
//! The figures are vault-core's (see `vault_core::usage`), in memory. A read first waits (at
//! most 2 s) for the usage thread to fold every entry logged before it began, so it counts every
//! verify answered before it; that wait runs on the blocking pool. Answers give Unix seconds
//! (signal times in ms, as the audit log has them).

use axum::extract::State;
use axum::middleware::from_fn;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::keys::MAX_OWNER;
use vault_core::tokens::Role;
use vault_core::usage::{Granularity, Signal, UsageQuery, UsageReport};

use crate::AppState;
use crate::auth::{Caller, require_one_of};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiPath, ApiQuery, key_id};
use crate::rfc3339::{parse_time, unix_now};
use crate::schemas::{GranularityDoc, SignalDoc, UsageReportDoc};

/// The roles that read usage and signals.
const READERS: &[Role] = &[Role::Manager, Role::Auditor];

/// The usage routes, behind the manager-or-auditor check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(key_usage))
        .routes(routes!(owner_usage))
        .routes(routes!(key_signals))
        .routes(routes!(signals))
        .route_layer(from_fn(|req, next| require_one_of(READERS, req, next)))
}

/// Query of `GET /v1/keys/{id}/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// From (Unix seconds or RFC 3339; rounded down to a bucket start). Default: `to` less 7 days (hourly) or
    /// 30 days (daily).
    from: Option<String>,
    /// To (Unix seconds or RFC 3339, exclusive; rounded up to a bucket end). Default: now.
    to: Option<String>,
    /// Bucket size (default `day`). At most 1000 buckets a query.
    #[param(value_type = Option<GranularityDoc>)]
    bucket: Option<Granularity>,
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnerUsageParams {
    /// The owner whose keys are summed (only that owner's).
    owner: String,
    /// As for a key's usage.
    from: Option<String>,
    /// As for a key's usage.
    to: Option<String>,
    /// As for a key's usage.
    #[param(value_type = Option<GranularityDoc>)]
    bucket: Option<Granularity>,
}

/// Query of `GET /v1/signals`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SignalsParams {
    /// Only signals about this owner's keys.
    owner: Option<String>,
    /// Only signals last seen at or after this time (Unix seconds or RFC 3339).
    since: Option<String>,
}

/// The answer of the signal routes: oldest first, at most the newest 1000.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalsBody {
    #[schema(value_type = Vec<SignalDoc>)]
    signals: Vec<Signal>,
}

fn query(
    from: Option<&str>,
    to: Option<&str>,
    bucket: Option<Granularity>,
) -> Result<UsageQuery, ApiError> {
    let bucket = bucket.unwrap_or(Granularity::Day);
    let span = match bucket {
        Granularity::Hour => 7 * 24,
        Granularity::Day => 30,
    } * bucket.seconds();
    let to = match to {
        Some(t) => parse_time("to", t)? / 1000,
        None => unix_now(),
    };
    let from = match from {
        Some(t) => parse_time("from", t)? / 1000,
        None => to.saturating_sub(span),
    };
    let q = UsageQuery { bucket, from, to };
    // The core's own check, so that what it would refuse is a query error here.
    match q.range() {
        Ok(_) => Ok(q),
        Err(vault_core::Error::InvalidInput(why)) => Err(invalid_query(&why)),
        Err(e) => Err(e.into()),
    }
}

fn invalid_query(message: &str) -> ApiError {
    ApiError::invalid_query(format!("invalid query: {message}"))
}

/// `GET /v1/keys/{id}/usage`: a key's verifies by code, credits spent and distinct client
/// addresses, per hour or per day.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/usage",
    tag = "usage",
    params(("id" = String, Path, description = "The key id: 24 hex characters"), UsageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key's usage", body = UsageReportDoc),
        (status = 400, description = "Not a key id (`invalid_path`), or a bad query parameter (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager, auditor or admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn key_usage(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<ApiJson<UsageReport>, ApiError> {
    let id = key_id(&id)?;
    let q = query(params.from.as_deref(), params.to.as_deref(), params.bucket)?;
    let vault = state.vault().clone();
    Ok(ApiJson(blocking(move || vault.key_usage(&id, &q)).await?))
}

/// `GET /v1/usage?owner=`: the usage of all of one owner's keys together, and never another
/// owner's.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    params(OwnerUsageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The owner's usage (all zero for an owner without keys)", body = UsageReportDoc),
        (status = 400, description = "A bad query parameter (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager, auditor or admin token", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn owner_usage(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(params): ApiQuery<OwnerUsageParams>,
) -> Result<ApiJson<UsageReport>, ApiError> {
    if params.owner.is_empty() || params.owner.len() > MAX_OWNER {
        return Err(invalid_query(&format!(
            "owner: must be 1 to {MAX_OWNER} bytes"
        )));
    }
    let q = query(params.from.as_deref(), params.to.as_deref(), params.bucket)?;
    let vault = state.vault().clone();
    Ok(ApiJson(
        blocking(move || vault.owner_usage(&params.owner, &q)).await?,
    ))
}

/// `GET /v1/keys/{id}/signals`: suspicious-activity signals about a key, with their evidence.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/signals",
    tag = "usage",
    params(("id" = String, Path, description = "The key id: 24 hex characters")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key's signals, oldest first", body = SignalsBody),
        (status = 400, description = "Not a key id (`invalid_path`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager, auditor or admin token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn key_signals(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<SignalsBody>, ApiError> {
    let id = key_id(&id)?;
    let vault = state.vault().clone();
    let signals = blocking(move || vault.key_signals(&id)).await?;
    Ok(ApiJson(SignalsBody { signals }))
}

/// `GET /v1/signals`: recent signals, of one owner's keys or of all (then with the
/// `unattributed_failures` signals, which concern no key).
#[utoipa::path(
    get,
    path = "/v1/signals",
    tag = "usage",
    params(SignalsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signals, oldest first", body = SignalsBody),
        (status = 400, description = "A bad query parameter (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager, auditor or admin token", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn signals(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(params): ApiQuery<SignalsParams>,
) -> Result<ApiJson<SignalsBody>, ApiError> {
    let since_ms = match params.since.as_deref() {
        Some(t) => parse_time("since", t)?,
        None => 0,
    };
    let vault = state.vault().clone();
    let signals = blocking(move || vault.signals(params.owner.as_deref(), since_ms)).await?;
    Ok(ApiJson(SignalsBody { signals }))
}
