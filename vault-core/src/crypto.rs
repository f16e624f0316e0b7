//! The symmetric primitives: 256-bit secret keys, HKDF subkeys, XChaCha20-Poly1305 sealing and
//! HMAC-SHA256. Everything that touches key bytes goes through here, so the rest of the crate
//! handles keys only as [`SecretKey`] values that zeroize on drop and cannot be printed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use std::sync::OnceLock;

use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::TryRng;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of every symmetric key in the vault.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// HKDF `info` labels, one per purpose. Changing one changes every key derived from it, so they
/// are versioned and never edited: a new purpose gets a new label.
pub mod label {
    /// Key that encrypts the keyring, derived from the root key.
    pub const KEYRING: &[u8] = b"keyvault/v1/keyring";
    /// Record-encryption key of a keyring term.
    pub const RECORD: &[u8] = b"keyvault/v1/record";
    /// Lookup-HMAC key of a keyring term, for API-key secrets.
    pub const KEY_LOOKUP: &[u8] = b"keyvault/v1/lookup/api-key";
    /// Lookup-HMAC key of a keyring term, for vault-token secrets.
    pub const TOKEN_LOOKUP: &[u8] = b"keyvault/v1/lookup/token";
    /// HMAC key of a keyring term's index of imported keys (by the SHA-256 of their text).
    pub const IMPORT_LOOKUP: &[u8] = b"keyvault/v1/lookup/imported";
    /// Ed25519 seed that signs audit checkpoints (lives across terms).
    pub const AUDIT_SIGNING: &[u8] = b"keyvault/v1/audit/signing";
    /// HMAC key of the audit log's keyed digests (lives across terms).
    pub const AUDIT_DIGEST: &[u8] = b"keyvault/v1/audit/digest";
    /// HMAC key of secondary indexes (lives across terms).
    pub const INDEX: &[u8] = b"keyvault/v1/index";
    /// Key that wraps the root key, derived from the unseal key.
    pub const ROOT_WRAP: &[u8] = b"keyvault/v1/root-wrap";
    /// Commitment to a rekey's new passphrase in the ceremony digest, from the new unseal key.
    pub const CEREMONY_PASSPHRASE: &[u8] = b"keyvault/v1/ceremony/passphrase-commitment";
}

/// A 256-bit secret key. Zeroized on drop; no `Debug` that shows it, no `Serialize`.
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    /// The key's HMAC-SHA256 state once its inner and outer pad blocks are hashed, made by its
    /// first [`hmac`] and cloned by each one after: half of the four SHA-256 blocks a MAC of a
    /// short message costs are those two, and the keys that MAC on every request (the lookup
    /// keys of tokens and API keys) are long-lived. It is as secret as the key: wiped on drop
    /// (sha2's and hmac's `zeroize` features, checked in `tests`), never printed. Boxed, so
    /// that a key stays small where it is held by value.
    keyed: OnceLock<Box<Hmac<Sha256>>>,
}

impl SecretKey {
    /// A fresh key from the OS CSPRNG.
    pub fn random() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(key.as_mut_slice());
        Self::wrap(key)
    }

    /// Wraps key bytes; the caller's copy should be zeroized by the caller.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self::wrap(Zeroizing::new(bytes))
    }

    fn wrap(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        SecretKey {
            bytes,
            keyed: OnceLock::new(),
        }
    }

    /// The key bytes, for the primitives in this module and for encoding the keyring.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A fresh HMAC-SHA256 under this key, its pad blocks hashed once per key.
    fn keyed_mac(&self) -> Hmac<Sha256> {
        self.keyed
            .get_or_init(|| {
                // Invariant: HMAC accepts keys of any length.
                Box::new(
                    <Hmac<Sha256> as KeyInit>::new_from_slice(self.bytes.as_slice())
                        .expect("HMAC accepts any key length"),
                )
            })
            .as_ref()
            .clone()
    }

    /// A subkey for one purpose: HKDF-SHA256 (RFC 5869) with no salt and `label` as `info`.
    pub fn derive(&self, label: &[u8]) -> SecretKey {
        let hkdf = Hkdf::<Sha256>::new(None, self.bytes.as_slice());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // Invariant: 32 bytes is far below HKDF-SHA256's 255 * 32 byte output limit.
        hkdf.expand(label, out.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretKey::wrap(out)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// Authentication failed: the key, the nonce, the associated data or the ciphertext is not the
/// one that was sealed. Deliberately says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed")]
pub struct DecryptError;

/// Encrypts `plaintext` under `key` with a fresh random nonce, binding `aad`.
/// Output: `nonce (24) || ciphertext || tag (16)`.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let cipher = XChaCha20Poly1305::new(&(*key.expose()).into());
    // Invariant: XChaCha20-Poly1305 fails to encrypt only past 2^38 bytes; records are far
    // smaller (the largest is a keyring or a key record of a few KiB).
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("plaintext is below the AEAD's length limit");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Opens what [`seal`] produced.
pub fn open(
    key: &SecretKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(DecryptError);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;
    let cipher = XChaCha20Poly1305::new(&(*key.expose()).into());
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| DecryptError)
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts`.
pub fn hmac(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = key.keyed_mac();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the OS generator fails. Linux's `getrandom(2)` does not fail once the pool is seeded, and a
/// vault that cannot get randomness must not go on making keys, so this stops the process the way
/// `rand::rng()` would.
pub fn fill_random(buf: &mut [u8]) {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator failed");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_every_flip_is_refused() {
        let key = SecretKey::random();
        let sealed = seal(&key, b"aad", b"hello record");
        assert_eq!(
            open(&key, b"aad", &sealed).unwrap().as_slice(),
            b"hello record"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open(&key, b"aad", &bad),
                Err(DecryptError),
                "flip at byte {i}"
            );
        }
        assert_eq!(open(&key, b"other", &sealed), Err(DecryptError));
        assert_eq!(
            open(&SecretKey::random(), b"aad", &sealed),
            Err(DecryptError)
        );
        assert_eq!(open(&key, b"aad", &sealed[..10]), Err(DecryptError));
    }

    #[test]
    fn derived_keys_differ_per_label_and_are_stable() {
        let root = SecretKey::from_bytes([7; KEY_LEN]);
        let a = root.derive(label::RECORD);
        let b = root.derive(label::KEY_LOOKUP);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose(), root.derive(label::RECORD).expose());
        assert_ne!(a.expose(), root.expose());
    }

    #[test]
    fn a_mac_from_the_kept_key_state_is_the_mac_from_the_key() {
        let key = SecretKey::from_bytes([0x5c; KEY_LEN]);
        let fresh = |parts: &[&[u8]]| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0x5c; KEY_LEN]).unwrap();
            parts.iter().for_each(|p| mac.update(p));
            <[u8; 32]>::from(mac.finalize().into_bytes())
        };
        // The first MAC makes the state, the later ones (and a clone's) reuse it.
        for parts in [
            &[&b"id"[..], b"secret"][..],
            &[b"another"],
            &[],
            &[&[7; 200]],
        ] {
            assert_eq!(hmac(&key, parts), fresh(parts));
            assert_eq!(hmac(&key.clone(), parts), fresh(parts));
        }
    }

    #[test]
    fn the_kept_key_state_is_wiped_on_drop() {
        // Holds only with sha2's `zeroize` feature (and hmac's, for the block buffer).
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<<Sha256 as hmac::EagerHash>::Core>();
        wiped::<hmac::digest::block_api::Buffer<<Sha256 as hmac::EagerHash>::Core>>();
    }

    #[test]
    fn debug_hides_the_key() {
        let key = SecretKey::from_bytes([0xab; KEY_LEN]);
        let text = format!("{key:?}");
        assert!(!text.contains("ab") && !text.contains("171"), "{text}");
    }
}
