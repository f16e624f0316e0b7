//! The CLI's HTTP client: one HTTP/1.1 request per connection, over TCP or a Unix socket, with
//! the vault token as a bearer token. Errors are turned into one line that says what to do.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Where the vault listens.
#[derive(Debug, Clone)]
pub enum Addr {
    /// `http://host:port`.
    Tcp { authority: String },
    /// `unix:///path/to.sock`.
    Unix(PathBuf),
}

impl Addr {
    /// Parses `http://host:port` or `unix:///path`.
    pub fn parse(text: &str) -> anyhow::Result<Addr> {
        if let Some(path) = text.strip_prefix("unix://") {
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if text.starts_with("https://") {
            bail!(
                "--addr {text}: https is not supported by this client; use a loopback http:// address or a unix:// socket"
            );
        }
        let authority = text
            .strip_prefix("http://")
            .unwrap_or(text)
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("--addr {text}: expected http://HOST:PORT or unix:///PATH");
        }
        Ok(Addr::Tcp {
            authority: authority.to_owned(),
        })
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp { authority } => write!(f, "http://{authority}"),
            Addr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .context("the vault answered with something that is not JSON")
    }
}

/// A client of one vault.
#[derive(Debug)]
pub struct Client {
    addr: Addr,
    token: Option<SecretString>,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client of `addr`, sending `token` when set.
    pub fn new(addr: Addr, token: Option<SecretString>) -> anyhow::Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Client {
            addr,
            token,
            runtime,
        })
    }

    /// Sends a request and returns the answer if it is a success, else a one-line error that
    /// says what to do.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let response = self.send(method, path, body, &[])?;
        check(&response)?;
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        response.json()
    }

    /// Sends a request and returns the answer whatever its status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        self.runtime.block_on(async {
            let response = self.request(method, path, body, headers).await?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow!("reading the vault's answer: {e}"))?
                .to_bytes();
            Ok(Response { status, body })
        })
    }

    /// Sends a GET and hands the body to `sink` chunk by chunk as it arrives (exports, tail).
    pub fn stream(
        &self,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            let response = self.request("GET", path, None, &[]).await?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            if status >= 300 {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| anyhow!("reading the vault's answer: {e}"))?
                    .to_bytes();
                return check(&Response {
                    status,
                    body: bytes,
                });
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| anyhow!("the vault's answer broke off: {e}"))?;
                if let Some(data) = frame.data_ref() {
                    sink(data)?;
                }
            }
            Ok(())
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let mut builder = Request::builder().method(method).uri(path);
        builder = match &self.addr {
            Addr::Tcp { authority } => builder.header(HOST, authority.as_str()),
            Addr::Unix(_) => builder.header(HOST, "localhost"),
        };
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let bytes = match body {
            Some(v) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(bytes))
            .context("building the request")?;
        let unreachable = |e: std::io::Error| {
            anyhow!(
                "cannot reach the vault at {}: {e} (is `keyvault serve` running? set --addr or KEYVAULT_ADDR)",
                self.addr
            )
        };
        macro_rules! send_over {
            ($stream:expr) => {{
                let (mut sender, conn) = http1::handshake(TokioIo::new($stream))
                    .await
                    .map_err(|e| anyhow!("talking to the vault at {}: {e}", self.addr))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| anyhow!("the vault at {} did not answer: {e}", self.addr))
            }};
        }
        match &self.addr {
            Addr::Tcp { authority } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                send_over!(stream)
            }
            Addr::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(unreachable)?;
                send_over!(stream)
            }
        }
    }
}

/// Turns an error answer into one line that says what to do.
pub fn check(response: &Response) -> anyhow::Result<()> {
    if response.status < 300 {
        return Ok(());
    }
    let (code, message) = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_owned(),
                e.get("message")?.as_str()?.to_owned(),
            ))
        })
        .unwrap_or_else(|| {
            (
                "error".into(),
                format!("the vault answered HTTP {}", response.status),
            )
        });
    match (response.status, code.as_str()) {
        (503, "sealed") => bail!("the vault is sealed: run `keyvault unseal`"),
        (401, _) => {
            bail!("{message} (set KEYVAULT_TOKEN or pass --token-file with a valid vault token)")
        }
        (403, _) => bail!("not allowed: {message}"),
        _ => bail!("{message} ({code}, HTTP {})", response.status),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(
            matches!(Addr::parse("http://127.0.0.1:8731").unwrap(), Addr::Tcp { authority } if authority == "127.0.0.1:8731")
        );
        assert!(matches!(
            Addr::parse("127.0.0.1:1/").unwrap(),
            Addr::Tcp { .. }
        ));
        assert!(
            matches!(Addr::parse("unix:///run/kv.sock").unwrap(), Addr::Unix(p) if p == std::path::Path::new("/run/kv.sock"))
        );
        assert!(Addr::parse("https://x").is_err());
        assert!(Addr::parse("http://x/y").is_err());
    }

    #[test]
    fn errors_say_what_to_do() {
        let sealed = Response {
            status: 503,
            body: Bytes::from_static(
                br#"{"error":{"code":"sealed","message":"the vault is sealed"}}"#,
            ),
        };
        assert_eq!(
            check(&sealed).unwrap_err().to_string(),
            "the vault is sealed: run `keyvault unseal`"
        );
        let odd = Response {
            status: 502,
            body: Bytes::from_static(b"<html>"),
        };
        assert!(check(&odd).unwrap_err().to_string().contains("HTTP 502"));
    }
}
