//! The audit page: the log's recent entries, newest first, with the export's filters (event,
//! owner, key, outcome, time range); export downloads of the same filters under the session; the current signed checkpoint and the audit public key. For the roles the API's
//! `/v1/audit/*` routes let in (`Role::Auditor`, by `Role::allows`).
//!
//! # Reading newest first without a full scan
//! The log is read forward only (its sparse offset index finds where a sequence number
//! starts), so a page reads backwards in blocks of [`BLOCK`] entries from its `before` cursor,
//! each block one sequential read, and stops after [`PAGE`] matches or [`BUDGET`] entries
//! examined, whichever comes first. A rare filter over a large log thus costs a bounded read per
//! page, and the page links to the next stretch ("older") from where it stopped.
//!
//! # Downloads
//! `GET /ui/audit/export` is the API's export (`routes::audit::start_export`, the same formats,
//! filters, audit entry and signed checkpoint), under the session rather than a bearer token,
//! which a browser cannot send. A GET because it changes nothing but the log, which records it;
//! `follow` is refused, since a download must end.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::header::CONTENT_DISPOSITION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use vault_core::Vault;
use vault_core::apikey::KeyId;
use vault_core::audit::Entry;
use vault_core::audit::export::ExportFilter;
use vault_core::tokens::Role;

use super::layout;
use super::request::Signed;
use crate::AppState;
use crate::error::{ApiError, blocking};
use crate::rfc3339::parse_time;
use crate::routes::audit::{ExportQuery, start_export};

/// Entries shown per page.
pub(crate) const PAGE: usize = 50;
/// Most entries one page examines before it stops and links to the next stretch.
pub(crate) const BUDGET: u64 = 5_000;
/// Entries read forward at a time while going backwards.
const BLOCK: u64 = 256;

/// The page's filters, as the form sends them (empty: no filter).
#[derive(Default, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    event: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Entries before this sequence number (the "older" link); none: from the newest.
    #[serde(default)]
    before: Option<u64>,
}

impl AuditQuery {
    /// The export's filter for these fields.
    fn filter(&self) -> Result<ExportFilter, ApiError> {
        let some = |t: &str| (!t.trim().is_empty()).then(|| t.trim().to_owned());
        let key_id = match some(&self.key) {
            None => None,
            Some(text) => Some(
                KeyId::parse_hex(&text)
                    .map_err(|e| ApiError::invalid_query(format!("key: {e}")))?
                    .to_string(),
            ),
        };
        let time = |name, text: &str| some(text).map(|t| parse_time(name, &t)).transpose();
        Ok(ExportFilter {
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            owner: some(&self.owner),
            key_id,
            event: some(&self.event),
            outcome: some(&self.outcome),
            last: None,
        })
    }

    /// The query string of a download of these filters in `format`: the non-empty fields the
    /// export takes.
    fn download(&self, format: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("event", &self.event),
            ("owner", &self.owner),
            ("key", &self.key),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                q.append_pair(name, value.trim());
            }
        }
        q.append_pair("format", format);
        format!("/ui/audit/export?{}", q.finish())
    }

    /// The page's own address with `before` set to `seq`.
    fn older(&self, seq: u64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("event", &self.event),
            ("owner", &self.owner),
            ("key", &self.key),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                q.append_pair(name, value.trim());
            }
        }
        q.append_pair("before", &seq.to_string());
        format!("/ui/audit?{}", q.finish())
    }
}

/// One page of entries, newest first.
pub(crate) struct Recent {
    pub(crate) entries: Vec<Entry>,
    /// Where the next page starts (entries before it), if any entry is left there.
    pub(crate) older: Option<u64>,
    /// Entries examined.
    pub(crate) examined: u64,
}

/// The newest entries before `before` that `filter` selects: at most [`PAGE`] of them,
/// examining at most [`BUDGET`] entries.
pub(crate) fn recent(
    vault: &Vault,
    filter: &ExportFilter,
    before: u64,
) -> vault_core::Result<Recent> {
    let first = vault.audit_first_live();
    let mut next = before.min(vault.audit_size());
    let stop = next.saturating_sub(BUDGET).max(first);
    let mut entries = Vec::new();
    let mut examined = 0;
    'blocks: while next > stop {
        let from = next.saturating_sub(BLOCK).max(stop);
        let mut block = Vec::new();
        for item in vault.audit_entries(from)? {
            let (seq, bytes) = item?;
            if seq >= next {
                break;
            }
            block.push((seq, bytes));
        }
        for (seq, bytes) in block.into_iter().rev() {
            next = seq;
            examined += 1;
            let entry = Entry::parse(&bytes)
                .map_err(|e| vault_core::Error::Corrupt(format!("audit entry {seq}: {e}")))?;
            if filter.matches(&entry) {
                entries.push(entry);
                if entries.len() == PAGE {
                    break 'blocks;
                }
            }
        }
        if next > from {
            // The block ended early: entries archived meanwhile, or fewer than asked.
            break;
        }
    }
    Ok(Recent {
        entries,
        older: (next > first).then_some(next),
        examined,
    })
}

/// A 403 page unless the signed-in role may read the audit log, as the API decides.
fn refused(signed: &Signed) -> Option<Response> {
    signed.require(Role::Auditor).err().map(layout::api_error)
}

/// `GET /ui/audit`.
pub(crate) async fn page(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    if let Some(no) = refused(&signed) {
        return no;
    }
    let Ok(Query(q)) = query else {
        return layout::api_error(ApiError::invalid_query(
            "event, owner, key, outcome, since, until, before (a sequence number)",
        ));
    };
    let filter = match q.filter() {
        Ok(filter) => filter,
        Err(e) => {
            let body = html! { p role="alert" { (e.message) } (filters(&q)) };
            let page = layout::page("Audit log", Some(&signed.live), "/ui/audit", body);
            return (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response();
        }
    };
    let vault = state.vault().clone();
    let before = q.before.unwrap_or(u64::MAX);
    let read = blocking(move || {
        let recent = recent(&vault, &filter, before)?;
        // Signs a checkpoint if the log grew, as `GET /v1/audit/checkpoint` does.
        let checkpoint = vault.audit_checkpoint()?;
        let keys = vault.audit_public_keys()?;
        Ok((recent, checkpoint, keys))
    })
    .await;
    let (recent, checkpoint, keys) = match read {
        Ok(read) => read,
        Err(e) => return layout::api_error(e),
    };
    let body = html! {
        (filters(&q))
        p class="downloads" {
            "Download these entries: "
            a href=(q.download("jsonl")) download { "JSON Lines (verifiable)" }
            " · "
            a href=(q.download("csv")) download { "CSV" }
        }
        (entries_table(&recent))
        @if let Some(seq) = recent.older {
            p { a href=(q.older(seq)) { "Older entries (before #" (seq) ")" } }
        }
        h2 { "Signed checkpoint" }
        p { "Tree size " (checkpoint.checkpoint.size) "." }
        pre id="checkpoint" { (checkpoint.note) }
        h2 { "Audit public key" }
        p { "Pin the key " code { "init" } " printed rather than trust this page; "
            code { "keyvault audit verify" } " follows rotations from it." }
        ul class="keys" {
            @for (i, key) in keys.iter().enumerate() {
                li {
                    code id=[(i + 1 == keys.len()).then_some("public-key")] { (key) }
                    @if i + 1 == keys.len() { " (current)" }
                }
            }
        }
    };
    Html(layout::page("Audit log", Some(&signed.live), "/ui/audit", body).into_string())
        .into_response()
}

fn filters(q: &AuditQuery) -> Markup {
    html! {
        form class="filters" method="get" action="/ui/audit" role="search" {
            label for="event" { "Event" input id="event" name="event" value=(q.event) maxlength="64" placeholder="e.g. key.verify"; }
            label for="owner" { "Owner" input id="owner" name="owner" value=(q.owner) maxlength="128"; }
            label for="key" { "Key or token id" input id="key" name="key" value=(q.key) maxlength="24"; }
            label for="outcome" { "Outcome" input id="outcome" name="outcome" value=(q.outcome) maxlength="64" placeholder="e.g. VALID"; }
            label for="since" { "From (RFC 3339 or Unix seconds)" input id="since" name="since" value=(q.since) maxlength="40" placeholder="e.g. 2025-01-31T00:00:00Z"; }
            label for="until" { "Until (not included)" input id="until" name="until" value=(q.until) maxlength="40"; }
            button type="submit" { "Show" }
        }
    }
}

fn entries_table(recent: &Recent) -> Markup {
    html! {
        @if recent.entries.is_empty() {
            p { "No entries match among the " (recent.examined) " examined." }
        } @else {
            div class="table-wrap" {
                table id="entries" {
                    caption { (recent.entries.len()) " entries, newest first (" (recent.examined) " examined)" }
                    thead { tr {
                        th scope="col" class="num" { "#" } th scope="col" { "Time" }
                        th scope="col" { "Event" } th scope="col" { "Outcome" }
                        th scope="col" { "Key" } th scope="col" { "Owner" }
                        th scope="col" { "Actor" } th scope="col" { "Client" }
                        th scope="col" { "Details" }
                    } }
                    tbody {
                        @for e in &recent.entries {
                            tr {
                                td class="num" { (e.seq) }
                                td { (layout::time(e.time_ms / 1000)) }
                                td { (e.event) }
                                td { (e.outcome) }
                                td { @if let Some(k) = &e.key_id { code { (k) } } }
                                td { (e.owner.as_deref().unwrap_or("")) }
                                td { code { (e.actor) } }
                                td { (e.client.as_deref().unwrap_or("")) }
                                td { @if !e.details.is_empty() {
                                    code { (serde_json::to_string(&e.details).unwrap_or_default()) }
                                } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/audit/export`: the API's export, as the signed-in token, as a download.
pub(crate) async fn export(
    State(state): State<AppState>,
    signed: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(no) = refused(&signed) {
        return no;
    }
    // Empty form fields mean no filter; `follow` would never end a download. (In a block: the
    // serializer may hold a non-`Send` encoder, which must not live across the await.)
    let query = {
        let raw = raw.unwrap_or_default();
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            if name == "follow" {
                return layout::api_error(ApiError::invalid_query(
                    "follow: a download must end; tail the log with `keyvault audit tail`",
                ));
            }
            if !value.trim().is_empty() {
                kept.append_pair(&name, value.trim());
            }
        }
        serde_urlencoded::from_str::<ExportQuery>(&kept.finish())
    };
    let query = match query {
        Ok(query) => query,
        Err(e) => return layout::api_error(ApiError::invalid_query(e.to_string())),
    };
    let csv = query.is_csv();
    match start_export(&state, signed.context(), signed.live.token.token_id, query).await {
        Ok(mut response) => {
            let name = if csv {
                "attachment; filename=\"keyvault-audit.csv\""
            } else {
                "attachment; filename=\"keyvault-audit.jsonl\""
            };
            response
                .headers_mut()
                .insert(CONTENT_DISPOSITION, HeaderValue::from_static(name));
            response
        }
        Err(e) => layout::api_error(e),
    }
}
