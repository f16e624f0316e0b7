//! The seal configuration: how the root key is wrapped, and by what.
//!
//! The root key (256 random bits) is never stored in the clear. It is sealed with
//! XChaCha20-Poly1305 under `HKDF(unseal key, "keyvault/v1/root-wrap")`, where the unseal key is
//! Argon2id of the operator's passphrase, or the 256-bit secret recovered from `t` of `n` Shamir
//! shares. The associated data binds every other field of the configuration (vault id, key prefix,
//! creation time and the whole [`SealMethod`], salt and Argon2 parameters included), so an
//! edited field fails to unwrap instead of quietly weakening it.
//! A wrong passphrase or share shows up as that AEAD failing; no hash of any key is stored.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypto::{self, SecretKey, fill_random, label};
use crate::kdf::{self, KdfParams, Passphrase, SALT_LEN};
use crate::shamir::{self, Share, ShareError, VaultId};
use crate::{Error, Result};

/// How the vault is unsealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealMethod {
    /// A passphrase through Argon2id.
    Passphrase {
        /// Argon2 salt.
        salt: [u8; SALT_LEN],
        /// Argon2 parameters.
        params: KdfParams,
    },
    /// `threshold` of `shares` Shamir shares.
    Shares {
        /// Shares needed.
        threshold: u8,
        /// Shares made.
        shares: u8,
    },
}

impl SealMethod {
    /// The method's name as the API reports it.
    pub fn name(&self) -> &'static str {
        match self {
            SealMethod::Passphrase { .. } => "passphrase",
            SealMethod::Shares { .. } => "shares",
        }
    }
}

/// What is stored at `Meta/seal` (bincode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealConfig {
    /// The vault's random public id.
    pub vault_id: VaultId,
    /// API-key prefix chosen at init.
    pub prefix: String,
    /// Unix seconds of init.
    pub created_at: u64,
    /// How the root key is wrapped.
    pub method: SealMethod,
    /// `nonce || ciphertext || tag` of the root key.
    pub wrapped_root: Vec<u8>,
}

/// Everything in the configuration but the wrapped key itself.
fn aad(vault_id: &VaultId, prefix: &str, created_at: u64, method: &SealMethod) -> Vec<u8> {
    [
        label::ROOT_WRAP,
        &codec::encode(&(vault_id, prefix, created_at, method)),
    ]
    .concat()
}

impl SealConfig {
    /// Wraps `root` under `unseal_key` with `method`.
    pub fn new(
        vault_id: VaultId,
        prefix: String,
        created_at: u64,
        method: SealMethod,
        root: &SecretKey,
        unseal_key: &SecretKey,
    ) -> SealConfig {
        let wrapped_root = crypto::seal(
            &unseal_key.derive(label::ROOT_WRAP),
            &aad(&vault_id, &prefix, created_at, &method),
            root.expose(),
        );
        SealConfig {
            vault_id,
            prefix,
            created_at,
            method,
            wrapped_root,
        }
    }

    /// The same vault wrapped anew (rekey).
    pub fn rewrapped(
        &self,
        method: SealMethod,
        root: &SecretKey,
        unseal_key: &SecretKey,
    ) -> SealConfig {
        SealConfig::new(
            self.vault_id,
            self.prefix.clone(),
            self.created_at,
            method,
            root,
            unseal_key,
        )
    }

    /// Unwraps the root key; [`Error::WrongCredential`] when `unseal_key` is not the right one.
    pub fn unwrap_root(&self, unseal_key: &SecretKey) -> Result<SecretKey> {
        let plain = crypto::open(
            &unseal_key.derive(label::ROOT_WRAP),
            &aad(&self.vault_id, &self.prefix, self.created_at, &self.method),
            &self.wrapped_root,
        )
        .map_err(|_| Error::WrongCredential)?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::WrongCredential)?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// Checks one share given toward unsealing or a ceremony: of this vault, of its current
    /// split, and not one of `given` (the shares given so far). The one place a share is judged
    /// before it is combined; a share that passes can still be forged, which only combining
    /// (and the root key then failing to unwrap) shows.
    pub fn admit_share(&self, given: &[Share], share: &Share) -> Result<()> {
        let SealMethod::Shares { threshold, .. } = self.method else {
            return Err(Error::WrongMethod {
                expected: "a passphrase",
                given: "a share",
            });
        };
        if share.vault_id() != self.vault_id {
            return Err(ShareError::OtherVault.into());
        }
        if share.threshold() != threshold {
            return Err(ShareError::OtherSplit(share.threshold()).into());
        }
        if given.iter().any(|s| s.index() == share.index()) {
            return Err(ShareError::Repeated.into());
        }
        Ok(())
    }

    /// The unseal key from a passphrase (Argon2id; slow, see [`crate::kdf`]).
    pub fn passphrase_key(&self, passphrase: &Passphrase) -> Result<SecretKey> {
        match &self.method {
            SealMethod::Passphrase { salt, params } => Ok(kdf::derive(passphrase, salt, params)?),
            SealMethod::Shares { .. } => Err(Error::WrongMethod {
                expected: "shares",
                given: "a passphrase",
            }),
        }
    }
}

/// A credential that proves the right to unseal: the passphrase, or `t` shares.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The current passphrase.
    Passphrase(Passphrase),
    /// At least the threshold of current shares.
    Shares(Vec<Share>),
}

/// Checks that `current` (the passphrase, or at least the threshold of distinct shares)
/// unwraps the root key of `config`.
pub(crate) fn check_credential(config: &SealConfig, current: Credential) -> Result<()> {
    let key = match current {
        Credential::Passphrase(p) => config.passphrase_key(&p)?,
        Credential::Shares(shares) => {
            let SealMethod::Shares { threshold, .. } = config.method else {
                return Err(Error::WrongMethod {
                    expected: "a passphrase",
                    given: "shares",
                });
            };
            for (i, share) in shares.iter().enumerate() {
                config.admit_share(&shares[..i], share)?;
            }
            if shares.len() < usize::from(threshold) {
                return Err(Error::InvalidInput(format!(
                    "shares: {threshold} current shares are needed, {} were given",
                    shares.len()
                )));
            }
            shamir::combine(&shares).ok_or(Error::WrongCredential)?
        }
    };
    config.unwrap_root(&key).map(|_| ())
}

/// How a new vault (or a rekeyed one) is unsealed.
#[derive(Debug, Clone)]
pub enum UnsealMethod {
    /// An operator passphrase (at least 12 characters) through Argon2id with `params`.
    Passphrase {
        /// The passphrase.
        passphrase: Passphrase,
        /// Argon2id parameters; [`KdfParams::DEFAULT`] unless testing.
        params: KdfParams,
    },
    /// Shamir shares: any `threshold` of `shares` unseal; `2 <= threshold <= shares <= 255`.
    Shares {
        /// Shares needed.
        threshold: u8,
        /// Shares made.
        shares: u8,
    },
}

impl UnsealMethod {
    /// The default for shares: 3 of 5.
    pub const DEFAULT_SHARES: UnsealMethod = UnsealMethod::Shares {
        threshold: 3,
        shares: 5,
    };

    /// Checks the method, makes the unseal key and the stored form of the method.
    pub(crate) fn prepare(&self, vault_id: VaultId) -> Result<(SealMethod, SecretKey, Vec<Share>)> {
        Ok(self.prepare_new()?.realise(vault_id))
    }

    /// Checks the method; a passphrase goes through Argon2id now, with a fresh salt (slow).
    pub(crate) fn prepare_new(&self) -> Result<NewSeal> {
        match self {
            UnsealMethod::Passphrase { passphrase, params } => {
                passphrase.check_new()?;
                params.check_for_write()?;
                let mut salt = [0u8; SALT_LEN];
                fill_random(&mut salt);
                let key = kdf::derive(passphrase, &salt, params)?;
                let method = SealMethod::Passphrase {
                    salt,
                    params: *params,
                };
                Ok(NewSeal::Passphrase { method, key })
            }
            &UnsealMethod::Shares { threshold, shares } => {
                if threshold < 2 || threshold > shares {
                    return Err(Error::InvalidInput(format!(
                        "shares: the threshold must be at least 2 and at most the number of \
                         shares (got {threshold} of {shares})"
                    )));
                }
                Ok(NewSeal::Shares { threshold, shares })
            }
        }
    }
}

impl NewSeal {
    /// The stored method, the unseal key, and the shares to hand out (split now).
    pub(crate) fn realise(self, vault_id: VaultId) -> (SealMethod, SecretKey, Vec<Share>) {
        match self {
            NewSeal::Passphrase { method, key } => (method, key, Vec::new()),
            NewSeal::Shares { threshold, shares } => {
                let key = SecretKey::random();
                let split = shamir::split(&key, vault_id, threshold, shares);
                (SealMethod::Shares { threshold, shares }, key, split)
            }
        }
    }
}

/// The new seal of a rekey, prepared at the start.
pub(crate) enum NewSeal {
    /// A new passphrase: its salt and parameters, and the unseal key Argon2id made of it.
    Passphrase {
        /// The method as it will be stored.
        method: SealMethod,
        /// The new unseal key.
        key: SecretKey,
    },
    /// New shares, split at completion.
    Shares {
        /// Shares needed.
        threshold: u8,
        /// Shares made.
        shares: u8,
    },
}
