//! The web console under `/ui/` (DESIGN section 11): server-rendered pages over the same
//! vault-core calls the API routes make, for people who would rather look than read.
//!
//! # Security
//! - Sign-in takes a vault token and opens a server-side session (`session`): the browser
//!   holds a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS); the
//!   token stays on the server and never reaches a page. Each request checks the token again,
//!   so a revoked token ends its sessions. A refused sign-in is summed and audited exactly as
//!   a refused API token is (`AppState::refused_tokens`).
//! - Every request but GET and HEAD must come from the console's origin (`guard`), and every
//!   form carries a CSRF token: the session's ([`Posted`]), or before sign-in (the sign-in and
//!   unseal forms) a random one that must equal a cookie set with the form ([`PreForm`]).
//! - Every answer carries a strict CSP and framing, referrer and sniffing headers (`guard`).
//! - Every action calls vault-core as the signed-in token ([`Signed::context`], the API's own
//!   [`Caller`] context), audited with `details.via = "ui"`; what a role may do is
//!   [`Role::allows`], the API's rule.
//!
//! # Layout
//! `session` the sessions; `guard` the headers and origin check; `request` what a console request carries (its session, its form and CSRF
//! token, cookies); `layout` the page frame and navigation; `assets` the stylesheet and the vendored htmx; `live` the overview's
//! polled fragments (seal state, open signals, verifies per minute); `chart` the usage charts (SVG and a table); `signin` sign-in and sign-out; `overview` the
//! overview and the unseal form, with its `nodes` table and `disk_line`; `keys` the key list and create; `key` one key, rotate and
//! revoke; `signals` the signals page; `audit` the audit log, its
//! downloads, checkpoint and public key; `tokens` vault tokens (admin).

mod assets;
mod audit;
mod chart;
mod disk_line;
mod guard;
mod key;
mod keys;
mod layout;
mod live;
mod nodes;
mod overview;
mod request;
mod session;
mod signals;
mod signin;
mod tokens;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};

use self::session::Sessions;
use crate::AppState;

/// The console's routes, or none when `[ui] enabled = false`.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if !state.config().ui_enabled {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(|| async { request::see_other("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/unseal", post(overview::unseal))
        .route("/ui/sign-in", get(signin::form).post(signin::submit))
        .route("/ui/sign-out", post(signin::sign_out))
        .route("/ui/keys", get(keys::list))
        .route("/ui/keys/new", get(keys::new_form).post(keys::create))
        .route("/ui/keys/{id}", get(key::page))
        .route("/ui/keys/{id}/rotate", post(key::rotate))
        .route(
            "/ui/keys/{id}/revoke",
            get(key::confirm_revoke).post(key::revoke),
        )
        .route("/ui/signals", get(signals::page))
        .route("/ui/audit", get(audit::page))
        .route("/ui/audit/export", get(audit::export))
        .route("/ui/tokens", get(tokens::page).post(tokens::create))
        .route("/ui/tokens/{id}/revoke", post(tokens::revoke))
        .route("/ui/live/seal", get(live::seal))
        .route("/ui/live/signals", get(live::signals))
        .route("/ui/live/verifies", get(live::verifies))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::HTMX_PATH, get(assets::htmx))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(from_fn(guard::same_origin))
        .layer(from_fn(guard::headers))
        .layer(Extension(Arc::new(Sessions::default())))
}

async fn not_found() -> Response {
    layout::error_page(
        StatusCode::NOT_FOUND,
        "There is no such page in the console.",
    )
}
