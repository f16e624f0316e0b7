//! The operator's routes: seal, rotate, rewrap and rotate-audit-key (the rekey and
//! generate-root ceremonies: `ceremonies.rs`).

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vault_core::audit::Entry;
use vault_core::keys::NewKey;
use vault_core::tokens::Role;
use vault_core::{Context, RecordTree, Vault};

use crate::support::{
    Reply, TestVault, app, call, get, passphrase_vault, shares_vault, unseal, with_token,
};

pub(crate) async fn post(app: &Router, uri: &str, token: &str, body: Option<Value>) -> Reply {
    call(app, with_token(Method::POST, uri, token, body.as_ref())).await
}

/// Every audit entry of the vault, parsed.
pub(crate) fn entries(vault: &Vault) -> Vec<Entry> {
    (0..vault.audit_size())
        .map(|seq| Entry::parse(&vault.audit_entry(seq).unwrap().unwrap()).unwrap())
        .collect()
}

pub(crate) fn token_id(token: &str, vault: &TestVault) -> String {
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
            .danger()
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

pub(crate) const NEW_PASSPHRASE: &str = "a brand new passphrase, long enough";

/// A POST with no `Authorization` header at all.
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
            Some(json!({"new": {"shares": 3, "threshold": 2}})),
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

#[tokio::test]
async fn rotate_audit_key_moves_checkpoints_to_a_new_key_and_digests_answer_every_generation() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let operator = v.token(Role::Operator);
    let auditor = v.token(Role::Auditor);
    let old = vault_core::audit::note::NoteVerifier::parse(&v.audit_public_key).unwrap();
    // A string presented before the rotation, recorded as a generation-1 digest.
    let tried = "pvk_tried_before_the_audit_key_rotation";
    v.vault
        .verify(
            &Context::embedded(),
            vault_core::keys::VerifyRequest::new(tried),
        )
        .unwrap();

    post(&app, "/v1/sys/rotate-audit-key", &auditor, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = post(&app, "/v1/sys/rotate-audit-key", &operator, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let answer = r.json();
    assert_eq!(answer["generation"], 2);
    assert_eq!(answer["index_generation"], 2);
    let public_key = answer["public_key"].as_str().unwrap().to_owned();
    let new = vault_core::audit::note::NoteVerifier::parse(&public_key).unwrap();
    assert!(answer["transition_size"].as_u64().unwrap() > answer["seq"].as_u64().unwrap());

    let r = call(
        &app,
        with_token(Method::GET, "/v1/audit/public-key", &auditor, None),
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"public_key": public_key, "public_keys": [v.audit_public_key, public_key]})
    );
    let r = call(
        &app,
        with_token(Method::GET, "/v1/audit/checkpoint", &auditor, None),
    )
    .await;
    let note = r.json()["checkpoint"].as_str().unwrap().to_owned();
    new.verify(&note).unwrap();
    assert!(old.verify(&note).is_err());

    let r = post(
        &app,
        "/v1/audit/digest",
        &auditor,
        Some(json!({"text": tried})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let digests = r.json()["digests"].as_array().unwrap().clone();
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[0]["generation"], 1);
    assert_eq!(digests[1]["generation"], 2);
    assert_eq!(r.json()["digest"], digests[1]["digest"]);
    let recorded: Vec<String> = entries(&v.vault)
        .iter()
        .filter_map(|e| e.details.get("presented_digest"))
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert!(recorded.iter().any(|d| d == &digests[0]["digest"]));
    assert!(!recorded.iter().any(|d| d == &digests[1]["digest"]));
}
