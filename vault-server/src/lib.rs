//! vault-server: keyvault's HTTP face, an axum [`Router`] over vault-core.
//!
//! No business logic lives here: every route translates a request into a vault-core call and its
//! result into a status and a JSON body.
//!
//! # Layout
//! - [`app`]: the router, given the shared [`AppState`].
//! - [`serve`]: runs the router on a listener until a shutdown future completes.
//! - `sys`: health and seal status.

use std::future::Future;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use vault_core::Vault;

mod sys;

/// What every handler shares: the open vault.
#[derive(Debug, Clone)]
pub struct AppState {
    vault: Vault,
}

impl AppState {
    /// State over an open vault (sealed or not).
    pub fn new(vault: Vault) -> AppState {
        AppState { vault }
    }
}

/// The router with every route.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/sys/health", get(sys::health).head(sys::health))
        .route("/v1/sys/seal-status", get(sys::seal_status))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
