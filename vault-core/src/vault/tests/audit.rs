//! The audit log against an attacker with the disk and against crashes: edited entries are
//! named or stop the log, entries synced after the store last recorded them are taken back, and
//! a signing-key transition is signed by the key its entry announced.

use super::*;
use crate::vault::danger::RecordTree;

/// Edits entry `seq` in its segment file as an attacker with the disk would: same length,
/// checksum fixed, so only the Merkle tree can tell.
fn tamper_entry(vault: &Vault, seq: u64) {
    let dir = vault.dir().join("audit");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let mut at = 0u64;
    for path in files {
        let mut bytes = fs::read(&path).unwrap();
        let mut offset = 0usize;
        while offset < bytes.len() {
            let len = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap());
            let len = (len & !crate::audit::segment::REPLAYABLE) as usize;
            let body = offset + 8..offset + 8 + len;
            if at == seq {
                let text = String::from_utf8(bytes[body.clone()].to_vec()).unwrap();
                let edited = text.replacen("\"actor\":\"embedded\"", "\"actor\":\"embeddeX\"", 1);
                assert_ne!(edited, text, "entry {seq} has no embedded actor");
                bytes[body.clone()].copy_from_slice(edited.as_bytes());
                let crc = crc32fast::hash(&bytes[body]);
                bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_be_bytes());
                fs::write(&path, &bytes).unwrap();
                return;
            }
            at += 1;
            offset += 8 + len;
        }
    }
    panic!("entry {seq} not found");
}

/// An entry edited in the store before the last checkpoint: the export still carries the
/// vault's stored leaf hash, and the offline verifier names the entry.
#[test]
fn an_old_entry_edited_on_disk_is_named_by_offline_verify() {
    let (_tmp, vault) = new_vault();
    for i in 0..5 {
        vault
            .danger()
            .put_record(&ctx(), RecordTree::Keys, &[i], b"x")
            .unwrap();
    }
    vault.audit_checkpoint().unwrap();
    tamper_entry(&vault, 3);
    let text = export_text(&vault).unwrap();
    let e = crate::audit::export::verify_export(text.as_bytes(), &verifier(&vault), None, |_| {})
        .unwrap_err();
    assert!(e.why.contains("entry 3 was changed"), "{e}");
}

/// An entry edited in the store after the last checkpoint: the next checkpoint finds it, the
/// log stops, and every later operation fails closed.
#[test]
fn a_new_entry_edited_on_disk_stops_the_log() {
    let (_tmp, vault) = new_vault();
    vault.audit_checkpoint().unwrap();
    for i in 0..5 {
        vault
            .danger()
            .put_record(&ctx(), RecordTree::Keys, &[i], b"x")
            .unwrap();
    }
    let size = vault.audit_size();
    tamper_entry(&vault, size - 2);
    let e = vault.audit_checkpoint().unwrap_err();
    assert!(
        matches!(&e, Error::AuditUnavailable(why) if why.contains("does not match its stored leaf hash")),
        "{e}"
    );
    let e = vault
        .danger()
        .put_record(&ctx(), RecordTree::Keys, b"later", b"x")
        .unwrap_err();
    assert!(matches!(e, Error::AuditUnavailable(_)), "{e}");
    assert_eq!(vault.audit_size(), size);
}

/// A verify's group changes nothing but the log, so the store learns of it lazily (about once a
/// second): a crash before then leaves the store's tail and the tree file's synced size behind
/// the segment, and the tree file's later nodes lost or garbage. The next open takes the
/// entries back from the segment and rebuilds the nodes, and the result extends the last
/// signed checkpoint.
#[test]
fn verifies_synced_after_the_store_last_recorded_the_log_are_taken_back() {
    use crate::audit::log::{META_TAIL, META_TREE};
    use crate::audit::tree;
    let (_tmp, vault) = new_vault();
    let dir = vault.dir().to_path_buf();
    let public_key = verifier(&vault);
    let (_, text) = issue(&vault, "o");
    let verify = |vault: &Vault| {
        let v = vault
            .verify(&ctx(), crate::keys::VerifyRequest::new(&text))
            .unwrap();
        assert!(v.valid);
    };
    for _ in 0..5 {
        verify(&vault);
    }
    vault.inner.audit.record().unwrap();
    let store = &vault.inner.store;
    let old_tail = store.get(Space::Local, META_TAIL).unwrap().unwrap();
    let old_tree = store.get(Space::Local, META_TREE).unwrap().unwrap();
    let old_size = vault.audit_size();
    let old = vault.audit_checkpoint().unwrap();
    assert_eq!(old.checkpoint.size, old_size);
    for _ in 0..300 {
        verify(&vault);
    }
    let size = vault.audit_size();
    let signed = vault.audit_checkpoint().unwrap();
    assert_eq!(signed.checkpoint.size, size);
    drop(vault);

    // The store as its last record left it; the tree file's later nodes overwritten.
    {
        let store = Store::open(&dir.join(STORE_DIR)).unwrap();
        let mut batch = Batch::default();
        batch.insert(Space::Local, META_TAIL, &old_tail);
        batch.insert(Space::Local, META_TREE, &old_tree);
        store.apply(batch).unwrap();
        let path = dir.join(AUDIT_DIR).join(tree::TREE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let synced = tree::nodes_in(old_size) as usize * 32;
        bytes[synced..].fill(0xAA);
        fs::write(&path, &bytes).unwrap();
    }
    let vault = Vault::open(&dir).unwrap();
    assert_eq!(
        vault.audit_size(),
        size,
        "every acknowledged verify is back"
    );
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    verify(&vault);
    let end = vault.audit_size();
    assert_eq!(end, size + 2, "the unseal and the verify after it");
    // Signing checks the stored tree against the last checkpoint and the frontier.
    let next = vault.audit_checkpoint().unwrap();
    assert_eq!(next.checkpoint.size, end);
    let proof = vault.audit_consistency_proof(old_size, end).unwrap();
    crate::audit::merkle::verify_consistency(
        old_size,
        end,
        &old.checkpoint.root,
        &next.checkpoint.root,
        &proof,
    )
    .unwrap();
    let text = export_text(&vault).unwrap();
    let report =
        crate::audit::export::verify_export(text.as_bytes(), &public_key, None, |_| {}).unwrap();
    assert_eq!(report.entries, end + 1, "and the export's own entry");
}

/// A new segment file whose tail the store failed to record: verifies written into it are not
/// replayable (open would remove a file the tail does not name), so each writes the tail until
/// one succeeds, and then the store's tail names the file that holds them.
#[test]
fn verifies_after_an_unrecorded_roll_record_the_new_file() {
    use crate::audit::log::META_TAIL;
    use crate::audit::segment::Tail;
    let (_tmp, vault) = new_vault();
    let (_, text) = issue(&vault, "o");
    let verify = || {
        assert!(
            vault
                .verify(&ctx(), crate::keys::VerifyRequest::new(&text))
                .unwrap()
                .valid
        );
    };
    verify();
    let size = vault.audit_size();
    vault
        .danger()
        .inject_storage_fault(Some(crate::storage::Fault::Write));
    assert!(
        vault.audit_roll_checkpoint().is_err(),
        "the tail could not be written"
    );
    vault.danger().inject_storage_fault(None);
    verify();
    verify();
    let tail = Tail::decode(&stored(&vault, Space::Local, META_TAIL)).unwrap();
    assert_eq!(tail.active, size, "the tail names the new file");
    assert_eq!(
        tail.size,
        size + 1,
        "written by the first verify in it; the next one is replayable again"
    );
    // A roll retried after the failure records the file it already started.
    vault
        .danger()
        .inject_storage_fault(Some(crate::storage::Fault::Write));
    assert!(vault.audit_roll_checkpoint().is_err());
    vault.danger().inject_storage_fault(None);
    let rolled = vault.audit_roll_checkpoint().unwrap();
    assert_eq!(
        Tail::decode(&stored(&vault, Space::Local, META_TAIL))
            .unwrap()
            .active,
        rolled.checkpoint.size
    );
}

/// Issue 18, item 2: a leaver who kept the old audit signing key must not be able to move an
/// auditor's pinned key to a key of their own, even though they can sign with the old key: the
/// transition must also be signed by the key the logged `audit.key_rotated` entry announced.
#[test]
fn a_transition_to_a_key_other_than_the_one_its_entry_carried_is_refused() {
    let (_tmp, vault) = new_vault();
    let pinned = verifier(&vault);
    let keys = vault.keys().unwrap();
    let old = generation_signer(keys.keyring.audit_generation(1).unwrap(), vault.origin()).unwrap();
    drop(keys);
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let attacker = NoteSigner::from_seed(pinned.name(), &[9; 32]).unwrap();
    let export = export_text(&vault).unwrap();
    let mut lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::Null))
        .collect();
    let body = |note: &str| note.split_once("\n\n").unwrap().0.to_owned() + "\n";
    // The export's checkpoint, re-signed by the attacker's key only.
    let head = body(lines[1]["checkpoint"].as_str().unwrap());
    lines[1]["checkpoint"] = attacker.sign(&head).unwrap().into();
    // The transition, signed by the old key (which the leaver has) and the attacker's.
    let transition = body(
        lines[2]["audit_key_rotation"]["checkpoint"]
            .as_str()
            .unwrap(),
    );
    let forged = attacker
        .add_signature(&old.sign(&transition).unwrap())
        .unwrap();
    lines[2]["audit_key_rotation"]["checkpoint"] = forged.into();
    let text: String = export
        .lines()
        .zip(&lines)
        .map(|(raw, v)| {
            if v.get("checkpoint").is_some() || v.get("audit_key_rotation").is_some() {
                v.to_string() + "\n"
            } else {
                raw.to_owned() + "\n"
            }
        })
        .collect();
    let why = crate::audit::export::verify_export(text.as_bytes(), &pinned, None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        why.contains(&format!(
            "the transition checkpoint of the audit key rotation at entry {} is not signed by the new key its entry carries",
            rotation.seq
        )),
        "{why}"
    );
    // The untouched export follows the rotation.
    crate::audit::export::verify_export(export.as_bytes(), &pinned, None, |_| {}).unwrap();
}

/// A crash between an `audit.key_rotated` entry and its transition checkpoint: the next unseal
/// owes the transition, so its first checkpoint is signed by the old key and the new one, and
/// recorded as the transition.
#[test]
fn a_transition_owed_at_a_crash_is_signed_by_both_keys_after_the_next_unseal() {
    let (_tmp, vault) = new_vault();
    let old = verifier(&vault);
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let new = verifier(&vault);
    vault.seal(&ctx()).unwrap();
    // As if the process had died before any checkpoint after the entry was signed.
    let mut rotations = crate::audit::rotation::read(&vault.inner.store).unwrap();
    rotations[0].checkpoint = None;
    let mut batch = Batch::default();
    batch.insert(
        Space::Local,
        crate::audit::rotation::META_ROTATIONS,
        &crate::audit::rotation::encode(&rotations),
    );
    vault.inner.store.apply(batch).unwrap();
    let dir = vault.dir().to_path_buf();
    drop(vault);
    let vault = reopen(&dir);
    let signed = vault.audit_checkpoint().unwrap();
    old.verify(&signed.note).unwrap();
    new.verify(&signed.note).unwrap();
    let rotations = crate::audit::rotation::read(&vault.inner.store).unwrap();
    assert_eq!(rotations[0].seq, rotation.seq);
    assert_eq!(rotations[0].checkpoint, Some(signed.checkpoint.size));
    // Then the new key only.
    issue(&vault, "after");
    let later = vault.audit_checkpoint().unwrap();
    assert!(old.verify(&later.note).is_err());
    crate::audit::export::verify_export(
        export_text(&vault).unwrap().as_bytes(),
        &old,
        None,
        |_| {},
    )
    .unwrap();
}

/// The audit log's bookkeeping as a format-5 store held it (in `Meta`) is moved to `Local`
/// by the next open, in one batch with the new format version, and the log reads on as if
/// nothing had moved: every name of the list, archive marks included.
#[test]
fn a_format_5_store_has_its_audit_bookkeeping_moved_to_the_local_space() {
    use crate::datadir::NODE_LOCAL_NAMES;

    let (_tmp, vault) = new_vault();
    for _ in 0..3 {
        issue(&vault, "alice");
    }
    vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let upto = vault.audit_checkpoint().unwrap().checkpoint.size;
    let mut archive = Vec::new();
    let digest = vault
        .write_audit_archive(&ctx(), upto, &mut archive, |_| {})
        .unwrap();
    vault.drop_archived(&ctx(), upto, &digest).unwrap();
    let before = export_text(&vault).unwrap();
    let dir = vault.dir().to_path_buf();
    drop(vault);
    // The closed vault's store, as a format-5 build would have left it. Every name the build
    // writes is one the move knows (`audit-archive-written` is only there between an
    // archive's write and its drop: put one back to move it too).
    let store = Store::open(&dir.join(STORE_DIR)).unwrap();
    let mut batch = Batch::default();
    batch.insert(Space::Local, b"audit-archive-written", b"any bytes");
    store.apply(batch).unwrap();
    let local: Vec<(Vec<u8>, Vec<u8>)> = store.scan(Space::Local).map(Result::unwrap).collect();
    let names: Vec<&[u8]> = local.iter().map(|(k, _)| k.as_slice()).collect();
    let mut expected = NODE_LOCAL_NAMES.to_vec();
    expected.sort();
    assert_eq!(
        names, expected,
        "every name of the move is written, none else"
    );
    let mut batch = Batch::default();
    for (name, value) in &local {
        batch.remove(Space::Local, name);
        batch.insert(Space::Meta, name, value);
    }
    batch.insert(Space::Meta, META_FORMAT, &5u16.to_be_bytes());
    store.apply(batch).unwrap();
    drop(store);

    // Opened (and not yet unsealed, which appends entries): moved as they were.
    let vault = Vault::open(&dir).unwrap();
    assert_eq!(
        stored(&vault, Space::Meta, META_FORMAT),
        FORMAT_VERSION.to_be_bytes()
    );
    for (name, value) in &local {
        assert_eq!(vault.inner.store.get(Space::Meta, name).unwrap(), None);
        assert_eq!(&stored(&vault, Space::Local, name), value);
    }
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    let after = export_text(&vault).unwrap();
    let keys = vault.audit_public_keys().unwrap();
    let verifier = crate::audit::note::NoteVerifier::parse(&keys[0]).unwrap();
    let report =
        crate::audit::export::verify_export(after.as_bytes(), &verifier, None, |_| {}).unwrap();
    assert_eq!(report.rotations.len(), 1);
    let entries: Vec<&str> = before
        .lines()
        .filter(|l| l.starts_with("{\"seq\""))
        .collect();
    assert!(entries.len() >= 2, "{before}");
    for line in entries {
        assert!(after.contains(line), "entry kept: {line}");
    }
}
