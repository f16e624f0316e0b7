//! The one error type every handler and guard answers with: a status and a JSON body
//! `{"error": {"code", "message"}}`.
//!
//! `code` is a stable, machine-readable word; `message` is for people and says what to change.
//! A 500 never says what went wrong inside: the cause is logged with `tracing::error!` under the
//! request's id, and the body only says "internal error".

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: status, stable code and a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, such as `sealed` or `invalid_body`.
    pub code: &'static str,
    /// What went wrong, for people. Never a secret, never internal detail.
    pub message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_input`: the request is well formed but asks for something impossible.
    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 400 `invalid_body`: the body is not JSON of the expected shape.
    pub fn invalid_body(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    }

    /// 400 `invalid_query`: a query parameter that is malformed or out of range.
    pub fn invalid_query(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    /// 404 `not_found` for a path no route serves.
    pub fn no_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// 405 `method_not_allowed`; the router adds the `allow` header.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not answer that method (see the allow header)",
        )
    }

    /// 413 `body_too_large`.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent with content-type application/json",
        )
    }

    /// 503 `overloaded`: too many requests in flight.
    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry shortly",
        )
    }

    /// 503 `timeout`: the request took longer than the server allows.
    pub fn timeout() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long and was abandoned",
        )
    }

    /// 500 `internal`, after logging `cause` (which never reaches the caller).
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Every error answer's body.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `sealed`, `invalid_body` or `wrong_credential`.
    #[schema(example = "invalid_body")]
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl From<vault_core::Error> for ApiError {
    /// Each variant maps to a status on purpose, and the code is the error's own
    /// ([`vault_core::Error::code`], the word the audit log records too). Anything that a caller
    /// cannot have caused is answered without its detail: a 500 whose body says nothing about
    /// why, or a 503 that says only which part of the host failed.
    fn from(e: vault_core::Error) -> ApiError {
        use vault_core::Error as E;
        let status = match &e {
            E::Sealed | E::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            E::WrongCredential
            | E::Share(_)
            | E::WrongMethod { .. }
            | E::InvalidInput(_)
            | E::Kdf(_)
            | E::NoCeremony(_) => StatusCode::BAD_REQUEST,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            // Sizes only: the operator must see them to act (restore the newest copy).
            E::RolledBack(_) => StatusCode::CONFLICT,
            E::Archived { .. } => StatusCode::GONE,
            E::Unauthorized => StatusCode::UNAUTHORIZED,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::AuditUnavailable(_) => {
                // Fail closed, and say so; the detail (paths, OS errors) stays in the log.
                tracing::error!(error = %e, "audit log unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    "the audit log is unavailable, so nothing was done",
                );
            }
            E::Storage(s) if s.is_conflict() => {
                // A cluster node: another node changed a row this request had read (a credit
                // spent there first), still so after the node's own retries (a verify's, for up
                // to 2 s; a key change's 4); nothing was applied, and asking again reads the
                // new row.
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "another node changed the same record at the same moment; nothing was done: try again",
                );
            }
            E::Storage(_) | E::Io { .. } => {
                // A full disk or a failing device: the host's problem, which may pass; the
                // detail (paths, OS errors) stays in the log. One code for both over HTTP:
                // the audit log's finer `storage` and `io` would tell a client nothing it can
                // act on.
                tracing::error!(error = %e, "storage unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the vault's storage failed (a full disk, or etcd out of reach?), so nothing was done",
                );
            }
            E::NotInitialized(_) => {
                // The message names the data directory, which is the operator's business.
                return ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    e.code(),
                    "the vault is not initialised",
                );
            }
            // The server runs over an open vault, so none of these can come from a request: each
            // is the host's problem, and its text (paths, OS errors) stays in the log.
            E::NotAVault(_)
            | E::AlreadyInitialized(_)
            | E::UnsupportedFormat { .. }
            | E::InUse(_)
            | E::Corrupt(_)
            | E::Record(_)
            | E::Backup(_) => return ApiError::internal(&e),
            // `Error` is non-exhaustive: a variant added later is internal until mapped here.
            _ => return ApiError::internal(&e),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<vault_core::ceremony::FieldError> for ApiError {
    /// Fields of a ceremony call that do not go together: 400 `invalid_input`, the message
    /// naming the field.
    fn from(e: vault_core::ceremony::FieldError) -> ApiError {
        ApiError::invalid_input(e.to_string())
    }
}

/// Runs a vault-core call that may block (a group commit, Argon2) on the blocking pool, so
/// the async workers keep serving other requests.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> vault_core::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

#[cfg(test)]
mod tests {
    use vault_core::storage::{Conflict, StorageError};

    use super::*;

    /// What a cluster node answers when etcd or the other nodes fail it: each a 503 or 409 with
    /// its own code, never a 500.
    #[test]
    fn cluster_failures_map_to_their_status_and_code() {
        let cases = [
            (
                vault_core::Error::ClusterUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
            ),
            (
                vault_core::Error::Storage(StorageError::other("etcd: deadline passed")),
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
            ),
            (
                vault_core::Error::Storage(StorageError::other(Conflict)),
                StatusCode::CONFLICT,
                "conflict",
            ),
        ];
        for (error, status, code) in cases {
            let answer = ApiError::from(error);
            assert_eq!((answer.status, answer.code), (status, code), "{answer}");
            assert!(!answer.message.contains("deadline"), "{answer}");
        }
    }
}
