//! The API-key lifecycle: create, show, list, update, revoke, rotate, reveal, verify.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::json;
use vault_core::apikey::{ApiKey, KeyId, Prefix};
use vault_core::clock::Clock;
use vault_core::keys::{
    KeyFilter, KeyStatus, KeyUpdate, NewKey, RateLimit, VerifyCode, VerifyRequest,
};
use vault_core::tokens::Role;
use vault_core::{Error, Vault};

use crate::common::*;

fn text(key: &ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

fn verify(vault: &Vault, key: &str) -> VerifyCode {
    vault.verify(&ctx(), VerifyRequest::new(key)).unwrap().code
}

#[test]
fn create_show_list_update() {
    let (_tmp, vault) = passphrase_vault();
    let mut new = NewKey::new("cust_1");
    new.name = "photo uploads".into();
    new.scopes = vec!["photos:read".into(), "photos:write".into()];
    new.meta = json!({"plan": "pro", "n": 3}).as_object().unwrap().clone();
    let issued = vault.create_key(&ctx(), new).unwrap();
    let key = text(&issued.key);
    assert!(key.starts_with("pvk_") && key.len() == 4 + 49 + 6, "{key}");
    assert_eq!(issued.info.status, KeyStatus::Active);

    let shown = vault.show_key(&issued.key.id()).unwrap();
    assert_eq!(shown, issued.info);
    assert_eq!(shown.meta["plan"], "pro");

    let verdict = vault
        .verify(
            &ctx(),
            VerifyRequest {
                key: &key,
                scope: Some("photos:write"),
                cost: 1,
            },
        )
        .unwrap();
    assert!(verdict.valid);
    assert_eq!(verdict.key_id, Some(issued.key.id()));
    assert_eq!(verdict.owner.as_deref(), Some("cust_1"));
    assert_eq!(verdict.meta.unwrap().to_map()["n"], 3);

    let updated = vault
        .update_key(
            &ctx(),
            &issued.key.id(),
            KeyUpdate {
                name: Some("renamed".into()),
                scopes: Some(vec!["a".into()]),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(
        vault.show_key(&issued.key.id()).unwrap().scopes,
        vec!["a".to_owned()]
    );
    // Visible on the very next verify.
    let v = vault
        .verify(
            &ctx(),
            VerifyRequest {
                key: &key,
                scope: Some("photos:write"),
                cost: 1,
            },
        )
        .unwrap();
    assert_eq!(v.code, VerifyCode::InsufficientScope);

    // Survives a restart.
    let vault = reopen(vault);
    vault
        .unseal_passphrase(&ctx(), &vault_core::kdf::Passphrase::new(PASSPHRASE))
        .unwrap();
    assert_eq!(vault.show_key(&issued.key.id()).unwrap().name, "renamed");
    assert_eq!(verify(&vault, &key), VerifyCode::Valid);
    assert!(matches!(
        vault.show_key(&KeyId::from_bytes([9; 12])),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn list_filters_by_owner_and_status_with_cursor_paging() {
    let (_tmp, vault) = passphrase_vault();
    let mut ids_a = Vec::new();
    for i in 0..7 {
        let owner = if i % 2 == 0 { "alice" } else { "bob" };
        let issued = vault.create_key(&ctx(), NewKey::new(owner)).unwrap();
        if owner == "alice" {
            ids_a.push(issued.key.id());
        }
    }
    vault.revoke_key(&ctx(), &ids_a[0]).unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = vault
            .list_keys(&KeyFilter {
                owner: Some("alice".into()),
                after,
                limit: Some(2),
                status: None,
                name: None,
            })
            .unwrap();
        assert!(page.keys.len() <= 2);
        seen.extend(page.keys.iter().map(|k| k.key_id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    ids_a.sort();
    assert_eq!(
        seen, ids_a,
        "owner pages cover exactly alice's keys, in id order"
    );
    let active = vault
        .list_keys(&KeyFilter {
            owner: Some("alice".into()),
            status: Some(KeyStatus::Active),
            ..KeyFilter::default()
        })
        .unwrap();
    assert_eq!(active.keys.len(), 3);
    let all = vault
        .list_keys(&KeyFilter {
            limit: Some(1000),
            ..KeyFilter::default()
        })
        .unwrap();
    assert_eq!(all.keys.len(), 7);
    assert!(all.next.is_none());
    let revoked = vault
        .list_keys(&KeyFilter {
            status: Some(KeyStatus::Revoked),
            ..KeyFilter::default()
        })
        .unwrap();
    assert_eq!(revoked.keys.len(), 1);
    assert_eq!(
        vault
            .list_keys(&KeyFilter {
                owner: Some("nobody".into()),
                ..KeyFilter::default()
            })
            .unwrap()
            .keys
            .len(),
        0
    );
    // Revoke all of bob's.
    assert_eq!(vault.revoke_owner(&ctx(), "bob").unwrap(), 3);
    assert_eq!(vault.revoke_owner(&ctx(), "bob").unwrap(), 0);
}

#[test]
fn every_verify_code_is_reachable_in_order() {
    let clock = Clock::manual_now();
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    assert_eq!(verify(&vault, "not a key"), VerifyCode::Malformed);
    let token = vault
        .create_token(&ctx(), None, Role::Verifier, "t", None)
        .unwrap();
    assert_eq!(
        verify(&vault, &text(&token.token)),
        VerifyCode::Malformed,
        "a token is not an API key"
    );
    let stranger = ApiKey::generate(&Prefix::default());
    assert_eq!(verify(&vault, &text(&stranger)), VerifyCode::NotFound);

    // One key with every problem at once, removed one at a time: the codes come in order.
    let mut new = NewKey::new("o");
    new.scopes = vec!["s".into()];
    new.expires_at = Some(clock.now() + 2);
    new.ratelimit = Some(RateLimit {
        limit: 1,
        period_seconds: 3600,
    });
    new.credits = Some(1);
    new.disabled = true;
    let issued = vault.create_key(&ctx(), new).unwrap();
    let id = issued.key.id();
    let key = text(&issued.key);
    let with_scope = |scope: &str| {
        vault
            .verify(
                &ctx(),
                VerifyRequest {
                    key: &key,
                    scope: Some(scope),
                    cost: 1,
                },
            )
            .unwrap()
            .code
    };
    assert_eq!(with_scope("other"), VerifyCode::Disabled);
    vault
        .update_key(
            &ctx(),
            &id,
            KeyUpdate {
                enabled: Some(true),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(with_scope("other"), VerifyCode::InsufficientScope);
    assert_eq!(with_scope("s"), VerifyCode::Valid);
    // The one rate-limit token is spent, and so is the one credit.
    assert_eq!(with_scope("s"), VerifyCode::RateLimited);
    vault
        .update_key(
            &ctx(),
            &id,
            KeyUpdate {
                ratelimit: Some(None),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(with_scope("s"), VerifyCode::UsageExceeded);
    // A rate limit alone (no credits) is enforced too, and reported.
    let mut limited = NewKey::new("o");
    limited.ratelimit = Some(RateLimit {
        limit: 2,
        period_seconds: 3600,
    });
    let limited = text(&vault.create_key(&ctx(), limited).unwrap().key);
    let first = vault.verify(&ctx(), VerifyRequest::new(&limited)).unwrap();
    assert_eq!(
        (first.code, first.ratelimit.unwrap().remaining),
        (VerifyCode::Valid, 1)
    );
    assert_eq!(verify(&vault, &limited), VerifyCode::Valid);
    let third = vault.verify(&ctx(), VerifyRequest::new(&limited)).unwrap();
    assert_eq!(third.code, VerifyCode::RateLimited);
    assert!(third.ratelimit.unwrap().reset_seconds > 0);
    // Expired comes before scope, rate and credits.
    clock.advance(Duration::from_millis(2100));
    assert_eq!(with_scope("other"), VerifyCode::Expired);
    // Revoked comes before disabled and expired.
    vault
        .update_key(
            &ctx(),
            &id,
            KeyUpdate {
                enabled: Some(false),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    vault.revoke_key(&ctx(), &id).unwrap();
    let v = vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    assert_eq!(v.code, VerifyCode::Revoked);
    assert_eq!(v.key_id, Some(id), "a matched secret reports the key id");
    assert!(matches!(
        vault.rotate_key(&ctx(), &id, 0),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        vault.update_key(&ctx(), &id, KeyUpdate::default()),
        Err(Error::Conflict(_))
    ));
}

#[test]
fn wrong_secret_and_unknown_id_answer_the_same() {
    let (_tmp, vault) = passphrase_vault();
    let issued = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    let wrong = ApiKey::new(
        Prefix::default(),
        issued.key.id(),
        vault_core::apikey::KeySecret::random(),
    );
    let unknown = ApiKey::generate(&Prefix::default());
    let a = vault
        .verify(&ctx(), VerifyRequest::new(&text(&wrong)))
        .unwrap();
    let b = vault
        .verify(&ctx(), VerifyRequest::new(&text(&unknown)))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.code, VerifyCode::NotFound);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        r#"{"valid":false,"code":"NOT_FOUND"}"#
    );
}

#[test]
fn rotation_grace_period() {
    let clock = Clock::manual_now();
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    let issued = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    let id = issued.key.id();
    let first = text(&issued.key);
    // Grace 0: the old secret ends at once.
    let second = vault.rotate_key(&ctx(), &id, 0).unwrap();
    assert_eq!(second.key.id(), id);
    assert_eq!(verify(&vault, &first), VerifyCode::NotFound);
    let second = text(&second.key);
    assert_eq!(verify(&vault, &second), VerifyCode::Valid);
    // Grace 2 s: both work, the old one says until when.
    let third = vault.rotate_key(&ctx(), &id, 2).unwrap();
    let third = text(&third.key);
    let old = vault.verify(&ctx(), VerifyRequest::new(&second)).unwrap();
    assert_eq!(old.code, VerifyCode::Valid);
    let until = old.previous_secret.unwrap().expires_at;
    assert!(until > clock.now() && until <= clock.now() + 2);
    assert!(
        vault
            .verify(&ctx(), VerifyRequest::new(&third))
            .unwrap()
            .previous_secret
            .is_none()
    );
    // A second rotation ends the older secret at once.
    let fourth = text(&vault.rotate_key(&ctx(), &id, 60).unwrap().key);
    assert_eq!(verify(&vault, &second), VerifyCode::NotFound);
    assert_eq!(verify(&vault, &third), VerifyCode::Valid);
    assert_eq!(verify(&vault, &fourth), VerifyCode::Valid);
    // After the window: NOT_FOUND.
    let fifth = text(&vault.rotate_key(&ctx(), &id, 1).unwrap().key);
    assert_eq!(verify(&vault, &fourth), VerifyCode::Valid);
    clock.advance(Duration::from_millis(1100));
    assert_eq!(verify(&vault, &fourth), VerifyCode::NotFound);
    assert_eq!(verify(&vault, &fifth), VerifyCode::Valid);

    // Never past the key's own expiry.
    let mut new = NewKey::new("o");
    new.expires_at = Some(clock.now() + 1);
    let short = vault.create_key(&ctx(), new).unwrap();
    let old = text(&short.key);
    let rotated = vault.rotate_key(&ctx(), &short.key.id(), 3600).unwrap();
    assert!(rotated.info.previous_secret_expires_at.unwrap() <= clock.now() + 1);
    clock.advance(Duration::from_millis(1100));
    assert_eq!(verify(&vault, &old), VerifyCode::NotFound);
    assert_eq!(verify(&vault, &text(&rotated.key)), VerifyCode::Expired);
}

#[test]
fn reveal_only_recoverable_keys() {
    let (_tmp, vault) = passphrase_vault();
    let mut new = NewKey::new("o");
    new.recoverable = true;
    let issued = vault.create_key(&ctx(), new).unwrap();
    assert_eq!(
        text(&vault.reveal_key(&ctx(), &issued.key.id()).unwrap()),
        text(&issued.key)
    );
    let rotated = vault.rotate_key(&ctx(), &issued.key.id(), 0).unwrap();
    assert_eq!(
        text(&vault.reveal_key(&ctx(), &issued.key.id()).unwrap()),
        text(&rotated.key)
    );
    let plain = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    let e = vault.reveal_key(&ctx(), &plain.key.id()).unwrap_err();
    assert!(
        matches!(e, Error::Conflict(_)) && e.to_string().contains("recoverable"),
        "{e}"
    );
}

#[test]
fn credits_are_exact_under_concurrency_and_durable() {
    let (_tmp, vault) = passphrase_vault();
    let mut new = NewKey::new("o");
    new.credits = Some(40);
    let issued = vault.create_key(&ctx(), new).unwrap();
    let key = Arc::new(text(&issued.key));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let vault = vault.clone();
            let key = Arc::clone(&key);
            std::thread::spawn(move || {
                (0..10)
                    .filter(|_| verify(&vault, &key) == VerifyCode::Valid)
                    .count()
            })
        })
        .collect();
    let valid: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(valid, 40);
    assert_eq!(vault.show_key(&issued.key.id()).unwrap().credits, Some(0));
    // Cost 0 checks without spending; a cost larger than what is left is refused.
    vault
        .update_key(
            &ctx(),
            &issued.key.id(),
            KeyUpdate {
                credits: Some(Some(5)),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    let v = vault
        .verify(
            &ctx(),
            VerifyRequest {
                key: &key,
                scope: None,
                cost: 6,
            },
        )
        .unwrap();
    assert_eq!(
        (v.code, v.credits_remaining),
        (VerifyCode::UsageExceeded, Some(5))
    );
    let v = vault
        .verify(
            &ctx(),
            VerifyRequest {
                key: &key,
                scope: None,
                cost: 0,
            },
        )
        .unwrap();
    assert_eq!((v.code, v.credits_remaining), (VerifyCode::Valid, Some(5)));
    let v = vault
        .verify(
            &ctx(),
            VerifyRequest {
                key: &key,
                scope: None,
                cost: 3,
            },
        )
        .unwrap();
    assert_eq!((v.code, v.credits_remaining), (VerifyCode::Valid, Some(2)));
    let vault = reopen(vault);
    vault
        .unseal_passphrase(&ctx(), &vault_core::kdf::Passphrase::new(PASSPHRASE))
        .unwrap();
    assert_eq!(vault.show_key(&issued.key.id()).unwrap().credits, Some(2));
}

#[test]
fn revocation_is_seen_by_the_next_verify_under_load() {
    let (_tmp, vault) = passphrase_vault();
    let issued = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    let key = Arc::new(text(&issued.key));
    let revoked = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (vault, key, revoked) = (vault.clone(), Arc::clone(&key), Arc::clone(&revoked));
            std::thread::spawn(move || {
                let mut late_valid = 0;
                for _ in 0..60 {
                    let after_revoke = revoked.load(Ordering::SeqCst);
                    if verify(&vault, &key) == VerifyCode::Valid && after_revoke {
                        late_valid += 1;
                    }
                }
                late_valid
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    vault.revoke_key(&ctx(), &issued.key.id()).unwrap();
    revoked.store(true, Ordering::SeqCst);
    let late: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        late, 0,
        "a verify that started after the revoke answered VALID"
    );
    assert_eq!(verify(&vault, &key), VerifyCode::Revoked);
}

#[test]
fn limits_give_typed_errors_naming_the_limit() {
    let (_tmp, vault) = passphrase_vault();
    let cases: Vec<(NewKey, &str)> = vec![
        (NewKey::new(""), "owner"),
        (NewKey::new("x".repeat(129)), "owner"),
        (
            NewKey {
                name: "n".repeat(257),
                ..NewKey::new("o")
            },
            "name",
        ),
        (
            NewKey {
                scopes: (0..65).map(|i| i.to_string()).collect(),
                ..NewKey::new("o")
            },
            "64 scopes",
        ),
        (
            NewKey {
                scopes: vec!["s".repeat(129)],
                ..NewKey::new("o")
            },
            "scope",
        ),
        (
            NewKey {
                scopes: vec![String::new()],
                ..NewKey::new("o")
            },
            "scope",
        ),
        (
            NewKey {
                meta: json!({"big": "x".repeat(5000)})
                    .as_object()
                    .unwrap()
                    .clone(),
                ..NewKey::new("o")
            },
            "meta",
        ),
        (
            NewKey {
                expires_at: Some(1),
                ..NewKey::new("o")
            },
            "expires_at",
        ),
        (
            NewKey {
                ratelimit: Some(RateLimit {
                    limit: 0,
                    period_seconds: 1,
                }),
                ..NewKey::new("o")
            },
            "ratelimit",
        ),
        (NewKey::new("tab\there"), "owner"),
    ];
    for (new, what) in cases {
        let e = vault.create_key(&ctx(), new).unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput(_)) && e.to_string().contains(what),
            "{what}: {e}"
        );
    }
    // At the limits, fine.
    let new = NewKey {
        name: "n".repeat(256),
        scopes: (0..64).map(|i| format!("{i:0>128}")).collect(),
        meta: json!({"m": "x".repeat(4000)}).as_object().unwrap().clone(),
        ..NewKey::new("x".repeat(128))
    };
    vault.create_key(&ctx(), new).unwrap();
    assert_eq!(
        vault.list_keys(&KeyFilter::default()).unwrap().keys.len(),
        1,
        "nothing half-written"
    );
}

#[test]
fn no_secret_in_debug_or_errors() {
    let (_tmp, vault) = passphrase_vault();
    let mut new = NewKey::new("o");
    new.recoverable = true;
    let issued = vault.create_key(&ctx(), new).unwrap();
    let key = text(&issued.key);
    let body = &key[4..40];
    let revealed = vault.reveal_key(&ctx(), &issued.key.id()).unwrap();
    let verdict = vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    let mut rendered = format!(
        "{issued:?} {revealed:?} {verdict:?} {}",
        serde_json::to_string(&verdict).unwrap()
    );
    rendered += &format!("{:?}", vault.show_key(&issued.key.id()).unwrap());
    let revoked_rotate = {
        vault.revoke_key(&ctx(), &issued.key.id()).unwrap();
        vault.rotate_key(&ctx(), &issued.key.id(), 0).unwrap_err()
    };
    rendered += &format!("{revoked_rotate} {revoked_rotate:?}");
    let mut export = Vec::new();
    vault
        .export_audit(
            &ctx(),
            &Default::default(),
            vault_core::audit::export::ExportFormat::Jsonl,
            &mut export,
        )
        .unwrap();
    rendered += &String::from_utf8(export).unwrap();
    assert!(!rendered.contains(body), "the key's secret part leaked");
}

#[test]
fn distinct_keys_never_collide() {
    let (_tmp, vault) = passphrase_vault();
    let ids: HashSet<KeyId> = (0..50)
        .map(|_| vault.create_key(&ctx(), NewKey::new("o")).unwrap().key.id())
        .collect();
    assert_eq!(ids.len(), 50);
}

#[test]
fn rewrap_moves_every_record_to_the_newest_term() {
    let (_tmp, vault) = passphrase_vault();
    let mut keys = Vec::new();
    for i in 0..300 {
        let mut new = NewKey::new(format!("o{}", i % 3));
        new.recoverable = i % 2 == 0;
        new.credits = (i % 5 == 0).then_some(10);
        keys.push(vault.create_key(&ctx(), new).unwrap());
    }
    let token = vault
        .create_token(&ctx(), None, Role::Verifier, "t", None)
        .unwrap();
    assert_eq!(vault.rotate(&ctx()).unwrap(), 2);
    let mut calls = 0;
    let report = vault
        .rewrap(&ctx(), |done, total| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
    assert!(calls >= 2);
    assert_eq!(report.term, 2);
    // 300 key records, 60 credit records, 150 revealable secrets, 2 tokens (root and t).
    assert_eq!(report.rewritten, 300 + 60 + 150 + 2);
    for k in &keys {
        assert_eq!(
            vault
                .danger()
                .record_term(vault_core::RecordTree::Keys, k.key.id().as_bytes())
                .unwrap(),
            Some(2)
        );
        assert_eq!(verify(&vault, &text(&k.key)), VerifyCode::Valid);
    }
    assert_eq!(
        vault
            .danger()
            .record_term(
                vault_core::RecordTree::Tokens,
                token.info.token_id.as_bytes()
            )
            .unwrap(),
        Some(2)
    );
    vault.authenticate(&ctx(), &text(&token.token)).unwrap();
    // Running it again rewrites nothing.
    assert_eq!(vault.rewrap(&ctx(), |_, _| {}).unwrap().rewritten, 0);
}

#[test]
fn generate_root_needs_the_unseal_credential() {
    let (_tmp, vault) = passphrase_vault();
    let wrong = vault.generate_root(
        &ctx(),
        vault_core::Credential::Passphrase(vault_core::kdf::Passphrase::new("not it at all")),
    );
    assert!(matches!(wrong, Err(Error::WrongCredential)));
    let root = vault
        .generate_root(
            &ctx(),
            vault_core::Credential::Passphrase(vault_core::kdf::Passphrase::new(PASSPHRASE)),
        )
        .unwrap();
    assert_eq!(
        vault.authenticate(&ctx(), &text(&root)).unwrap().role,
        Role::Admin
    );
}
