//! Usage and signal routes: figures per key and per owner (and never another owner's), signals
//! with their evidence, the Prometheus counter per kind, and JSON refusals of bad input.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use vault_core::Context;
use vault_core::keys::NewKey;
use vault_core::tokens::Role;
use vault_core::usage::Thresholds;
use vault_server::ServerConfig;

use crate::support::{TestVault, app, app_with, call, config, get, passphrase_vault, with_token};

fn key(v: &TestVault, owner: &str) -> (String, String) {
    let issued = v
        .vault
        .create_key(&Context::embedded(), NewKey::new(owner))
        .unwrap();
    (
        issued.info.key_id.to_string(),
        issued.key.expose_secret_text().expose_secret().to_owned(),
    )
}

/// A key rotated with no grace: (id, dead old text, live text).
fn rotated(v: &TestVault, owner: &str) -> (String, String, String) {
    let (id, old) = key(v, owner);
    let parsed = vault_core::apikey::KeyId::parse_hex(&id).unwrap();
    let new = v
        .vault
        .rotate_key(&Context::embedded(), &parsed, 0)
        .unwrap();
    (
        id,
        old,
        new.key.expose_secret_text().expose_secret().to_owned(),
    )
}

async fn verify(app: &axum::Router, token: &str, key: &str) -> Value {
    let r = call(
        app,
        with_token(
            Method::POST,
            "/v1/keys/verify",
            token,
            Some(&json!({ "key": key })),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()
}

async fn get_json(app: &axum::Router, token: &str, uri: &str) -> Value {
    let r = call(app, with_token(Method::GET, uri, token, None)).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {:?}", r.body);
    r.json()
}

fn synced(v: &TestVault) {
    assert!(v.vault.usage_sync(Duration::from_secs(20)).unwrap());
}

#[tokio::test]
async fn usage_of_a_key_and_of_an_owner_and_never_of_another_owner() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let manager = v.token(Role::Manager);
    let (a_id, a) = key(&v, "alice");
    let (b_id, b_old, b) = rotated(&v, "bob");
    for _ in 0..3 {
        verify(&app, &manager, &a).await;
    }
    verify(&app, &manager, &b).await;
    verify(&app, &manager, &b_old).await;
    synced(&v);

    let r = get_json(
        &app,
        &manager,
        &format!("/v1/keys/{a_id}/usage?bucket=hour"),
    )
    .await;
    assert_eq!(r["key_id"], a_id.as_str());
    assert_eq!(r["owner"], "alice");
    assert_eq!(r["bucket"], "hour");
    assert_eq!(r["buckets"].as_array().unwrap().len(), 7 * 24 + 1);
    assert_eq!(r["totals"]["counts"], json!({"VALID": 3}));
    assert_eq!(r["totals"]["total"], 3);
    // The verifies are in the newest bucket (or the two newest, if an hour began meanwhile).
    let buckets = r["buckets"].as_array().unwrap();
    let newest: u64 = buckets[buckets.len() - 2..]
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .sum();
    assert_eq!(newest, 3, "{r}");

    let alice = get_json(&app, &manager, "/v1/usage?owner=alice").await;
    assert_eq!(alice["owner"], "alice");
    assert!(alice.get("key_id").is_none());
    assert_eq!(alice["totals"]["counts"], json!({"VALID": 3}));
    let bob = get_json(&app, &manager, "/v1/usage?owner=bob&bucket=day").await;
    assert_eq!(bob["totals"]["counts"], json!({"VALID": 1, "NOT_FOUND": 1}));
    let nobody = get_json(&app, &manager, "/v1/usage?owner=ali").await;
    assert_eq!(nobody["totals"]["total"], 0);

    // Signals: bob's wrong secret, under bob's key and filter only.
    let s = get_json(&app, &manager, &format!("/v1/keys/{b_id}/signals")).await;
    let signals = s["signals"].as_array().unwrap();
    assert_eq!(signals.len(), 1, "{s}");
    assert_eq!(signals[0]["kind"], "wrong_secret");
    assert_eq!(signals[0]["owner"], "bob");
    assert_eq!(signals[0]["count"], 1);
    assert!(signals[0]["first_seq"].is_u64());
    let text = s.to_string();
    assert!(!text.contains(&b_old[4..]) && !text.contains(&b[4..]));
    let none = get_json(&app, &manager, &format!("/v1/keys/{a_id}/signals")).await;
    assert_eq!(none["signals"], json!([]));
    let of_alice = get_json(&app, &manager, "/v1/signals?owner=alice").await;
    assert_eq!(of_alice["signals"], json!([]));
    let of_bob = get_json(&app, &manager, "/v1/signals?owner=bob&since=0").await;
    assert_eq!(of_bob["signals"].as_array().unwrap().len(), 1);
    let later = get_json(&app, &manager, "/v1/signals?since=2100-01-01T00:00:00Z").await;
    assert_eq!(later["signals"], json!([]));

    // The documented schemas name exactly the fields sent.
    let doc = call(&app, get("/openapi.json")).await.json();
    let props = |name: &str| -> Vec<String> {
        let mut p: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} is documented"))
            .keys()
            .cloned()
            .collect();
        p.sort();
        p
    };
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(props("UsageReport"), keys(&r));
    assert_eq!(props("UsageBucket"), keys(&r["totals"]));
    assert_eq!(props("Signal"), keys(&signals[0]));
}

#[tokio::test]
async fn signals_are_counted_in_prometheus_by_kind() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let manager = v.token(Role::Manager);
    let count = |scrape: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| {
                l.strip_prefix("keyvault_usage_signals_total{kind=\"wrong_secret\"} ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0.0)
    };
    let scrape = |r: crate::support::Reply| String::from_utf8(r.body.to_vec()).unwrap();
    let before = scrape(call(&app, get("/metrics")).await);
    assert!(
        before.contains("keyvault_usage_signals_total{kind=\"new_client\"}"),
        "every kind from the start: {before}"
    );
    let (_, old, _) = rotated(&v, "carol");
    verify(&app, &manager, &old).await;
    synced(&v);
    let after = scrape(call(&app, get("/metrics")).await);
    // Other tests in this process raise signals too: at least this one.
    assert!(count(&after) >= count(&before) + 1.0, "{after}");
}

#[tokio::test]
async fn failures_without_an_end_user_address_raise_a_signal() {
    let v = passphrase_vault();
    v.unseal();
    let app = app_with(
        &v,
        ServerConfig {
            usage: Thresholds {
                unattributed_failures_per_minute: 2,
                ..Thresholds::default()
            },
            ..config()
        },
    );
    let verifier = v.token(Role::Verifier);
    let manager = v.token(Role::Manager);
    for _ in 0..3 {
        verify(&app, &verifier, "pvk_not_a_key").await;
    }
    let s = get_json(&app, &manager, "/v1/signals").await;
    let kinds: Vec<&str> = s["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"unattributed_failures"), "{s}");
    // Not an owner's business.
    let s = get_json(&app, &manager, "/v1/signals?owner=alice").await;
    assert_eq!(s["signals"], json!([]));
}

#[tokio::test]
async fn usage_routes_refuse_bad_input_with_json_errors() {
    let v = passphrase_vault();
    let app = app(&v);
    v.unseal();
    let manager = v.token(Role::Manager);
    let verifier = v.token(Role::Verifier);
    let (id, _) = key(&v, "alice");
    // Sealed: 503.
    v.vault.seal(&Context::embedded()).unwrap();
    for uri in [
        "/v1/usage?owner=a",
        "/v1/signals",
        &format!("/v1/keys/{id}/usage"),
    ] {
        call(&app, with_token(Method::GET, uri, &manager, None))
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    }
    v.unseal();
    let cases: &[(&str, StatusCode, &str)] = &[
        (
            "/v1/keys/nothex/usage",
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "/v1/keys/0123456789abcdef01234567/usage",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/keys/0123456789abcdef01234567/signals",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/keys/zz/signals",
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        ("/v1/usage", StatusCode::BAD_REQUEST, "invalid_query"),
        ("/v1/usage?owner=", StatusCode::BAD_REQUEST, "invalid_query"),
        (
            "/v1/usage?owner=a&bucket=week",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/usage?owner=a&from=yesterday",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/usage?owner=a&from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/usage?owner=a&bucket=hour&from=0",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        // One bucket more than a query may hold.
        (
            "/v1/usage?owner=a&bucket=hour&from=1764000000&to=1767603600",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/usage?owner=a&to=99999999999999999999",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/usage?owner=a&surely=1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/signals?since=soon",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/signals?owner=a&other=1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ];
    for (uri, status, code) in cases {
        let r = call(&app, with_token(Method::GET, uri, &manager, None)).await;
        r.assert_error(*status, code);
    }
    let long = format!("/v1/usage?owner={}", "a".repeat(129));
    call(&app, with_token(Method::GET, &long, &manager, None))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    // Exactly as many buckets as a query may hold (1,000 hours, on hour bounds) answer.
    let r = call(
        &app,
        with_token(
            Method::GET,
            "/v1/usage?owner=a&bucket=hour&from=1764000000&to=1767600000",
            &manager,
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["buckets"].as_array().unwrap().len(), 1000);
    // Far-future and far-past ranges answer (all zero), never 500.
    let r = call(
        &app,
        with_token(
            Method::GET,
            &format!("/v1/keys/{id}/usage?from=18446744073&to=18446744073709551"),
            &manager,
            None,
        ),
    )
    .await;
    assert!(
        r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
        "{r:?}"
    );
    // Roles: a verifier may not read usage; no token is 401.
    for uri in [
        "/v1/usage?owner=a",
        "/v1/signals",
        &format!("/v1/keys/{id}/usage"),
    ] {
        call(&app, with_token(Method::GET, uri, &verifier, None))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        call(&app, get(uri))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

/// A read right after verifies (no waiting in the test) counts them all, and so do signals:
/// the read waits for the fold to reach the log as it was when the read began. Auditors read
/// usage and signals as managers do.
#[tokio::test]
async fn reads_right_after_verifies_count_them_and_auditors_read_them_too() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let manager = v.token(Role::Manager);
    let auditor = v.token(Role::Auditor);
    for round in 1..=5u64 {
        let (id, text) = key(&v, &format!("owner-{round}"));
        for _ in 0..round {
            verify(&app, &manager, &text).await;
        }
        // A wrong secret for the key's id: a wrong_secret signal at once.
        // The last character changed (to one it is not), so the checksum fails: MALFORMED.
        let last = if text.ends_with('x') { "y" } else { "x" };
        let wrong = format!("{}{last}", &text[..text.len() - 1]);
        verify(&app, &manager, &wrong).await;
        let parsed = vault_core::apikey::KeyId::parse_hex(&id).unwrap();
        let forged = vault_core::apikey::ApiKey::new(
            v.vault.prefix(),
            parsed,
            vault_core::apikey::KeySecret::random(),
        );
        verify(&app, &manager, forged.expose_secret_text().expose_secret()).await;
        for token in [&manager, &auditor] {
            let r = get_json(&app, token, &format!("/v1/keys/{id}/usage")).await;
            assert_eq!(r["totals"]["counts"]["VALID"], round, "round {round}: {r}");
            assert_eq!(r["totals"]["counts"]["NOT_FOUND"], 1, "round {round}: {r}");
            let owner = get_json(&app, token, &format!("/v1/usage?owner=owner-{round}")).await;
            assert_eq!(owner["totals"]["counts"]["VALID"], round, "{owner}");
            let signals = get_json(&app, token, &format!("/v1/keys/{id}/signals")).await;
            assert!(
                signals["signals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["kind"] == "wrong_secret"),
                "round {round}: {signals}"
            );
        }
    }
    // Other roles still may not.
    let verifier = v.token(Role::Verifier);
    call(
        &app,
        with_token(Method::GET, "/v1/signals", &verifier, None),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
}
