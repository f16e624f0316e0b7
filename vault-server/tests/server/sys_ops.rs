//! The operator's routes: seal, rotate, rewrap, and the rekey and generate-root ceremonies.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vault_core::audit::Entry;
use vault_core::keys::NewKey;
use vault_core::tokens::Role;
use vault_core::{Context, RecordTree, Vault};

use crate::support::{
    PASSPHRASE, Reply, TestVault, app, app_with, assert_json_refusals, call, config, get,
    passphrase_vault, shares_vault, unseal, with_token,
};

const NEW_PASSPHRASE: &str = "a brand new passphrase, long enough";

async fn post(app: &Router, uri: &str, token: &str, body: Option<Value>) -> Reply {
    call(app, with_token(Method::POST, uri, token, body.as_ref())).await
}

/// Every audit entry of the vault, parsed.
fn entries(vault: &Vault) -> Vec<Entry> {
    (0..vault.audit_size())
        .map(|seq| Entry::parse(&vault.audit_entry(seq).unwrap().unwrap()).unwrap())
        .collect()
}

fn token_id(token: &str, vault: &TestVault) -> String {
    let info = vault
        .vault
        .authenticate(&Context::embedded(), token)
        .unwrap();
    info.token_id.to_string()
}

#[tokio::test]
async fn seal_over_http_then_unseal_over_http() {
    let v = shares_vault();
    v.unseal();
    let app = app(&v);
    let operator = v.token(Role::Operator);

    let r = post(&app, "/v1/sys/seal", &operator, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"initialized": true, "sealed": true, "method": "shares",
               "threshold": 2, "shares": 3, "progress": 0})
    );
    assert!(v.vault.is_sealed());
    assert_eq!(
        call(&app, get("/v1/sys/health")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for (method, uri) in [
        (Method::GET, "/v1/sys/tokens"),
        (Method::POST, "/v1/sys/seal"),
        (Method::GET, "/v1/audit/checkpoint"),
    ] {
        call(&app, with_token(method, uri, &v.root_token, None))
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    }

    for share in &v.shares[..2] {
        let r = call(&app, unseal(&json!({"share": share}))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(
        call(&app, get("/v1/sys/health")).await.status,
        StatusCode::OK
    );
    let r = call(
        &app,
        with_token(Method::GET, "/v1/sys/tokens", &operator, None),
    )
    .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = call(
        &app,
        with_token(Method::GET, "/v1/sys/tokens", &v.root_token, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // The seal is audited under the operator's token.
    let actor = format!("token:{}", token_id(&operator, &v));
    assert!(
        entries(&v.vault)
            .iter()
            .any(|e| e.event == "sys.seal" && e.outcome == "ok" && e.actor == actor)
    );
}

#[tokio::test]
async fn rotate_then_rewrap_moves_every_record_to_the_new_term() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let operator = v.token(Role::Operator);
    let key = v
        .vault
        .create_key(&Context::embedded(), NewKey::new("alice"))
        .unwrap();
    let key_id = key.info.key_id;
    let term = |v: &TestVault| {
        v.vault
            .record_term(RecordTree::Keys, key_id.as_bytes())
            .unwrap()
            .unwrap()
    };
    assert_eq!(term(&v), 1);

    let r = post(&app, "/v1/sys/rotate", &operator, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"term": 2}));
    assert_eq!(term(&v), 1, "rotate rewrites nothing");

    // A key and two tokens (root, operator).
    let r = post(&app, "/v1/sys/rewrap", &operator, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let report = r.json();
    assert_eq!(report["term"], 2);
    assert_eq!(report["seen"], 3);
    assert!(report["rewritten"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(term(&v), 2);

    let r = post(&app, "/v1/sys/rewrap", &operator, None).await;
    assert_eq!(r.json(), json!({"rewritten": 0, "seen": 3, "term": 2}));

    // These routes take no body: one sent is ignored, unless it is over the limit.
    let r = post(&app, "/v1/sys/rotate", &operator, Some(json!({"x": 1}))).await;
    assert_eq!(r.json(), json!({"term": 3}));
    let huge = json!({"x": "a".repeat(100 * 1024)});
    for uri in ["/v1/sys/seal", "/v1/sys/rotate", "/v1/sys/rewrap"] {
        let mut req = with_token(Method::POST, uri, &operator, Some(&huge));
        let len = huge.to_string().len();
        req.headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, len.into());
        call(&app, req)
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    }
    assert!(!v.vault.is_sealed());
}

#[tokio::test]
async fn rekey_a_passphrase_vault_to_a_new_passphrase() {
    let v = passphrase_vault();
    v.unseal();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(300);
    let app = app_with(&v, cfg);
    let operator = v.token(Role::Operator);
    let new = json!({"passphrase": NEW_PASSPHRASE});

    let start = Instant::now();
    let r = post(
        &app,
        "/v1/sys/rekey",
        &operator,
        Some(json!({"passphrase": "not the passphrase at all", "new": new})),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    assert!(start.elapsed() >= Duration::from_millis(300));

    let start = Instant::now();
    let r = post(
        &app,
        "/v1/sys/rekey",
        &operator,
        Some(json!({"passphrase": PASSPHRASE, "new": {"passphrase": "too short"}})),
    )
    .await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert!(m.contains("12 characters"), "{m}");
    assert!(start.elapsed() < Duration::from_millis(300));

    let r = post(
        &app,
        "/v1/sys/rekey",
        &operator,
        Some(json!({"passphrase": PASSPHRASE, "new": new})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"complete": true, "progress": 1, "threshold": 1})
    );
    assert!(!v.vault.is_sealed());
    assert!(
        v.vault.insecure_kdf(),
        "a test vault keeps test-grade Argon2"
    );

    let r = post(&app, "/v1/sys/seal", &operator, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, unseal(&json!({"passphrase": PASSPHRASE}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    let r = call(&app, unseal(&json!({"passphrase": NEW_PASSPHRASE}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sealed"], false);

    let actor = format!("token:{}", token_id(&operator, &v));
    let log = entries(&v.vault);
    assert!(
        log.iter()
            .any(|e| e.event == "sys.rekey" && e.outcome == "ok" && e.actor == actor)
    );
    assert!(
        log.iter()
            .any(|e| e.event == "sys.rekey" && e.outcome == "wrong_credential")
    );
}

#[tokio::test]
async fn rekey_shares_by_ceremony_from_2_of_3_to_3_of_5() {
    let v = shares_vault();
    v.unseal();
    let other = shares_vault();
    let app = app(&v);
    let operator = v.token(Role::Operator);
    let second_operator = v.token(Role::Operator);
    let rekey =
        async |token: &str, body: Value| post(&app, "/v1/sys/rekey", token, Some(body)).await;

    let r = rekey(
        &operator,
        json!({"share": v.shares[0], "new": {"shares": 5, "threshold": 3}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let started = r.json();
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    assert_eq!(nonce.len(), 32);
    assert_eq!(
        started,
        json!({"complete": false, "nonce": nonce, "progress": 1, "threshold": 2})
    );

    let r = rekey(
        &operator,
        json!({"nonce": "0".repeat(32), "share": v.shares[1]}),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
    let r = rekey(&operator, json!({"nonce": nonce, "share": other.shares[1]})).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(m.contains("another vault"), "{m}");
    let r = rekey(&operator, json!({"nonce": nonce, "share": v.shares[0]})).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(m.contains("already"), "{m}");
    let r = rekey(&operator, json!({"nonce": nonce, "share": "kvs1_00"})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert_eq!(v.vault.seal_status().threshold, 2, "nothing happened yet");

    // Another operator gives the last share.
    let r = rekey(
        &second_operator,
        json!({"nonce": nonce, "share": v.shares[2]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[axum::http::header::CACHE_CONTROL], "no-store");
    let done = r.json();
    assert_eq!(done["complete"], true);
    assert_eq!(done["progress"], 2);
    assert!(done.get("nonce").is_none());
    let new_shares: Vec<String> = done["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(new_shares.len(), 5);
    let status = v.vault.seal_status();
    assert_eq!((status.threshold, status.shares), (3, 5));

    // The ceremony is over.
    let r = rekey(&operator, json!({"nonce": nonce, "share": v.shares[1]})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");

    // Only the new shares unseal.
    post(&app, "/v1/sys/seal", &operator, None).await;
    let r = call(&app, unseal(&json!({"share": v.shares[0]}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(m.contains("another set of shares"), "{m}");
    for (i, share) in new_shares[2..].iter().enumerate() {
        let r = call(&app, unseal(&json!({"share": share}))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["sealed"], i < 2);
    }
    assert!(!v.vault.is_sealed());

    // Cancel, and a new start, each end the ceremony in progress.
    let start = json!({"share": new_shares[0], "new": {"shares": 3, "threshold": 2}});
    let first = rekey(&operator, start.clone()).await.json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = rekey(&operator, json!({"nonce": first, "cancel": true})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"complete": false, "cancelled": true, "progress": 0, "threshold": 3})
    );
    let r = rekey(&operator, json!({"nonce": first, "share": new_shares[1]})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
    let r = rekey(&operator, json!({"nonce": first, "cancel": true})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");

    let second = rekey(&operator, start.clone()).await.json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let third = rekey(&operator, start.clone()).await.json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, third);
    let r = rekey(&operator, json!({"nonce": second, "share": new_shares[1]})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
    let r = rekey(&operator, json!({"nonce": third, "share": new_shares[1]})).await;
    assert_eq!(r.json()["progress"], 2);

    // Sealing drops it too.
    post(&app, "/v1/sys/seal", &operator, None).await;
    for share in &new_shares[..3] {
        call(&app, unseal(&json!({"share": share}))).await;
    }
    assert!(!v.vault.is_sealed());
    let r = rekey(&operator, json!({"nonce": third, "share": new_shares[2]})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
    assert_eq!(v.vault.seal_status().threshold, 3);
}

#[tokio::test]
async fn shares_that_do_not_combine_end_the_ceremony_after_the_delay() {
    let v = shares_vault();
    v.unseal();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(300);
    let app = app_with(&v, cfg);
    let operator = v.token(Role::Operator);
    let rekey = |body: Value| post(&app, "/v1/sys/rekey", &operator, Some(body));

    // Rekey 2-of-3 to a new 2-of-3: the old shares still look right (same vault, same
    // threshold) but no longer combine into the unseal key.
    let same = json!({"shares": 3, "threshold": 2});
    let nonce = rekey(json!({"share": v.shares[0], "new": same}))
        .await
        .json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = rekey(json!({"nonce": nonce, "share": v.shares[1]})).await;
    let current: Vec<String> = r.json()["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();

    let nonce = rekey(json!({"share": v.shares[0], "new": same}))
        .await
        .json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = Instant::now();
    let r = rekey(json!({"nonce": nonce, "share": v.shares[2]})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    assert!(start.elapsed() >= Duration::from_millis(300));
    let r = rekey(json!({"nonce": nonce, "share": current[0]})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");

    // The current shares still work, here for a generate-root.
    let gen_root = |body: Value| post(&app, "/v1/sys/generate-root", &operator, Some(body));
    let r = gen_root(json!({"share": current[2]})).await;
    let nonce = r.json()["nonce"].as_str().unwrap().to_owned();
    let r = gen_root(json!({"nonce": nonce, "share": current[0]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = call(
        &app,
        with_token(Method::GET, "/v1/sys/tokens", &token, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn generate_root_with_the_passphrase_gives_a_working_admin_token() {
    let v = passphrase_vault();
    v.unseal();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(300);
    let app = app_with(&v, cfg);
    let operator = v.token(Role::Operator);
    let gen_root = |body: Value| post(&app, "/v1/sys/generate-root", &operator, Some(body));

    for (body, code) in [
        (
            json!({"passphrase": "not the passphrase at all"}),
            "wrong_credential",
        ),
        (json!({"share": shares_vault().shares[0]}), "wrong_method"),
    ] {
        let start = Instant::now();
        gen_root(body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, code);
        assert!(start.elapsed() >= Duration::from_millis(300), "{code}");
    }

    let r = gen_root(json!({"passphrase": PASSPHRASE})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[axum::http::header::CACHE_CONTROL], "no-store");
    let body = r.json();
    assert_eq!(body["complete"], true);
    assert_eq!(body["progress"], 1);
    assert_eq!(body["threshold"], 1);
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("kvt_"));
    let id = body["token_id"].as_str().unwrap();

    let r = call(&app, with_token(Method::GET, "/v1/sys/tokens", token, None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    let made = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] == id)
        .unwrap()
        .clone();
    assert_eq!(made["role"], "admin");
    assert!(made.get("expires_at").is_none());

    // An operator cannot manage tokens, but the admin token it generated can.
    call(
        &app,
        with_token(Method::GET, "/v1/sys/tokens", &operator, None),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn malformed_ceremony_requests_are_400_at_once() {
    let v = shares_vault();
    v.unseal();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(500);
    let app = app_with(&v, cfg);
    let operator = v.token(Role::Operator);
    for uri in ["/v1/sys/rekey", "/v1/sys/generate-root"] {
        assert_json_refusals(&app, Method::POST, uri, &operator).await;
    }
    let s = &v.shares[0];
    let new = json!({"shares": 3, "threshold": 2});

    for body in [
        json!({}),
        json!({"passphrase": PASSPHRASE, "share": s, "new": new}),
        json!({"nonce": "n"}),
        json!({"nonce": "n", "passphrase": PASSPHRASE}),
        json!({"nonce": "n", "cancel": false}),
        json!({"cancel": true}),
        json!({"nonce": "n", "share": s, "cancel": true}),
        json!({"share": s}),
        json!({"nonce": "n", "share": s, "new": new}),
        json!({"share": s, "new": {}}),
        json!({"share": s, "new": {"shares": 3}}),
        json!({"share": s, "new": {"shares": 3, "threshold": 1}}),
        json!({"share": s, "new": {"shares": 3, "threshold": 4}}),
        json!({"share": s, "new": {"passphrase": NEW_PASSPHRASE, "shares": 3, "threshold": 2}}),
    ] {
        let start = Instant::now();
        let r = post(&app, "/v1/sys/rekey", &operator, Some(body.clone())).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
        assert!(start.elapsed() < Duration::from_millis(500), "{body}");
    }
    for (body, field) in [
        (
            json!({"share": s, "new": {"shares": 300, "threshold": 2}}),
            "new.shares",
        ),
        (
            json!({"share": s, "new": {"shares": 3, "threshold": "2"}}),
            "new.threshold",
        ),
        (
            json!({"share": s, "new": {"passphrase": 12345678901234_u64}}),
            "new.passphrase",
        ),
        (
            json!({"share": s, "new": {"method": "shares"}}),
            "unknown field `method`",
        ),
        (json!({"share": 1, "new": new}), "share: invalid type"),
        (json!({"nonce": 1, "share": s}), "nonce: invalid type"),
        (
            json!({"nonce": "n", "cancel": "yes"}),
            "cancel: invalid type",
        ),
        (json!({"share": s, "new": "shares"}), "new: invalid type"),
    ] {
        let r = post(&app, "/v1/sys/rekey", &operator, Some(body.clone())).await;
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
        assert!(m.contains(field), "{body}: {m}");
    }
    for body in [json!({"share": s, "new": new}), json!({"passphrase": [1]})] {
        let r = post(&app, "/v1/sys/generate-root", &operator, Some(body)).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    for body in [json!({}), json!({"nonce": "n"}), json!({"cancel": true})] {
        let r = post(&app, "/v1/sys/generate-root", &operator, Some(body)).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    }
    // A secret in the wrong place is not echoed.
    let r = post(&app, "/v1/sys/rekey", &operator, Some(json!({"cancel": s}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(!m.contains(&s[5..20]), "{m}");
    assert_eq!(v.vault.seal_status().threshold, 2);
    assert_eq!(v.vault.seal_status().shares, 3);
}

#[tokio::test]
async fn operator_routes_answer_503_while_sealed_and_403_to_others() {
    let v = passphrase_vault();
    let app = app(&v);
    let routes = [
        ("/v1/sys/seal", None),
        ("/v1/sys/rotate", None),
        ("/v1/sys/rewrap", None),
        (
            "/v1/sys/rekey",
            Some(json!({"passphrase": PASSPHRASE, "new": {"shares": 3, "threshold": 2}})),
        ),
        (
            "/v1/sys/generate-root",
            Some(json!({"passphrase": PASSPHRASE})),
        ),
    ];
    for (uri, body) in &routes {
        post(&app, uri, &v.root_token, body.clone())
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    }
    v.unseal();
    let auditor = v.token(Role::Auditor);
    let manager = v.token(Role::Manager);
    for (uri, body) in &routes {
        for token in [&auditor, &manager] {
            post(&app, uri, token, body.clone())
                .await
                .assert_error(StatusCode::FORBIDDEN, "forbidden");
        }
        post(&app, uri, "kvt_nonsense", body.clone())
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert!(!v.vault.is_sealed());
    assert_eq!(v.vault.seal_status().method, "passphrase");
}
