//! The suspicious-activity signals: their kinds, their evidence, when they fire, and what the
//! fold remembers of each key to raise them.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::buckets::{DAY, Granularity, HOUR, Series};
use super::small::Seen;

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

/// What the aggregate remembers of a key for its signals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyTrack {
    pub(crate) owner: CompactString,
    /// Time of the key's first counted verify (ms).
    pub(crate) first_ms: u64,
    /// Client addresses (as [`client_hash`]es) that presented the right secret, with when each
    /// was last seen (ms).
    pub(crate) seen: Seen,
}

/// Whether an old secret used at `secs`, ending at `until`, is near the end of its grace: at
/// most `previous_secret_warn_seconds` left, and, for a grace no longer than that window (known
/// when the entry says since when, `since`), past its first half. A client that has not yet
/// switched right after a rotation with a short grace is normal; one still using the old secret
/// halfway through is what the signal is for.
pub(crate) fn near_expiry(th: &Thresholds, secs: u64, until: u64, since: Option<u64>) -> bool {
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
/// used at `first_ms`, given its buckets and the memo of their hours' sum: `(baseline per
/// hour, count)` if so.
pub(crate) fn rate_spike(
    th: &Thresholds,
    series: &Series,
    memo: &mut Option<Box<Baseline>>,
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
    let before = match memo {
        Some(b) if b.hour == hour && b.window == window => b.before,
        _ => {
            let before = series
                .range(Granularity::Hour, since, hour)
                .map(|(_, c)| c.total())
                .sum();
            // Boxed: only busy keys have one, and every key has room for the pointer.
            *memo = Some(Box::new(Baseline {
                hour,
                window,
                before,
            }));
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
    pub(crate) hour: u64,
    window: u64,
    before: u64,
}

/// What retention is measured from, given the newest entry's time (ms): the start of its hour
/// (Unix s).
pub(crate) fn retention_start(latest_ms: u64) -> u64 {
    Granularity::Hour.floor(latest_ms / 1_000)
}

/// How long a key remembers an address for `new_client` (ms).
pub(crate) fn seen_window_ms(th: &Thresholds) -> u64 {
    th.new_client_days.max(1).saturating_mul(DAY * 1_000)
}

/// Forgets the addresses of `seen` last seen `window_ms` or more before `now` (Unix s).
pub(crate) fn forget_expired(seen: &mut Seen, now: u64, window_ms: u64) {
    seen.retain(|last| last.saturating_add(window_ms) > now * 1_000);
}

impl KeyTrack {
    /// Remembers that `client` presented the right secret at `t` (unless [`SEEN_PER_KEY`]
    /// others are remembered).
    pub(crate) fn remember(&mut self, client: u64, t: u64, window_ms: u64) -> Remembered {
        let recent = |last: u64| last.saturating_add(window_ms) > t;
        // One lookup for a known address; the others are looked at only for an address not
        // seen lately, not once per verify.
        if let Some(last) = self.seen.get_mut(client)
            && recent(*last)
        {
            let this_hour = *last / (HOUR * 1_000) == t / (HOUR * 1_000);
            *last = t;
            return Remembered {
                news: false,
                this_hour,
            };
        }
        let news = self.seen.iter().any(|(_, last)| recent(last));
        let room = self.seen.len() < SEEN_PER_KEY || self.seen.get(client).is_some();
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
pub(crate) struct Remembered {
    /// News: an address not seen in the window for a key with other recent addresses (a key's
    /// first address is never news).
    pub(crate) news: bool,
    /// The address already presented the right secret in the same hour, so the key's bucket of
    /// that hour counts it (or, past retention, is gone and stays gone: an hour's bucket is
    /// dropped only once the hour is past retention, and then at once if an entry recreates it).
    pub(crate) this_hour: bool,
}

/// The kinds of suspicious activity.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
        self.into()
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
