//! The CLI's HTTP client: one HTTP/1.1 request per connection, over TCP or a Unix socket, with
//! the vault token as a bearer token. Errors are turned into one line that says what to do.
//! Also what every command builds its requests from: the client of the global flags, query
//! strings, and ids checked before they go into a path.

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

use crate::cli::ClientArgs;
use crate::secret_input::{looks_secret, read_secret_file};

/// A client from the common flags, with the token from --token-file, --token or KEYVAULT_TOKEN.
/// A token holds no whitespace, so what surrounds it (the newline `echo` or an editor adds to a
/// file or a variable) is dropped.
pub fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    let token = match (&args.token_file, &args.token) {
        (Some(file), _) => Some(SecretString::from(read_secret_file(file)?.trim())),
        (None, Some(token)) => {
            eprintln!(
                "warning: a token on the command line is visible in `ps` and shell history; prefer --token-file or KEYVAULT_TOKEN"
            );
            Some(SecretString::from(token.trim()))
        }
        (None, None) => std::env::var("KEYVAULT_TOKEN")
            .ok()
            .map(zeroize::Zeroizing::new)
            .filter(|t| !t.trim().is_empty())
            .map(|t| SecretString::from(t.trim())),
    };
    Client::new(Addr::parse(&args.addr)?, token, args.ca_cert.as_deref())
}

/// `?a=b&c=d` from the pairs that are set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("?{}", q.finish())
    } else {
        String::new()
    }
}

/// `id` if it is a key or token id (24 hex digits), else an error that never shows a secret
/// typed in its place.
pub fn check_id(id: &str) -> anyhow::Result<&str> {
    if looks_secret(id) {
        bail!(
            "that is a key, token or share, not an id (24 hex digits); it is not shown here. Give \
             the id (`keyvault key list`, `keyvault token list`)"
        );
    }
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{id}` is not a key or token id (24 hex digits)");
    }
    Ok(id)
}

/// Where the vault listens.
#[derive(Debug, Clone)]
pub enum Addr {
    /// `http://host:port`.
    Tcp { authority: String },
    /// `https://host:port`.
    Tls { authority: String, host: String },
    /// `unix:///path/to.sock`.
    Unix(PathBuf),
}

impl Addr {
    /// Parses `http://host:port` or `unix:///path`.
    pub fn parse(text: &str) -> anyhow::Result<Addr> {
        if let Some(path) = text.strip_prefix("unix://") {
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = match text.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix("http://").unwrap_or(text)),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("--addr {text}: expected http://HOST:PORT, https://HOST:PORT or unix:///PATH");
        }
        if !tls {
            return Ok(Addr::Tcp {
                authority: authority.to_owned(),
            });
        }
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => authority,
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Addr::Tls {
            authority: authority.to_owned(),
            host,
        })
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp { authority } => write!(f, "http://{authority}"),
            Addr::Tls { authority, .. } => write!(f, "https://{authority}"),
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
pub struct Client {
    addr: Addr,
    token: Option<SecretString>,
    tls: Option<tokio_rustls::TlsConnector>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `addr`, sending `token` when set; for https, trusting `ca_cert`.
    pub fn new(
        addr: Addr,
        token: Option<SecretString>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let tls = match (&addr, ca_cert) {
            (Addr::Tls { .. }, Some(ca)) => Some(tls_connector(ca)?),
            (Addr::Tls { .. }, None) => bail!(
                "an https address needs the CA that signed the vault's certificate: pass \
                 --ca-cert FILE or set KEYVAULT_CACERT"
            ),
            _ => None,
        };
        Ok(Client {
            addr,
            token,
            tls,
            runtime,
        })
    }

    /// A client of another server of the same vault (a cluster node) at `addr`, sending the
    /// same token; for https, trusting `ca_cert`.
    pub fn at(&self, addr: Addr, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Client> {
        Client::new(addr, self.token.clone(), ca_cert)
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
        sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.stream_with_headers(path, |_| {}, sink)
    }

    /// [`Client::stream`], handing the headers of a successful answer to `headers` first.
    pub fn stream_with_headers(
        &self,
        path: &str,
        headers: impl FnOnce(&hyper::HeaderMap),
        mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            let response = self.request("GET", path, None, &[]).await?;
            let status = response.status().as_u16();
            if status < 300 {
                headers(response.headers());
            }
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
            Addr::Tcp { authority } | Addr::Tls { authority, .. } => {
                builder.header(HOST, authority.as_str())
            }
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
            Addr::Tls { authority, host } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| anyhow!("--addr: {host} is not a valid TLS server name: {e}"))?;
                // `new` made a connector for every https address.
                let connector = self.tls.as_ref().context("no TLS connector")?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| anyhow!("TLS with the vault at {} failed: {e}", self.addr))?;
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

/// A TLS connector that trusts the certificates in the PEM file `ca`.
fn tls_connector(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("--ca-cert {}: not a PEM certificate: {e}", ca.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| anyhow!("--ca-cert {}: {e}", ca.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
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
        assert!(
            matches!(Addr::parse("https://vault.example:8443").unwrap(), Addr::Tls { host, .. } if host == "vault.example")
        );
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
