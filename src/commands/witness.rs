//! `keyvault witness serve|key`: a C2SP `tlog-witness` for vaults' audit checkpoints, meant to
//! run on another host than the vaults it witnesses (see `docs/OPERATIONS.md`, "Witnesses").

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use vault_core::audit::note::NoteVerifier;
use vault_core::witness::Witness;

use crate::cli::{WitnessCommand, WitnessServeArgs};
use crate::key_args::log_key_arg;
use crate::output::Out;
use crate::server::shutdown_signal;

/// Runs a witness command.
pub fn run(command: &WitnessCommand, out: &Out) -> anyhow::Result<ExitCode> {
    match command {
        WitnessCommand::Serve(args) => serve(args, out),
        WitnessCommand::Key { data_dir } => key(data_dir, out),
    }
}

fn serve(args: &WitnessServeArgs, out: &Out) -> anyhow::Result<ExitCode> {
    // Before the witness's seed is read or made: a crash must not write it to a core file.
    crate::hardening::no_core_dumps();
    let logs = log_keys(&args.logs)?;
    let listen = args.listen;
    if !listen.ip().is_loopback() && !args.insecure_listen {
        bail!(
            "refusing to listen on {listen}: a witness speaks plain HTTP; use a loopback address \
             behind a TLS proxy, or pass --insecure-listen (its answers are signed, so TLS is \
             optional)"
        );
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(),
    };
    let (witness, created) = Witness::open(&args.data_dir, &name, &logs)
        .with_context(|| format!("opening the witness in {}", args.data_dir.display()))?;
    let key = witness.verifier().to_string();
    if created {
        out.value(&serde_json::json!({ "key": key }), || {
            format!(
                "Made a witness key in {}. Give this verifier key to the vault operators for \
                 [[audit.witness]] and to auditors for `audit verify --witness`:\n  {key}",
                args.data_dir.display()
            )
        });
    } else {
        if args
            .name
            .as_ref()
            .is_some_and(|n| n != witness.verifier().name())
        {
            eprintln!(
                "warning: --name is used only at the first start; this witness is named {}",
                witness.verifier().name()
            );
        }
        tracing::info!(%key, "witness key");
    }
    let names: Vec<&str> = logs.iter().map(NoteVerifier::name).collect();
    tracing::info!(logs = ?names, "witnessing {} log(s)", names.len());

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        eprintln!("keyvault witness listening on http://{bound}");
        vault_server::serve_router(
            listener,
            vault_server::witness_app(Arc::new(witness)),
            vault_server::Limits::default(),
            shutdown_signal(),
        )
        .await
        .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The `--log` keys. Several keys of one log (one origin) are all accepted for it: a vault
/// whose audit key was rotated (`operator rotate-audit-key`) signs its checkpoints with the new
/// key, and its witnesses are given it beside the old one, which signed every checkpoint up to
/// the transition (the one checkpoint signed by both). Verifying with any of a log's keys
/// grants nothing more than the log had: each key is one the operator chose to trust for that
/// origin. The very same key twice is refused, as a likely mistake.
fn log_keys(texts: &[String]) -> anyhow::Result<Vec<NoteVerifier>> {
    let mut seen = BTreeSet::new();
    let mut logs = Vec::with_capacity(texts.len());
    for text in texts {
        let log = log_key_arg("--log", text)?;
        if !seen.insert(log.to_string()) {
            bail!("--log: the key {log} is given twice");
        }
        logs.push(log);
    }
    Ok(logs)
}

fn key(data_dir: &Path, out: &Out) -> anyhow::Result<ExitCode> {
    // The key file holds the seed, which is read to derive the public key.
    crate::hardening::no_core_dumps();
    let key = Witness::key(data_dir)
        .with_context(|| {
            format!(
                "reading the witness key in {} (is it a witness's data directory?)",
                data_dir.display()
            )
        })?
        .to_string();
    out.value(&serde_json::json!({ "key": key }), || key.clone());
    Ok(ExitCode::SUCCESS)
}

/// `keyvault-witness/<hostname>`, with what a key name cannot hold (spaces, `+`, control
/// characters) replaced by `-`.
fn default_name() -> String {
    format!("keyvault-witness/{}", key_name_part(&hostname()))
}

fn key_name_part(text: &str) -> String {
    let part: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect();
    if part.is_empty() {
        "localhost".to_owned()
    } else {
        part
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname
    // writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    // A name that fills the buffer may lack its NUL: take what is there.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_a_valid_key_name_whatever_the_hostname() {
        for (host, part) in [
            ("db-1.example", "db-1.example"),
            ("  spaced host+x\n", "spaced-host-x"),
            ("", "localhost"),
            ("tab\there", "tab-here"),
        ] {
            assert_eq!(key_name_part(host), part);
            let name = format!("keyvault-witness/{}", key_name_part(host));
            vault_core::audit::cosignature::Cosigner::from_seed(&name, &[1; 32]).unwrap();
        }
        vault_core::audit::cosignature::Cosigner::from_seed(&default_name(), &[1; 32]).unwrap();
    }

    #[test]
    fn a_log_may_be_given_several_keys_but_not_one_key_twice() {
        use vault_core::audit::note::NoteSigner;
        let key = |seed| {
            NoteSigner::from_seed("keyvault/0011223344556677", &[seed; 32])
                .unwrap()
                .verifier()
                .to_string()
        };
        let logs = log_keys(&[key(1), key(2)]).unwrap();
        assert_eq!(logs.len(), 2);
        let err = log_keys(&[key(1), key(1)]).unwrap_err().to_string();
        assert!(err.contains("is given twice"), "{err}");
    }
}
