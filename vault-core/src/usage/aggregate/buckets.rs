//! The buckets of the usage figures: per key and per owner, per hour and per day, the verifies
//! by code, the credits spent and the distinct client addresses.
//!
//! They are laid out for a million keys each used a few times: a bucket holds one code's count
//! and one address in place, a day's buckets hold the newest in place, and a key's single hour
//! of a day is not held twice (see [`Series`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::small::ClientSet;
use crate::keys::VerifyCode;

/// Seconds in an hour.
pub const HOUR: u64 = 3_600;
/// Seconds in a day.
pub const DAY: u64 = 86_400;
/// Hourly buckets older than this (behind the newest entry) are dropped.
pub const HOURLY_RETENTION: u64 = 35 * DAY;
/// Daily buckets older than this (behind the newest entry) are dropped.
pub const DAILY_RETENTION: u64 = 400 * DAY;
/// Most distinct client addresses kept per bucket; past it the count is a lower bound and the
/// bucket says `clients_truncated`.
pub const CLIENTS_PER_BUCKET: usize = 1_024;

/// Bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Granularity {
    /// Bucket length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Granularity::Hour => HOUR,
            Granularity::Day => DAY,
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            Granularity::Hour => b'h',
            Granularity::Day => b'd',
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Granularity> {
        match tag {
            b'h' => Some(Granularity::Hour),
            b'd' => Some(Granularity::Day),
            _ => None,
        }
    }

    /// The start of the bucket holding `secs`.
    pub fn floor(self, secs: u64) -> u64 {
        secs - secs % self.seconds()
    }
}

/// What a series of buckets counts: one key, or all of one owner's keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A key, by id (24 hex characters).
    Key(String),
    /// An owner.
    Owner(String),
}

impl Subject {
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Subject::Key(_) => b'k',
            Subject::Owner(_) => b'o',
        }
    }

    pub(crate) fn text(&self) -> &str {
        match self {
            Subject::Key(s) | Subject::Owner(s) => s,
        }
    }
}

/// The verify codes, the most frequent first (the fold looks a code up by scanning this).
pub(crate) const KNOWN_CODES: [VerifyCode; 9] = [
    VerifyCode::Valid,
    VerifyCode::NotFound,
    VerifyCode::RateLimited,
    VerifyCode::UsageExceeded,
    VerifyCode::InsufficientScope,
    VerifyCode::Expired,
    VerifyCode::Revoked,
    VerifyCode::Disabled,
    VerifyCode::Malformed,
];

/// Verifies by code. Most buckets count one code only: its slot and count are held in place
/// (the fold touches no string and walks no map per bucket); a second code, or any other
/// outcome (an entry of a newer build), moves them to an array of the vault's own codes and a
/// map of the others. Stored and compared as the map of the codes that occurred.
#[derive(Debug, Clone)]
pub struct Codes(Tally);

#[derive(Debug, Clone)]
enum Tally {
    /// Verifies of one of the vault's own codes (`slot` in [`KNOWN_CODES`]; [`NO_SLOT`] for
    /// none yet).
    One {
        slot: u8,
        n: u64,
    },
    Many(Box<ManyCodes>),
}

/// The slot of [`Tally::One`] before any verify.
const NO_SLOT: u8 = u8::MAX;

#[derive(Debug, Clone, Default)]
struct ManyCodes {
    known: [u64; KNOWN_CODES.len()],
    other: BTreeMap<String, u64>,
}

impl Default for Codes {
    fn default() -> Codes {
        Codes(Tally::One {
            slot: NO_SLOT,
            n: 0,
        })
    }
}

impl PartialEq for Codes {
    fn eq(&self, other: &Codes) -> bool {
        self.known() == other.known() && self.others().eq(other.others())
    }
}

impl Eq for Codes {}

/// A verify code as [`Codes`] counts it: its slot in the array, or its name. Resolved once per
/// entry, for the four buckets it counts in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Code<'a> {
    Known(usize),
    Other(&'a str),
}

impl Code<'_> {
    pub(crate) fn of(code: &str) -> Code<'_> {
        match KNOWN_CODES.iter().position(|k| k.as_str() == code) {
            Some(i) => Code::Known(i),
            None => Code::Other(code),
        }
    }
}

impl Codes {
    /// Verifies with `code`.
    pub fn get(&self, code: &str) -> u64 {
        self.get_code(Code::of(code))
    }

    pub(crate) fn get_code(&self, code: Code<'_>) -> u64 {
        match (&self.0, code) {
            (Tally::One { slot, n }, Code::Known(i)) if usize::from(*slot) == i => *n,
            (Tally::One { .. }, _) => 0,
            (Tally::Many(m), Code::Known(i)) => m.known[i],
            (Tally::Many(m), Code::Other(code)) => m.other.get(code).copied().unwrap_or(0),
        }
    }

    /// The counts of the vault's own codes, by slot.
    fn known(&self) -> [u64; KNOWN_CODES.len()] {
        match &self.0 {
            Tally::One { slot, n } => {
                let mut known = [0; KNOWN_CODES.len()];
                if let Some(have) = known.get_mut(usize::from(*slot)) {
                    *have = *n;
                }
                known
            }
            Tally::Many(m) => m.known,
        }
    }

    /// The counts of other outcomes, in name order.
    fn others(&self) -> impl Iterator<Item = (&String, &u64)> {
        match &self.0 {
            Tally::One { .. } => None,
            Tally::Many(m) => Some(m.other.iter()),
        }
        .into_iter()
        .flatten()
    }

    /// Counts `n` more verifies with `code`.
    pub fn add(&mut self, code: &str, n: u64) {
        self.add_code(Code::of(code), n);
    }

    fn add_code(&mut self, code: Code<'_>, n: u64) {
        if let (Tally::One { slot, n: have }, Code::Known(i)) = (&mut self.0, code) {
            if usize::from(*slot) == i {
                *have = have.saturating_add(n);
                return;
            }
            if *slot == NO_SLOT {
                // Invariant: a slot of KNOWN_CODES, far below 255.
                *slot = u8::try_from(i).expect("a code's slot fits a byte");
                *have = n;
                return;
            }
        }
        let many = self.many();
        match code {
            Code::Known(i) => many.known[i] = many.known[i].saturating_add(n),
            Code::Other(code) => match many.other.get_mut(code) {
                Some(have) => *have = have.saturating_add(n),
                None => {
                    many.other.insert(code.to_owned(), n);
                }
            },
        }
    }

    /// The counts as an array and a map, from now on.
    fn many(&mut self) -> &mut ManyCodes {
        if let Tally::One { .. } = self.0 {
            self.0 = Tally::Many(Box::new(ManyCodes {
                known: self.known(),
                other: BTreeMap::new(),
            }));
        }
        match &mut self.0 {
            Tally::Many(m) => m,
            // Invariant: set just above.
            Tally::One { .. } => unreachable!("the counts were just moved to an array"),
        }
    }

    /// Counts `other`'s verifies too.
    pub fn add_all(&mut self, other: &Codes) {
        for (i, n) in other.known().into_iter().enumerate() {
            if n > 0 {
                self.add_code(Code::Known(i), n);
            }
        }
        for (code, n) in other.others() {
            self.add(code, *n);
        }
    }

    /// The codes that occurred, with their counts, in name order.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = self.others().map(|(c, n)| (c.clone(), *n)).collect();
        for (code, n) in KNOWN_CODES.iter().zip(self.known()) {
            if n > 0 {
                map.insert(code.as_str().to_owned(), n);
            }
        }
        map
    }

    /// Verifies of every code.
    pub fn total(&self) -> u64 {
        match &self.0 {
            Tally::One { n, .. } => *n,
            Tally::Many(m) => m.known.iter().chain(m.other.values()).sum(),
        }
    }
}

impl Serialize for Codes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Codes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(deserializer)?;
        let mut codes = Codes::default();
        for (code, n) in map {
            codes.add(&code, n);
        }
        Ok(codes)
    }
}

/// One bucket's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Verifies by code.
    pub codes: Codes,
    /// Credits spent.
    pub credits_spent: u64,
    /// Distinct client addresses, as [`client_hash`]es (at most [`CLIENTS_PER_BUCKET`]): the
    /// figures need only their number, and eight bytes each keep the buckets small.
    pub clients: ClientSet,
    /// More addresses were seen than are kept.
    pub clients_truncated: bool,
}

impl Counts {
    /// Verifies of every code.
    pub fn total(&self) -> u64 {
        self.codes.total()
    }

    /// Counts one verify; answers whether `client` was new to the bucket (counted now, or not
    /// kept because the bucket is full).
    pub(crate) fn add(&mut self, code: Code<'_>, credits: u64, client: Option<u64>) -> bool {
        self.codes.add_code(code, 1);
        self.credits_spent = self.credits_spent.saturating_add(credits);
        let Some(c) = client else { return false };
        if self.clients.len() < CLIENTS_PER_BUCKET {
            self.clients.insert(c)
        } else if self.clients.contains(&c) {
            false
        } else {
            self.clients_truncated = true;
            true
        }
    }
}

/// A bucket: its start (Unix s) and its figures.
pub(crate) type Bucket = (u64, Counts);

/// Where a series of buckets is held: [`Inline`] holds one bucket in place, a boxed vector
/// none (only its pointer).
pub(crate) trait Room: Default + Clone + std::fmt::Debug {
    fn slice(&self) -> &[Bucket];
    fn slice_mut(&mut self) -> &mut [Bucket];
    /// The buckets as a vector, to add or drop some; [`Room::settle`] after.
    fn vec(&mut self) -> &mut Vec<Bucket>;
    /// Holds the buckets in place again if they fit.
    fn settle(&mut self);
    #[cfg(test)]
    fn capacity(&self) -> usize;
}

/// None in place but a pointer: the hourly buckets, which a key used in one hour of a day does
/// not hold as such (see [`Series`]).
impl Room for Option<Box<Vec<Bucket>>> {
    fn slice(&self) -> &[Bucket] {
        self.as_deref().map_or(&[], Vec::as_slice)
    }

    fn slice_mut(&mut self) -> &mut [Bucket] {
        self.as_deref_mut().map_or(&mut [], Vec::as_mut_slice)
    }

    fn vec(&mut self) -> &mut Vec<Bucket> {
        self.get_or_insert_default()
    }

    fn settle(&mut self) {
        if self.as_ref().is_some_and(|v| v.is_empty()) {
            *self = None;
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.as_ref().map_or(0, |v| v.capacity())
    }
}

/// One bucket in place (no allocation for a key used on one day), more in a vector.
#[derive(Debug, Clone, Default)]
pub(crate) enum Inline {
    #[default]
    Empty,
    One(Bucket),
    More(Vec<Bucket>),
}

impl Room for Inline {
    fn slice(&self) -> &[Bucket] {
        match self {
            Inline::Empty => &[],
            Inline::One(b) => std::slice::from_ref(b),
            Inline::More(v) => v,
        }
    }

    fn slice_mut(&mut self) -> &mut [Bucket] {
        match self {
            Inline::Empty => &mut [],
            Inline::One(b) => std::slice::from_mut(b),
            Inline::More(v) => v,
        }
    }

    fn vec(&mut self) -> &mut Vec<Bucket> {
        if !matches!(self, Inline::More(_)) {
            let v = match std::mem::take(self) {
                Inline::One(b) => {
                    let mut v = Vec::with_capacity(2);
                    v.push(b);
                    v
                }
                _ => Vec::new(),
            };
            *self = Inline::More(v);
        }
        match self {
            Inline::More(v) => v,
            // Invariant: set just above.
            _ => unreachable!("the buckets were just moved to a vector"),
        }
    }

    fn settle(&mut self) {
        if let Inline::More(v) = self
            && v.len() <= 1
        {
            *self = v.pop().map_or(Inline::Empty, Inline::One);
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        match self {
            Inline::More(v) => v.capacity(),
            other => other.slice().len(),
        }
    }
}

/// Buckets by start, oldest first, held in place. A verify counts in the newest bucket (or
/// starts a newer one) and pruning drops the oldest, so both ends are reached without a search,
/// and the newest bucket is one step from its key's entry (in the entry itself when it is the
/// only one, with [`Inline`]). An entry of an earlier hour (a clock stepped back) and the
/// queries binary-search.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets<R: Room = Inline>(R);

impl<R: Room> Buckets<R> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.slice().is_empty()
    }

    fn find(&self, start: u64) -> Result<usize, usize> {
        self.0.slice().binary_search_by_key(&start, |(s, _)| *s)
    }

    fn newest(&self) -> Option<u64> {
        self.0.slice().last().map(|(s, _)| *s)
    }

    /// The bucket starting at `start`, if anything was counted in it.
    pub(crate) fn get(&self, start: u64) -> Option<&Counts> {
        self.find(start).ok().map(|i| &self.0.slice()[i].1)
    }

    /// The bucket starting at `start`, empty if it is new.
    pub(crate) fn at(&mut self, start: u64) -> &mut Counts {
        let len = self.0.slice().len();
        let i = match self.newest() {
            Some(newest) if newest == start => len - 1,
            Some(newest) if newest > start => match self.find(start) {
                Ok(i) => i,
                Err(i) => {
                    self.0.vec().insert(i, (start, Counts::default()));
                    self.0.settle();
                    i
                }
            },
            _ => {
                let v = self.0.vec();
                // Most keys have a bucket or two: room for one, not the four a first push takes.
                if v.capacity() == 0 {
                    v.reserve_exact(1);
                }
                v.push((start, Counts::default()));
                self.0.settle();
                len
            }
        };
        &mut self.0.slice_mut()[i].1
    }

    /// Sets the bucket starting at `start`.
    pub(crate) fn insert(&mut self, start: u64, counts: Counts) {
        *self.at(start) = counts;
    }

    /// Drops the bucket starting at `start`.
    pub(crate) fn remove(&mut self, start: u64) {
        if let Ok(i) = self.find(start) {
            self.0.vec().remove(i);
            self.0.settle();
        }
    }

    /// Drops the buckets that started more than `keep` seconds before `now` (Unix s), and gives
    /// back the room of a series that shrank to a quarter of it (a key busy once and idle since
    /// would otherwise hold a month of hourly buckets' room).
    pub(crate) fn drop_older(&mut self, keep: u64, now: u64) {
        let old = self
            .0
            .slice()
            .partition_point(|(start, _)| start.saturating_add(keep) < now);
        if old == 0 {
            return;
        }
        let v = self.0.vec();
        v.drain(..old);
        if v.len() <= v.capacity() / 4 {
            v.shrink_to(v.len() * 2);
        }
        self.0.settle();
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The buckets starting from `from` up to, not including, `to`.
    pub(crate) fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &Counts)> {
        let all = self.0.slice();
        let lo = all.partition_point(|(s, _)| *s < from);
        let hi = all.partition_point(|(s, _)| *s < to).max(lo);
        all[lo..hi].iter().map(|(s, c)| (*s, c))
    }

    /// Every bucket, oldest first.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Counts)> {
        self.0.slice().iter().map(|(s, c)| (*s, c))
    }

    #[cfg(test)]
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Counts> {
        self.0.slice_mut().iter_mut().map(|(_, c)| c)
    }
}

/// The buckets of one key or one owner.
///
/// A key used in one hour of a day has the same figures in that hour's bucket and that day's,
/// so its newest hour is not held twice while that lasts: `mirror` says which hour of the
/// newest day's bucket it is, and that bucket answers for the hour too. A verify in another
/// hour stores the hour's bucket first (a copy of the day's, which is all that hour holds),
/// and the mirror goes when the hour passes its retention (the day's stays). Readers see the
/// hour either way (`get`, `range`, `iter`); `==` compares what they see.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    #[expect(
        clippy::box_collection,
        reason = "a pointer, not a vector's three words, in every key's figures"
    )]
    pub(crate) hour: Buckets<Option<Box<Vec<Bucket>>>>,
    pub(crate) day: Buckets,
    /// The hour of the newest day's bucket (0 to 23) that is the newest hour's bucket too, or
    /// [`NO_MIRROR`].
    mirror: u8,
    /// The figures holding the series changed since they were last stored. Bookkeeping, not
    /// figures (`==` ignores it); here rather than beside the series because it fits in the
    /// room the mirror's byte leaves, and so a key's figures take a smaller allocation.
    pub(crate) changed: bool,
}

/// `Series::mirror` when every hourly bucket is held as such.
const NO_MIRROR: u8 = u8::MAX;

impl Default for Series {
    fn default() -> Series {
        Series {
            hour: Buckets::default(),
            day: Buckets::default(),
            mirror: NO_MIRROR,
            changed: false,
        }
    }
}

impl PartialEq for Series {
    fn eq(&self, other: &Series) -> bool {
        [Granularity::Hour, Granularity::Day]
            .into_iter()
            .all(|g| self.iter(g).eq(other.iter(g)))
    }
}

impl Eq for Series {}

impl Series {
    /// Counts a verify in the buckets of `hour` and `day`. The address is looked up in the
    /// day's bucket only if it is new to the hour's: the entry that brought it to the hour's
    /// put it in both.
    pub(crate) fn count(
        &mut self,
        (hour, day): (u64, u64),
        code: Code<'_>,
        credits: u64,
        client: Option<u64>,
    ) -> Counted {
        if let Some((mirrored, _)) = self.mirrored() {
            if mirrored == hour {
                return Counted::in_bucket(self.day.at(day), code, credits, client);
            }
            self.unmirror();
        } else if self.hour.newest().is_none_or(|h| h < hour)
            && self.day.newest().is_none_or(|d| d < day)
        {
            // The first verify of a newer day (and hour): the day's bucket stands for the hour's.
            // Invariant: `hour` lies within the day starting at `day`.
            self.mirror = u8::try_from((hour - day) / HOUR).expect("an hour of a day");
            return Counted::in_bucket(self.day.at(day), code, credits, client);
        }
        let in_hour = self.hour.at(hour);
        let counted = Counted::in_bucket(in_hour, code, credits, client);
        self.day
            .at(day)
            .add(code, credits, client.filter(|_| counted.new_client));
        counted
    }

    /// The newest hour's bucket held as the newest day's: its start and figures.
    fn mirrored(&self) -> Option<(u64, &Counts)> {
        if self.mirror == NO_MIRROR {
            return None;
        }
        let (day, counts) = self.day.0.slice().last()?;
        Some((day + u64::from(self.mirror) * HOUR, counts))
    }

    /// Holds the mirrored hour's bucket as such.
    fn unmirror(&mut self) {
        if let Some((hour, counts)) = self.mirrored() {
            let counts = counts.clone();
            self.mirror = NO_MIRROR;
            self.hour.insert(hour, counts);
        }
    }

    /// Whether no bucket is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.hour.is_empty() && self.day.is_empty()
    }

    /// Drops the buckets past their retention at `now` (Unix s).
    pub(crate) fn drop_expired(&mut self, now: u64) {
        if let Some((hour, _)) = self.mirrored()
            && hour.saturating_add(HOURLY_RETENTION) < now
        {
            self.mirror = NO_MIRROR;
        }
        self.hour.drop_older(HOURLY_RETENTION, now);
        self.day.drop_older(DAILY_RETENTION, now);
        if self.day.is_empty() {
            self.mirror = NO_MIRROR;
        }
    }

    /// The bucket of size `g` starting at `start`, if anything was counted in it.
    pub(crate) fn get(&self, g: Granularity, start: u64) -> Option<&Counts> {
        match g {
            Granularity::Hour => self.hour.get(start).or_else(|| {
                self.mirrored()
                    .filter(|(hour, _)| *hour == start)
                    .map(|(_, c)| c)
            }),
            Granularity::Day => self.day.get(start),
        }
    }

    /// The buckets of size `g` starting from `from` up to, not including, `to`, oldest first.
    pub(crate) fn range(
        &self,
        g: Granularity,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (u64, &Counts)> {
        let hours = (g == Granularity::Hour).then(|| self.hour.range(from, to));
        let days = (g == Granularity::Day).then(|| self.day.range(from, to));
        let mirrored = self
            .mirrored()
            .filter(|(h, _)| g == Granularity::Hour && from <= *h && *h < to);
        // The mirrored hour is newer than every hour held as such.
        hours
            .into_iter()
            .flatten()
            .chain(days.into_iter().flatten())
            .chain(mirrored)
    }

    /// Every bucket of size `g`, oldest first.
    pub(crate) fn iter(&self, g: Granularity) -> impl Iterator<Item = (u64, &Counts)> {
        self.range(g, 0, u64::MAX)
            .chain(self.get(g, u64::MAX).map(|c| (u64::MAX, c)))
    }

    /// Sets the bucket of size `g` starting at `start` (as stored figures are read back).
    pub(crate) fn insert(&mut self, g: Granularity, start: u64, counts: Counts) {
        self.unmirror();
        match g {
            Granularity::Hour => self.hour.insert(start, counts),
            Granularity::Day => self.day.insert(start, counts),
        }
    }

    /// Drops the bucket of size `g` starting at `start`.
    pub(crate) fn remove(&mut self, g: Granularity, start: u64) {
        self.unmirror();
        match g {
            Granularity::Hour => self.hour.remove(start),
            Granularity::Day => self.day.remove(start),
        }
    }
}

/// A client address as the figures keep it: the first eight bytes of its SHA-256, big-endian.
/// Stable across builds (it is stored); two addresses share one with probability about 2^-64
/// per pair, far below anything the counts could show.
pub fn client_hash(address: &str) -> u64 {
    let digest = Sha256::digest(address.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// What [`Series::count`] found in the hour's bucket once it counted a verify.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    /// The address was new to the bucket (or not kept, the bucket being full).
    pub(crate) new_client: bool,
    /// Verifies in the bucket.
    pub(crate) total: u64,
    /// Of which with the code of the one just counted.
    pub(crate) same_code: u64,
}

impl Counted {
    /// Counts a verify in `bucket`, the hour's.
    fn in_bucket(
        bucket: &mut Counts,
        code: Code<'_>,
        credits: u64,
        client: Option<u64>,
    ) -> Counted {
        let new_client = bucket.add(code, credits, client);
        Counted {
            new_client,
            total: bucket.total(),
            same_code: bucket.codes.get_code(code),
        }
    }
}
