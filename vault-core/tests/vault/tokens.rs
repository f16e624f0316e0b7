//! Vault tokens: the root token, roles, expiry, revocation.

use secrecy::ExposeSecret;
use vault_core::apikey::{ApiKey, Prefix};
use vault_core::clock::Clock;
use vault_core::keys::{NewKey, VerifyCode, VerifyRequest};
use vault_core::tokens::Role;
use vault_core::{Error, Vault, VaultOptions};

use crate::common::*;

fn text(key: &ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

#[test]
fn root_token_roles_expiry_and_revocation() {
    let (_tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    let root = text(issued.root_token.as_ref().unwrap());
    assert!(root.starts_with("kvt_"));
    // Opened again on a manual clock, so that a token's expiry is reached by moving time.
    drop(vault);
    let clock = Clock::manual_now();
    let on_clock = VaultOptions {
        clock: clock.clone(),
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&path, &on_clock).unwrap();
    unseal_with_passphrase(&vault);
    let admin = vault.authenticate(&ctx(), &root).unwrap();
    assert_eq!(admin.role, Role::Admin);

    for role in Role::ALL {
        let t = vault
            .create_token(&ctx(), Some(&admin), role, "svc", None)
            .unwrap();
        let info = vault.authenticate(&ctx(), &text(&t.token)).unwrap();
        assert_eq!((info.role, info.created_by), (role, Some(admin.token_id)));
    }
    assert_eq!(vault.list_tokens().unwrap().len(), 6);

    // A token cannot mint a role it does not hold, nor outlive itself.
    let manager = vault
        .create_token(&ctx(), Some(&admin), Role::Manager, "m", Some(60))
        .unwrap();
    let e = vault
        .create_token(&ctx(), Some(&manager.info), Role::Admin, "x", Some(10))
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    let e = vault
        .create_token(&ctx(), Some(&manager.info), Role::Operator, "x", Some(10))
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    let e = vault
        .create_token(&ctx(), Some(&manager.info), Role::Verifier, "x", None)
        .unwrap_err();
    assert!(
        matches!(e, Error::Forbidden(_)) && e.to_string().contains("outlives"),
        "{e}"
    );
    vault
        .create_token(&ctx(), Some(&manager.info), Role::Verifier, "x", Some(30))
        .unwrap();

    // Revoked: refused at once.
    let t = vault
        .create_token(&ctx(), Some(&admin), Role::Verifier, "r", None)
        .unwrap();
    assert!(vault.token_is_live(&t.info.token_id).unwrap());
    vault.revoke_token(&ctx(), &t.info.token_id).unwrap();
    assert!(matches!(
        vault.authenticate(&ctx(), &text(&t.token)),
        Err(Error::Unauthorized)
    ));
    // Checked again by id (a followed export does this at each poll).
    assert!(!vault.token_is_live(&t.info.token_id).unwrap());
    assert!(vault.token_is_live(&admin.token_id).unwrap());
    assert!(
        !vault
            .token_is_live(&vault_core::apikey::KeyId::from_bytes([7; 12]))
            .unwrap()
    );
    // Expired.
    let t = vault
        .create_token(&ctx(), Some(&admin), Role::Verifier, "e", Some(1))
        .unwrap();
    vault.authenticate(&ctx(), &text(&t.token)).unwrap();
    clock.advance(std::time::Duration::from_millis(1100));
    assert!(matches!(
        vault.authenticate(&ctx(), &text(&t.token)),
        Err(Error::Unauthorized)
    ));
    assert!(!vault.token_is_live(&t.info.token_id).unwrap());

    // An API key is not a token, and a token is not an API key.
    let key = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    assert!(matches!(
        vault.authenticate(&ctx(), &text(&key.key)),
        Err(Error::Unauthorized)
    ));
    assert_eq!(
        vault
            .verify(&ctx(), VerifyRequest::new(&root))
            .unwrap()
            .code,
        VerifyCode::Malformed
    );
    assert!(matches!(
        vault.authenticate(&ctx(), "garbage"),
        Err(Error::Unauthorized)
    ));

    // Tokens survive a restart; revocations too.
    let dir = vault.dir().to_path_buf();
    drop(vault);
    let vault = Vault::open_with(&dir, &on_clock).unwrap();
    assert!(matches!(
        vault.authenticate(&ctx(), &root),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault.token_is_live(&admin.token_id),
        Err(Error::Sealed)
    ));
    unseal_with_passphrase(&vault);
    assert_eq!(vault.authenticate(&ctx(), &root).unwrap().role, Role::Admin);
    assert!(matches!(
        vault.authenticate(&ctx(), &text(&t.token)),
        Err(Error::Unauthorized)
    ));
}

#[test]
fn role_inclusion() {
    assert!(Role::Admin.allows(Role::Operator));
    assert!(Role::Manager.allows(Role::Verifier));
    assert!(!Role::Verifier.allows(Role::Manager));
    assert!(!Role::Auditor.allows(Role::Verifier));
    assert!(!Role::Operator.allows(Role::Auditor));
}
