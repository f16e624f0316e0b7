//! Unseal-share parsing never panics, and whatever parses renders back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use vault_core::shamir::Share;

fuzz_target!(|text: &str| {
    if let Ok(share) = Share::parse(text) {
        assert_eq!(share.expose_text().expose_secret(), &text.trim().to_ascii_lowercase());
    }
});
