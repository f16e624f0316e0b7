//! `/v1/sys/tokens`: create, list and revoke vault tokens; `admin` only.
//!
//! The calling token is the creator of a new one, so vault-core refuses (403) a role the caller
//! does not hold or a lifetime past the caller's own expiry. A token's text is in the create
//! answer only; no other answer or log line carries it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::apikey::KeyId;
use vault_core::tokens::{Role, TokenInfo};

use crate::AppState;
use crate::auth::{Caller, require};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::secret_json;
use crate::json::{ApiJson, ApiPath};

/// The token routes, behind the `admin` check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .route_layer(from_fn(|req, next| require(Role::Admin, req, next)))
}

/// A token's role. `admin` includes every other; `manager` includes `verifier`.
// Read from a string through `TryFrom` rather than serde's enum support, so that a value of the
// wrong type is named as such (serde_json reports a non-string for a unit enum as a syntax error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum RoleName {
    /// Verify keys and forward-auth.
    Verifier,
    /// Manage keys and read usage; verify too.
    Manager,
    /// Export and prove the audit log.
    Auditor,
    /// Seal, rotate, rewrap, rekey, generate-root.
    Operator,
    /// Everything, tokens included.
    Admin,
}

impl TryFrom<String> for RoleName {
    type Error = &'static str;

    fn try_from(name: String) -> Result<RoleName, Self::Error> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .map(RoleName::from)
            .ok_or("unknown role: expected verifier, manager, auditor, operator or admin")
    }
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Role {
        match r {
            RoleName::Verifier => Role::Verifier,
            RoleName::Manager => Role::Manager,
            RoleName::Auditor => Role::Auditor,
            RoleName::Operator => Role::Operator,
            RoleName::Admin => Role::Admin,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> RoleName {
        match r {
            Role::Verifier => RoleName::Verifier,
            Role::Manager => RoleName::Manager,
            Role::Auditor => RoleName::Auditor,
            Role::Operator => RoleName::Operator,
            Role::Admin => RoleName::Admin,
        }
    }
}

/// Body of `POST /v1/sys/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The new token's role: one the calling token holds.
    role: RoleName,
    /// A label (at most 256 bytes, no control characters); empty if left out.
    #[serde(default)]
    name: String,
    /// Lifetime in seconds (at least 1); none means no expiry, which a token that expires
    /// itself cannot give.
    #[schema(minimum = 1)]
    ttl_seconds: Option<u64>,
}

/// A vault token as listed: never its secret. Times are Unix seconds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenBody {
    /// The token's public id (24 hex digits).
    #[schema(example = "0123456789abcdef01234567")]
    token_id: String,
    /// Its role.
    role: RoleName,
    /// Its label.
    name: String,
    /// Unix seconds.
    created_at: u64,
    /// Unix seconds, if it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    /// Unix seconds, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<u64>,
    /// The id of the token that made it (none for a root token).
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

impl From<TokenInfo> for TokenBody {
    fn from(t: TokenInfo) -> TokenBody {
        TokenBody {
            token_id: t.token_id.to_string(),
            role: t.role.into(),
            name: t.name,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            created_by: t.created_by.map(|id| id.to_string()),
        }
    }
}

/// Answer of `POST /v1/sys/tokens`: the token's text, shown this once, and its record.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken<'a> {
    /// The token (`kvt_...`): send it as `Authorization: Bearer <token>`. Shown once.
    #[schema(format = Password)]
    token: &'a str,
    #[serde(flatten)]
    info: TokenBody,
}

/// Answer of `GET /v1/sys/tokens`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Every token, revoked and expired ones included, in id order.
    tokens: Vec<TokenBody>,
}

/// `POST /v1/sys/tokens`: make a token.
#[utoipa::path(
    post,
    path = "/v1/sys/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The new token, its text shown once", body = CreatedToken),
        (status = 400, description = "Bad body (`invalid_body`) or a bad name or ttl (`invalid_input`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin token, or the new token would hold a role the caller does not or outlive it (`forbidden`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<Response, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let creator = caller.token;
    let issued = blocking(move || {
        vault.create_token(
            &ctx,
            Some(&creator),
            request.role.into(),
            &request.name,
            request.ttl_seconds,
        )
    })
    .await?;
    let text = issued.token.expose_secret_text();
    let body = CreatedToken {
        token: text.expose_secret(),
        info: issued.info.into(),
    };
    Ok(secret_json(&body).response(StatusCode::CREATED))
}

/// `GET /v1/sys/tokens`: every token, never a secret.
#[utoipa::path(
    get,
    path = "/v1/sys/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every token", body = TokenList),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<ApiJson<TokenList>, ApiError> {
    let vault = state.vault().clone();
    // Reads and decrypts every token record: off the async workers.
    let tokens = blocking(move || vault.list_tokens()).await?;
    Ok(ApiJson(TokenList {
        tokens: tokens.into_iter().map(TokenBody::from).collect(),
    }))
}

/// `POST /v1/sys/tokens/{id}/revoke`: revoke a token at once (its next request is 401).
/// Revoking a revoked token answers its record again.
#[utoipa::path(
    post,
    path = "/v1/sys/tokens/{id}/revoke",
    tag = "tokens",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The token's id (24 hex digits)")),
    responses(
        (status = 200, description = "The revoked token's record", body = TokenBody),
        (status = 400, description = "Not a token id (`invalid_path`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<TokenBody>, ApiError> {
    let id = KeyId::parse_hex(&id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("invalid path parameter: {e}"),
        )
    })?;
    let vault = state.vault().clone();
    let ctx = caller.context();
    let info = blocking(move || vault.revoke_token(&ctx, &id)).await?;
    Ok(ApiJson(info.into()))
}
