//! Verifies that are refused or must block before anything is logged or spent.

use super::*;

/// `verify_async` never waits on a key's lock or commits a credit spend on the caller's async
/// worker: both answer `MustBlock` before anything changed; other verifies complete.
#[test]
fn an_async_verify_that_would_block_says_so_and_changes_nothing() {
    use crate::keys::{AsyncVerify, NewKey, VerifyRequest};
    use std::future::Future;
    let (_tmp, vault) = new_vault();
    let plain = vault.create_key(&ctx(), NewKey::new("o")).unwrap();
    let paid = vault
        .create_key(
            &ctx(),
            NewKey {
                credits: Some(5),
                ..NewKey::new("o")
            },
        )
        .unwrap();
    let (plain_text, paid_text) = (key_text(&plain), key_text(&paid));
    let first_poll = |req: VerifyRequest<'_>| {
        let ctx = ctx();
        let mut future = std::pin::pin!(vault.verify_async(&ctx, req, false));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(answer) => Some(answer.unwrap()),
            std::task::Poll::Pending => None,
        }
    };
    let size = vault.audit_size();
    // A key whose lock a change holds.
    let slot = vault.inner.key_book.cache.slot(&plain.key.id());
    let held = crate::keys::lock(&slot);
    assert!(matches!(
        first_poll(VerifyRequest::new(&plain_text)),
        Some(AsyncVerify::MustBlock(_))
    ));
    drop(held);
    // A credit spend.
    let spend = VerifyRequest {
        cost: 1,
        ..VerifyRequest::new(&paid_text)
    };
    assert!(matches!(first_poll(spend), Some(AsyncVerify::MustBlock(_))));
    assert_eq!(vault.show_key(&paid.key.id()).unwrap().credits, Some(5));
    assert_eq!(vault.audit_size(), size, "nothing was logged");
    // Anything else completes once its entry is durable.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ctx = ctx();
    let answer = runtime
        .block_on(vault.verify_async(&ctx, VerifyRequest::new(&plain_text), false))
        .unwrap();
    assert!(matches!(answer, AsyncVerify::Verdict(v) if v.valid));
    assert_eq!(vault.audit_size(), size + 1);
}

#[test]
fn a_required_scope_longer_than_a_key_may_hold_is_refused_before_anything_is_logged() {
    use crate::keys::{MAX_SCOPE, NewKey, VerifyCode, VerifyRequest};
    let (_tmp, vault) = new_vault();
    let longest = "s".repeat(MAX_SCOPE);
    let issued = vault
        .create_key(
            &ctx(),
            NewKey {
                scopes: vec![longest.clone()],
                ..NewKey::new("o")
            },
        )
        .unwrap();
    let text = key_text(&issued);
    let too_long = "s".repeat(MAX_SCOPE + 1);
    let size = vault.audit_size();
    for presented in [text.as_str(), "garbage"] {
        let req = VerifyRequest {
            scope: Some(&too_long),
            ..VerifyRequest::new(presented)
        };
        let e = vault.verify(&ctx(), req).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let e = vault.verify_throttled(&ctx(), req).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = runtime
            .block_on(vault.verify_async(&ctx(), req, false))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    }
    assert_eq!(vault.audit_size(), size, "nothing was logged");
    // The longest scope a key may hold is still checked.
    let req = VerifyRequest {
        scope: Some(&longest),
        ..VerifyRequest::new(&text)
    };
    assert_eq!(vault.verify(&ctx(), req).unwrap().code, VerifyCode::Valid);
    assert_eq!(vault.audit_size(), size + 1);
}
