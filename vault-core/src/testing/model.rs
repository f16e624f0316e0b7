//! The key-lifecycle model: a plain in-memory account of what each key should answer,
//! driven side by side with a real vault. The property test (`tests/vault/model.rs`) and the
//! fuzz target (`fuzz/fuzz_targets/key_lifecycle.rs`) generate the operations their own way
//! and share this one model, so the rules are written once.

use secrecy::ExposeSecret as _;

use crate::apikey::KeyId;
use crate::context::Context;
use crate::keys::{KeyUpdate, NewKey, VerifyCode, VerifyRequest};
use crate::vault::Vault;

/// One operation on the vault's keys. `key` picks a key by creation order; an operation on a
/// key that does not exist yet is skipped.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Creates a key, with credits and a scope if asked.
    Create {
        /// Credits to start with, if any.
        credits: Option<u8>,
        /// Whether the key holds the scope `s`.
        scoped: bool,
    },
    /// Verifies a key's current secret, or its previous one.
    Verify {
        /// Which key.
        key: u8,
        /// Present the previous secret (or, if none is in grace, a malformed text).
        old: bool,
        /// Ask for the scope `s`.
        scope: bool,
        /// Credits to spend (taken modulo 3).
        cost: u8,
    },
    /// Revokes a key.
    Revoke {
        /// Which key.
        key: u8,
    },
    /// Disables or enables a key.
    Disable {
        /// Which key.
        key: u8,
        /// Disabled after the operation.
        disabled: bool,
    },
    /// Rotates a key, with an hour of grace for the old secret or none.
    Rotate {
        /// Which key.
        key: u8,
        /// Whether the old secret keeps working for an hour.
        grace: bool,
    },
    /// Sets or clears a key's credits.
    SetCredits {
        /// Which key.
        key: u8,
        /// The new credits (none: unlimited).
        credits: Option<u8>,
    },
}

/// What the model keeps of a key (its texts are secrets: no `Debug`).
#[derive(Clone)]
struct Expected {
    current: String,
    /// The previous secret while its grace period runs (the model's grace is an hour, longer
    /// than any run).
    previous: Option<String>,
    revoked: bool,
    disabled: bool,
    scoped: bool,
    credits: Option<u64>,
}

impl Expected {
    fn verify(&mut self, scope: bool, cost: u64) -> VerifyCode {
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

/// A vault and the model of its keys, driven together.
pub struct KeyLifecycle<'v> {
    vault: &'v Vault,
    ctx: Context,
    ids: Vec<KeyId>,
    keys: Vec<Expected>,
}

impl std::fmt::Debug for KeyLifecycle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLifecycle")
            .field("keys", &self.ids)
            .finish_non_exhaustive()
    }
}

impl<'v> KeyLifecycle<'v> {
    /// Starts a model of `vault`'s keys (keys created before are not part of it).
    pub fn new(vault: &'v Vault) -> KeyLifecycle<'v> {
        KeyLifecycle {
            vault,
            ctx: Context::embedded(),
            ids: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Applies `op` to the vault and the model; an error says where they disagree (or a vault
    /// call failed that should not have).
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        let (vault, ctx) = (self.vault, &self.ctx);
        match *op {
            Op::Create { credits, scoped } => {
                let mut new = NewKey::new("owner");
                new.credits = credits.map(u64::from);
                if scoped {
                    new.scopes = vec!["s".into()];
                }
                let issued = vault
                    .create_key(ctx, new)
                    .map_err(|e| format!("create: {e}"))?;
                self.keys.push(Expected {
                    current: issued.key.expose_secret_text().expose_secret().to_owned(),
                    previous: None,
                    revoked: false,
                    disabled: false,
                    scoped,
                    credits: credits.map(u64::from),
                });
                self.ids.push(issued.key.id());
            }
            Op::Verify {
                key,
                old,
                scope,
                cost,
            } => {
                let Some(m) = self.keys.get_mut(usize::from(key)) else {
                    return Ok(());
                };
                let cost = u64::from(cost % 3);
                let (text, want) = match (&m.previous, old) {
                    // No previous secret: a text one character too long, never a key.
                    (None, true) => (m.current.clone() + "x", VerifyCode::Malformed),
                    (Some(previous), true) => (previous.clone(), m.verify(scope, cost)),
                    (_, false) => (m.current.clone(), m.verify(scope, cost)),
                };
                let req = VerifyRequest {
                    key: &text,
                    scope: scope.then_some("s"),
                    cost,
                };
                let got = vault.verify(ctx, req).map_err(|e| format!("verify: {e}"))?;
                if got.code != want {
                    return Err(format!(
                        "key {key} (old secret: {old}): the vault says {:?}, the model {want:?}",
                        got.code
                    ));
                }
            }
            Op::Revoke { key } => {
                let Some(m) = self.keys.get_mut(usize::from(key)) else {
                    return Ok(());
                };
                let id = &self.ids[usize::from(key)];
                vault
                    .revoke_key(ctx, id)
                    .map_err(|e| format!("revoke: {e}"))?;
                m.revoked = true;
                m.previous = None;
            }
            Op::Disable { key, disabled } => {
                let Some(m) = self.keys.get_mut(usize::from(key)) else {
                    return Ok(());
                };
                let update = KeyUpdate {
                    enabled: Some(!disabled),
                    ..KeyUpdate::default()
                };
                let r = vault.update_key(ctx, &self.ids[usize::from(key)], update);
                agree("update (enabled)", r.is_ok(), !m.revoked)?;
                if !m.revoked {
                    m.disabled = disabled;
                }
            }
            Op::Rotate { key, grace } => {
                let Some(m) = self.keys.get_mut(usize::from(key)) else {
                    return Ok(());
                };
                let grace_seconds = if grace { 3600 } else { 0 };
                let r = vault.rotate_key(ctx, &self.ids[usize::from(key)], grace_seconds);
                agree("rotate", r.is_ok(), !m.revoked)?;
                if let Ok(issued) = r {
                    let new = issued.key.expose_secret_text().expose_secret().to_owned();
                    let old = std::mem::replace(&mut m.current, new);
                    m.previous = grace.then_some(old);
                }
            }
            Op::SetCredits { key, credits } => {
                let Some(m) = self.keys.get_mut(usize::from(key)) else {
                    return Ok(());
                };
                let credits = credits.map(u64::from);
                let update = KeyUpdate {
                    credits: Some(credits),
                    ..KeyUpdate::default()
                };
                let r = vault.update_key(ctx, &self.ids[usize::from(key)], update);
                agree("update (credits)", r.is_ok(), !m.revoked)?;
                if !m.revoked {
                    m.credits = credits;
                }
            }
        }
        Ok(())
    }

    /// Checks that the stored state of every key agrees with the model.
    pub fn check_stored(&self) -> Result<(), String> {
        for (i, m) in self.keys.iter().enumerate() {
            let info = self
                .vault
                .show_key(&self.ids[i])
                .map_err(|e| format!("show: {e}"))?;
            agree("revoked", info.revoked_at.is_some(), m.revoked)?;
            if info.credits != m.credits {
                return Err(format!(
                    "key {i}: the vault holds {:?} credits, the model {:?}",
                    info.credits, m.credits
                ));
            }
        }
        Ok(())
    }
}

fn agree(what: &str, vault: bool, model: bool) -> Result<(), String> {
    if vault == model {
        Ok(())
    } else {
        Err(format!("{what}: the vault says {vault}, the model {model}"))
    }
}
