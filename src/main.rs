//! `keyvault`: the command operators and auditors use. Thin: it parses arguments and calls
//! vault-core (for commands that work on files) or vault-server.
//!
//! # Layout
//! - `cli`: the argument grammar (clap derive) and `--help` texts.
//! - `commands`: dispatch, and the commands that work on files (`init`, `serve`).
//! - `dev`: `serve --dev`.
//! - `config`: the TOML config file of `serve`.
//! - `client`: the HTTP client (TCP or Unix socket) of every other command.
//! - `remote`: status, unseal, seal, key, token and operator commands.
//! - `audit_cmd`: audit export, offline verify and tail.
//! - `ceremony_cmd`: `operator rekey` and `operator generate-root`, one holder's share per
//!   process under a ceremony nonce; the one-time age key of generate-root.
//! - `backup_cmd`: `operator backup` (over HTTP) and `operator restore` (offline).
//! - `output`: human or JSON output, tables, progress.
//! - `hardening`: no core dumps, locked memory (`serve`).
//! - `secret_input`: secrets from files (less one trailing newline) and no-echo prompts.
//! - `usage`: `key usage`, a key's daily usage as a chart, and its signals.
//! - `witness_cmd`: `witness serve` (a C2SP tlog-witness for vaults' checkpoints) and `witness
//!   key`.

use std::process::ExitCode;

use clap::Parser;

mod audit_cmd;
mod backup_cmd;
mod ceremony_cmd;
mod cli;
mod client;
mod commands;
mod config;
mod dev;
mod hardening;
mod output;
mod remote;
mod secret_input;
mod usage;
mod witness_cmd;

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
            // clap's own message runs over several lines with a usage block; scripts and people
            // get the first line, and exit code 1 like every other error (2 means sealed).
            let text = e.render().to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or("error: invalid arguments");
            // "the following required arguments were not provided:" names them on the next line.
            match lines.next().map(str::trim).filter(|_| first.ends_with(':')) {
                Some(what) => eprintln!("{first} {what} (see `keyvault --help`)"),
                None => eprintln!("{first} (see `keyvault --help`)"),
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
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole chain on one line: "what failed: why".
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
