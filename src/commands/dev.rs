//! `keyvault serve --dev`: a throwaway vault for a first look.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::NewKey;
use vault_core::{UnsealMethod, Vault};

use crate::server::{Endpoint, operator_ctx, run_server};

/// Makes a vault in a temporary directory with test-grade Argon2 and a random passphrase,
/// unsealed, prints how to use it, serves it, and removes it on exit.
pub fn serve_dev(
    listen: SocketAddr,
    unix_socket: Option<PathBuf>,
    config: vault_server::ServerConfig,
) -> anyhow::Result<ExitCode> {
    crate::hardening::harden(false);
    let (tmp, dir) = temp_vault_dir()?;
    let mut bytes = [0u8; 24];
    vault_core::crypto::fill_random(&mut bytes);
    let passphrase = hex::encode(bytes);
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new(passphrase),
        params: KdfParams::INSECURE_FAST,
    };
    let (vault, issued) =
        Vault::init(&dir, &method, &Prefix::default()).context("making the dev vault")?;
    let root = issued
        .root_token
        .as_ref()
        .map(|t| t.expose_secret_text().expose_secret().to_owned())
        .context("init made no root token")?;
    let sample = dev_sample_key(&vault)?;
    let id = sample_id(&vault, &sample)?;
    let banner = |base: &str| {
        format!(
            "\nkeyvault dev mode: a temporary vault in {dir}, unsealed, with test-grade Argon2.\n\
         Everything is deleted when this process stops. Never store real keys here.\n\n\
         Root token (admin):   {root}\n\
         Sample API key:       {sample}\n\
         Audit public key:     {public_key}\n\n\
         Try it:\n\
         export KEYVAULT_TOKEN={root}\n\
         # verify the sample key\n\
         curl -s -X POST {base}/v1/keys/verify -H \"authorization: Bearer $KEYVAULT_TOKEN\" -H 'content-type: application/json' -d '{{\"key\":\"{sample}\"}}'\n\
         # create a key\n\
         curl -s -X POST {base}/v1/keys -H \"authorization: Bearer $KEYVAULT_TOKEN\" -H 'content-type: application/json' -d '{{\"owner\":\"customer-2\",\"scopes\":[\"photos:read\"]}}'\n\
         # rotate the sample key, keeping the old secret valid for an hour\n\
         curl -s -X POST {base}/v1/keys/{id}/rotate -H \"authorization: Bearer $KEYVAULT_TOKEN\" -H 'content-type: application/json' -d '{{\"grace_seconds\":3600}}'\n",
            dir = dir.display(),
            public_key = issued.audit_public_key,
        )
    };
    let endpoint = Endpoint {
        listen,
        unix_socket,
        tls: None,
    };
    let result = run_server(vault, endpoint, config, |base| println!("{}", banner(base)));
    drop(tmp);
    result
}

fn sample_id(vault: &Vault, key: &str) -> anyhow::Result<String> {
    let key = vault_core::apikey::ApiKey::parse(key, &vault.prefix())
        .map_err(|e| anyhow::anyhow!("the sample key: {e}"))?;
    Ok(key.id().to_string())
}

/// The sample key `serve --dev` makes.
fn dev_sample_key(vault: &Vault) -> anyhow::Result<String> {
    let mut new = NewKey::new("customer-1");
    new.name = "sample key".into();
    new.scopes = vec!["photos:read".into(), "photos:write".into()];
    let issued = vault.create_key(&operator_ctx(), new)?;
    Ok(issued.key.expose_secret_text().expose_secret().to_owned())
}

/// A path inside a fresh temporary directory.
fn temp_vault_dir() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::Builder::new()
        .prefix("keyvault-dev-")
        .tempdir()
        .context("making a temporary directory")?;
    let path = tmp.path().join("vault");
    Ok((tmp, path))
}
