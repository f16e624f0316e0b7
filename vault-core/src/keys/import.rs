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

use std::collections::HashMap;
use std::fmt;
use std::sync::PoisonError;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::book::KeyBook;
use super::manage::{check_text, checked_record, stage_new, unpackable};
use super::packed::Packed;
use super::presented::Presented;
use super::record::{Credits, Digest, KeyRecord};
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

    /// Checks every key of an import, then decides each and hands them to `queue` in order,
    /// [`STREAM`] at a time: already there (in the store, or earlier in `keys`) or a batch and
    /// entry to commit. Nothing is committed here; `queue` queues each part's batches on the
    /// group commit, so the writer commits a part while the next is staged, and the caller
    /// holds the import gate until they are durable, so two imports of one key never both make
    /// it. A key that fails its checks fails the call before anything is queued (the first
    /// such key in the order given is named).
    ///
    /// The work of each key (hashes, HMACs, packing, encryption, the index read) is done on
    /// the caller's threads, split over the cores: the audit writer's threads are left with
    /// what only they can do.
    pub(crate) fn stage_import(
        &self,
        keyring: &Keyring,
        prefix: &Prefix,
        keys: Vec<ImportKey>,
        mut queue: impl FnMut(Vec<Staged>),
    ) -> Result<()> {
        if keys.len() > MAX_IMPORT {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_IMPORT} keys an import (got {})",
                keys.len()
            )));
        }
        let now = self.clock.now();
        let terms = self.import_terms()?;
        let call = Call {
            book: self,
            keyring,
            prefix,
            now,
            terms: &terms,
        };
        let checked = par_map(keys.into_iter().enumerate().collect(), |(i, key)| {
            call.check(i, key)
        })?;
        // The term's marker goes with every key until a commit that carried it is durable
        // (`imported_under`); after that, keys need none: one store write a key fewer.
        let term = keyring.current().number;
        let marked = terms.contains(&term);
        let mut seen: HashMap<[u8; 32], KeyId> = HashMap::with_capacity(checked.len());
        let mut checked = checked.into_iter();
        loop {
            let part: Vec<Checked> = checked.by_ref().take(STREAM).collect();
            if part.is_empty() {
                return Ok(());
            }
            let mut decided = Vec::with_capacity(part.len());
            for key in par_map(part, |key| call.stage(key))? {
                let Staging {
                    tail,
                    found,
                    id,
                    staged,
                } = key;
                if let Some(existing) = found.or_else(|| seen.get(&tail).copied()) {
                    decided.push(Staged::Exists(existing));
                    continue;
                }
                let Some((mut batch, event)) = staged else {
                    // Only a key found in the store comes without a batch.
                    continue;
                };
                seen.insert(tail, id);
                if !marked {
                    let mut marker = vec![IMPORT_TERM];
                    marker.extend_from_slice(&term.to_be_bytes());
                    batch.insert(Space::Index, &marker, &[]);
                }
                decided.push(Staged::New { id, batch, event });
            }
            queue(decided);
        }
    }

    /// The key id an earlier import of this hash made, under any of `terms`; `current` is the
    /// entry's HMAC under the current term (already computed).
    fn find_entry(
        &self,
        keyring: &Keyring,
        terms: &[u32],
        sha256: &[u8; 32],
        current: &[u8; 32],
    ) -> Result<Option<KeyId>> {
        for &term in terms {
            let key = if term == keyring.current().number {
                entry_key(term, current)
            } else if keyring.term(term).is_some() {
                entry(keyring, term, sha256)
            } else {
                continue;
            };
            if let Some(id) = self.store.get(Space::Index, &key)? {
                return super::book::id_from(&id).map(Some);
            }
        }
        Ok(None)
    }
}

/// Keys of a call below which one thread does them all (a thread costs more than it saves).
const PER_THREAD: usize = 64;

/// Keys staged and queued at a time: the writer commits a part while the next is staged,
/// and a part is large enough to share a group commit.
const STREAM: usize = 250;

/// What every key of one import call shares, read once for the call.
struct Call<'a> {
    book: &'a KeyBook,
    keyring: &'a Keyring,
    prefix: &'a Prefix,
    now: u64,
    /// The terms with imports, read once for the call (the import gate keeps them).
    terms: &'a [u32],
}

/// One key of an import, checked: what its record will be.
struct Checked {
    sha256: Zeroizing<[u8; 32]>,
    form: &'static str,
    id: KeyId,
    record: KeyRecord,
    packed: Packed,
    credits: Option<Credits>,
}

/// One key of an import, staged but not yet decided.
struct Staging {
    /// Its import index entry's HMAC under the current term.
    tail: [u8; 32],
    /// The key an earlier import made of the same hash.
    found: Option<KeyId>,
    id: KeyId,
    /// Its batch (without the term marker) and audit event; none when `found`.
    staged: Option<(Batch, Event)>,
}

impl Call<'_> {
    /// Checks key `i`: its secret and fields, and packs its record.
    fn check(&self, i: usize, key: ImportKey) -> Result<Checked> {
        let at = |e: Error| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("keys[{i}]: {m}")),
            e => e,
        };
        if key.new.recoverable {
            return Err(at(Error::InvalidInput(
                "recoverable: an imported key cannot be recoverable (the vault keeps no copy \
                 of its text)"
                    .into(),
            )));
        }
        let term = self.keyring.current();
        let sha256 = key.secret.sha256(self.prefix).map_err(at)?;
        let form = key.secret.form();
        let id = KeyId::random();
        let current = Digest::of_imported(&term.key_lookup, term.number, &id, &sha256);
        let (mut record, credits) = checked_record(key.new, self.now, current).map_err(at)?;
        record.imported = true;
        let packed = Packed::pack(&record).map_err(unpackable)?;
        Ok(Checked {
            sha256,
            form,
            id,
            record,
            packed,
            credits,
        })
    }

    /// Looks a checked key up in the import index and, if it is not there, stages it: its
    /// record, credits, owner index entry and import index entry in one batch, with its
    /// `key.import` event.
    fn stage(&self, key: Checked) -> Result<Staging> {
        let Checked {
            sha256,
            form,
            id,
            record,
            packed,
            credits,
        } = key;
        let keyring = self.keyring;
        let term = keyring.current();
        let tail = crypto::hmac(&term.import_lookup, &[&sha256[..]]);
        let found = self.book.find_entry(keyring, self.terms, &sha256, &tail)?;
        let staged = found.is_none().then(|| {
            let mut batch = stage_new(keyring, &id, &record, &packed, credits);
            batch.insert(Space::Index, &entry_key(term.number, &tail), id.as_bytes());
            let event = Event::key("key.import", "ok", id, &record.owner)
                .detail("imported", true)
                .detail("form", form);
            (batch, event)
        });
        Ok(Staging {
            tail,
            found,
            id,
            staged,
        })
    }
}

/// `f` of every item, in order, split over the available cores (one part a thread); the
/// first item (in order) that fails fails the whole. By hand over scoped threads: the work is
/// one flat map, and the crate has no thread pool to lend it.
fn par_map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> Result<U> + Sync) -> Result<Vec<U>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(items.len() / PER_THREAD)
        .max(1);
    let per = items.len().div_ceil(threads).max(1);
    let mut parts: Vec<Vec<T>> = Vec::with_capacity(threads);
    for item in items {
        match parts.last_mut() {
            Some(part) if part.len() < per => part.push(item),
            _ => parts.push(vec![item]),
        }
    }
    let run = |part: Vec<T>| -> Result<Vec<U>> { part.into_iter().map(&f).collect() };
    let mut parts = parts.into_iter();
    let Some(mine) = parts.next() else {
        return Ok(Vec::new());
    };
    std::thread::scope(|scope| {
        // A thread the system refuses fails the call with an error rather than a panic.
        let others = parts
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, || run(part))
                    .map_err(|source| Error::Io {
                        context: "starting an import thread".into(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>>>();
        let mut out = run(mine)?;
        for other in others? {
            match other.join() {
                Ok(done) => out.extend(done?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// The import index entry of `sha256` under `term` (which the keyring holds).
fn entry(keyring: &Keyring, term: u32, sha256: &[u8; 32]) -> Vec<u8> {
    let mac = keyring
        .term(term)
        .map_or([0; 32], |t| crypto::hmac(&t.import_lookup, &[sha256]));
    entry_key(term, &mac)
}

/// The import index entry whose HMAC under `term`'s import key is `mac`.
fn entry_key(term: u32, mac: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + 32);
    out.push(IMPORT_ENTRY);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(mac);
    out
}
