//! The console's live updates over a real server on port 0: the vendored htmx served as a
//! script under a CSP that allows no inline script, pages with no inline script, style or
//! handler, and the overview's polled fragments (seal state and unseal progress, open signals)
//! with the session and role they need.

use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use secrecy::ExposeSecret;
use vault_core::tokens::Role;

use crate::support::*;
use crate::ui::{Browser, text};

/// The `src` of the page's one script.
fn script_src(html: &str) -> String {
    let at = html.find("<script src=\"").expect("a script");
    let rest = &html[at + "<script src=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// What a page must not carry under a strict CSP: inline script, inline style, inline handlers.
fn assert_nothing_inline(html: &str) {
    let scripts = html.matches("<script").count();
    assert_eq!(
        scripts,
        html.matches("<script src=\"/ui/assets/").count(),
        "{html}"
    );
    assert!(!html.contains("<style"), "{html}");
    assert!(!html.contains(" style=\""), "{html}");
    assert!(!html.contains("javascript:"), "{html}");
    for tag in html.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        for attr in tag.split_whitespace().skip(1) {
            let name = attr.split('=').next().unwrap_or("");
            assert!(
                !(name.starts_with("on") || name.starts_with("hx-on")),
                "an inline handler in <{tag}>"
            );
        }
    }
}

#[tokio::test]
async fn htmx_is_served_as_a_script_under_a_csp_that_forbids_inline_script() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token).await;
    let page = b.get("/ui/").await;
    let csp = page.headers[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"script-src 'self'"), "{csp}");
    assert!(directives.contains(&"style-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = text(&page);
    // htmx is configured to inject no style and evaluate nothing.
    assert!(html.contains(r#"name="htmx-config""#), "{html}");
    assert!(
        html.contains("&quot;includeIndicatorStyles&quot;:false"),
        "{html}"
    );
    assert!(html.contains("&quot;allowEval&quot;:false"), "{html}");
    assert!(html.contains("&quot;historyCacheSize&quot;:0"), "{html}");
    for path in [
        "/ui/",
        "/ui/keys",
        "/ui/keys/new",
        "/ui/signals",
        "/ui/audit",
        "/ui/tokens",
    ] {
        assert_nothing_inline(&text(&b.get(path).await));
    }

    let src = script_src(&html);
    assert!(src.starts_with("/ui/assets/htmx-2."), "{src}");
    let script = b.get(&src).await;
    script.assert_status(StatusCode::OK);
    assert_eq!(script.headers[CONTENT_TYPE], "application/javascript");
    let cache = script.headers[CACHE_CONTROL].to_str().unwrap();
    assert!(
        cache.contains("max-age=31536000") && cache.contains("immutable"),
        "{cache}"
    );
    assert!(script.body.len() > 10_000);
    assert!(text(&script).contains("htmx"));
    // Served without a session too (the sealed overview uses it), and the same bytes.
    let mut anonymous = Browser::open(&v).await;
    let again = anonymous.get(&src).await;
    again.assert_status(StatusCode::OK);
    assert_eq!(again.body, script.body);
    b.server.stop().await;
    anonymous.server.stop().await;
}

#[tokio::test]
async fn the_seal_state_polls_the_unseal_progress_and_stops_once_unsealed() {
    let v = shares_vault();
    let mut b = Browser::open(&v).await;
    let html = text(&b.get("/ui/").await);
    assert!(
        html.contains(r#"hx-get="/ui/live/seal?shown=sealed-0""#),
        "{html}"
    );
    assert_nothing_inline(&html);
    // Nothing changed: nothing to swap, so the live region says nothing again.
    b.get("/ui/live/seal?shown=sealed-0")
        .await
        .assert_status(StatusCode::NO_CONTENT);
    let live = b.get("/ui/live/seal").await;
    live.assert_status(StatusCode::OK);
    assert!(text(&live).contains("0 of 2"));
    // A holder submits a share elsewhere: the next poll shows it.
    v.vault
        .submit_share(
            &vault_core::Context::embedded(),
            vault_core::shamir::Share::parse(&v.shares[0]).unwrap(),
        )
        .unwrap();
    let live = text(&b.get("/ui/live/seal?shown=sealed-0").await);
    assert!(live.contains("1 of 2"), "{live}");
    // The new state names itself for the next poll.
    assert!(
        live.contains(r#"hx-get="/ui/live/seal?shown=sealed-1""#),
        "{live}"
    );
    assert!(!live.contains(&v.shares[0]));
    v.vault
        .submit_share(
            &vault_core::Context::embedded(),
            vault_core::shamir::Share::parse(&v.shares[1]).unwrap(),
        )
        .unwrap();
    assert!(!v.vault.is_sealed());
    // Unsealed, without a session: 286 (htmx stops polling) with a way to sign in.
    let live = b.get("/ui/live/seal?shown=sealed-1").await;
    assert_eq!(live.status.as_u16(), 286);
    assert!(text(&live).contains(r#"href="/ui/sign-in""#));
    // Signed in: the unsealed state, and the overview polls it.
    b.sign_in(&v.root_token).await;
    let live = b.get("/ui/live/seal").await;
    live.assert_status(StatusCode::OK);
    assert!(text(&live).contains("unsealed"));
    b.server.stop().await;
}

#[tokio::test]
async fn open_signals_refresh_for_the_roles_that_read_them_under_the_session() {
    let v = passphrase_vault();
    v.unseal();
    let mut auditor = Browser::open(&v).await;
    auditor.sign_in(&v.token(Role::Auditor)).await;
    let html = text(&auditor.get("/ui/").await);
    assert!(html.contains(r#"hx-get="/ui/live/signals""#), "{html}");
    let ctx = vault_core::Context::embedded();
    let issued = v
        .vault
        .create_key(&ctx, vault_core::keys::NewKey::new("cust_live"));
    let issued = issued.unwrap();
    let id = issued.info.key_id.to_string();
    let before = text(&auditor.get("/ui/live/signals").await);
    assert!(!before.contains(&id), "{before}");
    assert!(!before.contains("<html"), "a fragment, not a page");
    // A wrong secret for the key while the page is open (its secret before a rotation
    // without grace): the next poll lists its signal.
    let wrong = issued.key.expose_secret_text().expose_secret().to_owned();
    v.vault.rotate_key(&ctx, &issued.info.key_id, 0).unwrap();
    v.vault
        .verify(&ctx, vault_core::keys::VerifyRequest::new(&wrong))
        .unwrap();
    assert!(v.vault.usage_sync(Duration::from_secs(10)).unwrap());
    let reply = auditor.get("/ui/live/signals").await;
    reply.assert_status(StatusCode::OK);
    let after = text(&reply);
    assert!(
        after.contains(&id) && after.contains("wrong_secret"),
        "{after}"
    );

    // A role that may not read signals: refused, and its overview does not poll them.
    let mut operator = Browser::open(&v).await;
    operator.sign_in(&v.token(Role::Operator)).await;
    let html = text(&operator.get("/ui/").await);
    assert!(!html.contains("/ui/live/signals"));
    operator
        .get("/ui/live/signals")
        .await
        .assert_status(StatusCode::FORBIDDEN);
    // No session: nothing shown, and the polling told to stop.
    let mut nobody = Browser::open(&v).await;
    let reply = nobody.get("/ui/live/signals").await;
    assert_eq!(reply.status.as_u16(), 286);
    assert!(!text(&reply).contains("<table"));
    // Signed out: the same.
    let csrf = crate::ui::csrf_of(&text(&auditor.get("/ui/").await));
    auditor.post("/ui/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(auditor.get("/ui/live/signals").await.status.as_u16(), 286);
    for b in [auditor, operator, nobody] {
        b.server.stop().await;
    }
}
