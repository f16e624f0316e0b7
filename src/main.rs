//! `keyvault`: the command operators and auditors use. Thin: it parses arguments and calls
//! vault-core (for commands that work on files) or vault-server.
//!
//! # Layout
//! Three layers; each module imports only from the layers below it.
//!
//! At the top, `dispatch`: the parsed command line mapped to the command families.
//!
//! `commands`, one module per command family:
//! - `init`: a new vault in a data directory.
//! - `serve`: the HTTP server over a vault; `dev`: `serve --dev`, a throwaway vault.
//! - `operator`: `status`, `unseal`, `seal`, and keyring and audit-key rotation.
//! - `keys`: `key create|list|show|update|rotate|revoke|reveal|verify`.
//! - `tokens`: `token create|list|revoke`.
//! - `usage`: `key usage` (a key's daily usage as a chart, and its signals), `signals`, and
//!   `operator usage-rebuild` (offline).
//! - `audit`: audit export, offline verify, tail and archive.
//! - `ceremony`: `operator rekey` and `operator generate-root`, one holder's share per process
//!   under a ceremony nonce; the one-time age key of generate-root.
//! - `backup`: `operator backup` (over HTTP) and `operator restore` (offline).
//! - `witness`: `witness serve` (a C2SP tlog-witness for vaults' checkpoints) and `witness key`.
//!
//! Below them:
//! - `cli`: the argument grammar (clap derive) and `--help` texts, by command family.
//! - `client`: the HTTP client (TCP, TLS or Unix socket) of the commands that talk to a server,
//!   query strings, id checks.
//! - `server`: running the vault's server on an endpoint until a signal, then sealing it.
//! - `output`: human or JSON output, tables, progress, times.
//! - `key_args`: audit and witness public keys given as text or `@FILE`.
//! - `config`: the TOML config file of `serve`.
//! - `hardening`: no core dumps, locked memory (`serve`).
//! - `secret_input`: secrets from files (less one trailing newline) and no-echo prompts.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod client;
mod commands;
mod config;
mod dispatch;
mod hardening;
mod key_args;
mod output;
mod secret_input;
mod server;

/// mimalloc, not glibc's malloc: a verify allocates about fifteen times, across the runtime's
/// and the audit writer's threads, and with mimalloc `serve` spends 13 to 19 % less CPU per
/// verify over HTTP (BENCHMARKS.md, "Where an HTTP verify's CPU goes"), for about the same
/// resident memory. It reserves address space ahead; `hardening` locks memory on first touch
/// only, so that what it reserves is not pinned.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Files the vault creates are owner-only whatever the caller's umask.
    // SAFETY: umask(2) has no preconditions and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message, with its "did you mean" tips, possible values and usage, but
            // never a secret typed where it did not belong. Exit code 1 like every other error
            // (2 means sealed).
            let text = secret_input::redact(&e.render().to_string(), std::env::args());
            eprint!("{text}");
            if text.contains(secret_input::REDACTED) {
                eprintln!(
                    "note: a secret given as an argument is not shown. Secrets never need to be \
                     on the command line: keyvault prompts for them, or reads `-` (stdin) or a file."
                );
            }
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: escape codes in a journal or a file are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// An error's whole chain on one line, "what failed: why", each cause once (a library error
/// that already quotes its cause is not followed by it again); a refused permission says which
/// user the command ran as, since that is what the operator has to change.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || c.downcast_ref::<vault_core::Error>().is_some_and(|v| {
                matches!(v, vault_core::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied)
            })
    });
    if denied {
        text.push_str(&format!(" (keyvault runs as {})", hardening::user()));
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::describe;

    #[test]
    fn a_cause_quoted_by_its_error_is_not_repeated_and_a_refusal_names_the_user() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let shown = io.to_string();
        let e = anyhow::Error::new(vault_core::Error::Io {
            context: "creating /srv/vault".into(),
            source: io,
        })
        .context("initialising a vault in /srv/vault");
        let text = describe(&e);
        assert!(
            text.starts_with(&format!(
                "initialising a vault in /srv/vault: creating /srv/vault: {shown} (keyvault runs as "
            )),
            "{text}"
        );
        assert_eq!(text.matches(&shown).count(), 1, "{text}");
        let plain = anyhow::anyhow!("no such key").context("showing key 00");
        assert_eq!(describe(&plain), "showing key 00: no such key");
    }
}
