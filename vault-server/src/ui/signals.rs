//! The signals page: suspicious activity over the last hour, day or week, by owner, with each
//! signal's evidence (its clients and the audit entries it was raised from). What
//! `GET /v1/signals` answers, for the roles that route lets in (manager, auditor).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vault_core::tokens::Role;

use super::layout;
use super::request::Signed;
use crate::AppState;
use crate::error::{ApiError, blocking};

/// The windows offered, in hours.
const WINDOWS: [(u64, &str); 3] = [
    (1, "last hour"),
    (24, "last 24 hours"),
    (168, "last 7 days"),
];

/// The page's filters.
#[derive(Default, Deserialize)]
pub(crate) struct SignalsQuery {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    hours: Option<u64>,
}

/// `GET /ui/signals`.
pub(crate) async fn page(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<SignalsQuery>, QueryRejection>,
) -> Response {
    if !layout::SIGNALS_ROLES.iter().any(|r| signed.may(*r)) {
        return layout::api_error(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Signals need a manager or auditor token.",
        ));
    }
    let Ok(Query(q)) = query else {
        return layout::api_error(ApiError::invalid_query("owner and hours (1, 24 or 168)"));
    };
    let hours = q.hours.unwrap_or(24);
    if !WINDOWS.iter().any(|(h, _)| *h == hours) {
        return layout::api_error(ApiError::invalid_query("hours: 1, 24 or 168"));
    }
    let vault = state.vault().clone();
    let since = vault.clock().now_ms().saturating_sub(hours * 3_600_000);
    let owner = (!q.owner.is_empty()).then(|| q.owner.clone());
    let signals = match blocking(move || vault.signals(owner.as_deref(), since)).await {
        Ok(signals) => signals,
        Err(e) => return layout::api_error(e),
    };
    let may_open_keys = signed.may(Role::Manager);
    let body = html! {
        form class="filters" method="get" action="/ui/signals" role="search" {
            label for="owner" { "Owner" input id="owner" name="owner" value=(q.owner) maxlength="128"; }
            label for="hours" {
                "Window"
                select id="hours" name="hours" {
                    @for (h, name) in WINDOWS {
                        option value=(h) selected[h == hours] { (name) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @if signals.is_empty() {
            p { "No signals in this window." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { (signals.len()) " signals, newest first, with their evidence" }
                    thead { tr {
                        th scope="col" { "Kind" } th scope="col" { "Key" } th scope="col" { "Owner" }
                        th scope="col" class="num" { "Count" } th scope="col" { "First" }
                        th scope="col" { "Last" } th scope="col" { "Clients" }
                        th scope="col" { "Audit entries" }
                    } }
                    tbody {
                        @for s in signals.iter().rev() {
                            tr {
                                td { (<&'static str>::from(s.kind)) }
                                td { (key_cell(s.key_id.as_deref(), may_open_keys)) }
                                td { (s.owner.as_deref().unwrap_or("")) }
                                td class="num" { (s.count) }
                                td { (layout::time(s.first_at_ms / 1000)) }
                                td { (layout::time(s.last_at_ms / 1000)) }
                                td { (s.clients.join(", ")) @if s.clients_truncated { " …" } }
                                td {
                                    @match (s.first_seq, s.last_seq) {
                                        (Some(a), Some(b)) if a != b => { "#" (a) " to #" (b) },
                                        (Some(a), _) => { "#" (a) },
                                        _ => "",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Html(layout::page("Signals", Some(&signed.live), "/ui/signals", body).into_string())
        .into_response()
}

/// A signal's key: a link to the key's page for a role that may open keys, else its id as text.
pub(super) fn key_cell(key_id: Option<&str>, may_open_keys: bool) -> Markup {
    html! {
        @match (key_id, may_open_keys) {
            (Some(id), true) => a href={ "/ui/keys/" (id) } { code { (id) } },
            (Some(id), false) => code { (id) },
            (None, _) => "",
        }
    }
}
