//! End-to-end tests of the built `keyvault` binary.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn keyvault() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyvault"));
    cmd.env_remove("KEYVAULT_DATA_DIR")
        .env("KEYVAULT_LOG", "warn");
    cmd
}

fn write_secret(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A server child killed on drop.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str]) -> Server {
    let mut child = keyvault()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("keyvault listening on http://") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server(child, addr)
}

/// A minimal HTTP/1.1 GET; returns the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn init_with_a_passphrase_then_serve_unsealed_and_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pass = write_secret(tmp.path(), "pass", "a passphrase for the e2e test\n");
    let out = keyvault()
        .args(["init", "--insecure-kdf", "--data-dir"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("Initialised a vault"), "{stdout}");
    assert!(!stdout.contains("a passphrase for the e2e test"));

    // A second init of the same directory is refused with a one-line error.
    let again = keyvault()
        .args(["init", "--insecure-kdf", "--data-dir"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8(again.stderr).unwrap();
    assert!(
        err.contains("already initialised") && err.lines().count() == 1,
        "{err}"
    );

    {
        let server = serve(&["--data-dir", data.to_str().unwrap()]);
        let (status, body) = get(&server.1, "/v1/sys/health");
        assert_eq!(status, 503, "{body}");
        let (status, body) = get(&server.1, "/v1/sys/seal-status");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["sealed"], true);
        assert_eq!(v["method"], "passphrase");
    }
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(get(&server.1, "/v1/sys/health").0, 200);
}

#[test]
fn init_with_shares_prints_them_once_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = keyvault()
        .args([
            "--json",
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shares = v["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 5);
    assert!(
        shares
            .iter()
            .all(|s| s.as_str().unwrap().starts_with("kvs1_"))
    );
}

#[test]
fn bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let short = write_secret(tmp.path(), "short", "short\n");
    for args in [
        vec![
            "init",
            "--insecure-kdf",
            "--passphrase-file",
            short.to_str().unwrap(),
        ],
        vec!["init", "--shares", "3", "--threshold", "4"],
        vec![
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--prefix",
            "BAD",
        ],
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["serve"],
    ] {
        let out = keyvault()
            .args(&args)
            .arg("--data-dir")
            .arg(tmp.path().join("d"))
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Wrong flags: clap's message with its tips and usage (pinned exactly in tests/cmd), exit 1.
    for args in [vec!["init", "--bogus"], vec!["frobnicate"]] {
        let out = keyvault().args(&args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("Usage: keyvault"),
            "{args:?}: {err}"
        );
    }
    // A missing required flag is named.
    let out = keyvault().arg("serve").output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
    // Every command's help renders.
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["serve"],
        &["status"],
        &["unseal"],
        &["seal"],
        &["key"],
        &["key", "create"],
        &["key", "list"],
        &["key", "show"],
        &["key", "update"],
        &["key", "rotate"],
        &["key", "revoke"],
        &["key", "reveal"],
        &["key", "verify"],
        &["key", "usage"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["audit"],
        &["audit", "export"],
        &["audit", "verify"],
        &["audit", "tail"],
        &["audit", "archive"],
        &["operator"],
        &["operator", "rotate"],
        &["operator", "rewrap"],
        &["operator", "rotate-audit-key"],
        &["operator", "rekey"],
        &["operator", "generate-root"],
        &["operator", "backup"],
        &["operator", "restore"],
        &["operator", "usage-rebuild"],
        &["witness"],
        &["witness", "serve"],
        &["witness", "key"],
        &["completions"],
    ];
    for args in commands
        .iter()
        .map(|c| [c.to_vec(), vec!["--help"]].concat())
    {
        let out = keyvault().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8(out.stdout).unwrap().contains("Usage"));
    }
}

/// The CLI's answers to common mistakes, pinned as exact text in `tests/cmd/*.toml` (trycmd):
/// a mistyped command and flag, a bad role, a share or a token typed where it does not belong.
#[test]
fn cli_mistakes_are_answered_with_clap_tips_and_no_secret() {
    trycmd::TestCases::new()
        .register_bin(
            "keyvault",
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_keyvault")),
        )
        .env("KEYVAULT_LOG", "warn")
        .case("tests/cmd/*.toml");
}

/// Runs `keyvault` with the server's address and a token; returns (exit code, stdout, stderr).
fn run(addr: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = keyvault();
    cmd.env("KEYVAULT_ADDR", format!("http://{addr}"))
        .env_remove("KEYVAULT_TOKEN");
    if let Some(t) = token {
        cmd.env("KEYVAULT_TOKEN", t);
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `keyvault init` of a passphrase vault (test-grade Argon2) in `DIR/data`; returns the data
/// directory, the passphrase file and what `init --json` printed.
fn init_passphrase_vault(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, serde_json::Value) {
    let data = dir.join("data");
    let pass = write_secret(dir, "pass", "a passphrase for the e2e tests\n");
    let out = keyvault()
        .args(["--json", "init", "--insecure-kdf", "--data-dir"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = json_of(&String::from_utf8(out.stdout).unwrap());
    (data, pass, init)
}

fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn the_whole_workflow_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = keyvault()
        .args([
            "--json",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--insecure-kdf",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = json_of(&String::from_utf8(out.stdout).unwrap());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let public_key = init["public_key"].as_str().unwrap().to_owned();
    let shares: Vec<String> = init["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();

    let server = serve(&["--data-dir", data.to_str().unwrap()]);
    let addr = server.1.clone();
    let root_text = root.clone();
    let root = Some(root.as_str());

    // Sealed: status exits 2, other commands say what to do.
    let (code, stdout, _) = run(&addr, root, &["status"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("sealed"));
    let (code, _, err) = run(&addr, root, &["key", "list"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: the vault is sealed: run `keyvault unseal`"
    );

    // A share submitted, then a reset: refused to someone who did not submit it (the progress
    // stays), done for its submitter, who gives it again.
    let unseal_stdin = |args: &[&str], share: &str| {
        let mut child = keyvault()
            .env("KEYVAULT_ADDR", format!("http://{addr}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{share}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = unseal_stdin(&["unseal", "--share", "-"], &shares[2]);
    assert!(out.status.success());
    let out = unseal_stdin(&["unseal", "--reset", "--share", "-"], &shares[0]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("only the holder of a share submitted so far"),
        "{err}"
    );
    assert!(!err.contains(&shares[0][5..]), "{err}");
    let (_, stdout, _) = run(&addr, None, &["--json", "status"]);
    assert_eq!(json_of(&stdout)["progress"], 1);
    let out = unseal_stdin(&["unseal", "--reset"], &shares[2]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "progress reset: 0 of 2 shares submitted");

    // Unseal with two shares, from stdin (no echo, nothing on the command line).
    for (i, share) in shares.iter().take(2).enumerate() {
        let mut child = keyvault()
            .env("KEYVAULT_ADDR", format!("http://{addr}"))
            .args(["--json", "unseal", "--share", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{share}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = json_of(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(status["sealed"], i == 0);
    }
    assert_eq!(run(&addr, root, &["status"]).0, 0);

    // Keys.
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "key",
            "create",
            "--owner",
            "cust-9",
            "--scope",
            "photos:write",
            "--credits",
            "5",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let created = json_of(&stdout);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].as_str().unwrap().to_owned();
    let (code, stdout, _) = run(
        &addr,
        root,
        &["key", "verify", &key, "--scope", "photos:write"],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("VALID: key"), "{stdout}");
    let (code, stdout, _) = run(&addr, root, &["key", "verify", &key, "--scope", "admin"]);
    assert_eq!(
        (code, stdout.trim()),
        (
            1,
            format!("INSUFFICIENT_SCOPE: key {id} of cust-9").as_str()
        )
    );
    let (code, stdout, _) = run(&addr, root, &["key", "list", "--owner", "cust-9"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&id) && stdout.starts_with("KEY ID"),
        "{stdout}"
    );
    assert!(!stdout.contains(&key[4..30]));

    let (code, stdout, _) = run(
        &addr,
        root,
        &["--json", "key", "rotate", &id, "--grace", "60"],
    );
    assert_eq!(code, 0);
    let new_key = json_of(&stdout)["key"].as_str().unwrap().to_owned();
    let (_, stdout, _) = run(&addr, root, &["--json", "key", "verify", &key]);
    assert!(
        json_of(&stdout)["previous_secret"]["expires_at"].is_u64(),
        "{stdout}"
    );
    assert_eq!(run(&addr, root, &["key", "verify", &new_key]).0, 0);

    let (code, _, err) = run(&addr, root, &["key", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, _) = run(&addr, root, &["key", "verify", &new_key]);
    assert_eq!((code, stdout.starts_with("REVOKED")), (1, true), "{stdout}");

    // Tokens: a verifier token can verify but not create.
    let (code, stdout, _) = run(
        &addr,
        root,
        &[
            "--json", "token", "create", "--role", "verifier", "--name", "photo",
        ],
    );
    assert_eq!(code, 0);
    let verifier = json_of(&stdout)["token"].as_str().unwrap().to_owned();
    let (code, _, err) = run(&addr, Some(&verifier), &["key", "create", "--owner", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: not allowed:") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        run(&addr, Some(&verifier), &["key", "verify", &new_key]).0,
        1
    );
    let (code, _, err) = run(&addr, Some("kvt_bogus"), &["key", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("KEYVAULT_TOKEN") && err.trim().lines().count() == 1,
        "{err}"
    );
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{root_text}\n")).unwrap();
    let (code, stdout, _) = run(
        &addr,
        None,
        &[
            "token",
            "list",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("verifier") && stdout.contains("admin"),
        "{stdout}"
    );

    // Audit: export, verify offline, tamper, verify again.
    let export = tmp.path().join("audit.jsonl");
    let (code, wrote, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let verify_args = |file: &Path| {
        let mut cmd = keyvault();
        cmd.args(["audit", "verify"])
            .arg(file)
            .args(["--public-key", &public_key]);
        cmd.output().unwrap()
    };
    let out = verify_args(&export);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("verified: "),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The export and the verify name the same count, as entries.
    let entries = stdout["verified: ".len()..].split(' ').next().unwrap();
    assert!(
        wrote.starts_with(&format!("wrote {entries} entries to ")),
        "{wrote} / {stdout}"
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let tampered = tmp.path().join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("\"outcome\":\"REVOKED\"", "\"outcome\":\"VALID\"", 1),
    )
    .unwrap();
    let out = verify_args(&tampered);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT verified") && err.contains("was changed"),
        "{err}"
    );
    let pk_file = tmp.path().join("pk");
    std::fs::write(&pk_file, &public_key).unwrap();
    let out = keyvault()
        .args(["audit", "verify"])
        .arg(&export)
        .arg(format!("--public-key=@{}", pk_file.display()))
        .output()
        .unwrap();
    assert!(out.status.success());

    // Archive the whole log: the file verifies on its own, the live log goes on from its end
    // and still verifies, and an existing file is never overwritten.
    let archive = tmp.path().join("archive.jsonl");
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "audit",
            "archive",
            "--upto",
            "latest",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let archived = json_of(&stdout);
    let upto = archived["upto"].as_u64().unwrap();
    assert!(upto > 0);
    assert_eq!(archived["first_seq"], 0);
    assert_eq!(archived["dropped"].as_u64(), Some(upto));
    // The vault dropped against the SHA-256 of the file as it is on the disk.
    let on_disk = vault_core::audit::archive::ArchiveDigest::of_reader(
        std::fs::File::open(&archive).unwrap(),
    )
    .unwrap();
    assert_eq!(
        archived["sha256"].as_str(),
        Some(on_disk.to_string().as_str())
    );
    let out = verify_args(&archive);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let complete = |file: &Path, extra: &[&str]| {
        let mut cmd = keyvault();
        cmd.args(["audit", "verify", "--complete"])
            .arg(file)
            .args(["--public-key", &public_key])
            .args(extra);
        cmd.output().unwrap()
    };
    let out = complete(&archive, &[]);
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .contains(&format!("complete: every entry from 0 to {}", upto - 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "archive",
            "--upto",
            "latest",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("never overwritten"), "{err}");
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let out = verify_args(&export);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("({upto} to ")),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The live log after an archive is complete only from the archive's end, and only when
    // the auditor says so; a filtered export is never complete.
    let out = complete(&export, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NOT complete") && err.contains(&format!("--from {upto}")),
        "{err}"
    );
    let out = complete(&export, &["--from", &upto.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let filtered = tmp.path().join("filtered.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "export",
            "--event",
            "key.create",
            "-o",
            filtered.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(verify_args(&filtered).status.success());
    let out = complete(&filtered, &["--from", &upto.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NOT complete") && err.contains("filtered"),
        "{err}"
    );
    // A second archive starts where the first ended and verifies alone.
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "audit",
            "archive",
            "--upto",
            "latest",
            "--public-key",
            &public_key,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let second = json_of(&stdout);
    assert_eq!(second["first_seq"].as_u64(), Some(upto));
    let second_file = std::path::PathBuf::from(second["file"].as_str().unwrap());
    let out = verify_args(&second_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&second_file).unwrap();

    // Seal from the CLI; status exits 2 again.
    assert_eq!(run(&addr, root, &["seal"]).0, 0);
    assert_eq!(run(&addr, root, &["status"]).0, 2);
    drop(server);

    // A missing server: a one-line error, exit 1.
    let (code, _, err) = run("127.0.0.1:1", root, &["status"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot reach the vault") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn dev_mode_prints_a_key_that_verifies_with_the_printed_curl_line() {
    let mut child = keyvault()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut root = None;
    let mut curl = None;
    let mut dir = None;
    while let Some(Ok(line)) = lines.next() {
        if let Some(t) = line.strip_prefix("Root token (admin):") {
            root = Some(t.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("keyvault dev mode: a temporary vault in ") {
            dir = rest.split(',').next().map(std::path::PathBuf::from);
        }
        if line.starts_with("curl") && line.contains("/v1/keys/verify") {
            curl = Some(line);
            break;
        }
    }
    let root = root.expect("a root token line");
    let curl = curl.expect("a curl verify line");
    let dir = dir.expect("the data directory");
    assert!(dir.exists());
    // Replay the curl line: POST URL with the headers and the data it gives.
    let url = curl
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let (addr, path) = url.trim_start_matches("http://").split_once('/').unwrap();
    let data = curl.split("-d '").nth(1).unwrap().trim_end_matches('\'');
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {root}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{data}",
        data.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"code\":\"VALID\""), "{response}");
    // Stopping it removes the data.
    // SAFETY: sending SIGTERM to our own child process.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    assert!(child.wait().unwrap().success());
    assert!(!dir.exists(), "dev mode left its data behind");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A server at trace level whose every stderr line is kept.
fn serve_logged(args: &[&str]) -> (Server, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut child = keyvault()
        .env("KEYVAULT_LOG", "trace")
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        log.lock().unwrap().push_str(&line);
        if let Some(addr) = line.strip_prefix("keyvault listening on http://") {
            break addr.to_owned();
        }
    };
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (Server(child, addr), log)
}

/// Every workflow at trace level; then the logs, the audit export, every error body and every
/// byte of the data directory are searched for every secret used: none may appear.
#[test]
fn nothing_secret_reaches_logs_exports_errors_or_disk() {
    use secrecy::ExposeSecret;
    use vault_core::apikey::{ApiKey, Prefix};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = keyvault()
        .args([
            "--json",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--insecure-kdf",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let init = json_of(&String::from_utf8(out.stdout).unwrap());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let shares: Vec<String> = init["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let mut secrets: Vec<String> = shares.clone();
    secrets.push(root.clone());

    let (server, log) = serve_logged(&["--data-dir", data.to_str().unwrap()]);
    let addr = server.1.clone();
    let mut errors = String::new();
    let mut call = |token: Option<&str>, args: &[&str]| {
        let (code, stdout, stderr) = run(&addr, token, args);
        errors.push_str(&stderr);
        (code, stdout)
    };
    // A wrong share, then the right ones.
    let wrong = shares[0]
        .replacen("kvs1_", "kvs1_f", 1)
        .chars()
        .take(shares[0].len())
        .collect::<String>();
    call(None, &["unseal", "--share", &wrong]);
    secrets.push(wrong.clone());
    for share in &shares[..2] {
        call(None, &["unseal", "--share", share]);
    }
    let root = Some(root.as_str());
    let (_, created) = call(
        root,
        &[
            "--json",
            "key",
            "create",
            "--owner",
            "leak-test",
            "--recoverable",
            "--scope",
            "a",
        ],
    );
    let created = json_of(&created);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].as_str().unwrap().to_owned();
    secrets.push(key.clone());
    call(root, &["key", "verify", &key]);
    call(root, &["key", "verify", &format!("{key}x")]);
    call(root, &["key", "verify", &key.replacen('A', "B", 1)]);
    let (_, rotated) = call(root, &["--json", "key", "rotate", &id, "--grace", "60"]);
    let rotated = json_of(&rotated)["key"].as_str().unwrap().to_owned();
    secrets.push(rotated.clone());
    call(root, &["key", "verify", &key]);
    call(root, &["key", "reveal", &id]);
    let (_, token) = call(root, &["--json", "token", "create", "--role", "manager"]);
    let token = json_of(&token)["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    call(Some(&token), &["key", "list"]);
    call(Some(&token), &["token", "list"]);
    call(Some(&format!("{token}0")), &["key", "list"]);
    call(Some(&key), &["key", "list"]);
    let key_file = tmp.path().join("gen-root.key");
    let (_, started) = call(
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    let nonce = json_of(&started)["nonce"].as_str().unwrap().to_owned();
    call(
        None,
        &[
            "operator",
            "generate-root",
            "--nonce",
            &nonce,
            "--share",
            &shares[1],
        ],
    );
    let (_, done) = call(
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--nonce",
            &nonce,
            "--share",
            &shares[2],
        ],
    );
    let encrypted = tmp.path().join("token.age");
    std::fs::write(
        &encrypted,
        json_of(&done)["encrypted_token"].as_str().unwrap(),
    )
    .unwrap();
    let (_, generated) = call(
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--decrypt",
            encrypted.to_str().unwrap(),
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    let generated = json_of(&generated)["token"]
        .as_str()
        .expect("generate-root gave a token")
        .to_owned();
    secrets.push(generated);
    let identity = std::fs::read_to_string(&key_file).unwrap();
    secrets.push(identity.trim().to_owned());
    let export = tmp.path().join("audit.jsonl");
    call(root, &["audit", "export", "-o", export.to_str().unwrap()]);
    call(root, &["seal"]);
    drop(server);

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        (
            "server log".into(),
            log.lock().unwrap().clone().into_bytes(),
        ),
        ("error output".into(), errors.into_bytes()),
        ("audit export".into(), std::fs::read(&export).unwrap()),
    ];
    assert!(
        haystacks[0].1.len() > 1000,
        "the trace log is suspiciously short"
    );
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    // Every secret as text (its distinctive middle), and API-key and token secrets as raw bytes.
    let mut needles: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .map(|s| {
            (
                s.chars().take(12).collect::<String>() + "…",
                s.as_bytes()[5..s.len() - 8].to_vec(),
            )
        })
        .collect();
    for s in &secrets {
        for prefix in [Prefix::default(), Prefix::TOKEN] {
            if let Ok(k) = ApiKey::parse(s, &prefix) {
                needles.push((
                    format!("raw secret of {}…", &s[..12]),
                    k.secret().expose_bytes().to_vec(),
                ));
                assert_eq!(k.expose_secret_text().expose_secret(), s);
            }
        }
    }
    // One pass per haystack, looking up each byte before comparing (the data directory holds
    // megabytes of reserve zeros).
    let mut starts = [false; 256];
    for (_, needle) in &needles {
        starts[usize::from(needle[0])] = true;
    }
    for (where_, hay) in &haystacks {
        for i in (0..hay.len()).filter(|&i| starts[usize::from(hay[i])]) {
            for (what, needle) in &needles {
                assert!(!hay[i..].starts_with(needle), "{what} found in {where_}");
            }
        }
    }
}

/// A minimal HTTP/1.1 request with an optional bearer token and JSON body; (status, body).
/// Errors (the server was killed) come back as `None`.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// What the workers saw acknowledged for one key.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    text: String,
    revoked: bool,
    credits: Option<u64>,
    /// A rotation was sent but not answered (the server died): it may or may not have
    /// happened, so `text` may be the current secret, the previous one, or (after two such
    /// rotations) neither.
    uncertain: bool,
}

/// Crash consistency: the real server under a mixed load (create, verify with credits, rotate,
/// revoke) is killed with SIGKILL at random moments. After each restart every acknowledged
/// write is there, credits never went up, every record reads back whole, and the audit log
/// verifies. `KEYVAULT_CRASH_CYCLES` sets the number of kills (default 3; see BENCHMARKS.md for
/// the long run).
#[test]
fn acknowledged_writes_survive_sigkill_of_the_server_under_load() {
    use std::sync::{Arc, Mutex};
    let cycles: u32 = std::env::var("KEYVAULT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pass = write_secret(tmp.path(), "pass", "crash test passphrase\n");
    let out = keyvault()
        .args(["--json", "init", "--insecure-kdf", "--passphrase-file"])
        .arg(&pass)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let init = json_of(&String::from_utf8(out.stdout).unwrap());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let verifier =
        vault_core::audit::note::NoteVerifier::parse(init["public_key"].as_str().unwrap()).unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let keys: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut acknowledged_ops = 0u64;
    for cycle in 0..cycles {
        let server = serve(&[
            "--data-dir",
            data.to_str().unwrap(),
            "--unseal-passphrase-file",
            pass.to_str().unwrap(),
        ]);
        let addr = server.1.clone();
        check_after_restart(
            &addr,
            &root,
            &mut keys.lock().unwrap(),
            &verifier,
            acknowledged_ops,
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, root, keys, stop) = (
                    addr.clone(),
                    root.clone(),
                    Arc::clone(&keys),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    let mut acked = 0u64;
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        // Each worker owns the keys it made (index % 4 == w): one op in flight per key.
                        let mine: Vec<(usize, Acked)> = keys
                            .lock()
                            .unwrap()
                            .iter()
                            .cloned()
                            .enumerate()
                            .filter(|(n, k)| n % 4 == w && !k.revoked)
                            .collect();
                        let op = if mine.is_empty() { 0 } else { i % 5 };
                        let pick = mine.get((i as usize) % mine.len().max(1)).cloned();
                        match (op, pick) {
                            (0, _) => {
                                let body =
                                    format!("{{\"owner\":\"crash-{cycle}\",\"credits\":1000}}");
                                let Some((201, r)) =
                                    http(&addr, "POST", "/v1/keys", &root, Some(&body))
                                else {
                                    break;
                                };
                                let v = json_of(&r);
                                let mut keys = keys.lock().unwrap();
                                // Keep the worker-ownership rule: pad so the new key lands on one of ours.
                                while keys.len() % 4 != w {
                                    let filler = Acked {
                                        id: String::new(),
                                        text: String::new(),
                                        revoked: true,
                                        credits: None,
                                        uncertain: false,
                                    };
                                    keys.push(filler);
                                }
                                keys.push(Acked {
                                    id: v["key_id"].as_str().unwrap().into(),
                                    text: v["key"].as_str().unwrap().into(),
                                    revoked: false,
                                    credits: Some(1000),
                                    uncertain: false,
                                });
                            }
                            (1 | 2, Some((n, k))) if !k.uncertain => {
                                let body = format!("{{\"key\":\"{}\",\"cost\":1}}", k.text);
                                let Some((200, r)) =
                                    http(&addr, "POST", "/v1/keys/verify", &root, Some(&body))
                                else {
                                    break;
                                };
                                let v = json_of(&r);
                                assert_eq!(v["code"], "VALID", "{r}");
                                keys.lock().unwrap()[n].credits = v["credits_remaining"].as_u64();
                            }
                            (3, Some((n, k))) if !k.uncertain => {
                                let path = format!("/v1/keys/{}/rotate", k.id);
                                let Some((200, r)) = http(
                                    &addr,
                                    "POST",
                                    &path,
                                    &root,
                                    Some("{\"grace_seconds\":3600}"),
                                ) else {
                                    keys.lock().unwrap()[n].uncertain = true;
                                    break;
                                };
                                keys.lock().unwrap()[n].text =
                                    json_of(&r)["key"].as_str().unwrap().into();
                            }
                            (4, Some((n, k))) if n % 3 == 0 && !k.uncertain => {
                                let path = format!("/v1/keys/{}/revoke", k.id);
                                let Some((200, _)) = http(&addr, "POST", &path, &root, None) else {
                                    keys.lock().unwrap()[n].uncertain = true;
                                    break;
                                };
                                keys.lock().unwrap()[n].revoked = true;
                            }
                            _ => continue,
                        }
                        acked += 1;
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200 + random(600)));
        drop(server); // SIGKILL
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            acknowledged_ops += w.join().unwrap();
        }
    }
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    check_after_restart(
        &server.1,
        &root,
        &mut keys.lock().unwrap(),
        &verifier,
        acknowledged_ops,
    );
    let made = keys
        .lock()
        .unwrap()
        .iter()
        .filter(|k| !k.id.is_empty())
        .count();
    assert!(made > 0 && acknowledged_ops > 0, "the load did nothing");
    eprintln!(
        "crash consistency: {cycles} kills, {acknowledged_ops} acknowledged operations, {made} keys checked after each restart"
    );
}

fn check_after_restart(
    addr: &str,
    root: &str,
    keys: &mut [Acked],
    verifier: &vault_core::audit::note::NoteVerifier,
    acknowledged_ops: u64,
) {
    for k in keys.iter_mut().filter(|k| !k.id.is_empty()) {
        let (status, body) = http(addr, "GET", &format!("/v1/keys/{}", k.id), root, None).unwrap();
        assert_eq!(status, 200, "acknowledged key {} is missing: {body}", k.id);
        let info = json_of(&body);
        if k.revoked {
            assert_eq!(info["status"], "revoked", "an acknowledged revoke was lost");
            continue;
        }
        // Credits never go up: at most what the last acknowledged spend left.
        if let (Some(acked), Some(now)) = (k.credits, info["credits"].as_u64()) {
            assert!(
                now <= acked,
                "credits went up for {}: {acked} acknowledged, {now} after restart",
                k.id
            );
        }
        if k.uncertain && info["status"] == "revoked" {
            // An unanswered revoke that happened.
            k.revoked = true;
            k.uncertain = false;
            continue;
        }
        if k.uncertain {
            // Learn the key's secret again with an acknowledged rotation.
            let path = format!("/v1/keys/{}/rotate", k.id);
            let (status, r) =
                http(addr, "POST", &path, root, Some("{\"grace_seconds\":3600}")).unwrap();
            assert_eq!(status, 200, "{r}");
            k.text = json_of(&r)["key"].as_str().unwrap().into();
            k.uncertain = false;
        }
        // The last acknowledged secret still verifies (rotations keep an hour of grace).
        let body = format!("{{\"key\":\"{}\",\"cost\":0}}", k.text);
        let (_, r) = http(addr, "POST", "/v1/keys/verify", root, Some(&body)).unwrap();
        assert_eq!(
            json_of(&r)["code"],
            "VALID",
            "acknowledged secret of {} no longer verifies: {r}",
            k.id
        );
    }
    // Every stored record reads back whole.
    let (status, body) = http(addr, "GET", "/v1/keys?limit=1000", root, None).unwrap();
    assert_eq!(status, 200, "{body}");
    for k in json_of(&body)["keys"].as_array().unwrap() {
        let (status, body) = http(
            addr,
            "GET",
            &format!("/v1/keys/{}", k["key_id"].as_str().unwrap()),
            root,
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "a record does not read back: {body}");
    }
    // The audit log verifies and holds at least every acknowledged operation.
    let (status, export) = http(addr, "GET", "/v1/audit/export", root, None).unwrap();
    assert_eq!(status, 200);
    let export = dechunk(&export);
    let report =
        vault_core::audit::export::verify_export(export.as_bytes(), verifier, None, |_| {})
            .unwrap_or_else(|e| panic!("the audit log does not verify after a kill: {e}"));
    assert!(
        report.entries >= acknowledged_ops,
        "{} entries, {acknowledged_ops} acknowledged operations",
        report.entries
    );
}

/// Undoes HTTP/1.1 chunked transfer encoding.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[test]
fn serve_on_a_unix_socket_and_talk_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pass = write_secret(tmp.path(), "pass", "unix socket passphrase\n");
    let out = keyvault()
        .args(["--json", "init", "--insecure-kdf", "--passphrase-file"])
        .arg(&pass)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let root = json_of(&String::from_utf8(out.stdout).unwrap())["root_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let socket = tmp.path().join("kv.sock");
    let mut child = keyvault()
        .args(["serve", "--data-dir"])
        .arg(&data)
        .arg("--unix-socket")
        .arg(&socket)
        .arg("--unseal-passphrase-file")
        .arg(&pass)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("keyvault listening on unix://") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let server = Server(child, String::new());
    let addr = format!("unix://{}", socket.display());
    let status = keyvault()
        .env("KEYVAULT_ADDR", &addr)
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let created = keyvault()
        .env("KEYVAULT_ADDR", &addr)
        .env("KEYVAULT_TOKEN", &root)
        .args(["--json", "key", "create", "--owner", "unix"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    drop(server);
}

#[test]
fn serve_tls_and_talk_to_it_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = keyvault()
        .args([
            "--json",
            "init",
            "--shares",
            "2",
            "--threshold",
            "2",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let mut child = keyvault()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("keyvault listening on https://") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let _server = Server(child, addr.clone());
    let port = addr.rsplit_once(':').unwrap().1;
    let https = format!("https://localhost:{port}");
    // Sealed: exit 2, over TLS, trusting the self-signed certificate.
    let status = keyvault()
        .args(["status", "--addr", &https, "--ca-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // Without the CA: refused with a one-line error that says what to pass.
    let status = keyvault()
        .args(["status", "--addr", &https])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        status.status.code() == Some(1) && err.contains("--ca-cert"),
        "{err}"
    );
    // Another CA: the TLS handshake fails.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_pem = tmp.path().join("other.pem");
    std::fs::write(&other_pem, other.cert.pem()).unwrap();
    let status = keyvault()
        .args(["status", "--addr", &https, "--ca-cert"])
        .arg(&other_pem)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        status.status.code() == Some(1) && err.contains("TLS"),
        "{err}"
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = keyvault()
        .args(["status", "--addr", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(1));
}

#[test]
fn a_non_loopback_address_needs_tls_or_the_insecure_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keyvault()
        .args(["serve", "--listen", "10.1.2.3:8731", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("--tls-cert"),
        "{err}"
    );
    let out = keyvault()
        .args([
            "serve",
            "--listen",
            "10.1.2.3:8731",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && err.contains("nonexistent.pem")
            && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn backup_a_running_vault_then_restore_serve_unseal_and_verify_through_the_binary() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let public_key = init["public_key"].as_str().unwrap().to_owned();
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let addr = server.1.clone();
    let root = Some(root.as_str());
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "key",
            "create",
            "--owner",
            "alice",
            "--credits",
            "100",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let key = json_of(&stdout)["key"].as_str().unwrap().to_owned();
    let (code, _, _) = run(&addr, root, &["key", "verify", &key]);
    assert_eq!(code, 0);
    // An auditor keeps the checkpoint of an export from before the backup.
    let first = tmp.path().join("first.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", first.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let early = tmp.path().join("early-checkpoint.json");
    let checkpoint_line = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    std::fs::write(&early, checkpoint_line).unwrap();

    // Back up the running vault; a second run without --force refuses to overwrite it.
    let file = tmp.path().join("vault.backup");
    let (code, stdout, err) = run(
        &addr,
        root,
        &["--json", "operator", "backup", "-o", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let summary = json_of(&stdout);
    let bytes = std::fs::metadata(&file).unwrap();
    assert_eq!(summary["bytes"], bytes.len());
    assert_eq!(bytes.permissions().mode() & 0o777, 0o600);
    assert!(!tmp.path().join("vault.backup.tmp").exists());
    let (code, _, err) = run(
        &addr,
        root,
        &["operator", "backup", "-o", file.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--force") && err.lines().count() == 1, "{err}");
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "operator",
            "backup",
            "--force",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("wrote a backup of vault"), "{stdout}");
    let (code, _, err) = run(&addr, None, &["operator", "backup", "-o", "x.backup"]);
    assert_eq!(code, 1);
    assert!(err.contains("KEYVAULT_TOKEN"), "{err}");
    drop(server);

    // A truncated copy is refused and leaves no directory behind.
    let whole = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.backup");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let broken = tmp.path().join("broken");
    let out = keyvault()
        .args(["operator", "restore"])
        .arg(&cut)
        .arg("--data-dir")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("truncated") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!broken.exists());

    // Restore into a fresh directory, serve it, unseal it with the old passphrase.
    let restored = tmp.path().join("restored");
    let out = keyvault()
        .args(["--json", "operator", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(report["public_key"], public_key.as_str());
    assert_eq!(
        std::fs::metadata(&restored).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let again = keyvault()
        .args(["operator", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("not empty")
    );

    let server = serve(&["--data-dir", restored.to_str().unwrap()]);
    let addr = server.1.clone();
    let (code, _, err) = run(
        &addr,
        None,
        &["unseal", "--passphrase-file", pass.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = run(&addr, root, &["--json", "key", "verify", &key]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&stdout)["credits_remaining"], 98);

    // The restored log verifies with the key pinned at init and extends the earlier export.
    let export = tmp.path().join("after.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let out = keyvault()
        .args(["--json", "audit", "verify"])
        .arg(&export)
        .args(["--public-key", &public_key, "--checkpoint"])
        .arg(&early)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verified = json_of(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(verified["verified"], true);
    let extends = verified["extends"].as_u64().unwrap();
    // The earlier checkpoint in every form an auditor may hold it: the export it came with, the
    // signed note with or without its final newline, a line of checkpoints.jsonl.
    let note = json_of(&std::fs::read_to_string(&early).unwrap())["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let forms = [
        ("export.jsonl", std::fs::read_to_string(&first).unwrap()),
        ("note", note.clone()),
        ("note-no-newline", note.trim_end().to_owned()),
        (
            "line.jsonl",
            format!("{}\n", serde_json::json!({ "checkpoint": note })),
        ),
    ];
    for (name, text) in forms {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = keyvault()
            .args(["--json", "audit", "verify"])
            .arg(&export)
            .args(["--public-key", &public_key, "--checkpoint"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json_of(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(v["extends"], extends, "{name}");
    }
}

#[test]
fn key_usage_charts_a_keys_days_and_signals_and_the_rebuild_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let root = Some(root.as_str());
    let serve_unsealed = || {
        serve(&[
            "--data-dir",
            data.to_str().unwrap(),
            "--unseal-passphrase-file",
            pass.to_str().unwrap(),
        ])
    };
    let server = serve_unsealed();
    let addr = server.1.clone();
    let (_, stdout, _) = run(
        &addr,
        root,
        &["--json", "key", "create", "--owner", "cust-7"],
    );
    let created = json_of(&stdout);
    let (id, old) = (
        created["key_id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let (_, stdout, _) = run(&addr, root, &["--json", "key", "rotate", &id]);
    let new = json_of(&stdout)["key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(run(&addr, root, &["key", "verify", &new]).0, 0);
    }
    assert_eq!(run(&addr, root, &["key", "verify", &old]).0, 1);

    // The figures are folded a moment after the answers: wait for them.
    let usage = |addr: &str| {
        for _ in 0..100 {
            let (code, stdout, err) = run(addr, root, &["--json", "key", "usage", &id]);
            assert_eq!(code, 0, "{err}");
            let v = json_of(&stdout);
            if v["usage"]["totals"]["total"] == 4 {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the usage figures never reached 4 verifies");
    };
    let v = usage(&addr);
    assert_eq!(v["usage"]["totals"]["counts"]["VALID"], 3);
    assert_eq!(v["usage"]["totals"]["counts"]["NOT_FOUND"], 1);
    assert_eq!(v["usage"]["buckets"].as_array().unwrap().len(), 14);
    assert_eq!(v["signals"][0]["kind"], "wrong_secret");

    let (code, stdout, _) = run(&addr, root, &["key", "usage", &id, "--days", "3"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!(
            "key {id} of cust-7: 4 verifies in 3 days (3 valid)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains('█') && stdout.contains("(not_found 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("wrong_secret x1"), "{stdout}");
    assert!(!stdout.contains(&old[4..30]) && !stdout.contains(&new[4..30]));
    // The open signals of every key, and of one owner's.
    let (code, stdout, err) = run(&addr, root, &["signals"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(" open signal")
            && stdout.contains(&format!("key {id} of cust-7: wrong_secret x1")),
        "{stdout}"
    );
    let (code, stdout, _) = run(&addr, root, &["--json", "signals", "--owner", "cust-7"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&stdout)["signals"][0]["kind"], "wrong_secret");
    let (code, stdout, _) = run(&addr, root, &["signals", "--owner", "nobody"]);
    assert_eq!((code, stdout.trim()), (0, "no open signals"));
    let (code, _, err) = run(&addr, root, &["key", "usage", &id, "--days", "0"]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = run(&addr, root, &["key", "usage", "not-an-id"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Stopped (SIGKILL: nothing stored at close), rebuilt from the log, served again: the same.
    drop(server);
    let out = keyvault()
        .args(["--json", "operator", "usage-rebuild", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt = json_of(&String::from_utf8(out.stdout).unwrap());
    assert!(rebuilt["entries"].as_u64().unwrap() >= 6, "{rebuilt}");
    let server = serve_unsealed();
    let again = usage(&server.1);
    assert_eq!(again["usage"]["totals"], v["usage"]["totals"]);
    assert_eq!(again["signals"], v["signals"]);
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
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the witness exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("keyvault witness listening on http://") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
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
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /add-checkpoint HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (head[9..12].parse().unwrap(), content_type, body.to_owned())
}

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "lock" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `POST /v1/sys/unseal` with a passphrase; (status, body).
fn unseal_over_http(addr: &str, passphrase: &str) -> (u16, String) {
    let body = serde_json::json!({ "passphrase": passphrase }).to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/sys/unseal HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (response[9..12].parse().unwrap(), body)
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
    copy_dir(&data, &older);
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
    copy_dir(&older, &data);
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

/// `keyvault ARGS` against the server at `addr` with `stdin` piped in; the exit code, stdout and
/// stderr.
fn run_with_stdin(
    addr: &str,
    token: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut cmd = keyvault();
    cmd.env("KEYVAULT_ADDR", format!("http://{addr}"))
        .env_remove("KEYVAULT_TOKEN");
    if let Some(t) = token {
        cmd.env("KEYVAULT_TOKEN", t);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn rekey_and_generate_root_by_holders_each_in_their_own_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = keyvault()
        .args([
            "--json",
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = json_of(&String::from_utf8(out.stdout).unwrap());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let shares: Vec<String> = init["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let server = serve(&["--data-dir", data.to_str().unwrap()]);
    let addr = server.1.clone();
    for share in &shares[..3] {
        let (code, _, err) = run_with_stdin(&addr, None, &["unseal", "--share", "-"], share);
        assert_eq!(code, 0, "{err}");
    }

    // The initiator starts a rekey to 2 of 3, each new share to its holder's age key.
    let identities: Vec<age::x25519::Identity> =
        (0..3).map(|_| age::x25519::Identity::generate()).collect();
    let recipients: Vec<String> = identities
        .iter()
        .map(|i| i.to_public().to_string())
        .collect();
    let mut start = vec![
        "--json",
        "operator",
        "rekey",
        "--new-shares",
        "3",
        "--new-threshold",
        "2",
    ];
    for r in &recipients {
        start.extend(["--new-share-recipient", r.as_str()]);
    }
    let (code, started, err) = run(&addr, Some(&root), &start);
    assert_eq!(code, 0, "{err}");
    let started = json_of(&started);
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    let digest = started["digest"].as_str().unwrap().to_owned();

    // Three holders, each in their own process, each giving one share on stdin.
    let mut last = serde_json::Value::Null;
    for (i, share) in shares[2..5].iter().enumerate() {
        let args = [
            "--json", "operator", "rekey", "--nonce", &nonce, "--share", "-",
        ];
        let (code, answer, err) = run_with_stdin(&addr, Some(&root), &args, share);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&digest),
            "the holder is shown the digest: {err}"
        );
        assert!(!answer.contains("kvs1_") && !err.contains("kvs1_"));
        last = json_of(&answer);
        assert_eq!(last["digest"], digest.as_str());
        assert_eq!(last["progress"], i + 1);
    }
    assert_eq!(last["state"], "complete");
    let new_shares: Vec<String> = last["encrypted_shares"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&identities)
        .map(|(armored, id)| {
            let plain = age::decrypt(id, armored.as_str().unwrap().as_bytes()).unwrap();
            String::from_utf8(plain).unwrap()
        })
        .collect();
    assert!(new_shares.iter().all(|s| s.starts_with("kvs1_")));

    // A holder who expects another digest gives nothing.
    let (_, started, _) = run(
        &addr,
        Some(&root),
        &[
            "--json",
            "operator",
            "rekey",
            "--new-shares",
            "2",
            "--new-threshold",
            "2",
        ],
    );
    let other = json_of(&started)["nonce"].as_str().unwrap().to_owned();
    let (code, _, err) = run_with_stdin(
        &addr,
        Some(&root),
        &[
            "operator", "rekey", "--nonce", &other, "--digest", &digest, "--share", "-",
        ],
        &new_shares[0],
    );
    assert_eq!(code, 1);
    assert!(err.contains("digest"), "{err}");
    let (code, _, err) = run(
        &addr,
        Some(&root),
        &["operator", "rekey", "--nonce", &other, "--cancel"],
    );
    assert_eq!(code, 0, "{err}");

    // generate-root with no token anywhere: the initiator keeps its key in a file, the holders
    // give the new shares, the initiator decrypts.
    let key_file = tmp.path().join("gen-root.key");
    let (code, started, err) = run(
        &addr,
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let nonce = json_of(&started)["nonce"].as_str().unwrap().to_owned();
    let mut done = serde_json::Value::Null;
    for share in &new_shares[1..] {
        let args = [
            "--json",
            "operator",
            "generate-root",
            "--nonce",
            &nonce,
            "--share",
            "-",
        ];
        let (code, answer, err) = run_with_stdin(&addr, None, &args, share);
        assert_eq!(code, 0, "{err}");
        assert!(!answer.contains("kvt_"));
        done = json_of(&answer);
    }
    let encrypted = tmp.path().join("token.age");
    std::fs::write(&encrypted, done["encrypted_token"].as_str().unwrap()).unwrap();
    let (code, token, err) = run(
        &addr,
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--decrypt",
            encrypted.to_str().unwrap(),
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token = json_of(&token)["token"].as_str().unwrap().to_owned();
    let (code, _, err) = run(&addr, Some(&token), &["token", "list"]);
    assert_eq!(code, 0, "the generated token works: {err}");

    // Only the new shares unseal.
    let (code, _, err) = run(&addr, Some(&token), &["seal"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_with_stdin(&addr, None, &["unseal", "--share", "-"], &shares[0]);
    assert_eq!(code, 1);
    assert!(err.contains("another set of shares"), "{err}");
    for share in &new_shares[..2] {
        let (code, _, err) = run_with_stdin(&addr, None, &["unseal", "--share", "-"], share);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(get(&addr, "/v1/sys/health").0, 200);
}

/// An expired token is answered as exactly as any refused token, and says what to do.
#[test]
fn an_expired_token_is_refused_with_a_pinned_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let (code, out, err) = run(
        &server.1,
        Some(&root),
        &[
            "--json", "token", "create", "--role", "verifier", "--ttl", "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token = json_of(&out)["token"].as_str().unwrap().to_owned();
    // No injectable clock in the server yet: the token's one second passes for real.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, out, err) = run(&server.1, Some(&token), &["key", "verify", "pvk_x"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "error: missing or invalid vault token (set KEYVAULT_TOKEN or pass --token-file with a valid vault token)\n"
    );
    let (code, out, _) = run(&server.1, Some(&root), &["token", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains("verifier") && l.contains("expired")),
        "{out}"
    );
}

/// `operator rotate-audit-key`, then `audit verify` with the key printed at init follows the
/// rotation (and says so), and with the new key too; a filtered export as well.
#[test]
fn rotate_audit_key_then_audit_verify_follows_it_from_the_key_printed_at_init() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let pinned = init["public_key"].as_str().unwrap().to_owned();
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let addr = server.1.clone();
    let root = Some(root.as_str());
    let (code, _, err) = run(&addr, root, &["key", "create", "--owner", "alice"]);
    assert_eq!(code, 0, "{err}");

    let (code, stdout, err) = run(&addr, root, &["operator", "rotate-audit-key"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with("audit key rotated: generation 2"),
        "{stdout}"
    );
    let (code, stdout, err) = run(&addr, root, &["operator", "rotate-audit-key", "--json"]);
    assert_eq!(code, 0, "{err}");
    let answer = json_of(&stdout);
    assert_eq!(answer["generation"], 3);
    let newest = answer["public_key"].as_str().unwrap().to_owned();
    let seq = answer["seq"].as_u64().unwrap();

    for filter in [&[][..], &["--owner", "alice"][..]] {
        let export = tmp.path().join("audit.jsonl");
        let _ = std::fs::remove_file(&export);
        let mut args = vec!["audit", "export", "-o", export.to_str().unwrap()];
        args.extend_from_slice(filter);
        let (code, _, err) = run(&addr, root, &args);
        assert_eq!(code, 0, "{err}");
        for (key, followed) in [(&pinned, 2), (&newest, 0)] {
            let out = keyvault()
                .args(["audit", "verify"])
                .arg(&export)
                .args(["--public-key", key])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                stdout.matches("followed from the pinned key").count(),
                followed,
                "{stdout}"
            );
            if followed > 0 {
                assert!(
                    stdout.contains(&format!("the audit key was rotated at entry {seq}")),
                    "{stdout}"
                );
            }
        }
    }
}

/// `--addr`, `--token-file` and `--json` work before the command as after it.
#[test]
fn the_global_flags_work_in_any_position() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let token_file = write_secret(
        tmp.path(),
        "token",
        &format!("{}\n", init["root_token"].as_str().unwrap()),
    );
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let addr = format!("http://{}", server.1);
    let token_file = token_file.to_str().unwrap();
    for args in [
        vec![
            "--addr",
            &addr,
            "--token-file",
            token_file,
            "--json",
            "token",
            "list",
        ],
        vec![
            "token",
            "list",
            "--addr",
            &addr,
            "--json",
            "--token-file",
            token_file,
        ],
        vec![
            "--json",
            "token",
            "--addr",
            &addr,
            "list",
            "--token-file",
            token_file,
        ],
    ] {
        let out = keyvault()
            .env_remove("KEYVAULT_ADDR")
            .env_remove("KEYVAULT_TOKEN")
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json_of(&stdout)["tokens"][0]["role"], "admin", "{args:?}");
    }
    let out = keyvault()
        .env_remove("KEYVAULT_ADDR")
        .args(["--addr", &addr, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// `audit tail -n N` starts with the last N entries, then follows new ones.
#[test]
fn audit_tail_starts_with_the_last_entries_then_follows() {
    use std::sync::mpsc;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let server = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    for owner in ["a", "b", "c"] {
        let (code, _, err) = run(&server.1, Some(&root), &["key", "create", "--owner", owner]);
        assert_eq!(code, 0, "{err}");
    }
    let mut child = keyvault()
        .env("KEYVAULT_ADDR", format!("http://{}", server.1))
        .env("KEYVAULT_TOKEN", &root)
        .args(["audit", "tail", "-n", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(10)).expect("a line");
    let header = json_of(&next());
    let size = header["tree_size"].as_u64().unwrap();
    assert_eq!(header["first_seq"], size - 2, "{header}");
    assert!(next().starts_with("{\"checkpoint\""));
    let mut seqs = Vec::new();
    loop {
        let line = next();
        let v = json_of(&line);
        if let Some(end) = v.get("end") {
            assert_eq!(end["entries"], 2);
            break;
        }
        if let Some(seq) = v.get("seq") {
            seqs.push(seq.as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![size - 2, size - 1]);
    // Then new entries as they come.
    let (code, _, err) = run(&server.1, Some(&root), &["key", "create", "--owner", "d"]);
    assert_eq!(code, 0, "{err}");
    let mut seen_create = false;
    for _ in 0..20 {
        let line = next();
        if line.contains("\"event\":\"key.create\"") && line.contains("\"owner\":\"d\"") {
            seen_create = true;
            break;
        }
    }
    assert!(seen_create);
    let _ = child.kill();
    let _ = child.wait();
}
