//! The key list (by owner, exact name and status, a page at a time) and the create form (the
//! new key shown once, on the answer to the form, and never again).
//!
//! The list is `Vault::list_keys`, what `GET /v1/keys` calls: with an owner it reads that
//! owner's index, with a name the name index (keyed HMACs of names, so only an exact name can
//! be found), with both the ids in both; and a page is at most [`PAGE`] records after a cursor,
//! so a page costs the same at a million keys as at ten; nothing here scans every record (a
//! status alone has no index: a page then stops after passing over 10,000 other keys, and says
//! so).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use vault_core::apikey::KeyId;
use vault_core::keys::{KeyFilter, KeyInfo, KeyStatus, NewKey, RateLimit};
use vault_core::tokens::Role;

use super::layout;
use super::request::{Posted, Signed};
use crate::AppState;
use crate::error::blocking;

/// Keys on one page of the list.
const PAGE: usize = 50;

/// The list's filters, from its query string; empty fields mean no filter.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

/// The status filter's choices.
const STATUSES: [(&str, Option<KeyStatus>); 5] = [
    ("", None),
    ("active", Some(KeyStatus::Active)),
    ("disabled", Some(KeyStatus::Disabled)),
    ("expired", Some(KeyStatus::Expired)),
    ("revoked", Some(KeyStatus::Revoked)),
];

/// `GET /ui/keys`.
pub(crate) async fn list(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = signed.require(Role::Manager) {
        return layout::api_error(refused);
    }
    let Ok(Query(q)) = query else {
        return layout::error_page(StatusCode::BAD_REQUEST, "The search is not valid.");
    };
    let Some(&(_, status)) = STATUSES.iter().find(|(name, _)| *name == q.status) else {
        return layout::error_page(StatusCode::BAD_REQUEST, "Unknown status.");
    };
    let after = match q.after.as_str() {
        "" => None,
        text => match KeyId::parse_hex(text) {
            Ok(id) => Some(id),
            Err(_) => return layout::error_page(StatusCode::BAD_REQUEST, "Bad page cursor."),
        },
    };
    let filter = KeyFilter {
        owner: (!q.owner.is_empty()).then(|| q.owner.clone()),
        name: (!q.name.is_empty()).then(|| q.name.clone()),
        status,
        after,
        limit: Some(PAGE),
    };
    let vault = state.vault().clone();
    let page = match blocking(move || vault.list_keys(&filter)).await {
        Ok(page) => page,
        Err(e) => return layout::api_error(e),
    };
    let next = page.next.map(|id| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("owner", &q.owner)
            .append_pair("status", &q.status)
            .append_pair("after", &id.to_string());
        if !q.name.is_empty() {
            query.append_pair("name", &q.name);
        }
        format!("/ui/keys?{}", query.finish())
    });
    let body = html! {
        form class="filters" method="get" action="/ui/keys" role="search" {
            label for="owner" { "Owner" input id="owner" name="owner" value=(q.owner) maxlength="128"; }
            label for="name" {
                "Name " span class="hint" id="name-hint" { "(exact, case as typed)" }
                input id="name" name="name" value=(q.name) maxlength="256" aria-describedby="name-hint";
            }
            label for="status" {
                "Status"
                select id="status" name="status" {
                    @for (name, _) in STATUSES {
                        option value=(name) selected[name == q.status] {
                            @if name.is_empty() { "any" } @else { (name) }
                        }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        (table(&page.keys))
        @if next.is_some() && page.keys.len() < PAGE {
            // `list_keys` ends a page after passing over a bounded number of other keys.
            p class="hint" { "This page stopped after passing over many keys that do not match; the next page reads on." }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Next page" } }
        }
    };
    Html(layout::page("Keys", Some(&signed.live), "/ui/keys", body).into_string()).into_response()
}

fn table(keys: &[KeyInfo]) -> Markup {
    html! {
        @if keys.is_empty() {
            p { "No keys match." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { (keys.len()) " keys, in key-id order" }
                    thead { tr {
                        th scope="col" { "Key id" } th scope="col" { "Owner" }
                        th scope="col" { "Name" } th scope="col" { "Status" }
                        th scope="col" { "Created" }
                    } }
                    tbody {
                        @for k in keys {
                            tr {
                                td { a href={ "/ui/keys/" (k.key_id) } { code { (k.key_id) } } }
                                td { (k.owner) }
                                td { (k.name) }
                                td { (status_cell(k.status)) }
                                td { (layout::time(k.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A status, coloured by class (and always in words, for screen readers and print).
pub(crate) fn status_cell(status: KeyStatus) -> Markup {
    let name = match status {
        KeyStatus::Active => "active",
        KeyStatus::Disabled => "disabled",
        KeyStatus::Expired => "expired",
        KeyStatus::Revoked => "revoked",
    };
    html! { span class={ "status-" (name) } { (name) } }
}

/// `GET /ui/keys/new`.
pub(crate) async fn new_form(signed: Signed) -> Response {
    if let Err(refused) = signed.require(Role::Manager) {
        return layout::api_error(refused);
    }
    let body = create_form(&signed, None);
    Html(layout::page("New key", Some(&signed.live), "/ui/keys/new", body).into_string())
        .into_response()
}

fn create_form(signed: &Signed, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p class="notice" role="alert" { (error) }
        }
        form class="stack" method="post" action="/ui/keys/new" {
            input type="hidden" name="csrf" value=(signed.live.csrf.hex());
            label for="owner" { "Owner" span class="hint" { "The customer id (1 to 128 bytes)" } }
            input id="owner" name="owner" required maxlength="128";
            label for="name" { "Name" span class="hint" { "Optional label" } }
            input id="name" name="name" maxlength="256";
            label for="scopes" { "Scopes" span class="hint" { "Separated by spaces or commas" } }
            input id="scopes" name="scopes";
            label for="ttl_days" { "Expires after (days)" span class="hint" { "Empty: never" } }
            input id="ttl_days" name="ttl_days" type="number" min="1" inputmode="numeric";
            label for="credits" { "Credits" span class="hint" { "Empty: unlimited" } }
            input id="credits" name="credits" type="number" min="0" inputmode="numeric";
            label for="rate_limit" { "Rate limit (requests per period)" span class="hint" { "Empty: none" } }
            input id="rate_limit" name="rate_limit" type="number" min="1" inputmode="numeric";
            label for="rate_period" { "Rate period (seconds)" }
            input id="rate_period" name="rate_period" type="number" min="1" value="60" inputmode="numeric";
            label for="recoverable" {
                "Recoverable" span class="hint" { "Keep an encrypted copy an admin can reveal" }
            }
            input id="recoverable" name="recoverable" type="checkbox" value="on";
            button type="submit" { "Create key" }
        }
    }
}

/// The create form's fields (numbers as text: an empty field means none).
#[derive(Deserialize)]
pub(crate) struct CreateForm {
    owner: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    ttl_days: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    rate_period: String,
    #[serde(default)]
    recoverable: Option<String>,
}

impl CreateForm {
    fn into_new_key(self, now: u64) -> Result<NewKey, String> {
        fn number<N: std::str::FromStr>(field: &str, text: &str) -> Result<Option<N>, String> {
            match text.trim() {
                "" => Ok(None),
                t => t
                    .parse::<N>()
                    .map(Some)
                    .map_err(|_| format!("{field} must be a whole number in range")),
            }
        }
        let ttl_days: Option<u64> = number("Expires after", &self.ttl_days)?;
        if ttl_days == Some(0) {
            return Err("Expires after must be at least 1 day".into());
        }
        let ratelimit = match number("Rate limit", &self.rate_limit)? {
            None => None,
            Some(limit) => Some(RateLimit {
                limit,
                period_seconds: number("Rate period", &self.rate_period)?.unwrap_or(60),
            }),
        };
        Ok(NewKey {
            owner: self.owner.trim().to_owned(),
            name: self.name.trim().to_owned(),
            scopes: self
                .scopes
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            meta: serde_json::Map::new(),
            expires_at: ttl_days.map(|d| now.saturating_add(d.saturating_mul(86_400))),
            disabled: false,
            ratelimit,
            credits: number("Credits", &self.credits)?,
            // The console's form sets no refill yet; `PATCH /v1/keys/{id}` or the CLI adds one.
            refill: None,
            recoverable: self.recoverable.is_some(),
        })
    }
}

/// `POST /ui/keys/new`: creates the key through `Vault::create_key` (what `POST /v1/keys`
/// calls) and shows its text in this answer only.
pub(crate) async fn create(
    State(state): State<AppState>,
    Posted { signed, form }: Posted<CreateForm>,
) -> Response {
    if let Err(refused) = signed.require(Role::Manager) {
        return layout::api_error(refused);
    }
    let vault = state.vault().clone();
    let new = match form.into_new_key(vault.clock().now()) {
        Ok(new) => new,
        Err(message) => return invalid(&signed, &message),
    };
    let ctx = signed.context();
    let issued = match blocking(move || vault.create_key(&ctx, new)).await {
        Ok(issued) => issued,
        Err(e) if e.status == StatusCode::BAD_REQUEST => return invalid(&signed, &e.message),
        Err(e) => return layout::api_error(e),
    };
    let text = issued.key.expose_secret_text();
    let body = html! {
        div class="panel" role="status" {
            p { strong { "Copy this key now." } " It is shown once: no page will show it again." }
            p class="secret" id="new-key" { (text.expose_secret()) }
        }
        p { "Key " a href={ "/ui/keys/" (issued.info.key_id) } { code { (issued.info.key_id) } } " of " (issued.info.owner) "." }
    };
    let page = layout::page("Key created", Some(&signed.live), "/ui/keys/new", body);
    (StatusCode::CREATED, Html(page.into_string())).into_response()
}

fn invalid(signed: &Signed, message: &str) -> Response {
    let body = create_form(signed, Some(message));
    let page = layout::page("New key", Some(&signed.live), "/ui/keys/new", body);
    (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response()
}
