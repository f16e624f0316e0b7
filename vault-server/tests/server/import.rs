//! `POST /v1/keys/import`: keys brought in by their text or their SHA-256 verify with their
//! original text, a near miss is `NOT_FOUND`, a second import changes nothing, bad input is a
//! JSON 400 or 413 that never repeats a key; and credits that refill, over HTTP.

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vault_core::clock::Clock;
use vault_core::tokens::Role;

use crate::keys::{open_vault, remember, send, verify};
use crate::support::{TestVault, app, logs, passphrase_vault_on};

const PLAIN: &str = "sk_live_51HxQ2eCzvJ8pLrT0import";
const HASHED: &str = "legacy_hash_only_7c1e9a0b2d4f6e8a";

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Imports `keys`, asserts 200; returns the answer. Remembers the texts for the log scan.
async fn import(app: &Router, token: &str, keys: Value) -> Value {
    let r = send(
        app,
        Method::POST,
        "/v1/keys/import",
        token,
        Some(json!({"keys": keys})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    r.json()
}

fn two_keys() -> Value {
    json!([
        {"key": PLAIN, "owner": "alice", "name": "old key", "scopes": ["photos:read"]},
        {"sha256": sha256_hex(HASHED), "owner": "bob", "meta": {"plan": "pro"}},
    ])
}

#[tokio::test]
async fn imported_keys_verify_with_their_text_and_a_second_import_changes_nothing() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let verifier = v.token(Role::Verifier);
    for secret in [PLAIN, HASHED] {
        remember(secret);
        remember(&format!("xxxx{}", sha256_hex(secret)));
    }
    assert_eq!(
        verify(&app, &verifier, PLAIN, json!({})).await["code"],
        "MALFORMED"
    );

    let first = import(&app, &m, two_keys()).await;
    assert_eq!(
        (first["imported"].as_u64(), first["exists"].as_u64()),
        (Some(2), Some(0))
    );
    let ids: Vec<&Value> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["key_id"])
        .collect();
    assert!(
        first["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "imported")
    );

    let plain = verify(&app, &verifier, PLAIN, json!({"scope": "photos:read"})).await;
    assert_eq!(plain["code"], "VALID", "{plain}");
    assert_eq!(&plain["key_id"], ids[0]);
    let hashed = verify(&app, &verifier, HASHED, json!({})).await;
    assert_eq!(hashed["code"], "VALID", "{hashed}");
    assert_eq!(hashed["meta"]["plan"], "pro");
    let near = format!("{}X", &PLAIN[..PLAIN.len() - 1]);
    assert_eq!(
        verify(&app, &verifier, &near, json!({})).await["code"],
        "NOT_FOUND"
    );

    // Again, with the forms swapped: each line says it exists, and there are still two keys.
    let again = json!([
        {"sha256": sha256_hex(PLAIN), "owner": "alice"},
        {"key": HASHED, "owner": "bob"},
    ]);
    let second = import(&app, &m, again).await;
    assert_eq!(
        (second["imported"].as_u64(), second["exists"].as_u64()),
        (Some(0), Some(2))
    );
    for (r, id) in second["results"].as_array().unwrap().iter().zip(&ids) {
        assert_eq!((&r["status"], &r["key_id"]), (&json!("exists"), *id));
    }
    let list = send(&app, Method::GET, "/v1/keys", &m, None).await.json();
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
    let shown = send(
        &app,
        Method::GET,
        &format!("/v1/keys/{}", ids[0].as_str().unwrap()),
        &m,
        None,
    )
    .await
    .json();
    assert_eq!(shown["imported"], true, "{shown}");

    // The audit log says imported, and holds neither a text nor a hash.
    let entries = audit_text(&v);
    assert_eq!(
        entries.matches(r#""event":"key.import""#).count(),
        2,
        "{entries}"
    );
    assert!(entries.contains(r#""imported":true"#));
    let logs = logs();
    for secret in [PLAIN, HASHED, near.as_str()] {
        for text in [secret.to_owned(), sha256_hex(secret)] {
            assert!(
                !entries.contains(&text),
                "the audit log holds a key or its hash"
            );
            assert!(!logs.contains(&text), "the log holds a key or its hash");
        }
    }
}

/// Every audit entry as JSON text.
fn audit_text(v: &TestVault) -> String {
    (0..v.vault.audit_size())
        .filter_map(|seq| v.vault.audit_entry(seq).ok().flatten())
        .map(|bytes| String::from_utf8(bytes).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn bad_imports_are_json_errors_that_never_repeat_a_key() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let cases = [
        (json!({"keys": [{"owner": "a"}]}), "invalid_input"),
        (
            json!({"keys": [{"owner": "a", "key": PLAIN, "sha256": sha256_hex(PLAIN)}]}),
            "invalid_input",
        ),
        (
            json!({"keys": [{"owner": "a", "sha256": sha256_hex(PLAIN).to_uppercase()}]}),
            "invalid_input",
        ),
        (
            json!({"keys": [{"owner": "a", "key": "short"}]}),
            "invalid_input",
        ),
        (
            json!({"keys": [{"owner": "", "key": PLAIN}]}),
            "invalid_input",
        ),
        (
            json!({"keys": [{"owner": "a", "key": PLAIN, "recoverable": true}]}),
            "invalid_input",
        ),
        (
            json!({"keys": [{"owner": "a", "key": PLAIN, "credits": {"remaining": 1, "refill": {"amount": 1, "interval": "weekly"}}}]}),
            "invalid_body",
        ),
        (
            json!({"keys": [{"owner": "a", "key": PLAIN, "enabled": PLAIN}]}),
            "invalid_body",
        ),
        (
            json!({"keys": [{"owner": "a", "kee": PLAIN}]}),
            "invalid_body",
        ),
        (json!({"keys": []}), "invalid_input"),
    ];
    for (body, code) in cases {
        let r = send(
            &app,
            Method::POST,
            "/v1/keys/import",
            &m,
            Some(body.clone()),
        )
        .await;
        let message = r.assert_error(StatusCode::BAD_REQUEST, code);
        assert!(
            !message.contains(PLAIN) && !message.contains(&sha256_hex(PLAIN)),
            "{message}"
        );
    }
    // More than 1,000 keys: 400 naming the limit; over 2 MiB: 413.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"owner": "a", "key": format!("legacy-{i:08}")}))
        .collect();
    let r = send(
        &app,
        Method::POST,
        "/v1/keys/import",
        &m,
        Some(json!({"keys": many})),
    )
    .await;
    let message = r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    assert!(message.contains("1000"), "{message}");
    let big: Vec<Value> = (0..1000).map(|i| json!({"owner": "a", "key": format!("legacy-{i:08}"), "name": "n".repeat(250), "meta": {"pad": "p".repeat(2000)}})).collect();
    let r = send(
        &app,
        Method::POST,
        "/v1/keys/import",
        &m,
        Some(json!({"keys": big})),
    )
    .await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // A verifier may not import; nothing was written by any of the above.
    let verifier = v.token(Role::Verifier);
    let r = send(
        &app,
        Method::POST,
        "/v1/keys/import",
        &verifier,
        Some(json!({"keys": two_keys()})),
    )
    .await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let list = send(&app, Method::GET, "/v1/keys", &m, None).await.json();
    assert_eq!(list["keys"].as_array().unwrap().len(), 0);
    // A thousand keys in one request are taken.
    let thousand: Vec<Value> = (0..1000)
        .map(|i| json!({"owner": "a", "key": format!("legacy-{i:08}")}))
        .collect();
    let answer = import(&app, &m, json!(thousand)).await;
    assert_eq!(answer["imported"], 1000);
}

#[tokio::test]
async fn a_rotated_imported_key_keeps_its_old_text_for_the_grace_only() {
    let clock = Clock::manual_now();
    let v = passphrase_vault_on(clock.clone());
    v.unseal();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let answer = import(&app, &m, json!([{"key": PLAIN, "owner": "alice"}])).await;
    let id = answer["results"][0]["key_id"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        Method::POST,
        &format!("/v1/keys/{id}/rotate"),
        &m,
        Some(json!({"grace_seconds": 300})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let new_key = r.json()["key"].as_str().unwrap().to_owned();
    remember(&new_key);
    assert!(new_key.starts_with("pvk_"));
    assert_eq!(verify(&app, &m, &new_key, json!({})).await["code"], "VALID");
    let old = verify(&app, &m, PLAIN, json!({})).await;
    assert_eq!(old["code"], "VALID");
    assert!(old["previous_secret"]["expires_at"].is_u64(), "{old}");
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        verify(&app, &m, PLAIN, json!({})).await["code"],
        "NOT_FOUND"
    );
    assert_eq!(verify(&app, &m, &new_key, json!({})).await["code"], "VALID");
}

#[tokio::test]
async fn credits_refill_at_the_start_of_the_interval_over_http() {
    let clock = Clock::manual_now();
    let v = passphrase_vault_on(clock.clone());
    v.unseal();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let daily = json!({"remaining": 1, "refill": {"amount": 2, "interval": "daily"}});
    let created = crate::keys::create(&app, &m, json!({"owner": "o", "credits": daily})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["refill"],
        json!({"amount": 2, "interval": "daily"}),
        "{created}"
    );
    assert_eq!(created["refilled_at"], clock.now());
    assert_eq!(verify(&app, &m, &key, json!({})).await["code"], "VALID");
    assert_eq!(
        verify(&app, &m, &key, json!({})).await["code"],
        "USAGE_EXCEEDED"
    );
    // The next midnight UTC.
    clock.advance(Duration::from_secs(86_400 - clock.now() % 86_400));
    let verdict = verify(&app, &m, &key, json!({})).await;
    assert_eq!(
        (&verdict["code"], &verdict["credits_remaining"]),
        (&json!("VALID"), &json!(1))
    );
    let shown = send(&app, Method::GET, &format!("/v1/keys/{id}"), &m, None)
        .await
        .json();
    assert_eq!(
        (&shown["credits"], &shown["refilled_at"]),
        (&json!(1), &json!(clock.now()))
    );
    assert_eq!(audit_text(&v).matches("key.credits_refilled").count(), 1);

    // PATCH: a number keeps the refill, an object replaces it, null drops both.
    let uri = format!("/v1/keys/{id}");
    let patch = |body: Value| send(&app, Method::PATCH, &uri, &m, Some(body));
    let r = patch(json!({"credits": 7})).await.json();
    assert_eq!(
        (&r["credits"], &r["refill"]["amount"]),
        (&json!(7), &json!(2))
    );
    let monthly =
        json!({"remaining": 3, "refill": {"amount": 10, "interval": "monthly", "day": 31}});
    let r = patch(json!({"credits": monthly})).await.json();
    assert_eq!(
        r["refill"],
        json!({"amount": 10, "interval": "monthly", "day": 31}),
        "{r}"
    );
    let r = patch(json!({"credits": {"remaining": 3}})).await.json();
    assert!(r.get("refill").is_none(), "{r}");
    let r = patch(json!({"credits": null})).await.json();
    assert!(
        r.get("credits").is_none() && r.get("refill").is_none(),
        "{r}"
    );
    let bad = json!({"credits": {"remaining": 1, "refill": {"amount": 1, "interval": "daily", "day": 3}}});
    patch(bad)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn near_misses_of_imported_keys_count_in_the_throttle_and_the_real_text_is_never_refused() {
    let v = open_vault();
    let m = v.token(Role::Manager);
    import(&app(&v), &m, two_keys()).await;
    let config = vault_server::ServerConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        verify_failures_per_minute: 3,
        ..crate::support::config()
    };
    let server = crate::support::Server::start(&v, config).await;
    let bearer = format!("Bearer {m}");
    let verify_from = |key: String| {
        let bearer = bearer.clone();
        let server = &server;
        async move {
            let headers = [
                ("authorization", bearer.as_str()),
                ("x-api-key", key.as_str()),
                ("x-forwarded-for", "203.0.113.7"),
            ];
            server
                .send(Method::POST, "/v1/keys/verify", &headers, "")
                .await
        }
    };
    for i in 0..3 {
        let r = verify_from(format!("{PLAIN}{i}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["code"], "NOT_FOUND");
    }
    verify_from(format!("{PLAIN}9"))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "throttled");
    let r = verify_from(PLAIN.to_owned()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["code"], "VALID");
    server.stop().await;
}
