//! Model-based property test of the key lifecycle: random sequences of operations applied to
//! the vault and to a plain in-memory model must give the same verify codes and states.

use std::collections::BTreeMap;

use proptest::prelude::*;
use secrecy::ExposeSecret;
use vault_core::keys::{KeyUpdate, NewKey, VerifyCode, VerifyRequest};

use crate::common::*;

#[derive(Debug, Clone)]
enum Op {
    Create {
        credits: Option<u8>,
        scope: bool,
    },
    Verify {
        key: usize,
        old: bool,
        scope: bool,
        cost: u8,
    },
    Revoke {
        key: usize,
    },
    Disable {
        key: usize,
        disabled: bool,
    },
    Rotate {
        key: usize,
        grace: bool,
    },
    SetCredits {
        key: usize,
        credits: Option<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(credits, scope)| Op::Create { credits, scope }),
        (0usize..6, any::<bool>(), any::<bool>(), 0u8..3).prop_map(|(key, old, scope, cost)| {
            Op::Verify {
                key,
                old,
                scope,
                cost,
            }
        }),
        (0usize..6).prop_map(|key| Op::Revoke { key }),
        (0usize..6, any::<bool>()).prop_map(|(key, disabled)| Op::Disable { key, disabled }),
        (0usize..6, any::<bool>()).prop_map(|(key, grace)| Op::Rotate { key, grace }),
        (0usize..6, proptest::option::of(0u8..4))
            .prop_map(|(key, credits)| Op::SetCredits { key, credits }),
    ]
}

/// What the model keeps of a key.
#[derive(Debug, Clone)]
struct Model {
    current: String,
    /// The previous secret while its grace period runs (the model's grace is an hour).
    previous: Option<String>,
    revoked: bool,
    disabled: bool,
    scoped: bool,
    credits: Option<u64>,
}

impl Model {
    fn verify(&mut self, old: bool, scope: bool, cost: u64) -> VerifyCode {
        if old && self.previous.is_none() {
            return VerifyCode::NotFound;
        }
        let code = if self.revoked {
            VerifyCode::Revoked
        } else if self.disabled {
            VerifyCode::Disabled
        } else if scope && !self.scoped {
            VerifyCode::InsufficientScope
        } else if self.credits.is_some_and(|c| c < cost) {
            VerifyCode::UsageExceeded
        } else {
            VerifyCode::Valid
        };
        if code == VerifyCode::Valid
            && let Some(c) = &mut self.credits
        {
            *c -= cost;
        }
        code
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn the_vault_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let (_tmp, vault) = passphrase_vault();
        let mut ids = Vec::new();
        let mut model: BTreeMap<usize, Model> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Create { credits, scope } => {
                    let mut new = NewKey::new("owner");
                    new.credits = credits.map(u64::from);
                    if scope {
                        new.scopes = vec!["s".into()];
                    }
                    let issued = vault.create_key(&ctx(), new).unwrap();
                    model.insert(ids.len(), Model {
                        current: issued.key.expose_secret_text().expose_secret().to_owned(),
                        previous: None,
                        revoked: false,
                        disabled: false,
                        scoped: scope,
                        credits: credits.map(u64::from),
                    });
                    ids.push(issued.key.id());
                }
                Op::Verify { key, old, scope, cost } => {
                    let Some(m) = model.get_mut(&key) else { continue };
                    let text = if old { m.previous.clone().unwrap_or_else(|| m.current.clone() + "x") } else { m.current.clone() };
                    let want = m.verify(old, scope, u64::from(cost));
                    let req = VerifyRequest { key: &text, scope: scope.then_some("s"), cost: u64::from(cost) };
                    let got = vault.verify(&ctx(), req).unwrap();
                    let want = if old && m.previous.is_none() { VerifyCode::Malformed } else { want };
                    prop_assert_eq!(got.code, want, "key {} old {}", key, old);
                }
                Op::Revoke { key } => {
                    let Some(m) = model.get_mut(&key) else { continue };
                    vault.revoke_key(&ctx(), &ids[key]).unwrap();
                    m.revoked = true;
                    m.previous = None;
                }
                Op::Disable { key, disabled } => {
                    let Some(m) = model.get_mut(&key) else { continue };
                    let r = vault.update_key(&ctx(), &ids[key], KeyUpdate { enabled: Some(!disabled), ..KeyUpdate::default() });
                    prop_assert_eq!(r.is_ok(), !m.revoked);
                    if !m.revoked {
                        m.disabled = disabled;
                    }
                }
                Op::Rotate { key, grace } => {
                    let Some(m) = model.get_mut(&key) else { continue };
                    let r = vault.rotate_key(&ctx(), &ids[key], if grace { 3600 } else { 0 });
                    prop_assert_eq!(r.is_ok(), !m.revoked);
                    if let Ok(issued) = r {
                        let new = issued.key.expose_secret_text().expose_secret().to_owned();
                        m.previous = grace.then(|| std::mem::replace(&mut m.current, new.clone()));
                        m.current = new;
                    }
                }
                Op::SetCredits { key, credits } => {
                    let Some(m) = model.get_mut(&key) else { continue };
                    let r = vault.update_key(&ctx(), &ids[key], KeyUpdate { credits: Some(credits.map(u64::from)), ..KeyUpdate::default() });
                    prop_assert_eq!(r.is_ok(), !m.revoked);
                    if !m.revoked {
                        m.credits = credits.map(u64::from);
                    }
                }
            }
        }
        // And the stored state agrees with the model.
        for (i, m) in &model {
            let info = vault.show_key(&ids[*i]).unwrap();
            prop_assert_eq!(info.revoked_at.is_some(), m.revoked);
            prop_assert_eq!(info.credits, m.credits);
        }
    }
}
