//! Shared helpers: the fixtures of `vault_core::testing`, and what only these tests use.

use vault_core::audit::export::{ExportFilter, ExportFormat};
use vault_core::kdf::Passphrase;
pub use vault_core::testing::*;
use vault_core::{RecordTree, Vault};
use zeroize::Zeroizing;

/// The caller of test operations.
pub fn ctx() -> vault_core::Context {
    vault_core::Context::embedded()
}

/// An unfiltered JSON Lines export of the whole live log.
pub fn export(vault: &Vault) -> String {
    export_with(vault, &ExportFilter::default())
}

/// A JSON Lines export of the entries `filter` picks.
pub fn export_with(vault: &Vault, filter: &ExportFilter) -> String {
    let mut out = Vec::new();
    vault
        .export_audit(&ctx(), filter, ExportFormat::Jsonl, &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Unseals `vault` with [`PASSPHRASE`].
pub fn unseal_with_passphrase(vault: &Vault) {
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE))
        .unwrap();
}

/// Closes `vault` and opens its data directory again: sealed, as after a restart.
pub fn reopen(vault: Vault) -> Vault {
    let dir = vault.dir().to_path_buf();
    drop(vault);
    Vault::open(&dir).unwrap()
}

/// Writes `value` as the record `tree/id` through the danger API.
pub fn put(vault: &Vault, tree: RecordTree, id: &[u8], value: &[u8]) {
    vault.danger().put_record(&ctx(), tree, id, value).unwrap();
}

/// The plaintext of the record `tree/id`, which must be there.
pub fn record(vault: &Vault, tree: RecordTree, id: &[u8]) -> Zeroizing<Vec<u8>> {
    vault.danger().get_record(tree, id).unwrap().unwrap()
}

/// The keyring term the record `tree/id` is sealed under (`None` if it is not there).
pub fn term(vault: &Vault, tree: RecordTree, id: &[u8]) -> Option<u32> {
    vault.danger().record_term(tree, id).unwrap()
}
