//! Test support shared by vault-core's unit tests, its integration tests, vault-server's
//! tests, the end-to-end tests and the fuzz targets: vaults with test-grade Argon2 parameters
//! in temporary directories, and the key-lifecycle model ([`model`]).
//!
//! Compiled for vault-core's own tests and, for the other crates, behind the `testing`
//! feature, which only dev-dependencies turn on: nothing here is part of a release build.
//! Everything here panics on failure, as test set-up should.

pub mod model;

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;
use tempfile::TempDir;

use crate::apikey::Prefix;
use crate::clock::Clock;
use crate::context::Context;
use crate::kdf::{KdfParams, Passphrase};
use crate::shamir::Share;
use crate::vault::{UnsealMethod, Vault, VaultOptions};

/// The passphrase of [`passphrase_vault`].
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A passphrase unseal method with test-grade Argon2 parameters (never use them in a vault
/// that holds anything).
pub fn passphrase_method(passphrase: &str) -> UnsealMethod {
    UnsealMethod::Passphrase {
        passphrase: Passphrase::new(passphrase),
        params: KdfParams::INSECURE_FAST,
    }
}

/// A fresh temporary directory and a path for a vault inside it (not yet created).
pub fn dir() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let path = tmp.path().join("vault");
    (tmp, path)
}

/// A new vault unsealed with [`PASSPHRASE`], in a temporary directory.
pub fn passphrase_vault() -> (TempDir, Vault) {
    let (tmp, path) = dir();
    let (vault, issued) = Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default())
        .expect("init a passphrase vault");
    assert!(issued.shares.is_empty());
    (tmp, vault)
}

/// [`passphrase_vault`] opened on `clock`, unsealed: a test moves its time with
/// [`Clock::advance`] instead of sleeping.
pub fn passphrase_vault_on(clock: Clock) -> (TempDir, Vault) {
    let (tmp, path) = dir();
    let (vault, _) = Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default())
        .expect("init a passphrase vault");
    // Init opens the vault on the system clock; the directory is opened again on `clock`.
    drop(vault);
    let options = VaultOptions {
        clock,
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&path, &options).expect("open the new vault");
    vault
        .unseal_passphrase(&Context::embedded(), &Passphrase::new(PASSPHRASE))
        .expect("unseal with its passphrase");
    (tmp, vault)
}

/// A new vault sealed by `threshold` of `shares` Shamir shares, unsealed, and its shares.
pub fn shares_vault(threshold: u8, shares: u8) -> (TempDir, Vault, Vec<Share>) {
    let (tmp, path) = dir();
    let method = UnsealMethod::Shares { threshold, shares };
    let (vault, issued) =
        Vault::init(&path, &method, &Prefix::default()).expect("init a shares vault");
    assert_eq!(issued.shares.len(), usize::from(shares));
    (tmp, vault, issued.shares)
}

/// A share round-tripped through its text form, as an operator would type it.
pub fn retyped(share: &Share) -> Share {
    Share::parse(share.expose_text().expose_secret()).expect("a share's own text parses")
}

/// Copies a closed vault's data directory (or any directory tree), leaving out the advisory
/// lock file so that the copy can be opened while the original is.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory to copy") {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("an entry's type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != crate::datadir::LOCK_FILE {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}
