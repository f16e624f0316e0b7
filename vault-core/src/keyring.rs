//! The keyring: every key below the root key.
//!
//! It holds numbered terms, each a random 256-bit term secret from which HKDF derives that term's
//! record-encryption key and lookup-HMAC keys, and one random base secret from which HKDF derives
//! the keys that live across terms (audit signing seed, audit digest key, index key). `rotate`
//! adds a term; old terms stay so that records written under them still decrypt.
//!
//! On disk (space `Meta`, id `keyring`) it is bincode of `KeyringBlob` sealed with
//! XChaCha20-Poly1305 under `HKDF(root key, "keyvault/v1/keyring")`, associated data
//! `"keyvault/v1/keyring" || vault id`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::codec;
use crate::crypto::{self, KEY_LEN, SecretKey, label};
use crate::shamir::VaultId;

/// The keys of one term.
#[derive(Debug)]
pub struct Term {
    /// The term's number, from 1.
    pub number: u32,
    /// Unix seconds when the term was made.
    pub created_at: u64,
    pub(crate) secret: SecretKey,
    /// Encrypts records written under this term.
    pub record: SecretKey,
    /// HMAC key of API-key secret digests made under this term.
    pub key_lookup: SecretKey,
    /// HMAC key of vault-token secret digests made under this term.
    pub token_lookup: SecretKey,
}

impl Term {
    fn from_secret(number: u32, created_at: u64, secret: SecretKey) -> Term {
        Term {
            number,
            created_at,
            record: secret.derive(label::RECORD),
            key_lookup: secret.derive(label::KEY_LOOKUP),
            token_lookup: secret.derive(label::TOKEN_LOOKUP),
            secret,
        }
    }
}

/// The unsealed keyring.
#[derive(Debug)]
pub struct Keyring {
    terms: BTreeMap<u32, Term>,
    pub(crate) base: SecretKey,
    /// Seed of the Ed25519 key that signs audit checkpoints; the same in every term.
    pub audit_signing_seed: SecretKey,
    /// HMAC key of the audit log's keyed digests.
    pub audit_digest: SecretKey,
    /// HMAC key of secondary indexes.
    pub index: SecretKey,
}

/// What is encrypted on disk. Zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyringBlob {
    base: [u8; KEY_LEN],
    terms: Vec<TermBlob>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct TermBlob {
    number: u32,
    created_at: u64,
    secret: [u8; KEY_LEN],
}

/// The keyring did not open: wrong root key, tampered, or not a keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the keyring failed authentication or does not decode")]
pub struct KeyringError;

fn aad(vault_id: &VaultId) -> Vec<u8> {
    [label::KEYRING, vault_id.as_slice()].concat()
}

impl Keyring {
    /// A new keyring with term 1.
    pub fn generate(now: u64) -> Keyring {
        Keyring::from_parts(
            SecretKey::random(),
            vec![Term::from_secret(1, now, SecretKey::random())],
        )
    }

    fn from_parts(base: SecretKey, terms: Vec<Term>) -> Keyring {
        Keyring {
            audit_signing_seed: base.derive(label::AUDIT_SIGNING),
            audit_digest: base.derive(label::AUDIT_DIGEST),
            index: base.derive(label::INDEX),
            terms: terms.into_iter().map(|t| (t.number, t)).collect(),
            base,
        }
    }

    /// The term new writes use: the newest.
    pub fn current(&self) -> &Term {
        // Invariant: a keyring is made with term 1 and terms are never removed.
        self.terms
            .values()
            .next_back()
            .expect("a keyring always has a term")
    }

    /// Term `number`, if the keyring has it.
    pub fn term(&self, number: u32) -> Option<&Term> {
        self.terms.get(&number)
    }

    /// A copy of this keyring with one more term.
    pub fn rotated(&self, now: u64) -> Keyring {
        let next = self.current().number + 1;
        let mut terms: Vec<Term> = self
            .terms
            .values()
            .map(|t| Term::from_secret(t.number, t.created_at, t.secret.clone()))
            .collect();
        terms.push(Term::from_secret(next, now, SecretKey::random()));
        Keyring::from_parts(self.base.clone(), terms)
    }

    /// Seals the keyring under `root` for storage.
    pub fn seal(&self, root: &SecretKey, vault_id: &VaultId) -> Vec<u8> {
        let blob = KeyringBlob {
            base: *self.base.expose(),
            terms: self
                .terms
                .values()
                .map(|t| TermBlob {
                    number: t.number,
                    created_at: t.created_at,
                    secret: *t.secret.expose(),
                })
                .collect(),
        };
        crypto::seal(
            &root.derive(label::KEYRING),
            &aad(vault_id),
            &codec::encode(&blob),
        )
    }

    /// Opens a stored keyring.
    pub fn open(
        root: &SecretKey,
        vault_id: &VaultId,
        sealed: &[u8],
    ) -> Result<Keyring, KeyringError> {
        let plain = crypto::open(&root.derive(label::KEYRING), &aad(vault_id), sealed)
            .map_err(|_| KeyringError)?;
        let blob: KeyringBlob = codec::decode(&plain).map_err(|_| KeyringError)?;
        let mut numbers: Vec<u32> = blob.terms.iter().map(|t| t.number).collect();
        numbers.dedup();
        if blob.terms.is_empty() || numbers.len() != blob.terms.len() {
            return Err(KeyringError);
        }
        let terms = blob
            .terms
            .iter()
            .map(|t| Term::from_secret(t.number, t.created_at, SecretKey::from_bytes(t.secret)))
            .collect();
        Ok(Keyring::from_parts(SecretKey::from_bytes(blob.base), terms))
    }

    /// Every term number, oldest first.
    pub fn term_numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.terms.keys().copied()
    }
}
