//! Format golden tests: a vault made by each format version (committed under
//! `testdata/golden-v1/` to `testdata/golden-v4/`) must keep opening and unsealing in every
//! later version, and its audit key must rotate with the key printed at its init still
//! verifying its exports. The format-4 fixture's audit key was rotated once when it was made.
//!
//! The fixtures were made by `make_golden_fixture` below (run with `--ignored` and
//! `KEYVAULT_WRITE_GOLDEN=1`, which writes the fixture of the current format version if it is
//! missing); never regenerate one for a format change: add a new fixture beside it and keep the
//! old ones passing.

use std::path::{Path, PathBuf};

use vault_core::apikey::Prefix;
use vault_core::kdf::Passphrase;
use vault_core::{RecordTree, Vault};

use crate::common::{ctx, passphrase_method};

/// The passphrase of every fixture (the name says where it was first used).
const GOLDEN_PASSPHRASE: &str = "golden fixture passphrase v1";

fn fixture(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/golden-v{version}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn version_1_vault_opens_and_unseals() {
    opens_and_unseals(1);
}

#[test]
fn version_2_vault_opens_and_unseals() {
    opens_and_unseals(2);
}

#[test]
fn version_3_vault_opens_and_unseals() {
    opens_and_unseals(3);
}

#[test]
fn version_4_vault_opens_and_unseals() {
    opens_and_unseals(4);
}

fn opens_and_unseals(version: u16) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("golden");
    copy_dir(&fixture(version), &dir);
    let vault = Vault::open(&dir).unwrap();
    assert!(vault.is_sealed());
    assert_eq!(vault.prefix().as_str(), "gold");
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(GOLDEN_PASSPHRASE))
        .unwrap();
    assert_eq!(
        vault
            .danger()
            .get_record(RecordTree::Keys, b"record-term-1")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"written under term 1"
    );
    assert_eq!(
        vault
            .danger()
            .get_record(RecordTree::Tokens, b"record-term-2")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"written under term 2"
    );
    assert_eq!(
        vault
            .danger()
            .record_term(RecordTree::Tokens, b"record-term-2")
            .unwrap(),
        Some(2)
    );
    // Its audit log (written by that format) still verifies, with the key printed at its init.
    let keys = vault.audit_public_keys().unwrap();
    assert_eq!(keys.len(), if version >= 4 { 2 } else { 1 });
    let verifier = vault_core::audit::note::NoteVerifier::parse(&keys[0]).unwrap();
    let export = |vault: &Vault| {
        let mut export = Vec::new();
        vault
            .export_audit(
                &ctx(),
                &Default::default(),
                vault_core::audit::export::ExportFormat::Jsonl,
                &mut export,
            )
            .unwrap();
        export
    };
    let report = vault_core::audit::export::verify_export(
        export(&vault).as_slice(),
        &verifier,
        None,
        |_| {},
    )
    .unwrap();
    assert!(report.entries >= 5, "{report}");
    assert_eq!(report.rotations.len(), keys.len() - 1);
    // Its audit key rotates (again), and the key printed at its init follows.
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    assert_eq!(rotation.generation as usize, keys.len() + 1);
    let report = vault_core::audit::export::verify_export(
        export(&vault).as_slice(),
        &verifier,
        None,
        |_| {},
    )
    .unwrap();
    assert_eq!(report.rotations.len(), keys.len());
    // And it keeps working: a new record goes under the newest term.
    vault
        .danger()
        .put_record(&ctx(), RecordTree::Keys, b"later", b"x")
        .unwrap();
    assert_eq!(
        vault
            .danger()
            .record_term(RecordTree::Keys, b"later")
            .unwrap(),
        Some(2)
    );
}

#[test]
#[ignore = "writes the committed fixture; run once per new format version"]
fn make_golden_fixture() {
    if std::env::var_os("KEYVAULT_WRITE_GOLDEN").is_none() {
        return;
    }
    let dir = fixture(vault_core::FORMAT_VERSION);
    assert!(!dir.exists(), "the fixture exists: never overwrite it");
    let prefix = Prefix::new("gold").unwrap();
    let (vault, _) = Vault::init(&dir, &passphrase_method(GOLDEN_PASSPHRASE), &prefix).unwrap();
    vault
        .danger()
        .put_record(
            &ctx(),
            RecordTree::Keys,
            b"record-term-1",
            b"written under term 1",
        )
        .unwrap();
    vault.rotate(&ctx()).unwrap();
    vault
        .danger()
        .put_record(
            &ctx(),
            RecordTree::Tokens,
            b"record-term-2",
            b"written under term 2",
        )
        .unwrap();
    // A replayable entry (from format 3 on, its record is marked so).
    let refused = vault
        .verify(&ctx(), vault_core::keys::VerifyRequest::new("not a key"))
        .unwrap();
    assert!(!refused.valid);
    // From format 4 on: a rotated audit key (two generations in the keyring).
    vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    drop(vault);
    std::fs::remove_file(dir.join("lock")).unwrap();
    // The disk reserve is megabytes of nothing; a vault makes it again when it opens.
    let _ = std::fs::remove_file(dir.join("reserve"));
}
