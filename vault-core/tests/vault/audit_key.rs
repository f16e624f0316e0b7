//! Rotating the audit key (security review issue 18, item 2): before it, every keyring term
//! shared one audit signing key, digest key and index key, so anyone who once unwrapped the
//! keyring could sign checkpoints forever. `rotate_audit_key` makes a new generation; these
//! tests pin what must hold across it: keys keep verifying and listing by owner, checkpoints
//! move to the new key through one signed by both, an auditor's pinned key follows that
//! transition (and refuses forged ones), and restart, backup, restore, rekey and digests keep
//! working.

use std::io::Cursor;

use secrecy::ExposeSecret;
use vault_core::apikey::{ApiKey, Prefix};
use vault_core::audit::Entry;
use vault_core::audit::export::{ExportFilter, VerifyReport, verify_export};
use vault_core::audit::note::NoteVerifier;
use vault_core::kdf::Passphrase;
use vault_core::keys::{KeyFilter, NewKey, VerifyRequest};
use vault_core::{Credential, Vault};

use crate::common::*;

fn text(key: &ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

fn verify(export: &str, key: &NoteVerifier) -> Result<VerifyReport, String> {
    verify_export(Cursor::new(export.as_bytes()), key, None, |_| {}).map_err(|e| e.to_string())
}

fn owned_by(vault: &Vault, owner: &str) -> Vec<String> {
    let page = vault
        .list_keys(&KeyFilter {
            owner: Some(owner.into()),
            ..KeyFilter::default()
        })
        .unwrap();
    page.keys.iter().map(|k| k.key_id.to_string()).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// A vault with keys of two owners; the key printed at init and the keys' texts by owner.
fn vault_with_keys() -> (
    tempfile::TempDir,
    Vault,
    NoteVerifier,
    Vec<(String, ApiKey)>,
) {
    let (tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    let pinned = NoteVerifier::parse(&issued.audit_public_key).unwrap();
    let mut keys = Vec::new();
    for owner in ["alice", "bob", "alice", "carol", "alice"] {
        let k = vault.create_key(&ctx(), NewKey::new(owner)).unwrap();
        keys.push((owner.to_owned(), k.key));
    }
    (tmp, vault, pinned, keys)
}

fn ids_of(keys: &[(String, ApiKey)], owner: &str) -> Vec<String> {
    sorted(
        keys.iter()
            .filter(|(o, _)| o == owner)
            .map(|(_, k)| k.id().to_string())
            .collect(),
    )
}

#[test]
fn after_rotate_audit_key_keys_verify_list_by_owner_and_checkpoints_move_to_the_new_key() {
    let (_tmp, vault, old, keys) = vault_with_keys();
    vault
        .verify(&ctx(), VerifyRequest::new("pvk_tried_before_the_rotation"))
        .unwrap();
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    assert_eq!(rotation.generation, 2);
    assert_eq!(rotation.index.generation, 2);
    assert_eq!(rotation.index.seen, 5);
    assert!(rotation.transition_size > rotation.seq);
    let new = NoteVerifier::parse(&rotation.public_key).unwrap();
    assert_ne!(new, old);
    assert_eq!(new.name(), old.name(), "one origin, two keys");
    assert_eq!(vault.audit_public_key().unwrap(), rotation.public_key);
    assert_eq!(
        vault.audit_public_keys().unwrap(),
        vec![old.to_string(), new.to_string()]
    );

    // Keys keep verifying; listing by owner is exact.
    for (_, key) in &keys {
        assert!(
            vault
                .verify(&ctx(), VerifyRequest::new(&text(key)))
                .unwrap()
                .valid
        );
    }
    for owner in ["alice", "bob", "carol", "nobody"] {
        assert_eq!(sorted(owned_by(&vault, owner)), ids_of(&keys, owner));
    }

    // The transition checkpoint is signed by both keys; later ones by the new key only.
    let transition = vault
        .audit_checkpoint_at(rotation.transition_size)
        .unwrap()
        .unwrap();
    old.verify(&transition).unwrap();
    new.verify(&transition).unwrap();
    let entry = vault.audit_entry(rotation.seq).unwrap().unwrap();
    let entry = Entry::parse(&entry).unwrap();
    assert_eq!(entry.event, "audit.key_rotated");
    assert_eq!(entry.details["public_key"], rotation.public_key.as_str());
    assert_eq!(entry.details["generation"], 2);
    vault.create_key(&ctx(), NewKey::new("dave")).unwrap();
    let later = vault.audit_checkpoint().unwrap();
    assert!(later.checkpoint.size > rotation.transition_size);
    new.verify(&later.note).unwrap();
    assert!(
        old.verify(&later.note).is_err(),
        "the old key no longer signs"
    );
    assert_eq!(later.note.matches("\n\u{2014} ").count(), 1);

    // "Was this leaked key ever tried": the digest under generation 1 is in the log.
    let digests = vault
        .audit_digests(&ctx(), "pvk_tried_before_the_rotation")
        .unwrap();
    assert_eq!(
        digests.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let hex = |d: &[u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let log = export_with(&vault, &ExportFilter::default());
    assert!(log.contains(&hex(&digests[0].1)));
    assert!(!log.contains(&hex(&digests[1].1)));
}

#[test]
fn the_pinned_key_follows_rotations_in_unfiltered_and_filtered_exports() {
    let (_tmp, vault, old, keys) = vault_with_keys();
    let first = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    vault.create_key(&ctx(), NewKey::new("bob")).unwrap();
    let second = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    assert_eq!(second.generation, 3);
    vault
        .verify(&ctx(), VerifyRequest::new(&text(&keys[1].1)))
        .unwrap();

    let whole = export_with(&vault, &ExportFilter::default());
    let report = verify(&whole, &old).unwrap();
    assert_eq!(
        report.rotations.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![first.seq, second.seq]
    );
    let said = report.to_string();
    assert!(
        said.contains(&format!(
            "the audit key was rotated at entry {}; followed from the pinned key",
            first.seq
        )),
        "{said}"
    );
    report.require_complete(0).unwrap();

    // A filtered export proves the same rotations with its own proofs.
    let filtered = export_with(
        &vault,
        &ExportFilter {
            owner: Some("bob".into()),
            ..ExportFilter::default()
        },
    );
    let report = verify(&filtered, &old).unwrap();
    assert!(report.filtered);
    assert_eq!(report.rotations.len(), 2);

    // A key pinned later (the first rotation's, or the newest) works too.
    let middle = NoteVerifier::parse(&first.public_key).unwrap();
    assert_eq!(verify(&whole, &middle).unwrap().rotations.len(), 1);
    let newest = NoteVerifier::parse(&second.public_key).unwrap();
    assert!(verify(&filtered, &newest).unwrap().rotations.is_empty());

    // An earlier checkpoint signed by the old key is still one the export extends.
    let early = vault.audit_checkpoint_at(first.seq).unwrap();
    if let Some(early) = early {
        verify_export(Cursor::new(whole.as_bytes()), &old, Some(&early), |_| {}).unwrap();
    }
}

/// The export's lines, and the index of its first rotation line.
fn rotation_line(export: &str) -> (Vec<String>, usize) {
    let lines: Vec<String> = export.lines().map(str::to_owned).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("{\"audit_key_rotation\""))
        .unwrap();
    (lines, at)
}

#[test]
fn a_transition_signed_only_by_the_new_key_is_refused() {
    let (_tmp, vault, old, _) = vault_with_keys();
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let whole = export_with(&vault, &ExportFilter::default());
    let (mut lines, at) = rotation_line(&whole);
    let mut line: serde_json::Value = serde_json::from_str(&lines[at]).unwrap();
    let note = line["audit_key_rotation"]["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    // Strip the old key's signature line (the first one), keep the new key's.
    let (body, sigs) = note.split_once("\n\n").unwrap();
    let kept: Vec<&str> = sigs.lines().skip(1).collect();
    let stripped = format!("{body}\n\n{}\n", kept.join("\n"));
    NoteVerifier::parse(&rotation.public_key)
        .unwrap()
        .verify(&stripped)
        .unwrap();
    line["audit_key_rotation"]["checkpoint"] = stripped.into();
    lines[at] = line.to_string();
    let forged = lines.join("\n") + "\n";
    let why = verify(&forged, &old).unwrap_err();
    assert!(
        why.contains(&format!(
            "the audit key rotation at entry {} is not signed by the key it replaces",
            rotation.seq
        )),
        "{why}"
    );
    // Without its rotation line, the export's checkpoint is simply not the pinned key's.
    lines.remove(at);
    let why = verify(&(lines.join("\n") + "\n"), &old).unwrap_err();
    assert!(
        why.contains("does not verify with the given public key"),
        "{why}"
    );
}

#[test]
fn a_rotation_line_whose_entry_is_not_in_the_transition_tree_is_refused() {
    let (_tmp, vault, old, _) = vault_with_keys();
    vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let whole = export_with(&vault, &ExportFilter::default());
    let (mut lines, at) = rotation_line(&whole);
    let mut line: serde_json::Value = serde_json::from_str(&lines[at]).unwrap();
    let entry = line["audit_key_rotation"]["entry"].as_str().unwrap();
    // Another salt: the same announcement, but not the entry the vault logged.
    let salt_at = entry.find("\"salt\":\"").unwrap() + 8;
    let mut edited = entry.to_owned();
    let flipped = if &edited[salt_at..=salt_at] == "0" {
        "1"
    } else {
        "0"
    };
    edited.replace_range(salt_at..=salt_at, flipped);
    line["audit_key_rotation"]["entry"] = edited.into();
    lines[at] = line.to_string();
    let why = verify(&(lines.join("\n") + "\n"), &old).unwrap_err();
    assert!(
        why.contains("is not in the transition checkpoint's tree"),
        "{why}"
    );
}

#[test]
fn a_restart_backup_restore_and_rekey_keep_the_rotated_audit_key() {
    let (tmp, vault, old, keys) = vault_with_keys();
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let new = NoteVerifier::parse(&rotation.public_key).unwrap();
    let dir = vault.dir().to_path_buf();

    // Rekey carries the generations (the keyring is re-encrypted whole).
    let passphrase = "a brand new passphrase for the vault";
    vault
        .rekey(
            &ctx(),
            Credential::Passphrase(Passphrase::new(PASSPHRASE)),
            &passphrase_method(passphrase),
        )
        .unwrap();
    vault.seal(&ctx()).unwrap();
    drop(vault);

    // A restart and an unseal.
    let vault = Vault::open(&dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(passphrase))
        .unwrap();
    assert_eq!(vault.audit_public_key().unwrap(), rotation.public_key);
    for (_, key) in &keys {
        assert!(
            vault
                .verify(&ctx(), VerifyRequest::new(&text(key)))
                .unwrap()
                .valid
        );
    }
    assert_eq!(sorted(owned_by(&vault, "alice")), ids_of(&keys, "alice"));
    let later = vault.audit_checkpoint().unwrap();
    new.verify(&later.note).unwrap();
    assert!(old.verify(&later.note).is_err());
    verify(&export_with(&vault, &ExportFilter::default()), &old).unwrap();

    // Backup and restore.
    let mut backup = Vec::new();
    vault.backup(&ctx(), &mut backup, |_| {}).unwrap();
    let restored_dir = tmp.path().join("restored");
    let report = Vault::restore(backup.as_slice(), &restored_dir, |_| {}).unwrap();
    assert_eq!(report.audit_public_key, rotation.public_key);
    let restored = Vault::open(&restored_dir).unwrap();
    restored
        .unseal_passphrase(&ctx(), &Passphrase::new(passphrase))
        .unwrap();
    assert_eq!(sorted(owned_by(&restored, "alice")), ids_of(&keys, "alice"));
    assert!(
        restored
            .verify(&ctx(), VerifyRequest::new(&text(&keys[0].1)))
            .unwrap()
            .valid
    );
    let report = verify(&export_with(&restored, &ExportFilter::default()), &old).unwrap();
    assert_eq!(report.rotations.len(), 1);
    new.verify(&restored.audit_checkpoint().unwrap().note)
        .unwrap();

    // And a rotation after the restore chains on.
    let again = restored.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    assert_eq!(again.generation, 3);
    let report = verify(&export_with(&restored, &ExportFilter::default()), &old).unwrap();
    assert_eq!(report.rotations.len(), 2);
}

#[test]
fn the_checkpoint_file_keeps_verifying_with_the_vaults_keys() {
    let (_tmp, vault, old, _) = vault_with_keys();
    vault.audit_checkpoint().unwrap();
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    vault.create_key(&ctx(), NewKey::new("erin")).unwrap();
    vault.audit_checkpoint().unwrap();
    let new = NoteVerifier::parse(&rotation.public_key).unwrap();
    let file = std::fs::read_to_string(vault.dir().join("checkpoints.jsonl")).unwrap();
    let notes: Vec<String> = file
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["checkpoint"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let by_old = notes.iter().filter(|n| old.verify(n).is_ok()).count();
    let by_new = notes.iter().filter(|n| new.verify(n).is_ok()).count();
    let by_both = notes
        .iter()
        .filter(|n| old.verify(n).is_ok() && new.verify(n).is_ok())
        .count();
    assert_eq!(by_both, 1, "exactly one transition checkpoint");
    assert_eq!(by_old + by_new - by_both, notes.len());
    assert!(by_new >= 2);
}
