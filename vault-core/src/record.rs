//! The encrypted record envelope: how every key, credits, reveal and token record sits on disk.
//!
//! ```text
//! version 2: | 0x02 | term (4, BE) | record version (8, BE) | nonce (24) | ciphertext + tag (16) |
//! version 1: | 0x01 | term (4, BE) |                          nonce (24) | ciphertext + tag (16) |
//! ```
//!
//! The associated data is `header || space byte || record id` (the header being every byte
//! before the nonce), so a record copied under another id or into another space, or a header
//! edited (a term or a record version changed, say), fails to decrypt. The term in the header
//! picks the key; nothing is ever tried with several keys.
//!
//! The record version counts the writes of the row: a new row is 1, and each write of it seals
//! the version it read plus one (a rewrap, which changes the term but not the content, keeps
//! it). A node refuses a row older than one it has seen for the id (`keys/book.rs`,
//! `tokens.rs`), so an envelope put back in the store is caught even though its AAD binds it
//! to its id. Version 1 envelopes, which older builds wrote, carry no record version and read
//! as version 0; they are rewritten as version 2 only when the row is written anyway.

use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::apikey::KeyId;
use crate::crypto;
use crate::keyring::Keyring;
use crate::storage::Space;

/// Format version of the envelope this build writes.
pub const RECORD_VERSION: u8 = 2;
/// The format older builds wrote: no record version.
const RECORD_VERSION_1: u8 = 1;
const HEADER_LEN_1: usize = 5;
const HEADER_LEN: usize = 13;

/// A stored record that cannot be opened, or that is older than one already seen.
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
    /// The record is genuine but older than one this node has already seen for the same id:
    /// rolled back in the store.
    #[error("record version {got} is older than version {seen} already seen for it")]
    RolledBack {
        /// The highest record version seen for the id.
        seen: u64,
        /// The version read.
        got: u64,
    },
}

/// A record's plaintext and the record version its envelope carries.
#[derive(Debug)]
pub struct Opened {
    /// The decrypted record.
    pub plain: Zeroizing<Vec<u8>>,
    /// How many writes the row has had (0 for a version 1 envelope).
    pub version: u64,
}

fn aad(header: &[u8], space: Space, id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + 1 + id.len());
    aad.extend_from_slice(header);
    aad.push(space as u8);
    aad.extend_from_slice(id);
    aad
}

/// Encrypts `plaintext` as record `space/id`, write number `version` of the row, under the
/// keyring's current term.
pub fn seal(keyring: &Keyring, space: Space, id: &[u8], version: u64, plaintext: &[u8]) -> Vec<u8> {
    let term = keyring.current();
    let mut header = [0u8; HEADER_LEN];
    header[0] = RECORD_VERSION;
    header[1..5].copy_from_slice(&term.number.to_be_bytes());
    header[5..].copy_from_slice(&version.to_be_bytes());
    let body = crypto::seal(&term.record, &aad(&header, space, id), plaintext);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    out
}

/// The header's length for the envelope format of `bytes`.
fn header_len(bytes: &[u8]) -> Result<usize, RecordError> {
    let len = match *bytes.first().ok_or(RecordError::Truncated)? {
        RECORD_VERSION => HEADER_LEN,
        RECORD_VERSION_1 => HEADER_LEN_1,
        other => return Err(RecordError::Version(other)),
    };
    if bytes.len() < len {
        return Err(RecordError::Truncated);
    }
    Ok(len)
}

/// The term a stored record was written under, from its header.
pub fn term_of(bytes: &[u8]) -> Result<u32, RecordError> {
    header_len(bytes)?;
    Ok(term_in(bytes))
}

/// The term in a header [`header_len`] accepted (both formats hold it at bytes 1 to 4).
fn term_in(header: &[u8]) -> u32 {
    let mut term = [0u8; 4];
    term.copy_from_slice(&header[1..5]);
    u32::from_be_bytes(term)
}

/// Decrypts record `space/id`.
pub fn open(
    keyring: &Keyring,
    space: Space,
    id: &[u8],
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    open_versioned(keyring, space, id, bytes).map(|o| o.plain)
}

/// Decrypts record `space/id` with its record version (authenticated with it).
pub fn open_versioned(
    keyring: &Keyring,
    space: Space,
    id: &[u8],
    bytes: &[u8],
) -> Result<Opened, RecordError> {
    let len = header_len(bytes)?;
    let number = term_in(bytes);
    let term = keyring
        .term(number)
        .ok_or(RecordError::UnknownTerm(number))?;
    let (header, body) = bytes.split_at(len);
    let plain = crypto::open(&term.record, &aad(header, space, id), body)
        .map_err(|_| RecordError::Forged)?;
    let version = match header.get(5..HEADER_LEN) {
        Some(v) => {
            let mut version = [0u8; 8];
            version.copy_from_slice(v);
            u64::from_be_bytes(version)
        }
        // A version 1 envelope: no record version.
        None => 0,
    };
    Ok(Opened { plain, version })
}

/// Refuses record version `got` if `seen`, the highest seen for the id, is newer.
pub(crate) fn check_not_older(seen: u64, got: u64) -> Result<(), RecordError> {
    if got < seen {
        Err(RecordError::RolledBack { seen, got })
    } else {
        Ok(())
    }
}

/// The rows a node refused as older than one it had seen for the same id (rolled back in the
/// store): each refused, counted and logged at error level, an integrity alarm.
#[derive(Debug, Default)]
pub(crate) struct Rollbacks(AtomicU64);

impl Rollbacks {
    /// Refuses record version `got` of row `space/id` if `seen` is newer (see
    /// [`check_not_older`]), counting and reporting the refusal.
    pub(crate) fn check(
        &self,
        space: Space,
        id: &KeyId,
        seen: u64,
        got: u64,
    ) -> Result<(), RecordError> {
        check_not_older(seen, got).inspect_err(|_| {
            self.0.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                id = %id,
                space = space as u8,
                seen,
                got,
                "refused a row older than one this node has seen: rolled back in the store"
            );
        })
    }

    /// How many rows were refused since the node started.
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
pub(crate) mod tests;
