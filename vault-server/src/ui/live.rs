//! The overview's live parts: the seal state (with unseal progress while sealed), the open
//! signals and the chart of verifies per minute, rendered into the page by the server and then
//! polled every few seconds by the vendored htmx (`hx-get` of the fragment routes here).
//! Without JavaScript the page reads the same, as of its loading.
//!
//! `GET /ui/live/signals` needs the session and a role that may read signals, as
//! `GET /v1/signals` does; `GET /ui/live/verifies` one that may read usage, as `GET /v1/usage`
//! does. `GET /ui/live/seal` needs the session while the vault is unsealed;
//! while sealed no session can exist (tokens cannot be checked) and it answers what
//! `GET /v1/sys/seal-status` answers anyone, so the unseal progress moves as each holder
//! submits a share. A fragment that can no longer be shown (the session ended, the vault
//! unsealed under a sealed page) says so with a link, under status 286, which tells htmx to
//! stop polling.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vault_core::SealStatus;
use vault_core::tokens::Role;
use vault_core::usage::{MinuteReport, Signal};

use super::request::{MaybeSigned, Signed};
use super::signals;
use super::{chart, layout};
use crate::AppState;
use crate::error::{ApiError, blocking};

/// How far back the overview looks for signals.
const SIGNALS_SINCE: Duration = Duration::from_secs(24 * 60 * 60);
/// Most signals listed on the overview.
const SIGNALS_SHOWN: usize = 20;
/// The polling of the seal state: often, since holders submit shares one after another.
const SEAL_EVERY: &str = "every 3s";
/// The polling of the signals.
const SIGNALS_EVERY: &str = "every 5s";
/// The polling of the verifies per minute: a few times a minute, the chart's resolution.
const VERIFIES_EVERY: &str = "every 10s";
/// The roles that may read usage, as `GET /v1/usage` lets in (`routes::usage`).
pub(crate) const USAGE_ROLES: &[Role] = &[Role::Manager, Role::Auditor];
/// The title of the chart of verifies per minute.
const VERIFIES_TITLE: &str = "Verifies per minute, last 6 hours";

/// The status htmx reads as "swap this, then stop polling".
fn stop_polling() -> StatusCode {
    // 286 is a valid status code, in the range `from_u16` accepts.
    StatusCode::from_u16(286).expect("286 is a valid status code")
}

/// The seal state, live: the wrapper that polls, around the state now. The poll names the
/// state shown, and is answered 204 (nothing to swap) while it holds, so that a screen reader
/// hears the live region only when the state changes; a new state comes back whole, with the
/// wrapper (`outerHTML`) naming it for the next poll.
pub(crate) fn seal_state(seal: &SealStatus) -> Markup {
    html! {
        div id="seal-state" hx-get={ "/ui/live/seal?shown=" (shown(seal)) } hx-trigger=(SEAL_EVERY)
            hx-swap="outerHTML" aria-live="polite" {
            (seal_inner(seal))
        }
    }
}

/// The name of a seal state in the poll's query.
fn shown(seal: &SealStatus) -> String {
    if seal.sealed {
        format!("sealed-{}", seal.progress)
    } else {
        "unsealed".to_owned()
    }
}

/// Query of `GET /ui/live/seal`.
#[derive(Deserialize)]
pub(crate) struct SealQuery {
    #[serde(default)]
    shown: String,
}

fn seal_inner(seal: &SealStatus) -> Markup {
    html! {
        @if seal.sealed {
            p { "The vault is " strong { "sealed" } ": nothing verifies until it is unsealed." }
            @if seal.method != "passphrase" {
                p { "Shares submitted: " strong { (seal.progress) " of " (seal.threshold) } " needed (" (seal.shares) " made)." }
                progress value=(seal.progress) max=(seal.threshold) aria-label="Unseal progress" { (seal.progress) " of " (seal.threshold) }
            }
        } @else {
            p { "The vault is " strong { "unsealed" } ": keys verify and can be managed." }
        }
    }
}

/// `GET /ui/live/seal`.
pub(crate) async fn seal(
    State(state): State<AppState>,
    MaybeSigned(signed): MaybeSigned,
    query: Result<Query<SealQuery>, QueryRejection>,
) -> Response {
    let seal = state.vault().seal_status();
    if !seal.sealed && signed.is_err() {
        return ended(
            "The vault is unsealed, or your session has ended: ",
            "sign in",
            "/ui/sign-in",
        );
    }
    if query.is_ok_and(|Query(q)| q.shown == shown(&seal)) {
        return StatusCode::NO_CONTENT.into_response();
    }
    Html(seal_state(&seal).into_string()).into_response()
}

/// A fragment that ends the polling, with a link to go on.
fn ended(message: &str, link: &str, to: &str) -> Response {
    let body = html! { p class="notice" { (message) a href=(to) { (link) } "." } };
    (stop_polling(), Html(body.into_string())).into_response()
}

/// The open signals of the last 24 hours, for the roles that may read signals; `None` for
/// the others.
pub(crate) async fn open_signals(
    state: &AppState,
    signed: &Signed,
) -> Result<Option<Vec<Signal>>, ApiError> {
    if !layout::SIGNALS_ROLES.iter().any(|r| signed.may(*r)) {
        return Ok(None);
    }
    let vault = state.vault().clone();
    let since = vault
        .clock()
        .now_ms()
        .saturating_sub(SIGNALS_SINCE.as_millis() as u64);
    Ok(Some(blocking(move || vault.signals(None, since)).await?))
}

/// The open signals, live: the wrapper that polls, around the list now.
pub(crate) fn signals_live(signals: &[Signal], signed: &Signed) -> Markup {
    html! {
        div id="live-signals" hx-get="/ui/live/signals" hx-trigger=(SIGNALS_EVERY) hx-swap="innerHTML" {
            (signals_inner(signals, signed.may(Role::Manager)))
        }
    }
}

fn signals_inner(signals: &[Signal], may_open_keys: bool) -> Markup {
    html! {
        @if signals.is_empty() {
            p { "None." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { (signals.len()) " signals, newest first" }
                    thead { tr {
                        th scope="col" { "Kind" } th scope="col" { "Key" }
                        th scope="col" { "Owner" } th scope="col" class="num" { "Count" }
                        th scope="col" { "Last seen" }
                    } }
                    tbody {
                        @for s in signals.iter().rev().take(SIGNALS_SHOWN) {
                            tr {
                                td { (<&'static str>::from(s.kind)) }
                                td { (signals::key_cell(s.key_id.as_deref(), may_open_keys)) }
                                td { (s.owner.as_deref().unwrap_or("")) }
                                td class="num" { (s.count) }
                                td { (layout::time(s.last_at_ms / 1000)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/live/signals`.
pub(crate) async fn signals(
    State(state): State<AppState>,
    MaybeSigned(signed): MaybeSigned,
) -> Response {
    let Ok(signed) = signed else {
        return session_ended();
    };
    let may_open_keys = signed.may(Role::Manager);
    fragment(
        open_signals(&state, &signed).await,
        "Signals need a manager or auditor token.",
        |signals| signals_inner(&signals, may_open_keys),
    )
}

/// A polled fragment's answer once the session ended (or the vault sealed): polling stops.
fn session_ended() -> Response {
    ended(
        "Your session has ended or the vault is sealed: ",
        "reload the overview",
        "/ui/",
    )
}

/// A polled fragment's answer: what `read` gave, drawn by `render`; 403 with `forbidden` for
/// a role that may not read it (`None`); the error page otherwise.
fn fragment<T>(
    read: Result<Option<T>, ApiError>,
    forbidden: &str,
    render: impl FnOnce(T) -> Markup,
) -> Response {
    match read {
        Ok(Some(value)) => Html(render(value).into_string()).into_response(),
        Ok(None) => layout::api_error(ApiError::new(StatusCode::FORBIDDEN, "forbidden", forbidden)),
        Err(e) => layout::api_error(e),
    }
}

/// The vault's verifies per minute, for the roles that may read usage; `None` for the others.
pub(crate) async fn verifies_per_minute(
    state: &AppState,
    signed: &Signed,
) -> Result<Option<MinuteReport>, ApiError> {
    if !USAGE_ROLES.iter().any(|r| signed.may(*r)) {
        return Ok(None);
    }
    let vault = state.vault().clone();
    Ok(Some(blocking(move || vault.verifies_per_minute()).await?))
}

/// The verifies per minute, live: the wrapper that polls, around the chart now. Not a live
/// region: a chart that changes every few seconds would keep interrupting a screen reader,
/// whose user reads the table when they choose.
pub(crate) fn verifies_live(report: &MinuteReport) -> Markup {
    html! {
        div id="live-verifies" hx-get="/ui/live/verifies" hx-trigger=(VERIFIES_EVERY) hx-swap="innerHTML" {
            (verifies_inner(report))
        }
    }
}

/// The chart with the range it covers, the oldest minute on the left.
fn verifies_inner(report: &MinuteReport) -> Markup {
    html! {
        p { "Every verify of the vault, by code, from " (layout::time(report.from)) " (left) to "
            (layout::time(report.to)) " (right), one bar a minute." }
        (chart::minutes(report, VERIFIES_TITLE))
    }
}

/// `GET /ui/live/verifies`.
pub(crate) async fn verifies(
    State(state): State<AppState>,
    MaybeSigned(signed): MaybeSigned,
) -> Response {
    let Ok(signed) = signed else {
        return session_ended();
    };
    fragment(
        verifies_per_minute(&state, &signed).await,
        "Usage needs a manager or auditor token.",
        |report| verifies_inner(&report),
    )
}
