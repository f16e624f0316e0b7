//! A key's rate-limit bucket: the tokens a node tallies for the other nodes of a cluster and
//! the ones it loses to theirs (`rate_share`), checked on one host with no etcd; and a slot
//! emptied after a credit conflict with another node (the cluster verify then reads the key
//! again and goes on) keeps the tokens already taken, rather than handing the key a fresh,
//! full bucket.
//!
//! The conflict bug this pins: `forget_on_conflict` emptied the slot, bucket and all, and the
//! fill that followed started the bucket full, so a key spent from two nodes at once (where
//! conflicts are routine) was rate limited per conflict rather than per period.
#![allow(clippy::unwrap_used)]

use secrecy::ExposeSecret;

use super::rate_share::{MAX_TALLIED, Tally};
use super::{NewKey, RateLimit, VerifyCode, VerifyRequest};
use crate::apikey::ApiKey;
use crate::apikey::KeyId;
use crate::clock::Clock;
use crate::storage::{Conflict, StorageError};
use crate::testing::passphrase_vault_on;
use crate::{Context, Error, Vault};

fn limited(vault: &Vault, limit: u32) -> String {
    made(vault, Some(limit))
}

/// A key with a limit of `limit` per hour, or none, as text.
fn made(vault: &Vault, limit: Option<u32>) -> String {
    let issued = vault
        .create_key(
            &Context::embedded(),
            NewKey {
                ratelimit: limit.map(|limit| RateLimit {
                    limit,
                    period_seconds: 3600,
                }),
                ..NewKey::new("o")
            },
        )
        .unwrap();
    issued.key.expose_secret_text().expose_secret().to_owned()
}

fn id_of(vault: &Vault, text: &str) -> KeyId {
    ApiKey::parse(text, &vault.prefix()).unwrap().id()
}

fn valid_times(vault: &Vault, text: &str, n: usize) {
    for _ in 0..n {
        let verdict = vault
            .verify(&Context::embedded(), VerifyRequest::new(text))
            .unwrap();
        assert!(verdict.valid, "{:?}", verdict.code);
    }
}

fn id(n: u8) -> KeyId {
    KeyId::from_bytes([n; 12])
}

#[test]
fn a_tally_reads_back_from_its_bytes_and_nothing_else_does() {
    let tally = Tally::decode(&[1, 0, 0, 0, 0]).unwrap();
    assert!(tally.is_empty());
    let mut bytes = vec![1, 0, 0, 0, 2];
    bytes.extend_from_slice(&[7; 12]);
    bytes.extend_from_slice(&300u32.to_be_bytes());
    bytes.extend_from_slice(&[9; 12]);
    bytes.extend_from_slice(&1u32.to_be_bytes());
    let tally = Tally::decode(&bytes).unwrap();
    assert_eq!(tally.entries(), &[(id(7), 300), (id(9), 1)]);
    assert_eq!(tally.encode(), bytes);

    let mut newer = bytes.clone();
    newer[0] = 2;
    assert_eq!(Tally::decode(&newer), None, "an unknown format");
    assert_eq!(Tally::decode(&bytes[..bytes.len() - 1]), None, "truncated");
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Tally::decode(&longer), None, "trailing bytes");
    let mut too_many = vec![1];
    too_many.extend_from_slice(&(MAX_TALLIED as u32 + 1).to_be_bytes());
    too_many.resize(5 + (MAX_TALLIED + 1) * 16, 0);
    assert_eq!(Tally::decode(&too_many), None, "past the cap");
    assert_eq!(Tally::decode(&[]), None);
}

#[test]
fn the_tally_counts_each_limited_keys_tokens_once_busiest_first() {
    let (_tmp, vault) = passphrase_vault_on(Clock::manual_now());
    let book = &vault.inner.key_book;
    let (quiet, busy, free) = (limited(&vault, 50), limited(&vault, 50), made(&vault, None));
    // Not a cluster node yet: nothing is counted.
    valid_times(&vault, &busy, 2);
    assert!(book.tally_taken().is_empty());

    book.share_rates();
    valid_times(&vault, &quiet, 1);
    valid_times(&vault, &busy, 3);
    valid_times(&vault, &free, 4);
    let tally = book.tally_taken();
    let expected = [(id_of(&vault, &busy), 3), (id_of(&vault, &quiet), 1)];
    assert_eq!(tally.entries(), &expected, "no key without a limit");
    assert!(book.tally_taken().is_empty(), "each token is tallied once");

    // A refused verify takes no token, so tallies none.
    let one = limited(&vault, 1);
    valid_times(&vault, &one, 1);
    assert_eq!(
        vault
            .verify(&Context::embedded(), VerifyRequest::new(&one))
            .unwrap()
            .code,
        VerifyCode::RateLimited
    );
    assert_eq!(book.tally_taken().entries(), &[(id_of(&vault, &one), 1)]);
}

#[test]
fn past_the_cap_the_quietest_keys_are_left_out_of_a_tally() {
    let (_tmp, vault) = passphrase_vault_on(Clock::manual_now());
    let book = &vault.inner.key_book;
    book.share_rates();
    let keys: Vec<String> = (0..3).map(|_| limited(&vault, 50)).collect();
    for (n, key) in keys.iter().enumerate() {
        valid_times(&vault, key, n + 1);
    }
    let tally = book.tally_within(2);
    let expected = [(id_of(&vault, &keys[2]), 3), (id_of(&vault, &keys[1]), 2)];
    assert_eq!(tally.entries(), &expected);
    // The one left out is not carried over: its tokens of that tally are not shared.
    assert!(book.tally_taken().is_empty());
}

#[test]
fn tokens_another_node_took_come_out_of_this_nodes_bucket_down_to_a_floor() {
    let clock = Clock::manual_now();
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    let book = &vault.inner.key_book;
    let (key, free) = (limited(&vault, 10), made(&vault, None));
    valid_times(&vault, &key, 1);
    valid_times(&vault, &free, 1);
    let absent = id(1);
    let (slots, _) = book.cache.len();

    let other = |entries: &[(KeyId, u32)]| {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for (id, n) in entries {
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        Tally::decode(&bytes).unwrap()
    };
    let (key_id, free_id) = (id_of(&vault, &key), id_of(&vault, &free));
    book.lose_taken(&other(&[(key_id, 4), (free_id, 1000), (absent, 5)]));
    assert_eq!(
        book.cache.len().0,
        slots,
        "no slot made for a key not cached"
    );
    assert_eq!(
        remaining(&vault, &key),
        (true, 4),
        "10 - 1 here - 4 there - 1"
    );
    valid_times(&vault, &free, 1);

    // A burst seen late: the bucket goes into debt, at most one limit deep.
    book.lose_taken(&other(&[(key_id, 1_000_000)]));
    let refused = vault
        .verify(&Context::embedded(), VerifyRequest::new(&key))
        .unwrap();
    assert_eq!(refused.code, VerifyCode::RateLimited);
    let state = refused.ratelimit.unwrap();
    assert_eq!(state.remaining, 0);
    // 11 tokens to refill (from -10 to 1) at 10 an hour.
    assert_eq!(state.reset_seconds, 3960);
    clock.advance(std::time::Duration::from_secs(3960));
    assert!(remaining(&vault, &key).0, "the debt is repaid by refilling");
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
    assert!(
        !remaining(&vault, &text).0,
        "the limit holds across the conflict"
    );
}
