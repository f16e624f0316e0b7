//! Witnesses: `witness serve` cosigns a vault's checkpoints and refuses to go back; a vault
//! rolled back behind its witness stays sealed, and exports carry the cosignatures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::support::{
    Server, exchange, get, init_passphrase_vault, json_of, keyvault, listening, run, serve,
    write_secret,
};

#[test]
fn a_witness_cosigns_a_vaults_checkpoint_and_answers_409_with_its_size_when_behind() {
    use vault_core::audit::cosignature::{CosignatureVerifier, add_signatures};
    use vault_core::witness::AddCheckpoint;

    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let log_key = init["public_key"].as_str().unwrap();
    // A real checkpoint of the vault, and a consistency proof, from the vault itself.
    let (first, second, proof) = {
        let vault = vault_core::Vault::open(&data).unwrap();
        let passphrase = std::fs::read_to_string(&pass).unwrap();
        vault
            .unseal_passphrase(
                &vault_core::Context::embedded(),
                &vault_core::kdf::Passphrase::new(passphrase.trim_end()),
            )
            .unwrap();
        let first = vault.audit_checkpoint().unwrap();
        vault
            .create_key(
                &vault_core::Context::embedded(),
                vault_core::keys::NewKey::new("alice"),
            )
            .unwrap();
        let second = vault.audit_checkpoint().unwrap();
        let proof = vault
            .audit_consistency_proof(first.checkpoint.size, second.checkpoint.size)
            .unwrap();
        (first, second, proof)
    };
    assert!(second.checkpoint.size > first.checkpoint.size);

    // A non-loopback address needs the flag; --log is required.
    let witness_dir = tmp.path().join("witness");
    let out = keyvault()
        .args([
            "witness",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--log",
            log_key,
        ])
        .arg("--data-dir")
        .arg(&witness_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("--insecure-listen"),
        "{err}"
    );
    assert!(!witness_dir.exists(), "nothing is made before the checks");
    let out = keyvault()
        .args(["witness", "serve", "--data-dir"])
        .arg(&witness_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log"));

    let (witness, printed) = witness_serve(
        &witness_dir,
        &format!(
            "@{}",
            write_secret(tmp.path(), "log.pub", &format!("{log_key}\n")).display()
        ),
        true,
    );
    assert!(printed.contains("[[audit.witness]]"), "{printed}");
    let out = keyvault()
        .args(["--json", "witness", "key", "--data-dir"])
        .arg(&witness_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = json_of(&String::from_utf8(out.stdout).unwrap())["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        printed.lines().any(|l| l == format!("  {key}")),
        "{printed}"
    );
    let key = CosignatureVerifier::parse(&key).unwrap();

    let body = AddCheckpoint {
        old: 0,
        proof: Vec::new(),
        checkpoint: first.note.clone(),
    }
    .to_body();
    let (status, _, lines) = add_checkpoint(&witness.1, &body);
    assert_eq!(status, 200, "{lines}");
    key.verify(&add_signatures(&first.note, &lines)).unwrap();

    // A client that thinks the witness holds nothing learns its size.
    let behind = AddCheckpoint {
        old: 0,
        proof: Vec::new(),
        checkpoint: second.note.clone(),
    }
    .to_body();
    let (status, content_type, size) = add_checkpoint(&witness.1, &behind);
    assert_eq!(status, 409, "{size}");
    assert_eq!(content_type, "text/x.tlog.size");
    assert_eq!(size, format!("{}\n", first.checkpoint.size));
    drop(witness);

    // Restarted, it keeps its key and what it cosigned, and prints nothing on stdout.
    let (witness, printed) = witness_serve(&witness_dir, log_key, false);
    assert_eq!(printed, "");
    let (status, _, size) = add_checkpoint(&witness.1, &behind);
    assert_eq!(
        (status, size),
        (409, format!("{}\n", first.checkpoint.size))
    );
    let body = AddCheckpoint {
        old: first.checkpoint.size,
        proof,
        checkpoint: second.note.clone(),
    }
    .to_body();
    let (status, _, lines) = add_checkpoint(&witness.1, &body);
    assert_eq!(status, 200, "{lines}");
    key.verify(&add_signatures(&second.note, &lines)).unwrap();
}

#[test]
fn a_vault_rolled_back_behind_its_witness_stays_sealed_and_exports_carry_cosignatures() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let log_key = init["public_key"].as_str().unwrap().to_owned();
    let token = init["root_token"].as_str().unwrap().to_owned();
    let (witness, printed) = witness_serve(&tmp.path().join("witness"), &log_key, true);
    let witness_key = printed
        .lines()
        .find(|l| l.starts_with("  "))
        .unwrap()
        .trim()
        .to_owned();
    let config = write_secret(
        tmp.path(),
        "keyvault.toml",
        &format!(
            "[[audit.witness]]\nurl = \"http://{}\"\nkey = \"{witness_key}\"\n",
            witness.1
        ),
    );
    let config = config.to_str().unwrap();
    let data_arg = data.to_str().unwrap();
    let pass_arg = pass.to_str().unwrap();
    let unsealed = [
        "--data-dir",
        data_arg,
        "--config",
        config,
        "--unseal-passphrase-file",
        pass_arg,
    ];

    // A vault that sends its checkpoints to the witness; an export carries its cosignature.
    let server = serve(&unsealed);
    let (code, _, err) = run(&server.1, Some(&token), &["key", "create", "--owner", "c1"]);
    assert_eq!(code, 0, "{err}");
    let export = tmp.path().join("export.jsonl");
    let (code, _, err) = run(
        &server.1,
        Some(&token),
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    drop(server);
    let verify = |witness_args: &[&str]| {
        let out = keyvault()
            .args(["audit", "verify"])
            .arg(&export)
            .args(["--public-key", &log_key])
            .args(witness_args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = verify(&["--witness", &witness_key]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cosigned by 1 of 1 witnesses"), "{text}");
    // A witness that did not cosign does not count.
    let stranger = vault_core::audit::cosignature::Cosigner::from_seed("w.example/x", &[5; 32])
        .unwrap()
        .verifier()
        .to_string();
    let (code, text) = verify(&["--witness", &witness_key, "--witness", &stranger]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NOT witnessed"), "{text}");
    let (code, _) = verify(&[
        "--witness",
        &witness_key,
        "--witness",
        &stranger,
        "--min-cosignatures",
        "1",
    ]);
    assert_eq!(code, 0);

    // An older copy of the data directory, then more history the witness sees.
    let older = tmp.path().join("older");
    vault_core::testing::copy_dir(&data, &older);
    let server = serve(&unsealed);
    for owner in ["c2", "c3", "c4"] {
        let (code, _, err) = run(
            &server.1,
            Some(&token),
            &["key", "create", "--owner", owner],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = run(
        &server.1,
        Some(&token),
        &[
            "audit",
            "export",
            "-o",
            tmp.path().join("e2.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    drop(server);

    // The older copy put back: the vault refuses to unseal, at start and over HTTP.
    std::fs::remove_dir_all(&data).unwrap();
    vault_core::testing::copy_dir(&older, &data);
    let out = keyvault()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(unsealed)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rolled back") && err.contains("holds a checkpoint of size"),
        "{err}"
    );
    let server = serve(&["--data-dir", data_arg, "--config", config]);
    let passphrase = std::fs::read_to_string(&pass).unwrap();
    let (status, body) = unseal_over_http(&server.1, passphrase.trim_end());
    assert_eq!(status, 409, "{body}");
    let body = json_of(&body);
    assert_eq!(body["error"]["code"], "audit_rolled_back");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("entries"), "{message}");
    assert_eq!(get(&server.1, "/v1/sys/health").0, 503, "still sealed");
}

/// `keyvault witness serve` on a free loopback port, killed on drop, and what it printed on
/// standard output: at a `first` start, up to its verifier key line; else whatever came in
/// the moment after it listened (nothing, it should be).
fn witness_serve(data: &Path, log: &str, first: bool) -> (Server, String) {
    use std::sync::mpsc;
    use std::time::Duration;
    let mut child = keyvault()
        .args(["witness", "serve", "--listen", "127.0.0.1:0", "--log", log])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = listening(
        child.stderr.take().unwrap(),
        "keyvault witness listening on http://",
        None,
    );
    let server = Server(child, addr);
    let mut printed = String::new();
    let wait = Duration::from_millis(if first { 10_000 } else { 200 });
    while !printed.lines().any(|l| l.starts_with("  ")) {
        match rx.recv_timeout(wait) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
            }
            Err(_) => break,
        }
    }
    (server, printed)
}

/// `POST /add-checkpoint`; (status, content type, body).
fn add_checkpoint(addr: &str, body: &str) -> (u16, String, String) {
    let answer = exchange(addr, "POST", "/add-checkpoint", &[], body).expect("an answer");
    let content_type = answer
        .head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (answer.status, content_type, answer.body)
}

/// `POST /v1/sys/unseal` with a passphrase; (status, body).
fn unseal_over_http(addr: &str, passphrase: &str) -> (u16, String) {
    let body = serde_json::json!({ "passphrase": passphrase }).to_string();
    let headers = [("Content-Type", "application/json")];
    let answer = exchange(addr, "POST", "/v1/sys/unseal", &headers, &body).expect("an answer");
    (answer.status, answer.body)
}
