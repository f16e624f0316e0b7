//! `/v1/keys`: the key lifecycle over HTTP, listing and paging, reveal, role boundaries, and
//! every route answering 503 while sealed (bad input and retries: `keys_requests.rs`).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use vault_core::tokens::Role;

use crate::support::{Reply, TestVault, app, call, passphrase_vault, with_token};

/// Every key text an HTTP answer showed in these tests, for the log check in `verify_logs.rs`.
static ISSUED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers a key text shown in an answer.
pub fn remember(key: &str) {
    ISSUED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(key.to_owned());
}

/// Every key text remembered so far.
pub fn issued() -> Vec<String> {
    ISSUED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// An unsealed passphrase vault.
pub fn open_vault() -> TestVault {
    let v = passphrase_vault();
    v.unseal();
    v
}

/// Sends `method uri` with the token and a JSON body if given.
pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    call(app, with_token(method, uri, token, body.as_ref())).await
}

/// Creates a key from `body`, asserts 201, remembers its text; returns the answer.
pub async fn create(app: &Router, token: &str, body: Value) -> Value {
    let r = send(app, Method::POST, "/v1/keys", token, Some(body)).await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let v = r.json();
    remember(v["key"].as_str().unwrap());
    v
}

/// `POST /v1/keys/verify` with `{"key": key, ...extra}`; asserts 200 and returns the verdict.
pub async fn verify(app: &Router, token: &str, key: &str, extra: Value) -> Value {
    let mut body = json!({"key": key});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = send(app, Method::POST, "/v1/keys/verify", token, Some(body)).await;
    r.assert_status(StatusCode::OK);
    r.json()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_uri(id: &Value, rest: &str) -> String {
    format!("/v1/keys/{}{rest}", id.as_str().unwrap())
}

#[tokio::test]
async fn the_key_lifecycle_over_http() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);

    // Create: 201, the key shown once, with the whole record.
    let before = now();
    let created = create(
        &app,
        &m,
        json!({"owner": "cust-1", "name": "photos", "scopes": ["read", "write"],
               "meta": {"plan": "pro", "n": 3}, "ttl_seconds": 3600,
               "ratelimit": {"limit": 100, "period_seconds": 60}, "credits": 50}),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].clone();
    assert!(key.starts_with("pvk_") && key.len() == 4 + 49 + 6, "{key}");
    assert_eq!(id.as_str().unwrap().len(), 24);
    assert_eq!(created["owner"], "cust-1");
    assert_eq!(created["name"], "photos");
    assert_eq!(created["scopes"], json!(["read", "write"]));
    assert_eq!(created["meta"], json!({"plan": "pro", "n": 3}));
    assert_eq!(
        created["ratelimit"],
        json!({"limit": 100, "period_seconds": 60})
    );
    assert_eq!(created["credits"], 50);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["recoverable"], false);
    assert_eq!(created["status"], "active");
    let expires = created["expires_at"].as_u64().unwrap();
    assert!(
        (before + 3600..=now() + 3600).contains(&expires),
        "{expires}"
    );

    // Show: the same record, never the key.
    let r = send(&app, Method::GET, &key_uri(&id, ""), &m, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let shown = r.json();
    let mut without_key = created.clone();
    without_key.as_object_mut().unwrap().remove("key");
    assert_eq!(shown, without_key);
    assert!(!String::from_utf8_lossy(&r.body).contains(&key[4..]));

    // Verify it.
    let verdict = verify(&app, &m, &key, json!({"scope": "read"})).await;
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["code"], "VALID");
    assert_eq!(verdict["key_id"], id);
    assert_eq!(verdict["owner"], "cust-1");
    assert_eq!(verdict["credits_remaining"], 49);
    assert_eq!(verdict["meta"], json!({"plan": "pro", "n": 3}));

    // Update: null removes expiry, credits and rate limit; absent fields stay.
    let r = send(
        &app,
        Method::PATCH,
        &key_uri(&id, ""),
        &m,
        Some(
            json!({"name": "renamed", "expires_at": null, "credits": null, "ratelimit": null,
                    "meta": {"a": 1}}),
        ),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let updated = r.json();
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["meta"], json!({"a": 1}));
    assert_eq!(updated["scopes"], json!(["read", "write"]));
    for gone in ["expires_at", "credits", "ratelimit"] {
        assert!(updated.get(gone).is_none(), "{gone}: {updated}");
    }
    let r = send(
        &app,
        Method::PATCH,
        &key_uri(&id, ""),
        &m,
        Some(
            json!({"expires_at": "2999-01-01T00:00:00+01:00", "credits": 7,
                    "ratelimit": {"limit": 5, "period_seconds": 1}, "scopes": ["read"]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let updated = r.json();
    assert_eq!(updated["expires_at"], 32_472_140_400u64);
    assert_eq!(updated["credits"], 7);
    assert_eq!(
        updated["ratelimit"],
        json!({"limit": 5, "period_seconds": 1})
    );
    assert_eq!(updated["scopes"], json!(["read"]));
    assert_eq!(updated["name"], "renamed");
    let r = send(
        &app,
        Method::PATCH,
        &key_uri(&id, ""),
        &m,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(r.json()["status"], "disabled");
    assert_eq!(verify(&app, &m, &key, json!({})).await["code"], "DISABLED");
    let r = send(
        &app,
        Method::PATCH,
        &key_uri(&id, ""),
        &m,
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(r.json()["status"], "active");

    // Rotate with a grace period: both secrets valid, the old one says until when.
    let r = send(
        &app,
        Method::POST,
        &key_uri(&id, "/rotate"),
        &m,
        Some(json!({"grace_seconds": 300})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let rotated = r.json();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    remember(&new_key);
    assert_ne!(new_key, key);
    assert_eq!(rotated["key_id"], id);
    let grace_end = rotated["previous_secret_expires_at"].as_u64().unwrap();
    assert!(
        (now() + 295..=now() + 300).contains(&grace_end),
        "{grace_end}"
    );
    let fresh = verify(&app, &m, &new_key, json!({})).await;
    assert_eq!(fresh["code"], "VALID");
    assert!(fresh.get("previous_secret").is_none(), "{fresh}");
    let old = verify(&app, &m, &key, json!({})).await;
    assert_eq!(old["code"], "VALID");
    assert_eq!(old["previous_secret"], json!({"expires_at": grace_end}));
    // Rotating again (no body: no grace) ends both older secrets at once.
    let r = call(
        &app,
        Request::post(key_uri(&id, "/rotate"))
            .header(header::AUTHORIZATION, format!("Bearer {m}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let newest = r.json()["key"].as_str().unwrap().to_owned();
    remember(&newest);
    assert!(r.json().get("previous_secret_expires_at").is_none());
    assert_eq!(verify(&app, &m, &key, json!({})).await["code"], "NOT_FOUND");
    assert_eq!(
        verify(&app, &m, &new_key, json!({})).await["code"],
        "NOT_FOUND"
    );
    assert_eq!(verify(&app, &m, &newest, json!({})).await["code"], "VALID");

    // Revoke: seen on the very next verify; the record stays, revoked, and cannot change.
    let r = send(&app, Method::POST, &key_uri(&id, "/revoke"), &m, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "revoked");
    let revoked_at = r.json()["revoked_at"].as_u64().unwrap();
    let verdict = verify(&app, &m, &newest, json!({})).await;
    assert_eq!(verdict["code"], "REVOKED");
    assert_eq!(verdict["valid"], false);
    let r = send(&app, Method::POST, &key_uri(&id, "/revoke"), &m, None).await;
    assert_eq!(r.json()["revoked_at"], revoked_at);
    let r = send(
        &app,
        Method::PATCH,
        &key_uri(&id, ""),
        &m,
        Some(json!({"name": "x"})),
    )
    .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
    let r = send(
        &app,
        Method::POST,
        &key_uri(&id, "/rotate"),
        &m,
        Some(json!({})),
    )
    .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
    let r = send(&app, Method::GET, &key_uri(&id, ""), &m, None).await;
    assert_eq!(r.json()["status"], "revoked");
}

#[tokio::test]
async fn list_filters_by_owner_and_status_and_pages() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let mut mine = Vec::new();
    for i in 0..3 {
        let k = create(
            &app,
            &m,
            json!({"owner": "cust-a", "name": format!("k{i}")}),
        )
        .await;
        mine.push(k["key_id"].as_str().unwrap().to_owned());
    }
    let disabled = create(&app, &m, json!({"owner": "cust-a", "enabled": false})).await;
    mine.push(disabled["key_id"].as_str().unwrap().to_owned());
    mine.sort();
    let other = create(&app, &m, json!({"owner": "cust-b"})).await;

    let ids = |page: &Value| -> Vec<String> {
        page["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |uri: String| {
        let app = app.clone();
        let m = m.clone();
        async move {
            let r = send(&app, Method::GET, &uri, &m, None).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{uri}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(!String::from_utf8_lossy(&r.body).contains("pvk_"));
            r.json()
        }
    };

    let page = list("/v1/keys?owner=cust-a".into()).await;
    assert_eq!(ids(&page), mine);
    assert!(page.get("next_cursor").is_none(), "{page}");
    let page = list("/v1/keys?owner=cust-a&status=disabled".into()).await;
    assert_eq!(
        ids(&page),
        vec![disabled["key_id"].as_str().unwrap().to_owned()]
    );
    let page = list("/v1/keys?status=active&owner=cust-b".into()).await;
    assert_eq!(
        ids(&page),
        vec![other["key_id"].as_str().unwrap().to_owned()]
    );
    let page = list("/v1/keys?owner=nobody".into()).await;
    assert_eq!(page, json!({"keys": []}));

    // Cursor paging by owner, two at a time.
    let first = list("/v1/keys?owner=cust-a&limit=2".into()).await;
    assert_eq!(ids(&first), mine[..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert_eq!(cursor, mine[1]);
    let second = list(format!("/v1/keys?owner=cust-a&limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), mine[2..]);
    assert!(second.get("next_cursor").is_none(), "{second}");

    // And over every key, one at a time.
    let mut all = Vec::new();
    let mut uri = "/v1/keys?limit=1".to_owned();
    loop {
        let page = list(uri.clone()).await;
        all.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/keys?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 5);
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted);

    // Revoke all of an owner's keys: a count, and the records stay, revoked.
    let r = send(&app, Method::POST, "/v1/keys/revoke?owner=cust-a", &m, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"revoked": 4}));
    let r = send(&app, Method::POST, "/v1/keys/revoke?owner=cust-a", &m, None).await;
    assert_eq!(r.json(), json!({"revoked": 0}));
    let page = list("/v1/keys?owner=cust-a&status=revoked".into()).await;
    assert_eq!(ids(&page), mine);
    let page = list("/v1/keys?status=active".into()).await;
    assert_eq!(
        ids(&page),
        vec![other["key_id"].as_str().unwrap().to_owned()]
    );
}

#[tokio::test]
async fn reveal_is_for_admins_and_recoverable_keys_only() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let admin = v.token(Role::Admin);
    let kept = create(&app, &m, json!({"owner": "o", "recoverable": true})).await;
    let plain = create(&app, &m, json!({"owner": "o"})).await;
    let kept_uri = key_uri(&kept["key_id"], "/reveal");

    let r = send(&app, Method::POST, &kept_uri, &admin, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        r.json(),
        json!({"key": kept["key"], "key_id": kept["key_id"]})
    );
    // The root token is an admin token too.
    let r = send(&app, Method::POST, &kept_uri, &v.root_token, None).await;
    assert_eq!(r.status, StatusCode::OK);

    let r = send(&app, Method::POST, &kept_uri, &m, None).await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = send(
        &app,
        Method::POST,
        &key_uri(&plain["key_id"], "/reveal"),
        &admin,
        None,
    )
    .await;
    let msg = r.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(msg.contains("recoverable"), "{msg}");

    // After a rotation the new secret is what is revealed; after a revoke, nothing.
    let r = send(
        &app,
        Method::POST,
        &key_uri(&kept["key_id"], "/rotate"),
        &m,
        None,
    )
    .await;
    let rotated = r.json()["key"].as_str().unwrap().to_owned();
    remember(&rotated);
    let r = send(&app, Method::POST, &kept_uri, &admin, None).await;
    assert_eq!(r.json()["key"], rotated.as_str());
    send(
        &app,
        Method::POST,
        &key_uri(&kept["key_id"], "/revoke"),
        &m,
        None,
    )
    .await;
    let r = send(&app, Method::POST, &kept_uri, &admin, None).await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
}

/// Every key route, with a key id (of a key that exists).
fn key_routes(id: &str) -> Vec<(Method, String, Option<Value>, Role)> {
    vec![
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"owner": "o"})),
            Role::Manager,
        ),
        (Method::GET, "/v1/keys".into(), None, Role::Manager),
        (Method::GET, format!("/v1/keys/{id}"), None, Role::Manager),
        (
            Method::PATCH,
            format!("/v1/keys/{id}"),
            Some(json!({"name": "n"})),
            Role::Manager,
        ),
        (
            Method::POST,
            format!("/v1/keys/{id}/rotate"),
            Some(json!({})),
            Role::Manager,
        ),
        (
            Method::POST,
            format!("/v1/keys/{id}/reveal"),
            None,
            Role::Admin,
        ),
        (
            Method::POST,
            format!("/v1/keys/{id}/revoke"),
            None,
            Role::Manager,
        ),
        (
            Method::POST,
            "/v1/keys/revoke?owner=o".into(),
            None,
            Role::Manager,
        ),
        (
            Method::POST,
            "/v1/keys/verify".into(),
            Some(json!({"key": "x"})),
            Role::Verifier,
        ),
        (Method::GET, "/v1/auth".into(), None, Role::Verifier),
        (
            Method::POST,
            "/v1/auth/some/path".into(),
            None,
            Role::Verifier,
        ),
    ]
}

#[tokio::test]
async fn every_role_boundary_of_the_key_routes() {
    let v = open_vault();
    let app = app(&v);
    let admin = v.token(Role::Admin);
    let tokens: Vec<(Role, String)> = Role::ALL.iter().map(|r| (*r, v.token(*r))).collect();
    let key = create(&app, &admin, json!({"owner": "o", "recoverable": true})).await;
    let id = key["key_id"].as_str().unwrap().to_owned();
    let api_key = key["key"].as_str().unwrap().to_owned();
    let ctx = vault_core::Context::embedded();
    let issued = v
        .vault
        .create_token(&ctx, None, Role::Admin, "to revoke", None)
        .unwrap();
    let revoked =
        secrecy::ExposeSecret::expose_secret(&issued.token.expose_secret_text()).to_owned();
    v.vault.revoke_token(&ctx, &issued.info.token_id).unwrap();
    let unknown = vault_core::apikey::ApiKey::generate(&vault_core::apikey::Prefix::TOKEN);
    let unknown = secrecy::ExposeSecret::expose_secret(&unknown.expose_secret_text()).to_owned();

    for (method, uri, body, needed) in key_routes(&id) {
        for (role, token) in &tokens {
            let r = send(&app, method.clone(), &uri, token, body.clone()).await;
            if role.allows(needed) {
                // Forward-auth answers 401 for the missing key, saying so in its own header.
                assert!(
                    r.status.is_success() || r.headers.contains_key("x-keyvault-code"),
                    "{role:?} {method} {uri}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            } else {
                let m = r.assert_error(StatusCode::FORBIDDEN, "forbidden");
                assert!(m.contains(needed.as_str()), "{m}");
            }
        }
        // No token, a malformed one, an unknown one, a revoked one, an API key: 401.
        let mut req = Request::builder().method(method.clone()).uri(&uri);
        if let Some(body) = &body {
            req = req.header(header::CONTENT_TYPE, "application/json");
            let r = call(&app, req.body(Body::from(body.to_string())).unwrap()).await;
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        } else {
            let r = call(&app, req.body(Body::empty()).unwrap()).await;
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        for bad in [
            "kvt_nope",
            unknown.as_str(),
            revoked.as_str(),
            api_key.as_str(),
        ] {
            let r = send(&app, method.clone(), &uri, bad, body.clone()).await;
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        // `Basic` is not a bearer token.
        let req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Basic {admin}"))
            .body(Body::empty())
            .unwrap();
        call(&app, req)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn every_key_route_answers_503_while_sealed() {
    let v = open_vault();
    let app = app(&v);
    let admin = v.token(Role::Admin);
    let key = create(&app, &admin, json!({"owner": "o"})).await;
    v.vault.seal(&vault_core::Context::embedded()).unwrap();
    for (method, uri, body, _) in key_routes(key["key_id"].as_str().unwrap()) {
        let r = send(&app, method.clone(), &uri, &admin, body).await;
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
        // Even without a token: nothing can be checked while sealed.
        let r = call(
            &app,
            Request::builder()
                .method(method)
                .uri(&uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    }
}
