//! The keyring: every key below the root key.
//!
//! It holds numbered terms, each a random 256-bit term secret from which HKDF derives that term's
//! record-encryption key and lookup-HMAC keys, and numbered *audit key generations*, each a
//! random 256-bit secret from which HKDF derives the keys that live across terms (audit signing
//! seed, audit digest key, index key). `rotate` adds a term; old terms stay so that records
//! written under them still decrypt. `rotate-audit-key` adds a generation; old generations stay
//! so that old checkpoints still verify and digests made under them can still be computed.
//! Generation 1's secret is the keyring's first secret (`base`, the only one before format 4),
//! so a vault made by an older build keeps its audit key.
//!
//! On disk (space `Meta`, id `keyring`) it is bincode of `KeyringBlob` sealed with
//! XChaCha20-Poly1305 under `HKDF(root key, "keyvault/v1/keyring")`, associated data
//! `"keyvault/v1/keyring" || vault id`. Format 4 appended the generations after 1 to the blob;
//! a blob without them (formats 1 to 3) is read as having generation 1 only. Since decoding
//! refuses trailing bytes, a build older than format 4 cannot open a blob of format 4.

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
    /// HMAC key of the index of keys imported under this term (see `keys/import.rs`).
    pub import_lookup: SecretKey,
}

impl Term {
    fn from_secret(number: u32, created_at: u64, secret: SecretKey) -> Term {
        Term {
            number,
            created_at,
            record: secret.derive(label::RECORD),
            key_lookup: secret.derive(label::KEY_LOOKUP),
            token_lookup: secret.derive(label::TOKEN_LOOKUP),
            import_lookup: secret.derive(label::IMPORT_LOOKUP),
            secret,
        }
    }
}

/// The keys of one audit key generation: they live across terms.
#[derive(Debug)]
pub struct AuditGeneration {
    /// The generation's number, from 1.
    pub number: u32,
    /// Unix seconds when the generation was made (0 for generation 1, made with the vault).
    pub created_at: u64,
    pub(crate) secret: SecretKey,
    /// Seed of the Ed25519 key that signs audit checkpoints.
    pub signing_seed: SecretKey,
    /// HMAC key of the audit log's keyed digests.
    pub digest: SecretKey,
    /// HMAC key of secondary indexes.
    pub index: SecretKey,
}

impl AuditGeneration {
    fn from_secret(number: u32, created_at: u64, secret: SecretKey) -> AuditGeneration {
        AuditGeneration {
            number,
            created_at,
            signing_seed: secret.derive(label::AUDIT_SIGNING),
            digest: secret.derive(label::AUDIT_DIGEST),
            index: secret.derive(label::INDEX),
            secret,
        }
    }

    fn copy(&self) -> AuditGeneration {
        AuditGeneration::from_secret(self.number, self.created_at, self.secret.clone())
    }
}

/// The unsealed keyring.
#[derive(Debug)]
pub struct Keyring {
    terms: BTreeMap<u32, Term>,
    audit: BTreeMap<u32, AuditGeneration>,
    /// Generation 1's secret.
    pub(crate) base: SecretKey,
    /// Seed of the Ed25519 key that signs audit checkpoints: the newest generation's.
    pub audit_signing_seed: SecretKey,
    /// HMAC key of the audit log's keyed digests: the newest generation's.
    pub audit_digest: SecretKey,
    /// HMAC key of secondary indexes: the newest generation's.
    pub index: SecretKey,
}

/// What is encrypted on disk (format 4 on). Zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyringBlob {
    base: [u8; KEY_LEN],
    terms: Vec<TermBlob>,
    /// Audit key generations 2 and later, oldest first (generation 1's secret is `base`).
    audit: Vec<AuditBlob>,
}

/// What formats 1 to 3 encrypted: no generation after 1.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyringBlobV1 {
    base: [u8; KEY_LEN],
    terms: Vec<TermBlob>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct AuditBlob {
    number: u32,
    created_at: u64,
    secret: [u8; KEY_LEN],
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
            Vec::new(),
        )
    }

    /// `later` are the audit key generations after 1, oldest first.
    fn from_parts(base: SecretKey, terms: Vec<Term>, later: Vec<AuditGeneration>) -> Keyring {
        let mut audit: BTreeMap<u32, AuditGeneration> =
            later.into_iter().map(|g| (g.number, g)).collect();
        audit.insert(1, AuditGeneration::from_secret(1, 0, base.clone()));
        // Invariant: generation 1 was inserted just above.
        let newest = audit.values().next_back().expect("generation 1 exists");
        Keyring {
            audit_signing_seed: newest.signing_seed.clone(),
            audit_digest: newest.digest.clone(),
            index: newest.index.clone(),
            terms: terms.into_iter().map(|t| (t.number, t)).collect(),
            audit,
            base,
        }
    }

    fn copy_terms(&self) -> Vec<Term> {
        self.terms
            .values()
            .map(|t| Term::from_secret(t.number, t.created_at, t.secret.clone()))
            .collect()
    }

    fn copy_later_generations(&self) -> Vec<AuditGeneration> {
        self.audit
            .values()
            .skip(1)
            .map(AuditGeneration::copy)
            .collect()
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
        let mut terms = self.copy_terms();
        terms.push(Term::from_secret(next, now, SecretKey::random()));
        Keyring::from_parts(self.base.clone(), terms, self.copy_later_generations())
    }

    /// The audit key generation that signs checkpoints now: the newest.
    pub fn audit_current(&self) -> &AuditGeneration {
        // Invariant: generation 1 is always present (see `from_parts`).
        self.audit
            .values()
            .next_back()
            .expect("a keyring always has audit generation 1")
    }

    /// Audit key generation `number`, if the keyring has it.
    pub fn audit_generation(&self, number: u32) -> Option<&AuditGeneration> {
        self.audit.get(&number)
    }

    /// Every audit key generation, oldest first.
    pub fn audit_generations(&self) -> impl Iterator<Item = &AuditGeneration> + '_ {
        self.audit.values()
    }

    /// A copy of this keyring with one more audit key generation (a new random secret), which
    /// becomes the current one.
    pub fn audit_rotated(&self, now: u64) -> Keyring {
        let next = self.audit_current().number + 1;
        let mut later = self.copy_later_generations();
        later.push(AuditGeneration::from_secret(next, now, SecretKey::random()));
        Keyring::from_parts(self.base.clone(), self.copy_terms(), later)
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
            audit: self
                .audit
                .values()
                .skip(1)
                .map(|g| AuditBlob {
                    number: g.number,
                    created_at: g.created_at,
                    secret: *g.secret.expose(),
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
        // Format 4's blob first: a blob of formats 1 to 3 lacks its last field, so it never
        // decodes as one (and a format-4 blob never as an old one: trailing bytes are refused).
        let blob: KeyringBlob = match codec::decode::<KeyringBlob>(&plain) {
            Ok(blob) => blob,
            Err(_) => {
                let old: KeyringBlobV1 = codec::decode(&plain).map_err(|_| KeyringError)?;
                KeyringBlob {
                    base: old.base,
                    terms: old
                        .terms
                        .iter()
                        .map(|t| TermBlob {
                            number: t.number,
                            created_at: t.created_at,
                            secret: t.secret,
                        })
                        .collect(),
                    audit: Vec::new(),
                }
            }
        };
        let mut numbers: Vec<u32> = blob.terms.iter().map(|t| t.number).collect();
        numbers.dedup();
        if blob.terms.is_empty() || numbers.len() != blob.terms.len() {
            return Err(KeyringError);
        }
        // Generations 2, 3, ... in order, without a gap.
        if blob
            .audit
            .iter()
            .enumerate()
            .any(|(i, g)| u64::from(g.number) != i as u64 + 2)
        {
            return Err(KeyringError);
        }
        let terms = blob
            .terms
            .iter()
            .map(|t| Term::from_secret(t.number, t.created_at, SecretKey::from_bytes(t.secret)))
            .collect();
        let later = blob
            .audit
            .iter()
            .map(|g| {
                AuditGeneration::from_secret(
                    g.number,
                    g.created_at,
                    SecretKey::from_bytes(g.secret),
                )
            })
            .collect();
        Ok(Keyring::from_parts(
            SecretKey::from_bytes(blob.base),
            terms,
            later,
        ))
    }

    /// Every term number, oldest first.
    pub fn term_numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.terms.keys().copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_of_formats_1_to_3_opens_with_generation_1_only() {
        let root = SecretKey::random();
        let vault_id = [7u8; 8];
        let keyring = Keyring::generate(5);
        let old = KeyringBlobV1 {
            base: *keyring.base.expose(),
            terms: vec![TermBlob {
                number: 1,
                created_at: 5,
                secret: *keyring.current().secret.expose(),
            }],
        };
        let sealed = crypto::seal(
            &root.derive(label::KEYRING),
            &aad(&vault_id),
            &codec::encode(&old),
        );
        let opened = Keyring::open(&root, &vault_id, &sealed).unwrap();
        assert_eq!(opened.audit_current().number, 1);
        assert_eq!(
            opened.audit_signing_seed.expose(),
            keyring.audit_signing_seed.expose()
        );
        assert_eq!(opened.index.expose(), keyring.index.expose());
    }

    #[test]
    fn audit_generations_survive_sealing_and_each_has_its_own_keys() {
        let root = SecretKey::random();
        let vault_id = [7u8; 8];
        let keyring = Keyring::generate(5)
            .audit_rotated(6)
            .rotated(7)
            .audit_rotated(8);
        assert_eq!(keyring.audit_current().number, 3);
        assert_eq!(keyring.current().number, 2);
        let opened = Keyring::open(&root, &vault_id, &keyring.seal(&root, &vault_id)).unwrap();
        let seeds: Vec<_> = opened
            .audit_generations()
            .map(|g| (g.number, *g.signing_seed.expose(), *g.index.expose()))
            .collect();
        assert_eq!(seeds.len(), 3);
        assert_ne!(seeds[0].1, seeds[1].1);
        assert_ne!(seeds[1].2, seeds[2].2);
        assert_eq!(opened.audit_signing_seed.expose(), &seeds[2].1);
        assert_eq!(
            opened.audit_generation(1).unwrap().signing_seed.expose(),
            keyring.audit_generation(1).unwrap().signing_seed.expose()
        );
        assert_eq!(opened.audit_generation(2).unwrap().created_at, 6);
    }
}
