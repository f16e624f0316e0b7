//! `POST /v1/keys/import`: brings existing keys into the vault without reissuing them.
//!
//! Needs a `manager` token. Each key comes as its text (`key`) or as the lowercase hex SHA-256
//! of its text (`sha256`), with the fields of create, which are checked as create checks them
//! ([`CreateKeyRequest::into_new_key`], then vault-core's own checks). Up to 1,000 keys a
//! request (more: 400), in a body of up to 2 MiB (more: 413). The answer lists, in the order
//! given, each key's id and whether it was `imported` now or `exists` already (importing a key
//! twice makes one key), so a client can run an interrupted import again. Neither the text nor
//! the hash of a key ever appears in an answer, an error or a log line: both are held as
//! [`SecretString`], whose `Debug` is redacted.

use axum::extract::State;
use axum::middleware::from_fn;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::keys::{ImportKey, ImportOutcome, ImportStatus, ImportedSecret, MAX_IMPORT};
use vault_core::tokens::Role;

use crate::AppState;
use crate::auth::{Caller, require};
use crate::body::Object;
use crate::error::{ApiError, ErrorBody, blocking};
use crate::json::ApiJson;
use crate::rfc3339::Timestamp;
use crate::routes::keys::CreateKeyRequest;
use crate::schemas::{CreditsBody, RateLimitBody};

/// The import route, behind the manager check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_keys))
        .route_layer(from_fn(|req, next| require(Role::Manager, req, next)))
}

/// Body of `POST /v1/keys/import`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The keys, 1 to 1,000.
    keys: Vec<ImportKeyRequest>,
}

/// One key to import: `key` or `sha256` (exactly one), and the fields of create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeyRequest {
    /// The key's text as the customer holds it (8 to 1024 bytes; whitespace around it is
    /// trimmed). Not in this vault's own format.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    key: Option<SecretString>,
    /// The lowercase hex SHA-256 of the key's text, for a service that kept only hashes.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password, pattern = "^[0-9a-f]{64}$")]
    sha256: Option<SecretString>,
    /// The photo service's customer id (1 to 128 bytes).
    owner: String,
    /// A label (up to 256 bytes).
    #[serde(default)]
    name: Option<String>,
    /// Scopes the key grants (up to 64, each 1 to 128 bytes).
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// A small JSON object (up to 4 KiB) returned by verify.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    meta: Option<Map<String, Value>>,
    /// When the key stops working (RFC 3339, in the future).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime, example = "2030-01-31T12:00:00Z")]
    expires_at: Option<Timestamp>,
    /// Seconds from now until the key stops working (at least 1).
    #[serde(default)]
    #[schema(minimum = 1)]
    ttl_seconds: Option<u64>,
    /// Whether the key starts enabled (default true).
    #[serde(default)]
    enabled: Option<bool>,
    /// Requests allowed per period.
    #[serde(default)]
    ratelimit: Option<RateLimitBody>,
    /// Uses left, as a number or as `{"remaining", "refill"}`; none for unlimited.
    #[serde(default)]
    credits: Option<CreditsBody>,
    /// Refused if true: the vault keeps no copy of an imported key's text.
    #[serde(default)]
    recoverable: Option<bool>,
}

/// The answer of `POST /v1/keys/import`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportAnswer {
    /// One per key given, in the same order.
    #[schema(value_type = Vec<ImportResult>)]
    results: Vec<ImportOutcome>,
    /// How many were imported now.
    imported: usize,
    /// How many were already in the vault (nothing changed for them).
    exists: usize,
}

/// What the import did with one key.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents `vault_core::keys::ImportOutcome`, which is what is sent.
pub(crate) struct ImportResult {
    /// `imported` now, or `exists` already.
    #[schema(value_type = String, example = "imported")]
    status: ImportStatusDoc,
    /// The key's id.
    #[schema(example = "0123456789abcdef01234567")]
    key_id: String,
}

/// What the import did with one key.
#[derive(ToSchema)]
#[schema(as = ImportStatus)]
#[allow(dead_code)] // Only documents `vault_core::keys::ImportStatus`.
pub(crate) enum ImportStatusDoc {
    #[schema(rename = "imported")]
    Imported,
    #[schema(rename = "exists")]
    Exists,
}

/// `POST /v1/keys/import`: imports existing keys by their text or their SHA-256.
///
/// Idempotent: a key already in the vault (by its text's hash) is reported `exists` and left
/// as it is. Every key is checked before any is written; the first bad one fails the request
/// (400, naming `keys[i]`) and nothing is written. Each imported key is committed with its
/// `key.import` audit entry; the answer comes once all are durable.
#[utoipa::path(
    post,
    path = "/v1/keys/import",
    tag = "keys",
    request_body = ImportRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each key's id and whether it was imported now or existed", body = ImportAnswer),
        (status = 400, description = "Bad body (`invalid_body`, naming the field), more than 1,000 keys, neither or both of `key` and `sha256`, a value out of range (`invalid_input`, naming the key)", body = ErrorBody),
        (status = 401, description = "No or invalid vault token", body = ErrorBody),
        (status = 403, description = "The token is not a manager or admin token", body = ErrorBody),
        (status = 413, description = "Body over 2 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn import_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(Object(request)): ApiJson<Object<ImportRequest>>,
) -> Result<ApiJson<ImportAnswer>, ApiError> {
    if request.keys.is_empty() || request.keys.len() > MAX_IMPORT {
        return Err(ApiError::invalid_input(format!(
            "keys: 1 to {MAX_IMPORT} keys a request (got {})",
            request.keys.len()
        )));
    }
    let keys = request
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            k.into_import().map_err(|mut e| {
                e.message = format!("keys[{i}]: {}", e.message);
                e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vault = state.vault().clone();
    let ctx = caller.context();
    let handle = tokio::runtime::Handle::current();
    // Checking and staging a thousand keys (hashes, store reads, encryption) is work for the
    // blocking pool; the commits themselves are awaited there as group commits.
    let results = blocking(move || handle.block_on(vault.import_keys(&ctx, keys))).await?;
    let imported = results
        .iter()
        .filter(|r| r.status == ImportStatus::Imported)
        .count();
    Ok(ApiJson(ImportAnswer {
        exists: results.len() - imported,
        imported,
        results,
    }))
}

impl ImportKeyRequest {
    fn into_import(self) -> Result<ImportKey, ApiError> {
        let secret = match (self.key, self.sha256) {
            (Some(text), None) => ImportedSecret::Text(text),
            (None, Some(hex)) => ImportedSecret::sha256_hex(hex.expose_secret())?,
            _ => {
                return Err(ApiError::invalid_input(
                    "give the key's text (key) or its SHA-256 (sha256), one of the two",
                ));
            }
        };
        let create = CreateKeyRequest {
            owner: self.owner,
            name: self.name,
            scopes: self.scopes,
            meta: self.meta,
            expires_at: self.expires_at,
            ttl_seconds: self.ttl_seconds,
            enabled: self.enabled,
            ratelimit: self.ratelimit,
            credits: self.credits,
            recoverable: self.recoverable,
        };
        Ok(ImportKey {
            secret,
            new: create.into_new_key()?,
        })
    }
}
