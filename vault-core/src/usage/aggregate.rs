//! The usage figures and signals as a pure function of the audit log.
//!
//! `Aggregate::apply` folds one committed entry into the figures; nothing else changes them,
//! and it reads nothing but the entry and the aggregate itself (times are the entries' own, never
//! the clock), so folding the same entries in the same order always gives the same aggregate.
//! That is what lets the live figures be checked against a rebuild from the log.
//!
//! Only `key.verify` entries that name a key count: a verify whose secret matched (any code), and
//! a wrong secret presented for an existing key id (`NOT_FOUND` with the key id set). A
//! malformed key or an unknown id has no key to count against.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

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

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::Entry;
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
/// Most addresses remembered per key for the new-address signal; a key used from more addresses
/// in the window is widely used, and new addresses stop being news.
pub const SEEN_PER_KEY: usize = 1_024;
/// Most signals kept (the oldest are dropped first).
pub const MAX_SIGNALS: usize = 10_000;
/// Most client addresses a signal lists as evidence.
pub const EVIDENCE_CLIENTS: usize = 16;
/// A signal of the same kind and key within this long of its last occurrence is the same signal:
/// its count and last time grow instead of a new one being raised.
pub const MERGE_WINDOW_MS: u64 = HOUR * 1_000;

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
enum Code<'a> {
    Known(usize),
    Other(&'a str),
}

impl Code<'_> {
    fn of(code: &str) -> Code<'_> {
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
    fn add(&mut self, code: Code<'_>, credits: u64, client: Option<u64>) -> bool {
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

/// What the fold needs of one audit entry, made by the thread that encodes the entry. Its strings
/// are inline up to 24 bytes (an outcome, a key id, a short owner, an IPv4 address), so the
/// usage thread reads them without chasing, or freeing, another thread's heap strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The entry's sequence number.
    pub seq: u64,
    /// Its time (Unix ms).
    pub time_ms: u64,
    /// Whether it is a `key.verify`.
    pub verify: bool,
    /// Its outcome (a verify code).
    pub outcome: CompactString,
    /// The key id (hex), when the entry names one.
    pub key_id: Option<CompactString>,
    /// The owner.
    pub owner: Option<CompactString>,
    /// The client address.
    pub client: Option<CompactString>,
    /// Credits spent (`details.cost`; 0 if none).
    pub credits: u64,
    /// When the previous secret used ends (`details.previous_secret_expires_at`), if it was used.
    pub previous_until: Option<u64>,
    /// When the key last changed before that verify (`details.previous_secret_since`: its
    /// rotation, or a later update), if the entry says (entries before it was logged do not).
    pub previous_since: Option<u64>,
}

impl From<Entry> for Observation {
    fn from(e: Entry) -> Observation {
        let detail = |name: &str| e.details.get(name).and_then(Value::as_u64);
        let previous = e.details.get("previous_secret") == Some(&Value::Bool(true));
        let previous_until = previous
            .then(|| detail("previous_secret_expires_at"))
            .flatten();
        let previous_since = previous.then(|| detail("previous_secret_since")).flatten();
        Observation {
            seq: e.seq,
            time_ms: e.time_ms,
            verify: e.event == "key.verify",
            credits: detail("cost").unwrap_or(0),
            previous_until,
            previous_since,
            outcome: e.outcome.into(),
            key_id: e.key_id.map(CompactString::from),
            owner: e.owner.map(CompactString::from),
            client: e.client.map(CompactString::from),
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
    fn drop_older(&mut self, keep: u64, now: u64) {
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
    fn capacity(&self) -> usize {
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
    fn count(
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
    fn drop_expired(&mut self, now: u64) {
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

/// What the aggregate remembers of a key for its signals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyTrack {
    pub(crate) owner: CompactString,
    /// Time of the key's first counted verify (ms).
    pub(crate) first_ms: u64,
    /// Client addresses (as [`client_hash`]es) that presented the right secret, with when each
    /// was last seen (ms).
    pub(crate) seen: FastMap<u64, u64>,
}

/// Whether an old secret used at `secs`, ending at `until`, is near the end of its grace: at
/// most `previous_secret_warn_seconds` left, and, for a grace no longer than that window (known
/// when the entry says since when, `since`), past its first half. A client that has not yet
/// switched right after a rotation with a short grace is normal; one still using the old secret
/// halfway through is what the signal is for.
fn near_expiry(th: &Thresholds, secs: u64, until: u64, since: Option<u64>) -> bool {
    let left = until.saturating_sub(secs);
    if left > th.previous_secret_warn_seconds {
        return false;
    }
    match since.filter(|since| *since < until) {
        Some(since) if until - since <= th.previous_secret_warn_seconds => {
            secs.saturating_sub(since).saturating_mul(2) >= until - since
        }
        _ => true,
    }
}

/// Whether `count` verifies in the hour starting at `hour` are a rate spike for a key first
/// used at `first_ms`, given its hourly buckets and the memo of their sum: `(baseline per
/// hour, count)` if so.
fn rate_spike(
    th: &Thresholds,
    hours: &Buckets,
    memo: &mut Option<Baseline>,
    hour: u64,
    count: u64,
    first_ms: u64,
) -> Option<(u64, u64)> {
    let window = th.rate_baseline_hours.max(1);
    let since = hour.saturating_sub(window * HOUR);
    // A key younger than the window has no baseline.
    if count < th.rate_min_per_hour || first_ms / 1_000 > since {
        return None;
    }
    let before = match *memo {
        Some(b) if b.hour == hour && b.window == window => b.before,
        _ => {
            let before = hours.range(since, hour).map(|(_, c)| c.total()).sum();
            *memo = Some(Baseline {
                hour,
                window,
                before,
            });
            before
        }
    };
    (count.saturating_mul(window) > th.rate_factor.saturating_mul(before))
        .then(|| (before.div_ceil(window), count))
}

/// A key's verifies in the `window` hours before `hour`, as last summed. A busy key needs the
/// sum at every verify, and it changes only with the hour (or when an entry of an earlier hour
/// arrives late, or pruning drops an hour of the window, which both forget it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Baseline {
    hour: u64,
    window: u64,
    before: u64,
}

/// What retention is measured from, given the newest entry's time (ms): the start of its hour
/// (Unix s).
fn retention_start(latest_ms: u64) -> u64 {
    Granularity::Hour.floor(latest_ms / 1_000)
}

/// How long a key remembers an address for `new_client` (ms).
fn seen_window_ms(th: &Thresholds) -> u64 {
    th.new_client_days.max(1).saturating_mul(DAY * 1_000)
}

/// Forgets the addresses of `seen` last seen `window_ms` or more before `now` (Unix s).
fn forget_expired(seen: &mut FastMap<u64, u64>, now: u64, window_ms: u64) {
    seen.retain(|_, last| last.saturating_add(window_ms) > now * 1_000);
}

impl KeyTrack {
    /// Remembers that `client` presented the right secret at `t` (unless [`SEEN_PER_KEY`]
    /// others are remembered).
    fn remember(&mut self, client: u64, t: u64, window_ms: u64) -> Remembered {
        let recent = |last: u64| last.saturating_add(window_ms) > t;
        // One lookup for a known address; the others are looked at only for an address not
        // seen lately, not once per verify.
        if let Some(last) = self.seen.get_mut(&client)
            && recent(*last)
        {
            let this_hour = *last / (HOUR * 1_000) == t / (HOUR * 1_000);
            *last = t;
            return Remembered {
                news: false,
                this_hour,
            };
        }
        let news = self.seen.values().any(|&last| recent(last));
        let room = self.seen.len() < SEEN_PER_KEY || self.seen.contains_key(&client);
        if room {
            self.seen.insert(client, t);
        }
        Remembered {
            news: news && room,
            this_hour: false,
        }
    }
}

/// What [`KeyTrack::remember`] found of an address.
#[derive(Debug, Clone, Copy, Default)]
struct Remembered {
    /// News: an address not seen in the window for a key with other recent addresses (a key's
    /// first address is never news).
    news: bool,
    /// The address already presented the right secret in the same hour, so the key's bucket of
    /// that hour counts it (or, past retention, is gone and stays gone: an hour's bucket is
    /// dropped only once the hour is past retention, and then at once if an entry recreates it).
    this_hour: bool,
}

/// What [`Series::count`] found in the hour's bucket once it counted a verify.
#[derive(Debug, Clone, Copy)]
struct Counted {
    /// The address was new to the bucket (or not kept, the bucket being full).
    new_client: bool,
    /// Verifies in the bucket.
    total: u64,
    /// Of which with the code of the one just counted.
    same_code: u64,
}

/// The outcome of a verify with a wrong secret for an existing key id.
const WRONG_SECRET: &str = "NOT_FOUND";

/// The kinds of suspicious activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// A wrong secret presented with an existing key id: someone holds the id (an old copy of
    /// the key after its grace ended, or a forged one; a typo fails the checksum instead).
    WrongSecret,
    /// The old secret of a rotation still in use close to the end of its grace period.
    PreviousSecretNearExpiry,
    /// The right secret from a client address not seen for the key in the window.
    NewClient,
    /// Verifies in an hour several times above the key's own recent hourly average.
    RateSpike,
    /// Failed verifies with no end-user address to count them against (no trusted proxy named
    /// one), so the throttle could refuse nothing.
    UnattributedFailures,
    /// The data directory's filesystem passed its high-water mark: archive the audit log before
    /// the disk fills, since a full disk stops every verify.
    DiskAlarm,
}

impl SignalKind {
    /// Every kind.
    pub const ALL: [SignalKind; 6] = [
        SignalKind::WrongSecret,
        SignalKind::PreviousSecretNearExpiry,
        SignalKind::NewClient,
        SignalKind::RateSpike,
        SignalKind::UnattributedFailures,
        SignalKind::DiskAlarm,
    ];

    /// The kind as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::WrongSecret => "wrong_secret",
            SignalKind::PreviousSecretNearExpiry => "previous_secret_near_expiry",
            SignalKind::NewClient => "new_client",
            SignalKind::RateSpike => "rate_spike",
            SignalKind::UnattributedFailures => "unattributed_failures",
            SignalKind::DiskAlarm => "disk_alarm",
        }
    }
}

/// One suspicious-activity signal with its evidence. Never a secret: addresses, times, counts
/// and audit sequence numbers only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// Increasing id (log-derived signals and unattributed-failure signals are numbered apart).
    pub id: u64,
    /// What was seen.
    pub kind: SignalKind,
    /// The key concerned.
    pub key_id: Option<String>,
    /// Its owner.
    pub owner: Option<String>,
    /// First occurrence (Unix ms).
    pub first_at_ms: u64,
    /// Last occurrence (Unix ms).
    pub last_at_ms: u64,
    /// Occurrences (for `rate_spike`: verifies in the hour).
    pub count: u64,
    /// Sequence number of the first audit entry that is evidence.
    pub first_seq: Option<u64>,
    /// Sequence number of the last one.
    pub last_seq: Option<u64>,
    /// Client addresses involved (at most [`EVIDENCE_CLIENTS`]).
    pub clients: Vec<String>,
    /// More addresses were involved than are listed.
    pub clients_truncated: bool,
    /// `previous_secret_near_expiry`: when the old secret stops working (Unix s).
    pub previous_secret_expires_at: Option<u64>,
    /// `rate_spike`: the key's average verifies per hour before (rounded up).
    pub baseline_per_hour: Option<u64>,
}

impl Signal {
    pub(crate) fn add_client(&mut self, client: Option<&str>) {
        let Some(c) = client else { return };
        // A full, truncated list stays as it is whatever the address (a storm of new addresses
        // merges into one signal: this spares each merge sixteen string comparisons).
        if self.clients_truncated {
            return;
        }
        if self.clients.iter().any(|have| have == c) {
            return;
        }
        if self.clients.len() < EVIDENCE_CLIENTS {
            self.clients.push(c.to_owned());
        } else {
            self.clients_truncated = true;
        }
    }
}

/// When signals fire. Integers only, so that a configuration compares exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// `wrong_secret` fires at this many wrong secrets for one key in an hour. Default 1: a
    /// wrong secret that passes the CRC-32 check is no typo (any one changed character fails
    /// it), so even one means someone holds the key id with another secret.
    pub wrong_secrets_per_hour: u64,
    /// `previous_secret_near_expiry` fires when the old secret is used with at most this many
    /// seconds of grace left. Default 3600: a client rolled over to the new secret stops using
    /// the old one within minutes; one still using it in the last hour breaks when it ends, or
    /// is a copy the customer does not know about. A grace no longer than this window is warned
    /// about only in its second half, so that the use of the old secret right after a rotation
    /// (before clients switch) is no signal.
    pub previous_secret_warn_seconds: u64,
    /// `new_client` looks this many days back for the address (0 turns it off). Default 30, as
    /// customers are told to watch a month of activity. A key's first address is never news.
    pub new_client_days: u64,
    /// `rate_spike` fires when an hour's verifies exceed this many times the key's average per
    /// hour over `rate_baseline_hours`. Default 5: daily peaks of steady traffic stay within 2
    /// to 3 times the mean.
    pub rate_factor: u64,
    /// ... and reach at least this many. Default 100: below it no traffic is a risk, and small
    /// numbers swing by large factors.
    pub rate_min_per_hour: u64,
    /// The baseline window, in hours (at least 1). Default 24: a whole daily cycle. A key younger
    /// than the window has no baseline and no `rate_spike`.
    pub rate_baseline_hours: u64,
    /// `unattributed_failures` fires at this many failed verifies without an end-user address in
    /// one minute (0 turns it off). Default 100, the throttle's own threshold per address.
    pub unattributed_failures_per_minute: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            wrong_secrets_per_hour: 1,
            previous_secret_warn_seconds: HOUR,
            new_client_days: 30,
            rate_factor: 5,
            rate_min_per_hour: 100,
            rate_baseline_hours: 24,
            unattributed_failures_per_minute: 100,
        }
    }
}

/// What [`Aggregate::apply`] changed since the figures were last stored, for persistence
/// (with the `changed` flag of each key's and owner's [`Figures`]) and for signal hooks.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Keys and owners whose `changed` flag was set.
    pub(crate) marked: usize,
    /// The oldest entry time folded (ms). Every bucket changed since starts at or after the
    /// start of this time's bucket: the entry that changed it lies in it.
    pub(crate) oldest_ms: Option<u64>,
    pub(crate) signals: bool,
    /// Signals raised (not merged), for the hooks.
    pub(crate) raised: Vec<Signal>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.marked == 0 && !self.signals
    }

    fn mark(&mut self, figures: &mut Figures, t: u64) {
        if !figures.changed {
            figures.changed = true;
            self.marked += 1;
        }
        self.oldest_ms = Some(self.oldest_ms.map_or(t, |oldest| oldest.min(t)));
    }
}

/// The figures of one key or one owner, in one map entry so that a verify finds each with one
/// lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub(crate) series: Series,
    /// Keys only: what the signals remember of the key, from its first counted verify on.
    pub(crate) track: Option<KeyTrack>,
    /// Changed since the figures were last stored. Bookkeeping, not figures: `==` ignores it.
    pub(crate) changed: bool,
    /// Keys only: the memo of `rate_spike`'s baseline. Bookkeeping too.
    pub(crate) baseline: Option<Baseline>,
}

impl PartialEq for Figures {
    fn eq(&self, other: &Figures) -> bool {
        self.series == other.series && self.track == other.track
    }
}

impl Eq for Figures {}

impl Figures {
    /// Whether nothing is left (a key's track is never dropped).
    fn is_empty(&self) -> bool {
        self.track.is_none() && self.series.hour.is_empty() && self.series.day.is_empty()
    }
}

/// Usage figures and signals of every key, folded from the audit log up to `next_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// The next entry to fold (every entry before it is counted).
    pub(crate) next_seq: u64,
    /// The newest entry time folded (ms); retention is measured from it.
    pub(crate) latest_ms: u64,
    /// By key id (hex).
    pub(crate) keys: FastMap<CompactString, Figures>,
    /// By owner.
    pub(crate) owners: FastMap<CompactString, Figures>,
    pub(crate) signals: VecDeque<Signal>,
    /// The signal each (kind, key) would merge into, by id.
    pub(crate) open: FastMap<(SignalKind, CompactString), u64>,
    pub(crate) next_signal: u64,
}

impl Aggregate {
    /// The sequence number of the next entry to fold: every entry before it is counted.
    pub fn covers(&self) -> u64 {
        self.next_seq
    }

    /// Folds `entry` in, as the vault does with each committed entry (for replaying an exported
    /// log, or scripting one). Entries before [`Aggregate::covers`] are ignored.
    pub fn fold(&mut self, th: &Thresholds, entry: &Entry) {
        self.apply(
            th,
            &Observation::from(entry.clone()),
            &mut Changes::default(),
        );
    }

    /// Keys and owners with figures.
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.owners.len()
    }

    /// What is remembered of each key for its signals.
    pub(crate) fn tracks(&self) -> impl Iterator<Item = (&CompactString, &KeyTrack)> {
        self.keys
            .iter()
            .filter_map(|(id, f)| f.track.as_ref().map(|track| (id, track)))
    }

    /// Sets (or, with `None`, forgets) what is remembered of key `id`.
    pub(crate) fn set_track(&mut self, id: CompactString, track: Option<KeyTrack>) {
        match track {
            Some(track) => self.keys.entry(id).or_default().track = Some(track),
            None => {
                if let Some(figures) = self.keys.get_mut(&id) {
                    figures.track = None;
                    if figures.is_empty() {
                        self.keys.remove(&id);
                    }
                }
            }
        }
    }

    /// The signals, oldest first.
    pub fn signals(&self) -> impl Iterator<Item = &Signal> {
        self.signals.iter()
    }

    /// The bucket of `subject` starting at `start`, if anything was counted in it.
    pub fn counts(&self, g: Granularity, subject: &Subject, start: u64) -> Option<&Counts> {
        self.series_of(subject)?.of(g).get(start)
    }

    /// Every non-empty bucket: `(size, subject, start)` and its figures.
    pub fn buckets(&self) -> impl Iterator<Item = ((Granularity, Subject, u64), &Counts)> {
        let keys = self
            .keys
            .iter()
            .map(|(k, f)| (Subject::Key(k.to_string()), &f.series));
        let owners = self
            .owners
            .iter()
            .map(|(o, f)| (Subject::Owner(o.to_string()), &f.series));
        keys.chain(owners).flat_map(|(subject, s)| {
            [Granularity::Hour, Granularity::Day]
                .into_iter()
                .flat_map(move |g| {
                    let subject = subject.clone();
                    s.of(g)
                        .iter()
                        .map(move |(start, c)| ((g, subject.clone(), start), c))
                })
        })
    }

    pub(crate) fn series_of(&self, subject: &Subject) -> Option<&Series> {
        match subject {
            Subject::Key(k) => self.keys.get(k.as_str()),
            Subject::Owner(o) => self.owners.get(o.as_str()),
        }
        .map(|f| &f.series)
    }

    pub(crate) fn series_mut(&mut self, subject: Subject) -> &mut Series {
        match subject {
            Subject::Key(k) => {
                let figures = self.keys.entry(k.into()).or_default();
                figures.baseline = None;
                &mut figures.series
            }
            Subject::Owner(o) => &mut self.owners.entry(o.into()).or_default().series,
        }
    }

    /// Drops a bucket, and its figures once empty (as pruning does).
    pub(crate) fn remove_bucket(&mut self, g: Granularity, subject: &Subject, start: u64) {
        let (all, name) = match subject {
            Subject::Key(k) => (&mut self.keys, k),
            Subject::Owner(o) => (&mut self.owners, o),
        };
        if let Some(figures) = all.get_mut(name.as_str()) {
            figures.baseline = None;
            figures.series.of_mut(g).remove(start);
            if figures.is_empty() {
                all.remove(name.as_str());
            }
        }
    }

    /// Folds `entry` in. Entries before `next_seq` (already counted) are ignored.
    pub(crate) fn apply(&mut self, th: &Thresholds, entry: &Observation, ch: &mut Changes) {
        if entry.seq < self.next_seq {
            return;
        }
        self.next_seq = entry.seq + 1;
        let t = entry.time_ms;
        if t / (HOUR * 1_000) > self.latest_ms / (HOUR * 1_000) {
            self.latest_ms = t;
            self.prune(th, ch);
        }
        self.latest_ms = self.latest_ms.max(t);
        if !entry.verify {
            return;
        }
        let (Some(key), Some(named)) = (&entry.key_id, &entry.owner) else {
            return;
        };
        let secs = t / 1_000;
        let (hour, day) = (Granularity::Hour.floor(secs), Granularity::Day.floor(secs));
        let wrong = entry.outcome == WRONG_SECRET;
        let code = Code::of(&entry.outcome);
        let client = entry.client.as_deref().map(client_hash);
        let credits = entry.credits;

        // One lookup on the hot path; the key is copied only when first counted.
        let figures = match self.keys.get_mut(key.as_str()) {
            Some(figures) => figures,
            None => self.keys.entry(key.clone()).or_default(),
        };
        ch.mark(figures, t);
        let Figures {
            series,
            track,
            baseline,
            ..
        } = figures;
        // An entry of an hour before the memo's changed a bucket the memo may have summed.
        if baseline.is_some_and(|b| hour < b.hour) {
            *baseline = None;
        }
        // The key's figures go to the owner it had at its first counted verify. A key's owner
        // never changes, so that is the owner every entry of it names; and so every address in
        // a key's bucket is in its owner's bucket too.
        let track = track.get_or_insert_with(|| KeyTrack {
            owner: named.clone(),
            first_ms: t,
            seen: FastMap::default(),
        });
        let seen = match client {
            Some(c) if !wrong && th.new_client_days > 0 => track.remember(c, t, seen_window_ms(th)),
            _ => Remembered::default(),
        };
        let KeyTrack {
            owner,
            first_ms,
            seen: remembered,
        } = track;
        let first_ms = *first_ms;

        // Looking addresses up is most of what a verify costs here, so an address is looked up
        // only where it can be new. One that presented the right secret this hour is in the
        // key's hour; one already in the key's hour is in the key's day and the owner's hour and
        // day too (the entry that brought it put it in all four); one already in the owner's
        // hour is in the owner's day.
        let this_hour = series.count(
            (hour, day),
            code,
            credits,
            client.filter(|_| !seen.this_hour),
        );
        let client = client.filter(|_| this_hour.new_client);
        let spike = if !wrong && th.rate_factor > 0 {
            rate_spike(th, &series.hour, baseline, hour, this_hour.total, first_ms)
        } else {
            None
        };
        // An entry of an hour before the newest (a clock stepped back) may land past retention:
        // drop that at once, as pruning did and loading does, so that the figures never hold
        // what loading them would drop.
        let now = retention_start(self.latest_ms);
        let late = hour < now;
        if late {
            series.drop_expired(now);
            forget_expired(remembered, now, seen_window_ms(th));
        }

        let figures = match self.owners.get_mut(owner.as_str()) {
            Some(figures) => figures,
            None => self.owners.entry(owner.clone()).or_default(),
        };
        ch.mark(figures, t);
        figures.series.count((hour, day), code, credits, client);
        if late {
            figures.series.drop_expired(now);
            if figures.is_empty() {
                self.owners.remove(owner.as_str());
            }
        }

        // Signals are rare next to verifies: the owner is copied only to raise one.
        let near_expiry = entry
            .previous_until
            .filter(|until| near_expiry(th, secs, *until, entry.previous_since));
        let wrong_secret = wrong && this_hour.same_code >= th.wrong_secrets_per_hour.max(1);
        if !(wrong_secret || near_expiry.is_some() || seen.news || spike.is_some()) {
            return;
        }
        let owner = owner.clone();
        if wrong {
            if wrong_secret {
                self.raise(SignalKind::WrongSecret, key, &owner, entry, ch, |_| {});
            }
            return;
        }
        if let Some(until) = near_expiry {
            self.raise(
                SignalKind::PreviousSecretNearExpiry,
                key,
                &owner,
                entry,
                ch,
                |s| s.previous_secret_expires_at = Some(until),
            );
        }
        if seen.news {
            self.raise(SignalKind::NewClient, key, &owner, entry, ch, |_| {});
        }
        if let Some((baseline, count)) = spike {
            self.raise(SignalKind::RateSpike, key, &owner, entry, ch, |s| {
                s.baseline_per_hour = Some(baseline);
                s.count = count;
            });
        }
    }

    /// Raises a signal of `kind` for `key`, or extends the one raised within the merge window.
    fn raise(
        &mut self,
        kind: SignalKind,
        key: &str,
        owner: &str,
        entry: &Observation,
        ch: &mut Changes,
        extra: impl FnOnce(&mut Signal),
    ) {
        let t = entry.time_ms;
        let client = entry.client.as_deref();
        ch.signals = true;
        let slot = (kind, CompactString::from(key));
        if let Some(&id) = self.open.get(&slot)
            && let Some(i) = self.position(id)
            && let Some(signal) = self.signals.get_mut(i)
            && signal.last_at_ms.saturating_add(MERGE_WINDOW_MS) > t
        {
            signal.last_at_ms = signal.last_at_ms.max(t);
            signal.count += 1;
            signal.last_seq = Some(entry.seq);
            signal.add_client(client);
            extra(signal);
            return;
        }
        let mut signal = Signal {
            id: self.next_signal,
            kind,
            key_id: Some(key.to_owned()),
            owner: Some(owner.to_owned()),
            first_at_ms: t,
            last_at_ms: t,
            count: 1,
            first_seq: Some(entry.seq),
            last_seq: Some(entry.seq),
            clients: Vec::new(),
            clients_truncated: false,
            previous_secret_expires_at: None,
            baseline_per_hour: None,
        };
        signal.add_client(client);
        extra(&mut signal);
        self.next_signal += 1;
        self.open.insert(slot, signal.id);
        ch.raised.push(signal.clone());
        self.signals.push_back(signal);
        while self.signals.len() > MAX_SIGNALS {
            if let Some(old) = self.signals.pop_front() {
                let slot = (
                    old.kind,
                    CompactString::from(old.key_id.unwrap_or_default()),
                );
                if self.open.get(&slot) == Some(&old.id) {
                    self.open.remove(&slot);
                }
            }
        }
    }

    /// Where signal `id` sits in the ring: ids are consecutive, and only the oldest are dropped.
    fn position(&self, id: u64) -> Option<usize> {
        let front = self.signals.front()?.id;
        let i = usize::try_from(id.checked_sub(front)?).ok()?;
        (i < self.signals.len() && self.signals[i].id == id).then_some(i)
    }

    /// Drops what is past its retention and forgets merge slots past the merge window. Runs when
    /// an entry opens a new hour.
    fn prune(&mut self, th: &Thresholds, ch: &mut Changes) {
        self.drop_expired(th);
        let latest = self.latest_ms;
        let stale: Vec<_> = self
            .open
            .iter()
            .filter(|(_, id)| {
                self.position(**id)
                    .and_then(|i| self.signals.get(i))
                    .is_none_or(|s| s.last_at_ms.saturating_add(MERGE_WINDOW_MS) <= latest)
            })
            .map(|(slot, _)| slot.clone())
            .collect();
        if !stale.is_empty() {
            ch.signals = true;
        }
        for slot in stale {
            self.open.remove(&slot);
        }
    }

    /// Drops buckets and remembered addresses past their retention, measured from the start of
    /// the newest entry's hour. Stores do not record what this drops: loading stored figures
    /// does it again, and anywhere in that hour it drops the same.
    pub(crate) fn drop_expired(&mut self, th: &Thresholds) {
        let (now, window_ms) = (retention_start(self.latest_ms), seen_window_ms(th));
        for all in [&mut self.keys, &mut self.owners] {
            for figures in all.values_mut() {
                figures.baseline = None;
                figures.series.drop_expired(now);
                if let Some(track) = &mut figures.track {
                    forget_expired(&mut track.seen, now, window_ms);
                }
            }
            all.retain(|_, figures| !figures.is_empty());
        }
    }

    /// The buckets of `subject` from `from` to `to` (Unix s, both already on bucket bounds).
    pub(crate) fn series(
        &self,
        g: Granularity,
        subject: &Subject,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (u64, &Counts)> {
        self.series_of(subject)
            .into_iter()
            .flat_map(move |s| s.of(g).range(from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An old secret used at `at` (Unix s) of a key rotated at `since` with grace until `until`.
    fn old_secret(seq: u64, at: u64, since: Option<u64>, until: u64) -> Observation {
        Observation {
            seq,
            time_ms: at * 1_000,
            verify: true,
            outcome: "VALID".into(),
            key_id: Some("00112233445566778899aabb".into()),
            owner: Some("alice".into()),
            client: Some("192.0.2.1".into()),
            credits: 0,
            previous_until: Some(until),
            previous_since: since,
        }
    }

    fn near_expiry_signals(obs: &[Observation]) -> usize {
        let th = Thresholds::default();
        let (mut agg, mut ch) = (Aggregate::default(), Changes::default());
        for o in obs {
            agg.apply(&th, o, &mut ch);
        }
        agg.signals()
            .filter(|s| s.kind == SignalKind::PreviousSecretNearExpiry)
            .count()
    }

    /// The README's walkthrough: rotate with `--grace 3600` (the warning window) and use the old
    /// key at once. Clients have not switched yet: no signal. Still in use past half of that
    /// grace: a signal. A long grace warns in its last hour; an entry written before `since`
    /// was logged keeps the plain rule.
    #[test]
    fn an_old_secret_is_near_expiry_late_in_its_grace_not_right_after_the_rotation() {
        let t = 1_900_000_000;
        assert_eq!(
            near_expiry_signals(&[old_secret(1, t + 1, Some(t), t + 3_600)]),
            0
        );
        assert_eq!(
            near_expiry_signals(&[old_secret(1, t + 1_799, Some(t), t + 3_600)]),
            0
        );
        assert_eq!(
            near_expiry_signals(&[old_secret(1, t + 1_800, Some(t), t + 3_600)]),
            1
        );
        // A 10-minute grace: the second five minutes.
        assert_eq!(
            near_expiry_signals(&[old_secret(1, t + 60, Some(t), t + 600)]),
            0
        );
        assert_eq!(
            near_expiry_signals(&[old_secret(1, t + 300, Some(t), t + 600)]),
            1
        );
        // A week of grace: the last hour only.
        let week = t + 7 * 86_400;
        assert_eq!(
            near_expiry_signals(&[old_secret(1, week - 3_601, Some(t), week)]),
            0
        );
        assert_eq!(
            near_expiry_signals(&[old_secret(1, week - 3_600, Some(t), week)]),
            1
        );
        // No `since` (an entry from before it was logged): the last hour, as it always was.
        assert_eq!(
            near_expiry_signals(&[old_secret(1, t + 1, None, t + 3_600)]),
            1
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Count(u64),
        Insert(u64, u64),
        Remove(u64),
        DropOlder(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Starts in a small range, so that operations meet the same buckets.
        let start = 0..40u64;
        prop_oneof![
            4 => start.clone().prop_map(Op::Count),
            1 => (start.clone(), 1..5u64).prop_map(|(s, n)| Op::Insert(s, n)),
            1 => start.clone().prop_map(Op::Remove),
            1 => (0..10u64, start).prop_map(|(keep, now)| Op::DropOlder(keep, now)),
        ]
    }

    fn counted(n: u64) -> Counts {
        let mut counts = Counts::default();
        counts.codes.add("VALID", n);
        counts
    }

    /// A key busy for a month and idle since gives the room of its buckets back as they expire.
    #[test]
    fn pruned_buckets_give_their_room_back() {
        let mut buckets = Buckets::default();
        for hour in 0..840 {
            buckets.at(hour * HOUR).add(Code::Known(0), 1, None);
        }
        assert!(buckets.capacity() >= 840);
        buckets.drop_older(HOURLY_RETENTION, 800 * HOUR + HOURLY_RETENTION);
        assert_eq!(buckets.iter().count(), 40);
        assert!(buckets.capacity() <= 80, "{}", buckets.capacity());
        buckets.drop_older(HOURLY_RETENTION, 900 * HOUR + HOURLY_RETENTION);
        assert!(buckets.is_empty());
        assert_eq!(buckets.capacity(), 0);
    }

    proptest! {
        /// Buckets answer as a sorted map of the same operations does.
        #[test]
        fn buckets_behave_as_a_sorted_map(ops in proptest::collection::vec(op(), 0..200)) {
            let (mut buckets, mut model) = (Buckets::default(), BTreeMap::<u64, Counts>::new());
            for op in ops {
                match op {
                    Op::Count(s) => {
                        buckets.at(s).add(Code::Known(0), 1, None);
                        model.entry(s).or_default().add(Code::Known(0), 1, None);
                    }
                    Op::Insert(s, n) => {
                        buckets.insert(s, counted(n));
                        model.insert(s, counted(n));
                    }
                    Op::Remove(s) => {
                        buckets.remove(s);
                        model.remove(&s);
                    }
                    Op::DropOlder(keep, now) => {
                        buckets.drop_older(keep, now);
                        model.retain(|s, _| s + keep >= now);
                    }
                }
                let all: Vec<_> = buckets.iter().map(|(s, c)| (s, c.clone())).collect();
                let want: Vec<_> = model.iter().map(|(s, c)| (*s, c.clone())).collect();
                prop_assert_eq!(all, want);
                prop_assert_eq!(buckets.is_empty(), model.is_empty());
                for s in 0..41 {
                    prop_assert_eq!(buckets.get(s), model.get(&s));
                    let range: Vec<_> = buckets.range(s, s + 7).map(|(s, _)| s).collect();
                    let want: Vec<_> = model.range(s..s + 7).map(|(s, _)| *s).collect();
                    prop_assert_eq!(range, want);
                }
            }
        }
    }
}
