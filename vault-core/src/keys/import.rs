//! Importing existing keys: the photo service's customers keep the keys they have.
//!
//! An imported key is given as its text or as the lowercase hex SHA-256 of its text. Either
//! way the vault keeps only what it can compute from both: the SHA-256 `h` of the text. A key
//! record is made as for a created key (a fresh random key id, the same fields and checks),
//! whose current digest is `HMAC(term lookup key, key id || h)` rather than the digest of a
//! secret, and an entry of the *import index* leads from the presented text to that key id.
//!
//! # The import index (space `Index`)
//! ```text
//! | 0x02 | term (4) |                       -> empty: "keys were imported under this term"
//! | 0x03 | term (4) | HMAC(import key, h) (32) | -> key id (12)
//! ```
//! The import key is the term's own HMAC key for this index (HKDF of the term secret with the
//! label `keyvault/v1/lookup/imported`), so the index is keyed with the lookup keys as the key
//! digests are; entries stay under the term that was current at import (terms are never
//! removed), and a verify looks the text up under every term that has imports (the `0x02`
//! entries, read once after unseal). Indexing `h` rather than the text is what lets a
//! hash-only import and a text import find the same key, and import the same key once. Both
//! entries, the record, its credits and its owner index entry are one store batch, committed
//! with the key's `key.import` audit entry.
//!
//! # Verify of a text not in the vault's format
//! While the vault holds no imported key such a text is `MALFORMED`, as before imports
//! existed. Once it holds one, the text is hashed and looked up; no entry gives `NOT_FOUND`,
//! an entry gives the key, whose record then decides as for any key (its digest compared in
//! constant time, revoked, expired, scope, limits, credits). Timing: the lookup does the same
//! work for every text (a SHA-256, one HMAC and one store read per import term), and a miss
//! makes the one HMAC a match would make; an entry is found only for the exact text of an
//! imported key (or one it had before a rotation), whose holder learns nothing from the time
//! that the answer itself does not tell. That is the native path's property: there too only
//! the holder of a key's id can tell from the time that the id exists.

use std::fmt;
use std::sync::PoisonError;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::book::KeyBook;
use super::manage::{check_text, checked_record, stage_new, unpackable};
use super::packed::Packed;
use super::presented::Presented;
use super::record::Digest;
use super::types::NewKey;
use crate::apikey::{ApiKey, KeyId, Prefix};
use crate::audit::Event;
use crate::crypto;
use crate::keyring::Keyring;
use crate::storage::{Batch, Space};
use crate::{Error, Result};

/// Most keys one import call takes.
pub const MAX_IMPORT: usize = 1000;

/// Shortest and longest text of an imported key, in bytes.
pub const IMPORTED_TEXT: (usize, usize) = (8, 1024);

/// Index entry tag: a term under which keys were imported.
const IMPORT_TERM: u8 = 2;
/// Index entry tag: an imported key's text (its hash), under a term's import key.
const IMPORT_ENTRY: u8 = 3;

/// What an imported key was: its text, or the SHA-256 of its text. No `Debug` that shows it.
pub enum ImportedSecret {
    /// The key's text (surrounding whitespace is trimmed).
    Text(SecretString),
    /// The SHA-256 of the key's text.
    Sha256(Zeroizing<[u8; 32]>),
}

impl ImportedSecret {
    /// The SHA-256 from its lowercase hex text (64 characters).
    pub fn sha256_hex(hex: &str) -> Result<ImportedSecret> {
        let bad = || Error::InvalidInput("sha256 must be 64 lowercase hex characters".into());
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        // The constant-time decoder: this hash stands for a customer's key.
        base16ct::lower::decode(hex, bytes.as_mut_slice()).map_err(|_| bad())?;
        Ok(ImportedSecret::Sha256(bytes))
    }

    /// Which form was given, as the audit entry and the answer name it.
    pub fn form(&self) -> &'static str {
        match self {
            ImportedSecret::Text(_) => "key",
            ImportedSecret::Sha256(_) => "sha256",
        }
    }

    /// The SHA-256 of the text, checking a text first.
    fn sha256(&self, prefix: &Prefix) -> Result<Zeroizing<[u8; 32]>> {
        match self {
            ImportedSecret::Sha256(h) => Ok(h.clone()),
            ImportedSecret::Text(text) => {
                let text = text.expose_secret().trim();
                let (min, max) = IMPORTED_TEXT;
                // The message never shows the text: it is a customer's key.
                check_text("key", text, min, max)?;
                if ApiKey::parse(text, &Prefix::TOKEN).is_ok() {
                    return Err(Error::InvalidInput(
                        "key is a vault token, not an API key".into(),
                    ));
                }
                if ApiKey::parse(text, prefix).is_ok() {
                    return Err(Error::InvalidInput(
                        "key is in this vault's own format: it is verified by its id, not \
                         imported"
                            .into(),
                    ));
                }
                Ok(Zeroizing::new(Sha256::digest(text.as_bytes()).into()))
            }
        }
    }
}

impl fmt::Debug for ImportedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImportedSecret::{}(..)", self.form())
    }
}

/// One key to import: its secret and the same fields as create.
#[derive(Debug)]
pub struct ImportKey {
    /// The key's text or its SHA-256.
    pub secret: ImportedSecret,
    /// Owner, name, scopes, meta, expiry, rate limit, credits, as for create
    /// (`recoverable` is refused: the vault keeps no copy of an imported key's text).
    pub new: NewKey,
}

/// What an import did with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportStatus {
    /// Imported now.
    Imported,
    /// Already in the vault (imported before, or earlier in the same call): nothing changed.
    Exists,
}

/// The outcome of one key of an import, in the order given.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportOutcome {
    /// Imported now, or already there.
    pub status: ImportStatus,
    /// The key's id.
    pub key_id: KeyId,
}

/// One key of an import, decided: already there, or what to commit.
pub(crate) enum Staged {
    Exists(KeyId),
    New {
        id: KeyId,
        batch: Batch,
        event: Event,
    },
}

impl KeyBook {
    /// Whether the vault holds an imported key (read from the store once after unseal).
    pub(crate) fn holds_imports(&self) -> Result<bool> {
        if let Some(terms) = &*self.imports.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(!terms.is_empty());
        }
        Ok(!self.import_terms()?.is_empty())
    }

    /// The terms under which keys were imported, read from the store the first time.
    fn import_terms(&self) -> Result<Vec<u32>> {
        if let Some(terms) = &*self.imports.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(terms.clone());
        }
        let mut terms = Vec::new();
        for item in self.store.scan_prefix(Space::Index, &[IMPORT_TERM], None) {
            let (k, _) = item?;
            let term: [u8; 4] = k
                .get(1..)
                .and_then(|t| t.try_into().ok())
                .ok_or_else(|| Error::Corrupt("an import term entry is malformed".into()))?;
            terms.push(u32::from_be_bytes(term));
        }
        *self.imports.write().unwrap_or_else(PoisonError::into_inner) = Some(terms.clone());
        Ok(terms)
    }

    /// Notes that keys were imported under `term` (once their commit is durable).
    pub(crate) fn imported_under(&self, term: u32) {
        let mut imports = self.imports.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(terms) = imports.as_mut()
            && !terms.contains(&term)
        {
            terms.push(term);
        }
    }

    /// The imported key a presented text (not in the vault's format) names, if any. Called
    /// only while the vault holds imported keys.
    pub(crate) fn find_imported(&self, keyring: &Keyring, text: &str) -> Result<Option<Presented>> {
        let sha256 = Zeroizing::new(Sha256::digest(text.as_bytes()).into());
        for term in self.import_terms()? {
            let Some(t) = keyring.term(term) else {
                continue;
            };
            if let Some(id) = self
                .store
                .get(Space::Index, &entry(keyring, t.number, &sha256))?
            {
                let id = super::book::id_from(&id)?;
                let audit = crypto::hmac(&keyring.audit_digest, &[text.as_bytes()]);
                return Ok(Some(Presented::imported(id, sha256, audit)));
            }
        }
        // The one HMAC a match would have made (`Presented::matches`), so a miss costs what a
        // wrong text of a known key costs.
        let dummy = Digest::of_imported(
            &keyring.current().key_lookup,
            0,
            &KeyId::from_bytes([0; 12]),
            &sha256,
        );
        std::hint::black_box(dummy);
        Ok(None)
    }

    /// Checks every key of an import, then decides each and hands it to `queue` in order:
    /// already there (in the store, or earlier in `keys`) or a batch and entry to commit.
    /// Nothing is committed here; `queue` queues the batches on the group commit as they come
    /// (so the writer works while later keys are staged), and the caller holds the import gate
    /// until they are durable, so two imports of one key never both make it. A key that fails
    /// its checks fails the call before anything is queued.
    pub(crate) fn stage_import(
        &self,
        keyring: &Keyring,
        prefix: &Prefix,
        keys: Vec<ImportKey>,
        mut queue: impl FnMut(Staged),
    ) -> Result<()> {
        if keys.len() > MAX_IMPORT {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_IMPORT} keys an import (got {})",
                keys.len()
            )));
        }
        let now = self.clock.now();
        let term = keyring.current();
        let mut checked = Vec::with_capacity(keys.len());
        // Every key is checked before any is staged: a bad one fails the call, naming it.
        for (i, key) in keys.into_iter().enumerate() {
            let at = |e: Error| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("keys[{i}]: {m}")),
                e => e,
            };
            if key.new.recoverable {
                return Err(at(Error::InvalidInput(
                    "recoverable: an imported key cannot be recoverable (the vault keeps no \
                     copy of its text)"
                        .into(),
                )));
            }
            let sha256 = key.secret.sha256(prefix).map_err(at)?;
            let form = key.secret.form();
            let id = KeyId::random();
            let current = Digest::of_imported(&term.key_lookup, term.number, &id, &sha256);
            let (mut record, credits) = checked_record(key.new, now, current).map_err(at)?;
            record.imported = true;
            let packed = Packed::pack(&record).map_err(unpackable)?;
            checked.push((sha256, form, id, record, packed, credits));
        }
        // The term's marker goes with every key until a commit that carried it is durable
        // (`imported_under`); after that, keys need none: one store write a key fewer.
        let marked = self.import_terms()?.contains(&term.number);
        let mut seen: Vec<([u8; 32], KeyId)> = Vec::new();
        for (sha256, form, id, record, packed, credits) in checked {
            let entry_key = entry(keyring, term.number, &sha256);
            let mut found = self.find_entry(keyring, &sha256)?;
            if found.is_none() {
                found = seen
                    .iter()
                    .find(|(k, _)| k[..] == entry_key[5..])
                    .map(|(_, id)| *id);
            }
            if let Some(existing) = found {
                queue(Staged::Exists(existing));
                continue;
            }
            let mut tail = [0u8; 32];
            tail.copy_from_slice(&entry_key[5..]);
            seen.push((tail, id));
            let mut batch = stage_new(keyring, &id, &record, &packed, credits);
            batch.insert(Space::Index, &entry_key, id.as_bytes());
            if !marked {
                let mut marker = vec![IMPORT_TERM];
                marker.extend_from_slice(&term.number.to_be_bytes());
                batch.insert(Space::Index, &marker, &[]);
            }
            let event = Event::key("key.import", "ok", id, &record.owner)
                .detail("imported", true)
                .detail("form", form);
            queue(Staged::New { id, batch, event });
        }
        Ok(())
    }

    /// The key id an earlier import of this hash made, under any term.
    fn find_entry(&self, keyring: &Keyring, sha256: &[u8; 32]) -> Result<Option<KeyId>> {
        for term in self.import_terms()? {
            if keyring.term(term).is_none() {
                continue;
            }
            if let Some(id) = self
                .store
                .get(Space::Index, &entry(keyring, term, sha256))?
            {
                return super::book::id_from(&id).map(Some);
            }
        }
        Ok(None)
    }
}

/// The import index entry of `sha256` under `term` (which the keyring holds).
fn entry(keyring: &Keyring, term: u32, sha256: &[u8; 32]) -> Vec<u8> {
    let mac = keyring
        .term(term)
        .map_or([0; 32], |t| crypto::hmac(&t.import_lookup, &[sha256]));
    let mut out = Vec::with_capacity(1 + 4 + 32);
    out.push(IMPORT_ENTRY);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&mac);
    out
}
