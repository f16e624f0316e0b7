//! What the end-to-end tests share: the built binary with a clean environment, vaults made
//! with `keyvault init`, servers started on a free port (killed on drop), the CLI run against
//! them, and a minimal HTTP/1.1 client for what the CLI does not send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The built `keyvault`, with no data directory from the environment and quiet logs.
pub fn keyvault() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyvault"));
    cmd.env_remove("KEYVAULT_DATA_DIR")
        .env("KEYVAULT_LOG", "warn");
    cmd
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The JSON of a command's output, or a panic that shows the text.
pub fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs a command that must succeed (else its stderr is the failure) and returns its stdout.
pub fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `keyvault --json init ARGS --data-dir DIR/data`, which must succeed; returns the data
/// directory and what init printed.
pub fn init_vault(dir: &Path, args: &[&str]) -> (PathBuf, Value) {
    let data = dir.join("data");
    let stdout = succeed(
        keyvault()
            .args(["--json", "init"])
            .args(args)
            .arg("--data-dir")
            .arg(&data),
    );
    let init = json_of(&stdout);
    (data, init)
}

/// `keyvault init` of a passphrase vault (test-grade Argon2) in `DIR/data`; returns the data
/// directory, the passphrase file and what `init --json` printed.
pub fn init_passphrase_vault(dir: &Path) -> (PathBuf, PathBuf, Value) {
    let pass = write_secret(dir, "pass", "a passphrase for the e2e tests\n");
    let (data, init) = init_vault(
        dir,
        &[
            "--insecure-kdf",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    (data, pass, init)
}

/// The unseal shares `init --json` printed.
pub fn shares_of(init: &Value) -> Vec<String> {
    init["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A server child killed on drop, and its address (`HOST:PORT`, empty for a Unix socket).
pub struct Server(pub Child, pub String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's standard error up to the line starting with `prefix` and returns the rest
/// of that line (the address it listens on); later lines are read on a thread so that the
/// child never blocks on a full pipe, and appended to `log` when one is given.
pub fn listening(stderr: ChildStderr, prefix: &str, log: Option<Arc<Mutex<String>>>) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let rest = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(log) = &log {
            log.lock().unwrap().push_str(&line);
        }
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_owned();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(log) = &log {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    rest
}

/// `keyvault serve --listen 127.0.0.1:0 ARGS`, once it listens.
pub fn serve(args: &[&str]) -> Server {
    let mut child = keyvault()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(
        child.stderr.take().unwrap(),
        "keyvault listening on http://",
        None,
    );
    Server(child, addr)
}

/// A server over the vault in `data`, unsealed at start with the passphrase in `pass`.
pub fn serve_unsealed(data: &Path, pass: &Path) -> Server {
    serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--unseal-passphrase-file",
        pass.to_str().unwrap(),
    ])
}

/// A server at trace level whose every stderr line is kept.
pub fn serve_logged(args: &[&str]) -> (Server, Arc<Mutex<String>>) {
    let mut child = keyvault()
        .env("KEYVAULT_LOG", "trace")
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let addr = listening(
        child.stderr.take().unwrap(),
        "keyvault listening on http://",
        Some(Arc::clone(&log)),
    );
    (Server(child, addr), log)
}

/// `keyvault` aimed at the server at `addr`, with `token` as KEYVAULT_TOKEN or none at all.
pub fn against(addr: &str, token: Option<&str>) -> Command {
    let mut cmd = keyvault();
    cmd.env("KEYVAULT_ADDR", format!("http://{addr}"))
        .env_remove("KEYVAULT_TOKEN");
    if let Some(t) = token {
        cmd.env("KEYVAULT_TOKEN", t);
    }
    cmd
}

/// The exit code (-1 for a signal), stdout and stderr of a finished command.
fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs `keyvault` with the server's address and a token; returns (exit code, stdout, stderr).
pub fn run(addr: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    outcome(
        against(addr, token)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    )
}

/// `keyvault ARGS` against the server at `addr` with `stdin` piped in; the exit code, stdout and
/// stderr.
pub fn run_with_stdin(
    addr: &str,
    token: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut child = against(addr, token)
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
    outcome(child.wait_with_output().unwrap())
}

/// An HTTP answer: status, head (status line and headers) and body.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request on a new connection, with `headers` and a body (a Content-Length
/// always). `None` when the connection fails or the answer is cut short (the server was
/// killed), or takes more than 10 s.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// A GET without a token; the status code and the body.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let answer = exchange(addr, "GET", path, &[], "").expect("an answer");
    (answer.status, answer.body)
}

/// A request with a bearer token and an optional JSON body; (status, body), `None` as for
/// `exchange`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    exchange(addr, method, path, &headers, body.unwrap_or("")).map(|a| (a.status, a.body))
}
