//! The web console's sessions and guards, over a real server on port 0: sign-in and its
//! cookie, idle and absolute expiry (on the vault's manual clock, no sleeping), sign-out, a
//! revoked token ending its sessions, the CSRF and origin checks, the security headers, and
//! that no token text ever reaches a page.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use vault_core::clock::Clock;
use vault_core::tokens::Role;

use crate::support::*;

/// A browser: a server, its origin, and the cookies it was given.
pub struct Browser {
    pub server: Server,
    pub origin: String,
    host: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    pub async fn open(vault: &TestVault) -> Browser {
        Browser::open_with(vault, config()).await
    }

    pub async fn open_with(vault: &TestVault, config: vault_server::ServerConfig) -> Browser {
        let server = Server::start(vault, config).await;
        let host = server.addr.to_string();
        Browser {
            origin: format!("http://{host}"),
            host,
            server,
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, reply: &Reply) {
        for set in reply.headers.get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let cookie = self.cookie_header();
        let headers = [("host", self.host.as_str()), ("cookie", cookie.as_str())];
        let reply = self.server.send(Method::GET, path, &headers, "").await;
        self.keep_cookies(&reply);
        reply
    }

    /// Posts `fields` URL-encoded with extra `headers` (the console's `Origin` unless given).
    pub async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let cookie = self.cookie_header();
        let mut headers = vec![
            ("host", self.host.as_str()),
            ("cookie", cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if !extra
            .iter()
            .any(|(n, _)| *n == "origin" || *n == "no-origin")
        {
            headers.push(("origin", self.origin.as_str()));
        }
        headers.extend(extra.iter().filter(|(n, _)| *n != "no-origin"));
        let reply = self.server.send(Method::POST, path, &headers, &body).await;
        self.keep_cookies(&reply);
        reply
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        self.post_with(path, fields, &[]).await
    }

    /// The hidden `csrf` field of the page at `path`.
    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        page.assert_status(StatusCode::OK);
        csrf_of(&text(&page))
    }

    /// Signs in with `token`; the answer.
    pub async fn sign_in(&mut self, token: &str) -> Reply {
        let csrf = self.csrf("/ui/sign-in").await;
        self.post("/ui/sign-in", &[("csrf", &csrf), ("token", token)])
            .await
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.iter().any(|(n, _)| n == name)
    }
}

pub fn text(reply: &Reply) -> String {
    String::from_utf8(reply.body.to_vec()).unwrap()
}

pub fn location(reply: &Reply) -> String {
    reply.headers["location"].to_str().unwrap().to_owned()
}

/// The value of the first hidden `csrf` field in `html`.
pub fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn sign_in_opens_a_session_in_a_strict_http_only_cookie_and_the_token_stays_on_the_server() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    let form = b.get("/ui/sign-in").await;
    form.assert_status(StatusCode::OK);
    let set = form.headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("kv_form="), "{set}");
    let reply = b.sign_in(&v.root_token).await;
    reply.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/ui/");
    let session = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("kv_session="))
        .expect("a session cookie");
    for attribute in ["; HttpOnly", "; SameSite=Strict", "; Path=/ui"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: {session}");
    let value = session["kv_session=".len()..session.find(';').unwrap()].to_owned();
    assert_eq!(value.len(), 64, "32 random bytes in hex");
    assert!(!session.contains(&v.root_token));
    let overview = b.get("/ui/").await;
    overview.assert_status(StatusCode::OK);
    let html = text(&overview);
    assert!(html.contains("unsealed"), "{html}");
    assert!(
        html.contains(r#"href="/ui/keys""#),
        "an admin sees the keys"
    );
    assert!(!html.contains(&v.root_token));
    b.server.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_secure_under_tls() {
    let v = passphrase_vault();
    v.unseal();
    let app = vault_server::app(
        vault_server::AppState::new(v.vault.clone())
            .with_config(config())
            .with_tls(true),
    );
    let page = call(&app, get("/ui/sign-in")).await;
    page.assert_status(StatusCode::OK);
    let set = page.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("; Secure") && set.contains("; HttpOnly"),
        "{set}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_without_a_session_or_an_echo() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    // The root token with its last character changed: always a different token of the same
    // shape (replacing a given letter would leave a token without that letter unchanged).
    let mut wrong = v.root_token.clone();
    let last = wrong.pop().expect("a token is not empty");
    wrong.push(if last == 'x' { 'y' } else { 'x' });
    assert_ne!(wrong, v.root_token);
    let reply = b.sign_in(&wrong).await;
    reply.assert_status(StatusCode::UNAUTHORIZED);
    assert!(!b.has_cookie("kv_session"));
    assert!(!text(&reply).contains(&wrong));
    let reply = b.sign_in("not even a token").await;
    reply.assert_status(StatusCode::UNAUTHORIZED);
    assert!(!text(&reply).contains("not even a token"));
    // A query the page does not understand is only ignored.
    b.get("/ui/sign-in?ended=a&ended=b")
        .await
        .assert_status(StatusCode::OK);
    // Without a session every page leads to sign-in.
    let page = b.get("/ui/keys").await;
    page.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&page), "/ui/sign-in");
    b.server.stop().await;
    assert!(!logs().contains(&wrong));
}

#[tokio::test]
async fn a_session_ends_after_fifteen_idle_minutes_and_each_request_restarts_the_wait() {
    let clock = Clock::manual_now();
    let v = passphrase_vault_on(clock.clone());
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token)
        .await
        .assert_status(StatusCode::SEE_OTHER);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(14 * 60 + 59));
        b.get("/ui/").await.assert_status(StatusCode::OK);
    }
    clock.advance(Duration::from_secs(15 * 60));
    let reply = b.get("/ui/").await;
    reply.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/ui/sign-in?ended=expired");
    assert!(!b.has_cookie("kv_session"), "the stale cookie is removed");
    b.server.stop().await;
}

#[tokio::test]
async fn a_session_ends_eight_hours_after_sign_in_however_busy() {
    let clock = Clock::manual_now();
    let v = passphrase_vault_on(clock.clone());
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token)
        .await
        .assert_status(StatusCode::SEE_OTHER);
    // A request every ten minutes for 7 h 50 min.
    for _ in 0..47 {
        clock.advance(Duration::from_secs(10 * 60));
        b.get("/ui/").await.assert_status(StatusCode::OK);
    }
    clock.advance(Duration::from_secs(10 * 60));
    let reply = b.get("/ui/").await;
    reply.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/ui/sign-in?ended=expired");
    b.server.stop().await;
}

#[tokio::test]
async fn sign_out_ends_the_session_for_good() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token).await;
    let old = b.cookie_header();
    let csrf = b.csrf("/ui/").await;
    let reply = b.post("/ui/sign-out", &[("csrf", &csrf)]).await;
    reply.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/ui/sign-in");
    assert!(!b.has_cookie("kv_session"));
    // The old cookie, replayed, opens nothing.
    let host = b.server.addr.to_string();
    let replay = b
        .server
        .send(
            Method::GET,
            "/ui/",
            &[("host", &host), ("cookie", &old)],
            "",
        )
        .await;
    replay.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&replay), "/ui/sign-in");
    b.server.stop().await;
}

#[tokio::test]
async fn a_revoked_token_ends_its_sessions_at_their_next_request() {
    let v = passphrase_vault();
    v.unseal();
    let manager = v.token(Role::Manager);
    let info = v.vault.check_token(&manager).unwrap().unwrap();
    let mut first = Browser::open(&v).await;
    first.sign_in(&manager).await;
    let mut second = Browser::open(&v).await;
    second.sign_in(&manager).await;
    first.get("/ui/keys").await.assert_status(StatusCode::OK);
    v.vault
        .revoke_token(&vault_core::Context::embedded(), &info.token_id)
        .unwrap();
    for b in [&mut first, &mut second] {
        let reply = b.get("/ui/keys").await;
        reply.assert_status(StatusCode::SEE_OTHER);
        assert_eq!(location(&reply), "/ui/sign-in?ended=token");
    }
    first.server.stop().await;
    second.server.stop().await;
}

#[tokio::test]
async fn a_form_needs_its_sessions_csrf_token_and_the_consoles_origin() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token).await;
    let csrf = b.csrf("/ui/keys/new").await;
    let mut other = Browser::open(&v).await;
    other.sign_in(&v.root_token).await;
    let foreign = other.csrf("/ui/keys/new").await;
    assert_ne!(csrf, foreign);
    let owner = ("owner", "cust_csrf");
    let refused = [
        b.post("/ui/keys/new", &[owner]).await,
        b.post("/ui/keys/new", &[owner, ("csrf", "")]).await,
        b.post("/ui/keys/new", &[owner, ("csrf", &foreign)]).await,
        b.post("/ui/keys/new", &[owner, ("csrf", &"0".repeat(64))])
            .await,
        // The right token from another origin, or with no origin and no fetch metadata.
        b.post_with(
            "/ui/keys/new",
            &[owner, ("csrf", &csrf)],
            &[("origin", "http://evil.example")],
        )
        .await,
        b.post_with(
            "/ui/keys/new",
            &[owner, ("csrf", &csrf)],
            &[("origin", "null")],
        )
        .await,
        b.post_with(
            "/ui/keys/new",
            &[owner, ("csrf", &csrf)],
            &[("no-origin", ""), ("sec-fetch-site", "cross-site")],
        )
        .await,
    ];
    for reply in &refused {
        reply.assert_status(StatusCode::FORBIDDEN);
    }
    let none = vault_core::keys::KeyFilter {
        owner: Some("cust_csrf".into()),
        ..Default::default()
    };
    assert!(v.vault.list_keys(&none).unwrap().keys.is_empty());
    // `Origin: null` from a `no-referrer` page passes with `Sec-Fetch-Site: same-origin`.
    let ok = b
        .post_with(
            "/ui/keys/new",
            &[owner, ("csrf", &csrf)],
            &[("origin", "null"), ("sec-fetch-site", "same-origin")],
        )
        .await;
    ok.assert_status(StatusCode::CREATED);
    b.post("/ui/keys/new", &[owner, ("csrf", &csrf)])
        .await
        .assert_status(StatusCode::CREATED);
    assert_eq!(v.vault.list_keys(&none).unwrap().keys.len(), 2);
    // Sign-in, before any session, is held to its form cookie and the origin too.
    let mut fresh = Browser::open(&v).await;
    let form_csrf = fresh.csrf("/ui/sign-in").await;
    for reply in [
        fresh.post("/ui/sign-in", &[("token", &v.root_token)]).await,
        fresh
            .post(
                "/ui/sign-in",
                &[("csrf", &foreign), ("token", &v.root_token)],
            )
            .await,
        fresh
            .post_with(
                "/ui/sign-in",
                &[("csrf", &form_csrf), ("token", &v.root_token)],
                &[("origin", "http://evil.example")],
            )
            .await,
    ] {
        reply.assert_status(StatusCode::FORBIDDEN);
    }
    assert!(!fresh.has_cookie("kv_session"));
    for b in [b, other, fresh] {
        b.server.stop().await;
    }
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_pages_are_not_cached() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    let mut replies = vec![
        b.get("/ui/sign-in").await,
        b.get("/ui/no-such-page").await,
        b.get("/ui/keys").await,
    ];
    b.sign_in(&v.root_token).await;
    replies.push(b.get("/ui/").await);
    replies.push(b.get("/ui/keys").await);
    replies.push(b.get("/ui/keys/new").await);
    replies.push(
        b.post_with("/ui/sign-out", &[], &[("origin", "http://evil.example")])
            .await,
    );
    for reply in &replies {
        let h = &reply.headers;
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store", "{:?}", reply.status);
    }
    assert_eq!(replies[1].status, StatusCode::NOT_FOUND);
    assert_eq!(replies[6].status, StatusCode::FORBIDDEN);
    // The stylesheet: its content type, cached long, with the same headers; its path is the
    // one every page links.
    let page = text(&replies[3]);
    let at = page.find("/ui/assets/console-").unwrap();
    let path = &page[at..at + page[at..].find('"').unwrap()];
    let css = b.get(path).await;
    css.assert_status(StatusCode::OK);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert!(
        css.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert!(css.headers.contains_key("content-security-policy"));
    // No page has an inline script or style: its one script is the vendored file.
    for reply in &replies {
        let html = text(reply);
        let scripts = html.matches("<script").count();
        assert_eq!(
            scripts,
            html.matches("<script src=\"/ui/assets/htmx-").count()
        );
        assert!(!html.contains("<style") && !html.contains("style="));
    }
    b.server.stop().await;
}

#[tokio::test]
async fn the_console_is_not_served_when_turned_off() {
    let v = passphrase_vault();
    v.unseal();
    let config = vault_server::ServerConfig {
        ui_enabled: false,
        ..config()
    };
    let mut b = Browser::open_with(&v, config).await;
    for path in ["/ui/", "/ui/sign-in", "/ui/keys"] {
        let reply = b.get(path).await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    b.server.stop().await;
}
