//! Witnesses keep the audit log rollback-proof: a data directory rolled back to an older copy
//! is refused at unseal when a witness (or the checkpoint file) holds a newer checkpoint, and
//! exports carry the witnesses' cosignatures.
//!
//! The witness here is the real `vault_core::witness::Witness` behind a minimal HTTP/1.1 front
//! on 127.0.0.1 (one request per connection), written for this test since vault-core has no
//! HTTP server of its own; vault-server's `witness_app` is tested in its own suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vault_core::audit::note::NoteVerifier;
use vault_core::kdf::Passphrase;
use vault_core::witness::{Witness, WitnessConfig};
use vault_core::{Error, Vault, VaultOptions};

use crate::common::*;

/// A witness serving on 127.0.0.1 until dropped.
struct TestWitness {
    url: String,
    key: String,
    stop: Arc<AtomicBool>,
}

impl TestWitness {
    fn start(dir: &Path, log_key: &str) -> TestWitness {
        let log = NoteVerifier::parse(log_key).unwrap();
        let (witness, _) = Witness::open(dir, "witness.test/w1", &[log]).unwrap();
        let key = witness.verifier().to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        answer(&witness, stream);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        TestWitness { url, key, stop }
    }

    fn config(&self) -> WitnessConfig {
        WitnessConfig::new(&self.url, &self.key).unwrap()
    }
}

impl Drop for TestWitness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(witness: &Witness, stream: std::net::TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
    let (status, text) = match (method, path) {
        ("POST", "/add-checkpoint") => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            match witness.add_checkpoint(std::str::from_utf8(&body).unwrap(), now) {
                Ok(lines) => (200, lines),
                Err(refusal) => (refusal.status(), refusal.body()),
            }
        }
        ("GET", path) => {
            let hash = path.trim_start_matches('/').trim_end_matches("/checkpoint");
            match witness.latest(hash) {
                Some(note) => (200, note),
                None => (404, "none\n".into()),
            }
        }
        _ => (404, "no such route\n".into()),
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn open(path: &Path, witnesses: Vec<WitnessConfig>) -> Vault {
    let options = VaultOptions {
        witnesses,
        ..VaultOptions::default()
    };
    Vault::open_with(path, &options).unwrap()
}

fn unseal(vault: &Vault) -> vault_core::Result<()> {
    vault.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
}

fn make_keys(vault: &Vault, n: usize) {
    for i in 0..n {
        vault
            .create_key(&ctx(), vault_core::keys::NewKey::new(format!("c{i}")))
            .unwrap();
    }
}

/// A new vault, closed, and a witness of its log: its directory, its log's public key and the
/// witness.
fn witnessed_vault() -> (tempfile::TempDir, std::path::PathBuf, String, TestWitness) {
    let (tmp, vault) = passphrase_vault();
    let path = vault.dir().to_path_buf();
    let log_key = vault.audit_public_key().unwrap();
    drop(vault);
    let witness = TestWitness::start(&tmp.path().join("witness"), &log_key);
    (tmp, path, log_key, witness)
}

#[test]
fn a_data_directory_rolled_back_behind_a_witness_is_refused_at_unseal_naming_both_sizes() {
    let (tmp, path, _, witness) = witnessed_vault();

    let vault = open(&path, vec![witness.config()]);
    unseal(&vault).unwrap();
    make_keys(&vault, 3);
    export(&vault);
    drop(vault);
    let older = tmp.path().join("older");
    copy_dir(&path, &older);

    let vault = open(&path, vec![witness.config()]);
    unseal(&vault).unwrap();
    make_keys(&vault, 5);
    let exported = export(&vault);
    let newer = vault.audit_size();
    drop(vault);
    // The export's checkpoint carries the witness's cosignature.
    let checkpoint: serde_json::Value =
        serde_json::from_str(exported.lines().nth(1).unwrap()).unwrap();
    let note = checkpoint["checkpoint"].as_str().unwrap();
    vault_core::audit::cosignature::CosignatureVerifier::parse(&witness.key)
        .unwrap()
        .verify(note)
        .unwrap();

    // The older copy put back: its own store and checkpoint file agree with it, so only the
    // witness can tell.
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&older, &path);
    let without_witness = open(&path, Vec::new());
    let older_size = without_witness.audit_size();
    assert!(older_size < newer);
    drop(without_witness);
    let vault = open(&path, vec![witness.config()]);
    let refused = unseal(&vault).unwrap_err();
    let Error::RolledBack(why) = &refused else {
        panic!("expected a rollback refusal, got {refused:?}");
    };
    assert!(why.contains("witness witness.test/w1"), "{why}");
    assert!(
        why.contains(&format!("size {}", newer - 1)) || why.contains(&format!("size {newer}")),
        "{why}"
    );
    assert!(why.contains(&format!("has {older_size} entries")), "{why}");
    assert!(vault.is_sealed());
}

#[test]
fn a_checkpoint_file_newer_than_the_log_is_refused_at_unseal() {
    let (tmp, vault) = passphrase_vault();
    let path = vault.dir().to_path_buf();
    make_keys(&vault, 2);
    export(&vault);
    drop(vault);
    let older = tmp.path().join("older");
    copy_dir(&path, &older);
    let vault = open(&path, Vec::new());
    unseal(&vault).unwrap();
    make_keys(&vault, 4);
    export(&vault);
    drop(vault);
    // Everything rolled back but the checkpoint file.
    let file = path.join("checkpoints.jsonl");
    assert!(
        file.exists(),
        "the checkpoint file is where the test expects it"
    );
    let newer_file = std::fs::read(&file).unwrap();
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&older, &path);
    std::fs::write(&file, newer_file).unwrap();
    let vault = open(&path, Vec::new());
    let refused = unseal(&vault).unwrap_err();
    assert!(
        matches!(&refused, Error::RolledBack(why) if why.contains("the checkpoint file")),
        "{refused:?}"
    );
    assert!(vault.is_sealed());
}

#[test]
fn an_unreachable_witness_does_not_keep_the_vault_sealed() {
    let (_tmp, vault) = passphrase_vault();
    let path = vault.dir().to_path_buf();
    let cosigner =
        vault_core::audit::cosignature::Cosigner::from_seed("w.test/w", &[3; 32]).unwrap();
    drop(vault);
    // Nothing listens on port 9 of the loopback address.
    let gone = WitnessConfig::new("http://127.0.0.1:9", &cosigner.verifier().to_string()).unwrap();
    let vault = open(&path, vec![gone]);
    unseal(&vault).unwrap();
    make_keys(&vault, 1);
    export(&vault);
}

#[test]
fn an_offline_verify_counts_the_witnesses_cosignatures() {
    let (_tmp, path, log_key, witness) = witnessed_vault();
    let vault = open(&path, vec![witness.config()]);
    unseal(&vault).unwrap();
    make_keys(&vault, 2);
    let exported = export(&vault);
    let verifier = NoteVerifier::parse(&log_key).unwrap();
    let report =
        vault_core::audit::export::verify_export(exported.as_bytes(), &verifier, None, |_| {})
            .unwrap();
    let ours = vault_core::audit::cosignature::CosignatureVerifier::parse(&witness.key).unwrap();
    let stranger = vault_core::audit::cosignature::Cosigner::from_seed("w.test/other", &[9; 32])
        .unwrap()
        .verifier();
    let cosigned = report
        .require_cosignatures(std::slice::from_ref(&ours), 1)
        .unwrap();
    assert_eq!(cosigned.len(), 1);
    assert_eq!(cosigned[0].0, "witness.test/w1");
    // The same witness given twice counts once; a witness that did not cosign does not count.
    assert!(
        report
            .require_cosignatures(&[ours.clone(), ours.clone()], 2)
            .is_err()
    );
    let e = report
        .require_cosignatures(&[ours, stranger], 2)
        .unwrap_err();
    assert!(
        e.why.contains("1 valid cosignature(s) of the 2 needed"),
        "{}",
        e.why
    );
    // A cosignature line edited in the export no longer counts.
    let line = "\u{2014} witness.test/w1 ";
    let at = exported.find(line).unwrap() + line.len();
    let mut tampered = exported.clone().into_bytes();
    tampered[at + 20] = if tampered[at + 20] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    // Either the whole export is refused (a malformed note) or the cosignature does not count.
    if let Ok(report) =
        vault_core::audit::export::verify_export(tampered.as_bytes(), &verifier, None, |_| {})
    {
        let ours =
            vault_core::audit::cosignature::CosignatureVerifier::parse(&witness.key).unwrap();
        assert!(report.require_cosignatures(&[ours], 1).is_err());
    }
}
