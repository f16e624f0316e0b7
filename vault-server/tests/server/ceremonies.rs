//! The rekey and generate-root ceremonies over HTTP: holders submitting in their own requests,
//! new shares and tokens encrypted to age recipients, and every bad ceremony input a clear 4xx.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vault_core::tokens::Role;

use crate::support::{
    PASSPHRASE, Reply, app, app_with, assert_json_refusals, call, config, logs, passphrase_vault,
    post_json, shares_vault, shares_vault_of, unseal, with_token,
};
use crate::sys_ops::{NEW_PASSPHRASE, entries, post, token_id};

async fn anonymous(app: &Router, uri: &str, body: Value) -> Reply {
    call(app, post_json(uri, body.to_string())).await
}

/// A one-time age identity and its recipient's text.
fn identity() -> (age::x25519::Identity, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity, recipient)
}

fn decrypt(identity: &age::x25519::Identity, armored: &Value) -> String {
    let armored = armored.as_str().unwrap();
    assert!(
        armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{armored}"
    );
    String::from_utf8(age::decrypt(identity, armored.as_bytes()).unwrap()).unwrap()
}

fn nonce_of(answer: &Value) -> String {
    answer["nonce"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn rekey_by_three_holders_each_in_their_own_request_with_the_new_shares_encrypted_to_age_recipients()
 {
    let v = shares_vault_of(3, 5);
    v.unseal();
    let app = app(&v);
    let initiator = v.token(Role::Operator);
    let holders = [
        v.token(Role::Operator),
        v.token(Role::Operator),
        v.token(Role::Operator),
    ];
    let identities = [identity(), identity(), identity()];
    let recipients: Vec<&str> = identities.iter().map(|(_, r)| r.as_str()).collect();

    let r = post(
        &app,
        "/v1/sys/rekey",
        &initiator,
        Some(json!({"new": {"shares": 3, "threshold": 2}, "new_share_recipients": recipients})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let started = r.json();
    let nonce = nonce_of(&started);
    let digest = started["digest"].as_str().unwrap().to_owned();
    assert_eq!(nonce.len(), 32);
    assert_eq!(digest.len(), 64);
    assert_eq!(started["state"], "open");
    assert_eq!(
        (started["progress"].clone(), started["threshold"].clone()),
        (json!(0), json!(3))
    );
    let description = started["description"].as_str().unwrap();
    assert!(
        description.starts_with("keyvault/v1/ceremony\n"),
        "{description}"
    );
    assert!(description.contains("new method: shares\nnew threshold: 2\nnew shares: 3\n"));
    for (i, r) in recipients.iter().enumerate() {
        assert!(description.contains(&format!("share {} to: {r}\n", i + 1)));
    }

    // A second start while this one is open is refused: nobody displaces it.
    let r = post(
        &app,
        "/v1/sys/rekey",
        &holders[0],
        Some(json!({"new": {"shares": 2, "threshold": 2}})),
    )
    .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");

    // Each holder, with their own token, reads the ceremony and gives their own share.
    let mut last = Value::Null;
    for (i, holder) in holders.iter().enumerate() {
        let read = post(&app, "/v1/sys/rekey", holder, Some(json!({"nonce": nonce}))).await;
        assert_eq!(read.json()["digest"], digest.as_str());
        assert_eq!(read.json()["progress"], i);
        let r = post(
            &app,
            "/v1/sys/rekey",
            holder,
            Some(json!({"nonce": nonce, "share": v.shares[i + 1], "digest": digest})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[axum::http::header::CACHE_CONTROL], "no-store");
        let body = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(!body.contains("kvs1_"), "no share in clear: {body}");
        last = r.json();
        assert_eq!(
            last["digest"],
            digest.as_str(),
            "the same digest in every answer"
        );
        assert_eq!(last["progress"], i + 1);
        assert_eq!(last["state"], if i < 2 { "open" } else { "complete" });
    }
    assert!(last.get("shares").is_none());
    let encrypted = last["encrypted_shares"].as_array().unwrap();
    assert_eq!(encrypted.len(), 3);
    let new_shares: Vec<String> = encrypted
        .iter()
        .zip(&identities)
        .map(|(armored, (id, _))| decrypt(id, armored))
        .collect();
    // Each share opens only with its own identity.
    assert!(age::decrypt(&identities[1].0, encrypted[0].as_str().unwrap().as_bytes()).is_err());
    let status = v.vault.seal_status();
    assert_eq!((status.threshold, status.shares), (2, 3));

    // The initiator reads the completed ceremony: the same encrypted shares, no clear ones.
    let r = post(
        &app,
        "/v1/sys/rekey",
        &initiator,
        Some(json!({"nonce": nonce})),
    )
    .await;
    assert_eq!(r.json()["state"], "complete");
    assert_eq!(r.json()["encrypted_shares"], last["encrypted_shares"]);

    // Audited: the start, each share, the rekey, each naming the nonce and the digest.
    let log = entries(&v.vault);
    let with_nonce = |event: &str| {
        log.iter()
            .filter(|e| {
                e.event == event && e.outcome == "ok" && e.details["nonce"] == nonce.as_str()
            })
            .count()
    };
    assert_eq!(with_nonce("sys.rekey.start"), 1);
    assert_eq!(with_nonce("sys.rekey"), 3);
    let done = log.iter().rev().find(|e| e.event == "sys.rekey").unwrap();
    assert_eq!(done.details["digest"], digest.as_str());
    assert_eq!(done.details["encrypted_shares"], 3);
    assert_eq!(
        done.actor,
        format!("token:{}", token_id(&holders[2], &v)),
        "the rekey is the last holder's act"
    );

    // Only the new shares unseal.
    post(&app, "/v1/sys/seal", &initiator, None).await;
    let r = call(&app, unseal(&json!({"share": v.shares[0]}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(m.contains("another set of shares"), "{m}");
    for (i, share) in new_shares[1..].iter().enumerate() {
        let r = call(&app, unseal(&json!({"share": share}))).await;
        assert_eq!(r.json()["sealed"], i == 0);
    }
    assert!(!v.vault.is_sealed());
    // Sealing dropped the completed ceremony too.
    let r = post(
        &app,
        "/v1/sys/rekey",
        &initiator,
        Some(json!({"nonce": nonce})),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
}

#[tokio::test]
async fn rekey_a_passphrase_vault_completes_with_one_submission_of_the_passphrase() {
    let v = passphrase_vault();
    v.unseal();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(300);
    let app = app_with(&v, cfg);
    let operator = v.token(Role::Operator);
    let rekey = |body: Value| post(&app, "/v1/sys/rekey", &operator, Some(body));
    let new = json!({"new": {"passphrase": NEW_PASSPHRASE}});

    let started = rekey(new.clone()).await.json();
    let description = started["description"].as_str().unwrap();
    assert!(!description.contains(NEW_PASSPHRASE));
    assert!(description.contains("new method: passphrase\nargon2id: m=64 KiB, t=1, p=1\n"));
    assert_eq!(started["threshold"], 1);
    let digest = started["digest"].as_str().unwrap();
    assert_eq!(
        vault_core::ceremony::passphrase_digest(
            description,
            &vault_core::kdf::Passphrase::new(NEW_PASSPHRASE)
        )
        .as_deref(),
        Some(digest),
        "the initiator can recompute the digest from the passphrase it chose"
    );

    // A wrong passphrase is refused after the delay and ends the ceremony.
    let start = Instant::now();
    let r = rekey(json!({"nonce": nonce_of(&started), "passphrase": "not the passphrase at all"}))
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    assert!(start.elapsed() >= Duration::from_millis(300));
    rekey(json!({"nonce": nonce_of(&started), "passphrase": PASSPHRASE}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");

    let started = rekey(new).await.json();
    let r = rekey(json!({"nonce": nonce_of(&started), "passphrase": PASSPHRASE})).await;
    assert_eq!(r.status, StatusCode::OK);
    let done = r.json();
    assert_eq!(done["state"], "complete");
    assert_eq!(done["digest"], started["digest"]);
    assert!(done.get("shares").is_none() && done.get("encrypted_shares").is_none());
    assert!(
        v.vault.insecure_kdf(),
        "a test vault keeps test-grade Argon2"
    );

    post(&app, "/v1/sys/seal", &operator, None).await;
    call(&app, unseal(&json!({"passphrase": PASSPHRASE})))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    let r = call(&app, unseal(&json!({"passphrase": NEW_PASSPHRASE}))).await;
    assert_eq!(r.json()["sealed"], false);
    let log = entries(&v.vault);
    assert!(
        log.iter()
            .any(|e| e.event == "sys.rekey" && e.outcome == "wrong_credential")
    );
    assert!(log.iter().any(|e| e.event == "sys.rekey"
        && e.outcome == "ok"
        && e.details["method"] == "passphrase"));
}

#[tokio::test]
async fn rekey_to_shares_without_recipients_shows_them_in_clear_to_the_last_holder_only() {
    let v = shares_vault();
    v.unseal();
    let app = app(&v);
    let operator = v.token(Role::Operator);
    let rekey = |body: Value| post(&app, "/v1/sys/rekey", &operator, Some(body));
    let started = rekey(json!({"new": {"shares": 3, "threshold": 2}}))
        .await
        .json();
    let nonce = nonce_of(&started);
    assert!(
        started["description"]
            .as_str()
            .unwrap()
            .contains("new shares to: the holder who completes, in clear\n")
    );
    rekey(json!({"nonce": nonce, "share": v.shares[0]})).await;
    let done = rekey(json!({"nonce": nonce, "share": v.shares[2]}))
        .await
        .json();
    assert_eq!(done["shares"].as_array().unwrap().len(), 3);
    // Read again: never the clear shares.
    let read = rekey(json!({"nonce": nonce})).await;
    assert!(
        !String::from_utf8(read.body.to_vec())
            .unwrap()
            .contains("kvs1_")
    );

    // Cancel: a new ceremony, a share, then cancelled; the shares it held are gone.
    let new_share = done["shares"][0].as_str().unwrap();
    let started = rekey(json!({"new": {"shares": 2, "threshold": 2}}))
        .await
        .json();
    let nonce = nonce_of(&started);
    rekey(json!({"nonce": nonce, "share": new_share})).await;
    let r = rekey(json!({"nonce": nonce, "cancel": true})).await;
    assert_eq!(r.json()["state"], "cancelled");
    rekey(json!({"nonce": nonce, "share": new_share}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
    assert!(
        entries(&v.vault)
            .iter()
            .any(|e| e.event == "sys.rekey.cancel" && e.details["nonce"] == nonce.as_str())
    );
    assert_eq!(v.vault.seal_status().shares, 3);
}

#[tokio::test]
async fn generate_root_takes_no_token_and_answers_only_an_age_encrypted_admin_token() {
    let v = shares_vault();
    let other = shares_vault();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(300);
    let app = app_with(&v, cfg);
    let gen_root = |body: Value| anonymous(&app, "/v1/sys/generate-root", body);
    let (id, recipient) = identity();

    // It needs the keyring: 503 while sealed.
    gen_root(json!({"recipient": recipient}))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    v.unseal();

    // Shares that look right (this vault, this threshold) but do not combine: refused after
    // the delay, audited, and the ceremony ends.
    let forged = vault_core::shamir::split(
        &vault_core::crypto::SecretKey::random(),
        v.vault.vault_id(),
        2,
        3,
    );
    let forged = secrecy::ExposeSecret::expose_secret(&forged[1].expose_text()).to_owned();
    let started = gen_root(json!({"recipient": recipient})).await.json();
    let nonce = nonce_of(&started);
    assert!(
        started["description"]
            .as_str()
            .unwrap()
            .contains(&format!("new admin token to: {recipient}\n"))
    );
    let start = Instant::now();
    let r = gen_root(json!({"nonce": nonce, "share": other.shares[0]})).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    assert!(m.contains("another vault"), "{m}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    gen_root(json!({"nonce": nonce, "share": v.shares[0]})).await;
    let start = Instant::now();
    let r = gen_root(json!({"nonce": nonce, "share": forged})).await;
    r.assert_error(StatusCode::BAD_REQUEST, "wrong_credential");
    assert!(start.elapsed() >= Duration::from_millis(300));
    gen_root(json!({"nonce": nonce, "share": v.shares[1]}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
    let log = entries(&v.vault);
    let refused: Vec<&str> = log
        .iter()
        .filter(|e| e.event == "sys.generate_root" && e.outcome != "ok")
        .map(|e| e.outcome.as_str())
        .collect();
    assert_eq!(refused, ["invalid_share", "wrong_credential"]);
    assert!(
        log.iter()
            .filter(|e| e.event == "sys.generate_root")
            .all(|e| e.actor == "anonymous")
    );

    // Now with the right shares, one request each.
    let started = gen_root(json!({"recipient": recipient})).await.json();
    let nonce = nonce_of(&started);
    let r = gen_root(json!({"nonce": nonce, "share": v.shares[2]})).await;
    assert_eq!(r.json()["progress"], 1);
    assert_eq!(r.json()["digest"], started["digest"]);
    let r = gen_root(json!({"nonce": nonce, "share": v.shares[0]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let body = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(!body.contains("kvt_"), "no token in clear: {body}");
    let done = r.json();
    assert_eq!(done["state"], "complete");
    assert_eq!(done["digest"], started["digest"]);
    let token = decrypt(&id, &done["encrypted_token"]);
    assert!(token.starts_with("kvt_"));
    // Another identity cannot open it.
    assert!(
        age::decrypt(
            &identity().0,
            done["encrypted_token"].as_str().unwrap().as_bytes()
        )
        .is_err()
    );

    let r = call(
        &app,
        with_token(Method::GET, "/v1/sys/tokens", &token, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let made = r.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] == done["token_id"])
        .unwrap()
        .clone();
    assert_eq!(made["role"], "admin");

    // The token is in no log line and no audit entry.
    let log = entries(&v.vault);
    assert!(log.iter().any(|e| e.event == "sys.generate_root"
        && e.outcome == "ok"
        && e.details.get("token_id") == Some(&done["token_id"])
        && e.details.get("digest") == Some(&started["digest"])));
    for seq in 0..v.vault.audit_size() {
        let raw = v.vault.audit_entry(seq).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains(&token[4..]));
    }
    assert!(!logs().contains(&token[4..]));
}

#[tokio::test]
async fn generate_root_with_the_passphrase_completes_in_one_submission() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let gen_root = |body: Value| anonymous(&app, "/v1/sys/generate-root", body);
    let (id, recipient) = identity();
    let started = gen_root(json!({"recipient": recipient})).await.json();
    assert_eq!(started["threshold"], 1);
    let nonce = nonce_of(&started);
    gen_root(json!({"nonce": nonce, "share": shares_vault().shares[0]}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "wrong_method");
    let done = gen_root(json!({"nonce": nonce, "passphrase": PASSPHRASE}))
        .await
        .json();
    let token = decrypt(&id, &done["encrypted_token"]);
    let r = call(
        &app,
        with_token(Method::GET, "/v1/sys/tokens", &token, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // The initiator, whose process did not complete, reads it back by nonce.
    let read = gen_root(json!({"nonce": nonce})).await.json();
    assert_eq!(decrypt(&id, &read["encrypted_token"]), token);
}

#[tokio::test]
async fn bad_ceremony_input_is_a_clear_4xx_and_never_a_500() {
    let v = shares_vault();
    v.unseal();
    let other = shares_vault();
    let mut cfg = config();
    cfg.unseal_failure_delay = Duration::from_millis(500);
    let app = app_with(&v, cfg);
    let operator = v.token(Role::Operator);
    for uri in ["/v1/sys/rekey", "/v1/sys/generate-root"] {
        assert_json_refusals(&app, Method::POST, uri, &operator).await;
    }
    let s = &v.shares[0];
    let new = json!({"shares": 3, "threshold": 2});
    let (_, recipient) = identity();

    for body in [
        json!({}),
        json!({"new": new, "share": s}),
        json!({"new": new, "nonce": "n"}),
        json!({"new": new, "digest": "00"}),
        json!({"new_share_recipients": [recipient]}),
        json!({"share": s}),
        json!({"nonce": "n", "passphrase": PASSPHRASE, "share": s}),
        json!({"nonce": "n", "digest": "00"}),
        json!({"nonce": "n", "cancel": false}),
        json!({"cancel": true}),
        json!({"nonce": "n", "share": s, "cancel": true}),
        json!({"new": {}}),
        json!({"new": {"shares": 3}}),
        json!({"new": {"shares": 3, "threshold": 1}}),
        json!({"new": {"shares": 3, "threshold": 4}}),
        json!({"new": {"passphrase": NEW_PASSPHRASE, "shares": 3, "threshold": 2}}),
        json!({"new": {"passphrase": "too short"}}),
        json!({"new": new, "new_share_recipients": [recipient]}),
        json!({"new": new, "new_share_recipients": [recipient, recipient, "age1nope"]}),
        json!({"new": {"passphrase": NEW_PASSPHRASE}, "new_share_recipients": [recipient]}),
    ] {
        let start = Instant::now();
        let r = post(&app, "/v1/sys/rekey", &operator, Some(body.clone())).await;
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
        assert!(start.elapsed() < Duration::from_millis(500), "{body}");
        assert!(!m.contains(&s[5..20]) && !m.contains(NEW_PASSPHRASE), "{m}");
    }
    for body in [
        json!({}),
        json!({"recipient": "age1nope"}),
        json!({"recipient": recipient, "share": s}),
        json!({"cancel": true}),
    ] {
        let r = anonymous(&app, "/v1/sys/generate-root", body.clone()).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    }
    for (body, field) in [
        (
            json!({"new": {"shares": 300, "threshold": 2}}),
            "new.shares",
        ),
        (json!({"new": "shares"}), "new: invalid type"),
        (
            json!({"new": new, "new_share_recipients": "age1"}),
            "new_share_recipients: invalid type",
        ),
        (json!({"nonce": 1, "share": s}), "nonce: invalid type"),
        (json!({"nonce": "n", "share": 1}), "share: invalid type"),
        (
            json!({"nonce": "n", "cancel": "yes"}),
            "cancel: invalid type",
        ),
    ] {
        let r = post(&app, "/v1/sys/rekey", &operator, Some(body.clone())).await;
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
        assert!(m.contains(field), "{body}: {m}");
    }
    // A secret in the wrong place is not echoed.
    let r = post(&app, "/v1/sys/rekey", &operator, Some(json!({"cancel": s}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(!m.contains(&s[5..20]), "{m}");

    // Unknown nonce, at once and without an audit entry.
    let before = v.vault.audit_size();
    for uri in ["/v1/sys/rekey", "/v1/sys/generate-root"] {
        for body in [
            json!({"nonce": "0".repeat(32), "share": s}),
            json!({"nonce": "0".repeat(32)}),
            json!({"nonce": "0".repeat(32), "cancel": true}),
        ] {
            let start = Instant::now();
            let r = post(&app, uri, &operator, Some(body)).await;
            let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_nonce");
            assert!(
                m.contains("no ") && m.contains("ceremony with this nonce"),
                "{m}"
            );
            assert!(start.elapsed() < Duration::from_millis(500));
        }
    }
    assert_eq!(v.vault.audit_size(), before);

    // Under a live nonce: a share of another vault, the same share twice, a malformed share,
    // a passphrase to a shares vault, a digest that is not the ceremony's; progress is kept.
    let nonce = nonce_of(
        &post(&app, "/v1/sys/rekey", &operator, Some(json!({"new": new})))
            .await
            .json(),
    );
    let rekey = |body: Value| post(&app, "/v1/sys/rekey", &operator, Some(body));
    assert_eq!(
        rekey(json!({"nonce": nonce, "share": s})).await.json()["progress"],
        1
    );
    for (body, status, code, says) in [
        (
            json!({"nonce": nonce, "share": other.shares[1]}),
            StatusCode::BAD_REQUEST,
            "invalid_share",
            "another vault",
        ),
        (
            json!({"nonce": nonce, "share": s}),
            StatusCode::BAD_REQUEST,
            "invalid_share",
            "already",
        ),
        (
            json!({"nonce": nonce, "share": "kvs1_00"}),
            StatusCode::BAD_REQUEST,
            "invalid_share",
            "not a keyvault unseal share",
        ),
        (
            json!({"nonce": nonce, "passphrase": PASSPHRASE}),
            StatusCode::BAD_REQUEST,
            "wrong_method",
            "shares",
        ),
        (
            json!({"nonce": nonce, "share": v.shares[1], "digest": "ab".repeat(32)}),
            StatusCode::CONFLICT,
            "conflict",
            "digest",
        ),
        (
            json!({"new": new}),
            StatusCode::CONFLICT,
            "conflict",
            "in progress",
        ),
    ] {
        let m = rekey(body.clone()).await.assert_error(status, code);
        assert!(m.contains(says), "{body}: {m}");
    }
    assert_eq!(rekey(json!({"nonce": nonce})).await.json()["progress"], 1);
    assert_eq!(v.vault.seal_status().threshold, 2);
    assert_eq!(v.vault.seal_status().shares, 3);
}
