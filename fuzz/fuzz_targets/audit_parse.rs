//! Audit entry parsing, signed-note and checkpoint parsing, and the offline verifier never panic
//! on hostile input, and never accept a forged export.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::audit::Entry;
use vault_core::audit::export::verify_export;
use vault_core::audit::note::{Checkpoint, NoteSigner, NoteVerifier};

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::parse(data) {
        assert_eq!(entry.to_bytes(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse_note_text(text);
        let _ = NoteVerifier::parse(text);
    }
    // A key nobody else has: whatever the input, nothing verifies under it.
    let signer = NoteSigner::from_seed("fuzz", &[42; 32]).expect("a valid key name");
    let verifier = signer.verifier();
    assert!(verify_export(data, &verifier, None, |_| {}).is_err());
});
