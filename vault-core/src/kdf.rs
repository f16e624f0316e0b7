//! Argon2id (RFC 9106): from an operator's passphrase to the key that unwraps the root key.
//!
//! Parameters travel with the salt in the seal configuration. On write they must reach RFC 9106's
//! second recommended choice unless the vault is marked `insecure_kdf` (tests and `serve --dev`);
//! on read they must lie between a sanity floor and a ceiling, so a hostile or corrupt file can
//! neither make unseal trivially cheap nor make it allocate 100 GiB.
//!
//! Argon2 is slow on purpose (about 0.2 s and 64 MiB with the defaults): callers on an async
//! runtime run unseal inside `tokio::task::spawn_blocking`. At most one evaluation runs at a time
//! in a process, so concurrent unseal attempts cannot multiply the memory use.

use std::sync::Mutex;

use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{KEY_LEN, SecretKey};

/// Salt length stored with the parameters.
pub const SALT_LEN: usize = 16;

/// Minimum passphrase length, in characters, accepted at init and rekey.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Serialises Argon2 evaluations: each one takes `m_kib` of memory.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Argon2id cost parameters, stored in the vault beside the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// Set for test-grade parameters below the RFC 9106 floor; warned at every unseal.
    pub insecure: bool,
}

impl KdfParams {
    /// RFC 9106 section 4, second recommended option: 64 MiB, t=3, p=4.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
        insecure: false,
    };

    /// Cheap parameters for tests and `serve --dev`; marked insecure.
    pub const INSECURE_FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
        insecure: true,
    };

    /// Checks parameters about to be written (init, rekey).
    pub fn check_for_write(&self) -> Result<(), KdfError> {
        self.check_for_read()?;
        let d = Self::DEFAULT;
        if !self.insecure && (self.m_kib < d.m_kib || self.t < d.t || self.p < d.p) {
            return Err(KdfError::BelowRecommended);
        }
        Ok(())
    }

    /// Checks parameters read from disk: above the ceiling (m > 4 GiB, t > 20, p > 16) or below
    /// the sanity floor (m < 8 KiB, t < 1, p < 1, m < 8 p) they are refused.
    pub fn check_for_read(&self) -> Result<(), KdfError> {
        if self.m_kib > 4 * 1024 * 1024 || self.t > 20 || self.p > 16 {
            return Err(KdfError::AboveCeiling);
        }
        if self.m_kib < 8 || self.t < 1 || self.p < 1 || self.m_kib < 8 * self.p {
            return Err(KdfError::BelowFloor);
        }
        Ok(())
    }
}

/// Argon2 parameters that must not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    /// Below RFC 9106's 64 MiB, t=3, p=4 without the insecure mark.
    #[error(
        "Argon2id parameters below 64 MiB, t=3, p=4 are refused unless marked insecure (tests only)"
    )]
    BelowRecommended,
    /// Above what this version will evaluate.
    #[error("Argon2id parameters above the ceiling (m > 4 GiB, t > 20 or p > 16) are refused")]
    AboveCeiling,
    /// Below a sane floor.
    #[error("Argon2id parameters below the floor (m < 8 KiB or t < 1) are refused")]
    BelowFloor,
}

/// An operator's passphrase. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct Passphrase(SecretString);

impl Passphrase {
    /// Wraps a passphrase. Length is checked where a new one is set ([`Passphrase::check_new`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self(SecretString::from(text.into()))
    }

    /// Refuses a passphrase too short to be set at init or rekey.
    pub fn check_new(&self) -> Result<(), PassphraseTooShort> {
        if self.0.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(PassphraseTooShort);
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

/// A new passphrase shorter than [`MIN_PASSPHRASE_CHARS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the passphrase must be at least 12 characters long")]
pub struct PassphraseTooShort;

/// Derives the unseal key from a passphrase. Checks `params` against the read bounds first.
pub fn derive(
    passphrase: &Passphrase,
    salt: &[u8; SALT_LEN],
    params: &KdfParams,
) -> Result<SecretKey, KdfError> {
    params.check_for_read()?;
    let argon_params = Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN))
        .map_err(|_| KdfError::BelowFloor)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // A poisoned lock only means another evaluation panicked; the guard protects no data.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    argon
        .hash_password_into(passphrase.bytes(), salt, out.as_mut_slice())
        .map_err(|_| KdfError::BelowFloor)?;
    Ok(SecretKey::from_bytes(*out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(KdfParams::DEFAULT.check_for_write(), Ok(()));
        assert_eq!(KdfParams::INSECURE_FAST.check_for_write(), Ok(()));
        let weak = KdfParams {
            insecure: false,
            ..KdfParams::INSECURE_FAST
        };
        assert_eq!(weak.check_for_write(), Err(KdfError::BelowRecommended));
        assert_eq!(weak.check_for_read(), Ok(()));
        let huge = KdfParams {
            m_kib: 4 * 1024 * 1024 + 1,
            ..KdfParams::DEFAULT
        };
        assert_eq!(huge.check_for_read(), Err(KdfError::AboveCeiling));
        assert_eq!(
            KdfParams {
                t: 21,
                ..KdfParams::DEFAULT
            }
            .check_for_read(),
            Err(KdfError::AboveCeiling)
        );
        assert_eq!(
            KdfParams {
                p: 17,
                ..KdfParams::DEFAULT
            }
            .check_for_read(),
            Err(KdfError::AboveCeiling)
        );
        assert_eq!(
            KdfParams {
                m_kib: 7,
                ..KdfParams::INSECURE_FAST
            }
            .check_for_read(),
            Err(KdfError::BelowFloor)
        );
        assert_eq!(
            KdfParams {
                t: 0,
                ..KdfParams::DEFAULT
            }
            .check_for_read(),
            Err(KdfError::BelowFloor)
        );
    }

    #[test]
    fn derive_is_deterministic_and_passphrase_sensitive() {
        let salt = [1u8; SALT_LEN];
        let p = KdfParams::INSECURE_FAST;
        let a = derive(&Passphrase::new("correct horse battery"), &salt, &p).unwrap();
        let b = derive(&Passphrase::new("correct horse battery"), &salt, &p).unwrap();
        let c = derive(&Passphrase::new("correct horse batterz"), &salt, &p).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
        let huge = KdfParams {
            m_kib: u32::MAX,
            ..p
        };
        assert!(derive(&Passphrase::new("x"), &salt, &huge).is_err());
    }

    #[test]
    fn short_passphrases_are_refused_and_debug_hides() {
        assert_eq!(
            Passphrase::new("short").check_new(),
            Err(PassphraseTooShort)
        );
        assert_eq!(Passphrase::new("twelve chars").check_new(), Ok(()));
        assert!(!format!("{:?}", Passphrase::new("hunter2hunter2")).contains("hunter"));
    }
}
