//! Model-based: an arbitrary sequence of key operations applied to a real vault and to the
//! plain in-memory model of `vault_core::testing::model` must agree on every verify code and
//! on the credits left.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vault_core::Vault;
use vault_core::testing::model::{KeyLifecycle, Op};

/// One vault for the whole run (keys of earlier inputs stay, under other ids).
fn vault() -> &'static Vault {
    static VAULT: OnceLock<(tempfile::TempDir, Vault)> = OnceLock::new();
    &VAULT.get_or_init(vault_core::testing::passphrase_vault).1
}

fuzz_target!(|ops: Vec<Op>| {
    let mut model = KeyLifecycle::new(vault());
    for op in ops.iter().take(64) {
        if let Err(disagreement) = model.apply(op) {
            panic!("{disagreement} after {op:?}");
        }
    }
    if let Err(disagreement) = model.check_stored() {
        panic!("{disagreement}");
    }
});
