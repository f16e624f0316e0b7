//! The accept loop: HTTP/1.1 connections served with hyper until a shutdown future completes,
//! then in-flight requests drained.
//!
//! Not `axum::serve`, because that cannot cap the request head: hyper's default lets a head
//! grow to about 400 KiB and gives a client forever to send it. Here both are bounded by
//! [`Limits`](crate::Limits) (`header_bytes`, `header_read_timeout`).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tower::ServiceExt;

use crate::{AppState, Limits, app};

/// Where the server accepts connections: loopback TCP by default, TCP with TLS (for other
/// hosts), or a Unix socket (whose file mode, not a network boundary, decides who may connect).
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A TCP listener whose connections speak TLS (see [`tls_acceptor`]).
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
    /// A Unix-domain socket listener.
    Unix(UnixListener),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(l) => f.debug_tuple("Tcp").field(l).finish(),
            Listener::Tls(l, _) => f.debug_tuple("Tls").field(l).finish(),
            Listener::Unix(l) => f.debug_tuple("Unix").field(l).finish(),
        }
    }
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key (TLS 1.2 and 1.3, rustls
/// with the ring provider).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            bad(format!(
                "{}: not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(bad(format!("{}: no certificate in it", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(format!("{}: not a PEM private key: {e}", key.display())))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(format!(
                "the TLS certificate and key do not go together: {e}"
            ))
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Listener::Unix(l)
    }
}

/// An accepted connection and its TCP peer, if any.
enum Stream {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Tls(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        tokio_rustls::TlsAcceptor,
    ),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// Whether only this host's users can connect: a loopback address (not the unspecified
    /// one, which takes every interface), or a Unix socket.
    fn is_local(&self) -> bool {
        match self {
            Listener::Tcp(l) | Listener::Tls(l, _) => l
                .local_addr()
                .is_ok_and(|addr| addr.ip().to_canonical().is_loopback()),
            Listener::Unix(_) => true,
        }
    }

    async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // Responses are small and written whole: send them without Nagle's delay.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "setting TCP_NODELAY failed");
                }
                Ok(Stream::Tcp(stream, peer))
            }
            Listener::Tls(l, acceptor) => {
                let (stream, peer) = l.accept().await?;
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "setting TCP_NODELAY failed");
                }
                Ok(Stream::Tls(stream, peer, acceptor.clone()))
            }
            Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

/// Serves [`app`] on `listener` until `shutdown` completes, then stops accepting and waits for
/// the requests in flight to be answered (idle connections close at once).
pub async fn serve(
    listener: impl Into<Listener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = listener.into();
    let state = state
        .with_local_listener(listener.is_local())
        .with_tls(matches!(listener, Listener::Tls(..)));
    let limits = state.config().limits;
    let disk_watch = tokio::spawn(crate::disk::watch(
        state.vault().clone(),
        state.disk().clone(),
        state.config().clone(),
    ));
    let summaries = tokio::spawn(crate::throttle::summarize(
        state.vault().clone(),
        state.throttle().clone(),
        state.refused_tokens().clone(),
    ));
    let closing = state.clone();
    let summarizing = state.clone();
    let stopping = async move {
        shutdown.await;
        disk_watch.abort();
        // Long-lived answers (a followed export) end now, so that the drain can finish.
        closing.close();
    };
    serve_router(listener, app(state), limits, stopping).await?;
    // Every refused verify is in the log before the vault is sealed.
    summaries.abort();
    crate::throttle::flush(
        summarizing.vault(),
        summarizing.throttle(),
        summarizing.refused_tokens(),
        true,
    )
    .await;
    Ok(())
}

/// Serves any `router` on `listener` (the witness's, say) with the connection limits of
/// `limits` (`header_bytes`, `header_read_timeout`; `request_timeout` bounds the drain) until
/// `shutdown` completes, then stops accepting and waits for the requests in flight to be
/// answered. Each request carries its TCP peer as [`ConnectInfo`].
pub async fn serve_router(
    listener: impl Into<Listener>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = listener.into();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.header_bytes);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: wait for some to close rather than spin.
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let peer = match &stream {
            Stream::Tcp(_, peer) | Stream::Tls(_, peer, _) => Some(*peer),
            Stream::Unix(_) => None,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::http::Request<Incoming>| {
                if let Some(peer) = peer {
                    req.extensions_mut().insert(ConnectInfo(peer));
                }
                req
            },
        ));
        match stream {
            Stream::Tcp(stream, _) => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(finish(conn));
            }
            Stream::Unix(stream) => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(finish(conn));
            }
            Stream::Tls(stream, _, acceptor) => {
                // The handshake runs in the connection's own task, bounded like a slow head,
                // so a client that never finishes it holds up nobody.
                let http = http.clone();
                let watcher = graceful.watcher();
                let deadline = limits.header_read_timeout;
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    finish(watcher.watch(http.serve_connection(TokioIo::new(tls), service))).await;
                });
            }
        }
    }

    drop(listener);
    // Requests in flight get the request timeout (and a little more) to finish; past that the
    // remaining connections are dropped rather than holding the process.
    let drain = limits.request_timeout + Duration::from_secs(5);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}: closing them");
    }
    Ok(())
}

/// Drives one connection to its end. Client resets, a head over the limit, a slow head: the
/// client's problem, not ours.
async fn finish<E: std::fmt::Display>(conn: impl Future<Output = Result<(), E>>) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
