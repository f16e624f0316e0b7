//! Reading a backup file never panics on hostile input: `verify_backup` and `Vault::restore`
//! refuse it with an error, and a refused restore leaves no directory behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::Vault;
use vault_core::backup::verify_backup;

fuzz_target!(|data: &[u8]| {
    let checked = verify_backup(data, |_| {});
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let target = tmp.path().join("restored");
    let restored = Vault::restore(data, &target, |_| {});
    if restored.is_err() {
        assert!(!target.exists(), "a refused restore left its directory");
    }
    // Whatever restore accepts, the framing check accepts too.
    assert!(restored.is_err() || checked.is_ok());
});
