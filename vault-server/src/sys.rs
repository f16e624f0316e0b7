//! `/v1/sys/*`: health and seal status, which answer sealed or not and need no token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::AppState;

/// `GET|HEAD /v1/sys/health`: 200 unsealed, 503 sealed. (501, not initialised, cannot happen
/// here: the server runs only over an initialised vault.)
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let sealed = state.vault.is_sealed();
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
#[derive(Debug, Serialize)]
pub struct Health {
    initialized: bool,
    sealed: bool,
}

/// `GET /v1/sys/seal-status`.
pub async fn seal_status(State(state): State<AppState>) -> Json<SealStatusBody> {
    let s = state.vault.seal_status();
    Json(SealStatusBody {
        initialized: true,
        sealed: s.sealed,
        method: s.method,
        threshold: s.threshold,
        shares: s.shares,
        progress: s.progress,
    })
}

/// Body of `seal-status`.
#[derive(Debug, Serialize)]
pub struct SealStatusBody {
    initialized: bool,
    sealed: bool,
    method: &'static str,
    threshold: u8,
    shares: u8,
    progress: u8,
}
