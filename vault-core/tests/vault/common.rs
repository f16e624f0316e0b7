//! Shared helpers: the fixtures of `vault_core::testing`, and what only these tests use.

use vault_core::Vault;
pub use vault_core::testing::*;

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
