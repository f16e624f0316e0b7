//! One function per command.

use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::{Actor, UnsealMethod, Vault};

use crate::cli::{Cli, Command, InitArgs, ServeArgs};
use crate::secret_input::read_secret_file;

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init(args, cli.json),
        Command::Serve(args) => serve(args),
    }
}

fn init(args: InitArgs, json: bool) -> anyhow::Result<ExitCode> {
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
    let shares: Vec<String> = issued
        .shares
        .iter()
        .map(|s| s.expose_text().expose_secret().to_owned())
        .collect();
    let root_token = issued
        .root_token
        .as_ref()
        .map(|t| t.expose_secret_text().expose_secret().to_owned())
        .context("init made no root token")?;
    if json {
        let out = serde_json::json!({
            "data_dir": vault.dir(),
            "method": vault.seal_status().method,
            "prefix": prefix.as_str(),
            "shares": shares,
            "root_token": root_token,
            "public_key": issued.audit_public_key,
        });
        println!("{out}");
    } else {
        println!("Initialised a vault in {}.", vault.dir().display());
        if shares.is_empty() {
            println!(
                "It unseals with the passphrase you gave; keep it safe, it cannot be recovered."
            );
        } else {
            let status = vault.seal_status();
            println!(
                "Unseal shares ({} of {} unseal). Give each to a different operator; they are shown only now:",
                status.threshold, status.shares
            );
            for (i, share) in shares.iter().enumerate() {
                println!("  share {}: {share}", i + 1);
            }
        }
        println!();
        println!("Root token (admin; shown only now, store it safely):");
        println!("  {root_token}");
        println!();
        println!("Audit public key (auditors pin it to verify exports offline):");
        println!("  {}", issued.audit_public_key);
        if args.insecure_kdf {
            println!(
                "WARNING: test-grade Argon2id parameters: never store real keys in this vault."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() && !args.insecure_listen {
        bail!(
            "refusing to listen on {} without TLS: use a loopback address, or pass \
             --insecure-listen to accept traffic in the clear",
            args.listen
        );
    }
    let vault = Vault::open(&args.data_dir)
        .with_context(|| format!("opening the vault in {}", args.data_dir.display()))?;
    if let Some(file) = &args.unseal_passphrase_file {
        let passphrase = Passphrase::new(read_secret_file(file)?.as_str());
        vault
            .unseal_passphrase(&vault_core::Context::new(Actor::Operator), &passphrase)
            .context("unsealing at start")?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, sealed = vault.is_sealed(), "keyvault listening");
        eprintln!("keyvault listening on http://{addr}");
        vault_server::serve(
            listener,
            vault_server::AppState::new(vault),
            shutdown_signal(),
        )
        .await
        .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
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
