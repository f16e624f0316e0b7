//! Dispatch, and the commands that work on files: init and serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::CommandFactory;
use std::fmt::Write as _;
use std::io::Write as _;

use secrecy::{ExposeSecret, SecretString};
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::NewKey;
use vault_core::{Actor, UnsealMethod, Vault};
use zeroize::Zeroizing;

use crate::cli::{Cli, Command, InitArgs, ServeArgs};
use crate::config::Config;
use crate::output::Out;
use crate::secret_input::read_secret_file;

/// The default listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:8731";

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Out {
        json: cli.json,
        client: cli.client.clone(),
    };
    match &cli.command {
        Command::Init(args) => init(args, &out),
        Command::Serve(args) => serve(args),
        Command::Status => crate::remote::status(&out.client, &out),
        Command::Unseal(args) => crate::remote::unseal(args, &out),
        Command::Seal => crate::remote::seal(&out.client, &out),
        Command::Key(c) => crate::remote::key(c, &out),
        Command::Token(c) => crate::remote::token(c, &out),
        Command::Audit(c) => crate::audit_cmd::run(c, &out),
        Command::Signals { owner, since } => {
            crate::usage::signals(&out.client, owner.as_deref(), since.as_deref(), &out)
        }
        Command::Operator(c) => crate::remote::operator(c, &out),
        Command::Witness(c) => crate::witness_cmd::run(c, &out),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "keyvault",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `keyvault operator usage-rebuild`: recomputes the usage figures of the stopped vault in
/// `data_dir` from its whole audit log and stores them.
pub fn usage_rebuild(data_dir: &Path, config: Option<&Path>, out: &Out) -> anyhow::Result<()> {
    let thresholds = match config {
        Some(path) => Config::read(path)?.usage,
        None => vault_core::usage::Thresholds::default(),
    };
    let options = vault_core::VaultOptions {
        usage: true,
        thresholds,
        ..vault_core::VaultOptions::default()
    };
    let vault = Vault::open_with(data_dir, &options).with_context(|| {
        format!(
            "opening the vault in {} (stop its server first)",
            data_dir.display()
        )
    })?;
    let spinner = crate::output::spinner("recomputing usage from the audit log");
    let entries = vault
        .rebuild_usage()
        .context("rebuilding the usage figures")?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let value = serde_json::json!({ "entries": entries });
    out.value(&value, || {
        format!("usage summaries and signals rebuilt from {entries} audit entries")
    });
    Ok(())
}

fn operator_ctx() -> vault_core::Context {
    vault_core::Context::new(Actor::Operator)
}

fn init(args: &InitArgs, out: &Out) -> anyhow::Result<ExitCode> {
    // Before any secret exists in this process: a crash must not write the new shares or the
    // root token to a core file.
    crate::hardening::no_core_dumps();
    let prefix = Prefix::new(&args.prefix)
        .map_err(|_| anyhow::anyhow!("--prefix must be 2 to 8 lowercase letters (a-z)"))?;
    let params = if args.insecure_kdf {
        KdfParams::INSECURE_FAST
    } else {
        KdfParams::DEFAULT
    };
    let method = match (&args.passphrase_file, args.shares, args.threshold) {
        (Some(file), None, None) => UnsealMethod::Passphrase {
            passphrase: Passphrase::new(read_secret_file(file)?.as_str()),
            params,
        },
        (None, Some(shares), Some(threshold)) => UnsealMethod::Shares { threshold, shares },
        _ => bail!("give either --passphrase-file FILE, or --shares N with --threshold T"),
    };
    let (vault, issued) = Vault::init(&args.data_dir, &method, &prefix)
        .with_context(|| format!("initialising a vault in {}", args.data_dir.display()))?;
    // The secrets stay in types that wipe themselves on drop, and so does the text printed.
    let shares: Vec<SecretString> = issued.shares.iter().map(|s| s.expose_text()).collect();
    let root_token = issued
        .root_token
        .as_ref()
        .map(|t| t.expose_secret_text())
        .context("init made no root token")?;
    let status = vault.seal_status();
    let text = if out.json {
        init_json(&InitOutput {
            data_dir: vault.dir(),
            method: status.method,
            threshold: status.threshold,
            prefix: prefix.as_str(),
            shares: shares.iter().map(|s| s.expose_secret()).collect(),
            root_token: root_token.expose_secret(),
            public_key: &issued.audit_public_key,
        })?
    } else {
        let mut s = Zeroizing::new(String::with_capacity(INIT_OUTPUT_ROOM));
        let _ = writeln!(s, "Initialised a vault in {}.", vault.dir().display());
        if shares.is_empty() {
            s.push_str(
                "It unseals with the passphrase you gave; keep it safe, it cannot be recovered.\n",
            );
        } else {
            let _ = writeln!(
                s,
                "Unseal shares ({} of {} unseal). Give each to a different operator; they are shown only now:",
                status.threshold, status.shares
            );
            for (i, share) in shares.iter().enumerate() {
                let _ = writeln!(s, "  share {}: {}", i + 1, share.expose_secret());
            }
        }
        let _ = writeln!(
            s,
            "\nRoot token (admin; shown only now, store it safely):\n  {}",
            root_token.expose_secret()
        );
        let _ = writeln!(
            s,
            "\nAudit public key (auditors pin it to verify exports offline):\n  {}",
            issued.audit_public_key
        );
        if args.insecure_kdf {
            s.push_str(
                "\nWARNING: test-grade Argon2id parameters: never store real keys in this vault.\n",
            );
        }
        s.push_str("\nNext: keyvault serve --data-dir DIR, then keyvault unseal.");
        s
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", text.as_str()).context("writing to standard output")?;
    stdout.flush().context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Room for `init`'s output, reserved up front so that the text holding the shares and the root
/// token is never moved (a move would leave a copy behind that is not wiped).
const INIT_OUTPUT_ROOM: usize = 16 * 1024;

/// What `init --json` prints.
#[derive(serde::Serialize)]
struct InitOutput<'a> {
    data_dir: &'a Path,
    method: &'static str,
    threshold: u8,
    prefix: &'a str,
    shares: Vec<&'a str>,
    root_token: &'a str,
    public_key: &'a str,
}

/// `init`'s output as one line of JSON, in a buffer that is wiped on drop.
fn init_json(output: &InitOutput<'_>) -> anyhow::Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(INIT_OUTPUT_ROOM));
    serde_json::to_writer(&mut *bytes, output).context("writing init's answer")?;
    // serde_json writes UTF-8 only; the copy below is wiped like the buffer.
    let text = std::str::from_utf8(&bytes).context("writing init's answer")?;
    let mut s = Zeroizing::new(String::with_capacity(INIT_OUTPUT_ROOM));
    s.push_str(text);
    Ok(s)
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    let unix_socket = args.unix_socket.clone().or(config.unix_socket.clone());
    let listen: SocketAddr = match (args.listen, config.listen) {
        (Some(a), _) | (None, Some(a)) => a,
        // Invariant: a constant that parses.
        (None, None) => DEFAULT_LISTEN.parse().expect("the default address parses"),
    };
    let insecure_listen = args.insecure_listen || config.insecure_listen;
    let tls = match (
        args.tls_cert.as_ref().or(config.tls_cert.as_ref()),
        args.tls_key.as_ref().or(config.tls_key.as_ref()),
    ) {
        (Some(cert), Some(key)) => {
            Some(vault_server::tls_acceptor(cert, key).context("setting up TLS")?)
        }
        (None, None) => None,
        _ => bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
    };
    if unix_socket.is_none() && tls.is_none() && !listen.ip().is_loopback() && !insecure_listen {
        bail!(
            "refusing to listen on {listen} without TLS: give --tls-cert and --tls-key, use a \
             loopback address or --unix-socket, or pass --insecure-listen to accept traffic in \
             the clear"
        );
    }
    let server_config = config.server_config();
    if args.dev {
        return crate::dev::serve_dev(listen, unix_socket, server_config);
    }
    let endpoint = Endpoint {
        listen,
        unix_socket,
        tls,
    };
    let Some(data_dir) = args.data_dir.clone().or(config.data_dir.clone()) else {
        bail!("give --data-dir DIR (or data_dir in the config file, or KEYVAULT_DATA_DIR)");
    };
    // The thresholds from the start, so that entries refolded at open are judged by them too.
    let options = vault_core::VaultOptions {
        usage: true,
        thresholds: server_config.usage,
        witnesses: config
            .witnesses()
            .map_err(|e| anyhow::anyhow!("the configuration's [[audit.witness]]: {e}"))?,
        ..vault_core::VaultOptions::default()
    };
    let vault = Vault::open_with(&data_dir, &options)
        .with_context(|| format!("opening the vault in {}", data_dir.display()))?;
    // Before any key material is in memory.
    crate::hardening::harden(true);
    if let Some(file) = args
        .unseal_passphrase_file
        .as_ref()
        .or(config.unseal_passphrase_file.as_ref())
    {
        let passphrase = Passphrase::new(read_secret_file(file)?.as_str());
        vault
            .unseal_passphrase(&operator_ctx(), &passphrase)
            .context("unsealing at start")?;
    }
    if vault.insecure_kdf() {
        eprintln!(
            "warning: this vault uses test-grade Argon2id parameters: never use it for real keys"
        );
    }
    run_server(vault, endpoint, server_config, |_| {})
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

/// The sample key `serve --dev` makes.
pub fn dev_sample_key(vault: &Vault) -> anyhow::Result<String> {
    let mut new = NewKey::new("customer-1");
    new.name = "sample key".into();
    new.scopes = vec!["photos:read".into(), "photos:write".into()];
    let issued = vault.create_key(&operator_ctx(), new)?;
    Ok(issued.key.expose_secret_text().expose_secret().to_owned())
}

/// A path inside a fresh temporary directory.
pub fn temp_vault_dir() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::Builder::new()
        .prefix("keyvault-dev-")
        .tempdir()
        .context("making a temporary directory")?;
    let path = tmp.path().join("vault");
    Ok((tmp, path))
}
