//! Arbitrary requests (method, path, content type, body, token or not) to the real router:
//! never a 500, never a panic, and every error answer is `{"error":{"code","message"}}` (or, for
//! forward-auth, the refused verdict).
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use tower::ServiceExt;
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::{UnsealMethod, Vault};

const PATHS: &[&str] = &[
    "/v1/keys/verify", "/v1/keys", "/v1/keys/import", "/v1/keys/0123456789abcdef01234567", "/v1/keys/0123456789abcdef01234567/rotate",
    "/v1/keys/0123456789abcdef01234567/revoke", "/v1/keys/revoke?owner=x", "/v1/keys/0123456789abcdef01234567/reveal",
    "/v1/auth", "/v1/auth/x/y", "/v1/sys/unseal", "/v1/sys/seal-status", "/v1/sys/tokens", "/v1/sys/rotate",
    "/v1/sys/rekey", "/v1/sys/generate-root", "/v1/audit/digest", "/v1/audit/proof?index=1&size=2",
];
const METHODS: &[&str] = &["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"];

#[derive(Debug, Arbitrary)]
struct Input {
    method: u8,
    path: u8,
    query: Option<String>,
    json: bool,
    token: bool,
    body: Vec<u8>,
}

struct Fixture {
    _tmp: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let method = UnsealMethod::Passphrase { passphrase: Passphrase::new("fuzzing passphrase"), params: KdfParams::INSECURE_FAST };
        let (vault, issued) = Vault::init(&tmp.path().join("v"), &method, &Prefix::default()).expect("init");
        let token = issued.root_token.expect("a root token").expose_secret_text().expose_secret().to_owned();
        let mut config = vault_server::ServerConfig::default();
        config.unseal_failure_delay = std::time::Duration::ZERO;
        let app = vault_server::app(vault_server::AppState::new(vault).with_config(config));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Fixture { _tmp: tmp, runtime, app, token }
    })
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let mut uri = PATHS[usize::from(input.path) % PATHS.len()].to_owned();
    if let Some(q) = input.query.filter(|q| q.bytes().all(|b| b.is_ascii_graphic() && b != b'#')) {
        uri.push(if uri.contains('?') { '&' } else { '?' });
        uri.push_str(&q);
    }
    let mut req = Request::builder().method(METHODS[usize::from(input.method) % METHODS.len()]).uri(uri);
    if input.json {
        req = req.header("content-type", "application/json");
    }
    if input.token {
        req = req.header("authorization", format!("Bearer {}", f.token));
    }
    let head = req.method_ref().is_some_and(|m| m == "HEAD");
    let Ok(req) = req.body(Body::from(input.body)) else { return };
    f.runtime.block_on(async {
        let response = f.app.clone().oneshot(req).await.expect("the router answers");
        let status = response.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        // A HEAD answer has no body, by HTTP's rules.
        if !head && (status.is_client_error() || status.is_server_error()) {
            let bytes = response.into_body().collect().await.expect("a body").to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error body");
            let error_body = v["error"]["code"].is_string() && v["error"]["message"].is_string();
            // Forward-auth refuses a key with its verdict (the code is also in a header).
            let verdict = v["valid"] == false && v["code"].is_string();
            assert!(error_body || verdict, "{v}");
        }
    });
});
