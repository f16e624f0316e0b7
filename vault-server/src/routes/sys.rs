//! `/v1/sys/*`: health, seal status and unseal, which answer sealed or not and need no token.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault_core::kdf::Passphrase;
use vault_core::shamir::Share;
use vault_core::{Actor, SealStatus, Vault};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::json::ApiJson;
use crate::request::Origin;

/// `GET|HEAD /v1/sys/health`: 200 unsealed, 503 sealed. (501, not initialised, cannot happen
/// here: the server runs only over an initialised vault.)
#[utoipa::path(
    method(get, head),
    path = "/v1/sys/health",
    tag = "sys",
    responses(
        (status = 200, description = "Initialised and unsealed", body = Health),
        (status = 503, description = "Sealed (this body), or overloaded or timed out (an error body)", body = Health),
    ),
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let sealed = state.vault().is_sealed();
    let status = if sealed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(Health {
            initialized: true,
            sealed,
        }),
    )
}

/// Body of `health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    initialized: bool,
    sealed: bool,
}

/// `GET /v1/sys/seal-status`.
#[utoipa::path(
    get,
    path = "/v1/sys/seal-status",
    tag = "sys",
    responses(
        (status = 200, description = "Seal state and unseal progress", body = SealStatusBody),
        (status = 503, description = "Overloaded or timed out", body = ErrorBody),
    ),
)]
pub async fn seal_status(State(state): State<AppState>) -> Json<SealStatusBody> {
    Json(state.vault().seal_status().into())
}

/// Body of `seal-status`, and of `unseal`'s answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SealStatusBody {
    initialized: bool,
    sealed: bool,
    /// `passphrase` or `shares`.
    #[schema(value_type = String, example = "shares")]
    method: &'static str,
    /// Shares needed (1 for a passphrase).
    threshold: u8,
    /// Shares made (1 for a passphrase).
    shares: u8,
    /// Shares submitted so far while sealed.
    progress: u8,
}

impl From<SealStatus> for SealStatusBody {
    fn from(s: SealStatus) -> Self {
        SealStatusBody {
            initialized: true,
            sealed: s.sealed,
            method: s.method,
            threshold: s.threshold,
            shares: s.shares,
            progress: s.progress,
        }
    }
}

/// Body of `unseal`: `passphrase`, or `share`, or `reset` with `share`.
///
/// The secrets are held zeroizing from the moment they are parsed, and redacted in `Debug`.
/// Shortcut: a string with JSON escapes passes through serde_json's scratch buffer, which is
/// not wiped (an unescaped one is copied straight from the body, which is).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    /// The vault's passphrase.
    #[schema(value_type = Option<String>, format = Password)]
    passphrase: Option<SecretString>,
    /// One unseal share (`kvs1_...`): to submit, or, with `reset`, one of the shares submitted
    /// so far, given again to prove its holder is one of the submitters.
    #[schema(value_type = Option<String>, format = Password)]
    share: Option<SecretString>,
    /// `true`, with `share`: forget the shares submitted so far. Refused (403 `forbidden`,
    /// progress kept) unless `share` is one of them; a no-op when none have been submitted.
    reset: Option<bool>,
}

/// What an unseal request asks for, once its body is checked.
enum Attempt {
    Passphrase(Passphrase),
    Share(SecretString),
    /// Reset, proved by one of the submitted shares.
    Reset(SecretString),
}

impl UnsealRequest {
    fn into_attempt(self) -> Result<Attempt, ApiError> {
        match (self.passphrase, self.share, self.reset) {
            (Some(p), None, None) => Ok(Attempt::Passphrase(Passphrase::new(p.expose_secret()))),
            (None, Some(s), None) => Ok(Attempt::Share(s)),
            (None, Some(s), Some(true)) => Ok(Attempt::Reset(s)),
            (None, None, Some(true)) => Err(ApiError::invalid_input(
                "a reset needs `share`: one of the shares submitted so far, given again",
            )),
            (_, _, Some(false)) => Err(ApiError::invalid_input(
                "`reset` must be true (leave it out to submit a credential)",
            )),
            _ => Err(ApiError::invalid_input(
                "give exactly one of `passphrase` or `share`, or `reset` with `share`",
            )),
        }
    }
}

/// `POST /v1/sys/unseal`: submit the passphrase or one share, or reset share progress.
///
/// Argon2id and share combination run on the blocking pool. A failed attempt is answered only
/// after the configured delay, to slow guessing; nothing is ever locked out. While unsealed, any
/// well-formed request is answered at once with the status.
///
/// A reset (`{"reset": true, "share": ...}`) must give again one of the shares submitted so
/// far: the route needs no token, so without that proof anyone who can connect could undo the
/// share holders' progress at will. Any submitter can reset (say, after noticing a share was
/// submitted by mistake); nobody else can, and a refusal keeps the progress. With no progress a
/// reset is a no-op.
#[utoipa::path(
    post,
    path = "/v1/sys/unseal",
    tag = "sys",
    request_body = UnsealRequest,
    responses(
        (status = 200, description = "The seal status after the attempt", body = SealStatusBody),
        (status = 400, description = "Bad body (`invalid_body`, `invalid_input`, e.g. `reset` without `share`), wrong passphrase or shares (`wrong_credential`), unusable share (`invalid_share`), other method (`wrong_method`)", body = ErrorBody),
        (status = 403, description = "A reset whose `share` is not one of the shares submitted so far (`forbidden`); the progress is kept", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Overloaded, timed out, or the audit log unavailable (`audit_unavailable`)", body = ErrorBody),
    ),
)]
pub async fn unseal(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(request): ApiJson<UnsealRequest>,
) -> Result<Json<SealStatusBody>, ApiError> {
    let attempt = request.into_attempt()?;
    let vault = state.vault().clone();
    let ctx = origin.context(Actor::Anonymous);
    if !vault.is_sealed() {
        return Ok(Json(vault.seal_status().into()));
    }
    let outcome = match attempt {
        Attempt::Reset(text) => Share::parse(text.expose_secret())
            .map_err(vault_core::Error::from)
            .and_then(|share| vault.reset_unseal(&share))
            .map(|()| vault.seal_status())
            .map_err(ApiError::from),
        Attempt::Passphrase(passphrase) => {
            blocking(vault, move |v| {
                v.unseal_passphrase(&ctx, &passphrase)
                    .map(|()| v.seal_status())
            })
            .await
        }
        Attempt::Share(text) => match Share::parse(text.expose_secret()) {
            Ok(share) => blocking(vault, move |v| v.submit_share(&ctx, share)).await,
            Err(e) => Err(vault_core::Error::from(e).into()),
        },
    };
    match outcome {
        Ok(status) => Ok(Json(status.into())),
        Err(e) => {
            delay(state.config().unseal_failure_delay).await;
            Err(e)
        }
    }
}

/// Runs a vault call on the blocking pool (it may run Argon2id for a quarter second).
async fn blocking<T, F>(vault: Vault, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Vault) -> vault_core::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&vault)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(join) => Err(ApiError::internal(&join)),
    }
}

async fn delay(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}
