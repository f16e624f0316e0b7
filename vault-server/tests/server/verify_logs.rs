//! What verify and forward-auth leave in the logs (no key text, ever; verify and auth at
//! debug, the rest at info), and forward-auth while sealed.

use axum::http::{Method, StatusCode};
use serde_json::json;
use vault_core::tokens::Role;

use crate::keys::{create, issued, open_vault, remember, send, verify};
use crate::support::{app, call, logs};
use crate::verify::{auth_request, unknown_key};

#[tokio::test]
async fn no_key_text_is_ever_logged() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let admin = v.token(Role::Admin);
    // Issue keys through every route that shows one, and present them every way.
    let created = create(&app, &m, json!({"owner": "log-owner", "recoverable": true})).await;
    let id = created["key_id"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        Method::POST,
        &format!("/v1/keys/{id}/rotate"),
        &m,
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    let rotated = r.json()["key"].as_str().unwrap().to_owned();
    remember(&rotated);
    let r = send(
        &app,
        Method::POST,
        &format!("/v1/keys/{id}/reveal"),
        &admin,
        None,
    )
    .await;
    assert_eq!(r.json()["key"], rotated.as_str());
    let unknown = unknown_key();
    for key in [created["key"].as_str().unwrap(), &rotated, &unknown] {
        verify(&app, &m, key, json!({})).await;
        call(
            &app,
            auth_request(Method::GET, "/v1/auth/p?scope=s", &m, &[("x-api-key", key)]),
        )
        .await;
        // In the wrong places, too.
        send(&app, Method::GET, &format!("/v1/keys/{key}"), &m, None).await;
        send(
            &app,
            Method::POST,
            "/v1/keys",
            &m,
            Some(json!({"owner": key, "x": 1})),
        )
        .await;
        send(
            &app,
            Method::POST,
            "/v1/keys/verify",
            &m,
            Some(json!({"key": key, "cost": key})),
        )
        .await;
        call(&app, auth_request(Method::GET, "/v1/auth", key, &[])).await;
    }
    // And the key texts every other test showed (those done by now).
    let mut secrets = issued();
    secrets.push(unknown);
    let logs = logs();
    assert!(
        logs.contains("route=/v1/keys/{id}/rotate"),
        "the request lines are captured"
    );
    for key in &secrets {
        // The body of the key (without its public prefix) is what must never appear.
        assert!(!logs.contains(&key[4..]), "a key was logged:\n{logs}");
    }
}

/// Verify and forward-auth log their requests at debug (their outcome is in the audit log and
/// the metrics); other routes at info.
#[tokio::test]
async fn verify_and_auth_requests_are_logged_at_debug_and_others_at_info() {
    let v = crate::support::passphrase_vault();
    v.unseal();
    let app = app(&v);
    let token = v.token(Role::Verifier);
    let mut ids = Vec::new();
    for (n, (method, uri)) in [
        (Method::POST, "/v1/keys/verify"),
        (Method::GET, "/v1/auth"),
        (Method::GET, "/v1/auth/a/b"),
        (Method::GET, "/v1/sys/seal-status"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("quiet-log-test-{n}");
        let mut req = crate::support::with_token(
            method.clone(),
            uri,
            &token,
            (method == Method::POST).then_some(&serde_json::json!({"key": "pvk_nope"})),
        );
        req.headers_mut()
            .insert("x-request-id", id.parse().unwrap());
        call(&app, req).await;
        ids.push((uri, id));
    }
    let logs = logs();
    for (uri, id) in ids {
        let line = logs
            .lines()
            .find(|l| l.contains(&id) && l.contains("status="))
            .unwrap_or_else(|| panic!("no request line for {uri}"));
        let level = if uri.starts_with("/v1/sys") {
            " INFO "
        } else {
            " DEBUG "
        };
        assert!(line.contains(level), "{uri}: {line}");
    }
}

/// A sealed vault's forward-auth answers say so in `x-keyvault-code`, as every other
/// forward-auth answer names its code.
#[tokio::test]
async fn forward_auth_while_sealed_answers_503_with_the_sealed_code() {
    let v = crate::support::passphrase_vault();
    let app = app(&v);
    for uri in ["/v1/auth", "/v1/auth/some/path?scope=read"] {
        let r = call(&app, crate::support::get(uri)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(r.headers["x-keyvault-code"], "SEALED", "{uri}");
        assert_eq!(r.json()["error"]["code"], "sealed");
    }
    v.unseal();
    let r = call(&app, crate::support::get("/v1/auth")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("x-keyvault-code").is_none());
}
