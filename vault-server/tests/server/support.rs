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
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::{UnsealMethod, Vault};
use vault_server::{AppState, ServerConfig};

/// The passphrase of [`passphrase_vault`].
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A vault on disk; the directory lives as long as this does.
pub struct TestVault {
    pub vault: Vault,
    /// The share texts (empty for a passphrase vault).
    pub shares: Vec<String>,
    _dir: TempDir,
}

/// A sealed 2-of-3 shares vault.
pub fn shares_vault() -> TestVault {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (vault, issued) = Vault::init(
        dir.path(),
        &UnsealMethod::Shares {
            threshold: 2,
            shares: 3,
        },
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
        _dir: dir,
    }
}

/// A sealed vault unsealed by [`PASSPHRASE`], with test-grade Argon2.
pub fn passphrase_vault() -> TestVault {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = Vault::init(
        dir.path(),
        &UnsealMethod::Passphrase {
            passphrase: Passphrase::new(PASSPHRASE),
            params: KdfParams::INSECURE_FAST,
        },
        &Prefix::default(),
    )
    .unwrap();
    vault.seal(&vault_core::Context::embedded()).unwrap();
    TestVault {
        vault,
        shares: Vec::new(),
        _dir: dir,
    }
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

/// The app over `vault` with `config`.
pub fn app_with(vault: &TestVault, config: ServerConfig) -> Router {
    vault_server::app(AppState::new(vault.vault.clone()).with_config(config))
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
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
