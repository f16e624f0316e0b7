//! Tests that need the vault's insides (raw store bytes and the key material), one file a
//! topic; the handle's own seal state and format checks are here, the set-up they all share too.
#![allow(clippy::unwrap_used)]

mod audit;
#[cfg(feature = "etcd")]
mod cluster;
#[cfg(feature = "etcd")]
mod cluster_audit;
#[cfg(feature = "etcd")]
mod cluster_backup;
#[cfg(feature = "etcd")]
mod cluster_credits;
#[cfg(feature = "etcd")]
mod cluster_nodes;
#[cfg(feature = "etcd")]
mod cluster_rates;
#[cfg(feature = "etcd")]
mod cluster_revoke;
#[cfg(feature = "etcd")]
mod cluster_rollback;
#[cfg(feature = "etcd")]
mod cluster_seal;
#[cfg(feature = "etcd")]
mod cluster_view;
mod crash;
#[cfg(feature = "etcd")]
mod etcd_fence;
mod keys;
mod name_index;
mod records;
mod rollback;
mod usage;
mod verify;

use super::*;
use crate::testing::{self, PASSPHRASE};

/// A new vault unsealed with [`PASSPHRASE`], in a temporary directory.
fn new_vault() -> (tempfile::TempDir, Vault) {
    testing::passphrase_vault()
}

/// Opens the vault in `dir` and unseals it with [`PASSPHRASE`].
fn reopen(dir: &Path) -> Vault {
    let vault = Vault::open(dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    vault
}

/// Creates a key of `owner`; returns it and its text.
fn issue(vault: &Vault, owner: &str) -> (crate::keys::IssuedKey, String) {
    let issued = vault
        .create_key(&ctx(), crate::keys::NewKey::new(owner))
        .unwrap();
    let text = key_text(&issued);
    (issued, text)
}

/// The value of `space/id`, which must be there.
fn stored(vault: &Vault, space: Space, id: &[u8]) -> Vec<u8> {
    vault.inner.store.get(space, id).unwrap().unwrap()
}

fn key_text(issued: &crate::keys::IssuedKey) -> String {
    secrecy::ExposeSecret::expose_secret(&issued.key.expose_secret_text()).to_owned()
}

fn ctx() -> Context {
    Context::embedded()
}

/// The whole audit log as JSON lines.
fn export_text(vault: &Vault) -> Result<String> {
    let mut out = Vec::new();
    vault.export_audit(
        &ctx(),
        &Default::default(),
        crate::audit::export::ExportFormat::Jsonl,
        &mut out,
    )?;
    Ok(String::from_utf8(out).unwrap())
}

/// The offline verifier of the vault's audit signing key.
fn verifier(vault: &Vault) -> crate::audit::note::NoteVerifier {
    crate::audit::note::NoteVerifier::parse(&vault.audit_public_key().unwrap()).unwrap()
}

#[test]
fn every_flipped_byte_of_the_wrapped_root_key_or_seal_config_is_refused() {
    let (_tmp, vault) = new_vault();
    let good = stored(&vault, Space::Meta, META_SEAL);
    let passphrase = Passphrase::new(PASSPHRASE);
    let config = read_config(&vault.inner.store).unwrap();
    assert!(
        config
            .passphrase_key(&passphrase)
            .and_then(|k| config.unwrap_root(&k))
            .is_ok()
    );
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let mut batch = Batch::default();
        batch.insert(Space::Meta, META_SEAL, &bad);
        vault.inner.store.apply(batch).unwrap();
        // The config fails to decode or check, or it fails to unwrap the root key.
        match read_config(&vault.inner.store) {
            Err(Error::Corrupt(_) | Error::Kdf(_)) => {}
            Err(e) => panic!("flip at byte {i}: unexpected {e}"),
            Ok(config) => {
                let root = config
                    .passphrase_key(&passphrase)
                    .and_then(|k| config.unwrap_root(&k));
                assert!(
                    root.is_err(),
                    "flip at byte {i} still unwrapped the root key"
                );
            }
        }
    }
}

#[test]
fn a_tampered_keyring_is_refused() {
    let (_tmp, vault) = new_vault();
    let good = stored(&vault, Space::Meta, META_KEYRING);
    vault.seal(&ctx()).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        let mut batch = Batch::default();
        batch.insert(Space::Meta, META_KEYRING, &bad);
        vault.inner.store.apply(batch).unwrap();
        let r = vault.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE));
        assert!(
            matches!(r, Err(Error::Corrupt(_))),
            "flip at byte {i}: {r:?}"
        );
        assert!(vault.is_sealed());
    }
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let (_tmp, vault) = new_vault();
    let mut batch = Batch::default();
    batch.insert(
        Space::Meta,
        META_FORMAT,
        &(FORMAT_VERSION + 1).to_be_bytes(),
    );
    vault.inner.store.apply(batch).unwrap();
    let dir = vault.dir().to_path_buf();
    drop(vault);
    match Vault::open(&dir) {
        Err(e @ Error::UnsupportedFormat { found, supported })
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION =>
        {
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
