//! `/v1/keys` under bad input and retries: every refusal a 400 naming the problem (never a
//! 500), `Idempotency-Key` on create and rotate, the documented schemas against the answers,
//! and idempotent answers forgotten at seal.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use vault_core::tokens::Role;

use crate::keys::{create, open_vault, remember, send, verify};
use crate::support::{Reply, app, assert_json_refusals, call};

#[tokio::test]
async fn bad_input_is_a_400_naming_the_problem_never_a_500() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let admin = v.token(Role::Admin);
    let key = create(&app, &m, json!({"owner": "o"})).await;
    let id = key["key_id"].as_str().unwrap().to_owned();

    // The refusals every JSON body shares.
    assert_json_refusals(&app, Method::POST, "/v1/keys", &m).await;
    assert_json_refusals(&app, Method::PATCH, &format!("/v1/keys/{id}"), &m).await;

    let create_err = |body: Value| {
        let app = app.clone();
        let m = m.clone();
        async move {
            let r = send(&app, Method::POST, "/v1/keys", &m, Some(body)).await;
            assert_ne!(
                r.status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&r.body)
            );
            r
        }
    };
    let body_error = |r: Reply, needle: &str| {
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
        assert!(m.contains(needle), "{needle} in {m}");
    };
    let input_error = |r: Reply, needle: &str| {
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
        assert!(m.contains(needle), "{needle} in {m}");
    };
    body_error(create_err(json!({})).await, "missing field `owner`");
    body_error(
        create_err(json!({"owner": 5})).await,
        "owner: invalid type: integer",
    );
    body_error(
        create_err(json!({"owner": "o", "scopes": "read"})).await,
        "scopes: invalid type",
    );
    body_error(
        create_err(json!({"owner": "o", "meta": [1]})).await,
        "meta: invalid type",
    );
    body_error(
        create_err(json!({"owner": "o", "credits": -1})).await,
        "credits: invalid value",
    );
    body_error(
        create_err(json!({"owner": "o", "enabled": "yes"})).await,
        "enabled: invalid type",
    );
    body_error(
        create_err(json!({"owner": "o", "ratelimit": {"limit": 1}})).await,
        "ratelimit: missing field `period_seconds`",
    );
    body_error(
        create_err(
            json!({"owner": "o", "ratelimit": {"limit": 1, "period_seconds": 1, "burst": 2}}),
        )
        .await,
        "ratelimit.burst: unknown field `burst`",
    );
    body_error(
        create_err(json!({"owner": "o", "colour": "red"})).await,
        "unknown field `colour`",
    );
    for bad in [
        "2030-01-01",
        "2030-02-30T00:00:00Z",
        "tomorrow",
        "2030-01-01T00:00:00",
    ] {
        let r = create_err(json!({"owner": "o", "expires_at": bad})).await;
        body_error(r, "expires_at: expected an RFC 3339 time");
    }
    body_error(
        create_err(json!({"owner": "o", "expires_at": 1_900_000_000})).await,
        "expires_at",
    );
    input_error(
        create_err(json!({"owner": "o", "expires_at": "2999-01-01T00:00:00Z", "ttl_seconds": 5}))
            .await,
        "not both",
    );
    input_error(
        create_err(json!({"owner": "o", "ttl_seconds": 0})).await,
        "at least 1",
    );
    input_error(
        create_err(json!({"owner": "o", "expires_at": "2001-01-01T00:00:00Z"})).await,
        "in the future",
    );
    // vault-core's limits, with its message.
    let scopes: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    input_error(
        create_err(json!({"owner": "o", "scopes": scopes})).await,
        "at most 64 scopes",
    );
    input_error(
        create_err(json!({"owner": ""})).await,
        "owner must be 1 to 128 bytes",
    );
    input_error(
        create_err(json!({"owner": "x".repeat(129)})).await,
        "owner must be 1 to 128 bytes",
    );
    input_error(
        create_err(json!({"owner": "o\u{7}"})).await,
        "control characters",
    );
    input_error(
        create_err(json!({"owner": "o", "scopes": [""]})).await,
        "each scope",
    );
    input_error(
        create_err(json!({"owner": "o", "meta": {"big": "x".repeat(5000)}})).await,
        "meta must be at most",
    );
    input_error(
        create_err(json!({"owner": "o", "ratelimit": {"limit": 0, "period_seconds": 1}})).await,
        "ratelimit",
    );

    // PATCH: null only where it means something; the same limits.
    let patch = |body: Value| {
        let app = app.clone();
        let m = m.clone();
        let uri = format!("/v1/keys/{id}");
        async move { send(&app, Method::PATCH, &uri, &m, Some(body)).await }
    };
    for field in ["name", "scopes", "meta", "enabled"] {
        body_error(
            patch(json!({field: null})).await,
            &format!("{field}: invalid type: null"),
        );
    }
    body_error(
        patch(json!({"expires_at": "soon"})).await,
        "expires_at: expected an RFC 3339",
    );
    body_error(
        patch(json!({"owner": "other"})).await,
        "unknown field `owner`",
    );
    input_error(patch(json!({"scopes": scopes})).await, "at most 64 scopes");
    input_error(
        patch(json!({"expires_at": "1999-01-01T00:00:00Z"})).await,
        "in the future",
    );

    // Rotate: an optional body, but a bad one is refused.
    let rotate = format!("/v1/keys/{id}/rotate");
    let r = send(
        &app,
        Method::POST,
        &rotate,
        &m,
        Some(json!({"grace_seconds": 30 * 86400 + 1})),
    )
    .await;
    input_error(r, "at most 2592000");
    let r = send(&app, Method::POST, &rotate, &m, Some(json!({"grace": 5}))).await;
    body_error(r, "unknown field `grace`");
    let r = send(
        &app,
        Method::POST,
        &rotate,
        &m,
        Some(json!({"grace_seconds": "5"})),
    )
    .await;
    body_error(r, "grace_seconds: invalid type");
    let raw = |content_type: Option<&str>, body: &str| {
        let mut req = Request::post(&rotate).header(header::AUTHORIZATION, format!("Bearer {m}"));
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        req.body(Body::from(body.to_owned())).unwrap()
    };
    call(&app, raw(Some("application/json"), "{\"grace_seconds\": "))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    call(&app, raw(None, "{}"))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    call(
        &app,
        raw(
            Some("application/json"),
            &format!("{{\"x\": \"{}\"}}", "a".repeat(70_000)),
        ),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // Malformed ids in the path: 400, and a key pasted there is not echoed.
    let pasted = key["key"].as_str().unwrap();
    for bad in [
        "nope",
        "0123456789abcdef0123456",
        "0123456789abcdef012345678",
        "zz23456789abcdef01234567",
        pasted,
    ] {
        for (method, uri, body, token) in [
            (Method::GET, format!("/v1/keys/{bad}"), None, &m),
            (
                Method::PATCH,
                format!("/v1/keys/{bad}"),
                Some(json!({})),
                &m,
            ),
            (Method::POST, format!("/v1/keys/{bad}/rotate"), None, &m),
            (Method::POST, format!("/v1/keys/{bad}/revoke"), None, &m),
            (Method::POST, format!("/v1/keys/{bad}/reveal"), None, &admin),
        ] {
            let r = send(&app, method, &uri, token, body).await;
            let msg = r.assert_error(StatusCode::BAD_REQUEST, "invalid_path");
            assert!(msg.contains("24 hexadecimal"), "{msg}");
            assert!(!msg.contains(bad), "{msg}");
        }
    }
    // A well-formed id of no key: 404.
    let missing = "00000000000000000000abcd";
    for (method, uri, body, token) in [
        (Method::GET, format!("/v1/keys/{missing}"), None, &m),
        (
            Method::PATCH,
            format!("/v1/keys/{missing}"),
            Some(json!({})),
            &m,
        ),
        (Method::POST, format!("/v1/keys/{missing}/rotate"), None, &m),
        (Method::POST, format!("/v1/keys/{missing}/revoke"), None, &m),
        (
            Method::POST,
            format!("/v1/keys/{missing}/reveal"),
            None,
            &admin,
        ),
    ] {
        send(&app, method, &uri, token, body)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    // Static segments win over `{id}`: no "verify is not a key id".
    let r = send(&app, Method::GET, "/v1/keys/verify", &m, None).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let r = send(&app, Method::GET, "/v1/keys/revoke", &m, None).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // List and revoke-by-owner queries.
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("status=lost", "status"),
        ("cursor=zz", "cursor"),
        ("colour=red", "unknown field `colour`"),
    ] {
        let r = send(&app, Method::GET, &format!("/v1/keys?{query}"), &m, None).await;
        let msg = r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
        assert!(msg.contains(needle), "{query}: {msg}");
    }
    let r = send(&app, Method::GET, "/v1/keys?limit=1000", &m, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&app, Method::POST, "/v1/keys/revoke", &m, None).await;
    let msg = r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(msg.contains("missing field `owner`"), "{msg}");
    let r = send(&app, Method::POST, "/v1/keys/revoke?owner=", &m, None).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn an_idempotency_key_makes_create_and_rotate_retries_safe() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let other = v.token(Role::Manager);
    let post = |uri: &str, token: &str, idem: &str, body: &str| {
        Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", idem)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };

    let body = r#"{"owner": "idem", "scopes": ["a"], "meta": {"x": 1, "y": 2}}"#;
    let first = call(&app, post("/v1/keys", &m, "create-1", body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    remember(first.json()["key"].as_str().unwrap());
    // The same request, formatted differently: the same answer, secret included.
    let same = r#"{"meta": {"x": 1, "y": 2}, "scopes": ["a"],   "owner": "idem"}"#;
    let retry = call(&app, post("/v1/keys", &m, "create-1", same)).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(retry.json(), first.json());
    let r = send(&app, Method::GET, "/v1/keys?owner=idem", &m, None).await;
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 1);

    // Another body, or the same key on another route: 409.
    let r = call(
        &app,
        post(
            "/v1/keys",
            &m,
            "create-1",
            r#"{"owner": "idem", "name": "2"}"#,
        ),
    )
    .await;
    r.assert_error(StatusCode::CONFLICT, "idempotency_conflict");
    let id = first.json()["key_id"].as_str().unwrap().to_owned();
    let rotate = format!("/v1/keys/{id}/rotate");
    let r = call(&app, post(&rotate, &m, "create-1", "{}")).await;
    r.assert_error(StatusCode::CONFLICT, "idempotency_conflict");

    // Another token's same header value is its own.
    let theirs = call(&app, post("/v1/keys", &other, "create-1", body)).await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    remember(theirs.json()["key"].as_str().unwrap());
    assert_ne!(theirs.json()["key"], first.json()["key"]);

    // A failed request is not kept: fixed and retried with the same key, it runs.
    let r = call(&app, post("/v1/keys", &m, "create-2", r#"{"owner": ""}"#)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    let r = call(
        &app,
        post("/v1/keys", &m, "create-2", r#"{"owner": "idem"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    remember(r.json()["key"].as_str().unwrap());

    // Rotate: one rotation, however often retried.
    let first = call(
        &app,
        post(&rotate, &m, "rotate-1", r#"{"grace_seconds": 60}"#),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let rotated = first.json()["key"].as_str().unwrap().to_owned();
    remember(&rotated);
    let retry = call(
        &app,
        post(&rotate, &m, "rotate-1", r#"{"grace_seconds":60}"#),
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.json(), first.json());
    assert_eq!(verify(&app, &m, &rotated, json!({})).await["code"], "VALID");
    let r = call(
        &app,
        post(&rotate, &m, "rotate-1", r#"{"grace_seconds": 61}"#),
    )
    .await;
    r.assert_error(StatusCode::CONFLICT, "idempotency_conflict");

    // A malformed header is refused.
    for bad in ["", &"k".repeat(256), "has space"] {
        let r = call(&app, post("/v1/keys", &m, bad, body)).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_header");
    }
}

#[tokio::test]
async fn the_documented_schemas_match_the_answers() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let doc = serde_json::to_value(vault_server::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let props = |name: &str| -> Vec<String> {
        let schema = &schemas[name];
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: {schema}"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    let keys_of = |v: &Value| -> Vec<String> {
        let mut names: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    // A key with every optional field set, and a verify with every optional field.
    let created = create(
        &app,
        &m,
        json!({"owner": "o", "ttl_seconds": 60, "ratelimit": {"limit": 9, "period_seconds": 9},
               "credits": {"remaining": 9, "refill": {"amount": 9, "interval": "daily"}}}),
    )
    .await;
    let uri = format!("/v1/keys/{}/rotate", created["key_id"].as_str().unwrap());
    let rotated = send(
        &app,
        Method::POST,
        &uri,
        &m,
        Some(json!({"grace_seconds": 10})),
    )
    .await
    .json();
    remember(rotated["key"].as_str().unwrap());
    let revoked = send(
        &app,
        Method::POST,
        &uri.replace("rotate", "revoke"),
        &m,
        None,
    )
    .await
    .json();
    let mut info = keys_of(&revoked);
    info.extend(keys_of(&rotated));
    info.sort();
    info.dedup();
    info.retain(|k| k != "key");
    assert_eq!(props("KeyInfo"), info);
    let verdict = verify(&app, &m, rotated["key"].as_str().unwrap(), json!({})).await;
    assert_eq!(verdict["code"], "REVOKED");
    let k2 = create(
        &app,
        &m,
        json!({"owner": "o", "ttl_seconds": 60, "ratelimit": {"limit": 9, "period_seconds": 9},
               "credits": 9}),
    )
    .await;
    let uri = format!("/v1/keys/{}/rotate", k2["key_id"].as_str().unwrap());
    send(
        &app,
        Method::POST,
        &uri,
        &m,
        Some(json!({"grace_seconds": 10})),
    )
    .await;
    let verdict = verify(&app, &m, k2["key"].as_str().unwrap(), json!({})).await;
    assert_eq!(keys_of(&verdict), props("Verdict"));
    let codes = schemas["VerifyCode"].to_string();
    for code in [
        "MALFORMED",
        "NOT_FOUND",
        "INSUFFICIENT_SCOPE",
        "USAGE_EXCEEDED",
        "VALID",
    ] {
        assert!(codes.contains(code), "{codes}");
    }
    assert!(schemas["KeyStatus"].to_string().contains("\"revoked\""));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let create_op = &doc["paths"]["/v1/keys"]["post"];
    assert_eq!(create_op["security"], json!([{"bearer": []}]));
    assert!(create_op["responses"]["201"].is_object());
}

#[tokio::test]
async fn idempotent_answers_are_forgotten_when_the_vault_seals() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let post = || {
        Request::post("/v1/keys")
            .header(header::AUTHORIZATION, format!("Bearer {m}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", "across-a-seal")
            .body(Body::from(r#"{"owner": "seal"}"#))
            .unwrap()
    };
    let first = call(&app, post()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    remember(first.json()["key"].as_str().unwrap());
    assert_eq!(call(&app, post()).await.json(), first.json());

    v.vault.seal(&vault_core::Context::embedded()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    v.unseal();
    let after = call(&app, post()).await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert!(after.headers.get("idempotent-replayed").is_none());
    remember(after.json()["key"].as_str().unwrap());
    assert_ne!(after.json()["key"], first.json()["key"]);
}
