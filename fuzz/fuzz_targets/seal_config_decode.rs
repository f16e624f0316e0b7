//! Decoding a seal configuration or a record envelope from hostile bytes never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::codec;
use vault_core::record;
use vault_core::seal::SealConfig;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(config) = codec::decode::<SealConfig>(bytes) {
        assert_eq!(codec::encode(&config), bytes);
    }
    let _ = record::term_of(bytes);
});
