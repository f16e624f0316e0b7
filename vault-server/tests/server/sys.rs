//! `/v1/sys/*`: health, seal status, unseal by shares and by passphrase.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::support::{
    PASSPHRASE, Server, app, app_with, call, config, get, passphrase_vault, shares_vault, unseal,
};

#[tokio::test]
async fn health_follows_the_seal_state_and_answers_head() {
    let v = shares_vault();
    let app = app(&v);

    let sealed = call(&app, get("/v1/sys/health")).await;
    assert_eq!(sealed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sealed.json(), json!({"initialized": true, "sealed": true}));
    let head = call(
        &app,
        Request::head("/v1/sys/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);

    for share in &v.shares[..2] {
        let r = call(&app, unseal(&json!({"share": share}))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let unsealed = call(&app, get("/v1/sys/health")).await;
    assert_eq!(unsealed.status, StatusCode::OK);
    assert_eq!(
        unsealed.json(),
        json!({"initialized": true, "sealed": false})
    );
    let head = call(
        &app,
        Request::head("/v1/sys/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    v.vault.seal(&vault_core::Context::embedded()).unwrap();
    let resealed = call(&app, get("/v1/sys/health")).await;
    assert_eq!(resealed.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn shares_unseal_with_progress_reset_and_refusals() {
    let v = shares_vault();
    let app = app(&v);
    let status = |sealed: bool, progress: u8| {
        json!({"initialized": true, "sealed": sealed, "method": "shares",
               "threshold": 2, "shares": 3, "progress": progress})
    };

    let r = call(&app, get("/v1/sys/seal-status")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), status(true, 0));

    let r = call(&app, unseal(&json!({"share": v.shares[0]}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), status(true, 1));

    // The same share twice is refused and progress kept.
    let r = call(&app, unseal(&json!({"share": v.shares[0]}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert_eq!(
        call(&app, get("/v1/sys/seal-status")).await.json(),
        status(true, 1)
    );

    // A mistyped share says so, and names no share text.
    let mut typo = v.shares[1].clone();
    let last = typo.pop().unwrap();
    typo.push(if last == '0' { '1' } else { '0' });
    let r = call(&app, unseal(&json!({"share": typo}))).await;
    let message = r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(message.contains("checksum"), "{message}");
    assert!(!message.contains(&typo[5..20]));
    let r = call(&app, unseal(&json!({"share": "not a share"}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");

    // A passphrase is the other method.
    let r = call(&app, unseal(&json!({"passphrase": PASSPHRASE}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_method");

    // A share of another vault.
    let other = shares_vault();
    let r = call(&app, unseal(&json!({"share": other.shares[0]}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");

    let r = call(&app, unseal(&json!({"reset": true, "share": v.shares[0]}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), status(true, 0));

    let r = call(&app, unseal(&json!({"share": v.shares[2]}))).await;
    assert_eq!(r.json(), status(true, 1));
    let r = call(&app, unseal(&json!({"share": v.shares[0]}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), status(false, 0));
    assert!(!v.vault.is_sealed());

    // Unsealed: any well-formed attempt answers the status at once, even a wrong one.
    let r = call(&app, unseal(&json!({"share": "not a share"}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), status(false, 0));
    let r = call(&app, unseal(&json!({"reset": true, "share": v.shares[1]}))).await;
    assert_eq!(r.json(), status(false, 0));
}

#[tokio::test]
async fn only_a_submitter_of_the_current_progress_can_reset_it() {
    let v = shares_vault();
    let other = shares_vault();
    let app = app(&v);
    let progress = |app: axum::Router| async move {
        call(&app, get("/v1/sys/seal-status")).await.json()["progress"].clone()
    };
    // With no progress, a reset is a harmless no-op.
    let r = call(
        &app,
        unseal(&json!({"reset": true, "share": other.shares[0]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["progress"], 0);

    let r = call(&app, unseal(&json!({"share": v.shares[0]}))).await;
    assert_eq!(r.json()["progress"], 1);
    // Someone who submitted nothing of it: without a share, with a share of this vault not
    // submitted, with another vault's share, or with junk. Refused, and the progress stays.
    let r = call(&app, unseal(&json!({"reset": true}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    for stranger in [&v.shares[1], &other.shares[0]] {
        let r = call(&app, unseal(&json!({"reset": true, "share": stranger}))).await;
        let message = r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(!message.contains(&stranger[5..20]), "{message}");
    }
    let r = call(&app, unseal(&json!({"reset": true, "share": "kvs1_00"}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert_eq!(progress(app.clone()).await, 1);

    // The submitter's reset works.
    let r = call(&app, unseal(&json!({"reset": true, "share": v.shares[0]}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["progress"], 0);
    // A share submitted after the reset starts a new progress, which the old share cannot reset.
    let r = call(&app, unseal(&json!({"share": v.shares[2]}))).await;
    assert_eq!(r.json()["progress"], 1);
    let r = call(&app, unseal(&json!({"reset": true, "share": v.shares[0]}))).await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(progress(app.clone()).await, 1);
    let r = call(&app, unseal(&json!({"share": v.shares[1]}))).await;
    assert_eq!(r.json()["sealed"], false);
}

#[tokio::test]
async fn passphrase_unseal_over_a_real_server() {
    let v = passphrase_vault();
    let server = Server::start(&v, config()).await;
    let json_header = [("content-type", "application/json")];

    let r = server
        .send(Method::GET, "/v1/sys/seal-status", &[], "")
        .await;
    assert_eq!(
        r.json(),
        json!({"initialized": true, "sealed": true, "method": "passphrase",
               "threshold": 1, "shares": 1, "progress": 0})
    );

    let wrong = json!({"passphrase": "not the passphrase at all"}).to_string();
    let r = server
        .send(Method::POST, "/v1/sys/unseal", &json_header, &wrong)
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    let r = server.send(Method::GET, "/v1/sys/health", &[], "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v.vault.is_sealed());

    // A share is the other method.
    let r = server
        .send(
            Method::POST,
            "/v1/sys/unseal",
            &json_header,
            &json!({"share": shares_vault().shares[0]}).to_string(),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_method");

    let right = json!({"passphrase": PASSPHRASE}).to_string();
    let r = server
        .send(Method::POST, "/v1/sys/unseal", &json_header, &right)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sealed"], false);
    let r = server.send(Method::HEAD, "/v1/sys/health", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!v.vault.is_sealed());

    server.stop().await;
}

#[tokio::test]
async fn a_failed_unseal_waits_the_configured_delay() {
    let v = passphrase_vault();
    let mut config = config();
    config.unseal_failure_delay = Duration::from_millis(300);
    let app = app_with(&v, config);

    let start = Instant::now();
    let r = call(
        &app,
        unseal(&json!({"passphrase": "not the passphrase at all"})),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    assert!(start.elapsed() >= Duration::from_millis(300));

    let start = Instant::now();
    let r = call(&app, unseal(&json!({"share": "kvs1_00"}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(start.elapsed() >= Duration::from_millis(300));

    // A body that is not an attempt at all is refused at once.
    let start = Instant::now();
    let r = call(&app, unseal(&json!({"reset": false}))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert!(start.elapsed() < Duration::from_millis(300));

    let r = call(&app, unseal(&json!({"passphrase": PASSPHRASE}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!v.vault.is_sealed());
}

/// `GET /v1/sys/cluster` on a one-host vault: 501 `not_clustered` in JSON for the operator and
/// the auditor, 403 for other roles; `POST /v1/sys/seal?cluster=true` 400.
#[tokio::test]
async fn the_cluster_route_and_cluster_seal_are_refused_on_one_host() {
    use vault_core::tokens::Role;

    use crate::support::with_token;

    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    for role in [Role::Operator, Role::Auditor, Role::Admin] {
        let r = call(
            &app,
            with_token(Method::GET, "/v1/sys/cluster", &v.token(role), None),
        )
        .await;
        let message = r.assert_error(StatusCode::NOT_IMPLEMENTED, "not_clustered");
        assert!(message.contains("one host"), "{message}");
    }
    for role in [Role::Verifier, Role::Manager] {
        let r = call(
            &app,
            with_token(Method::GET, "/v1/sys/cluster", &v.token(role), None),
        )
        .await;
        r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    let r = call(&app, get("/v1/sys/cluster")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A cluster seal of a one-host vault is refused, and seals nothing.
    let operator = v.token(Role::Operator);
    let r = call(
        &app,
        with_token(Method::POST, "/v1/sys/seal?cluster=true", &operator, None),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert!(!v.vault.is_sealed());
    let r = call(
        &app,
        with_token(Method::POST, "/v1/sys/seal?cluster=maybe", &operator, None),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    let r = call(
        &app,
        with_token(Method::POST, "/v1/sys/seal?cluster=false", &operator, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(v.vault.is_sealed());
}
