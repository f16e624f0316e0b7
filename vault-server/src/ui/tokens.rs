//! The tokens page (admin): every vault token, a form to make one (its text shown once, in the
//! answer), and revoke. The calls `POST /v1/sys/tokens`, `GET /v1/sys/tokens` and
//! `POST /v1/sys/tokens/{id}/revoke` make, with the signed-in token as creator, so vault-core's
//! rule holds here too: no token of a role its creator lacks, none that outlives it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use vault_core::tokens::Role;

use super::layout;
use super::request::{Posted, Signed};
use crate::AppState;
use crate::error::blocking;
use crate::json::key_id;

/// The roles a token may be made with, in the form's order.
const ROLES: [Role; 5] = [
    Role::Verifier,
    Role::Manager,
    Role::Auditor,
    Role::Operator,
    Role::Admin,
];

/// `GET /ui/tokens`.
pub(crate) async fn page(State(state): State<AppState>, signed: Signed) -> Response {
    if let Err(refused) = signed.require(Role::Admin) {
        return layout::api_error(refused);
    }
    match listing(&state, &signed).await {
        Ok(body) => {
            Html(layout::page("Tokens", Some(&signed.live), "/ui/tokens", body).into_string())
                .into_response()
        }
        Err(refused) => refused,
    }
}

async fn listing(state: &AppState, signed: &Signed) -> Result<Markup, Response> {
    let vault = state.vault().clone();
    let tokens = blocking(move || vault.list_tokens())
        .await
        .map_err(layout::api_error)?;
    let csrf = signed.live.csrf.hex();
    Ok(html! {
        section aria-labelledby="new" {
            h2 id="new" { "New token" }
            form class="stack" method="post" action="/ui/tokens" {
                input type="hidden" name="csrf" value=(csrf);
                label for="role" { "Role" }
                select id="role" name="role" {
                    @for role in ROLES { option value=(role.as_str()) { (role.as_str()) } }
                }
                label for="name" { "Name" span class="hint" { "Who or what will hold it" } }
                input id="name" name="name" maxlength="256";
                label for="ttl_seconds" { "Lifetime (seconds)" span class="hint" { "Empty: as long as yours" } }
                input id="ttl_seconds" name="ttl_seconds" type="number" min="1" inputmode="numeric";
                button type="submit" { "Create token" }
            }
        }
        section aria-labelledby="all" {
            h2 id="all" { "All tokens" }
            div class="table-wrap" {
                table {
                    caption { (tokens.len()) " tokens, in id order" }
                    thead { tr {
                        th scope="col" { "Token id" } th scope="col" { "Role" } th scope="col" { "Name" }
                        th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "State" }
                    } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { code { (t.token_id) } }
                                td { (t.role.as_str()) }
                                td { (t.name) }
                                td { (layout::time(t.created_at)) }
                                td { (t.expires_at.map_or_else(|| "never".to_owned(), layout::time)) }
                                td {
                                    @if let Some(at) = t.revoked_at {
                                        span class="status-revoked" { "revoked " (layout::time(at)) }
                                    } @else {
                                        form method="post" action={ "/ui/tokens/" (t.token_id) "/revoke" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button type="submit" class="danger"
                                                aria-label={ "Revoke token " (t.token_id) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The new-token form's fields.
#[derive(Deserialize)]
pub(crate) struct NewToken {
    role: Role,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ttl_seconds: String,
}

/// `POST /ui/tokens`: the new token, shown once in this answer.
pub(crate) async fn create(
    State(state): State<AppState>,
    Posted { signed, form }: Posted<NewToken>,
) -> Response {
    if let Err(refused) = signed.require(Role::Admin) {
        return layout::api_error(refused);
    }
    let ttl = match form.ttl_seconds.trim() {
        "" => None,
        t => match t.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return layout::error_page(
                    StatusCode::BAD_REQUEST,
                    "The lifetime must be a whole number of seconds.",
                );
            }
        },
    };
    let vault = state.vault().clone();
    let ctx = signed.context();
    let creator = signed.live.token.clone();
    let issued = match blocking(move || {
        vault.create_token(&ctx, Some(&creator), form.role, &form.name, ttl)
    })
    .await
    {
        Ok(issued) => issued,
        Err(e) => return layout::api_error(e),
    };
    let text = issued.token.expose_secret_text();
    let body = html! {
        div class="panel" role="status" {
            p { strong { "Copy this token now." } " It is shown once: no page will show it again." }
            p class="secret" id="new-key" { (text.expose_secret()) }
        }
        p { "Token " code { (issued.info.token_id) } ", " (issued.info.role.as_str()) ". "
            a href="/ui/tokens" { "Back to the tokens" } }
    };
    let page = layout::page("Token created", Some(&signed.live), "/ui/tokens", body);
    (StatusCode::CREATED, Html(page.into_string())).into_response()
}

/// `POST /ui/tokens/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { signed, .. }: Posted<serde::de::IgnoredAny>,
) -> Response {
    if let Err(refused) = signed.require(Role::Admin) {
        return layout::api_error(refused);
    }
    let id = match key_id(&id) {
        Ok(id) => id,
        Err(e) => return layout::api_error(e),
    };
    let vault = state.vault().clone();
    let ctx = signed.context();
    match blocking(move || vault.revoke_token(&ctx, &id)).await {
        Ok(_) => super::request::see_other("/ui/tokens"),
        Err(e) => layout::api_error(e),
    }
}
