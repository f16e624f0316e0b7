//! A key record packed: how the key cache holds it and how it is stored (the plaintext inside
//! the record envelope, format version 2).
//!
//! A million keys are cached decrypted, so a cached record must be small: the fixed fields
//! inline, and the texts (owner, name, scopes, meta) in one allocation, laid out as they are on
//! disk, so a store read becomes a cached record with one copy and no parse of JSON. The rare
//! previous secret (a rotation's grace period) is boxed, so that keys without one do not pay
//! for it, and so is the rarer refill. Editing goes through [`KeyRecord`] (`unpack`, change,
//! `pack`). The texts are reference counted so that a VALID verdict can hold the scopes and
//! meta without copying them (`shared`); their meta is checked to be an object's JSON text
//! when the record is made or read, not per verify: a damaged meta (never written by this
//! code, which stores what `serde_json` wrote) is dropped then, and reads as no meta, as it
//! always read.
//!
//! # Stored bytes (all integers big-endian, as everything this code lays out itself)
//! ```text
//! | 0xC2 | flags (1) | created_at (8) | updated_at (8) | expires_at (8)? | revoked_at (8)? |
//! | limit (4), period_seconds (4)? | current: term (4), mac (32) |
//! | previous: term (4), mac (32), until (8)? | refill: amount (8), interval (1), day (1)? |
//! | texts |
//! texts: | owner length (1) | owner | name length (2) | name | scope count (1) |
//!        | per scope: length (1) | scope | meta JSON (the rest) |
//! ```
//! `flags`: 1 enabled, 2 recoverable, 4 expires_at present, 8 revoked_at present, 16 rate
//! limit present, 32 previous present, 64 imported, 128 refill present. Records written before
//! imports and refills never set 64 or 128, so they read as before (builds older than that
//! refuse the two bits, and so a record that has them). With all eight bits in use, a field
//! added later needs a new tag. Refill `interval`: 0 daily, 1 monthly;
//! `day`: the monthly refill's day of the month (1 to 31), 0 for a daily one. Version 1 records (bincode of
//! [`KeyRecord`], which older builds wrote) begin with the owner's length as a u64 of 1 to 128,
//! so their first byte is at most 0x80 and never the version 2 tag: both are read.

use std::sync::Arc;

use super::record::Credits;
use super::record::{Digest, KeyRecord};
use super::shared::{RawMeta, Scopes, meta_is_json};
use super::types::{
    KeyInfo, MAX_NAME, MAX_OWNER, MAX_SCOPE, MAX_SCOPES, RateLimit, Refill, RefillInterval,
};
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
const IMPORTED: u8 = 64;
const REFILL: u8 = 128;

/// Stored bytes that are no key record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A key record as the cache holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Packed {
    pub(super) current: Digest,
    /// What few keys have: a previous secret, a refill.
    rare: Option<Box<Rare>>,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    pub(super) expires_at: Option<u64>,
    pub(super) revoked_at: Option<u64>,
    pub(super) ratelimit: Option<RateLimit>,
    pub(super) enabled: bool,
    pub(super) recoverable: bool,
    pub(super) imported: bool,
    /// Owner, name, scopes and meta, as in the stored bytes; checked when made. Shared with
    /// the verdicts that hand the scopes and meta on.
    texts: Arc<[u8]>,
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
        let texts = checked_texts(&texts)?;
        Ok(Packed {
            current: record.current,
            rare: Rare::boxed(record.previous, record.refill),
            created_at: record.created_at,
            updated_at: record.updated_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            ratelimit: record.ratelimit,
            enabled: record.enabled,
            recoverable: record.recoverable,
            imported: record.imported,
            texts,
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
            imported: self.imported,
            refill: self.refill(),
        }
    }

    /// The previous secret's digest and when it stops working, during a grace period.
    pub(super) fn previous(&self) -> Option<(Digest, u64)> {
        self.rare.as_deref().and_then(|r| r.previous)
    }

    /// How the key's credits come back, if they do.
    pub(super) fn refill(&self) -> Option<Refill> {
        self.rare.as_deref().and_then(|r| r.refill)
    }

    pub(super) fn owner(&self) -> &str {
        let len = usize::from(self.texts[0]);
        text(&self.texts[1..1 + len])
    }

    pub(super) fn name(&self) -> &str {
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

    /// Where the meta's text begins.
    fn meta_at(&self) -> usize {
        let at = self.scopes_at();
        let count = usize::from(self.texts[at]);
        let mut at = at + 1;
        for _ in 0..count {
            at += 1 + usize::from(self.texts[at]);
        }
        at
    }

    /// The meta object's JSON text (empty for none).
    pub(super) fn meta_text(&self) -> &str {
        text(&self.texts[self.meta_at()..])
    }

    /// The scopes for a verdict, sharing the record's texts.
    pub(super) fn shared_scopes(&self) -> Scopes {
        Scopes::shared(Arc::clone(&self.texts), self.scopes_at())
    }

    /// The meta for a verdict, sharing the record's texts (checked when the record was made).
    pub(super) fn shared_meta(&self) -> RawMeta {
        RawMeta::shared(Arc::clone(&self.texts), self.meta_at())
    }

    /// Bytes of memory the record takes beyond its own size.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        // The texts' allocation holds their two reference counts before them.
        2 * size_of::<usize>()
            + self.texts.len()
            + self.rare.as_ref().map_or(0, |_| size_of::<Rare>())
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
            (self.previous().is_some(), PREVIOUS),
            (self.imported, IMPORTED),
            (self.refill().is_some(), REFILL),
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
        if let Some(refill) = self.refill() {
            out.extend_from_slice(&refill.amount.to_be_bytes());
            let (interval, day) = match refill.interval {
                RefillInterval::Daily => (0, 0),
                RefillInterval::Monthly => (1, refill.day.unwrap_or(1)),
            };
            out.extend_from_slice(&[interval, day]);
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
        // Every one of the eight bits has a meaning now: a field after these needs a new tag.
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
            .then(|| Ok((r.digest()?, r.u64()?)))
            .transpose()?;
        let refill = on(REFILL).then(|| r.refill()).transpose()?;
        let texts = checked_texts(r.0)?;
        Ok(Packed {
            current,
            rare: Rare::boxed(previous, refill),
            created_at,
            updated_at,
            expires_at,
            revoked_at,
            ratelimit,
            enabled: on(ENABLED),
            recoverable: on(RECOVERABLE),
            imported: on(IMPORTED),
            texts,
        })
    }
}

/// The boxed part of a record: what few keys have.
#[derive(Debug, Clone, PartialEq)]
struct Rare {
    previous: Option<(Digest, u64)>,
    refill: Option<Refill>,
}

impl Rare {
    fn boxed(previous: Option<(Digest, u64)>, refill: Option<Refill>) -> Option<Box<Rare>> {
        (previous.is_some() || refill.is_some()).then(|| Box::new(Rare { previous, refill }))
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

/// The texts, checked, as the record holds them: a meta that is not an object's JSON text
/// dropped (see the module's doc).
fn checked_texts(texts: &[u8]) -> Result<Arc<[u8]>, Malformed> {
    let meta_at = texts.len() - check_texts(texts)?;
    if meta_is_json(text(&texts[meta_at..])) {
        Ok(Arc::from(texts))
    } else {
        Ok(Arc::from(&texts[..meta_at]))
    }
}

/// Checks the texts' layout, lengths and UTF-8, so the accessors can index without checks; the
/// length of the meta's text.
fn check_texts(texts: &[u8]) -> Result<usize, Malformed> {
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
    r.text(rest)?;
    Ok(rest)
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

    fn refill(&mut self) -> Result<Refill, Malformed> {
        let amount = self.u64()?;
        let [interval, day] = self.take()?;
        let (interval, day) = match (interval, day) {
            (0, 0) => (RefillInterval::Daily, None),
            (1, 1..=31) => (RefillInterval::Monthly, Some(day)),
            _ => return Err(Malformed),
        };
        Ok(Refill {
            amount,
            interval,
            day,
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
    pub(super) fn info(&self, id: KeyId, credits: Option<Credits>, now: u64) -> KeyInfo {
        self.unpack().info(id, credits, now)
    }
}

/// Stages key record `id`, write number `version` of the row, encrypted under the newest term.
pub(super) fn stage_record(
    batch: &mut Batch,
    keyring: &Keyring,
    id: &KeyId,
    record: &Packed,
    version: u64,
) {
    let sealed = record::seal(
        keyring,
        Space::Keys,
        id.as_bytes(),
        version,
        &record.encode(),
    );
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
            imported: false,
            refill: None,
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
            1,
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
        assert_eq!(
            verdict.scopes.map(|s| s.to_vec()),
            Some(vec!["photos:read".to_owned()])
        );
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
    fn an_imported_record_with_a_refill_survives_storing() {
        for refill in [
            Refill {
                amount: 1000,
                interval: RefillInterval::Monthly,
                day: Some(31),
            },
            Refill {
                amount: 5,
                interval: RefillInterval::Daily,
                day: None,
            },
        ] {
            let record = KeyRecord {
                imported: true,
                refill: Some(refill),
                ..typical()
            };
            let packed = Packed::pack(&record).unwrap();
            let stored = packed.encode();
            assert_eq!(stored[1] & (IMPORTED | REFILL), IMPORTED | REFILL);
            assert_eq!(Packed::decode(&stored).unwrap().unpack(), record);
        }
    }

    /// Version 2 bytes of `typical()` as builds before imports and refills wrote them: flags
    /// 0x35 (enabled, expires, rate limit, previous), no refill bytes. Laid out from the
    /// module's byte diagram by hand, not by this encoder.
    const V2_BEFORE_IMPORTS: &str = "c235000000006553f100000000006553f164000000006b49d2000000000a0000003c000000030707070707070707070707070707070707070707070707070707070707070707000000020909090909090909090909090909090909090909090909090909090909090909000000006553ff740b637573746f6d65722d3432000d70686f746f2075706c6f616473030b70686f746f733a726561640c70686f746f733a77726974650b616c62756d733a726561647b22706c616e223a2270726f222c22726567696f6e223a2265752d77657374227d";

    #[test]
    fn a_version_2_record_written_before_imports_is_read() {
        let bytes = hex::decode(V2_BEFORE_IMPORTS).unwrap();
        let packed = Packed::decode(&bytes).unwrap();
        assert_eq!(packed.unpack(), typical());
        assert!(!packed.imported && packed.refill().is_none());
        assert_eq!(
            packed.encode(),
            bytes,
            "an unchanged record is stored as before"
        );
    }

    #[test]
    fn a_refill_with_an_unknown_interval_or_day_is_refused() {
        let record = KeyRecord {
            refill: Some(Refill {
                amount: 1,
                interval: RefillInterval::Monthly,
                day: Some(2),
            }),
            previous: None,
            ..typical()
        };
        let stored = Packed::pack(&record).unwrap().encode();
        // The refill's interval and day follow its amount, after the fixed fields.
        let at = 2 + 8 + 8 + 8 + 8 + 36 + 8;
        assert_eq!(&stored[at..at + 2], &[1, 2]);
        for bad in [[2, 0], [0, 1], [1, 0], [1, 32]] {
            let mut bytes = stored.clone();
            bytes[at..at + 2].copy_from_slice(&bad);
            assert_eq!(Packed::decode(&bytes), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let stored = Packed::pack(&typical()).unwrap().encode();
        for len in 0..stored.len() - 33 {
            // Cut before the meta text: every shorter prefix is refused.
            assert_eq!(Packed::decode(&stored[..len]), Err(Malformed), "{len}");
        }
        // The refill bit without refill bytes: the texts do not parse as the refill.
        let mut flags = stored.clone();
        flags[1] |= REFILL;
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
        // 98 bytes of texts and the 16 of their reference counts, which verdicts share
        // instead of copying the scopes and meta per verify.
        assert!(packed.heap_bytes() <= 114, "{}", packed.heap_bytes());
    }

    #[test]
    fn a_damaged_meta_reads_as_none_and_a_verdict_shares_the_rest() {
        for (meta, json) in [("[1]", "{}"), ("{\"a\":1}", "{\"a\":1}"), ("", "{}")] {
            let record = KeyRecord {
                meta: meta.into(),
                ..typical()
            };
            let packed = Packed::decode(&Packed::pack(&record).unwrap().encode()).unwrap();
            assert_eq!(packed.shared_meta().json(), json);
            assert_eq!(packed.meta_text(), if json == "{}" { "" } else { meta });
            assert_eq!(packed.shared_scopes().to_vec(), record.scopes);
        }
    }
}
