//! Running the vault's HTTP server on an endpoint (TCP, TLS or a Unix socket) until ctrl-c or
//! SIGTERM, then sealing it: shared by `serve` and `serve --dev`; `witness serve` waits for the
//! same signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use vault_core::{Actor, Vault};

/// The context of what the CLI does to a vault it opened itself: the operator's.
pub fn operator_ctx() -> vault_core::Context {
    vault_core::Context::new(Actor::Operator)
}

/// Where to listen.
pub struct Endpoint {
    /// TCP address (unless a Unix socket is given).
    pub listen: SocketAddr,
    /// A Unix socket instead of TCP.
    pub unix_socket: Option<PathBuf>,
    /// TLS on the TCP address.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `vault` until ctrl-c or SIGTERM; `ready` runs once the listener is bound, with the
/// base URL to show (`http://127.0.0.1:8731`, or `--unix-socket PATH http://localhost` for
/// curl).
pub fn run_server(
    vault: Vault,
    endpoint: Endpoint,
    config: vault_server::ServerConfig,
    ready: impl FnOnce(&str),
) -> anyhow::Result<ExitCode> {
    let Endpoint {
        listen,
        unix_socket,
        tls,
    } = endpoint;
    let unix_socket = unix_socket.as_deref();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let sealed = vault.is_sealed();
    let state = vault_server::AppState::new(vault.clone()).with_config(config);
    runtime.block_on(async move {
        let (listener, base): (vault_server::Listener, String) = match unix_socket {
            Some(path) => {
                remove_stale_socket(path)?;
                let l = tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("listening on {}", path.display()))?;
                eprintln!("keyvault listening on unix://{}", path.display());
                let base = format!("--unix-socket {} http://localhost", path.display());
                (l.into(), base)
            }
            None => {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                let bound = l.local_addr()?;
                match tls {
                    Some(acceptor) => {
                        eprintln!("keyvault listening on https://{bound}");
                        (
                            vault_server::Listener::Tls(l, acceptor),
                            format!("https://{bound}"),
                        )
                    }
                    None => {
                        eprintln!("keyvault listening on http://{bound}");
                        (l.into(), format!("http://{bound}"))
                    }
                }
            }
        };
        if sealed {
            eprintln!("the vault is sealed: run `keyvault unseal`");
        }
        ready(&base);
        vault_server::serve(listener, state, shutdown_signal())
            .await
            .context("serving")
    })?;
    // Drained: record the stop and sign a last checkpoint.
    if !vault.is_sealed()
        && let Err(e) = vault.seal(&operator_ctx())
    {
        eprintln!("warning: sealing at shutdown: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A socket file left by a stopped server is removed; anything else at that path is kept.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("{} is in use by another server", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
