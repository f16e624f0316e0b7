//! The web console's pages and actions over a real server on port 0: what each role sees and
//! may do, the key shown once and never again, rotate and revoke, paging, unsealing through
//! the form, and every action audited as the signed-in token with `via: ui`.

use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use vault_core::keys::{KeyFilter, NewKey, Refill, RefillInterval};
use vault_core::tokens::Role;

use crate::support::*;
use crate::ui::{Browser, csrf_of, location, text};

/// Every audit entry, parsed.
fn entries(v: &TestVault) -> Vec<Value> {
    (0..v.vault.audit_size())
        .filter_map(|seq| v.vault.audit_entry(seq).unwrap())
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        .collect()
}

fn new_key(owner: &str) -> NewKey {
    NewKey::new(owner)
}

/// The text of the key in a "shown once" page.
fn shown_key(html: &str) -> String {
    let at = html.find(r#"id="new-key">"#).expect("the key is shown");
    let rest = &html[at + r#"id="new-key">"#.len()..];
    rest[..rest.find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_no_page_shows_it_or_the_token_again() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token).await;
    let csrf = b.csrf("/ui/keys/new").await;
    let created = b
        .post(
            "/ui/keys/new",
            &[
                ("csrf", &csrf),
                ("owner", "cust_once"),
                ("name", "laptop"),
                ("scopes", "photos:read, photos:write"),
                ("ttl_days", "30"),
                ("credits", "10"),
                ("rate_limit", "5"),
                ("rate_period", "60"),
            ],
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let html = text(&created);
    let key = shown_key(&html);
    assert!(key.starts_with("pvk_"), "{key}");
    // The key works, with what the form asked for.
    let id = v.vault.list_keys(&KeyFilter {
        owner: Some("cust_once".into()),
        ..Default::default()
    });
    let info = &id.unwrap().keys[0];
    assert_eq!(info.scopes, ["photos:read", "photos:write"]);
    assert_eq!(info.credits, Some(10));
    assert_eq!(info.ratelimit.unwrap().limit, 5);
    assert!(info.expires_at.is_some());
    let key_page = format!("/ui/keys/{}", info.key_id);
    let mut seen = Vec::new();
    for path in [
        "/ui/",
        "/ui/keys",
        "/ui/keys?owner=cust_once",
        "/ui/keys/new",
        &key_page,
        &format!("{key_page}/revoke"),
        "/ui/sign-in",
    ] {
        let reply = b.get(path).await;
        reply.assert_status(StatusCode::OK);
        seen.push(text(&reply));
    }
    assert!(seen[2].contains(&info.key_id.to_string()));
    for page in &seen {
        assert!(!page.contains(&key), "the key again");
        assert!(!page.contains(&v.root_token), "the token");
        // Nor the secret part alone.
        assert!(!page.contains(&key[4..40]));
    }
    assert!(!html.contains(&v.root_token));
    b.server.stop().await;
    assert!(!logs().contains(&key));
    assert!(!logs().contains(&v.root_token));
}

#[tokio::test]
async fn console_actions_are_audited_as_the_signed_in_token_with_via_ui() {
    let v = passphrase_vault();
    v.unseal();
    let manager = v.token(Role::Manager);
    let token_id = v.vault.check_token(&manager).unwrap().unwrap().token_id;
    let mut b = Browser::open(&v).await;
    b.sign_in(&manager).await;
    let csrf = b.csrf("/ui/keys/new").await;
    b.post("/ui/keys/new", &[("csrf", &csrf), ("owner", "cust_audit")])
        .await
        .assert_status(StatusCode::CREATED);
    let created = entries(&v)
        .into_iter()
        .rfind(|e| e["event"] == "key.create")
        .unwrap();
    assert_eq!(created["actor"], format!("token:{token_id}"));
    assert_eq!(created["details"]["via"], "ui");
    assert_eq!(created["owner"], "cust_audit");
    assert_eq!(created["client"], "127.0.0.1");
    // The same call through the API carries no `via`.
    let app = app(&v);
    call(
        &app,
        with_token(
            axum::http::Method::POST,
            "/v1/keys",
            &manager,
            Some(&serde_json::json!({"owner": "cust_api"})),
        ),
    )
    .await
    .assert_status(StatusCode::CREATED);
    let api = entries(&v)
        .into_iter()
        .rfind(|e| e["event"] == "key.create")
        .unwrap();
    assert_eq!(api["owner"], "cust_api");
    assert!(api["details"].get("via").is_none());
    b.server.stop().await;
}

#[tokio::test]
async fn each_role_sees_and_may_do_only_what_the_api_lets_it() {
    let v = passphrase_vault();
    v.unseal();
    let issued = v
        .vault
        .create_key(&vault_core::Context::embedded(), new_key("cust_roles"))
        .unwrap();
    let key_page = format!("/ui/keys/{}", issued.info.key_id);
    for role in [Role::Verifier, Role::Auditor, Role::Operator] {
        let token = v.token(role);
        let mut b = Browser::open(&v).await;
        b.sign_in(&token).await.assert_status(StatusCode::SEE_OTHER);
        let overview = b.get("/ui/").await;
        overview.assert_status(StatusCode::OK);
        let html = text(&overview);
        assert!(!html.contains(r#"href="/ui/keys""#), "{role:?}: {html}");
        assert_eq!(
            html.contains("Audit log"),
            role == Role::Auditor,
            "{role:?}"
        );
        assert_eq!(
            html.contains("Open signals"),
            role == Role::Auditor,
            "{role:?}"
        );
        for path in [
            "/ui/keys",
            "/ui/keys/new",
            &key_page,
            &format!("{key_page}/revoke"),
        ] {
            b.get(path).await.assert_status(StatusCode::FORBIDDEN);
        }
        // A form it could not have been shown, posted with its own CSRF token, does nothing.
        let csrf = csrf_of(&html);
        for (path, fields) in [
            (
                "/ui/keys/new",
                vec![("csrf", csrf.as_str()), ("owner", "cust_x")],
            ),
            (
                &*format!("{key_page}/revoke"),
                vec![("csrf", csrf.as_str()), ("confirm", "cust_roles")],
            ),
            (
                &*format!("{key_page}/rotate"),
                vec![("csrf", csrf.as_str()), ("grace_seconds", "0")],
            ),
        ] {
            b.post(path, &fields)
                .await
                .assert_status(StatusCode::FORBIDDEN);
        }
        b.server.stop().await;
    }
    let info = v.vault.show_key(&issued.info.key_id).unwrap();
    assert!(info.revoked_at.is_none());
    assert!(
        v.vault
            .list_keys(&KeyFilter {
                owner: Some("cust_x".into()),
                ..Default::default()
            })
            .unwrap()
            .keys
            .is_empty()
    );
}

#[tokio::test]
async fn rotate_with_grace_then_revoke_after_confirming_the_owner() {
    let v = passphrase_vault();
    v.unseal();
    let issued = v
        .vault
        .create_key(&vault_core::Context::embedded(), new_key("cust_life"))
        .unwrap();
    let old = issued.key.expose_secret_text().expose_secret().to_owned();
    let id = issued.info.key_id;
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.token(Role::Manager)).await;
    let page = format!("/ui/keys/{id}");
    let csrf = b.csrf(&page).await;
    let rotated = b
        .post(
            &format!("{page}/rotate"),
            &[("csrf", &csrf), ("grace_seconds", "600")],
        )
        .await;
    rotated.assert_status(StatusCode::OK);
    let html = text(&rotated);
    let new = shown_key(&html);
    assert_ne!(new, old);
    assert!(html.contains("keeps working until"));
    let verify = |key: &str| {
        v.vault
            .verify(
                &vault_core::Context::embedded(),
                vault_core::keys::VerifyRequest::new(key),
            )
            .unwrap()
            .code
    };
    assert_eq!(verify(&old).as_str(), "VALID");
    assert_eq!(verify(&new).as_str(), "VALID");
    // Too long a grace is refused, nothing rotated.
    b.post(
        &format!("{page}/rotate"),
        &[("csrf", &csrf), ("grace_seconds", "99999999")],
    )
    .await
    .assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(verify(&new).as_str(), "VALID");
    // Revoke: the confirmation page, then a wrong owner does nothing, then the owner revokes.
    let confirm = b.get(&format!("{page}/revoke")).await;
    confirm.assert_status(StatusCode::OK);
    assert!(text(&confirm).contains("cannot be undone"));
    b.post(
        &format!("{page}/revoke"),
        &[("csrf", &csrf), ("confirm", "someone_else")],
    )
    .await
    .assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(verify(&new).as_str(), "VALID");
    let revoked = b
        .post(
            &format!("{page}/revoke"),
            &[("csrf", &csrf), ("confirm", "cust_life")],
        )
        .await;
    revoked.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(location(&revoked), page);
    assert_eq!(verify(&new).as_str(), "REVOKED");
    let after = text(&b.get(&page).await);
    assert!(after.contains("status-revoked"));
    assert!(
        !after.contains("Rotate the secret"),
        "no actions on a revoked key"
    );
    assert!(!after.contains(&new) && !after.contains(&old));
    b.server.stop().await;
}

#[tokio::test]
async fn the_key_list_filters_by_owner_and_status_and_pages_through_a_cursor() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    let mut ids = Vec::new();
    for _ in 0..55 {
        ids.push(
            v.vault
                .create_key(&ctx, new_key("cust_many"))
                .unwrap()
                .info
                .key_id,
        );
    }
    v.vault.create_key(&ctx, new_key("cust_other")).unwrap();
    v.vault.revoke_key(&ctx, &ids[3]).unwrap();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.token(Role::Manager)).await;
    let first = text(&b.get("/ui/keys?owner=cust_many&status=").await);
    assert!(first.contains("50 keys"), "{first}");
    assert!(!first.contains("cust_other"));
    let at = first
        .find("/ui/keys?owner=cust_many&amp;status=&amp;after=")
        .unwrap();
    let next = first[at..at + first[at..].find('"').unwrap()].replace("&amp;", "&");
    let second = text(&b.get(&next).await);
    assert!(second.contains("5 keys"), "{second}");
    assert!(!second.contains("rel=\"next\""));
    let revoked = text(&b.get("/ui/keys?owner=cust_many&status=revoked").await);
    assert!(revoked.contains("1 keys") && revoked.contains(&ids[3].to_string()));
    b.get("/ui/keys?status=nonsense")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    b.get("/ui/keys?after=zz")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    b.get("/ui/keys/zz")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    b.get(&format!("/ui/keys/{}", "0".repeat(24)))
        .await
        .assert_status(StatusCode::NOT_FOUND);
    b.server.stop().await;
}

#[tokio::test]
async fn a_sealed_vault_is_unsealed_from_the_overview_form() {
    let v = passphrase_vault();
    let mut b = Browser::open(&v).await;
    // Sealed: sign-in leads to the overview, which shows the seal and its form.
    let reply = b.get("/ui/sign-in").await;
    assert_eq!(location(&reply), "/ui/");
    let page = b.get("/ui/").await;
    page.assert_status(StatusCode::OK);
    let html = text(&page);
    assert!(html.contains("sealed") && html.contains(r#"name="passphrase""#));
    let csrf = csrf_of(&html);
    let wrong = b
        .post(
            "/ui/unseal",
            &[("csrf", &csrf), ("passphrase", "wrong horse")],
        )
        .await;
    wrong.assert_status(StatusCode::BAD_REQUEST);
    assert!(!text(&wrong).contains("wrong horse"));
    assert!(v.vault.is_sealed());
    // Without the form's cookie-bound token nothing happens.
    b.post(
        "/ui/unseal",
        &[("csrf", &"1".repeat(64)), ("passphrase", PASSPHRASE)],
    )
    .await
    .assert_status(StatusCode::FORBIDDEN);
    assert!(v.vault.is_sealed());
    b.post("/ui/unseal", &[("csrf", &csrf), ("passphrase", PASSPHRASE)])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    assert!(!v.vault.is_sealed());
    let unseal = entries(&v)
        .into_iter()
        .rfind(|e| e["event"] == "sys.unseal")
        .unwrap();
    assert_eq!(unseal["details"]["via"], "ui");
    // Unsealed, the overview needs a session.
    assert_eq!(location(&b.get("/ui/").await), "/ui/sign-in");
    b.server.stop().await;
    assert!(!logs().contains(PASSPHRASE));
}

#[tokio::test]
async fn a_shares_vault_shows_its_progress_as_shares_arrive() {
    let v = shares_vault();
    let mut b = Browser::open(&v).await;
    let html = text(&b.get("/ui/").await);
    assert!(html.contains("0 of 2"), "{html}");
    let csrf = csrf_of(&html);
    b.post("/ui/unseal", &[("csrf", &csrf), ("share", &v.shares[0])])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    let html = text(&b.get("/ui/").await);
    assert!(html.contains("1 of 2"), "{html}");
    assert!(!html.contains(&v.shares[0]));
    b.post("/ui/unseal", &[("csrf", &csrf), ("share", &v.shares[1])])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    assert!(!v.vault.is_sealed());
    b.server.stop().await;
}

#[tokio::test]
async fn a_keys_page_charts_its_verifies_by_code_with_the_numbers_in_a_table() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    let issued = v.vault.create_key(&ctx, new_key("cust_chart")).unwrap();
    let text_key = issued.key.expose_secret_text().expose_secret().to_owned();
    let request = vault_core::keys::VerifyRequest::new(&text_key);
    for _ in 0..3 {
        v.vault.verify(&ctx, request).unwrap();
    }
    let scoped = vault_core::keys::VerifyRequest {
        scope: Some("photos:admin"),
        ..request
    };
    v.vault.verify(&ctx, scoped).unwrap();
    assert!(
        v.vault
            .usage_sync(std::time::Duration::from_secs(10))
            .unwrap()
    );
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.token(Role::Manager)).await;
    let page = format!("/ui/keys/{}", issued.info.key_id);
    for query in ["", "?usage=hour", "?usage=day"] {
        let reply = b.get(&format!("{page}{query}")).await;
        reply.assert_status(StatusCode::OK);
        let html = text(&reply);
        assert!(
            html.contains("<svg") && html.contains(r#"class="c-VALID""#),
            "{html}"
        );
        assert!(html.contains(r#"class="c-INSUFFICIENT_SCOPE""#));
        // The table: a column per code seen, and the bucket's row with 3, 1 and a total of 4.
        assert!(html.contains(r#"<th scope="col" class="num">VALID</th>"#));
        assert!(
            html.contains(r#"<td class="num">3</td><td class="num">1</td><td class="num">4</td>"#),
            "{html}"
        );
        assert!(!html.contains(&text_key));
    }
    b.get(&format!("{page}?usage=week"))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    b.server.stop().await;
}

#[tokio::test]
async fn a_keys_page_shows_its_refill_and_whether_it_was_imported() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    let mut monthly = NewKey::new("cust_refill");
    monthly.credits = Some(5);
    monthly.refill = Some(Refill {
        amount: 500,
        interval: RefillInterval::Monthly,
        day: Some(31),
    });
    let monthly = v.vault.create_key(&ctx, monthly).unwrap();
    let plain = v.vault.create_key(&ctx, new_key("cust_plain")).unwrap();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.token(Role::Manager)).await;
    let html = text(&b.get(&format!("/ui/keys/{}", monthly.info.key_id)).await);
    assert!(
        html.contains("<dd>500 credits on day 31 of every month at 00:00 UTC"),
        "{html}"
    );
    assert!(html.contains("<dt>Imported</dt><dd>no</dd>"), "{html}");
    let html = text(&b.get(&format!("/ui/keys/{}", plain.info.key_id)).await);
    assert!(html.contains("<dt>Refill</dt><dd>none</dd>"), "{html}");
    b.server.stop().await;
}

#[tokio::test]
async fn the_signals_page_lists_signals_for_managers_and_auditors_only() {
    let v = passphrase_vault();
    v.unseal();
    v.vault.note_disk_alarm();
    assert!(
        v.vault
            .usage_sync(std::time::Duration::from_secs(10))
            .unwrap()
    );
    for (role, allowed) in [
        (Role::Manager, true),
        (Role::Auditor, true),
        (Role::Verifier, false),
        (Role::Operator, false),
    ] {
        let mut b = Browser::open(&v).await;
        b.sign_in(&v.token(role)).await;
        let overview = text(&b.get("/ui/").await);
        assert_eq!(
            overview.contains(r#"href="/ui/signals""#),
            allowed,
            "{role:?}"
        );
        let reply = b.get("/ui/signals?hours=1").await;
        if allowed {
            reply.assert_status(StatusCode::OK);
            assert!(text(&reply).contains("disk_alarm"), "{role:?}");
            let other = text(&b.get("/ui/signals?owner=cust_nobody").await);
            assert!(other.contains("No signals"), "{other}");
            b.get("/ui/signals?hours=5")
                .await
                .assert_status(StatusCode::BAD_REQUEST);
        } else {
            reply.assert_status(StatusCode::FORBIDDEN);
        }
        b.server.stop().await;
    }
}

#[tokio::test]
async fn an_admin_makes_and_revokes_tokens_and_no_one_else_may() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.root_token).await;
    let csrf = b.csrf("/ui/tokens").await;
    let made = b
        .post(
            "/ui/tokens",
            &[
                ("csrf", &csrf),
                ("role", "auditor"),
                ("name", "audit desk"),
                ("ttl_seconds", "3600"),
            ],
        )
        .await;
    made.assert_status(StatusCode::CREATED);
    let token = shown_key(&text(&made));
    let info = v
        .vault
        .check_token(&token)
        .unwrap()
        .expect("the token works");
    assert_eq!(info.role, Role::Auditor);
    assert!(info.expires_at.is_some());
    let list = text(&b.get("/ui/tokens").await);
    assert!(list.contains("audit desk") && list.contains(&info.token_id.to_string()));
    assert!(!list.contains(&token) && !list.contains(&v.root_token));
    b.post("/ui/tokens", &[("csrf", &csrf), ("role", "superuser")])
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    b.post(
        &format!("/ui/tokens/{}/revoke", info.token_id),
        &[("csrf", &csrf)],
    )
    .await
    .assert_status(StatusCode::SEE_OTHER);
    assert!(v.vault.check_token(&token).unwrap().is_none());
    let revoke = entries(&v)
        .into_iter()
        .rfind(|e| e["event"] == "token.revoke")
        .unwrap();
    assert_eq!(revoke["details"]["via"], "ui");
    b.server.stop().await;
    // A manager may neither see nor make tokens.
    let mut m = Browser::open(&v).await;
    m.sign_in(&v.token(Role::Manager)).await;
    m.get("/ui/tokens")
        .await
        .assert_status(StatusCode::FORBIDDEN);
    let csrf = m.csrf("/ui/").await;
    m.post("/ui/tokens", &[("csrf", &csrf), ("role", "verifier")])
        .await
        .assert_status(StatusCode::FORBIDDEN);
    m.server.stop().await;
}
