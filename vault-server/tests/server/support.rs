//! Shared helpers: vaults with cheap Argon2, requests through `oneshot`, a real server on port 0,
//! and a global log capture (so every test's log lines can be searched for secrets).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use vault_core::apikey::Prefix;
use vault_core::clock::Clock;
use vault_core::kdf::Passphrase;
use vault_core::testing::passphrase_method;
use vault_core::{UnsealMethod, Vault, VaultOptions};
use vault_server::{AppState, ServerConfig};

/// The passphrase of [`passphrase_vault`].
pub use vault_core::testing::PASSPHRASE;

/// A vault on disk; the directory lives as long as this does.
pub struct TestVault {
    pub vault: Vault,
    /// The share texts (empty for a passphrase vault).
    pub shares: Vec<String>,
    /// The root `admin` token made at init.
    pub root_token: String,
    /// The audit public key printed at init (`name+hash+base64`).
    pub audit_public_key: String,
    _dir: TempDir,
}

/// A sealed 2-of-3 shares vault.
pub fn shares_vault() -> TestVault {
    shares_vault_of(2, 3)
}

/// A sealed `threshold`-of-`shares` shares vault.
pub fn shares_vault_of(threshold: u8, shares: u8) -> TestVault {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (vault, issued) = Vault::init(
        dir.path(),
        &UnsealMethod::Shares { threshold, shares },
        &Prefix::default(),
    )
    .unwrap();
    vault.seal(&vault_core::Context::embedded()).unwrap();
    let shares = issued
        .shares
        .iter()
        .map(|s| s.expose_text().expose_secret().to_owned())
        .collect();
    TestVault {
        vault,
        shares,
        root_token: root_token(&issued),
        audit_public_key: issued.audit_public_key,
        _dir: dir,
    }
}

/// A sealed vault unsealed by [`PASSPHRASE`], with test-grade Argon2.
pub fn passphrase_vault() -> TestVault {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (vault, issued) = Vault::init(
        dir.path(),
        &passphrase_method(PASSPHRASE),
        &Prefix::default(),
    )
    .unwrap();
    vault.seal(&vault_core::Context::embedded()).unwrap();
    TestVault {
        vault,
        shares: Vec::new(),
        root_token: root_token(&issued),
        audit_public_key: issued.audit_public_key,
        _dir: dir,
    }
}

/// A [`passphrase_vault`] opened on `clock`, sealed: a test moves its time with
/// [`Clock::advance`] instead of sleeping.
pub fn passphrase_vault_on(clock: Clock) -> TestVault {
    passphrase_vault_with(VaultOptions {
        clock,
        ..VaultOptions::default()
    })
}

/// A [`passphrase_vault`] opened again with `options`, sealed.
pub fn passphrase_vault_with(options: VaultOptions) -> TestVault {
    let TestVault {
        vault,
        shares,
        root_token,
        audit_public_key,
        _dir,
    } = passphrase_vault();
    // Init opens the vault with the default options: its directory is opened again.
    let path = vault.dir().to_path_buf();
    drop(vault);
    TestVault {
        vault: Vault::open_with(&path, &options).unwrap(),
        shares,
        root_token,
        audit_public_key,
        _dir,
    }
}

fn root_token(issued: &vault_core::Issued) -> String {
    let token = issued.root_token.as_ref().expect("init makes a root token");
    token.expose_secret_text().expose_secret().to_owned()
}

impl TestVault {
    /// Unseals the vault directly (not over HTTP), with the passphrase or the first shares.
    pub fn unseal(&self) {
        let ctx = vault_core::Context::embedded();
        if self.shares.is_empty() {
            self.vault
                .unseal_passphrase(&ctx, &Passphrase::new(PASSPHRASE))
                .unwrap();
        } else {
            for share in &self.shares {
                let share = vault_core::shamir::Share::parse(share).unwrap();
                if !self.vault.submit_share(&ctx, share).unwrap().sealed {
                    break;
                }
            }
        }
        assert!(!self.vault.is_sealed());
    }

    /// Drops this handle of the vault but keeps its directory (to see when every other handle
    /// is gone: the vault then opens again).
    pub fn into_dir(self) -> TempDir {
        self._dir
    }

    /// A new token of `role`, made directly by the vault; its text.
    pub fn token(&self, role: vault_core::tokens::Role) -> String {
        let issued = self
            .vault
            .create_token(&vault_core::Context::embedded(), None, role, "test", None)
            .unwrap();
        issued.token.expose_secret_text().expose_secret().to_owned()
    }
}

/// `method uri` with `Authorization: Bearer token`, and a JSON body if given.
pub fn with_token(method: Method, uri: &str, token: &str, body: Option<&Value>) -> Request<Body> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    match body {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    }
}

/// Checks the refusals every JSON-body route shares, each a JSON error (never a 422 or a
/// 500): not JSON, JSON of the wrong shape, an unknown field, no or the wrong content type, a
/// body over the limit.
pub async fn assert_json_refusals(app: &Router, method: Method, uri: &str, token: &str) {
    let send = |content_type: Option<&'static str>, body: Vec<u8>| {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        req.body(Body::from(body)).unwrap()
    };
    let json = Some("application/json");
    for body in [
        &b"{\"a\": "[..],
        b"",
        b"[]",
        b"\"text\"",
        b"{} {}",
        b"\xff{}",
    ] {
        let r = call(app, send(json, body.to_vec())).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    let r = call(app, send(json, br#"{"surely_not_a_field": 1}"#.to_vec())).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        m.contains("unknown field `surely_not_a_field`"),
        "{uri}: {m}"
    );
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = call(app, send(content_type, b"{}".to_vec())).await;
        r.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    let huge = format!("{{\"x\": \"{}\"}}", "a".repeat(100 * 1024)).into_bytes();
    let r = call(app, send(json, huge)).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

/// Defaults, with a short unseal failure delay.
pub fn config() -> ServerConfig {
    ServerConfig {
        unseal_failure_delay: Duration::from_millis(20),
        ..ServerConfig::default()
    }
}

/// The app over `vault` with [`config`].
pub fn app(vault: &TestVault) -> Router {
    app_with(vault, config())
}

/// The app over `vault` with `config`, as served on a loopback address.
pub fn app_with(vault: &TestVault, config: ServerConfig) -> Router {
    vault_server::app(
        AppState::new(vault.vault.clone())
            .with_config(config)
            .with_local_listener(true),
    )
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Asserts the status, with the body in the message when it is another.
    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts an error answer: the status, `application/json`, `{"error": {"code", "message"}}`
    /// with the given code and a non-empty message, nothing else. Returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        let body = self.json();
        let object = body.as_object().unwrap();
        assert_eq!(object.len(), 1, "{body}");
        let error = body["error"].as_object().unwrap();
        assert_eq!(error.len(), 2, "{body}");
        assert_eq!(error["code"], code, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(!message.is_empty());
        message.to_owned()
    }
}

/// Sends `req` through `app` with `oneshot`.
pub async fn call(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET uri`.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// `POST uri` with a JSON body.
pub fn post_json(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

/// `POST /v1/sys/unseal` with `body`.
pub fn unseal(body: &Value) -> Request<Body> {
    post_json("/v1/sys/unseal", body.to_string())
}

/// A server on 127.0.0.1, port 0.
pub struct Server {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts `serve` over `vault` with `config`.
    pub async fn start(vault: &TestVault, config: ServerConfig) -> Server {
        capture_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = AppState::new(vault.vault.clone()).with_config(config);
        let task = tokio::spawn(vault_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    /// Signals shutdown and waits for `serve` to return (within 5 s).
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve drains and returns")
            .unwrap()
            .unwrap();
    }

    /// Sends one request on a fresh connection with hyper's client.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = sender.send_request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Everything logged so far, by every test in this binary, at every level.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Installs the global TRACE-level subscriber that writes into [`logs`], once.
pub fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
