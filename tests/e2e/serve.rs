//! Making a vault and serving it: `init` with a passphrase or shares, `serve` over TCP, a Unix
//! socket or TLS (and the loopback rule without it), and `serve --dev`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{
    Server, get, http, init_passphrase_vault, init_vault, keyvault, listening, serve,
    serve_unsealed, shares_of, succeed, write_secret,
};

#[test]
fn init_with_a_passphrase_then_serve_unsealed_and_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pass = write_secret(tmp.path(), "pass", "a passphrase for the e2e test\n");
    let stdout = succeed(
        keyvault()
            .args(["init", "--insecure-kdf", "--data-dir"])
            .arg(&data)
            .arg("--passphrase-file")
            .arg(&pass),
    );
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
    let server = serve_unsealed(&data, &pass);
    assert_eq!(get(&server.1, "/v1/sys/health").0, 200);
}

#[test]
fn init_with_shares_prints_them_once_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, init) = init_vault(tmp.path(), &["--shares", "5", "--threshold", "3"]);
    let shares = shares_of(&init);
    assert_eq!(shares.len(), 5);
    assert!(shares.iter().all(|s| s.starts_with("kvs1_")));
}

#[test]
fn serve_on_a_unix_socket_and_talk_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
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
    listening(
        child.stderr.take().unwrap(),
        "keyvault listening on unix://",
        None,
    );
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
    let (data, _) = init_vault(tmp.path(), &["--shares", "2", "--threshold", "2"]);
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
    let addr = listening(
        child.stderr.take().unwrap(),
        "keyvault listening on https://",
        None,
    );
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

/// A `[storage]` table is checked when the config is read: a bad node id is named, and a
/// build without cluster support (the `etcd` feature) refuses a valid etcd table, in `serve`
/// and in `init`, saying how to get a build that has it, rather than ignoring it, which would
/// serve a one-host vault where a cluster node was asked for.
#[test]
fn serve_and_init_check_the_storage_table_and_a_build_without_etcd_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("node.toml");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let run = |command: &str, node_id: &str| {
        std::fs::write(
            &config,
            format!(
                "[storage]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n\
                 prefix = \"/kv/photos\"\nnode_id = \"{node_id}\"\n"
            ),
        )
        .unwrap();
        let mut cmd = keyvault();
        if command == "serve" {
            cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        } else {
            cmd.args(["init", "--insecure-kdf", "--passphrase-file"])
                .arg(&pass);
        }
        let out = cmd
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    for command in ["serve", "init"] {
        assert_eq!(
            run(command, "Web 1"),
            format!(
                "error: {}: storage.node_id must be 1 to 32 characters of a-z, 0-9 and '-' (got 5 \
                 characters, some not allowed)",
                config.display()
            )
        );
        #[cfg(not(feature = "etcd"))]
        assert_eq!(
            run(command, "web-1"),
            "error: storage.backend = \"etcd\" (a cluster node) needs a keyvault built with \
             cluster support: `cargo build --release --features etcd` (which needs protoc: \
             apt-get install protobuf-compiler); this build serves backend = \"sled\" only"
        );
    }
    assert!(!tmp.path().join("data").exists(), "nothing was created");
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
    let (status, response) = http(addr, "POST", &format!("/{path}"), &root, Some(data)).unwrap();
    assert_eq!(status, 200, "{response}");
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
