//! Online backup and restore: a consistent copy under load, restore into a fresh directory,
//! the audit log across the restore, refusal of damaged backup files.

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::audit::Entry;
use vault_core::audit::export::verify_export;
use vault_core::audit::note::NoteVerifier;
use vault_core::backup::{BackupReport, verify_backup};
use vault_core::kdf::Passphrase;
use vault_core::keys::{NewKey, VerifyCode, VerifyRequest};
use vault_core::usage::{Granularity, UsageQuery};
use vault_core::{Error, Vault};

use crate::common::*;

/// A writer that is slow, like a client on a far network: the backup's scan takes long enough
/// for the load to change the store under it.
struct Slow<W>(W, Duration);

impl<W: Write> Write for Slow<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.1);
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn text(k: &vault_core::keys::IssuedKey) -> String {
    k.key.expose_secret_text().expose_secret().to_owned()
}

fn backup_bytes(vault: &Vault) -> (Vec<u8>, BackupReport) {
    let mut out = Vec::new();
    let report = vault.backup(&ctx(), &mut out, |_| {}).unwrap();
    (out, report)
}

fn entries(vault: &Vault) -> Vec<(u64, Vec<u8>)> {
    (0..vault.audit_size())
        .map(|seq| (seq, vault.audit_entry(seq).unwrap().unwrap()))
        .collect()
}

fn unseal(vault: &Vault) {
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
}

/// Verifies `export` with `public_key`, and that it extends `earlier`.
fn check_export(export: &str, public_key: &str, earlier: &str) -> u64 {
    let verifier = NoteVerifier::parse(public_key).unwrap();
    let report = verify_export(
        Cursor::new(export.as_bytes()),
        &verifier,
        Some(earlier),
        |_| {},
    )
    .unwrap();
    assert!(report.extends.is_some());
    report.checkpoint.size
}

#[test]
fn backup_under_concurrent_verify_load_loses_no_verify_and_no_entry() {
    let (tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    const CREDITS: u64 = 1_000_000;
    let mut keys = Vec::new();
    for i in 0..8 {
        let mut new = NewKey::new(format!("owner-{i}"));
        if i % 2 == 0 {
            new.credits = Some(CREDITS);
        }
        keys.push(vault.create_key(&ctx(), new).unwrap());
    }
    // Enough history that the scan takes a while.
    for k in &keys {
        for _ in 0..50 {
            vault.verify(&ctx(), VerifyRequest::new(&text(k))).unwrap();
        }
    }
    let before = vault.audit_checkpoint().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let created = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for t in 0..4 {
        let vault = vault.clone();
        let stop = Arc::clone(&stop);
        let acked = Arc::clone(&acked);
        let created = Arc::clone(&created);
        let texts: Vec<String> = keys.iter().map(text).collect();
        workers.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if t == 0 && n.is_multiple_of(10) {
                    let k = vault.create_key(&ctx(), NewKey::new("during")).unwrap();
                    created.lock().unwrap().push(text(&k));
                } else {
                    let v = vault
                        .verify(&ctx(), VerifyRequest::new(&texts[n % texts.len()]))
                        .unwrap();
                    assert_eq!(
                        v.code,
                        VerifyCode::Valid,
                        "a verify failed during the backup"
                    );
                }
                acked.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    // Let the load run, then back up under it.
    while acked.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let size_at_start = vault.audit_size();
    let mut file = Vec::new();
    let report = vault
        .backup(
            &ctx(),
            &mut Slow(&mut file, Duration::from_millis(10)),
            |_| {},
        )
        .unwrap();
    let acked_after_backup = acked.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("no verify failed during the backup");
    }
    assert!(
        report.captured > 0,
        "the load changed nothing during the backup: the test proves nothing"
    );
    assert!(acked_after_backup > 200);
    assert_eq!(report.bytes as usize, file.len());
    let created_before: Vec<String> = created.lock().unwrap().clone();
    let source_entries = entries(&vault);
    let source_public_key = issued.audit_public_key.clone();
    vault.seal(&ctx()).unwrap();
    drop(vault);

    // Restore into a fresh directory; it unseals with the passphrase of the backup's time.
    let restored_dir = tmp.path().join("restored");
    let restored = Vault::restore(Cursor::new(&file), &restored_dir, |_| {}).unwrap();
    assert_eq!(restored.backup.records, report.records);
    assert_eq!(restored.backup.captured, report.captured);
    assert_eq!(restored.audit_public_key, source_public_key);
    assert_eq!(restored.checkpoint_size, report.checkpoint_size);
    let vault = Vault::open(&restored_dir).unwrap();
    assert!(vault.is_sealed());
    unseal(&vault);

    // The restored log is an exact prefix of the source's: nothing lost, nothing twice, in
    // order; it reaches past the backup's start and holds the backup's own entry.
    let restored_entries = entries(&vault);
    let backed_up = restored.audit_entries as usize;
    assert!(backed_up > size_at_start as usize);
    assert_eq!(
        &restored_entries[..backed_up],
        &source_entries[..backed_up],
        "the restored log differs from the source's"
    );
    let parsed: Vec<Entry> = restored_entries[..backed_up]
        .iter()
        .map(|(_, b)| Entry::parse(b).unwrap())
        .collect();
    for (i, e) in parsed.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "missing or repeated sequence number");
    }
    assert!(
        parsed
            .iter()
            .any(|e| e.event == "sys.backup" && e.outcome == "ok")
    );
    // The restore recorded itself right after the backed-up entries.
    let restore_entry = Entry::parse(&restored_entries[backed_up].1).unwrap();
    assert_eq!(restore_entry.event, "sys.restore");
    assert_eq!(restore_entry.actor, "operator");
    let sha: String = report.sha256.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(restore_entry.details["backup_sha256"], sha.as_str());

    // Each credit spend came with its entry: remaining credits + VALID verifies in the log
    // of that key = the credits it started with.
    let mut valid: HashMap<String, u64> = HashMap::new();
    for e in &parsed {
        if e.event == "key.verify" && e.outcome == "VALID" {
            *valid.entry(e.key_id.clone().unwrap()).or_default() += 1;
        }
    }
    for k in &keys {
        let info = vault.show_key(&k.info.key_id).unwrap();
        if let Some(left) = info.credits {
            let spent = valid[&k.info.key_id.to_string()];
            assert_eq!(
                left + spent,
                CREDITS,
                "a credit spend without its entry, or the reverse"
            );
        }
        let v = vault.verify(&ctx(), VerifyRequest::new(&text(k))).unwrap();
        assert_eq!(v.code, VerifyCode::Valid);
    }
    // Keys created during the backup are there if their creation entry is.
    let creations = parsed.iter().filter(|e| e.event == "key.create").count();
    let during: Vec<&String> = created_before.iter().take(creations - keys.len()).collect();
    for key in during {
        let v = vault.verify(&ctx(), VerifyRequest::new(key)).unwrap();
        assert_eq!(v.code, VerifyCode::Valid);
    }

    // The usage figures came with the backup and count exactly the restored log: none of the
    // verifies committed after the backup's end, all of those before it.
    assert!(vault.usage_sync(Duration::from_secs(30)).unwrap());
    assert_eq!(
        vault.usage_snapshot().unwrap(),
        vault.usage_from_log().unwrap()
    );

    // The restored log verifies and extends the checkpoint signed before the backup; so do the
    // entries appended after the restore.
    let size = check_export(&export(&vault), &source_public_key, &before.note);
    assert!(size > restored.audit_entries);
    vault.create_key(&ctx(), NewKey::new("after")).unwrap();
    let backed_up_checkpoint = vault
        .audit_checkpoint_at(restored.checkpoint_size.unwrap())
        .unwrap()
        .unwrap();
    check_export(&export(&vault), &source_public_key, &backed_up_checkpoint);

    // The checkpoint file was rebuilt from the stored checkpoints.
    let lines = std::fs::read_to_string(restored_dir.join("checkpoints.jsonl")).unwrap();
    assert!(lines.lines().count() >= 2);
    assert!(lines.contains(&serde_json::json!({ "checkpoint": before.note }).to_string()));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn restore_into_a_fresh_directory_unseals_with_the_old_passphrase_and_extends_the_log() {
    let (tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    let key = vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    let (file, report) = backup_bytes(&vault);
    let at_backup = vault
        .audit_checkpoint_at(report.checkpoint_size.unwrap())
        .unwrap()
        .unwrap();
    // After the backup, the source moves on: a rekey and a key the backup does not have.
    vault
        .rekey(
            &ctx(),
            vault_core::Credential::Passphrase(Passphrase::new(PASSPHRASE)),
            &passphrase_method("a new passphrase, long enough"),
        )
        .unwrap();
    let later = vault.create_key(&ctx(), NewKey::new("bob")).unwrap();
    let summary = verify_backup(Cursor::new(&file), |_| {}).unwrap();
    assert_eq!(summary.sha256, report.sha256);
    assert_eq!(summary.vault_id, vault.vault_id());

    // Into a directory that exists and is empty.
    let target = tmp.path().join("empty");
    std::fs::create_dir(&target).unwrap();
    let restored = Vault::restore(Cursor::new(&file), &target, |_| {}).unwrap();
    assert_eq!(mode(&target), 0o700);
    assert_eq!(mode(&target.join("checkpoints.jsonl")), 0o600);
    assert!(!tmp.path().join(".empty.restoring").exists());
    let copy = Vault::open(&target).unwrap();
    assert_eq!(copy.vault_id(), vault.vault_id());
    let wrong = copy.unseal_passphrase(&ctx(), &Passphrase::new("a new passphrase, long enough"));
    assert!(matches!(wrong, Err(Error::WrongCredential)));
    unseal(&copy);
    let v = copy
        .verify(&ctx(), VerifyRequest::new(&text(&key)))
        .unwrap();
    assert_eq!(v.code, VerifyCode::Valid);
    let v = copy
        .verify(&ctx(), VerifyRequest::new(&text(&later)))
        .unwrap();
    assert_eq!(v.code, VerifyCode::NotFound);
    check_export(&export(&copy), &issued.audit_public_key, &at_backup);
    assert!(restored.audit_entries >= 4);

    // A directory that holds something is refused, and left alone.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"x").unwrap();
    let refused = Vault::restore(Cursor::new(&file), &busy, |_| {});
    assert!(
        matches!(refused, Err(Error::InvalidInput(_))),
        "{refused:?}"
    );
    assert!(busy.join("keep").exists());
    assert!(matches!(
        Vault::restore(Cursor::new(&file), &target, |_| {}),
        Err(Error::InvalidInput(_))
    ));
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    assert!(matches!(
        Vault::restore(Cursor::new(&file), &link, |_| {}),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_sealed_vault_backs_up_and_restores() {
    let (tmp, vault) = passphrase_vault();
    let key = vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    vault.seal(&ctx()).unwrap();
    let (file, report) = backup_bytes(&vault);
    assert!(report.checkpoint_size.is_some());
    let target = tmp.path().join("copy");
    Vault::restore(Cursor::new(&file), &target, |_| {}).unwrap();
    let copy = Vault::open(&target).unwrap();
    unseal(&copy);
    let v = copy
        .verify(&ctx(), VerifyRequest::new(&text(&key)))
        .unwrap();
    assert_eq!(v.code, VerifyCode::Valid);
}

#[test]
fn damaged_backups_are_refused_and_leave_nothing_behind() {
    let (tmp, vault) = passphrase_vault();
    vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    let (good, _) = backup_bytes(&vault);
    let n = good.len();
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 5, 28, 29, n / 2, n - 33, n - 32, n - 1] {
        damaged.push((format!("cut at {cut}"), good[..cut].to_vec()));
    }
    for at in [0, 9, 40, n / 3, n / 2, n - 40, n - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        damaged.push((format!("bit flipped at {at}"), bytes));
    }
    let mut longer = good.clone();
    longer.push(0);
    damaged.push(("a byte appended".into(), longer));
    for (i, (what, bytes)) in damaged.iter().enumerate() {
        let target = tmp.path().join(format!("t{i}"));
        let result = Vault::restore(Cursor::new(bytes), &target, |_| {});
        assert!(
            matches!(result, Err(Error::Backup(_))),
            "{what}: {result:?}"
        );
        assert!(
            !target.exists(),
            "{what}: a refused restore left {target:?}"
        );
        assert!(!tmp.path().join(format!(".t{i}.restoring")).exists());
        assert!(
            matches!(
                verify_backup(Cursor::new(bytes), |_| {}),
                Err(Error::Backup(_))
            ),
            "{what}"
        );
    }
    let message = Vault::restore(Cursor::new(&good[..n / 2]), &tmp.path().join("x"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("truncated"), "{message}");
    Vault::restore(Cursor::new(&good), &tmp.path().join("ok"), |_| {}).unwrap();
}

/// Rewrites a backup with `edit` applied to every value (given its raw key), with a new digest:
/// what someone who edits a backup and knows the format would make.
fn reframe(file: &[u8], mut edit: impl FnMut(u8, &[u8], &mut Vec<u8>)) -> Vec<u8> {
    use sha2::Digest;
    let u32_at = |at: usize| u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let mut out = file[..28].to_vec();
    let mut at = 28;
    loop {
        let tag = file[at];
        at += 1;
        out.push(tag);
        if tag == 0xFF {
            out.extend_from_slice(&file[at..at + 24]);
            break;
        }
        let klen = u32_at(at);
        let key = file[at + 4..at + 4 + klen].to_vec();
        out.extend_from_slice(&file[at..at + 4 + klen]);
        at += 4 + klen;
        if tag != 0x03 {
            let vlen = u32_at(at);
            let mut value = file[at + 4..at + 4 + vlen].to_vec();
            at += 4 + vlen;
            edit(tag, &key, &mut value);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(&value);
        }
    }
    let digest = sha2::Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

#[test]
fn an_edited_audit_log_is_refused_even_with_a_recomputed_digest() {
    let (tmp, vault) = passphrase_vault();
    vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    let (good, _) = backup_bytes(&vault);
    let same = reframe(&good, |_, _, _| {});
    assert_eq!(same, good);

    // An entry's text changed ("alice" becomes "alicf"): its leaf hash no longer matches.
    let edited = reframe(&good, |tag, _, value| {
        if tag == 0x04
            && let Some(at) = value.windows(5).position(|w| w == b"alice")
        {
            value[at + 4] = b'f';
        }
    });
    assert_ne!(edited, good);
    let target = tmp.path().join("edited");
    let err = Vault::restore(Cursor::new(&edited), &target, |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Backup(m) if m.contains("leaf hash")),
        "{err}"
    );
    assert!(!target.exists());

    // A checkpoint re-signed by someone else (here: its signature bytes changed) is refused.
    let forged = reframe(&good, |tag, key, value| {
        if tag != 0x04 && key[0] == 8 {
            let n = value.len();
            value[n - 10] = if value[n - 10] == b'A' { b'B' } else { b'A' };
        }
    });
    let err = Vault::restore(Cursor::new(&forged), &tmp.path().join("forged"), |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Backup(m) if m.contains("does not verify")),
        "{err}"
    );
}

/// A writer that blocks its first write until told to go on, then fails or passes through.
struct Gate {
    entered: Arc<Barrier>,
    release: mpsc::Receiver<bool>,
    waited: bool,
    fail: bool,
    out: Vec<u8>,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.waited {
            self.waited = true;
            self.entered.wait();
            self.fail = self.release.recv().unwrap();
        }
        if self.fail {
            return Err(std::io::Error::other("the client went away"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn one_backup_at_a_time_and_a_failed_one_lets_the_next_run() {
    let (_tmp, vault) = passphrase_vault();
    // More than the backup's write buffer (in the store's key records alone), so that the
    // scan writes (and blocks) before it ends.
    for i in 0..40 {
        let mut meta = serde_json::Map::new();
        meta.insert("note".into(), "x".repeat(3000).into());
        vault
            .create_key(
                &ctx(),
                NewKey {
                    meta,
                    ..NewKey::new(format!("owner-{i}"))
                },
            )
            .unwrap();
    }
    let entered = Arc::new(Barrier::new(2));
    let (release, gate_rx) = mpsc::channel();
    let running = {
        let vault = vault.clone();
        let entered = Arc::clone(&entered);
        std::thread::spawn(move || {
            let mut gate = Gate {
                entered,
                release: gate_rx,
                waited: false,
                fail: false,
                out: Vec::new(),
            };
            vault.backup(&ctx(), &mut gate, |_| {})
        })
    };
    entered.wait();
    // The first backup holds the capture: a second is refused.
    let mut other = Vec::new();
    let second = vault.backup(&ctx(), &mut other, |_| {});
    assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
    // The first one's client goes away: it fails, and gives the capture up.
    release.send(true).unwrap();
    assert!(matches!(running.join().unwrap(), Err(Error::Io { .. })));
    let (file, _) = backup_bytes(&vault);
    verify_backup(Cursor::new(&file), |_| {}).unwrap();
    let outcomes: Vec<String> = entries(&vault)
        .iter()
        .map(|(_, b)| Entry::parse(b).unwrap())
        .filter(|e| e.event == "sys.backup")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes, ["conflict", "io", "ok"]);
}

/// A vault whose early entries were archived backs up its live log only, and the restored
/// vault starts its log there: its export verifies from the first live entry and extends the
/// checkpoint the archive ended at.
#[test]
fn a_vault_with_an_archived_log_backs_up_and_restores_its_live_log() {
    let (tmp, vault) = passphrase_vault();
    let key = vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    for _ in 0..300 {
        vault
            .verify(&ctx(), VerifyRequest::new(&text(&key)))
            .unwrap();
    }
    let cut = vault.audit_roll_checkpoint().unwrap();
    let mut archive = Vec::new();
    let sha256 = vault
        .write_audit_archive(&ctx(), cut.checkpoint.size, &mut archive, |_| {})
        .unwrap();
    vault
        .drop_archived(&ctx(), cut.checkpoint.size, &sha256)
        .unwrap();
    for _ in 0..300 {
        vault
            .verify(&ctx(), VerifyRequest::new(&text(&key)))
            .unwrap();
    }
    let day = UsageQuery::last(Granularity::Day, 2);
    assert!(vault.usage_sync(Duration::from_secs(20)).unwrap());
    assert_eq!(
        vault.key_usage(&key.key.id(), &day).unwrap().totals.total,
        600
    );
    let (file, report) = backup_bytes(&vault);
    let first = cut.checkpoint.size;
    assert_eq!(report.entries, vault.audit_size() - first);

    let target = tmp.path().join("restored");
    Vault::restore(Cursor::new(&file), &target, |_| {}).unwrap();
    let restored = Vault::open(&target).unwrap();
    unseal(&restored);
    assert_eq!(restored.audit_first_live(), first);
    let v = restored
        .verify(&ctx(), VerifyRequest::new(&text(&key)))
        .unwrap();
    assert_eq!(v.code, VerifyCode::Valid);
    // The figures came with the backup: the verifies of the archived entries still count.
    assert!(restored.usage_sync(Duration::from_secs(20)).unwrap());
    assert_eq!(
        restored
            .key_usage(&key.key.id(), &day)
            .unwrap()
            .totals
            .total,
        601
    );
    let public_key = restored.audit_public_key().unwrap();
    check_export(&export(&restored), &public_key, &cut.note);
    assert!(matches!(
        restored.audit_entry(first - 1),
        Err(Error::Archived { .. })
    ));
}
