//! Rows put back older in the store under a live vault: a key record, its credits or a token
//! row whose record version is below one the vault has seen is refused and counted, and what
//! the vault already held goes on answering.

use super::*;
use crate::keys::{KeyUpdate, NewKey, VerifyRequest};
use crate::record::{self, RecordError};
use crate::tokens::Role;

/// Puts `bytes` back as `space/id`, under the vault, as someone with write access to the
/// store could.
fn put_back(vault: &Vault, space: Space, id: &[u8], bytes: &[u8]) {
    let mut batch = Batch::default();
    batch.insert(space, id, bytes);
    vault.inner.store.apply(batch).unwrap();
}

fn version(vault: &Vault, space: Space, id: &[u8]) -> u64 {
    let keys = vault.keys().unwrap();
    let bytes = stored(vault, space, id);
    record::open_versioned(&keys.keyring, space, id, &bytes)
        .unwrap()
        .version
}

#[test]
fn every_write_of_a_key_moves_its_record_version_forward() {
    let (_tmp, vault) = new_vault();
    let mut new = NewKey::new("customer-1");
    new.credits = Some(5);
    let issued = vault.create_key(&ctx(), new).unwrap();
    let id = issued.key.id();
    let text = key_text(&issued);
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 1);
    assert_eq!(version(&vault, Space::Credits, id.as_bytes()), 1);
    for spent in 1..=3 {
        assert!(
            vault
                .verify(&ctx(), VerifyRequest::new(&text))
                .unwrap()
                .valid
        );
        assert_eq!(version(&vault, Space::Credits, id.as_bytes()), 1 + spent);
    }
    let update = KeyUpdate {
        name: Some("renamed".into()),
        ..KeyUpdate::default()
    };
    vault.update_key(&ctx(), &id, update).unwrap();
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 2);
    vault.rotate_key(&ctx(), &id, 0).unwrap();
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 3);
    vault.revoke_key(&ctx(), &id).unwrap();
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 4);
    // A rewrap changes the term, not the content: the version stays.
    vault.rotate(&ctx()).unwrap();
    vault.rewrap(&ctx(), |_, _| {}).unwrap();
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 4);
    assert_eq!(version(&vault, Space::Credits, id.as_bytes()), 4);
}

#[test]
fn a_key_record_put_back_older_is_refused_and_counted() {
    let (_tmp, vault) = new_vault();
    let (issued, text) = issue(&vault, "customer-1");
    let id = issued.key.id();
    let created = stored(&vault, Space::Keys, id.as_bytes());
    vault.revoke_key(&ctx(), &id).unwrap();
    let revoked = stored(&vault, Space::Keys, id.as_bytes());
    // The revoke undone in the store: the cached, revoked record goes on answering.
    put_back(&vault, Space::Keys, id.as_bytes(), &created);
    let verdict = vault.verify(&ctx(), VerifyRequest::new(&text)).unwrap();
    assert!(!verdict.valid);
    assert_eq!(vault.record_rollbacks(), 0);
    // A conflict empties the slot; the row read again is older than the one it held: refused,
    // counted, and nothing answers VALID.
    vault.inner.key_book.forget(&id);
    let got = vault.verify(&ctx(), VerifyRequest::new(&text));
    assert!(
        matches!(
            got,
            Err(Error::Record(RecordError::RolledBack { seen: 2, got: 1 }))
        ),
        "{got:?}"
    );
    assert_eq!(vault.record_rollbacks(), 1);
    assert_eq!(got.unwrap_err().code(), "corrupt");
    assert!(vault.show_key(&id).is_err());
    assert_eq!(vault.record_rollbacks(), 2);
    // The row as it was is taken again.
    put_back(&vault, Space::Keys, id.as_bytes(), &revoked);
    let verdict = vault.verify(&ctx(), VerifyRequest::new(&text)).unwrap();
    assert!(!verdict.valid);
    assert_eq!(vault.record_rollbacks(), 2);
}

#[test]
fn credits_put_back_older_are_refused_and_counted() {
    let (_tmp, vault) = new_vault();
    let mut new = NewKey::new("customer-1");
    new.credits = Some(2);
    let issued = vault.create_key(&ctx(), new).unwrap();
    let id = issued.key.id();
    let text = key_text(&issued);
    let full = stored(&vault, Space::Credits, id.as_bytes());
    for _ in 0..2 {
        assert!(
            vault
                .verify(&ctx(), VerifyRequest::new(&text))
                .unwrap()
                .valid
        );
    }
    // Spent credits re-granted in the store: the cache's count stands.
    put_back(&vault, Space::Credits, id.as_bytes(), &full);
    assert!(
        !vault
            .verify(&ctx(), VerifyRequest::new(&text))
            .unwrap()
            .valid
    );
    vault.inner.key_book.forget(&id);
    let got = vault.verify(&ctx(), VerifyRequest::new(&text));
    assert!(
        matches!(
            got,
            Err(Error::Record(RecordError::RolledBack { seen: 3, got: 1 }))
        ),
        "{got:?}"
    );
    assert_eq!(vault.record_rollbacks(), 1);
}

#[test]
fn a_token_put_back_unrevoked_is_refused_and_counted() {
    let (_tmp, vault) = new_vault();
    let issued = vault
        .create_token(&ctx(), None, Role::Verifier, "ci", None)
        .unwrap();
    let id = issued.info.token_id;
    let text = secrecy::ExposeSecret::expose_secret(&issued.token.expose_secret_text()).to_owned();
    let live = stored(&vault, Space::Tokens, id.as_bytes());
    vault.revoke_token(&ctx(), &id).unwrap();
    put_back(&vault, Space::Tokens, id.as_bytes(), &live);
    // As another node's token change does, the cache is dropped; the seen version stays.
    vault.inner.token_book.clear();
    assert!(vault.check_token(&text).unwrap().is_none());
    assert!(matches!(
        vault.token_is_live(&id),
        Err(Error::Record(RecordError::RolledBack { seen: 2, got: 1 }))
    ));
    assert!(vault.record_rollbacks() >= 1);
}

#[test]
fn a_version_1_envelope_older_builds_wrote_is_read_and_rewritten_when_written() {
    let (_tmp, vault) = new_vault();
    let (issued, text) = issue(&vault, "customer-1");
    let id = issued.key.id();
    // The record as an older build sealed it: envelope version 1, no record version.
    let keys = vault.keys().unwrap();
    let plain = record::open(
        &keys.keyring,
        Space::Keys,
        id.as_bytes(),
        &stored(&vault, Space::Keys, id.as_bytes()),
    )
    .unwrap();
    let old = record::tests::sealed_v1(&keys.keyring, Space::Keys, id.as_bytes(), &plain);
    put_back(&vault, Space::Keys, id.as_bytes(), &old);
    vault.inner.key_book.clear();
    assert!(
        vault
            .verify(&ctx(), VerifyRequest::new(&text))
            .unwrap()
            .valid
    );
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 0);
    assert_eq!(stored(&vault, Space::Keys, id.as_bytes())[0], 1);
    let update = KeyUpdate {
        name: Some("renamed".into()),
        ..KeyUpdate::default()
    };
    vault.update_key(&ctx(), &id, update).unwrap();
    assert_eq!(stored(&vault, Space::Keys, id.as_bytes())[0], 2);
    assert_eq!(version(&vault, Space::Keys, id.as_bytes()), 1);
    assert_eq!(vault.record_rollbacks(), 0);
}
