//! Sign-in with a vault token, and sign-out.
//!
//! A token that does not check out is answered as the API answers a bad bearer token: the
//! refusal goes into its peer address's per-minute sum, which the audit log records as one
//! `token.authenticate` entry with the first string's keyed digest (`AppState::refused_tokens`),
//! never the string. A sign-in that works opens a session; the token is held there only.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use vault_core::Actor;

use super::layout;
use super::request::{FORM_COOKIE, Posted, PreForm, SESSION_COOKIE, VIA, cookie, form_nonce};
use super::session::Sessions;
use crate::AppState;

/// Why the sign-in page is shown, when a session just ended.
#[derive(Deserialize)]
pub(crate) struct Why {
    ended: Option<String>,
}

/// `GET /ui/sign-in`.
pub(crate) async fn form(
    State(state): State<AppState>,
    why: Result<Query<Why>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if state.vault().is_sealed() {
        return super::request::see_other("/ui/");
    }
    // A query that does not parse only loses the notice.
    let ended = why.ok().and_then(|Query(why)| why.ended);
    let notice = match ended.as_deref() {
        Some("expired") => Some("Your session ended after a time without use. Sign in again."),
        Some("token") => Some("The token of your session was revoked or has expired."),
        _ => None,
    };
    render(&state, &headers, StatusCode::OK, notice)
}

fn render(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    notice: Option<&str>,
) -> Response {
    let (nonce, set) = form_nonce(headers, state.tls());
    let body = html! {
        @if let Some(notice) = notice {
            p class="notice" role="alert" { (notice) }
        }
        form class="stack" method="post" action="/ui/sign-in" {
            input type="hidden" name="csrf" value=(nonce.hex());
            label for="token" {
                "Vault token"
                span class="hint" { "A kvt_ token; it stays on the server, in your session." }
            }
            input id="token" name="token" type="password" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
    };
    let page = layout::page("Sign in", None, "/ui/sign-in", body).into_string();
    let mut response = (status, Html(page)).into_response();
    if let Some(set) = set {
        response.headers_mut().append(SET_COOKIE, set);
    }
    response
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub(crate) struct SignIn {
    token: SecretString,
}

/// `POST /ui/sign-in`.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    PreForm { origin, form }: PreForm<SignIn>,
) -> Response {
    let vault = state.vault();
    if vault.is_sealed() {
        return super::request::see_other("/ui/");
    }
    let presented = form.token.expose_secret().trim();
    match vault.check_token(presented) {
        Ok(Some(_)) => {
            let token = SecretString::from(presented);
            let (id, _) = sessions.open(token, vault.clock().now_ms());
            let mut response = super::request::see_other("/ui/");
            let h = response.headers_mut();
            h.append(SET_COOKIE, cookie(SESSION_COOKIE, &id.hex(), state.tls()));
            h.append(SET_COOKIE, cookie(FORM_COOKIE, "", state.tls()));
            response
        }
        Ok(None) => {
            state.refused_tokens().add(
                origin.peer.map(|p| p.ip()),
                &origin.context(Actor::Anonymous).with_via(VIA),
                || vault.refused_token_digest(presented).ok(),
                std::time::Instant::now(),
            );
            render(
                &state,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("That token is not valid (unknown, revoked, expired or mistyped)."),
            )
        }
        Err(e) => layout::api_error(e.into()),
    }
}

/// `POST /ui/sign-out`: ends the session; its token is wiped.
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Posted { signed, .. }: Posted<serde::de::IgnoredAny>,
) -> Response {
    sessions.close(&signed.live.id);
    let mut response = super::request::see_other("/ui/sign-in");
    response
        .headers_mut()
        .append(SET_COOKIE, cookie(SESSION_COOKIE, "", state.tls()));
    response
}
