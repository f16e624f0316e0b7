//! The key cache's bounds, its warm after unseal, and the owner index: unknown ids leave no
//! slot, dropped keys verify from the store, and listing by owner stays exact while the index
//! is rebuilt (the name index built after unseal is in `name_index.rs`).

use super::*;

/// Reopens the vault of `new_vault` with a key cache of `keys` slots and `unknown` unknown ids.
fn reopen_with_cache(vault: Vault, keys: usize, unknown: usize) -> Vault {
    let dir = vault.dir().to_path_buf();
    drop(vault);
    let options = VaultOptions {
        keys_cached: keys,
        unknown_ids_cached: unknown,
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&dir, &options).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    vault
}

fn code(vault: &Vault, text: &str) -> crate::keys::VerifyCode {
    vault
        .verify(&ctx(), crate::keys::VerifyRequest::new(text))
        .unwrap()
        .code
}

/// Waits (at most 20 s) for the warm after unseal to finish.
fn warmed(vault: &Vault) {
    let start = std::time::Instant::now();
    while vault.key_cache_warming() {
        assert!(start.elapsed().as_secs() < 20, "the warm does not finish");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn unseal_warms_the_cache_with_every_key_the_used_ones_saved_at_seal() {
    let (_tmp, vault) = new_vault();
    let texts: Vec<String> = (0..20)
        .map(|n| issue(&vault, &format!("c-{n}")).1)
        .collect();
    vault.seal(&ctx()).unwrap();
    assert_eq!(
        vault.inner.key_book.cache.len().0,
        0,
        "a seal empties the cache"
    );
    // Every key was used (made) since the last sweep: all saved, 12 bytes each.
    let saved = fs::read(vault.dir().join("warm-keys")).unwrap();
    assert_eq!(saved.len(), 20 * 12);
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    warmed(&vault);
    assert_eq!(vault.inner.key_book.cache.len().0, 20);
    for text in &texts {
        assert_eq!(code(&vault, text), crate::keys::VerifyCode::Valid);
    }
    // Warming never makes room: a cache smaller than the keys stops at its share.
    let vault = reopen_with_cache(vault, 16, 16);
    warmed(&vault);
    let (slots, _) = vault.inner.key_book.cache.len();
    assert!((1..=16).contains(&slots), "{slots} slots");
}

#[test]
fn verifies_of_unknown_ids_leave_no_slot_and_are_remembered_within_their_room() {
    let (_tmp, vault) = new_vault();
    let (_, known) = issue(&vault, "customer-1");
    let unknown: Vec<String> = (0..3_000)
        .map(|_| {
            let key = ApiKey::generate(&vault.prefix());
            secrecy::ExposeSecret::expose_secret(&key.expose_secret_text()).to_owned()
        })
        .collect();
    for text in &unknown {
        assert_eq!(code(&vault, text), crate::keys::VerifyCode::NotFound);
    }
    let (slots, remembered) = vault.inner.key_book.cache.len();
    assert_eq!(slots, 1, "only the known key has a slot");
    assert_eq!(remembered, 3_000);
    // Asked again, the unknown ids are still NOT_FOUND (now from the negative cache), and
    // each is still audited.
    let before = vault.audit_size();
    assert_eq!(code(&vault, &unknown[0]), crate::keys::VerifyCode::NotFound);
    assert_eq!(vault.audit_size(), before + 1);
    assert_eq!(code(&vault, &known), crate::keys::VerifyCode::Valid);
}

#[test]
fn the_unknown_ids_remembered_are_bounded() {
    let (_tmp, vault) = new_vault();
    let vault = reopen_with_cache(vault, 1_000, 64);
    for _ in 0..2_000 {
        let key = ApiKey::generate(&vault.prefix());
        let text = secrecy::ExposeSecret::expose_secret(&key.expose_secret_text()).to_owned();
        assert_eq!(code(&vault, &text), crate::keys::VerifyCode::NotFound);
    }
    let (slots, remembered) = vault.inner.key_book.cache.len();
    assert_eq!(slots, 0);
    // Each of the 16 shards rounds its share up to at least 4.
    assert!(remembered <= 64 + 16, "{remembered} unknown ids remembered");
}

#[test]
fn keys_dropped_from_a_full_cache_verify_from_the_store_with_exact_credits() {
    let (_tmp, vault) = new_vault();
    let vault = reopen_with_cache(vault, 16, 16);
    let keys: Vec<String> = (0..200)
        .map(|i| issue(&vault, &format!("c{i}")).1)
        .collect();
    let mut new = crate::keys::NewKey::new("spender");
    new.credits = Some(50);
    let spender = vault.create_key(&ctx(), new).unwrap();
    let spender = key_text(&spender);
    let mut valid = 0;
    for round in 0..3 {
        for (i, text) in keys.iter().enumerate() {
            assert_eq!(
                code(&vault, text),
                crate::keys::VerifyCode::Valid,
                "{round} {i}"
            );
            // Spends between verifies of other keys, so the spender's slot is dropped and
            // read again from the store between spends.
            if i % 10 == 0 && code(&vault, &spender) == crate::keys::VerifyCode::Valid {
                valid += 1;
            }
        }
        let (slots, _) = vault.inner.key_book.cache.len();
        assert!(slots <= 16 + 16, "{slots} slots in a cache of 16");
    }
    assert_eq!(valid, 50, "exactly the key's credits were spent");
    // A key changed while out of the cache is read with its change.
    let first = ApiKey::parse(&keys[0], &vault.prefix()).unwrap().id();
    vault.revoke_key(&ctx(), &first).unwrap();
    for text in &keys[1..] {
        code(&vault, text);
    }
    assert_eq!(code(&vault, &keys[0]), crate::keys::VerifyCode::Revoked);
}

#[test]
fn a_short_owner_index_entry_is_an_error_not_a_panic() {
    let (_tmp, vault) = new_vault();
    issue(&vault, "customer-1");
    let keys = vault.keys().unwrap();
    let mut entry = crate::keys::owner_index::owner_index_prefix(&keys.keyring.index, "customer-1");
    drop(keys);
    entry.truncate(5);
    let mut batch = Batch::default();
    batch.insert(Space::Index, &entry, &[]);
    vault.inner.store.apply(batch).unwrap();
    let filter = crate::keys::KeyFilter {
        owner: Some("customer-1".into()),
        ..Default::default()
    };
    // Only entries under the owner's full prefix are listed: a 5-byte key is not one of them.
    assert!(vault.list_keys(&filter).is_ok());
    let mut entry = crate::keys::owner_index::owner_index_prefix(
        &vault.keys().unwrap().keyring.index,
        "customer-1",
    );
    entry.extend_from_slice(&[7; 3]);
    let mut batch = Batch::default();
    batch.insert(Space::Index, &entry, &[]);
    vault.inner.store.apply(batch).unwrap();
    assert!(matches!(vault.list_keys(&filter), Err(Error::Corrupt(_))));
}

/// Listing by owner reads every index generation not yet rebuilt, so it stays exact while the
/// rebuild runs (here: before it starts, half done, failed, and done), and a rebuild that
/// failed part way finishes when run again.
#[test]
fn listing_by_owner_is_exact_while_the_owner_index_is_rebuilt_and_a_failed_rebuild_finishes() {
    use crate::keys::KeyFilter;
    use crate::keys::owner_index::owner_index_prefix;
    let (_tmp, vault) = new_vault();
    let mut alice: Vec<String> = (0..3)
        .map(|_| issue(&vault, "alice").0.info.key_id.to_string())
        .collect();
    let bob = issue(&vault, "bob").0.info.key_id.to_string();
    let list = |owner: &str| {
        let page = vault
            .list_keys(&KeyFilter {
                owner: Some(owner.into()),
                ..KeyFilter::default()
            })
            .unwrap();
        let mut ids: Vec<String> = page.keys.iter().map(|k| k.key_id.to_string()).collect();
        ids.sort();
        ids
    };
    vault.start_audit_key_rotation(&ctx()).unwrap();
    alice.sort();
    assert_eq!(list("alice"), alice, "before the rebuild starts");
    alice.push(issue(&vault, "alice").0.info.key_id.to_string());
    alice.sort();
    assert_eq!(list("alice"), alice, "a key made after the rotation");

    // Half done: one key moved, one with its entries under both generations.
    let keys = vault.keys().unwrap();
    let entry = |generation: u32, id: &str| {
        let g = keys.keyring.audit_generation(generation).unwrap();
        let mut e = owner_index_prefix(&g.index, "alice");
        e.extend_from_slice(&crate::apikey::KeyId::parse_hex(id).unwrap().as_bytes()[..]);
        e
    };
    let mut batch = Batch::default();
    batch.insert(Space::Index, &entry(2, &alice[0]), &[]);
    batch.remove(Space::Index, &entry(1, &alice[0]));
    batch.insert(Space::Index, &entry(2, &alice[1]), &[]);
    vault.inner.store.apply(batch).unwrap();
    assert_eq!(list("alice"), alice, "half rebuilt");

    vault
        .danger()
        .inject_storage_fault(Some(crate::storage::Fault::Write));
    assert!(vault.rebuild_owner_index(&ctx(), |_, _| {}).is_err());
    vault.danger().inject_storage_fault(None);
    assert_eq!(list("alice"), alice, "after a failed rebuild");
    assert_eq!(
        crate::keys::owner_index::rebuilt_generation(&vault.inner.store).unwrap(),
        1
    );

    let report = vault.rebuild_owner_index(&ctx(), |_, _| {}).unwrap();
    assert_eq!((report.generation, report.seen), (2, 5));
    assert_eq!(
        crate::keys::owner_index::rebuilt_generation(&vault.inner.store).unwrap(),
        2
    );
    assert_eq!(list("alice"), alice);
    assert_eq!(list("bob"), vec![bob]);
    // Nothing is left under the retired index key.
    let old = owner_index_prefix(&keys.keyring.audit_generation(1).unwrap().index, "alice");
    assert_eq!(
        vault
            .inner
            .store
            .scan_prefix(Space::Index, &old, None)
            .count(),
        0
    );
    // Run again, it has nothing to do.
    assert_eq!(
        vault.rebuild_owner_index(&ctx(), |_, _| {}).unwrap().seen,
        0
    );
}

/// A filter no index serves (a status alone) passes over a bounded number of keys per page
/// (`keys::list::MAX_SKIPPED`, 8 in unit tests): the page ends short with a cursor, and
/// following the cursors finds every match once.
#[test]
fn a_page_passes_over_a_bounded_number_of_keys_and_its_cursor_goes_on() {
    use crate::keys::{KeyFilter, KeyStatus};
    let (_tmp, vault) = new_vault();
    let ids: Vec<_> = (0..30).map(|_| issue(&vault, "c").0.info.key_id).collect();
    let mut revoked: Vec<_> = ids.iter().step_by(7).copied().collect();
    for id in &revoked {
        vault.revoke_key(&ctx(), id).unwrap();
    }
    revoked.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut found = Vec::new();
    let mut pages = 0;
    let mut after = None;
    loop {
        let page = vault
            .list_keys(&KeyFilter {
                status: Some(KeyStatus::Revoked),
                after,
                ..KeyFilter::default()
            })
            .unwrap();
        pages += 1;
        found.extend(page.keys.iter().map(|k| k.key_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(found, revoked);
    assert!(
        pages >= 3,
        "26 keys passed over, at most 7 a page: {pages} pages"
    );
}
