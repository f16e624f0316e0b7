//! Imported keys through the library API: by text and by hash, idempotent, verified with their
//! original text, rotated into the vault's format; and credits that come back.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use vault_core::clock::Clock;
use vault_core::keys::{
    ImportKey, ImportOutcome, ImportStatus, ImportedSecret, KeyUpdate, MAX_IMPORT, NewKey, Refill,
    RefillInterval, VerifyCode, VerifyRequest,
};
use vault_core::{Error, Vault, VaultOptions};

use crate::common::*;

const PLAIN: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const HASHED: &str = "legacy-0b7f1c2d9e8a4f60a1b2c3d4";

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn by_text(text: &str, owner: &str) -> ImportKey {
    ImportKey {
        secret: ImportedSecret::Text(SecretString::from(text)),
        new: NewKey::new(owner),
    }
}

fn by_hash(text: &str, owner: &str) -> ImportKey {
    ImportKey {
        secret: ImportedSecret::sha256_hex(&sha256_hex(text)).unwrap(),
        new: NewKey::new(owner),
    }
}

fn import(vault: &Vault, keys: Vec<ImportKey>) -> Vec<ImportOutcome> {
    block_on(vault.import_keys(&ctx(), keys)).unwrap()
}

fn verify(vault: &Vault, key: &str) -> vault_core::keys::Verdict {
    vault.verify(&ctx(), VerifyRequest::new(key)).unwrap()
}

#[test]
fn imported_keys_verify_with_their_original_text_and_a_near_miss_is_not_found() {
    let (_tmp, vault) = passphrase_vault();
    assert_eq!(verify(&vault, PLAIN).code, VerifyCode::Malformed);
    let out = import(
        &vault,
        vec![by_text(PLAIN, "alice"), by_hash(HASHED, "bob")],
    );
    assert!(out.iter().all(|o| o.status == ImportStatus::Imported));
    let plain = verify(&vault, PLAIN);
    assert_eq!(plain.code, VerifyCode::Valid);
    assert_eq!(plain.key_id, Some(out[0].key_id));
    assert_eq!(plain.owner.as_deref(), Some("alice"));
    let hashed = verify(&vault, HASHED);
    assert_eq!(hashed.code, VerifyCode::Valid);
    assert_eq!(hashed.key_id, Some(out[1].key_id));
    // One character off, and a text no key has: NOT_FOUND now that the vault holds imports.
    let near = format!("{}x", &PLAIN[..PLAIN.len() - 1]);
    assert_eq!(verify(&vault, &near).code, VerifyCode::NotFound);
    assert_eq!(verify(&vault, "junk").code, VerifyCode::NotFound);
    assert!(vault.show_key(&out[0].key_id).unwrap().imported);
    // A vault token presented as an API key stays MALFORMED, and is no key to import.
    let token = vault
        .create_token(&ctx(), None, vault_core::tokens::Role::Verifier, "t", None)
        .unwrap();
    let token = token.token.expose_secret_text().expose_secret().to_owned();
    assert_eq!(verify(&vault, &token).code, VerifyCode::Malformed);
    assert!(matches!(
        block_on(vault.import_keys(&ctx(), vec![by_text(&token, "eve")])),
        Err(Error::InvalidInput(_))
    ));

    // After a restart the index is read again from the store.
    let vault = reopen(vault);
    unseal_with_passphrase(&vault);
    assert_eq!(verify(&vault, PLAIN).code, VerifyCode::Valid);
    assert_eq!(verify(&vault, &near).code, VerifyCode::NotFound);
}

#[test]
fn importing_a_key_twice_makes_one_key_by_text_or_by_hash() {
    let (_tmp, vault) = passphrase_vault();
    let first = import(&vault, vec![by_text(PLAIN, "alice")]);
    // Again, as its hash, and twice in one call: the same key each time.
    let again = import(
        &vault,
        vec![
            by_hash(PLAIN, "alice"),
            by_text(HASHED, "bob"),
            by_hash(HASHED, "bob"),
        ],
    );
    assert_eq!(again[0].status, ImportStatus::Exists);
    assert_eq!(again[0].key_id, first[0].key_id);
    assert_eq!(again[1].status, ImportStatus::Imported);
    assert_eq!(again[2].status, ImportStatus::Exists);
    assert_eq!(again[2].key_id, again[1].key_id);
    let keys = vault.list_keys(&Default::default()).unwrap().keys;
    assert_eq!(keys.len(), 2);
}

#[test]
fn the_audit_log_records_imported_and_never_the_key_or_its_hash() {
    let (_tmp, vault) = passphrase_vault();
    import(
        &vault,
        vec![by_text(PLAIN, "alice"), by_hash(HASHED, "bob")],
    );
    let near = format!("{PLAIN}0");
    assert_eq!(verify(&vault, &near).code, VerifyCode::NotFound);
    let log = export(&vault);
    let imports: Vec<_> = log.lines().filter(|l| l.contains("key.import")).collect();
    assert_eq!(imports.len(), 2, "{log}");
    assert!(
        imports.iter().all(|l| l.contains(r#""imported":true"#)),
        "{log}"
    );
    for secret in [PLAIN, HASHED, &near] {
        assert!(!log.contains(secret), "the log holds a key's text");
        assert!(
            !log.contains(&sha256_hex(secret)),
            "the log holds a key's hash"
        );
    }
}

#[test]
fn bad_imports_are_refused_whole_without_echoing_the_key() {
    let (_tmp, vault) = passphrase_vault();
    let native = vault.create_key(&ctx(), NewKey::new("a")).unwrap();
    let native = native.key.expose_secret_text().expose_secret().to_owned();
    let mut recoverable = by_text(PLAIN, "a");
    recoverable.new.recoverable = true;
    let too_many = (0..=MAX_IMPORT)
        .map(|i| by_text(&format!("legacy-key-{i:08}"), "a"))
        .collect();
    let cases: Vec<Vec<ImportKey>> = vec![
        vec![by_text(PLAIN, "a"), by_text("short", "a")],
        vec![by_text(PLAIN, "a"), by_text(&native, "a")],
        vec![by_text(PLAIN, ""), by_hash(HASHED, "a")],
        vec![recoverable],
        too_many,
    ];
    for keys in cases {
        match block_on(vault.import_keys(&ctx(), keys)) {
            Err(Error::InvalidInput(m)) => {
                assert!(!m.contains(PLAIN) && !m.contains(&native), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
    let debug = format!("{:?} {:?}", by_text(PLAIN, "a"), by_hash(PLAIN, "a"));
    assert!(
        !debug.contains(PLAIN) && !debug.contains(&sha256_hex(PLAIN)),
        "{debug}"
    );
    assert!(ImportedSecret::sha256_hex(&sha256_hex(PLAIN).to_uppercase()).is_err());
    assert!(ImportedSecret::sha256_hex("abc").is_err());
    // Nothing was written: the first good key of each call is not there.
    assert_eq!(vault.list_keys(&Default::default()).unwrap().keys.len(), 1);
    assert_eq!(verify(&vault, PLAIN).code, VerifyCode::Malformed);
}

#[test]
fn a_rotated_imported_key_gets_the_vaults_format_and_the_old_text_ends_with_the_grace() {
    let clock = Clock::manual_now();
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    let id = import(&vault, vec![by_text(PLAIN, "alice")])[0].key_id;
    let rotated = vault.rotate_key(&ctx(), &id, 60).unwrap();
    let new_text = rotated.key.expose_secret_text().expose_secret().to_owned();
    assert!(new_text.starts_with("pvk_"));
    assert_eq!(rotated.key.id(), id);
    assert_eq!(verify(&vault, &new_text).code, VerifyCode::Valid);
    let old = verify(&vault, PLAIN);
    assert_eq!(old.code, VerifyCode::Valid);
    assert!(old.previous_secret.is_some());
    clock.advance(Duration::from_secs(61));
    assert_eq!(verify(&vault, PLAIN).code, VerifyCode::NotFound);
    assert_eq!(verify(&vault, &new_text).code, VerifyCode::Valid);
}

#[test]
fn credits_come_back_at_the_start_of_each_day_once() {
    // 2026-01-31T23:00:00Z.
    let clock = Clock::manual(1_769_900_400_000);
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    let mut new = NewKey::new("alice");
    new.credits = Some(2);
    new.refill = Some(Refill {
        amount: 3,
        interval: RefillInterval::Daily,
        day: None,
    });
    let mut key = by_hash(HASHED, "alice");
    key.new = new;
    let id = import(&vault, vec![key])[0].key_id;
    let info = vault.show_key(&id).unwrap();
    assert_eq!(info.refill.unwrap().amount, 3);
    assert_eq!(info.refilled_at, Some(clock.now()));
    for _ in 0..2 {
        assert_eq!(verify(&vault, HASHED).code, VerifyCode::Valid);
    }
    assert_eq!(verify(&vault, HASHED).code, VerifyCode::UsageExceeded);
    // Midnight UTC: the next verify finds three credits.
    clock.advance(Duration::from_secs(3600));
    let verdict = verify(&vault, HASHED);
    assert_eq!(verdict.code, VerifyCode::Valid);
    assert_eq!(verdict.credits_remaining, Some(2));
    assert_eq!(vault.show_key(&id).unwrap().refilled_at, Some(clock.now()));
    // Three days without use refill once.
    clock.advance(Duration::from_secs(3 * 86_400));
    assert_eq!(verify(&vault, HASHED).credits_remaining, Some(2));
    let log = export(&vault);
    assert_eq!(log.matches("key.credits_refilled").count(), 2, "{log}");
    // A restart keeps the credits and the time of the last refill.
    let dir = vault.dir().to_path_buf();
    drop(vault);
    let options = VaultOptions {
        clock,
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&dir, &options).unwrap();
    unseal_with_passphrase(&vault);
    assert_eq!(verify(&vault, HASHED).credits_remaining, Some(1));
}

#[test]
fn a_refill_is_set_and_removed_by_update_and_needs_credits() {
    let (_tmp, vault) = passphrase_vault();
    let id = vault.create_key(&ctx(), NewKey::new("a")).unwrap().key.id();
    let monthly = Refill {
        amount: 100,
        interval: RefillInterval::Monthly,
        day: None,
    };
    let no_credits = KeyUpdate {
        refill: Some(Some(monthly)),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        vault.update_key(&ctx(), &id, no_credits),
        Err(Error::InvalidInput(_))
    ));
    let set = KeyUpdate {
        credits: Some(Some(5)),
        refill: Some(Some(monthly)),
        ..KeyUpdate::default()
    };
    let info = vault.update_key(&ctx(), &id, set).unwrap();
    assert_eq!(
        info.refill.unwrap().day,
        Some(1),
        "a monthly refill names its day"
    );
    let unlimited = KeyUpdate {
        credits: Some(None),
        ..KeyUpdate::default()
    };
    let info = vault.update_key(&ctx(), &id, unlimited).unwrap();
    assert_eq!(
        (info.credits, info.refill, info.refilled_at),
        (None, None, None)
    );
}
