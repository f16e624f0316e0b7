//! A key's rate-limit bucket across the cache's own upheavals: a slot emptied after a credit
//! conflict with another node (the cluster verify then reads the key again and goes on) keeps
//! the tokens already taken, rather than handing the key a fresh, full bucket.
//!
//! The bug this pins: `forget_on_conflict` emptied the slot, bucket and all, and the fill that
//! followed started the bucket full, so a key spent from two nodes at once (where conflicts
//! are routine) was rate limited per conflict rather than per period.
#![allow(clippy::unwrap_used)]

use secrecy::ExposeSecret;

use super::{NewKey, RateLimit, VerifyRequest};
use crate::apikey::ApiKey;
use crate::clock::Clock;
use crate::storage::{Conflict, StorageError};
use crate::testing::passphrase_vault_on;
use crate::{Context, Error, Vault};

fn limited(vault: &Vault, limit: u32) -> String {
    let issued = vault
        .create_key(
            &Context::embedded(),
            NewKey {
                ratelimit: Some(RateLimit {
                    limit,
                    period_seconds: 3600,
                }),
                ..NewKey::new("o")
            },
        )
        .unwrap();
    issued.key.expose_secret_text().expose_secret().to_owned()
}

fn remaining(vault: &Vault, text: &str) -> (bool, u32) {
    let verdict = vault
        .verify(&Context::embedded(), VerifyRequest::new(text))
        .unwrap();
    (verdict.valid, verdict.ratelimit.unwrap().remaining)
}

#[test]
fn a_slot_emptied_by_a_conflict_keeps_the_tokens_taken() {
    let (_tmp, vault) = passphrase_vault_on(Clock::manual_now());
    let text = limited(&vault, 5);
    for left in (2..5).rev() {
        assert_eq!(remaining(&vault, &text), (true, left));
    }
    // What a credit spend that lost its race to another node does to the key's slot.
    let id = ApiKey::parse(&text, &vault.prefix()).unwrap().id();
    let conflict = Error::Storage(StorageError::other(Conflict));
    let book = &vault.inner.key_book;
    book.forget_on_conflict(&mut super::lock(&book.cache.slot(&id)), &id, &conflict);
    assert_eq!(remaining(&vault, &text), (true, 1));
    assert_eq!(remaining(&vault, &text), (true, 0));
    assert!(!remaining(&vault, &text).0, "the limit holds across the conflict");
}
