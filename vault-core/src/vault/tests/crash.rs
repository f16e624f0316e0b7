//! Acknowledged writes, verifies and rewrap progress survive `kill -9`: each test runs a child
//! half of itself (an ignored test) in a child process and kills it.

use super::*;
use crate::record;
use crate::vault::danger::RecordTree;

/// Child half of `acknowledged_writes_survive_kill_9`: writes until killed, printing each
/// acknowledged key id.
#[test]
#[ignore = "run by acknowledged_writes_survive_kill_9 in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os("KEYVAULT_CRASH_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let vault = reopen(&dir);
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
            "vault::tests::crash::crash_child",
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
    reopen(dir)
}

/// A new vault, closed for a child to open: its directory and its audit log's verifier.
fn closed_vault() -> (tempfile::TempDir, PathBuf, crate::audit::note::NoteVerifier) {
    let (tmp, vault) = new_vault();
    let dir = vault.dir().to_path_buf();
    let public_key = verifier(&vault);
    drop(vault);
    (tmp, dir, public_key)
}

/// Acknowledged writes and their entries survive `kill -9`, and the log still verifies.
#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead;
    let (tmp, dir, public_key) = closed_vault();
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
    let (tmp, dir, public_key) = closed_vault();
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

/// Child half of `acknowledged_writes_of_concurrent_callers_survive_kill_9`: 8 threads create
/// and verify keys until killed (so that groups that change state and replayable ones are in
/// flight together), each printing every acknowledged key id.
#[test]
#[ignore = "run by acknowledged_writes_of_concurrent_callers_survive_kill_9 in a child process"]
fn concurrent_crash_child() {
    let Some(dir) = std::env::var_os("KEYVAULT_CRASH_DIR") else {
        return;
    };
    let vault = reopen(&PathBuf::from(dir));
    for _ in 0..7 {
        let vault = vault.clone();
        std::thread::spawn(move || {
            let caller = std::panic::AssertUnwindSafe(|| create_and_verify_until_killed(&vault));
            let _ = std::panic::catch_unwind(caller);
            // A caller ends only by panicking: the child ends with it, so the test sees it stop.
            std::process::abort();
        });
    }
    create_and_verify_until_killed(&vault);
}

/// Creates a key and verifies it three times, over and over, printing each key id once all
/// four are acknowledged.
fn create_and_verify_until_killed(vault: &Vault) -> ! {
    loop {
        let issued = vault
            .create_key(&ctx(), crate::keys::NewKey::new("crash"))
            .unwrap();
        let text = key_text(&issued);
        for _ in 0..3 {
            let v = vault
                .verify(&ctx(), crate::keys::VerifyRequest::new(&text))
                .unwrap();
            assert!(v.valid);
        }
        use std::io::Write;
        // One line per write under the lock: lines of threads never mix.
        let mut out = std::io::stdout().lock();
        writeln!(out, "acked {}", issued.key.id()).unwrap();
        out.flush().unwrap();
    }
}

/// Acknowledged creates and verifies of 8 concurrent callers, whose groups are written while
/// earlier ones sync, survive `kill -9`: each key is there with its create entry and its three
/// verify entries, and the log verifies.
#[test]
fn acknowledged_writes_of_concurrent_callers_survive_kill_9() {
    use std::io::BufRead;
    let (tmp, dir, public_key) = closed_vault();
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "vault::tests::crash::concurrent_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KEYVAULT_CRASH_DIR", &dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let wanted = 100 * (round + 1);
        for line in std::io::BufReader::new(stdout).lines() {
            if let Some(id) = line.unwrap().strip_prefix("acked ") {
                acked.push(id.to_owned());
                if acked.len() >= wanted {
                    break;
                }
            }
        }
        assert_eq!(
            acked.len(),
            wanted,
            "the child stopped before it was killed"
        );
        let vault = kill_and_reopen(child, &dir);
        let text = export_text(&vault).unwrap();
        crate::audit::export::verify_export(text.as_bytes(), &public_key, None, |_| {}).unwrap();
        for id in &acked {
            vault
                .show_key(&crate::apikey::KeyId::parse_hex(id).unwrap())
                .unwrap();
            let logged = |event: &str| {
                text.lines()
                    .filter(|l| l.contains(event) && l.contains(id.as_str()))
                    .count()
            };
            assert_eq!(logged("\"key.create\""), 1, "the create of {id}");
            assert!(logged("\"key.verify\"") >= 3, "the verifies of {id}");
        }
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
    let vault = reopen(&PathBuf::from(dir));
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
                "vault::tests::crash::rewrap_child",
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
        let vault = reopen(&dir);
        // Every record reads back (show_key decrypts it), and the rewrap only moves forward.
        let now = under_newest(&vault);
        assert!(
            now >= last,
            "round {round}: {now} under the newest term, was {last}"
        );
        last = now;
    }
    let vault = reopen(&dir);
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
