//! `GET /metrics`: the Prometheus text exposition of what `crate::metrics` records.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Scrape;

/// The Prometheus content type of the text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: no token on a loopback or Unix-socket listener, else any valid token;
/// answers while sealed where it needs no token.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    crate::metrics::install();
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .route_layer(axum::middleware::from_fn(crate::auth::require_off_local))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "No or invalid vault token, on a listener that is not loopback or a Unix socket (there any valid token, of any role, is needed)", body = ErrorBody),
        (status = 503, description = "Another metrics recorder is installed in this process (`metrics_unavailable`), overloaded or timed out; or sealed, on a listener that needs a token (`sealed`: no token can be checked)", body = ErrorBody),
    ),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let vault = state.vault();
    let rendered = crate::metrics::render(|| Scrape {
        sealed: vault.is_sealed(),
        queue_depth: vault.audit_queue_depth(),
        audit_stopped: vault.audit_stopped(),
        record_rollbacks: vault.record_rollbacks(),
        audit_size: vault.audit_size(),
        disk_alarm: state.disk().alarm(),
        disk: state.disk().last(),
    });
    let Some(text) = rendered else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "the host program installed its own metrics recorder; scrape it instead",
        )
        .into_response();
    };
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}
