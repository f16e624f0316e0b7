//! Audit archive: entries up to a signed checkpoint move to a file that verifies on its own,
//! the live log keeps its tree, and nothing is lost or duplicated under load.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::audit::Entry;
use vault_core::audit::archive::ArchiveDigest;
use vault_core::audit::export::{VerifyReport, verify_export};
use vault_core::audit::log::DropReport;
use vault_core::audit::merkle;
use vault_core::audit::note::NoteVerifier;
use vault_core::keys::{NewKey, VerifyCode, VerifyRequest};
use vault_core::{Error, Vault};

use crate::common::*;

fn vault_with_entries(n: usize) -> (tempfile::TempDir, Vault, NoteVerifier, String) {
    let (tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    let verifier = NoteVerifier::parse(&issued.audit_public_key).unwrap();
    let key = vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    let text = key.key.expose_secret_text().expose_secret().to_owned();
    for _ in 0..n {
        let v = vault.verify(&ctx(), VerifyRequest::new(&text)).unwrap();
        assert_eq!(v.code, VerifyCode::Valid);
    }
    (tmp, vault, verifier, text)
}

fn archive(vault: &Vault, upto: u64) -> String {
    let mut out = Vec::new();
    let sha256 = vault
        .write_audit_archive(&ctx(), upto, &mut out, |_| {})
        .unwrap();
    assert_eq!(sha256, stored_digest(out.as_slice()));
    String::from_utf8(out).unwrap()
}

/// The SHA-256 of an archive as its caller stored it.
fn stored_digest(file: &[u8]) -> ArchiveDigest {
    ArchiveDigest::of_reader(file).unwrap()
}

/// Drops the entries before `upto`, sending the digest of `file`, the archive stored.
fn drop_kept(vault: &Vault, upto: u64, file: &str) -> DropReport {
    vault
        .drop_archived(&ctx(), upto, &stored_digest(file.as_bytes()))
        .unwrap()
}

fn check(text: &str, verifier: &NoteVerifier, earlier: Option<&str>) -> VerifyReport {
    verify_export(Cursor::new(text.as_bytes()), verifier, earlier, |_| {}).unwrap()
}

fn seqs(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| Entry::parse(l.as_bytes()).unwrap().seq)
        .collect()
}

#[test]
fn archive_verifies_alone_and_the_live_log_keeps_its_tree() {
    let (_tmp, vault, verifier, key) = vault_with_entries(20);
    let before = vault.audit_checkpoint().unwrap();
    let upto = before.checkpoint.size;
    let leaf_before = merkle::leaf_hash(&vault.audit_entry(3).unwrap().unwrap());

    let file = archive(&vault, upto);
    let report = check(&file, &verifier, None);
    assert_eq!(report.entries, upto);
    assert_eq!(report.checkpoint.size, upto);
    assert_eq!(seqs(&file), (0..upto).collect::<Vec<_>>());
    // Nothing is dropped until asked.
    assert_eq!(vault.audit_first_live(), 0);
    let dropped = drop_kept(&vault, upto, &file);
    assert_eq!(dropped.entries, upto);
    assert_eq!(vault.audit_first_live(), upto);

    // Later work goes on; the live log verifies on its own, from the archive's end.
    for _ in 0..5 {
        vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    }
    let live = export(&vault);
    let report = check(&live, &verifier, None);
    assert_eq!(report.first_seq, upto);
    assert_eq!(seqs(&live).first(), Some(&upto));
    let after = vault.audit_checkpoint().unwrap();
    // The live export extends a checkpoint taken at the archive's end.
    assert_eq!(
        check(&live, &verifier, Some(&before.note)).extends,
        Some(upto)
    );

    // A consistency proof from a checkpoint before the archive to one after it verifies.
    let early = 7;
    let early_root = merkle::root_at(early, |level, index| -> Result<_, ()> {
        // Recompute the early root from the archive's entries, as an auditor holding it would.
        let leaves: Vec<_> = file
            .lines()
            .filter(|l| l.starts_with("{\"seq\":"))
            .map(|l| merkle::leaf_hash(l.as_bytes()))
            .collect();
        let span = 1u64 << level;
        let mut hashes: Vec<_> =
            leaves[(index * span) as usize..((index + 1) * span) as usize].to_vec();
        while hashes.len() > 1 {
            hashes = hashes
                .chunks(2)
                .map(|p| merkle::node_hash(&p[0], &p[1]))
                .collect();
        }
        Ok(hashes[0])
    })
    .unwrap();
    let proof = vault
        .audit_consistency_proof(early, after.checkpoint.size)
        .unwrap();
    merkle::verify_consistency(
        early,
        after.checkpoint.size,
        &early_root,
        &after.checkpoint.root,
        &proof,
    )
    .unwrap();
    // An inclusion proof of an archived entry is refused, pointing to the archive; the archived
    // entry's leaf is still the one the archive holds.
    match vault.audit_inclusion_proof(3, after.checkpoint.size) {
        Err(e @ Error::Archived { seq: 3, first }) => {
            assert_eq!(first, upto);
            assert!(e.to_string().contains("archive"), "{e}");
        }
        other => panic!("expected Archived, got {other:?}"),
    }
    assert!(matches!(vault.audit_entry(3), Err(Error::Archived { .. })));
    assert!(file.contains(&format!(
        "{{\"leaf_hash\":\"{}\"}}",
        base64_of(&leaf_before)
    )));
    // Proofs of live entries still verify.
    let seq = upto + 2;
    let p = vault
        .audit_inclusion_proof(seq, after.checkpoint.size)
        .unwrap();
    let leaf = merkle::leaf_hash(&vault.audit_entry(seq).unwrap().unwrap());
    merkle::verify_inclusion(
        &leaf,
        seq,
        after.checkpoint.size,
        &p,
        &after.checkpoint.root,
    )
    .unwrap();
}

fn base64_of(hash: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hash)
}

#[test]
fn a_second_archive_verifies_alone_and_survives_a_reopen() {
    let (_tmp, vault, verifier, key) = vault_with_entries(10);
    let first = vault.audit_checkpoint().unwrap().checkpoint.size;
    let file = archive(&vault, first);
    drop_kept(&vault, first, &file);
    for _ in 0..9 {
        vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    }
    let second = vault.audit_checkpoint().unwrap();
    let file = archive(&vault, second.checkpoint.size);
    let report = check(&file, &verifier, None);
    assert_eq!(report.first_seq, first);
    assert_eq!(
        seqs(&file),
        (first..second.checkpoint.size).collect::<Vec<_>>()
    );
    // Complete from where the first archive ended, and only from there.
    report.require_complete(first).unwrap();
    assert!(report.require_complete(0).is_err());
    drop_kept(&vault, second.checkpoint.size, &file);

    // Reopen: the frontier comes back from the stored subtree hashes, even though every entry
    // up to the checkpoint is gone; the log goes on from there.
    let vault = reopen(vault);
    unseal_with_passphrase(&vault);
    assert_eq!(vault.audit_first_live(), second.checkpoint.size);
    vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    let live = export(&vault);
    let report = check(&live, &verifier, Some(&second.note));
    assert_eq!(report.extends, Some(second.checkpoint.size));
}

#[test]
fn entries_are_dropped_only_after_their_archive_was_written() {
    let (_tmp, vault, _verifier, _key) = vault_with_entries(5);
    let size = vault.audit_checkpoint().unwrap().checkpoint.size;
    let any = ArchiveDigest::from_bytes([0; 32]);
    assert!(matches!(
        vault.drop_archived(&ctx(), size, &any),
        Err(Error::Conflict(_))
    ));
    // Only up to a checkpoint the vault signed.
    let mut out = Vec::new();
    let e = vault
        .write_audit_archive(&ctx(), size - 1, &mut out, |_| {})
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(e.to_string().contains("checkpoint"), "{e}");
    // An archive up to one size does not allow dropping past it.
    let file = archive(&vault, size);
    vault.verify(&ctx(), VerifyRequest::new("pvk_x")).unwrap();
    let later = vault.audit_checkpoint().unwrap().checkpoint.size;
    let kept = stored_digest(file.as_bytes());
    assert!(matches!(
        vault.drop_archived(&ctx(), later, &kept),
        Err(Error::Conflict(_))
    ));
    assert_eq!(drop_kept(&vault, size, &file).entries, size);
    // Archiving what is already archived says so.
    let mut out = Vec::new();
    assert!(matches!(
        vault.write_audit_archive(&ctx(), size, &mut out, |_| {}),
        Err(Error::Conflict(_))
    ));
}

/// Issue 18, item 6: a drop used to need only `upto`, so a caller whose copy of the archive
/// was cut short or damaged still had the entries dropped. Now the caller sends the SHA-256
/// of what it stored, and any other digest drops nothing.
#[test]
fn only_the_digest_of_the_archive_written_drops_its_entries() {
    let (_tmp, vault, verifier, _key) = vault_with_entries(6);
    let size = vault.audit_checkpoint().unwrap().checkpoint.size;
    let file = archive(&vault, size);
    // A copy that lost its last line, one with a byte changed, and a digest of nothing.
    let cut = &file[..file.trim_end().rfind('\n').unwrap() + 1];
    let changed = file.replacen("\"seq\":1,", "\"seq\":9,", 1);
    assert_ne!(changed, file);
    for wrong in [cut, changed.as_str(), ""] {
        let e = vault
            .drop_archived(&ctx(), size, &stored_digest(wrong.as_bytes()))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Conflict(m) if m.contains("sha256") && m.contains("nothing was dropped")),
            "{e}"
        );
        assert_eq!(vault.audit_first_live(), 0);
        check(&export(&vault), &verifier, None);
        assert_eq!(seqs(&export(&vault)).first(), Some(&0));
    }
    // The digest survives a reopen; the right one drops, and again (a crash part way) is fine.
    let vault = reopen(vault);
    unseal_with_passphrase(&vault);
    assert_eq!(drop_kept(&vault, size, &file).entries, size);
    assert_eq!(vault.audit_first_live(), size);
    assert_eq!(drop_kept(&vault, size, &file).entries, 0);
    // A new archive replaces the digest remembered.
    vault.verify(&ctx(), VerifyRequest::new("pvk_z")).unwrap();
    let next = vault.audit_checkpoint().unwrap().checkpoint.size;
    let second = archive(&vault, next);
    assert!(matches!(
        vault.drop_archived(&ctx(), next, &stored_digest(file.as_bytes())),
        Err(Error::Conflict(_))
    ));
    assert_eq!(drop_kept(&vault, next, &second).entries, next - size);
}

/// Archive while eight threads verify: no verify fails, and the archive plus the live log hold
/// every entry exactly once, in order, and both verify.
#[test]
fn archive_under_concurrent_verifies_loses_and_duplicates_nothing() {
    let (_tmp, vault, verifier, key) = vault_with_entries(200);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (vault, key, stop) = (vault.clone(), key.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let v = vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
                    assert_eq!(v.code, VerifyCode::Valid);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let cp = vault.audit_checkpoint().unwrap();
    let file = archive(&vault, cp.checkpoint.size);
    drop_kept(&vault, cp.checkpoint.size, &file);
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let verified: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(verified > 0);

    let live = export(&vault);
    check(&file, &verifier, None);
    let report = check(&live, &verifier, Some(&cp.note));
    assert_eq!(report.extends, Some(cp.checkpoint.size));
    let mut all = seqs(&file);
    all.extend(seqs(&live));
    let unique: BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an entry is duplicated");
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());
    // Every verify left its entry: 200 before, `verified` during, and the rest is the key's
    // creation, exports, archive and checkpoints' own entries.
    let verifies = all
        .iter()
        .zip(
            file.lines()
                .chain(live.lines())
                .filter(|l| l.starts_with("{\"seq\":")),
        )
        .filter(|(_, l)| l.contains("\"event\":\"key.verify\""))
        .count() as u64;
    assert_eq!(verifies, 200 + verified);
}

#[test]
fn a_tampered_archive_is_refused() {
    let (_tmp, vault, verifier, _key) = vault_with_entries(8);
    let cp = vault.audit_checkpoint().unwrap();
    // Archive from the second archive on carries a prefix: flip a byte of it.
    let first = archive(&vault, cp.checkpoint.size);
    drop_kept(&vault, cp.checkpoint.size, &first);
    vault.verify(&ctx(), VerifyRequest::new("pvk_y")).unwrap();
    let next = vault.audit_checkpoint().unwrap().checkpoint.size;
    let file = archive(&vault, next);
    check(&file, &verifier, None);
    let header_end = file.find('\n').unwrap();
    let prefix_at = file[..header_end].find("\"prefix\":[\"").unwrap() + 11;
    let mut bytes = file.clone().into_bytes();
    bytes[prefix_at] = if bytes[prefix_at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let err = verify_export(Cursor::new(tampered.as_bytes()), &verifier, None, |_| {}).unwrap_err();
    assert!(err.why.contains("signed root"), "{err}");
    // Starting the archive one entry late is caught too.
    let mut lines: Vec<&str> = file.lines().collect();
    lines.drain(2..4);
    let cut = lines.join("\n") + "\n";
    assert!(verify_export(Cursor::new(cut.as_bytes()), &verifier, None, |_| {}).is_err());
}

fn segment_files(vault: &Vault) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(vault.dir().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// `latest` starts a new segment file, so an archive up to it removes every older file and
/// gives their space back; entries read across file boundaries, before and after a reopen.
#[test]
fn archiving_up_to_a_new_file_frees_the_older_files() {
    let (_tmp, vault, verifier, key) = vault_with_entries(50);
    // Three files: [0, a), [a, b), [b, ...).
    let a = vault.audit_roll_checkpoint().unwrap().checkpoint.size;
    for _ in 0..40 {
        vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    }
    let b = vault.audit_roll_checkpoint().unwrap();
    for _ in 0..30 {
        vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    }
    assert_eq!(segment_files(&vault).len(), 3);
    // Reads cross the file boundaries, from any starting point.
    let live = export(&vault);
    check(&live, &verifier, None);
    for seq in [0, a - 1, a, a + 1, b.checkpoint.size, b.checkpoint.size + 3] {
        let bytes = vault.audit_entry(seq).unwrap().unwrap();
        assert_eq!(Entry::parse(&bytes).unwrap().seq, seq);
    }
    // Rolling twice at the same size makes no empty file.
    let c = vault.audit_roll_checkpoint().unwrap().checkpoint.size;
    assert_eq!(vault.audit_roll_checkpoint().unwrap().checkpoint.size, c);
    assert_eq!(segment_files(&vault).len(), 4);

    // The files wholly before b (they are full: nothing is appended to them any more).
    let old: Vec<_> = segment_files(&vault)
        .into_iter()
        .filter(|f| {
            let name = f.file_stem().unwrap().to_str().unwrap();
            name.parse::<u64>().unwrap() < b.checkpoint.size
        })
        .collect();
    assert_eq!(old.len(), 2);
    let old_bytes: u64 = old
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let file = archive(&vault, b.checkpoint.size);
    assert_eq!(check(&file, &verifier, None).entries, b.checkpoint.size);
    let dropped = drop_kept(&vault, b.checkpoint.size, &file);
    assert_eq!(dropped.entries, b.checkpoint.size);
    let left = segment_files(&vault);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(old.iter().all(|f| !f.exists()));
    assert_eq!(dropped.bytes_freed, old_bytes);
    assert!(dropped.bytes_freed > 0);

    let live = export(&vault);
    assert_eq!(
        check(&live, &verifier, Some(&b.note)).extends,
        Some(b.checkpoint.size)
    );
    let vault = reopen(vault);
    unseal_with_passphrase(&vault);
    vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    let live = export(&vault);
    assert_eq!(
        check(&live, &verifier, Some(&b.note)).extends,
        Some(b.checkpoint.size)
    );
    assert!(matches!(
        vault.audit_entry(b.checkpoint.size - 1),
        Err(Error::Archived { .. })
    ));
}

/// Bytes past the committed tail (a group whose store commit never happened) are cut off at
/// open; a segment shorter than what was committed is refused by name.
#[test]
fn the_segment_tail_past_the_commit_is_cut_and_a_short_one_refused() {
    let (_tmp, vault, verifier, key) = vault_with_entries(10);
    let size = vault.audit_size();
    let dir = vault.dir().to_path_buf();
    let active = segment_files(&vault).pop().unwrap();
    drop(vault);
    let committed = std::fs::metadata(&active).unwrap().len();
    // An uncommitted group: whole records, then a torn one.
    let mut extra = Vec::new();
    vault_core::audit::segment::frame(&mut extra, b"{\"seq\":999}", false);
    extra.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(&extra);
    std::fs::write(&active, &bytes).unwrap();

    let vault = Vault::open(&dir).unwrap();
    assert_eq!(vault.audit_size(), size);
    assert_eq!(std::fs::metadata(&active).unwrap().len(), committed);
    unseal_with_passphrase(&vault);
    vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap();
    check(&export(&vault), &verifier, None);
    drop(vault);

    // Cut into committed entries: refused, naming the file.
    let len = std::fs::metadata(&active).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    match Vault::open(&dir) {
        Err(e @ Error::Corrupt(_)) => {
            assert!(e.to_string().contains("entries are lost"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
