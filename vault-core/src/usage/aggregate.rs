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

/// The fold's hash maps. It does about ten lookups per verify, by key id and owner; foldhash
/// (randomly seeded per process; the hasher hashbrown itself defaults to) hashes such a string
/// several times faster than the standard SipHash. Their keys are ids the vault made and owners
/// operators set, and client addresses enter only as SHA-256 prefixes.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// A set of client addresses (as [`client_hash`]es). A verify looks its address up in four
/// buckets and in its key's remembered addresses: in a hash set that is one probe of a table,
/// where a `BTreeSet` of a few hundred addresses walks three nodes (most of the fold's time, as
/// each node is a cache miss once the verifies have run between two folds).
pub type ClientSet = HashSet<u64, foldhash::quality::RandomState>;

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

impl Codes {
    fn slot(code: &str) -> Option<usize> {
        KNOWN_CODES.iter().position(|k| k.as_str() == code)
    }

    /// Verifies with `code`.
    pub fn get(&self, code: &str) -> u64 {
        match Codes::slot(code) {
            Some(i) => self.known[i],
            None => self.other.get(code).copied().unwrap_or(0),
        }
    }

    /// Counts `n` more verifies with `code`.
    pub fn add(&mut self, code: &str, n: u64) {
        match Codes::slot(code) {
            Some(i) => self.known[i] = self.known[i].saturating_add(n),
            None => match self.other.get_mut(code) {
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
    fn add(&mut self, code: &str, credits: u64, client: Option<u64>) -> bool {
        self.codes.add(code, 1);
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

/// What the fold needs of one audit entry. The audit writer makes it by moving fields out of the
/// entry it has just written (no copy, no allocation), and drops the rest itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The entry's sequence number.
    pub seq: u64,
    /// Its time (Unix ms).
    pub time_ms: u64,
    /// Whether it is a `key.verify`.
    pub verify: bool,
    /// Its outcome (a verify code).
    pub outcome: String,
    /// The key id (hex), when the entry names one.
    pub key_id: Option<String>,
    /// The owner.
    pub owner: Option<String>,
    /// The client address.
    pub client: Option<String>,
    /// Credits spent (`details.cost`; 0 if none).
    pub credits: u64,
    /// When the previous secret used ends (`details.previous_secret_expires_at`), if it was used.
    pub previous_until: Option<u64>,
}

impl From<Entry> for Observation {
    fn from(e: Entry) -> Observation {
        let detail = |name: &str| e.details.get(name).and_then(Value::as_u64);
        let previous_until = if e.details.get("previous_secret") == Some(&Value::Bool(true)) {
            detail("previous_secret_expires_at")
        } else {
            None
        };
        Observation {
            seq: e.seq,
            time_ms: e.time_ms,
            verify: e.event == "key.verify",
            credits: detail("cost").unwrap_or(0),
            previous_until,
            outcome: e.outcome,
            key_id: e.key_id,
            owner: e.owner,
            client: e.client,
        }
    }
}

/// The buckets of one key or one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Series {
    pub(crate) hour: BTreeMap<u64, Counts>,
    pub(crate) day: BTreeMap<u64, Counts>,
}

impl Series {
    pub(crate) fn of(&self, g: Granularity) -> &BTreeMap<u64, Counts> {
        match g {
            Granularity::Hour => &self.hour,
            Granularity::Day => &self.day,
        }
    }

    pub(crate) fn of_mut(&mut self, g: Granularity) -> &mut BTreeMap<u64, Counts> {
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
    pub(crate) owner: String,
    /// Time of the key's first counted verify (ms).
    pub(crate) first_ms: u64,
    /// Client addresses (as [`client_hash`]es) that presented the right secret, with when each
    /// was last seen (ms).
    pub(crate) seen: FastMap<u64, u64>,
}

impl KeyTrack {
    /// Remembers that `client` presented the right secret at `t` (unless [`SEEN_PER_KEY`]
    /// others are remembered); answers whether that is news: an address not seen in the last
    /// `window_ms` for a key with other recent addresses (a key's first address is never news).
    fn remember(&mut self, client: u64, t: u64, window_ms: u64) -> bool {
        let recent = |last: u64| last.saturating_add(window_ms) > t;
        // One lookup for a known address; the others are looked at only for an address not
        // seen lately, not once per verify.
        if let Some(last) = self.seen.get_mut(&client)
            && recent(*last)
        {
            *last = t;
            return false;
        }
        let news = self.seen.values().any(|&last| recent(last));
        let room = self.seen.len() < SEEN_PER_KEY || self.seen.contains_key(&client);
        if room {
            self.seen.insert(client, t);
        }
        news && room
    }
}

/// The verifies in a key's bucket: all, and those with a wrong secret.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    all: u64,
    wrong: u64,
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
    /// is a copy the customer does not know about.
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

/// What changed of one key or owner since the figures were last stored.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Buckets touched, by size and start: few (those of the hours and days since), so a list.
    pub(crate) buckets: Vec<(Granularity, u64)>,
    /// What is remembered of the key changed.
    pub(crate) track: bool,
}

impl Marks {
    fn bucket(&mut self, g: Granularity, start: u64) {
        // The newest buckets are the ones touched again: look from the end.
        if !self.buckets.iter().rev().any(|b| *b == (g, start)) {
            self.buckets.push((g, start));
        }
    }
}

/// What [`Aggregate::apply`] changed: for persistence and for signal hooks. One map entry per
/// key and per owner, so that marking what is already marked allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// By key id.
    pub(crate) keys: FastMap<String, Marks>,
    /// By owner.
    pub(crate) owners: FastMap<String, Marks>,
    pub(crate) signals: bool,
    /// Signals raised (not merged), for the hooks.
    pub(crate) raised: Vec<Signal>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.owners.is_empty() && !self.signals
    }

    /// Keys and owners marked.
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.owners.len()
    }

    /// The marks of `name`; its name is copied only when first marked.
    fn marks<'a>(map: &'a mut FastMap<String, Marks>, name: &str) -> &'a mut Marks {
        if !map.contains_key(name) {
            map.insert(name.to_owned(), Marks::default());
        }
        // Invariant: inserted just above if it was missing.
        map.get_mut(name).expect("marked")
    }
}

/// Usage figures and signals of every key, folded from the audit log up to `next_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// The next entry to fold (every entry before it is counted).
    pub(crate) next_seq: u64,
    /// The newest entry time folded (ms); retention is measured from it.
    pub(crate) latest_ms: u64,
    /// Buckets by key id (hex).
    pub(crate) key_series: FastMap<String, Series>,
    /// Buckets by owner.
    pub(crate) owner_series: FastMap<String, Series>,
    pub(crate) keys: FastMap<String, KeyTrack>,
    pub(crate) signals: VecDeque<Signal>,
    /// The signal each (kind, key) would merge into, by id.
    pub(crate) open: BTreeMap<(SignalKind, String), u64>,
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
        self.keys.len().max(self.key_series.len()) + self.owner_series.len()
    }

    /// The signals, oldest first.
    pub fn signals(&self) -> impl Iterator<Item = &Signal> {
        self.signals.iter()
    }

    /// The bucket of `subject` starting at `start`, if anything was counted in it.
    pub fn counts(&self, g: Granularity, subject: &Subject, start: u64) -> Option<&Counts> {
        self.series_of(subject)?.of(g).get(&start)
    }

    /// Every non-empty bucket: `(size, subject, start)` and its figures.
    pub fn buckets(&self) -> impl Iterator<Item = ((Granularity, Subject, u64), &Counts)> {
        let keys = self
            .key_series
            .iter()
            .map(|(k, s)| (Subject::Key(k.clone()), s));
        let owners = self
            .owner_series
            .iter()
            .map(|(o, s)| (Subject::Owner(o.clone()), s));
        keys.chain(owners).flat_map(|(subject, s)| {
            [Granularity::Hour, Granularity::Day]
                .into_iter()
                .flat_map(move |g| {
                    let subject = subject.clone();
                    s.of(g)
                        .iter()
                        .map(move |(start, c)| ((g, subject.clone(), *start), c))
                })
        })
    }

    pub(crate) fn series_of(&self, subject: &Subject) -> Option<&Series> {
        match subject {
            Subject::Key(k) => self.key_series.get(k),
            Subject::Owner(o) => self.owner_series.get(o),
        }
    }

    pub(crate) fn series_mut(&mut self, subject: Subject) -> &mut Series {
        match subject {
            Subject::Key(k) => self.key_series.entry(k).or_default(),
            Subject::Owner(o) => self.owner_series.entry(o).or_default(),
        }
    }

    /// Drops a bucket, and its series once empty (as pruning does).
    pub(crate) fn remove_bucket(&mut self, g: Granularity, subject: &Subject, start: u64) {
        let (all, name) = match subject {
            Subject::Key(k) => (&mut self.key_series, k),
            Subject::Owner(o) => (&mut self.owner_series, o),
        };
        if let Some(series) = all.get_mut(name) {
            series.of_mut(g).remove(&start);
            if series.hour.is_empty() && series.day.is_empty() {
                all.remove(name);
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
        let (Some(key), Some(owner)) = (&entry.key_id, &entry.owner) else {
            return;
        };
        let secs = t / 1_000;
        let (hour, day) = (Granularity::Hour.floor(secs), Granularity::Day.floor(secs));
        let code = entry.outcome.as_str();
        let client = entry.client.as_deref().map(client_hash);
        let mut key_hour = Counted::default();
        for (all, name, marks, is_key) in [
            (&mut self.key_series, key, &mut ch.keys, true),
            (&mut self.owner_series, owner, &mut ch.owners, false),
        ] {
            // One lookup on the hot path; the key is copied only for a new series.
            let series = match all.get_mut(name.as_str()) {
                Some(series) => series,
                None => all.entry(name.clone()).or_default(),
            };
            let in_hour = series.hour.entry(hour).or_default();
            let new_client = in_hour.add(code, entry.credits, client);
            let counted = Counted {
                all: in_hour.total(),
                wrong: in_hour.codes.get(WRONG_SECRET),
            };
            // An address already counted in this hour is in this day's bucket too (the entry
            // that brought it put it in both), so only a new one is looked up there: the
            // lookups of addresses are most of what a verify costs here.
            series.day.entry(day).or_default().add(
                code,
                entry.credits,
                client.filter(|_| new_client),
            );
            let marks = Changes::marks(marks, name);
            marks.bucket(Granularity::Hour, hour);
            marks.bucket(Granularity::Day, day);
            if is_key {
                marks.track = true;
                key_hour = counted;
            }
        }
        self.detect(th, entry, key, owner, client, key_hour, ch);
    }

    /// Raises or extends the signals `entry` is evidence of; `this_hour` is what its key's
    /// bucket of this hour holds with it.
    #[allow(clippy::too_many_arguments)]
    fn detect(
        &mut self,
        th: &Thresholds,
        entry: &Observation,
        key: &str,
        owner: &str,
        client: Option<u64>,
        this_hour: Counted,
        ch: &mut Changes,
    ) {
        let t = entry.time_ms;
        let secs = t / 1_000;
        let track = match self.keys.get_mut(key) {
            Some(track) => track,
            None => self.keys.entry(key.to_owned()).or_insert(KeyTrack {
                owner: owner.to_owned(),
                first_ms: t,
                seen: FastMap::default(),
            }),
        };
        if entry.outcome == WRONG_SECRET {
            if this_hour.wrong >= th.wrong_secrets_per_hour.max(1) {
                self.raise(SignalKind::WrongSecret, key, owner, entry, ch, |_| {});
            }
            return;
        }
        let first_ms = track.first_ms;
        let new_client = match client {
            Some(c) if th.new_client_days > 0 => {
                track.remember(c, t, th.new_client_days.saturating_mul(DAY * 1_000))
            }
            _ => false,
        };
        if let Some(until) = entry.previous_until
            && until.saturating_sub(secs) <= th.previous_secret_warn_seconds
        {
            self.raise(
                SignalKind::PreviousSecretNearExpiry,
                key,
                owner,
                entry,
                ch,
                |s| s.previous_secret_expires_at = Some(until),
            );
        }
        if new_client {
            self.raise(SignalKind::NewClient, key, owner, entry, ch, |_| {});
        }
        if th.rate_factor > 0 {
            let count = this_hour.all;
            let window = th.rate_baseline_hours.max(1);
            let hour = Granularity::Hour.floor(secs);
            let since = hour.saturating_sub(window * HOUR);
            if count >= th.rate_min_per_hour && first_ms / 1_000 <= since {
                let before: u64 = self
                    .key_series
                    .get(key)
                    .map(|s| s.hour.range(since..hour).map(|(_, c)| c.total()).sum())
                    .unwrap_or(0);
                if count.saturating_mul(window) > th.rate_factor.saturating_mul(before) {
                    let baseline = before.div_ceil(window);
                    self.raise(SignalKind::RateSpike, key, owner, entry, ch, |s| {
                        s.baseline_per_hour = Some(baseline);
                        s.count = count;
                    });
                }
            }
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
        let slot = (kind, key.to_owned());
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
                let slot = (old.kind, old.key_id.unwrap_or_default());
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

    /// Drops buckets and remembered addresses past their retention, measured from the newest
    /// entry. Runs when an entry opens a new hour.
    fn prune(&mut self, th: &Thresholds, ch: &mut Changes) {
        let now = self.latest_ms / 1_000;
        for (all, marks) in [
            (&mut self.key_series, &mut ch.keys),
            (&mut self.owner_series, &mut ch.owners),
        ] {
            for (name, series) in all.iter_mut() {
                for (g, keep) in [
                    (Granularity::Hour, HOURLY_RETENTION),
                    (Granularity::Day, DAILY_RETENTION),
                ] {
                    let map = series.of_mut(g);
                    // Buckets are in start order: the old ones are a prefix.
                    while let Some((&start, _)) = map.first_key_value() {
                        if start.saturating_add(keep) >= now {
                            break;
                        }
                        map.remove(&start);
                        Changes::marks(marks, name).bucket(g, start);
                    }
                }
            }
            // An empty series is no series (as after a reload, which only sees buckets).
            all.retain(|_, s| !s.hour.is_empty() || !s.day.is_empty());
        }
        let window_ms = th.new_client_days.max(1).saturating_mul(DAY * 1_000);
        let latest = self.latest_ms;
        for (id, track) in self.keys.iter_mut() {
            let before = track.seen.len();
            track
                .seen
                .retain(|_, last| last.saturating_add(window_ms) > latest);
            if track.seen.len() != before {
                Changes::marks(&mut ch.keys, id).track = true;
            }
        }
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
            .flat_map(move |s| s.of(g).range(from..to))
            .map(|(start, counts)| (*start, counts))
    }
}
