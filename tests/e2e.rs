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
    // Wrong flags: one line, exit 1.
    for args in [vec!["init", "--bogus"], vec!["frobnicate"], vec!["serve"]] {
        let out = keyvault().args(&args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // Every command's help renders.
    for args in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["serve", "--help"],
    ] {
        let out = keyvault().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8(out.stdout).unwrap().contains("Usage"));
    }
}
