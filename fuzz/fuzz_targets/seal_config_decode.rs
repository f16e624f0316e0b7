//! Decoding a seal configuration or a record envelope from hostile bytes never panics, and no
//! forged record envelope opens under a keyring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::codec;
use vault_core::record;
use vault_core::keyring::Keyring;
use vault_core::seal::SealConfig;
use vault_core::storage::Space;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(config) = codec::decode::<SealConfig>(bytes) {
        assert_eq!(codec::encode(&config), bytes);
    }
    let _ = record::term_of(bytes);
    // Without the key nothing forged opens: every input must be refused.
    let keyring = Keyring::generate(0);
    assert!(record::open(&keyring, Space::Keys, b"id", bytes).is_err());
});
