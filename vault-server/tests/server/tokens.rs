//! `/v1/sys/tokens`: admin-only token management, and every role held to its routes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use vault_core::clock::Clock;

use crate::support::{
    Reply, app, assert_json_refusals, call, passphrase_vault, passphrase_vault_on, shares_vault,
    with_token,
};

const TOKENS: &str = "/v1/sys/tokens";

async fn create(app: &axum::Router, token: &str, body: Value) -> Reply {
    call(app, with_token(Method::POST, TOKENS, token, Some(&body))).await
}

#[tokio::test]
async fn admin_creates_each_role_and_each_token_is_held_to_its_role() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);

    let mut made = Vec::new();
    for role in ["verifier", "manager", "auditor", "operator", "admin"] {
        let r = create(&app, &v.root_token, json!({"role": role, "name": role})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        let body = r.json();
        let token = body["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("kvt_"), "{token}");
        let id = body["token_id"].as_str().unwrap();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(body["role"], role);
        assert_eq!(body["name"], role);
        assert!(body["created_at"].as_u64().unwrap() > 1_600_000_000);
        assert!(body.get("expires_at").is_none());
        assert!(body.get("revoked_at").is_none());
        assert!(body["created_by"].is_string(), "the root token made it");
        made.push((role, token));
    }

    // What each role may reach among the sys, token and audit routes (a 403 also proves the
    // token authenticated: a bad one is 401). Seal is tried only where it must be refused.
    let public_key = || Request::get("/v1/audit/public-key");
    for (role, token) in &made {
        let expect = |allowed: bool| {
            if allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        };
        let admin = *role == "admin";
        let r = call(
            &app,
            public_key()
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, expect(admin || *role == "auditor"), "{role}");
        let r = call(
            &app,
            with_token(Method::GET, "/v1/audit/export", token, None),
        )
        .await;
        assert_eq!(r.status, expect(admin || *role == "auditor"), "{role}");
        let r = call(&app, with_token(Method::GET, TOKENS, token, None)).await;
        assert_eq!(r.status, expect(admin), "{role}");
        let r = create(&app, token, json!({"role": "verifier"})).await;
        let created = if admin {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(r.status, created, "{role}");
        let r = call(
            &app,
            with_token(Method::POST, "/v1/sys/rotate", token, None),
        )
        .await;
        assert_eq!(r.status, expect(admin || *role == "operator"), "{role}");
        if !admin && *role != "operator" {
            let r = call(&app, with_token(Method::POST, "/v1/sys/seal", token, None)).await;
            r.assert_error(StatusCode::FORBIDDEN, "forbidden");
            assert!(!v.vault.is_sealed());
        }
        // The manager's own routes (`/v1/keys`) take it; the verifier's are refused it.
        if *role == "manager" || *role == "verifier" {
            let r = call(
                &app,
                with_token(Method::GET, "/v1/keys?owner=x", token, None),
            )
            .await;
            assert_eq!(r.status, expect(*role == "manager"), "{role}");
        }
    }
    let r = create(&app, &made[1].1, json!({"role": "verifier"})).await;
    let m = r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(m.contains("admin"), "{m}");
}

#[tokio::test]
async fn a_token_never_makes_a_token_that_outlives_it() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let r = create(
        &app,
        &v.root_token,
        json!({"role": "admin", "ttl_seconds": 100}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let body = r.json();
    let short = body["token"].as_str().unwrap();
    assert_eq!(
        body["expires_at"].as_u64().unwrap(),
        body["created_at"].as_u64().unwrap() + 100
    );

    for ttl in [json!(null), json!(1000)] {
        let r = create(&app, short, json!({"role": "verifier", "ttl_seconds": ttl})).await;
        let m = r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(m.contains("outlive"), "{m}");
    }
    let r = create(&app, short, json!({"role": "verifier", "ttl_seconds": 50})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["created_by"], body["token_id"]);
}

#[tokio::test]
async fn revoke_ends_a_token_at_its_next_request() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let r = create(&app, &v.root_token, json!({"role": "auditor"})).await;
    let body = r.json();
    let (token, id) = (
        body["token"].as_str().unwrap(),
        body["token_id"].as_str().unwrap(),
    );
    let key = || with_token(Method::GET, "/v1/audit/public-key", token, None);
    assert_eq!(call(&app, key()).await.status, StatusCode::OK);

    let revoke = |id: &str| {
        with_token(
            Method::POST,
            &format!("/v1/sys/tokens/{id}/revoke"),
            &v.root_token,
            None,
        )
    };
    let r = call(&app, revoke(id)).await;
    assert_eq!(r.status, StatusCode::OK);
    let revoked = r.json();
    assert_eq!(revoked["token_id"], id);
    assert!(revoked["revoked_at"].as_u64().is_some());
    assert!(revoked.get("token").is_none());
    call(&app, key())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Again: the same record.
    let r = call(&app, revoke(id)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["revoked_at"], revoked["revoked_at"]);

    // The list shows it, revoked, and never a token's text.
    let r = call(&app, with_token(Method::GET, TOKENS, &v.root_token, None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!text.contains(token) && !text.contains("kvt_"), "{text}");
    let list = r.json();
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "the root token and this one");
    let listed = tokens.iter().find(|t| t["token_id"] == id).unwrap();
    assert_eq!(listed["revoked_at"], revoked["revoked_at"]);
    assert_eq!(listed["role"], "auditor");

    call(&app, revoke("0123456789abcdef01234567"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for bad in [
        "xyz",
        "0123456789abcdef0123456",
        "0123456789abcdef012345678",
    ] {
        call(&app, revoke(bad))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_path");
    }

    // The root token can revoke itself; its next request is refused.
    let root_id = tokens.iter().find(|t| t["token_id"] != id).unwrap()["token_id"]
        .as_str()
        .unwrap();
    assert_eq!(call(&app, revoke(root_id)).await.status, StatusCode::OK);
    call(&app, with_token(Method::GET, TOKENS, &v.root_token, None))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let clock = Clock::manual_now();
    let v = passphrase_vault_on(clock.clone());
    v.unseal();
    let app = app(&v);
    let r = create(
        &app,
        &v.root_token,
        json!({"role": "auditor", "ttl_seconds": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let key = || with_token(Method::GET, "/v1/audit/public-key", &token, None);
    assert_eq!(call(&app, key()).await.status, StatusCode::OK);
    // Expiry is checked in whole seconds: past `created_at + 1` for certain after 2.1 s.
    clock.advance(Duration::from_millis(2100));
    call(&app, key())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn missing_or_bad_tokens_are_401() {
    let v = passphrase_vault();
    v.unseal();
    let other = shares_vault();
    let app = app(&v);

    let r = call(&app, Request::get(TOKENS).body(Body::empty()).unwrap()).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    for authorization in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer not-a-token".to_owned(),
        format!("Basic {}", v.root_token),
        format!("Bearer {}x", v.root_token),
        format!("Bearer {}", other.root_token),
        // An API key's layout with another prefix is not a token.
        format!("Bearer pvk_{}", &v.root_token[4..]),
    ] {
        let req = Request::get(TOKENS)
            .header(header::AUTHORIZATION, &authorization)
            .body(Body::empty())
            .unwrap();
        let r = call(&app, req).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Case does not matter in the scheme.
    let req = Request::get(TOKENS)
        .header(header::AUTHORIZATION, format!("bearer {}", v.root_token))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_create_bodies_are_400_naming_the_field() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    assert_json_refusals(&app, Method::POST, TOKENS, &v.root_token).await;

    for (body, field) in [
        (json!({}), "missing field `role`"),
        (json!({"role": "root"}), "role: unknown role"),
        (json!({"role": "Admin"}), "role: unknown role"),
        (json!({"role": 1}), "role: invalid type"),
        (
            json!({"role": "admin", "ttl_seconds": "10"}),
            "ttl_seconds: invalid type",
        ),
        (
            json!({"role": "admin", "ttl_seconds": -1}),
            "ttl_seconds: invalid value",
        ),
        (json!({"role": "admin", "name": 5}), "name: invalid type"),
        (
            json!({"role": "admin", "token": "kvt_x"}),
            "unknown field `token`",
        ),
    ] {
        let r = create(&app, &v.root_token, body.clone()).await;
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
        assert!(m.contains(field), "{body}: {m}");
    }
    for body in [
        json!({"role": "admin", "ttl_seconds": 0}),
        json!({"role": "admin", "name": "a\nb"}),
        json!({"role": "admin", "name": "n".repeat(300)}),
    ] {
        let r = create(&app, &v.root_token, body.clone()).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    }

    // Nothing was made.
    let r = call(&app, with_token(Method::GET, TOKENS, &v.root_token, None)).await;
    assert_eq!(r.json()["tokens"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn token_routes_answer_503_while_sealed() {
    let v = passphrase_vault();
    let app = app(&v);
    let root = &v.root_token;
    for req in [
        with_token(Method::GET, TOKENS, root, None),
        with_token(Method::POST, TOKENS, root, Some(&json!({"role": "admin"}))),
        with_token(
            Method::POST,
            "/v1/sys/tokens/0123456789abcdef01234567/revoke",
            root,
            None,
        ),
    ] {
        call(&app, req)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    }
    // The tokens a sealed vault cannot check are checked once it is unsealed.
    v.unseal();
    let r = call(&app, with_token(Method::GET, TOKENS, root, None)).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn token_sys_and_audit_routes_are_documented_with_bearer_security() {
    let doc = serde_json::to_value(vault_server::openapi()).unwrap();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (method, path, body) in [
        ("post", "/v1/sys/tokens", Some("CreateTokenRequest")),
        ("get", "/v1/sys/tokens", None),
        ("post", "/v1/sys/tokens/{id}/revoke", None),
        ("post", "/v1/sys/seal", None),
        ("post", "/v1/sys/rotate", None),
        ("post", "/v1/sys/rewrap", None),
        ("get", "/v1/sys/backup", None),
        ("post", "/v1/sys/rekey", Some("RekeyRequest")),
        ("get", "/v1/audit/export", None),
        ("get", "/v1/audit/checkpoint", None),
        ("get", "/v1/audit/proof", None),
        ("get", "/v1/audit/public-key", None),
        ("post", "/v1/audit/digest", Some("DigestRequest")),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        for status in ["401", "403", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
        }
        let request = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        match body {
            Some(name) => assert_eq!(*request, format!("#/components/schemas/{name}")),
            None => assert!(request.is_null(), "{method} {path}"),
        }
    }
    // generate-root takes no token: the unseal credential is its authority.
    let op = &doc["paths"]["/v1/sys/generate-root"]["post"];
    assert_eq!(op["security"], json!([]), "{op}");
    assert!(op["responses"]["401"].is_null() && op["responses"]["403"].is_null());
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/GenerateRootRequest"
    );
    // None on loopback or the Unix socket, a bearer token elsewhere.
    for path in ["/metrics", "/openapi.json"] {
        let op = &doc["paths"][path]["get"];
        assert_eq!(op["security"], json!([{}, {"bearer": []}]), "{path}");
    }
    let export = &doc["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"];
    assert!(export.get("application/x-ndjson").is_some() && export.get("text/csv").is_some());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["RoleName"]["enum"],
        json!(["verifier", "manager", "auditor", "operator", "admin"])
    );
    for name in [
        "CreatedToken",
        "TokenBody",
        "TokenList",
        "NewMethod",
        "CeremonyAnswer",
        "RotateAnswer",
        "RewrapAnswer",
        "CheckpointAnswer",
        "ProofAnswer",
        "InclusionProof",
        "ConsistencyProof",
        "PublicKeyAnswer",
        "DigestAnswer",
    ] {
        assert!(schemas[name].is_object(), "{name}");
    }
    // Request bodies refuse unknown fields, as the server does.
    for name in [
        "CreateTokenRequest",
        "RekeyRequest",
        "NewMethod",
        "DigestRequest",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
}

#[tokio::test]
async fn junk_bearer_tokens_from_one_peer_are_summed_not_logged_one_by_one() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use vault_core::audit::Entry;
    use vault_core::tokens::Role;

    let v = passphrase_vault();
    v.unseal();
    let auditor = v.token(Role::Auditor);
    let server = crate::support::Server::start(&v, crate::support::config()).await;
    let before = v.vault.audit_size();
    // One keep-alive connection, so that all come from one peer address and port.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    const JUNK: usize = 10_000;
    let began = std::time::Instant::now();
    for i in 0..JUNK {
        let req = Request::get("/v1/sys/tokens")
            .header(header::AUTHORIZATION, format!("Bearer kvt_junk_{i}"))
            .body(Empty::<axum::body::Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
        assert_eq!(parts.headers[header::CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // Answered with nothing written one by one: a sum is written once its minute is over, so
    // a loop that took a minute or more on a loaded machine may already have written one...
    let written = v.vault.audit_size() - before;
    let minutes = began.elapsed().as_secs() / 60;
    assert!(
        written <= minutes,
        "{written} entries written during {minutes} whole minutes of refusals"
    );
    drop(sender);
    server.stop().await;

    // ...and summed: a few entries (one per minute the run took), whose counts add up.
    let r = call(
        &app(&v),
        with_token(Method::GET, "/v1/audit/export", &auditor, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let sums: Vec<Entry> = r
        .body
        .split(|b| *b == b'\n')
        .filter_map(|line| Entry::parse(line).ok())
        .filter(|e| e.event == "token.authenticate")
        .collect();
    assert!((1..=3).contains(&sums.len()), "{sums:?}");
    let refused: u64 = sums
        .iter()
        .map(|e| e.details["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(refused, JUNK as u64);
    let first = hex(&v.vault.refused_token_digest("kvt_junk_0").unwrap());
    assert_eq!(sums[0].details["presented_digest"], first.as_str());
    for sum in &sums {
        assert_eq!(sum.outcome, "unauthorized");
        assert_eq!(sum.client.as_deref(), Some("127.0.0.1"));
        assert!(sum.details["from_ms"].as_u64() <= sum.details["until_ms"].as_u64());
    }
    assert!(v.vault.audit_size() - before <= 3);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
