//! API-key and token parsing never panics, and whatever parses renders back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use vault_core::apikey::{ApiKey, Prefix};

fuzz_target!(|text: &str| {
    for prefix in [Prefix::default(), Prefix::TOKEN] {
        if let Ok(key) = ApiKey::parse(text, &prefix) {
            assert_eq!(key.expose_secret_text().expose_secret(), text);
        }
    }
});
