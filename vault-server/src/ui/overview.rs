//! The overview: the seal state (with the unseal form while sealed, which needs no session, as
//! `POST /v1/sys/unseal` needs no token), the cluster's nodes (or "single node"), the vault's
//! verifies per minute over the last six hours (the roles that may read usage), the open
//! signals (managers and auditors), the disk line with its alarm, and the audit tree's size and
//! last checkpoint (auditors). The seal state, the chart and the signals refresh themselves
//! where scripts run (`live`).

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use vault_core::kdf::Passphrase;
use vault_core::shamir::Share;
use vault_core::tokens::Role;
use vault_core::{Actor, SealStatus};

use super::request::{MaybeSigned, PreForm, Signed, VIA, form_nonce};
use super::{disk_line, layout, live, nodes};
use crate::AppState;
use crate::error::{ApiError, blocking};

/// `GET /ui/`.
pub(crate) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    MaybeSigned(signed): MaybeSigned,
) -> Response {
    let vault = state.vault();
    if vault.is_sealed() {
        return sealed_page(&state, &headers, StatusCode::OK, None);
    }
    let signed = match signed {
        Ok(signed) => signed,
        Err(why) => return super::request::ended(why, state.tls()),
    };
    match unsealed_body(&state, &signed).await {
        Ok(body) => Html(layout::page("Overview", Some(&signed.live), "/ui/", body).into_string())
            .into_response(),
        Err(e) => layout::api_error(e),
    }
}

async fn unsealed_body(state: &AppState, signed: &Signed) -> Result<Markup, ApiError> {
    let vault = state.vault().clone();
    let reading = vault.clone();
    let nodes = blocking(move || nodes::cluster_nodes(&reading)).await?;
    // A vault opened with usage summaries off (`VaultOptions::usage`, for an embedding
    // process) has neither: the page says so rather than failing.
    let (verifies, signals) = if vault.usage_enabled() {
        (
            live::verifies_per_minute(state, signed).await?,
            live::open_signals(state, signed).await?,
        )
    } else {
        (None, None)
    };
    let disk = state.disk();
    let config = state.config();
    let checkpoint = if signed.may(Role::Auditor) {
        let v = vault.clone();
        Some(blocking(move || v.audit_checkpoint()).await?)
    } else {
        None
    };
    Ok(html! {
        section aria-labelledby="seal" {
            h2 id="seal" { "Seal" }
            (live::seal_state(&vault.seal_status()))
        }
        section aria-labelledby="cluster" {
            h2 id="cluster" { "Cluster nodes" }
            (nodes::table(nodes.as_deref()))
        }
        @if !vault.usage_enabled() {
            section aria-labelledby="usage-off" {
                h2 id="usage-off" { "Verifies and signals" }
                p { "This vault was opened with usage summaries off, so it keeps no verifies per minute and raises no signals." }
            }
        }
        @if let Some(report) = &verifies {
            section aria-labelledby="verifies" {
                h2 id="verifies" { "Verifies" }
                (live::verifies_live(report))
            }
        }
        @if let Some(signals) = &signals {
            section aria-labelledby="signals" {
                h2 id="signals" { "Open signals (last 24 hours)" }
                p { a href="/ui/signals" { "All signals, by owner and window" } }
                (live::signals_live(signals, signed))
            }
        }
        section aria-labelledby="disk" {
            h2 id="disk" { "Disk" }
            (disk_line::line(
                disk.last().as_ref(),
                disk.alarm(),
                config.disk_high_water_percent,
                config.disk_check_interval.as_secs(),
            ))
        }
        @if let Some(cp) = &checkpoint {
            section aria-labelledby="audit" {
                h2 id="audit" { "Audit log" }
                dl class="record" {
                    dt { "Entries (tree size)" } dd { (cp.checkpoint.size) }
                    dt { "Log origin" } dd { code { (cp.checkpoint.origin) } }
                }
                h3 { "Last signed checkpoint" }
                pre class="panel" { (cp.note) }
            }
        }
    })
}

/// The sealed overview: the seal status and the form for the unseal method.
fn sealed_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    message: Option<&str>,
) -> Response {
    let seal: SealStatus = state.vault().seal_status();
    let (nonce, set) = form_nonce(headers, state.tls());
    let shares = seal.method != "passphrase";
    let body = html! {
        section aria-labelledby="seal" {
            h2 id="seal" { "Seal" }
            (live::seal_state(&seal))
            @if let Some(message) = message {
                p class="notice" role="alert" { (message) }
            }
            form class="stack" method="post" action="/ui/unseal" {
                input type="hidden" name="csrf" value=(nonce.hex());
                @if shares {
                    label for="share" { "One unseal share" span class="hint" { "kvs1_…, one holder at a time" } }
                    input id="share" name="share" type="password" autocomplete="off" required;
                } @else {
                    label for="passphrase" { "Unseal passphrase" }
                    input id="passphrase" name="passphrase" type="password" autocomplete="off" required;
                }
                button type="submit" { "Unseal" }
            }
        }
    };
    let page = layout::page("Overview", None, "/ui/", body).into_string();
    let mut response = (status, Html(page)).into_response();
    if let Some(set) = set {
        response.headers_mut().append(SET_COOKIE, set);
    }
    response
}

/// The unseal form's fields: one of them, by the vault's method.
#[derive(Deserialize)]
pub(crate) struct UnsealForm {
    passphrase: Option<SecretString>,
    share: Option<SecretString>,
}

/// `POST /ui/unseal`: the passphrase or one share, through the calls `POST /v1/sys/unseal`
/// makes, with the same delay after a failure.
pub(crate) async fn unseal(
    State(state): State<AppState>,
    headers: HeaderMap,
    PreForm { origin, form }: PreForm<UnsealForm>,
) -> Response {
    let vault = state.vault().clone();
    if !vault.is_sealed() {
        return super::request::see_other("/ui/");
    }
    let ctx = origin.context(Actor::Anonymous).with_via(VIA);
    let outcome = match (form.passphrase, form.share) {
        (Some(p), None) => {
            let passphrase = Passphrase::new(p.expose_secret());
            blocking(move || vault.unseal_passphrase(&ctx, &passphrase)).await
        }
        (None, Some(s)) => match Share::parse(s.expose_secret().trim()) {
            Ok(share) => blocking(move || vault.submit_share(&ctx, share).map(|_| ())).await,
            Err(e) => Err(vault_core::Error::from(e).into()),
        },
        _ => Err(ApiError::invalid_input("give the passphrase or one share")),
    };
    match outcome {
        Ok(()) => super::request::see_other("/ui/"),
        Err(e) => {
            let delay = state.config().unseal_failure_delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            sealed_page(&state, &headers, e.status, Some(&e.message))
        }
    }
}
