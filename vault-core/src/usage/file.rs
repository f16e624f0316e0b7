//! The stored usage figures: `DIR/usage/figures`, an append-only file of checksummed records.
//!
//! Each store appends what changed since the last one; every so often the file is written
//! afresh with everything, so that reading it back at open costs a few times the live figures
//! at most. Why a file of its own and not the store: with keys verified uniformly at random,
//! nearly every key's buckets change between two stores, and sled 0.34 costs about 14 µs per
//! insert, so a million keys cost more than a core; a sequential file of bincode costs about
//! a microsecond per bucket.
//!
//! # Layout
//! ```text
//! file   | "KVUSAGE1" (8) | record* |
//! record | payload length u32 BE | CRC-32 of the payload u32 BE | payload: items, back to back |
//! ```
//! A store is a run of items ending with `Covers`, which always ends its record: the items
//! before it count only once it is read whole, so a store cut short by a crash is ignored and
//! the entries it would have covered are folded again. A full store starts with `Clear`.
//! Records are cut at about 1 MiB; no item spans two. Items are bincode with variable-length
//! integers (`codec::encode_compact_into`), which halves the file against fixed ones: most
//! figures are small counts.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::aggregate::Subject;
use super::aggregate::{
    Aggregate, Changes, Counts, Figures, Granularity, KeyTrack, Signal, SignalKind,
};
use crate::audit::segment::read_full;
use crate::codec;
use crate::datadir::{create_private_dir, sync_dir};
use crate::error::io;
use crate::{Error, Result};

/// The figures' directory in the data directory.
pub(crate) const DIR: &str = "usage";
const FILE: &str = "figures";
const TMP: &str = "figures.tmp";
/// Where a file that cannot be read at all is moved, for an operator to look at.
const UNREADABLE: &str = "figures.unreadable";
const MAGIC: &[u8; 8] = b"KVUSAGE1";
const HEADER: usize = 8;
/// Records are cut once their payload reaches this many bytes.
const RECORD_TARGET: usize = 1 << 20;
/// A record claiming more than this is damage, not data.
const MAX_RECORD: u32 = 64 << 20;
/// The file is written afresh once it is this many times its last full store...
const COMPACT_FACTOR: u64 = 3;
/// ... and at least this long.
const COMPACT_MIN: u64 = 8 << 20;

/// One change to the figures. Written borrowed from the live aggregate, read back owned.
#[derive(Debug, Serialize, Deserialize)]
enum Item<'a> {
    /// Start from no figures (a full store).
    Clear,
    /// A bucket's figures; none once it was pruned.
    Bucket {
        size: Granularity,
        of: Of,
        name: Cow<'a, str>,
        start: u64,
        counts: Option<Cow<'a, Counts>>,
    },
    /// What is remembered of a key; none once forgotten.
    Key {
        id: Cow<'a, str>,
        track: Option<Cow<'a, KeyTrack>>,
    },
    /// The signals are replaced by the `Signal` and `Open` items that follow.
    Signals {
        next_signal: u64,
    },
    Signal(Cow<'a, Signal>),
    Open {
        kind: SignalKind,
        key: Cow<'a, str>,
        id: u64,
    },
    /// Ends a store: the figures count the entries before `next_seq`, the last of which has
    /// canonical bytes with SHA-256 `last_entry` (none when nothing is counted).
    Covers {
        next_seq: u64,
        latest_ms: u64,
        last_entry: Option<[u8; 32]>,
    },
}

/// Whose bucket: a key's (by id) or an owner's.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Of {
    Key,
    Owner,
}

/// The bytes of one store, as records, built while the figures' lock is held; written after.
pub(crate) struct Update {
    bytes: Vec<u8>,
    /// Where the open record's header is.
    start: usize,
    full: bool,
    next_seq: u64,
    latest_ms: u64,
}

impl Update {
    fn new(full: bool, agg: &Aggregate) -> Update {
        let mut update = Update {
            bytes: Vec::new(),
            start: 0,
            full,
            next_seq: agg.next_seq,
            latest_ms: agg.latest_ms,
        };
        update.open_record();
        if full {
            update.push(&Item::Clear);
        }
        update
    }

    /// The next store of `agg`, which it marks stored: everything when `full`, else what
    /// changed (none if nothing did); with how many keys and owners it writes.
    pub(crate) fn next(
        full: bool,
        agg: &mut Aggregate,
        dirty: &Changes,
    ) -> Option<(Update, usize)> {
        if full {
            Some((Update::everything(agg), agg.len()))
        } else if dirty.is_empty() {
            None
        } else {
            Some((Update::changes(agg, dirty), dirty.marked))
        }
    }

    /// Everything in `agg`, which it marks stored.
    pub(crate) fn everything(agg: &mut Aggregate) -> Update {
        let mut update = Update::new(true, agg);
        for (of, all) in [(Of::Key, &mut agg.keys), (Of::Owner, &mut agg.owners)] {
            for (name, figures) in all.iter_mut() {
                figures.series.changed = false;
                update.figures(of, name, figures, 0);
            }
        }
        update.signals(agg);
        update
    }

    /// What changed in `agg` since it was last stored, which it marks stored: of every key and
    /// owner marked changed, the buckets from the oldest entry's on (nothing older changed) and
    /// the key's track. What pruning dropped is not written: loading drops it again.
    fn changes(agg: &mut Aggregate, dirty: &Changes) -> Update {
        let mut update = Update::new(false, agg);
        if let Some(oldest_ms) = dirty.oldest_ms {
            for (of, all) in [(Of::Key, &mut agg.keys), (Of::Owner, &mut agg.owners)] {
                for (name, figures) in all.iter_mut().filter(|(_, f)| f.series.changed) {
                    figures.series.changed = false;
                    update.figures(of, name, figures, oldest_ms / 1_000);
                }
            }
        }
        if dirty.signals {
            update.signals(agg);
        }
        update
    }

    /// The buckets of `figures` from those holding `from` (Unix s) on, and the key's track.
    fn figures(&mut self, of: Of, name: &str, figures: &Figures, from: u64) {
        for size in [Granularity::Hour, Granularity::Day] {
            for (start, counts) in figures.series.range(size, size.floor(from), u64::MAX) {
                self.push(&Item::Bucket {
                    size,
                    of,
                    name: Cow::Borrowed(name),
                    start,
                    counts: Some(Cow::Borrowed(counts)),
                });
            }
        }
        if let Some(track) = &figures.track {
            self.push(&Item::Key {
                id: Cow::Borrowed(name),
                track: Some(Cow::Borrowed(track)),
            });
        }
    }

    fn signals(&mut self, agg: &Aggregate) {
        self.push(&Item::Signals {
            next_signal: agg.next_signal,
        });
        for signal in &agg.signals {
            self.push(&Item::Signal(Cow::Borrowed(signal)));
        }
        for ((kind, key), id) in &agg.open {
            self.push(&Item::Open {
                kind: *kind,
                key: Cow::Borrowed(key),
                id: *id,
            });
        }
    }

    /// The sequence number the store covers (every entry before it).
    pub(crate) fn covers(&self) -> u64 {
        self.next_seq
    }

    fn open_record(&mut self) {
        self.start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; HEADER]);
    }

    fn push(&mut self, item: &Item<'_>) {
        if self.bytes.len() - self.start - HEADER >= RECORD_TARGET {
            self.close_record();
            self.open_record();
        }
        codec::encode_compact_into(item, &mut self.bytes);
    }

    fn close_record(&mut self) {
        let payload = &self.bytes[self.start + HEADER..];
        // Invariant: a record is cut at about 1 MiB and no item is near 4 GiB.
        let len = u32::try_from(payload.len()).expect("a record fits a u32 length");
        let crc = crc32fast::hash(payload);
        self.bytes[self.start..self.start + 4].copy_from_slice(&len.to_be_bytes());
        self.bytes[self.start + 4..self.start + HEADER].copy_from_slice(&crc.to_be_bytes());
    }

    /// The records, ended by `Covers` with `last_entry` (the SHA-256 of the last counted
    /// entry's canonical bytes).
    fn finish(mut self, last_entry: Option<[u8; 32]>) -> Vec<u8> {
        self.push(&Item::Covers {
            next_seq: self.next_seq,
            latest_ms: self.latest_ms,
            last_entry,
        });
        self.close_record();
        self.bytes
    }
}

/// Figures read back from the file.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) agg: Aggregate,
    /// SHA-256 of the canonical bytes of the last entry counted.
    pub(crate) last_entry: Option<[u8; 32]>,
    /// The file ended in damage or a store cut short (what came before it was kept).
    pub(crate) damaged: bool,
}

/// The figures file of one vault. Stores to it are serialised by its owner's lock.
#[derive(Debug)]
pub(crate) struct FiguresFile {
    dir: PathBuf,
    /// Open for appending once a full store was written or a clean file read.
    append: Option<File>,
    len: u64,
    /// Length of the file just after its last full store.
    base: u64,
}

impl FiguresFile {
    /// The figures file of the vault in `vault_dir` (nothing is read or written yet).
    pub(crate) fn new(vault_dir: &Path) -> FiguresFile {
        FiguresFile {
            dir: vault_dir.join(DIR),
            append: None,
            len: 0,
            base: 0,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Makes the next store a full one (the figures in memory did not come from the file).
    pub(crate) fn forget(&mut self) {
        self.append = None;
    }

    /// Whether the next store must be full: there is no clean file to append to, or the
    /// file has grown to several times its last full store.
    pub(crate) fn needs_full(&self) -> bool {
        self.append.is_none() || self.len > (self.base * COMPACT_FACTOR).max(COMPACT_MIN)
    }

    /// Reads the stored figures: none if there is no file. A file that cannot be read at all
    /// is moved aside to `figures.unreadable` (and an error returned); damage after a whole
    /// store keeps what came before it.
    pub(crate) fn load(&mut self) -> Result<Option<Loaded>> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(|| format!("opening {}", path.display()))(e)),
        };
        let len = file
            .metadata()
            .map_err(io(|| format!("reading {}", path.display())))?
            .len();
        match read(BufReader::new(file)) {
            Ok(Some(loaded)) => {
                if !loaded.damaged {
                    let append = OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(io(|| format!("opening {}", path.display())))?;
                    self.append = Some(append);
                    self.len = len;
                    self.base = len;
                }
                Ok(Some(loaded))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let aside = self.dir.join(UNREADABLE);
                fs::rename(&path, &aside)
                    .map_err(io(|| format!("moving {} aside", path.display())))?;
                Err(Error::Corrupt(format!(
                    "stored usage figures: {e}; moved to {}",
                    aside.display()
                )))
            }
        }
    }

    /// Writes `update` and makes it durable, ended by `last_entry` (see [`Update::finish`]). A
    /// full store replaces the file (written beside it, then renamed over it); any other is
    /// appended. After a failure the next store must be full.
    pub(crate) fn write(&mut self, update: Update, last_entry: Option<[u8; 32]>) -> Result<()> {
        let full = update.full;
        let bytes = update.finish(last_entry);
        let written = if full {
            self.replace(&bytes)
        } else {
            self.append(&bytes)
        };
        if written.is_err() {
            self.append = None;
        }
        written
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path();
        let file = self
            .append
            .as_mut()
            .ok_or_else(|| Error::Corrupt("usage figures: no file to append to".into()))?;
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Best effort: cut what was written, so that the file ends with a whole store.
            let _ = file.set_len(self.len);
            return Err(io(|| format!("writing {}", path.display()))(e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> Result<()> {
        if !self.dir.is_dir() {
            create_private_dir(&self.dir)?;
            if let Some(vault_dir) = self.dir.parent() {
                sync_dir(vault_dir)?;
            }
        }
        let tmp = self.dir.join(TMP);
        let path = self.path();
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            fs::rename(&tmp, &path)?;
            Ok(file)
        })();
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io(|| format!("writing {}", path.display()))(e));
            }
        };
        sync_dir(&self.dir)?;
        // The handle written through stays valid across the rename; appends go on from it.
        let len = (MAGIC.len() + bytes.len()) as u64;
        self.append = Some(file);
        self.len = len;
        self.base = len;
        Ok(())
    }
}

/// Reads a figures file: the figures as of the last whole store (none if there is none). An
/// error means not even the magic was right.
fn read(mut input: impl Read) -> std::result::Result<Option<Loaded>, String> {
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| "the file is too short".to_owned())?;
    if &magic != MAGIC {
        return Err("not a usage figures file (bad magic)".into());
    }
    let mut agg = Aggregate::default();
    // The last whole store's `Covers`; `agg` holds the figures as of it.
    let mut covered: Option<Option<[u8; 32]>> = None;
    let mut pending: Vec<Item<'static>> = Vec::new();
    let damaged = loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut input, &mut header) {
            // A clean end, unless a store was cut short.
            Ok(false) => break !pending.is_empty(),
            Ok(true) => {}
            Err(_) => break true,
        }
        let (len, crc) = header.split_at(4);
        // Invariant: split of an 8-byte array at 4.
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        // The writer never writes an empty record: zeros are a hole, not data.
        if len == 0 || len > MAX_RECORD {
            break true;
        }
        let mut payload = vec![0u8; len as usize];
        if input.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break true;
        }
        let mut rest = payload.as_slice();
        let mut bad = false;
        while !rest.is_empty() {
            let Ok((item, used)) = codec::decode_compact_prefix::<Item<'static>>(rest) else {
                bad = true;
                break;
            };
            rest = &rest[used..];
            if let Item::Covers {
                next_seq,
                latest_ms,
                last_entry,
            } = item
            {
                for item in pending.drain(..) {
                    apply(&mut agg, item);
                }
                agg.next_seq = next_seq;
                agg.latest_ms = latest_ms;
                covered = Some(last_entry);
            } else {
                pending.push(item);
            }
        }
        if bad {
            break true;
        }
    };
    Ok(covered.map(|last_entry| Loaded {
        agg,
        last_entry,
        damaged,
    }))
}

fn apply(agg: &mut Aggregate, item: Item<'static>) {
    match item {
        Item::Clear => *agg = Aggregate::default(),
        Item::Bucket {
            size,
            of,
            name,
            start,
            counts,
        } => {
            let name = name.into_owned();
            let subject = match of {
                Of::Key => Subject::Key(name),
                Of::Owner => Subject::Owner(name),
            };
            match counts {
                Some(counts) => {
                    agg.series_mut(subject)
                        .insert(size, start, counts.into_owned());
                }
                None => agg.remove_bucket(size, &subject, start),
            }
        }
        Item::Key { id, track } => agg.set_track(id.into(), track.map(Cow::into_owned)),
        Item::Signals { next_signal } => {
            agg.next_signal = next_signal;
            agg.signals.clear();
            agg.open.clear();
        }
        Item::Signal(signal) => agg.signals.push_back(signal.into_owned()),
        Item::Open { kind, key, id } => {
            agg.open.insert((kind, key.into()), id);
        }
        Item::Covers { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::usage::aggregate::{
        CLIENTS_PER_BUCKET, DAILY_RETENTION, HOURLY_RETENTION, Observation, Thresholds, client_hash,
    };

    const DAY_MS: u64 = 86_400_000;
    const HOUR_MS: u64 = 3_600_000;
    const T0: u64 = 1_764_000_000_000;

    fn verify(seq: u64, time_ms: u64, key: &str, client: &str) -> Observation {
        Observation {
            seq,
            time_ms,
            verify: true,
            outcome: "VALID".into(),
            key_id: Some(key.into()),
            owner: Some(format!("owner of {key}").into()),
            client: Some(client.into()),
            credits: 1,
            previous_until: None,
            previous_since: None,
        }
    }

    /// Stores what changed in `agg` (everything when the file needs it), as the usage thread
    /// does.
    fn store(file: &mut FiguresFile, agg: &mut Aggregate, dirty: &mut Changes) {
        if let Some((update, _)) = Update::next(file.needs_full(), agg, &std::mem::take(dirty)) {
            file.write(update, None).unwrap();
        }
    }

    /// The figures stored in `dir`, read back as the usage thread reads them at open.
    fn load(dir: &Path, th: &Thresholds) -> Aggregate {
        let mut agg = FiguresFile::new(dir).load().unwrap().unwrap().agg;
        agg.drop_expired(th);
        agg
    }

    /// Stores write what changed but not what pruning dropped; loading drops it again. So
    /// figures stored on either side of their retention read back equal to the live ones.
    #[test]
    fn figures_stored_across_their_retention_read_back_equal() {
        let tmp = tempfile::tempdir().unwrap();
        let th = Thresholds::default();
        let mut file = FiguresFile::new(tmp.path());
        let (mut agg, mut dirty) = (Aggregate::default(), Changes::default());
        let mut seq = 0;
        let mut fold = |agg: &mut Aggregate, dirty: &mut Changes, at: u64, key: &str, client| {
            agg.apply(&th, &verify(seq, at, key, client), dirty);
            seq += 1;
        };
        let mut store_and_compare = |agg: &mut Aggregate, dirty: &mut Changes| {
            store(&mut file, agg, dirty);
            assert_eq!(&load(tmp.path(), &th), agg);
        };
        fold(&mut agg, &mut dirty, T0, "a", "192.0.2.1");
        fold(&mut agg, &mut dirty, T0 + 1, "b", "192.0.2.2");
        store_and_compare(&mut agg, &mut dirty);
        fold(&mut agg, &mut dirty, T0 + 2, "a", "192.0.2.3");
        store_and_compare(&mut agg, &mut dirty);
        // Day 40, only `a` used: the hours of day 0 and the addresses of both keys expire;
        // `b` changes only by pruning, so no store writes it again.
        fold(&mut agg, &mut dirty, T0 + 40 * DAY_MS, "a", "192.0.2.4");
        let b = Subject::Key("b".into());
        let day0 = Granularity::Day.floor(T0 / 1_000);
        assert!(agg.counts(Granularity::Hour, &b, T0 / 1_000).is_none());
        assert!(agg.counts(Granularity::Day, &b, day0).is_some());
        store_and_compare(&mut agg, &mut dirty);
        // Day 401: `b` has no buckets left and no address remembered: it is forgotten.
        fold(&mut agg, &mut dirty, T0 + 401 * DAY_MS, "a", "192.0.2.4");
        assert!(agg.counts(Granularity::Day, &b, day0).is_none());
        assert!(!agg.keys.contains_key("b"));
        assert!(!agg.owners.contains_key("owner of b"));
        store_and_compare(&mut agg, &mut dirty);
    }

    /// A few verifies of a scripted workload: which key, from which address, with which
    /// outcome, how far the clock moves before them (hours, possibly back), whether they are a
    /// burst (1,100 verifies from as many addresses, more than a bucket keeps), and whether the
    /// figures are stored after them.
    fn step() -> impl Strategy<Value = (usize, u16, u8, i64, bool, bool)> {
        let hours = prop_oneof![
            8 => 0..3i64,
            1 => 24 * 30..24 * 45i64,
            1 => -(24 * 45)..0i64,
        ];
        (
            0..4usize,
            0..1_500u16,
            0..3u8,
            hours,
            proptest::bool::weighted(0.02),
            proptest::bool::weighted(0.1),
        )
    }

    /// What a straightforward count says one bucket holds.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Plain {
        codes: BTreeMap<String, u64>,
        credits: u64,
        clients: BTreeSet<u64>,
        truncated: bool,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whatever the order of times (clocks step back, gaps pass the retention) and however
        /// many addresses (more than a bucket keeps), the live figures equal a straightforward
        /// count of the entries within retention, and figures stored at any point and read back
        /// equal the live ones, and go on equal when folding goes on from them.
        #[test]
        fn figures_equal_a_plain_count_and_read_back_equal(
            steps in proptest::collection::vec(step(), 1..300)
        ) {
            let tmp = tempfile::tempdir().unwrap();
            // Addresses remembered longer than hourly buckets are kept.
            let th = Thresholds { new_client_days: 60, ..Thresholds::default() };
            let mut file = FiguresFile::new(tmp.path());
            let (mut live, mut dirty) = (Aggregate::default(), Changes::default());
            let mut reloaded: Option<Aggregate> = None;
            let mut plain: BTreeMap<(Granularity, Subject, u64), Plain> = BTreeMap::new();
            let (mut clock, mut latest, mut seq) = (T0, 0u64, 0u64);
            for &(key, client, outcome, hours, burst, store_now) in &steps {
                clock = clock.saturating_add_signed(hours * HOUR_MS as i64);
                for n in 0..if burst { 1_100 } else { 1 } {
                    let t = clock + (seq * 7_919) % HOUR_MS;
                    latest = latest.max(t);
                    let client = u32::from(client) + n;
                    let address = format!("10.{}.{}.{}", client / 65_536, client / 256 % 256, client % 256);
                    let mut entry = verify(seq, t, &format!("key-{key}"), &address);
                    seq += 1;
                    entry.owner = Some(format!("owner-{}", key % 2).into());
                    entry.outcome = ["VALID", "NOT_FOUND", "RATE_LIMITED"][usize::from(outcome)].into();
                    live.apply(&th, &entry, &mut dirty);
                    if let Some(again) = &mut reloaded {
                        again.apply(&th, &entry, &mut Changes::default());
                    }
                    for g in [Granularity::Hour, Granularity::Day] {
                        for subject in [Subject::Key(format!("key-{key}")), Subject::Owner(format!("owner-{}", key % 2))] {
                            let bucket = plain.entry((g, subject, g.floor(t / 1_000))).or_default();
                            *bucket.codes.entry(entry.outcome.to_string()).or_default() += 1;
                            bucket.credits += 1;
                            let c = client_hash(&address);
                            if !bucket.clients.contains(&c) {
                                if bucket.clients.len() < CLIENTS_PER_BUCKET {
                                    bucket.clients.insert(c);
                                } else {
                                    bucket.truncated = true;
                                }
                            }
                        }
                    }
                }
                if store_now {
                    store(&mut file, &mut live, &mut dirty);
                    let read = load(tmp.path(), &th);
                    prop_assert_eq!(&read, &live);
                    reloaded = Some(read);
                }
            }
            if let Some(again) = &reloaded {
                prop_assert_eq!(again, &live);
            }
            let now = Granularity::Hour.floor(latest / 1_000);
            plain.retain(|(g, _, start), _| {
                let keep = match g {
                    Granularity::Hour => HOURLY_RETENTION,
                    Granularity::Day => DAILY_RETENTION,
                };
                start + keep >= now
            });
            let counted: BTreeMap<_, _> = live
                .buckets()
                .map(|(at, c)| {
                    (at, Plain {
                        codes: c.codes.to_map(),
                        credits: c.credits_spent,
                        clients: c.clients.iter().copied().collect(),
                        truncated: c.clients_truncated,
                    })
                })
                .collect();
            prop_assert_eq!(counted, plain);
        }
    }
}
