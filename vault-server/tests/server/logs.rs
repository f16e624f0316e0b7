//! What the request log says, and that it never says a secret.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::support::{
    PASSPHRASE, Server, app, call, config, logs, passphrase_vault, shares_vault, unseal,
};

#[tokio::test]
async fn unseal_logs_the_request_but_never_a_credential() {
    let p = passphrase_vault();
    let s = shares_vault();
    let json_header = [
        ("content-type", "application/json"),
        ("x-request-id", "log-test-1"),
    ];

    // Over a real server: a wrong passphrase, then the right one.
    let server = Server::start(&p, config()).await;
    let wrong = "wrong passphrase 9f8e7d6c";
    let r = server
        .send(
            Method::POST,
            "/v1/sys/unseal",
            &json_header,
            &json!({"passphrase": wrong}).to_string(),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    let r = server
        .send(
            Method::POST,
            "/v1/sys/unseal",
            &json_header,
            &json!({"passphrase": PASSPHRASE}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    server.stop().await;

    // Through the router: shares (one of them twice, one in the wrong field), with secrets in
    // the query string and in headers too.
    let app = app(&s);
    for body in [
        json!({"share": s.shares[0]}),
        json!({"share": s.shares[0]}),
        json!({"reset": s.shares[2]}),
        json!({"share": s.shares[1]}),
    ] {
        call(&app, unseal(&body)).await;
    }
    assert!(!s.vault.is_sealed());
    let req = Request::get("/v1/sys/seal-status?key=sk_query_secret_123")
        .header("x-api-key", "sk_header_secret_456")
        .header("authorization", "Bearer tok_bearer_secret_789")
        .header("x-request-id", "log-test-2")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.status, StatusCode::OK);

    let logs = logs();
    // The request lines are there, with id, method, route, status and latency.
    let line = logs
        .lines()
        .find(|l| l.contains("log-test-1") && l.contains("status=400"))
        .unwrap_or_else(|| panic!("no request line in:\n{logs}"));
    for part in ["method=POST", "route=/v1/sys/unseal", "latency_ms="] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let line = logs
        .lines()
        .find(|l| l.contains("log-test-2") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no request line in:\n{logs}"));
    assert!(line.contains("route=/v1/sys/seal-status"), "{line}");

    // And no secret is, in any test's lines.
    let mut secrets = vec![
        PASSPHRASE.to_owned(),
        wrong.to_owned(),
        "sk_query_secret_123".to_owned(),
        "sk_header_secret_456".to_owned(),
        "tok_bearer_secret_789".to_owned(),
    ];
    for share in &s.shares {
        secrets.push(share.clone());
        // The share's y coordinate alone, in case some log printed it without the prefix.
        secrets.push(share[25..89].to_owned());
    }
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "{secret} logged:\n{logs}");
    }
    assert!(!logs.contains("horse battery"));
}
