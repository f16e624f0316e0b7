//! vault-server: keyvault's HTTP face, an axum [`Router`] over vault-core.
//!
//! No business logic lives here: every route translates a request into a vault-core call and its
//! result into a status and a JSON body. Every error, the guards' included, answers
//! `{"error": {"code", "message"}}` (see [`ApiError`]); a 500 says nothing internal.
//!
//! # Layout
//! - [`app`]: the router, given the shared [`AppState`]; [`openapi`] its OpenAPI 3.1 document.
//! - [`serve`]: runs the router on a listener until a shutdown future completes;
//!   [`serve_router`] does the same for any router (the witness's).
//! - [`witness_app`]: a witness's router (C2SP `tlog-witness`: `add-checkpoint` and the
//!   monitor retrieval mechanism) over a [`vault_core::witness::Witness`]; no vault involved.
//! - `error`: [`ApiError`], and the mapping of every [`vault_core::Error`] to a status.
//! - `json`: the extractors [`ApiJson`], [`ApiPath`], [`ApiQuery`], which refuse with JSON.
//! - `limits`: [`ServerConfig`], [`Limits`] and the guards that enforce them.
//! - `request`: the [`RequestId`], the request's [`Origin`] (for audit contexts) and the one log
//!   line per request.
//! - `auth`: [`require`] (the token and role check of a route group), [`Caller`], [`blocking`].
//! - `routes`: the handlers, one file per area:
//!   - `routes::sys`: health, seal status and unseal (no token);
//!   - `routes::operator`: seal, rotate, rewrap, rotate-audit-key and backup (operator);
//!   - `routes::ceremony`: the rekey ceremony (operator) and the generate-root ceremony (no
//!     token: the unseal credential is its authority);
//!   - `routes::tokens`: vault tokens (admin);
//!   - `routes::keys`: key management (manager; reveal admin);
//!   - `routes::verify`: verify and forward-auth (verifier);
//!   - `routes::usage`: usage summaries and suspicious-activity signals (manager);
//!   - `routes::audit`: export and tail, checkpoints, proofs, public key, digests (auditor);
//!   - `routes::archive`: the audit archive, written then dropped (operator);
//!   - `routes::witness`: the witness's own router ([`witness_app`]).
//! - `idempotency`: `Idempotency-Key` answers; `throttle`: failed verifies per address, and the
//!   per-minute sums of refused verifies and refused tokens that the audit log records.
//! - `stream`: bodies streamed from a blocking writer (export, archive, backup).
//! - `metrics`: Prometheus `GET /metrics`; `openapi`: `GET /openapi.json`; both open on a
//!   loopback or Unix-socket listener, else behind any valid token (`auth::require_off_local`).
//! - `body`, `rfc3339`, `schemas`: optional JSON bodies, RFC 3339 times, documentation types
//!   (and the body types they share with requests).
//!
//! # Adding routes, and where authorisation goes
//! A handler carries `#[utoipa::path(...)]` and is registered in its file's `routes` with
//! `.routes(routes!(handler))`, which both serves and documents it. Routes that need a vault
//! token go in their own `OpenApiRouter` per role, merged into `api_routes` after
//! `.route_layer(from_fn(|req, next| require(Role::X, req, next)))`, so a route cannot be added
//! to a group without the group's check; the handler takes the [`Caller`] it leaves, whose
//! `context()` is the audit context of the request. The `sys` routes and generate-root
//! (`routes::ceremony::open_routes`) need no token and act as [`vault_core::Actor::Anonymous`].

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::middleware::{from_fn, from_fn_with_state};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::Vault;

mod auth;
mod body;
mod disk;
mod error;
mod idempotency;
mod json;
mod limits;
mod metrics;
mod openapi;
mod request;
mod rfc3339;
mod routes;
mod schemas;
mod serve;
mod stream;
mod throttle;

pub use auth::{Caller, X_FORWARDED_FOR, blocking, require};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use json::{ApiJson, ApiPath, ApiQuery};
pub use limits::{Limits, ServerConfig};
pub use request::{Origin, RequestId, X_REQUEST_ID};
pub use routes::witness::witness_app;
pub use serve::{Listener, serve, serve_router, tls_acceptor};

/// What every handler shares: the open vault and the server's settings.
#[derive(Debug, Clone)]
pub struct AppState {
    vault: Vault,
    config: ServerConfig,
    /// Turns true when [`serve`] stops accepting: long-lived answers (a followed audit export)
    /// end so that the drain can finish.
    closing: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// The disk watch's last reading and alarm (see `disk`).
    disk: std::sync::Arc<disk::DiskWatch>,
    /// Failed verifies by end-user address, and the refusals not yet audited (see `throttle`).
    throttle: std::sync::Arc<throttle::Throttle>,
    /// Failed token authentications not yet audited, by peer address (see `throttle`).
    refused_tokens: std::sync::Arc<throttle::Sums>,
    /// Whether the router is served only on a loopback address or a Unix socket (see
    /// [`AppState::with_local_listener`]).
    local_listener: bool,
}

impl AppState {
    /// State over an open vault (sealed or not), with the default [`ServerConfig`]. Signals the
    /// vault raises from now on are counted in `keyvault_usage_signals_total`.
    pub fn new(vault: Vault) -> AppState {
        metrics::count_signals(&vault);
        AppState {
            vault,
            config: ServerConfig::default(),
            closing: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
            disk: std::sync::Arc::default(),
            throttle: std::sync::Arc::default(),
            refused_tokens: std::sync::Arc::new(throttle::Sums::new(throttle::Refused::Tokens)),
            local_listener: false,
        }
    }

    /// The same state with other settings (the usage thresholds go to the vault).
    pub fn with_config(self, config: ServerConfig) -> AppState {
        self.vault.set_usage_thresholds(config.usage);
        AppState { config, ..self }
    }

    /// The same state, saying whether the router is served only on a loopback address or a
    /// Unix socket: there `GET /metrics` and `GET /openapi.json` need no token; anywhere else
    /// they need a valid token of any role. [`serve`] sets it from its listener. The default,
    /// `false`, asks for a token, which is right for a router served some other way.
    pub fn with_local_listener(self, local: bool) -> AppState {
        AppState {
            local_listener: local,
            ..self
        }
    }

    /// Whether the router is served only on a loopback address or a Unix socket.
    pub(crate) fn local_listener(&self) -> bool {
        self.local_listener
    }

    /// A receiver that turns true when the server stops accepting.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The disk watch.
    pub(crate) fn disk(&self) -> &std::sync::Arc<disk::DiskWatch> {
        &self.disk
    }

    /// The verify throttle.
    pub(crate) fn throttle(&self) -> &throttle::Throttle {
        &self.throttle
    }

    /// The failed token authentications not yet audited.
    pub(crate) fn refused_tokens(&self) -> &throttle::Sums {
        &self.refused_tokens
    }

    /// Tells long-lived answers that the server is stopping.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}

/// Every route, documented: the one list both [`app`] and [`openapi`] are made from.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::sys::health))
        .routes(routes!(routes::sys::seal_status))
        .routes(routes!(routes::sys::unseal))
        .merge(routes::ceremony::open_routes())
        .merge(openapi::routes())
        .merge(routes::tokens::routes())
        .merge(routes::operator::routes())
        .merge(routes::ceremony::operator_routes())
        .merge(routes::audit::routes())
        .merge(routes::archive::routes())
        .merge(metrics::routes())
        .merge(routes::keys::routes())
        .merge(routes::verify::routes())
        .merge(routes::usage::routes())
}

/// The OpenAPI 3.1 document of every route, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish(api_routes().split_for_parts().1)
}

/// The router with every route and every guard (see [`Limits`]); unknown paths answer 404 and
/// unknown methods 405, both in JSON.
pub fn app(state: AppState) -> Router {
    let (router, doc) = api_routes().split_for_parts();
    let doc = finish(doc);
    let limits = state.config.limits;
    // Outermost first. Every layer is applied to each route separately (axum's `Router::layer`),
    // so the concurrency cap is the *global* one: a per-route semaphore would multiply it.
    let guards = ServiceBuilder::new()
        .layer(from_fn(request::track))
        .layer(HandleErrorLayer::new(limits::overloaded))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency.max(1)))
        .layer(from_fn_with_state(limits.request_timeout, limits::timeout))
        .layer(from_fn_with_state(limits.body_bytes, limits::limit_body))
        .layer(limits::extractor_body_limit(&limits));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(openapi::Document::new(&doc)))
        .layer(axum::Extension(state.clone()))
        .layer(guards)
        .with_state(state)
}

/// What utoipa's document needs before generators and linters take it as it is:
///
/// - axum's wildcard `/v1/auth/{*path}` becomes `/v1/auth/{path}` (OpenAPI has no wildcard),
///   its parameter named `path` and said to hold the rest of the path, slashes included;
/// - one handler serving several methods (forward-auth) gets one operation id from utoipa, but
///   OpenAPI wants each operation's id unique: such ids get the method (and `_path` for the
///   wildcard route) appended;
/// - a HEAD operation answers no body, so its responses promise none;
/// - an operation that needs no token says so (`security: []`), as linters ask.
fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::Parameter;
    if let Some(item) = doc.paths.paths.remove(routes::verify::AUTH_WILDCARD) {
        let mut item = item;
        each(&mut item, |_, op| {
            for param in op.parameters.iter_mut().flatten() {
                if let utoipa::openapi::RefOr::T(param) = param {
                    rename_wildcard(param);
                }
            }
        });
        doc.paths
            .paths
            .insert(routes::verify::AUTH_WILDCARD_DOC.to_owned(), item);
    }
    fn rename_wildcard(param: &mut Parameter) {
        if param.name == "*path" {
            param.name = "path".to_owned();
            param.description = Some(
                "The rest of the original request's path, slashes included (Envoy appends it); \
                 ignored"
                    .to_owned(),
            );
        }
    }
    let mut doc = unique_operation_ids(doc);
    for item in doc.paths.paths.values_mut() {
        if let Some(head) = item.head.as_mut() {
            for response in head.responses.responses.values_mut() {
                if let utoipa::openapi::RefOr::T(response) = response {
                    response.content.clear();
                }
            }
        }
        each(item, |_, op| {
            if op.security.is_none() {
                op.security = Some(Vec::new());
            }
        });
    }
    doc
}

/// Calls `f` with each operation of `item` and its method.
fn each(
    item: &mut utoipa::openapi::PathItem,
    mut f: impl FnMut(&'static str, &mut utoipa::openapi::path::Operation),
) {
    let methods = [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ];
    for (method, op) in methods {
        if let Some(op) = op {
            f(method, op);
        }
    }
}

/// One handler serving several methods (forward-auth) gets one operation id from utoipa, but
/// OpenAPI wants each operation's id unique: such ids get the method (and `_path` for the
/// wildcard route) appended.
fn unique_operation_ids(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in doc.paths.paths.values_mut() {
        each(item, |_, op| {
            if let Some(id) = &op.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        });
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let suffix = if path.contains('{') { "_path" } else { "" };
        each(item, |method, op| {
            if let Some(id) = op.operation_id.as_ref().filter(|id| seen[*id] > 1) {
                op.operation_id = Some(format!("{id}{suffix}_{method}"));
            }
        });
    }
    doc
}

async fn not_found() -> ApiError {
    ApiError::no_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
