//! Shared helpers: vaults with test-grade Argon2 parameters in temporary directories.

use std::path::PathBuf;

use secrecy::ExposeSecret;
use tempfile::TempDir;
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::shamir::Share;
use vault_core::{UnsealMethod, Vault};

pub const PASSPHRASE: &str = "correct horse battery staple";

pub fn passphrase_method(p: &str) -> UnsealMethod {
    UnsealMethod::Passphrase {
        passphrase: Passphrase::new(p),
        params: KdfParams::INSECURE_FAST,
    }
}

/// A fresh directory and a path for a vault inside it.
pub fn dir() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    (tmp, path)
}

pub fn passphrase_vault() -> (TempDir, Vault) {
    let (tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    assert!(issued.shares.is_empty());
    (tmp, vault)
}

pub fn shares_vault(threshold: u8, shares: u8) -> (TempDir, Vault, Vec<Share>) {
    let (tmp, path) = dir();
    let (vault, issued) = Vault::init(
        &path,
        &UnsealMethod::Shares { threshold, shares },
        &Prefix::default(),
    )
    .unwrap();
    assert_eq!(issued.shares.len(), usize::from(shares));
    (tmp, vault, issued.shares)
}

/// A share round-tripped through its text form, as an operator would type it.
pub fn retyped(share: &Share) -> Share {
    Share::parse(share.expose_text().expose_secret()).unwrap()
}

/// The caller of test operations.
pub fn ctx() -> vault_core::Context {
    vault_core::Context::embedded()
}

/// An unfiltered JSON Lines export of the whole live log.
pub fn export(vault: &Vault) -> String {
    let mut out = Vec::new();
    vault
        .export_audit(
            &ctx(),
            &vault_core::audit::export::ExportFilter::default(),
            vault_core::audit::export::ExportFormat::Jsonl,
            &mut out,
        )
        .unwrap();
    String::from_utf8(out).unwrap()
}
