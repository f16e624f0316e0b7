//! `keyvault init`: a new vault in a data directory, its shares (or passphrase unseal), root
//! token and audit public key printed once.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::{UnsealMethod, Vault};
use zeroize::Zeroizing;

use crate::cli::InitArgs;
use crate::config::Config;
use crate::output::Out;
use crate::secret_input::read_secret_file;

/// Initialises the vault `args` describe and prints what only this moment shows.
pub fn init(args: &InitArgs, out: &Out) -> anyhow::Result<ExitCode> {
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
    let config = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    let Some(data_dir) = args.data_dir.clone().or(config.data_dir.clone()) else {
        bail!("give --data-dir DIR (or data_dir in the config file, or KEYVAULT_DATA_DIR)");
    };
    let (vault, issued) = match config.cluster().map_err(anyhow::Error::msg)? {
        None => Vault::init(&data_dir, &method, &prefix)
            .with_context(|| format!("initialising a vault in {}", data_dir.display()))?,
        Some(etcd) => super::cluster::init(&data_dir, &etcd, &method, &prefix)?,
    };
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
        s.push_str(if args.config.is_some() {
            "\nNext: keyvault serve --config FILE on each node, then keyvault unseal on each."
        } else {
            "\nNext: keyvault serve --data-dir DIR, then keyvault unseal."
        });
        s
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", text.as_str()).context("writing to standard output")?;
    stdout.flush().context("writing to standard output")?;
    super::cluster::leave(&vault);
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
