//! Records as they sit in the store: a flipped byte or a record moved to another id or tree is
//! refused, and no plaintext or key material is readable anywhere in the data directory.

use super::*;
use crate::vault::danger::RecordTree;

/// A vault holding the key record `id-1` (`the plaintext`), and that record's bytes as stored.
fn vault_with_one_record() -> (tempfile::TempDir, Vault, Vec<u8>) {
    let (tmp, vault) = new_vault();
    vault
        .danger()
        .put_record(&ctx(), RecordTree::Keys, b"id-1", b"the plaintext")
        .unwrap();
    let stored = stored(&vault, Space::Keys, b"id-1");
    (tmp, vault, stored)
}

#[test]
fn every_flipped_byte_of_a_record_is_refused() {
    let (_tmp, vault, stored) = vault_with_one_record();
    for i in 0..stored.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = stored.clone();
            bad[i] ^= bit;
            let mut batch = Batch::default();
            batch.insert(Space::Keys, b"id-1", &bad);
            vault.inner.store.apply(batch).unwrap();
            let got = vault.danger().get_record(RecordTree::Keys, b"id-1");
            assert!(
                matches!(got, Err(Error::Record(_))),
                "flip {bit:#x} at byte {i} gave {got:?}"
            );
        }
    }
}

#[test]
fn a_record_moved_to_another_id_or_tree_is_refused() {
    let (_tmp, vault, stored) = vault_with_one_record();
    let mut batch = Batch::default();
    batch.insert(Space::Keys, b"id-2", &stored);
    batch.insert(Space::Tokens, b"id-1", &stored);
    vault.inner.store.apply(batch).unwrap();
    assert!(matches!(
        vault.danger().get_record(RecordTree::Keys, b"id-2"),
        Err(Error::Record(_))
    ));
    assert!(matches!(
        vault.danger().get_record(RecordTree::Tokens, b"id-1"),
        Err(Error::Record(_))
    ));
    assert_eq!(
        vault
            .danger()
            .get_record(RecordTree::Keys, b"id-1")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"the plaintext"
    );
}

/// Scans every byte of every file in the data directory for the plaintexts written and for all
/// key material: none may appear.
#[test]
fn nothing_readable_sits_on_disk() {
    let (_tmp, vault) = new_vault();
    let markers: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("MARKER-PLAINTEXT-{i:04}-zz").into_bytes())
        .collect();
    for (i, m) in markers.iter().enumerate() {
        vault
            .danger()
            .put_record(&ctx(), RecordTree::Keys, format!("rec{i}").as_bytes(), m)
            .unwrap();
    }
    vault.rotate(&ctx()).unwrap();
    vault
        .danger()
        .put_record(&ctx(), RecordTree::Tokens, b"tok", &markers[0])
        .unwrap();
    let keys = vault.keys().unwrap();
    let mut secrets: Vec<Vec<u8>> = vec![keys.root.expose().to_vec()];
    for number in keys.keyring.term_numbers() {
        let term = keys.keyring.term(number).unwrap();
        for k in [
            &term.secret,
            &term.record,
            &term.key_lookup,
            &term.token_lookup,
        ] {
            secrets.push(k.expose().to_vec());
        }
    }
    for k in [
        &keys.keyring.base,
        &keys.keyring.audit_signing_seed,
        &keys.keyring.audit_digest,
        &keys.keyring.index,
    ] {
        secrets.push(k.expose().to_vec());
    }
    let dir = vault.dir().to_path_buf();
    drop(keys);
    drop(vault);

    let mut files = Vec::new();
    collect_files(&dir, &mut files);
    assert!(!files.is_empty());
    // 16 bytes of a needle are enough to identify it. One pass per file, looking up each
    // window's first byte before comparing (the reserve alone is megabytes of zeros).
    let probes: Vec<&[u8]> = markers
        .iter()
        .chain(secrets.iter())
        .map(|n| &n[..16])
        .collect();
    let mut starts = [false; 256];
    for probe in &probes {
        starts[usize::from(probe[0])] = true;
    }
    let mut total = 0;
    for file in files {
        let bytes = fs::read(&file).unwrap();
        total += bytes.len();
        let found = bytes
            .windows(16)
            .any(|w| starts[usize::from(w[0])] && probes.contains(&w));
        assert!(!found, "{} holds a plaintext or key", file.display());
    }
    assert!(total > 0);
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}
