//! The encrypted record envelope: how every key and token record sits on disk.
//!
//! ```text
//! | version (1) = 1 | term (4, BE) | nonce (24) | XChaCha20-Poly1305 ciphertext + tag (16) |
//! ```
//!
//! The associated data is `version || term || space byte || record id`, so a record copied under
//! another id or into another space, or a header edited (a term changed, say), fails to decrypt.
//! The term in the header picks the key; nothing is ever tried with several keys.

use zeroize::Zeroizing;

use crate::crypto;
use crate::keyring::Keyring;
use crate::storage::Space;

/// Format version of the envelope.
pub const RECORD_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;

/// A stored record that cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than a header, nonce and tag.
    #[error("record is truncated")]
    Truncated,
    /// A version this build does not read.
    #[error("record format version {0} is not supported")]
    Version(u8),
    /// The header names a term the keyring does not have.
    #[error("record names keyring term {0}, which this keyring does not have")]
    UnknownTerm(u32),
    /// Authentication failed: tampered, moved, or not ours.
    #[error("record failed authentication")]
    Forged,
}

fn aad(header: &[u8], space: Space, id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + 1 + id.len());
    aad.extend_from_slice(header);
    aad.push(space as u8);
    aad.extend_from_slice(id);
    aad
}

/// Encrypts `plaintext` as record `space/id` under the keyring's current term.
pub fn seal(keyring: &Keyring, space: Space, id: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let term = keyring.current();
    let mut header = [0u8; HEADER_LEN];
    header[0] = RECORD_VERSION;
    header[1..].copy_from_slice(&term.number.to_be_bytes());
    let body = crypto::seal(&term.record, &aad(&header, space, id), plaintext);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    out
}

/// The term a stored record was written under, from its header.
pub fn term_of(bytes: &[u8]) -> Result<u32, RecordError> {
    let header = bytes.get(..HEADER_LEN).ok_or(RecordError::Truncated)?;
    if header[0] != RECORD_VERSION {
        return Err(RecordError::Version(header[0]));
    }
    let mut term = [0u8; 4];
    term.copy_from_slice(&header[1..]);
    Ok(u32::from_be_bytes(term))
}

/// Decrypts record `space/id`.
pub fn open(
    keyring: &Keyring,
    space: Space,
    id: &[u8],
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    let number = term_of(bytes)?;
    let term = keyring
        .term(number)
        .ok_or(RecordError::UnknownTerm(number))?;
    let (header, body) = bytes.split_at(HEADER_LEN);
    crypto::open(&term.record, &aad(header, space, id), body).map_err(|_| RecordError::Forged)
}
