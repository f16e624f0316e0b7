//! A presented key once parsed, and a verify left to finish where a thread may block.
//!
//! A verify that cannot finish on an async worker ([`AsyncVerify::MustBlock`]) has already
//! parsed the key and may have computed the digest of its secret under one or two terms'
//! lookup keys. It hands them over in a [`PendingVerify`], so that
//! [`Vault::finish_verify`](crate::Vault::finish_verify) neither parses nor hashes again: it
//! compares the digests already made with whatever the record holds by then.
//!
//! [`AsyncVerify::MustBlock`]: super::AsyncVerify::MustBlock

use std::fmt;

use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::code::Verdict;
use super::record::Digest;
use crate::apikey::{ApiKey, KeyId};
use crate::crypto;
use crate::keyring::Keyring;

/// Digests of one secret kept per key: the current secret's and, during a rotation's grace,
/// the previous one's, each possibly under a term of its own.
const KEPT: usize = 2;

/// A parsed key and the digests of its secret made so far, by term.
pub(crate) struct Presented {
    form: Form,
    /// `(term, mac)` of the secret under that term's key lookup key. A term number names one
    /// lookup key for good (a stored digest names its key the same way), so a digest kept here
    /// stays right across a keyring swap.
    made: [Option<(u32, [u8; 32])>; KEPT],
}

/// What was presented: a key in the vault's format, or a text the import index led to.
enum Form {
    Native(ApiKey),
    /// A text not in the vault's format that the index of imported keys names key `id` for.
    Imported {
        id: KeyId,
        /// SHA-256 of the presented text: what an imported key's digest is made of.
        sha256: Zeroizing<[u8; 32]>,
        /// The audit log's keyed digest of the text, made while the text was at hand, for the
        /// entry of a verify that matches nothing.
        audit_digest: [u8; 32],
    },
}

impl Presented {
    pub(crate) fn new(key: ApiKey) -> Presented {
        Presented {
            form: Form::Native(key),
            made: [None; KEPT],
        }
    }

    /// A presented text not in the vault's format, which the index of imported keys maps to
    /// key `id`.
    pub(crate) fn imported(
        id: KeyId,
        sha256: Zeroizing<[u8; 32]>,
        audit_digest: [u8; 32],
    ) -> Presented {
        Presented {
            form: Form::Imported {
                id,
                sha256,
                audit_digest,
            },
            made: [None; KEPT],
        }
    }

    /// The key id the presented text names (through the import index, for an imported one).
    pub(crate) fn id(&self) -> KeyId {
        match &self.form {
            Form::Native(key) => key.id(),
            Form::Imported { id, .. } => *id,
        }
    }

    /// The audit log's keyed digest of the presented text (`keyring.audit_digest`).
    pub(crate) fn audit_digest(&self, keyring: &Keyring) -> [u8; 32] {
        match &self.form {
            Form::Native(key) => {
                let text = key.expose_secret_text();
                crypto::hmac(&keyring.audit_digest, &[text.expose_secret().as_bytes()])
            }
            Form::Imported { audit_digest, .. } => *audit_digest,
        }
    }

    /// The presented secret's digest under `term`'s lookup key: of the key's secret for a key
    /// in the vault's format, of the text's SHA-256 for an imported one. The two never match
    /// each other's stored digests (24 bytes of secret against 32 of hash, under one key).
    fn digest(&self, lookup: &crypto::SecretKey, term: u32) -> [u8; 32] {
        match &self.form {
            Form::Native(key) => Digest::of(lookup, term, &key.id(), key.secret()).mac,
            Form::Imported { id, sha256, .. } => Digest::of_imported(lookup, term, id, sha256).mac,
        }
    }

    /// Constant-time check of the presented secret against a stored digest, hashing under a
    /// term only the first time it is asked for.
    pub(crate) fn matches(&mut self, keyring: &Keyring, stored: &Digest) -> bool {
        let Some(term) = keyring.term(stored.term) else {
            return false;
        };
        let made = match self.made.iter().flatten().find(|(t, _)| *t == stored.term) {
            Some((_, mac)) => *mac,
            None => {
                let mac = self.digest(&term.key_lookup, stored.term);
                // A third term (the record changed twice meanwhile) is hashed each time it is
                // asked for rather than kept: rare, and the array stays small.
                if let Some(free) = self.made.iter_mut().find(|m| m.is_none()) {
                    *free = Some((stored.term, mac));
                }
                mac
            }
        };
        made.ct_eq(&stored.mac).into()
    }
}

/// A verify that could not finish without blocking: the parsed key, the digests of its secret
/// made so far, and the rest of the request. Finish it with
/// [`Vault::finish_verify`](crate::Vault::finish_verify) on a thread that may block. Its Debug
/// names the key id only.
pub struct PendingVerify {
    pub(crate) presented: Presented,
    pub(crate) scope: Option<String>,
    pub(crate) cost: u64,
    /// Whether a `MALFORMED` or `NOT_FOUND` answer gets an audit entry of its own (false for
    /// [`Vault::verify_throttled`](crate::Vault::verify_throttled)'s callers).
    pub(crate) audit_failures: bool,
}

impl PendingVerify {
    /// The same verify again, for a cluster node's verify that goes again after losing a
    /// race to another node (`vault/verify_retry.rs`): the secret copied into a new zeroized
    /// box, with the digests already made.
    #[cfg(feature = "etcd")]
    pub(crate) fn copy(&self) -> PendingVerify {
        let form = match &self.presented.form {
            Form::Native(key) => {
                let secret = Zeroizing::new(*key.secret().expose_bytes());
                Form::Native(ApiKey::new(
                    *key.prefix(),
                    key.id(),
                    crate::apikey::KeySecret::from_bytes(*secret),
                ))
            }
            Form::Imported {
                id,
                sha256,
                audit_digest,
            } => Form::Imported {
                id: *id,
                sha256: sha256.clone(),
                audit_digest: *audit_digest,
            },
        };
        PendingVerify {
            presented: Presented {
                form,
                made: self.presented.made,
            },
            scope: self.scope.clone(),
            cost: self.cost,
            audit_failures: self.audit_failures,
        }
    }
}

impl fmt::Debug for PendingVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingVerify")
            .field("key_id", &self.presented.id())
            .field("scope", &self.scope)
            .field("cost", &self.cost)
            .field("audit_failures", &self.audit_failures)
            .finish_non_exhaustive()
    }
}

/// What [`Vault::verify_async`](crate::Vault::verify_async) found.
#[derive(Debug)]
pub enum AsyncVerify {
    /// The verdict, its entry durable.
    Verdict(Verdict),
    /// The verify must wait where a thread may block: it would spend credits (committed under
    /// its key's lock), or its key is locked by a change being committed. Nothing was changed;
    /// call [`Vault::finish_verify`](crate::Vault::finish_verify) with this on a thread that may
    /// block, which goes on without parsing or hashing the key again.
    MustBlock(PendingVerify),
}
