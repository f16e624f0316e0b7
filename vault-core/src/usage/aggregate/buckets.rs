//! The buckets of the usage figures: per key and per owner, per hour and per day, the verifies
//! by code, the credits spent and the distinct client addresses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::VerifyCode;

/// The fold's hash maps, by key id and owner (and client address hash). Foldhash (randomly
/// seeded per process; the hasher hashbrown itself defaults to) hashes such a string several
/// times faster than the standard SipHash. Their keys are ids the vault made and owners
/// operators set, and client addresses enter only as SHA-256 prefixes.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// A set of client addresses (as [`client_hash`]es). A verify may look its address up in four
/// buckets: in a hash set that is one probe of a table, where a `BTreeSet` of a few hundred
/// addresses walks three nodes (each a cache miss once the verifies have run between two
/// folds).
pub type ClientSet = HashSet<u64, foldhash::quality::RandomState>;

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
const KNOWN_CODES: [VerifyCode; 9] = [
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

/// Verifies by code. The vault's own codes are counted in an array (the fold touches no string
/// and walks no map per bucket); any other outcome (an entry of a newer build) in a map. Stored
/// and compared as the map of the codes that occurred.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Codes {
    known: [u64; KNOWN_CODES.len()],
    other: BTreeMap<String, u64>,
}

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

    fn get_code(&self, code: Code<'_>) -> u64 {
        match code {
            Code::Known(i) => self.known[i],
            Code::Other(code) => self.other.get(code).copied().unwrap_or(0),
        }
    }

    /// Counts `n` more verifies with `code`.
    pub fn add(&mut self, code: &str, n: u64) {
        self.add_code(Code::of(code), n);
    }

    fn add_code(&mut self, code: Code<'_>, n: u64) {
        match code {
            Code::Known(i) => self.known[i] = self.known[i].saturating_add(n),
            Code::Other(code) => match self.other.get_mut(code) {
                Some(have) => *have = have.saturating_add(n),
                None => {
                    self.other.insert(code.to_owned(), n);
                }
            },
        }
    }

    /// Counts `other`'s verifies too.
    pub fn add_all(&mut self, other: &Codes) {
        for (mine, n) in self.known.iter_mut().zip(other.known) {
            *mine = mine.saturating_add(n);
        }
        for (code, n) in &other.other {
            self.add(code, *n);
        }
    }

    /// The codes that occurred, with their counts, in name order.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let mut map = self.other.clone();
        for (code, n) in KNOWN_CODES.iter().zip(self.known) {
            if n > 0 {
                map.insert(code.as_str().to_owned(), n);
            }
        }
        map
    }

    /// Verifies of every code.
    pub fn total(&self) -> u64 {
        self.known.iter().chain(self.other.values()).sum()
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

/// The buckets of one key or one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Series {
    pub(crate) hour: Buckets,
    pub(crate) day: Buckets,
}

/// Buckets by start, oldest first, held in place. A verify counts in the newest bucket (or
/// starts a newer one) and pruning drops the oldest, so both ends are reached without a search,
/// and the newest bucket is one step from its key's map entry (a B-tree of boxed buckets took
/// three). An entry of an earlier hour (a clock stepped back) and the queries binary-search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Buckets(VecDeque<(u64, Counts)>);

impl Buckets {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, start: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&start, |(s, _)| *s)
    }

    /// The bucket starting at `start`, if anything was counted in it.
    pub(crate) fn get(&self, start: u64) -> Option<&Counts> {
        self.find(start).ok().map(|i| &self.0[i].1)
    }

    /// The bucket starting at `start`, empty if it is new.
    pub(crate) fn at(&mut self, start: u64) -> &mut Counts {
        let i = match self.0.back() {
            Some(&(newest, _)) if newest == start => self.0.len() - 1,
            Some(&(newest, _)) if newest > start => match self.find(start) {
                Ok(i) => i,
                Err(i) => {
                    self.0.insert(i, (start, Counts::default()));
                    i
                }
            },
            _ => {
                // Most keys have a bucket or two: room for one, not the four a first push takes.
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.push_back((start, Counts::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    /// Sets the bucket starting at `start`.
    pub(crate) fn insert(&mut self, start: u64, counts: Counts) {
        *self.at(start) = counts;
    }

    /// Drops the bucket starting at `start`.
    pub(crate) fn remove(&mut self, start: u64) {
        if let Ok(i) = self.find(start) {
            self.0.remove(i);
        }
    }

    /// Drops the buckets that started more than `keep` seconds before `now` (Unix s), and gives
    /// back the room of a series that shrank to a quarter of it (a key busy once and idle since
    /// would otherwise hold a month of hourly buckets' room).
    pub(crate) fn drop_older(&mut self, keep: u64, now: u64) {
        let before = self.0.len();
        while let Some(&(start, _)) = self.0.front() {
            if start.saturating_add(keep) >= now {
                break;
            }
            self.0.pop_front();
        }
        if self.0.len() < before && self.0.len() <= self.0.capacity() / 4 {
            self.0.shrink_to(self.0.len() * 2);
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The buckets starting from `from` up to, not including, `to`.
    pub(crate) fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &Counts)> {
        let lo = self.0.partition_point(|(s, _)| *s < from);
        let hi = self.0.partition_point(|(s, _)| *s < to).max(lo);
        self.0.range(lo..hi).map(|(s, c)| (*s, c))
    }

    /// Every bucket, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Counts)> {
        self.0.iter().map(|(s, c)| (*s, c))
    }

    #[cfg(test)]
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Counts> {
        self.0.iter_mut().map(|(_, c)| c)
    }
}

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
        let in_hour = self.hour.at(hour);
        let new_client = in_hour.add(code, credits, client);
        let counted = Counted {
            new_client,
            total: in_hour.total(),
            same_code: in_hour.codes.get_code(code),
        };
        self.day
            .at(day)
            .add(code, credits, client.filter(|_| new_client));
        counted
    }

    /// Drops the buckets past their retention at `now` (Unix s).
    pub(crate) fn drop_expired(&mut self, now: u64) {
        for (buckets, keep) in [
            (&mut self.hour, HOURLY_RETENTION),
            (&mut self.day, DAILY_RETENTION),
        ] {
            buckets.drop_older(keep, now);
        }
    }

    pub(crate) fn of(&self, g: Granularity) -> &Buckets {
        match g {
            Granularity::Hour => &self.hour,
            Granularity::Day => &self.day,
        }
    }

    pub(crate) fn of_mut(&mut self, g: Granularity) -> &mut Buckets {
        match g {
            Granularity::Hour => &mut self.hour,
            Granularity::Day => &mut self.day,
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
