//! `GET /v1/sys/backup`: operator only, streamed, and the stream restores into a vault whose
//! keys verify and whose audit log extends the backed-up one.

use std::io::Cursor;

use axum::http::{Method, StatusCode};
use secrecy::ExposeSecret;
use vault_core::audit::Entry;
use vault_core::backup::verify_backup;
use vault_core::kdf::Passphrase;
use vault_core::keys::{NewKey, VerifyCode, VerifyRequest};
use vault_core::tokens::Role;
use vault_core::{Context, Vault};

use crate::support::{PASSPHRASE, Server, app, call, config, get, passphrase_vault, with_token};

#[tokio::test]
async fn backup_answers_operators_only_and_503_while_sealed() {
    let v = passphrase_vault();
    let app = app(&v);
    call(
        &app,
        with_token(Method::GET, "/v1/sys/backup", &v.root_token, None),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    v.unseal();
    call(&app, get("/v1/sys/backup"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    for role in [Role::Verifier, Role::Manager, Role::Auditor] {
        let token = v.token(role);
        call(
            &app,
            with_token(Method::GET, "/v1/sys/backup", &token, None),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    for token in [v.token(Role::Operator), v.root_token.clone()] {
        let r = call(
            &app,
            with_token(Method::GET, "/v1/sys/backup", &token, None),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["content-type"], "application/octet-stream");
        assert_eq!(r.headers["cache-control"], "no-store");
        verify_backup(Cursor::new(&r.body), |_| {}).unwrap();
    }
    let outcomes: Vec<(String, String)> = (0..v.vault.audit_size())
        .map(|seq| Entry::parse(&v.vault.audit_entry(seq).unwrap().unwrap()).unwrap())
        .filter(|e| e.event == "sys.backup")
        .map(|e| (e.outcome, e.actor))
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes
            .iter()
            .all(|(o, a)| o == "ok" && a.starts_with("token:"))
    );
}

#[tokio::test]
async fn a_backup_streamed_over_http_restores_and_its_log_extends_the_old_checkpoint() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = Context::embedded();
    let key = v.vault.create_key(&ctx, NewKey::new("alice")).unwrap();
    let key_text = key.key.expose_secret_text().expose_secret().to_owned();
    // Enough entries that the body comes in several chunks.
    for _ in 0..300 {
        v.vault.verify(&ctx, VerifyRequest::new(&key_text)).unwrap();
    }
    let before = v.vault.audit_checkpoint().unwrap();
    let server = Server::start(&v, config()).await;
    let operator = v.token(Role::Operator);
    let auth = format!("Bearer {operator}");
    let r = server
        .send(
            Method::GET,
            "/v1/sys/backup",
            &[("authorization", auth.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.len() > 64 * 1024, "{}", r.body.len());
    server.stop().await;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restored");
    let restored = tokio::task::spawn_blocking(move || {
        let report = Vault::restore(Cursor::new(&r.body), &dir, |_| {}).unwrap();
        let copy = Vault::open(&dir).unwrap();
        copy.unseal_passphrase(&Context::embedded(), &Passphrase::new(PASSPHRASE))
            .unwrap();
        (report, copy)
    })
    .await
    .unwrap();
    let (report, copy) = restored;
    assert_eq!(report.audit_public_key, v.audit_public_key);
    let verdict = copy.verify(&ctx, VerifyRequest::new(&key_text)).unwrap();
    assert_eq!(verdict.code, VerifyCode::Valid);
    let checkpoint = copy.audit_checkpoint().unwrap();
    assert!(checkpoint.checkpoint.size > before.checkpoint.size);
    let proof = copy
        .audit_consistency_proof(before.checkpoint.size, checkpoint.checkpoint.size)
        .unwrap();
    vault_core::audit::merkle::verify_consistency(
        before.checkpoint.size,
        checkpoint.checkpoint.size,
        &before.checkpoint.root,
        &checkpoint.checkpoint.root,
        &proof,
    )
    .unwrap();
}
