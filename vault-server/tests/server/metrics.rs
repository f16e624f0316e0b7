//! `GET /metrics`: Prometheus text, no token, answers while sealed. Counters and the histogram
//! are per process (shared with every other test here), so they are checked as increases.

use axum::http::{Method, StatusCode, header};
use secrecy::ExposeSecret;
use serde_json::json;
use vault_core::Context;
use vault_core::keys::NewKey;
use vault_core::tokens::Role;

use crate::support::{Reply, app, call, get, passphrase_vault, with_token};

/// The value of the sample `name` (with its labels, exactly as rendered), if present.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

fn text(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test]
async fn metrics_answer_while_sealed_and_follow_the_seal_state() {
    let v = passphrase_vault();
    let app = app(&v);

    let scrape = text(&call(&app, get("/metrics")).await);
    assert_eq!(sample(&scrape, "keyvault_sealed"), Some(1.0), "{scrape}");
    assert!(scrape.contains("# TYPE keyvault_sealed gauge"), "{scrape}");
    let size = v.vault.audit_size() as f64;
    assert_eq!(sample(&scrape, "keyvault_audit_entries"), Some(size));
    assert_eq!(sample(&scrape, "keyvault_audit_queue_depth"), Some(0.0));

    v.unseal();
    // A token is neither needed nor looked at.
    let r = call(
        &app,
        with_token(Method::GET, "/metrics", "kvt_not_a_token", None),
    )
    .await;
    let scrape = text(&r);
    assert_eq!(sample(&scrape, "keyvault_sealed"), Some(0.0), "{scrape}");
    let size = v.vault.audit_size() as f64;
    assert_eq!(sample(&scrape, "keyvault_audit_entries"), Some(size));

    let r = call(&app, with_token(Method::POST, "/metrics", "x", None)).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn verifies_are_counted_by_code_and_timed() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let verifier = v.token(Role::Verifier);
    let issued = v
        .vault
        .create_key(&Context::embedded(), NewKey::new("dana"))
        .unwrap();
    let key = issued.key.expose_secret_text().expose_secret().to_owned();

    let valid = "keyvault_verifies_total{code=\"VALID\"}";
    let malformed = "keyvault_verifies_total{code=\"MALFORMED\"}";
    let count = "keyvault_verify_seconds_count";
    let before = text(&call(&app, get("/metrics")).await);
    let at = |scrape: &str, name: &str| sample(scrape, name).unwrap_or(0.0);

    for body in [
        json!({"key": key}),
        json!({"key": key}),
        json!({"key": key}),
        json!({"key": "pvk_nonsense"}),
    ] {
        let r = call(
            &app,
            with_token(Method::POST, "/v1/keys/verify", &verifier, Some(&body)),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    }

    let after = text(&call(&app, get("/metrics")).await);
    assert!(at(&after, valid) >= at(&before, valid) + 3.0, "{after}");
    assert!(
        at(&after, malformed) >= at(&before, malformed) + 1.0,
        "{after}"
    );
    assert!(at(&after, count) >= at(&before, count) + 4.0, "{after}");
    assert!(
        after.contains("# TYPE keyvault_verifies_total counter"),
        "{after}"
    );
    assert!(
        after.contains("# TYPE keyvault_verify_seconds histogram"),
        "{after}"
    );
    // Buckets in seconds, 50 µs to 1 s.
    for le in ["0.00005", "0.001", "1", "+Inf"] {
        let bucket = format!("keyvault_verify_seconds_bucket{{le=\"{le}\"}}");
        assert!(sample(&after, &bucket).is_some(), "{bucket}: {after}");
    }
    let all = sample(&after, "keyvault_verify_seconds_bucket{le=\"+Inf\"}").unwrap();
    assert_eq!(all, at(&after, count));
}
