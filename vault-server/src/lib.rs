//! vault-server: keyvault's HTTP face, an axum [`Router`](axum::Router) over vault-core.
//!
//! No business logic lives here: every route translates a request into a vault-core call and its
//! result into a status and a JSON body. Every error, the guards' included, answers
//! `{"error": {"code", "message"}}` (see [`ApiError`]); a 500 says nothing internal.
//!
//! # Layout
//! - [`app`] (`router`): the router, given the shared [`AppState`] (`state`); [`openapi`] its
//!   OpenAPI 3.1 document, made from the same list of routes.
//! - [`serve`]: runs the router on a listener until a shutdown future completes;
//!   [`serve_router`] does the same for any router (the witness's).
//! - [`witness_app`]: a witness's router (C2SP `tlog-witness`: `add-checkpoint` and the
//!   monitor retrieval mechanism) over a [`vault_core::witness::Witness`]; no vault involved.
//! - `error`: [`ApiError`], the mapping of every [`vault_core::Error`] to a status, and
//!   [`blocking`] (a vault-core call on the blocking pool, its error mapped).
//! - `json`: the extractors [`ApiJson`], [`ApiPath`], [`ApiQuery`], which refuse with JSON.
//! - `limits`: [`ServerConfig`], [`Limits`] and the guards that enforce them.
//! - `request`: the [`RequestId`], the request's [`Origin`] (for audit contexts) and the one log
//!   line per request.
//! - `auth`: [`require`] (the token and role check of a route group), [`Caller`].
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
//! - `metrics`: the Prometheus recorder (`routes::metrics` answers `GET /metrics`); `openapi`:
//!   `GET /openapi.json`; both open on a
//!   loopback or Unix-socket listener, else behind any valid token (`auth::require_off_local`).
//! - `ui`: the web console under `/ui/` (sessions, pages, its own security headers).
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
mod router;
mod routes;
mod schemas;
mod serve;
mod state;
mod stream;
mod throttle;
mod ui;

pub use auth::{Caller, X_FORWARDED_FOR, require};
pub use error::{ApiError, ErrorBody, ErrorDetail, blocking};
pub use json::{ApiJson, ApiPath, ApiQuery};
pub use limits::{Limits, ServerConfig};
pub use request::{Origin, RequestId, X_REQUEST_ID};
pub use router::{app, openapi};
pub use routes::witness::witness_app;
pub use serve::{Listener, serve, serve_router, tls_acceptor};
pub use state::AppState;
