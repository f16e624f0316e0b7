//! A verify handed over as pending (`AsyncVerify::MustBlock`) and finished with
//! `Vault::finish_verify` answers and logs exactly as the blocking verify would have.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::task::{Poll, Waker};

use secrecy::ExposeSecret;

use super::{AsyncVerify, IssuedKey, NewKey, PendingVerify, Verdict, VerifyCode, VerifyRequest};
use crate::apikey::{ApiKey, Prefix};
use crate::audit::entry::Entry;
use crate::kdf::{KdfParams, Passphrase};
use crate::{Context, UnsealMethod, Vault};

fn new_vault() -> (tempfile::TempDir, Vault) {
    let tmp = tempfile::tempdir().unwrap();
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("a long passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let (vault, _) = Vault::init(&tmp.path().join("v"), &method, &Prefix::default()).unwrap();
    (tmp, vault)
}

fn ctx() -> Context {
    Context::embedded()
}

fn text(key: &ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

fn issue(vault: &Vault, new: NewKey) -> (IssuedKey, String) {
    let issued = vault.create_key(&ctx(), new).unwrap();
    let text = text(&issued.key);
    (issued, text)
}

/// Polls `verify_async` once, which must hand the verify over.
fn must_block(vault: &Vault, req: VerifyRequest<'_>, throttled: bool) -> PendingVerify {
    let ctx = ctx();
    let mut future = std::pin::pin!(vault.verify_async(&ctx, req, throttled));
    let mut cx = std::task::Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(AsyncVerify::MustBlock(pending))) => pending,
        Poll::Ready(other) => panic!("not handed over: {other:?}"),
        Poll::Pending => panic!("not handed over: it waits"),
    }
}

/// Hands `req` over while a change holds its key's lock, then finishes it.
fn finished_past_a_held_lock(vault: &Vault, req: VerifyRequest<'_>, throttled: bool) -> Verdict {
    let key = ApiKey::parse(req.key, &vault.prefix()).unwrap();
    let slot = vault.inner.key_book.cache.slot(&key.id());
    let held = super::lock(&slot);
    let pending = must_block(vault, req, throttled);
    drop(held);
    drop(slot);
    vault.finish_verify(&ctx(), pending).unwrap()
}

/// The newest entry, or none if the log holds `size` entries still.
fn entry_since(vault: &Vault, size: u64) -> Option<Entry> {
    let now = vault.audit_size();
    assert!(now <= size + 1, "at most one entry per verify");
    (now > size).then(|| Entry::parse(&vault.audit_entry(now - 1).unwrap().unwrap()).unwrap())
}

/// What an entry says, without its place and time.
fn said(entry: Option<Entry>) -> Option<impl PartialEq + std::fmt::Debug> {
    entry.map(|e| (e.event, e.outcome, e.key_id, e.owner, e.actor, e.details))
}

#[test]
fn a_verify_finished_past_a_held_lock_answers_and_logs_as_the_blocking_one() {
    let (_tmp, vault) = new_vault();
    let scoped = NewKey {
        scopes: vec!["read".into()],
        ..NewKey::new("o")
    };
    let (issued, valid) = issue(&vault, scoped);
    let wrong = text(&ApiKey::new(
        vault.prefix(),
        issued.key.id(),
        crate::apikey::KeySecret::random(),
    ));
    let unknown = text(&ApiKey::generate(&vault.prefix()));
    let cases = [
        (VerifyRequest::new(&valid), VerifyCode::Valid),
        (
            VerifyRequest {
                scope: Some("write"),
                ..VerifyRequest::new(&valid)
            },
            VerifyCode::InsufficientScope,
        ),
        (VerifyRequest::new(&wrong), VerifyCode::NotFound),
        (VerifyRequest::new(&unknown), VerifyCode::NotFound),
    ];
    for (req, code) in cases {
        for throttled in [false, true] {
            let size = vault.audit_size();
            let finished = finished_past_a_held_lock(&vault, req, throttled);
            let finished_entry = said(entry_since(&vault, size));
            let size = vault.audit_size();
            let blocking = if throttled {
                vault.verify_throttled(&ctx(), req).unwrap()
            } else {
                vault.verify(&ctx(), req).unwrap()
            };
            assert_eq!(finished.code, code);
            assert_eq!(finished, blocking, "{code:?}, throttled {throttled}");
            assert_eq!(finished_entry, said(entry_since(&vault, size)));
        }
    }
}

#[test]
fn a_credit_spend_finished_spends_once_and_logs_as_the_blocking_one() {
    let (_tmp, vault) = new_vault();
    let paid = NewKey {
        credits: Some(2),
        ..NewKey::new("o")
    };
    let (issued, text) = issue(&vault, paid);
    let req = VerifyRequest::new(&text);
    let size = vault.audit_size();
    let pending = must_block(&vault, req, false);
    assert_eq!(vault.audit_size(), size, "nothing was logged yet");
    let finished = vault.finish_verify(&ctx(), pending).unwrap();
    let finished_entry = said(entry_since(&vault, size));
    assert_eq!(finished.credits_remaining, Some(1));
    assert_eq!(vault.show_key(&issued.key.id()).unwrap().credits, Some(1));
    // The blocking verify spends the last credit; but for what is left, the same answer.
    let size = vault.audit_size();
    let mut blocking = vault.verify(&ctx(), req).unwrap();
    assert_eq!(blocking.credits_remaining, Some(0));
    blocking.credits_remaining = Some(1);
    assert_eq!(finished, blocking);
    let mut blocking_entry = entry_since(&vault, size).unwrap();
    blocking_entry
        .details
        .insert("credits_remaining".into(), 1.into());
    assert_eq!(finished_entry, said(Some(blocking_entry)));
}

#[test]
fn a_verify_finished_after_its_key_was_rotated_reads_the_record_as_it_is_now() {
    let (_tmp, vault) = new_vault();
    let paid = NewKey {
        credits: Some(10),
        ..NewKey::new("o")
    };
    let (issued, old) = issue(&vault, paid);
    let id = issued.key.id();
    let req = VerifyRequest::new(&old);

    // Rotated with a grace period: the old secret matches the previous digest.
    let pending = must_block(&vault, req, false);
    vault.rotate_key(&ctx(), &id, 3600).unwrap();
    let finished = vault.finish_verify(&ctx(), pending).unwrap();
    assert_eq!(finished.code, VerifyCode::Valid);
    assert!(finished.previous_secret.is_some());
    let blocking = vault.verify(&ctx(), req).unwrap();
    assert_eq!(blocking.previous_secret, finished.previous_secret);

    // Rotated again: the old secret is over, and the answer is NOT_FOUND, logged against the
    // key with the digest of the presented text, as the blocking verify logs it.
    let pending = must_block(&vault, req, false);
    vault.rotate_key(&ctx(), &id, 0).unwrap();
    let size = vault.audit_size();
    let finished = vault.finish_verify(&ctx(), pending).unwrap();
    let finished_entry = said(entry_since(&vault, size));
    let size = vault.audit_size();
    let blocking = vault.verify(&ctx(), req).unwrap();
    assert_eq!(finished.code, VerifyCode::NotFound);
    assert_eq!(finished, blocking);
    assert_eq!(finished_entry, said(entry_since(&vault, size)));
    assert!(finished_entry.is_some());
    assert_eq!(vault.show_key(&id).unwrap().credits, Some(8));
}

#[test]
fn a_pending_verify_names_no_secret() {
    let (_tmp, vault) = new_vault();
    let paid = NewKey {
        credits: Some(1),
        ..NewKey::new("o")
    };
    let (issued, text) = issue(&vault, paid);
    let pending = must_block(&vault, VerifyRequest::new(&text), false);
    let mut shown = format!("{pending:?}");
    shown += &format!("{:?}", AsyncVerify::MustBlock(pending));
    assert!(shown.contains(&issued.key.id().to_string()), "{shown}");
    assert!(!shown.contains(&text), "{shown}");
    let secret = &text[text.len() - 30..];
    assert!(!shown.contains(secret), "{shown}");
}
