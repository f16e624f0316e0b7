//! One key's page: its record, its usage per hour or day (a chart and a table), its signals with their evidence, rotate with a grace period,
//! and revoke after a confirmation page. Each action is the vault-core call its API route
//! makes (`Vault::rotate_key`, `Vault::revoke_key`), as the signed-in token.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use secrecy::ExposeSecret;
use serde::Deserialize;
use vault_core::apikey::KeyId;
use vault_core::keys::{KeyInfo, Refill, RefillInterval};
use vault_core::tokens::Role;
use vault_core::usage::{Granularity, UsageQuery};

use super::chart;
use super::keys::status_cell;
use super::layout;
use super::request::{Posted, Signed};
use crate::AppState;
use crate::error::{ApiError, blocking};
use crate::json::key_id;
use crate::routes::keys::MAX_GRACE_SECONDS;

/// The key of the path, and its record, for a manager.
async fn load(state: &AppState, signed: &Signed, id: &str) -> Result<(KeyId, KeyInfo), ApiError> {
    signed.require(Role::Manager)?;
    let id = key_id(id)?;
    let vault = state.vault().clone();
    let info = blocking(move || vault.show_key(&id)).await?;
    Ok((id, info))
}

/// The key page's query: the usage chart's bucket.
#[derive(Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    usage: Option<String>,
}

/// `GET /ui/keys/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let (id, info) = match load(&state, &signed, &id).await {
        Ok(found) => found,
        Err(refused) => return layout::api_error(refused),
    };
    let (bucket, buckets, usage_title) = match query.ok().and_then(|Query(q)| q.usage).as_deref() {
        None | Some("hour") => (Granularity::Hour, 24, "Verifies per hour, last 24 hours"),
        Some("day") => (Granularity::Day, 30, "Verifies per day, last 30 days"),
        Some(_) => {
            return layout::api_error(ApiError::invalid_query("usage: hour or day"));
        }
    };
    let vault = state.vault().clone();
    let to = bucket.floor(vault.clock().now()) + bucket.seconds();
    let usage_query = UsageQuery {
        bucket,
        from: to.saturating_sub(buckets * bucket.seconds()),
        to,
    };
    let (signals, usage) =
        match blocking(move || Ok((vault.key_signals(&id)?, vault.key_usage(&id, &usage_query)?)))
            .await
        {
            Ok(found) => found,
            Err(e) => return layout::api_error(e),
        };
    let live = info.revoked_at.is_none();
    let body = html! {
        (record(&info))
        section aria-labelledby="usage" {
            h2 id="usage" { "Usage" }
            p {
                "Per " a href={ "/ui/keys/" (info.key_id) "?usage=hour" } { "hour" }
                " or per " a href={ "/ui/keys/" (info.key_id) "?usage=day" } { "day" } "."
            }
            (chart::usage(&usage, usage_title))
        }
        section aria-labelledby="signals" {
            h2 id="signals" { "Signals" }
            @if signals.is_empty() {
                p { "None." }
            } @else {
                div class="table-wrap" {
                    table {
                        caption { "Suspicious activity seen for this key, with its evidence" }
                        thead { tr {
                            th scope="col" { "Kind" } th scope="col" class="num" { "Count" }
                            th scope="col" { "First" } th scope="col" { "Last" }
                            th scope="col" { "Clients" } th scope="col" { "Audit entries" }
                        } }
                        tbody {
                            @for s in &signals {
                                tr {
                                    td { (<&'static str>::from(s.kind)) }
                                    td class="num" { (s.count) }
                                    td { (layout::time(s.first_at_ms / 1000)) }
                                    td { (layout::time(s.last_at_ms / 1000)) }
                                    td {
                                        (s.clients.join(", "))
                                        @if s.clients_truncated { " …" }
                                    }
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
        }
        @if live {
            section aria-labelledby="rotate" {
                h2 id="rotate" { "Rotate" }
                form class="stack" method="post" action={ "/ui/keys/" (info.key_id) "/rotate" } {
                    input type="hidden" name="csrf" value=(signed.live.csrf.hex());
                    label for="grace_seconds" {
                        "Grace period (seconds)"
                        span class="hint" { "How long the old secret keeps working: 0 ends it now; at most 30 days, never past the key's expiry" }
                    }
                    input id="grace_seconds" name="grace_seconds" type="number" min="0"
                        max=(MAX_GRACE_SECONDS) value="0" inputmode="numeric" required;
                    button type="submit" { "Rotate the secret" }
                }
            }
            section aria-labelledby="revoke" {
                h2 id="revoke" { "Revoke" }
                p { "Revoking is for good: the next verify of this key fails." }
                p { a href={ "/ui/keys/" (info.key_id) "/revoke" } { "Revoke this key…" } }
            }
        }
    };
    let title = format!("Key {}", info.key_id);
    Html(layout::page(&title, Some(&signed.live), "", body).into_string()).into_response()
}

fn record(info: &KeyInfo) -> maud::Markup {
    let opt = |t: Option<u64>| t.map_or_else(|| "never".to_owned(), layout::time);
    html! {
        dl class="record" {
            dt { "Key id" } dd { code { (info.key_id) } }
            dt { "Owner" } dd { (info.owner) }
            dt { "Name" } dd { (info.name) }
            dt { "Status" } dd { (status_cell(info.status)) }
            dt { "Scopes" } dd { (info.scopes.join(", ")) }
            dt { "Created" } dd { (layout::time(info.created_at)) }
            dt { "Updated" } dd { (layout::time(info.updated_at)) }
            dt { "Expires" } dd { (opt(info.expires_at)) }
            @if let Some(at) = info.revoked_at {
                dt { "Revoked" } dd { (layout::time(at)) }
            }
            @if let Some(at) = info.previous_secret_expires_at {
                dt { "Previous secret ends" } dd { (layout::time(at)) }
            }
            dt { "Rate limit" } dd {
                @match &info.ratelimit {
                    Some(r) => { (r.limit) " per " (r.period_seconds) " s" },
                    None => "none",
                }
            }
            dt { "Credits" } dd {
                @match info.credits { Some(c) => (c), None => "unlimited" }
            }
            dt { "Refill" } dd {
                @match &info.refill {
                    Some(r) => { (r.amount) " credits " (refill_when(r)) },
                    None => "none",
                }
            }
            @if let Some(at) = info.refilled_at {
                dt { "Last refilled" } dd { (layout::time(at)) }
            }
            dt { "Imported" } dd { @if info.imported { "yes" } @else { "no" } }
            dt { "Recoverable" } dd { @if info.recoverable { "yes" } @else { "no" } }
            @if !info.meta.is_empty() {
                dt { "Meta" } dd { code { (serde_json::Value::Object(info.meta.clone())) } }
            }
        }
    }
}

/// The rotate form's fields.
#[derive(Deserialize)]
pub(crate) struct RotateForm {
    grace_seconds: String,
}

/// `POST /ui/keys/{id}/rotate`: the new secret, shown once in this answer.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { signed, form }: Posted<RotateForm>,
) -> Response {
    let (id, _) = match load(&state, &signed, &id).await {
        Ok(found) => found,
        Err(refused) => return layout::api_error(refused),
    };
    let grace = match form.grace_seconds.trim().parse::<u64>() {
        Ok(g) if g <= MAX_GRACE_SECONDS => g,
        _ => {
            return layout::api_error(ApiError::invalid_input(format!(
                "the grace period must be 0 to {MAX_GRACE_SECONDS} seconds"
            )));
        }
    };
    let vault = state.vault().clone();
    let ctx = signed.context();
    let issued = match blocking(move || vault.rotate_key(&ctx, &id, grace)).await {
        Ok(issued) => issued,
        Err(e) => return layout::api_error(e),
    };
    let text = issued.key.expose_secret_text();
    let body = html! {
        div class="panel" role="status" {
            p { strong { "Copy the new key now." } " It is shown once: no page will show it again." }
            p class="secret" id="new-key" { (text.expose_secret()) }
            @if let Some(at) = issued.info.previous_secret_expires_at {
                p { "The old secret keeps working until " (layout::time(at)) "." }
            } @else {
                p { "The old secret no longer works." }
            }
        }
        p { a href={ "/ui/keys/" (issued.info.key_id) } { "Back to the key" } }
    };
    let page = layout::page("Key rotated", Some(&signed.live), "", body);
    Html(page.into_string()).into_response()
}

/// `GET /ui/keys/{id}/revoke`: the confirmation step.
pub(crate) async fn confirm_revoke(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let (_, info) = match load(&state, &signed, &id).await {
        Ok(found) => found,
        Err(refused) => return layout::api_error(refused),
    };
    let body = html! {
        (record(&info))
        form class="stack" method="post" action={ "/ui/keys/" (info.key_id) "/revoke" } {
            input type="hidden" name="csrf" value=(signed.live.csrf.hex());
            p { strong { "Revoke key " code { (info.key_id) } " of " (info.owner) "?" } " This cannot be undone." }
            label for="confirm" { "Type the owner, " code { (info.owner) } ", to confirm" }
            input id="confirm" name="confirm" required autocomplete="off";
            button type="submit" class="danger" { "Revoke" }
            a href={ "/ui/keys/" (info.key_id) } { "Cancel" }
        }
    };
    Html(layout::page("Revoke key", Some(&signed.live), "", body).into_string()).into_response()
}

/// The revoke form's fields.
#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    confirm: String,
}

/// `POST /ui/keys/{id}/revoke`: revokes once the owner is typed back.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { signed, form }: Posted<RevokeForm>,
) -> Response {
    let (id, info) = match load(&state, &signed, &id).await {
        Ok(found) => found,
        Err(refused) => return layout::api_error(refused),
    };
    if form.confirm.trim() != info.owner {
        return layout::error_page(
            StatusCode::BAD_REQUEST,
            "The confirmation did not match the key's owner: nothing was revoked.",
        );
    }
    let vault = state.vault().clone();
    let ctx = signed.context();
    match blocking(move || vault.revoke_key(&ctx, &id)).await {
        Ok(info) => super::request::see_other(&format!("/ui/keys/{}", info.key_id)),
        Err(e) => layout::api_error(e),
    }
}

/// When a refill comes, in words: every day, or on a day of every month (UTC).
fn refill_when(refill: &Refill) -> String {
    match refill.interval {
        RefillInterval::Daily => "every day at 00:00 UTC".to_owned(),
        RefillInterval::Monthly => format!(
            "on day {} of every month at 00:00 UTC (a shorter month's last day)",
            refill.day.unwrap_or(1)
        ),
    }
}
