//! The name index of a vault that has none (one written before it, here made by removing the
//! entries and the mark), built in the background after unseal: a search by name is refused
//! until it is built, never answered from a partial index; keys made or renamed meanwhile are
//! found afterwards; a seal or close part-way stops it and the next unseal finishes the job.

use std::sync::atomic::Ordering;

use super::*;
use crate::apikey::KeyId;
use crate::keys::{KeyFilter, KeyUpdate, NewKey};

/// Removes every name index entry and the mark, as a vault written before the index.
fn drop_name_index(vault: &Vault) {
    let mut batch = Batch::default();
    for item in vault.inner.store.scan_prefix(Space::Index, &[4], None) {
        batch.remove(Space::Index, &item.unwrap().0);
    }
    batch.remove(Space::Meta, b"name-index");
    vault.inner.store.apply(batch).unwrap();
}

/// Holds (or lets go) the build between reading its batch and committing it.
fn pause_build(vault: &Vault, paused: bool) {
    vault
        .inner
        .key_book
        .name_index_paused
        .store(paused, Ordering::Release);
}

/// Waits (at most 60 s) for the name index build to finish.
fn wait_for_name_index(vault: &Vault) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while vault.name_index_building() || !vault.name_index_ready().unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the name index build did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn named(vault: &Vault, name: &str) -> Result<Vec<KeyId>> {
    let filter = KeyFilter {
        name: Some(name.into()),
        ..Default::default()
    };
    Ok(vault
        .list_keys(&filter)?
        .keys
        .iter()
        .map(|k| k.key_id)
        .collect())
}

fn ids_sorted(mut ids: Vec<KeyId>) -> Vec<KeyId> {
    ids.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    ids
}

fn build_entries(vault: &Vault) -> usize {
    export_text(vault)
        .unwrap()
        .lines()
        .filter(|l| l.contains("keys.name_index_build"))
        .count()
}

#[test]
fn a_missing_name_index_is_refused_while_built_after_unseal_and_changes_meanwhile_are_found() {
    let (_tmp, vault) = new_vault();
    let keys: Vec<_> = (0..5).map(|_| issue(&vault, "customer-1")).collect();
    let ids: Vec<KeyId> = keys.iter().map(|(k, _)| k.info.key_id).collect();
    drop_name_index(&vault);
    assert!(matches!(named(&vault, ""), Err(Error::Conflict(_))));
    // Owner and status searches do not need it.
    let by_owner = KeyFilter {
        owner: Some("customer-1".into()),
        ..Default::default()
    };
    assert_eq!(vault.list_keys(&by_owner).unwrap().keys.len(), 5);
    vault.seal(&ctx()).unwrap();

    // Held after reading the records (every key, one batch) and before committing.
    pause_build(&vault, true);
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    assert!(vault.name_index_building());
    assert!(!vault.name_index_ready().unwrap());
    match named(&vault, "") {
        Err(Error::Conflict(message)) => {
            assert!(message.contains("being built"), "{message}");
            assert!(message.contains("try again later"), "{message}");
        }
        other => panic!("a search during the build answered {other:?}"),
    }
    // Everything else is served meanwhile.
    let verdict = vault
        .verify(&ctx(), crate::keys::VerifyRequest::new(&keys[1].1))
        .unwrap();
    assert_eq!(verdict.code, crate::keys::VerifyCode::Valid);
    let fresh = vault
        .create_key(
            &ctx(),
            NewKey {
                name: "fresh".into(),
                ..NewKey::new("customer-2")
            },
        )
        .unwrap()
        .info
        .key_id;
    // The build read this key under its old name: its entry for "" is committed after the
    // rename, stale, and the listing passes over it.
    let rename = KeyUpdate {
        name: Some("renamed".into()),
        ..KeyUpdate::default()
    };
    vault.update_key(&ctx(), &ids[0], rename).unwrap();
    pause_build(&vault, false);
    wait_for_name_index(&vault);

    assert_eq!(named(&vault, "").unwrap(), ids_sorted(ids[1..].to_vec()));
    assert_eq!(named(&vault, "renamed").unwrap(), vec![ids[0]]);
    assert_eq!(named(&vault, "fresh").unwrap(), vec![fresh]);
    assert_eq!(build_entries(&vault), 1, "one build, in one batch");
    // Built once: the next unseal has nothing to do.
    vault.seal(&ctx()).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    assert!(!vault.name_index_building());
    assert_eq!(named(&vault, "renamed").unwrap(), vec![ids[0]]);
    assert_eq!(build_entries(&vault), 1);
}

#[test]
fn a_seal_or_close_during_the_build_stops_it_and_the_next_unseal_finishes_it() {
    let (_tmp, vault) = new_vault();
    let dir = vault.dir().to_path_buf();
    let ids: Vec<KeyId> = (0..4)
        .map(|_| issue(&vault, "customer-1").0.info.key_id)
        .collect();
    drop_name_index(&vault);
    vault.seal(&ctx()).unwrap();
    pause_build(&vault, true);
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    assert!(vault.name_index_building());
    // The seal stops the held build before it commits anything.
    vault.seal(&ctx()).unwrap();
    assert!(!vault.name_index_building());
    assert!(!vault.name_index_ready().unwrap());
    let entries = vault
        .inner
        .store
        .scan_prefix(Space::Index, &[4], None)
        .count();
    assert_eq!(entries, 0);

    // Closing while it is held: the handle's drop stops it too, and the directory reopens.
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    assert!(vault.name_index_building());
    drop(vault);
    let vault = reopen(&dir);
    wait_for_name_index(&vault);
    assert_eq!(named(&vault, "").unwrap(), ids_sorted(ids));
    let text = export_text(&vault).unwrap();
    let build: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("keys.name_index_build"))
        .collect();
    assert_eq!(build.len(), 1, "{build:?}");
    // The seal's entry comes after no build entry: the stopped builds wrote none.
    assert!(build[0].contains("\"ok\""), "{}", build[0]);
}
