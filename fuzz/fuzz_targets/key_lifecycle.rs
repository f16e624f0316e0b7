//! Model-based: an arbitrary sequence of key operations applied to a real vault and to a plain
//! in-memory model must agree on every verify code and on the credits left.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use vault_core::apikey::{KeyId, Prefix};
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{KeyUpdate, NewKey, VerifyCode, VerifyRequest};
use vault_core::{Context, UnsealMethod, Vault};

#[derive(Debug, Arbitrary)]
enum Op {
    Create { credits: Option<u8>, scoped: bool },
    Verify { key: u8, scope: bool, cost: u8 },
    Revoke { key: u8 },
    Enable { key: u8, enabled: bool },
    Rotate { key: u8 },
    SetCredits { key: u8, credits: Option<u8> },
}

struct Model {
    text: String,
    revoked: bool,
    disabled: bool,
    scoped: bool,
    credits: Option<u64>,
}

/// One vault for the whole run (keys of earlier inputs stay, under other ids).
fn vault() -> &'static Vault {
    static VAULT: OnceLock<(tempfile::TempDir, Vault)> = OnceLock::new();
    &VAULT
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("a temporary directory");
            let method = UnsealMethod::Passphrase { passphrase: Passphrase::new("fuzzing passphrase"), params: KdfParams::INSECURE_FAST };
            let (vault, _) = Vault::init(&tmp.path().join("v"), &method, &Prefix::default()).expect("init");
            (tmp, vault)
        })
        .1
}

fuzz_target!(|ops: Vec<Op>| {
    let vault = vault();
    let ctx = Context::embedded();
    let mut ids: Vec<KeyId> = Vec::new();
    let mut model: BTreeMap<usize, Model> = BTreeMap::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Create { credits, scoped } => {
                let mut new = NewKey::new("fuzz");
                new.credits = credits.map(u64::from);
                if scoped {
                    new.scopes = vec!["s".into()];
                }
                let issued = vault.create_key(&ctx, new).expect("create");
                model.insert(ids.len(), Model {
                    text: issued.key.expose_secret_text().expose_secret().to_owned(),
                    revoked: false,
                    disabled: false,
                    scoped,
                    credits: credits.map(u64::from),
                });
                ids.push(issued.key.id());
            }
            Op::Verify { key, scope, cost } => {
                let Some(m) = model.get_mut(&usize::from(key)) else { continue };
                let cost = u64::from(cost % 3);
                let want = if m.revoked {
                    VerifyCode::Revoked
                } else if m.disabled {
                    VerifyCode::Disabled
                } else if scope && !m.scoped {
                    VerifyCode::InsufficientScope
                } else if m.credits.is_some_and(|c| c < cost) {
                    VerifyCode::UsageExceeded
                } else {
                    VerifyCode::Valid
                };
                if want == VerifyCode::Valid {
                    if let Some(c) = &mut m.credits {
                        *c -= cost;
                    }
                }
                let got = vault.verify(&ctx, VerifyRequest { key: &m.text, scope: scope.then_some("s"), cost }).expect("verify");
                assert_eq!(got.code, want);
            }
            Op::Revoke { key } => {
                let Some(m) = model.get_mut(&usize::from(key)) else { continue };
                vault.revoke_key(&ctx, &ids[usize::from(key)]).expect("revoke");
                m.revoked = true;
            }
            Op::Enable { key, enabled } => {
                let Some(m) = model.get_mut(&usize::from(key)) else { continue };
                let r = vault.update_key(&ctx, &ids[usize::from(key)], KeyUpdate { enabled: Some(enabled), ..KeyUpdate::default() });
                assert_eq!(r.is_ok(), !m.revoked);
                if !m.revoked {
                    m.disabled = !enabled;
                }
            }
            Op::Rotate { key } => {
                let Some(m) = model.get_mut(&usize::from(key)) else { continue };
                let r = vault.rotate_key(&ctx, &ids[usize::from(key)], 0);
                assert_eq!(r.is_ok(), !m.revoked);
                if let Ok(issued) = r {
                    m.text = issued.key.expose_secret_text().expose_secret().to_owned();
                }
            }
            Op::SetCredits { key, credits } => {
                let Some(m) = model.get_mut(&usize::from(key)) else { continue };
                let credits = credits.map(u64::from);
                let r = vault.update_key(&ctx, &ids[usize::from(key)], KeyUpdate { credits: Some(credits), ..KeyUpdate::default() });
                assert_eq!(r.is_ok(), !m.revoked);
                if !m.revoked {
                    m.credits = credits;
                }
            }
        }
    }
    for (i, m) in &model {
        assert_eq!(vault.show_key(&ids[*i]).expect("show").credits, m.credits);
    }
});
