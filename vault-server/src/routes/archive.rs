//! `/v1/audit/archive`: move the audit entries up to a signed checkpoint out of the live log;
//! `operator` only.
//!
//! Archiving takes two calls, so that no entry is dropped before its archive is safe:
//!
//! 1. `GET /v1/audit/archive?upto=N` streams the archive of every live entry before `N` (the
//!    size of a checkpoint the vault signed, or `latest`): an unfiltered JSON Lines export of
//!    those entries under that checkpoint, which `keyvault audit verify` checks on its own.
//!    Nothing is dropped; the vault remembers the SHA-256 of the bytes it streamed. The
//!    response carries the audit public key in `x-keyvault-audit-public-key`, so the client can
//!    check what it received before step 2.
//! 2. `POST /v1/audit/archive` with `{"upto": N, "sha256": "<hex>"}`, the SHA-256 of the bytes
//!    the client stored, drops those entries if the last archive streamed in full ends at `N`
//!    and hashes to that; otherwise 409 and nothing is dropped (a missing or malformed `sha256`
//!    is 400). Entries go in small batches, so verifies keep going.
//!
//! `keyvault audit archive` does both, writing, syncing, hashing and verifying the file in
//! between.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::from_fn;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::audit::archive::ArchiveDigest;
use vault_core::tokens::Role;

use crate::AppState;
use crate::auth::{Caller, require};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiQuery};
use crate::stream::{CHANNEL_CHUNKS, ChannelWriter, streamed};

/// The response header with the audit public key (as `init` printed it).
pub const PUBLIC_KEY_HEADER: &str = "x-keyvault-audit-public-key";

/// The archive routes, behind the `operator` check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(write_archive, drop_archived))
        .route_layer(from_fn(|req, next| require(Role::Operator, req, next)))
}

/// Query of `GET /v1/audit/archive`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// The tree size of a checkpoint the vault signed (every entry before it is archived), or
    /// `latest` to start a new segment file, sign a checkpoint there and archive everything
    /// before it.
    upto: String,
}

/// `GET /v1/audit/archive`: the archive of every live entry before `upto`, streamed as a
/// JSON Lines export that verifies on its own. Drops nothing; `POST` does, afterwards.
#[utoipa::path(
    get,
    path = "/v1/audit/archive",
    tag = "audit",
    security(("bearer" = [])),
    params(ArchiveQuery),
    responses(
        (status = 200, description = "The archive, streamed (`keyvault-audit-export/1`, unfiltered, from the first live entry to `upto`)", content_type = "application/x-ndjson",
            headers(("x-keyvault-audit-public-key" = String, description = "The audit public key, to check the archive with"))),
        (status = 400, description = "`upto` is not a number or `latest` (`invalid_query`), or is no signed checkpoint's size (`invalid_input`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 409, description = "Everything before `upto` is already archived", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn write_archive(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let upto = match query.upto.as_str() {
        "latest" => None,
        text => Some(text.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "upto: a checkpoint's tree size (digits) or `latest`",
            )
        })?),
    };
    let vault = state.vault().clone();
    let key_of = vault.clone();
    let ctx = caller.context();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let writer_tx = tx.clone();
    let writing = tokio::task::spawn_blocking(move || {
        let upto = match upto {
            Some(upto) => upto,
            None => vault.audit_roll_checkpoint()?.checkpoint.size,
        };
        let mut out = ChannelWriter::new(writer_tx);
        vault.write_audit_archive(&ctx, upto, &mut out, |_| {})
    });
    tokio::spawn(async move {
        let failed = match writing.await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => ApiError::from(e),
            Err(join) => ApiError::internal(&join),
        };
        if tx.is_closed() {
            tracing::debug!("the client left while an audit archive was written");
        } else {
            let _ = tx.send(Err(failed)).await;
        }
    });
    let mut response = streamed(rx, "application/x-ndjson").await?;
    // Read only now: on a full disk the archive first frees the reserve the store needs.
    let public_key = blocking(move || key_of.audit_public_key()).await?;
    if let Ok(value) = HeaderValue::from_str(&public_key) {
        response.headers_mut().insert(PUBLIC_KEY_HEADER, value);
    }
    Ok(response)
}

/// Body of `POST /v1/audit/archive`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DropRequest {
    /// Drop every live entry before this tree size: the end of the last archive written.
    upto: u64,
    /// The SHA-256 of the archive's bytes as the caller stored them (`sha256sum` of the file),
    /// 64 lowercase hex digits. Nothing is dropped unless it is the SHA-256 of the archive the
    /// vault streamed up to `upto`.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$", min_length = 64, max_length = 64)]
    sha256: Sha256Hex,
}

/// [`ArchiveDigest`] read from JSON as 64 lowercase hex digits.
#[derive(Debug)]
struct Sha256Hex(ArchiveDigest);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ArchiveDigest::parse_hex(&text)
            .map(Sha256Hex)
            .map_err(serde::de::Error::custom)
    }
}

/// Answer of `POST /v1/audit/archive`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DropAnswer {
    /// Entries dropped from the live log.
    dropped: u64,
    /// Bytes of audit segment files removed. A file also holding later entries stays until an
    /// archive covers it whole; `upto=latest` starts a new file, so everything before goes.
    bytes_freed: u64,
    /// The first entry the live log now holds.
    first_live: u64,
}

/// `POST /v1/audit/archive`: drop the live entries before `upto`, once their archive was
/// written in full and the caller sends back the SHA-256 of the bytes it stored. The tree keeps
/// its subtree hashes: later inclusion proofs and consistency proofs from older checkpoints
/// still verify; proofs of dropped entries answer 410.
#[utoipa::path(
    post,
    path = "/v1/audit/archive",
    tag = "audit",
    security(("bearer" = [])),
    request_body = DropRequest,
    responses(
        (status = 200, description = "Dropped", body = DropAnswer),
        (status = 400, description = "A bad body (`invalid_body`): `upto` or `sha256` missing, or `sha256` not 64 lowercase hex digits; nothing is dropped", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 409, description = "Nothing is dropped (`conflict`): the last archive written does not end at `upto` (or none was written), or `sha256` is not the SHA-256 of its bytes", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn drop_archived(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DropRequest>,
) -> Result<ApiJson<DropAnswer>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let answer = blocking(move || {
        let dropped = vault.drop_archived(&ctx, body.upto, &body.sha256.0)?;
        Ok(DropAnswer {
            dropped: dropped.entries,
            bytes_freed: dropped.bytes_freed,
            first_live: vault.audit_first_live(),
        })
    })
    .await?;
    Ok(ApiJson(answer))
}
