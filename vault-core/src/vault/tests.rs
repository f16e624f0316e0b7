//! Tests that need the vault's insides: raw store bytes and the key material.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::kdf::KdfParams;
use crate::record;
use crate::vault::danger::RecordTree;

fn fast_passphrase(p: &str) -> UnsealMethod {
    UnsealMethod::Passphrase {
        passphrase: Passphrase::new(p),
        params: KdfParams::INSECURE_FAST,
    }
}

fn new_vault() -> (tempfile::TempDir, Vault) {
    let tmp = tempfile::tempdir().unwrap();
    let (vault, _) = Vault::init(
        &tmp.path().join("v"),
        &fast_passphrase("a long passphrase"),
        &Prefix::default(),
    )
    .unwrap();
    (tmp, vault)
}

/// Creates a key of `owner`; returns it and its text.
fn issue(vault: &Vault, owner: &str) -> (crate::keys::IssuedKey, String) {
    let issued = vault
        .create_key(&ctx(), crate::keys::NewKey::new(owner))
        .unwrap();
    let text = key_text(&issued);
    (issued, text)
}

/// The value of `space/id`, which must be there.
fn stored(vault: &Vault, space: Space, id: &[u8]) -> Vec<u8> {
    vault.inner.store.get(space, id).unwrap().unwrap()
}

fn key_text(issued: &crate::keys::IssuedKey) -> String {
    secrecy::ExposeSecret::expose_secret(&issued.key.expose_secret_text()).to_owned()
}

#[test]
fn every_flipped_byte_of_a_record_is_refused() {
    let (_tmp, vault) = new_vault();
    vault
        .danger()
        .put_record(&ctx(), RecordTree::Keys, b"id-1", b"the plaintext")
        .unwrap();
    let stored = stored(&vault, Space::Keys, b"id-1");
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
    let (_tmp, vault) = new_vault();
    vault
        .danger()
        .put_record(&ctx(), RecordTree::Keys, b"id-1", b"the plaintext")
        .unwrap();
    let stored = stored(&vault, Space::Keys, b"id-1");
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

#[test]
fn every_flipped_byte_of_the_wrapped_root_key_or_seal_config_is_refused() {
    let (_tmp, vault) = new_vault();
    let good = stored(&vault, Space::Meta, META_SEAL);
    let passphrase = Passphrase::new("a long passphrase");
    let config = read_config(&vault.inner.store).unwrap();
    assert!(
        config
            .passphrase_key(&passphrase)
            .and_then(|k| config.unwrap_root(&k))
            .is_ok()
    );
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let mut batch = Batch::default();
        batch.insert(Space::Meta, META_SEAL, &bad);
        vault.inner.store.apply(batch).unwrap();
        // The config fails to decode or check, or it fails to unwrap the root key.
        match read_config(&vault.inner.store) {
            Err(Error::Corrupt(_) | Error::Kdf(_)) => {}
            Err(e) => panic!("flip at byte {i}: unexpected {e}"),
            Ok(config) => {
                let root = config
                    .passphrase_key(&passphrase)
                    .and_then(|k| config.unwrap_root(&k));
                assert!(
                    root.is_err(),
                    "flip at byte {i} still unwrapped the root key"
                );
            }
        }
    }
}

#[test]
fn a_tampered_keyring_is_refused() {
    let (_tmp, vault) = new_vault();
    let good = stored(&vault, Space::Meta, META_KEYRING);
    vault.seal(&ctx()).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        let mut batch = Batch::default();
        batch.insert(Space::Meta, META_KEYRING, &bad);
        vault.inner.store.apply(batch).unwrap();
        let r = vault.unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"));
        assert!(
            matches!(r, Err(Error::Corrupt(_))),
            "flip at byte {i}: {r:?}"
        );
        assert!(vault.is_sealed());
    }
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let (_tmp, vault) = new_vault();
    let mut batch = Batch::default();
    batch.insert(
        Space::Meta,
        META_FORMAT,
        &(FORMAT_VERSION + 1).to_be_bytes(),
    );
    vault.inner.store.apply(batch).unwrap();
    let dir = vault.dir().to_path_buf();
    drop(vault);
    match Vault::open(&dir) {
        Err(e @ Error::UnsupportedFormat { found, supported })
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION =>
        {
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("{other:?}"),
    }
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

fn ctx() -> Context {
    Context::embedded()
}

fn export_text(vault: &Vault) -> Result<String> {
    let mut out = Vec::new();
    vault.export_audit(
        &ctx(),
        &Default::default(),
        crate::audit::export::ExportFormat::Jsonl,
        &mut out,
    )?;
    Ok(String::from_utf8(out).unwrap())
}

fn verifier(vault: &Vault) -> crate::audit::note::NoteVerifier {
    crate::audit::note::NoteVerifier::parse(&vault.audit_public_key().unwrap()).unwrap()
}

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
    let old_tail = store.get(Space::Meta, META_TAIL).unwrap().unwrap();
    let old_tree = store.get(Space::Meta, META_TREE).unwrap().unwrap();
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
        batch.insert(Space::Meta, META_TAIL, &old_tail);
        batch.insert(Space::Meta, META_TREE, &old_tree);
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
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
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
    let tail = Tail::decode(&stored(&vault, Space::Meta, META_TAIL)).unwrap();
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
        Tail::decode(&stored(&vault, Space::Meta, META_TAIL))
            .unwrap()
            .active,
        rolled.checkpoint.size
    );
}

/// `verify_async` never waits on a key's lock or commits a credit spend on the caller's async
/// worker: both answer `MustBlock` before anything changed; other verifies complete.
#[test]
fn an_async_verify_that_would_block_says_so_and_changes_nothing() {
    use crate::keys::{AsyncVerify, NewKey, VerifyRequest};
    use std::future::Future;
    let (_tmp, vault) = new_vault();
    let plain = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    let paid = vault
        .create_key(
            &ctx(),
            NewKey {
                credits: Some(5),
                ..NewKey::new("o")
            },
        )
        .unwrap();
    let (plain_text, paid_text) = (key_text(&plain), key_text(&paid));
    let first_poll = |req: VerifyRequest<'_>| {
        let ctx = ctx();
        let mut future = std::pin::pin!(vault.verify_async(&ctx, req, false));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(answer) => Some(answer.unwrap()),
            std::task::Poll::Pending => None,
        }
    };
    let size = vault.audit_size();
    // A key whose lock a change holds.
    let slot = vault.inner.key_book.cache.slot(&plain.key.id());
    let held = crate::keys::lock(&slot);
    assert_eq!(
        first_poll(VerifyRequest::new(&plain_text)),
        Some(AsyncVerify::MustBlock)
    );
    drop(held);
    // A credit spend.
    let spend = VerifyRequest {
        cost: 1,
        ..VerifyRequest::new(&paid_text)
    };
    assert_eq!(first_poll(spend), Some(AsyncVerify::MustBlock));
    assert_eq!(vault.show_key(&paid.key.id()).unwrap().credits, Some(5));
    assert_eq!(vault.audit_size(), size, "nothing was logged");
    // Anything else completes once its entry is durable.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ctx = ctx();
    let answer = runtime
        .block_on(vault.verify_async(&ctx, VerifyRequest::new(&plain_text), false))
        .unwrap();
    assert!(matches!(answer, AsyncVerify::Verdict(v) if v.valid));
    assert_eq!(vault.audit_size(), size + 1);
}

#[test]
fn a_required_scope_longer_than_a_key_may_hold_is_refused_before_anything_is_logged() {
    use crate::keys::{MAX_SCOPE, NewKey, VerifyCode, VerifyRequest};
    let (_tmp, vault) = new_vault();
    let longest = "s".repeat(MAX_SCOPE);
    let issued = vault
        .create_key(
            &ctx(),
            NewKey {
                scopes: vec![longest.clone()],
                ..NewKey::new("o")
            },
        )
        .unwrap();
    let text = key_text(&issued);
    let too_long = "s".repeat(MAX_SCOPE + 1);
    let size = vault.audit_size();
    for presented in [text.as_str(), "garbage"] {
        let req = VerifyRequest {
            scope: Some(&too_long),
            ..VerifyRequest::new(presented)
        };
        let e = vault.verify(&ctx(), req).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let e = vault.verify_throttled(&ctx(), req).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = runtime
            .block_on(vault.verify_async(&ctx(), req, false))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    }
    assert_eq!(vault.audit_size(), size, "nothing was logged");
    // The longest scope a key may hold is still checked.
    let req = VerifyRequest {
        scope: Some(&longest),
        ..VerifyRequest::new(&text)
    };
    assert_eq!(vault.verify(&ctx(), req).unwrap().code, VerifyCode::Valid);
    assert_eq!(vault.audit_size(), size + 1);
}

/// Child half of `acknowledged_writes_survive_kill_9`: writes until killed, printing each
/// acknowledged key id.
#[test]
#[ignore = "run by acknowledged_writes_survive_kill_9 in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os("KEYVAULT_CRASH_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let vault = Vault::open(&dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
    let verify_only = std::env::var_os("KEYVAULT_CRASH_VERIFY_ONLY").is_some();
    let mut out = std::io::stdout();
    let mut issued = None;
    loop {
        // With `verify_only`, one create and then replayable groups only.
        if !verify_only {
            issued = None;
        }
        let issued = issued.get_or_insert_with(|| {
            vault
                .create_key(&ctx(), crate::keys::NewKey::new("crash"))
                .unwrap()
        });
        let text = key_text(issued);
        let v = vault
            .verify(&ctx(), crate::keys::VerifyRequest::new(&text))
            .unwrap();
        assert!(v.valid);
        use std::io::Write;
        writeln!(out, "acked {}", issued.key.id()).unwrap();
        out.flush().unwrap();
    }
}

/// Runs `crash_child` on the vault in `dir` (verifies only, if `verify_only`), its output piped.
fn spawn_crash_child(dir: &Path, verify_only: bool) -> std::process::Child {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "vault::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KEYVAULT_CRASH_DIR", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if verify_only {
        command.env("KEYVAULT_CRASH_VERIFY_ONLY", "1");
    }
    command.spawn().unwrap()
}

/// Kills `child` with SIGKILL, then opens and unseals the vault in `dir`.
fn kill_and_reopen(mut child: std::process::Child, dir: &Path) -> Vault {
    child.kill().unwrap();
    child.wait().unwrap();
    let vault = Vault::open(dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
    vault
}

/// Acknowledged writes and their entries survive `kill -9`, and the log still verifies.
#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead;
    let (tmp, vault) = new_vault();
    let dir = vault.dir().to_path_buf();
    let public_key = verifier(&vault);
    drop(vault);
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut child = spawn_crash_child(&dir, false);
        let stdout = child.stdout.take().unwrap();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("acked ") {
                acked.push(crate::apikey::KeyId::parse_hex(id).unwrap());
                if acked.len() >= 40 * (round + 1) {
                    break;
                }
            }
        }
        assert_eq!(
            acked.len(),
            40 * (round + 1),
            "the child stopped before it was killed"
        );
        let vault = kill_and_reopen(child, &dir);
        for id in &acked {
            vault.show_key(id).unwrap();
        }
        let text = export_text(&vault).unwrap();
        let report =
            crate::audit::export::verify_export(text.as_bytes(), &public_key, None, |_| {})
                .unwrap();
        // Every acknowledged create and verify has its entry.
        assert!(report.entries >= 2 * acked.len() as u64);
    }
    drop(tmp);
}

/// Acknowledged verifies (groups the store learns of only later) survive `kill -9` at any
/// point: each is in the log after the restart, and the log verifies.
#[test]
fn acknowledged_verifies_survive_kill_9() {
    use std::io::BufRead;
    let (tmp, vault) = new_vault();
    let dir = vault.dir().to_path_buf();
    let public_key = verifier(&vault);
    drop(vault);
    for round in 0..3 {
        let mut child = spawn_crash_child(&dir, true);
        let stdout = child.stdout.take().unwrap();
        let mut acked = 0u64;
        let mut id = None;
        // A few hundred verifies: well inside the second before the store records the log.
        for line in std::io::BufReader::new(stdout).lines() {
            if let Some(key) = line.unwrap().strip_prefix("acked ") {
                id = Some(key.to_owned());
                acked += 1;
                if acked == 200 + 100 * round {
                    break;
                }
            }
        }
        assert_eq!(
            acked,
            200 + 100 * round,
            "the child stopped before it was killed"
        );
        let vault = kill_and_reopen(child, &dir);
        let text = export_text(&vault).unwrap();
        crate::audit::export::verify_export(text.as_bytes(), &public_key, None, |_| {}).unwrap();
        let id = id.unwrap();
        let logged = text
            .lines()
            .filter(|l| l.contains("\"key.verify\"") && l.contains(&id))
            .count() as u64;
        assert!(
            logged >= acked,
            "{logged} verifies logged, {acked} acknowledged"
        );
    }
    drop(tmp);
}

/// Child half of `rewrap_killed_at_a_random_point_finishes_when_run_again`: rewraps, printing
/// its progress after each batch, until killed.
#[test]
#[ignore = "run by rewrap_killed_at_a_random_point_finishes_when_run_again in a child process"]
fn rewrap_child() {
    let Some(dir) = std::env::var_os("KEYVAULT_REWRAP_DIR") else {
        return;
    };
    let vault = Vault::open(&PathBuf::from(dir)).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
    let mut out = std::io::stdout();
    vault
        .rewrap(&ctx(), |done, total| {
            use std::io::Write;
            writeln!(out, "progress {done} {total}").unwrap();
            out.flush().unwrap();
        })
        .unwrap();
    println!("finished");
}

/// Rewrap killed (SIGKILL) at a random batch, three times, then run to the end: every record
/// reads back at every step, no record is lost, every key still verifies, and at the end every
/// record is under the newest term.
#[test]
fn rewrap_killed_at_a_random_point_finishes_when_run_again() {
    use std::io::BufRead;
    let (tmp, vault) = new_vault();
    let dir = vault.dir().to_path_buf();
    // 1,200 keys (five rewrap batches), some with credits, under term 1; then a new term.
    let texts: Vec<(crate::apikey::KeyId, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let vault = &vault;
                s.spawn(move || {
                    (0..150)
                        .map(|i| {
                            let mut new = crate::keys::NewKey::new(format!("owner{w}"));
                            if i % 3 == 0 {
                                new.credits = Some(1000);
                            }
                            let issued = vault.create_key(&ctx(), new).unwrap();
                            let text = secrecy::ExposeSecret::expose_secret(
                                &issued.key.expose_secret_text(),
                            )
                            .to_owned();
                            (issued.key.id(), text)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let newest = vault.rotate(&ctx()).unwrap();
    drop(vault);
    let under_newest = |vault: &Vault| {
        texts
            .iter()
            .filter(|(id, _)| {
                vault.show_key(id).unwrap();
                vault
                    .danger()
                    .record_term(RecordTree::Keys, id.as_bytes())
                    .unwrap()
                    .unwrap()
                    == newest
            })
            .count()
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut last = 0;
    for round in 0..3u64 {
        // Kill after a random batch among the first four.
        let kill_after = 1 + (seed / 7u64.pow(round as u32)) % 4;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "vault::tests::rewrap_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KEYVAULT_REWRAP_DIR", &dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut batches = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            if line.unwrap().starts_with("progress ") {
                batches += 1;
                if batches == kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, wherever it is
        child.wait().unwrap();
        let vault = Vault::open(&dir).unwrap();
        vault
            .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
            .unwrap();
        // Every record reads back (show_key decrypts it), and the rewrap only moves forward.
        let now = under_newest(&vault);
        assert!(
            now >= last,
            "round {round}: {now} under the newest term, was {last}"
        );
        last = now;
    }
    let vault = Vault::open(&dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
    let report = vault.rewrap(&ctx(), |_, _| {}).unwrap();
    assert_eq!(report.term, newest);
    assert_eq!(under_newest(&vault), texts.len());
    for (id, text) in &texts {
        let v = vault
            .verify(&ctx(), crate::keys::VerifyRequest::new(text))
            .unwrap();
        assert!(v.valid, "{id}");
        for space in [Space::Credits, Space::Reveal] {
            if let Some(bytes) = vault.inner.store.get(space, id.as_bytes()).unwrap() {
                assert_eq!(record::term_of(&bytes).unwrap(), newest);
            }
        }
    }
    drop(tmp);
}

// ---- Usage figures on disk ------------------------------------------------------------------

const USAGE_SYNC: std::time::Duration = std::time::Duration::from_secs(20);

/// Opens the vault in `dir` unsealed, with its figures caught up with its log.
fn reopen_counted(dir: &Path) -> Vault {
    let vault = Vault::open(dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
    assert!(vault.usage_sync(USAGE_SYNC).unwrap());
    vault
}

/// `n` verifies of `text`, counted.
fn verify_n(vault: &Vault, text: &str, n: usize) {
    for _ in 0..n {
        let v = vault
            .verify(&ctx(), crate::keys::VerifyRequest::new(text))
            .unwrap();
        assert!(v.valid);
    }
    assert!(vault.usage_sync(USAGE_SYNC).unwrap());
}

/// Valid verifies counted in all (in the keys' daily buckets).
fn valid_counted(vault: &Vault) -> u64 {
    use crate::usage::{Granularity, Subject};
    vault
        .usage_snapshot()
        .unwrap()
        .buckets()
        .filter(|((g, s, _), _)| *g == Granularity::Day && matches!(s, Subject::Key(_)))
        .map(|(_, c)| c.codes.get("VALID"))
        .sum()
}

/// The live figures equal a fold of the log and count `valid` valid verifies in all.
fn assert_counted(vault: &Vault, valid: u64) {
    assert_eq!(
        vault.usage_snapshot().unwrap(),
        vault.usage_from_log().unwrap()
    );
    assert_eq!(valid_counted(vault), valid);
}

fn figures_path(vault_dir: &Path) -> PathBuf {
    vault_dir.join(crate::usage::FIGURES_DIR).join("figures")
}

/// A vault whose figures file holds two stores (a full one, then changes), with `5` valid
/// verifies counted; returns its directory.
fn vault_with_two_stores() -> (tempfile::TempDir, PathBuf, String) {
    let (tmp, vault) = new_vault();
    let (_, text) = issue(&vault, "alice");
    verify_n(&vault, &text, 3);
    let dir = vault.dir().to_path_buf();
    drop(vault);
    let one = fs::metadata(figures_path(&dir)).unwrap().len();
    let vault = reopen_counted(&dir);
    verify_n(&vault, &text, 2);
    drop(vault);
    assert!(fs::metadata(figures_path(&dir)).unwrap().len() > one);
    (tmp, dir, text)
}

/// The figures are derived data: a file that is not a figures file must not keep the vault
/// from opening. It is moved aside, the figures are folded again from the whole log, and the
/// next store writes the file afresh.
#[test]
fn unreadable_usage_figures_are_refolded_from_the_log() {
    let (_tmp, dir, _) = vault_with_two_stores();
    let path = figures_path(&dir);
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(b"garbage!");
    fs::write(&path, &bytes).unwrap();

    let vault = reopen_counted(&dir);
    assert_counted(&vault, 5);
    assert_eq!(
        fs::read(path.with_file_name("figures.unreadable")).unwrap(),
        bytes
    );
    drop(vault);
    assert_eq!(&fs::read(&path).unwrap()[..8], b"KVUSAGE1");
    let vault = reopen_counted(&dir);
    assert_counted(&vault, 5);
}

/// A store cut short (a crash mid-write) or damaged on disk: the figures as of the store
/// before it are kept, the entries after it are folded again, and nothing counts twice.
#[test]
fn a_damaged_or_cut_figures_file_keeps_its_whole_stores() {
    for damage in ["flip", "cut", "append"] {
        let (_tmp, dir, text) = vault_with_two_stores();
        let path = figures_path(&dir);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        match damage {
            "flip" => bytes[n - 3] ^= 0x40,
            "cut" => bytes.truncate(n - 3),
            _ => bytes.extend_from_slice(&[0, 0, 0, 9, 1, 2]),
        }
        fs::write(&path, &bytes).unwrap();
        let vault = reopen_counted(&dir);
        assert_counted(&vault, 5);
        verify_n(&vault, &text, 1);
        drop(vault);
        // Written afresh: read back whole, with nothing counted twice.
        let vault = reopen_counted(&dir);
        assert_counted(&vault, 6);
    }
}

/// Figures folded from another log (a file copied from another vault, or left from a history
/// a restore replaced) are refused, though they cover as many entries.
#[test]
fn figures_folded_from_another_log_are_refolded() {
    let (_tmp_a, dir_a, _) = vault_with_two_stores();
    let (_tmp_b, vault) = new_vault();
    let (_, text) = issue(&vault, "bob");
    verify_n(&vault, &text, 1);
    let dir_b = vault.dir().to_path_buf();
    drop(vault);
    let vault = reopen_counted(&dir_b);
    verify_n(&vault, &text, 1);
    drop(vault);
    fs::copy(figures_path(&dir_a), figures_path(&dir_b)).unwrap();
    let vault = reopen_counted(&dir_b);
    assert_counted(&vault, 2);
}

/// Figures an earlier build kept in the store's usage space (or a restored backup put there)
/// are loaded, moved into the figures file, and the space emptied.
#[test]
fn figures_in_the_old_store_space_move_into_the_file() {
    let (_tmp, dir, _) = vault_with_two_stores();
    let vault = reopen_counted(&dir);
    // As if 100 more verifies had been counted from entries since archived: only the stored
    // figures know of them.
    let mut agg = vault.usage_snapshot().unwrap();
    for figures in agg.keys.values_mut() {
        for counts in figures.series.day.values_mut() {
            counts.codes.add("VALID", 100);
        }
    }
    let mut batch = Batch::default();
    crate::usage::legacy::each(&agg, |id, value| {
        batch.insert(Space::Usage, id, value);
        Ok(())
    })
    .unwrap();
    vault.inner.store.apply(batch).unwrap();
    drop(vault);
    fs::remove_file(figures_path(&dir)).unwrap();

    let vault = reopen_counted(&dir);
    assert_eq!(valid_counted(&vault), 105);
    drop(vault);
    assert!(figures_path(&dir).is_file());
    let vault = reopen_counted(&dir);
    assert!(!crate::usage::legacy::present(&vault.inner.store).unwrap());
    assert_eq!(valid_counted(&vault), 105);
}

/// Reopens the vault of `new_vault` with a key cache of `keys` slots and `unknown` unknown ids.
fn reopen_with_cache(tmp: &tempfile::TempDir, vault: Vault, keys: usize, unknown: usize) -> Vault {
    drop(vault);
    let options = VaultOptions {
        keys_cached: keys,
        unknown_ids_cached: unknown,
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&tmp.path().join("v"), &options).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
    vault
}

fn code(vault: &Vault, text: &str) -> crate::keys::VerifyCode {
    vault
        .verify(&ctx(), crate::keys::VerifyRequest::new(text))
        .unwrap()
        .code
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
    let (tmp, vault) = new_vault();
    let vault = reopen_with_cache(&tmp, vault, 1_000, 64);
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
    let (tmp, vault) = new_vault();
    let vault = reopen_with_cache(&tmp, vault, 16, 16);
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

/// Issue 18, item 2: a leaver who kept the old audit signing key must not be able to move an
/// auditor's pinned key to a key of their own, even though they can sign with the old key: the
/// transition must also be signed by the key the logged `audit.key_rotated` entry announced.
#[test]
fn a_transition_to_a_key_other_than_the_one_its_entry_carried_is_refused() {
    let (_tmp, vault) = new_vault();
    let pinned = verifier(&vault);
    let keys = vault.keys().unwrap();
    let old =
        generation_signer(keys.keyring.audit_generation(1).unwrap(), &vault.vault_id()).unwrap();
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

/// A crash between an `audit.key_rotated` entry and its transition checkpoint: the next unseal
/// owes the transition, so its first checkpoint is signed by the old key and the new one, and
/// recorded as the transition.
#[test]
fn a_transition_owed_at_a_crash_is_signed_by_both_keys_after_the_next_unseal() {
    let (tmp, vault) = new_vault();
    let old = verifier(&vault);
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    let new = verifier(&vault);
    vault.seal(&ctx()).unwrap();
    // As if the process had died before any checkpoint after the entry was signed.
    let mut rotations = crate::audit::rotation::read(&vault.inner.store).unwrap();
    rotations[0].checkpoint = None;
    let mut batch = Batch::default();
    batch.insert(
        Space::Meta,
        crate::audit::rotation::META_ROTATIONS,
        &crate::audit::rotation::encode(&rotations),
    );
    vault.inner.store.apply(batch).unwrap();
    drop(vault);
    let vault = Vault::open(&tmp.path().join("v")).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("a long passphrase"))
        .unwrap();
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
