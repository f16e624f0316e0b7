//! A key record packed: how the key cache holds it and how it is stored (the plaintext inside
//! the record envelope, format version 2).
//!
//! A million keys are cached decrypted, so a cached record must be small: the fixed fields
//! inline, and the texts (owner, name, scopes, meta) in one allocation, laid out as they are on
//! disk, so a store read becomes a cached record with one copy and no parse of JSON. The rare
//! previous secret (a rotation's grace period) is boxed, so that keys without one do not pay
//! for it. Editing goes through [`KeyRecord`] (`unpack`, change, `pack`).
//!
//! # Stored bytes (all integers big-endian, as everything this code lays out itself)
//! ```text
//! | 0xC2 | flags (1) | created_at (8) | updated_at (8) | expires_at (8)? | revoked_at (8)? |
//! | limit (4), period_seconds (4)? | current: term (4), mac (32) |
//! | previous: term (4), mac (32), until (8)? | texts |
//! texts: | owner length (1) | owner | name length (2) | name | scope count (1) |
//!        | per scope: length (1) | scope | meta JSON (the rest) |
//! ```
//! `flags`: 1 enabled, 2 recoverable, 4 expires_at present, 8 revoked_at present, 16 rate
//! limit present, 32 previous present; other bits are refused. Version 1 records (bincode of
//! [`KeyRecord`], which older builds wrote) begin with the owner's length as a u64 of 1 to 128,
//! so their first byte is at most 0x80 and never the version 2 tag: both are read.

use serde_json::{Map, Value};

use super::record::{Digest, KeyRecord};
use super::types::{KeyInfo, MAX_NAME, MAX_OWNER, MAX_SCOPE, MAX_SCOPES, RateLimit};
use crate::apikey::KeyId;
use crate::keyring::Keyring;
use crate::storage::{Batch, Space};
use crate::{codec, record};

/// First byte of a version 2 record.
const TAG_V2: u8 = 0xC2;

const ENABLED: u8 = 1;
const RECOVERABLE: u8 = 2;
const EXPIRES: u8 = 4;
const REVOKED: u8 = 8;
const RATELIMIT: u8 = 16;
const PREVIOUS: u8 = 32;
const KNOWN: u8 = ENABLED | RECOVERABLE | EXPIRES | REVOKED | RATELIMIT | PREVIOUS;

/// Stored bytes that are no key record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A key record as the cache holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Packed {
    pub(super) current: Digest,
    previous: Option<Box<(Digest, u64)>>,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    pub(super) expires_at: Option<u64>,
    pub(super) revoked_at: Option<u64>,
    pub(super) ratelimit: Option<RateLimit>,
    pub(super) enabled: bool,
    pub(super) recoverable: bool,
    /// Owner, name, scopes and meta, as in the stored bytes; checked when made.
    texts: Box<[u8]>,
}

impl Packed {
    /// Packs a record whose texts are within the limits `create` and `update` check.
    pub(super) fn pack(record: &KeyRecord) -> Result<Packed, Malformed> {
        let mut texts = Vec::with_capacity(
            4 + record.owner.len()
                + record.name.len()
                + record.scopes.iter().map(|s| 1 + s.len()).sum::<usize>()
                + record.meta.len(),
        );
        let owner = u8::try_from(record.owner.len()).map_err(|_| Malformed)?;
        texts.push(owner);
        texts.extend_from_slice(record.owner.as_bytes());
        let name = u16::try_from(record.name.len()).map_err(|_| Malformed)?;
        texts.extend_from_slice(&name.to_be_bytes());
        texts.extend_from_slice(record.name.as_bytes());
        texts.push(u8::try_from(record.scopes.len()).map_err(|_| Malformed)?);
        for scope in &record.scopes {
            texts.push(u8::try_from(scope.len()).map_err(|_| Malformed)?);
            texts.extend_from_slice(scope.as_bytes());
        }
        texts.extend_from_slice(record.meta.as_bytes());
        check_texts(&texts)?;
        Ok(Packed {
            current: record.current,
            previous: record.previous.map(Box::new),
            created_at: record.created_at,
            updated_at: record.updated_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            ratelimit: record.ratelimit,
            enabled: record.enabled,
            recoverable: record.recoverable,
            texts: texts.into_boxed_slice(),
        })
    }

    /// The record, to change it.
    pub(super) fn unpack(&self) -> KeyRecord {
        KeyRecord {
            owner: self.owner().to_owned(),
            name: self.name().to_owned(),
            scopes: self.scopes().map(str::to_owned).collect(),
            meta: self.meta_text().to_owned(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            enabled: self.enabled,
            revoked_at: self.revoked_at,
            ratelimit: self.ratelimit,
            recoverable: self.recoverable,
            current: self.current,
            previous: self.previous(),
        }
    }

    /// The previous secret's digest and when it stops working, during a grace period.
    pub(super) fn previous(&self) -> Option<(Digest, u64)> {
        self.previous.as_deref().copied()
    }

    pub(super) fn owner(&self) -> &str {
        let len = usize::from(self.texts[0]);
        text(&self.texts[1..1 + len])
    }

    fn name(&self) -> &str {
        let at = 1 + usize::from(self.texts[0]);
        let len = usize::from(u16::from_be_bytes([self.texts[at], self.texts[at + 1]]));
        text(&self.texts[at + 2..at + 2 + len])
    }

    /// Where the scope count is.
    fn scopes_at(&self) -> usize {
        let at = 1 + usize::from(self.texts[0]);
        at + 2 + usize::from(u16::from_be_bytes([self.texts[at], self.texts[at + 1]]))
    }

    pub(super) fn scopes(&self) -> impl Iterator<Item = &str> {
        let at = self.scopes_at();
        let count = usize::from(self.texts[at]);
        let mut rest = &self.texts[at + 1..];
        (0..count).map(move |_| {
            let len = usize::from(rest[0]);
            let scope = text(&rest[1..1 + len]);
            rest = &rest[1 + len..];
            scope
        })
    }

    /// The meta object's JSON text.
    pub(super) fn meta_text(&self) -> &str {
        let at = self.scopes_at();
        let count = usize::from(self.texts[at]);
        let mut at = at + 1;
        for _ in 0..count {
            at += 1 + usize::from(self.texts[at]);
        }
        text(&self.texts[at..])
    }

    /// Bytes of memory the record takes beyond its own size.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.texts.len() + self.previous.as_ref().map_or(0, |_| 48)
    }

    /// The stored bytes (version 2).
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 16 + 24 + 8 + 36 + 44 + self.texts.len());
        let flags = [
            (self.enabled, ENABLED),
            (self.recoverable, RECOVERABLE),
            (self.expires_at.is_some(), EXPIRES),
            (self.revoked_at.is_some(), REVOKED),
            (self.ratelimit.is_some(), RATELIMIT),
            (self.previous.is_some(), PREVIOUS),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, bit)| flags | bit);
        out.extend_from_slice(&[TAG_V2, flags]);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.updated_at.to_be_bytes());
        for at in [self.expires_at, self.revoked_at].into_iter().flatten() {
            out.extend_from_slice(&at.to_be_bytes());
        }
        if let Some(limit) = self.ratelimit {
            out.extend_from_slice(&limit.limit.to_be_bytes());
            out.extend_from_slice(&limit.period_seconds.to_be_bytes());
        }
        put_digest(&mut out, &self.current);
        if let Some((digest, until)) = self.previous() {
            put_digest(&mut out, &digest);
            out.extend_from_slice(&until.to_be_bytes());
        }
        out.extend_from_slice(&self.texts);
        out
    }

    /// Reads stored bytes of either version.
    pub(super) fn decode(bytes: &[u8]) -> Result<Packed, Malformed> {
        if bytes.first() != Some(&TAG_V2) {
            let record: KeyRecord = codec::decode(bytes).map_err(|_| Malformed)?;
            return Packed::pack(&record);
        }
        let mut r = Reader(&bytes[1..]);
        let flags = r.take::<1>()?[0];
        if flags & !KNOWN != 0 {
            return Err(Malformed);
        }
        let on = |bit: u8| flags & bit != 0;
        let created_at = r.u64()?;
        let updated_at = r.u64()?;
        let expires_at = on(EXPIRES).then(|| r.u64()).transpose()?;
        let revoked_at = on(REVOKED).then(|| r.u64()).transpose()?;
        let ratelimit = on(RATELIMIT)
            .then(|| {
                Ok(RateLimit {
                    limit: r.u32()?,
                    period_seconds: r.u32()?,
                })
            })
            .transpose()?;
        let current = r.digest()?;
        let previous = on(PREVIOUS)
            .then(|| Ok(Box::new((r.digest()?, r.u64()?))))
            .transpose()?;
        check_texts(r.0)?;
        Ok(Packed {
            current,
            previous,
            created_at,
            updated_at,
            expires_at,
            revoked_at,
            ratelimit,
            enabled: on(ENABLED),
            recoverable: on(RECOVERABLE),
            texts: r.0.into(),
        })
    }
}

fn put_digest(out: &mut Vec<u8>, digest: &Digest) {
    out.extend_from_slice(&digest.term.to_be_bytes());
    out.extend_from_slice(&digest.mac);
}

/// A text checked by [`check_texts`] when the record was made; never fails then.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Checks the texts' layout, lengths and UTF-8, so the accessors can index without checks.
fn check_texts(texts: &[u8]) -> Result<(), Malformed> {
    let mut r = Reader(texts);
    let owner = usize::from(r.take::<1>()?[0]);
    if owner > MAX_OWNER {
        return Err(Malformed);
    }
    r.text(owner)?;
    let name = usize::from(u16::from_be_bytes(r.take::<2>()?));
    if name > MAX_NAME {
        return Err(Malformed);
    }
    r.text(name)?;
    let count = usize::from(r.take::<1>()?[0]);
    if count > MAX_SCOPES {
        return Err(Malformed);
    }
    for _ in 0..count {
        let len = usize::from(r.take::<1>()?[0]);
        if len > MAX_SCOPE {
            return Err(Malformed);
        }
        r.text(len)?;
    }
    let rest = r.0.len();
    r.text(rest)
}

/// Reads stored bytes front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Malformed)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn digest(&mut self) -> Result<Digest, Malformed> {
        Ok(Digest {
            term: self.u32()?,
            mac: self.take()?,
        })
    }

    fn text(&mut self, len: usize) -> Result<(), Malformed> {
        if len > self.0.len() {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(len);
        std::str::from_utf8(head).map_err(|_| Malformed)?;
        self.0 = rest;
        Ok(())
    }
}

impl Packed {
    pub(super) fn meta(&self) -> Map<String, Value> {
        serde_json::from_str(self.meta_text()).unwrap_or_default()
    }

    pub(super) fn info(&self, id: KeyId, credits: Option<u64>, now: u64) -> KeyInfo {
        self.unpack().info(id, credits, now)
    }
}

/// Stages key record `id`, encrypted under the newest term.
pub(super) fn stage_record(batch: &mut Batch, keyring: &Keyring, id: &KeyId, record: &Packed) {
    let sealed = record::seal(keyring, Space::Keys, id.as_bytes(), &record.encode());
    batch.insert(Space::Keys, id.as_bytes(), &sealed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn typical() -> KeyRecord {
        KeyRecord {
            owner: "customer-42".into(),
            name: "photo uploads".into(),
            scopes: vec![
                "photos:read".into(),
                "photos:write".into(),
                "albums:read".into(),
            ],
            meta: r#"{"plan":"pro","region":"eu-west"}"#.into(),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_100,
            expires_at: Some(1_800_000_000),
            enabled: true,
            revoked_at: None,
            ratelimit: Some(RateLimit {
                limit: 10,
                period_seconds: 60,
            }),
            recoverable: false,
            current: Digest {
                term: 3,
                mac: [7; 32],
            },
            previous: Some((
                Digest {
                    term: 2,
                    mac: [9; 32],
                },
                1_700_003_700,
            )),
        }
    }

    #[test]
    fn a_record_survives_packing_and_storing() {
        let mut record = typical();
        for _ in 0..2 {
            let packed = Packed::pack(&record).unwrap();
            assert_eq!(packed.unpack(), record);
            let stored = packed.encode();
            assert_eq!(stored[0], TAG_V2);
            assert_eq!(Packed::decode(&stored).unwrap(), packed);
            assert!(stored.len() < codec::encode(&record).len());
            // The other shape: no options, no scopes, empty name and meta.
            record = KeyRecord {
                name: String::new(),
                scopes: Vec::new(),
                meta: String::new(),
                expires_at: None,
                revoked_at: Some(5),
                enabled: false,
                ratelimit: None,
                recoverable: true,
                previous: None,
                ..typical()
            };
        }
    }

    /// Version 1 plaintext of `typical()`, as older builds wrote it (bincode, fixed-width
    /// integers).
    const V1: &str = "0b00000000000000637573746f6d65722d34320d0000000000000070686f746f2075706c6f61647303000000000000000b0000000000000070686f746f733a726561640c0000000000000070686f746f733a77726974650b00000000000000616c62756d733a7265616421000000000000007b22706c616e223a2270726f222c22726567696f6e223a2265752d77657374227d00f153650000000064f15365000000000100d2496b000000000100010a0000003c000000000300000007070707070707070707070707070707070707070707070707070707070707070102000000090909090909090909090909090909090909090909090909090909090909090974ff536500000000";

    #[test]
    fn a_record_older_builds_wrote_is_read() {
        let bytes = hex::decode(V1).unwrap();
        assert_eq!(bytes, codec::encode(&typical()));
        assert_eq!(Packed::decode(&bytes).unwrap().unpack(), typical());
    }

    #[test]
    fn a_vault_reads_and_rewrites_a_key_record_an_older_build_wrote() {
        use secrecy::ExposeSecret;

        use crate::apikey::Prefix;
        use crate::kdf::{KdfParams, Passphrase};
        use crate::keys::{KeyUpdate, NewKey, VerifyRequest};
        use crate::storage::{Batch, Space};
        use crate::{Context, UnsealMethod, Vault, record};

        let tmp = tempfile::tempdir().unwrap();
        let method = UnsealMethod::Passphrase {
            passphrase: Passphrase::new("a long passphrase"),
            params: KdfParams::INSECURE_FAST,
        };
        let (vault, _) = Vault::init(&tmp.path().join("v"), &method, &Prefix::default()).unwrap();
        let ctx = Context::embedded();
        let mut new = NewKey::new("customer-1");
        new.scopes = vec!["photos:read".into()];
        let issued = vault.create_key(&ctx, new).unwrap();
        let id = issued.key.id();
        let keys = vault.keys().unwrap();
        let stored = |vault: &Vault| {
            let bytes = vault
                .inner
                .store
                .get(Space::Keys, id.as_bytes())
                .unwrap()
                .unwrap();
            record::open(&keys.keyring, Space::Keys, id.as_bytes(), &bytes).unwrap()
        };
        assert_eq!(stored(&vault)[0], TAG_V2);
        // The record as an older build stored it, and nothing cached.
        let old = Packed::decode(&stored(&vault)).unwrap().unpack();
        let sealed = record::seal(
            &keys.keyring,
            Space::Keys,
            id.as_bytes(),
            &codec::encode(&old),
        );
        let mut batch = Batch::default();
        batch.insert(Space::Keys, id.as_bytes(), &sealed);
        vault.inner.store.apply(batch).unwrap();
        vault.inner.key_book.clear();
        let text = issued.key.expose_secret_text();
        let verdict = vault
            .verify(&ctx, VerifyRequest::new(text.expose_secret()))
            .unwrap();
        assert!(verdict.valid);
        assert_eq!(verdict.scopes, Some(vec!["photos:read".to_owned()]));
        // A change stores it as version 2.
        let update = KeyUpdate {
            name: Some("renamed".into()),
            ..KeyUpdate::default()
        };
        vault.update_key(&ctx, &id, update).unwrap();
        assert_eq!(stored(&vault)[0], TAG_V2);
        assert_eq!(vault.show_key(&id).unwrap().name, "renamed");
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let stored = Packed::pack(&typical()).unwrap().encode();
        for len in 0..stored.len() - 33 {
            // Cut before the meta text: every shorter prefix is refused.
            assert_eq!(Packed::decode(&stored[..len]), Err(Malformed), "{len}");
        }
        let mut flags = stored.clone();
        flags[1] |= 0x80;
        assert_eq!(Packed::decode(&flags), Err(Malformed));
        let mut utf8 = stored;
        let last = utf8.len() - 1;
        utf8[last] = 0xFF;
        assert_eq!(Packed::decode(&utf8), Err(Malformed));
    }

    #[test]
    fn a_cached_record_is_small() {
        let packed = Packed::pack(&KeyRecord {
            previous: None,
            ..typical()
        })
        .unwrap();
        assert!(size_of::<Packed>() <= 128, "{}", size_of::<Packed>());
        assert!(packed.heap_bytes() < 100, "{}", packed.heap_bytes());
    }
}
