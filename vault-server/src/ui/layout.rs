//! The frame every console page shares: head, navigation for the signed-in role, sign-out, and
//! the error page.
//!
//! The navigation lists only the pages the role may open ([`pages_for`]), the same role rules
//! as the API's (`Role::allows`), so a link never leads to a refusal.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use vault_core::tokens::Role;

use super::session::Live;
use crate::error::ApiError;

/// The roles that may read signals, as `GET /v1/signals` allows.
pub(crate) const SIGNALS_ROLES: &[Role] = &[Role::Manager, Role::Auditor];

/// htmx's settings (`<meta name="htmx-config">`).
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyEnabled":false,"historyCacheSize":0,"selfRequestsOnly":true}"#;

/// A page of the navigation: its path, its title and the roles that may open it (any of them;
/// none: every role).
struct NavPage {
    path: &'static str,
    title: &'static str,
    roles: &'static [Role],
}

/// Every page the console has, in navigation order.
const PAGES: &[NavPage] = &[
    NavPage {
        path: "/ui/",
        title: "Overview",
        roles: &[],
    },
    NavPage {
        path: "/ui/keys",
        title: "Keys",
        roles: &[Role::Manager],
    },
    NavPage {
        path: "/ui/keys/new",
        title: "New key",
        roles: &[Role::Manager],
    },
    NavPage {
        path: "/ui/signals",
        title: "Signals",
        roles: SIGNALS_ROLES,
    },
    NavPage {
        path: "/ui/audit",
        title: "Audit",
        roles: &[Role::Auditor],
    },
    NavPage {
        path: "/ui/tokens",
        title: "Tokens",
        roles: &[Role::Admin],
    },
];

/// The pages `role` may open.
fn pages_for(role: Role) -> impl Iterator<Item = &'static NavPage> {
    PAGES
        .iter()
        .filter(move |p| p.roles.is_empty() || p.roles.iter().any(|r| role.allows(*r)))
}

/// The document around `body`, titled `title`; with navigation and sign-out when signed in.
pub(crate) fn page(title: &str, live: Option<&Live>, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keyvault" }
                link rel="stylesheet" href=(super::assets::CSS_PATH);
                // htmx reads its settings here: no indicator style injected (the CSP allows no
                // inline style), no eval, no scripts from swapped content, and no history
                // cache, which would keep pages (a key shown once) in the browser's storage.
                meta name="htmx-config" content=(HTMX_CONFIG);
                script src=(super::assets::HTMX_PATH) defer {}
                // No icon: an empty one, so the browser does not ask for /favicon.ico.
                link rel="icon" href="data:,";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    span class="brand" { "keyvault" }
                    @if let Some(live) = live {
                        nav aria-label="Console" {
                            ul {
                                @for p in pages_for(live.token.role) {
                                    li {
                                        @if p.path == current {
                                            a href=(p.path) aria-current="page" { (p.title) }
                                        } @else {
                                            a href=(p.path) { (p.title) }
                                        }
                                    }
                                }
                            }
                        }
                        form class="signout" method="post" action="/ui/sign-out" {
                            input type="hidden" name="csrf" value=(live.csrf.hex());
                            span class="who" {
                                (live.token.role.as_str()) " · " (live.token.name)
                            }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page saying what went wrong, with `status`.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        p role="alert" { (message) }
        p { a href="/ui/" { "Back to the console" } }
    };
    (status, Html(page(title, None, "", body).into_string())).into_response()
}

/// The error page of an API error: its status and its message, which never says anything
/// internal (see [`ApiError`]).
pub(crate) fn api_error(e: ApiError) -> Response {
    error_page(e.status, &e.message)
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn time(unix: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
    else {
        return unix.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_navigation_lists_only_what_the_role_may_open() {
        let titles = |role| pages_for(role).map(|p| p.title).collect::<Vec<_>>();
        assert_eq!(titles(Role::Verifier), ["Overview"]);
        assert_eq!(titles(Role::Operator), ["Overview"]);
        assert_eq!(titles(Role::Auditor), ["Overview", "Signals", "Audit"]);
        let manager = ["Overview", "Keys", "New key", "Signals"];
        assert_eq!(titles(Role::Manager), manager);
        assert_eq!(
            titles(Role::Admin),
            [&manager[..], &["Audit", "Tokens"]].concat()
        );
    }

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
