//! The usage queries: a key's or an owner's figures over a range of buckets, and the signals
//! (those folded from the log and those the server raises itself).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::aggregate::{Aggregate, Counts, Granularity, Signal, SignalKind, Subject, Thresholds};
use super::minutes::MinuteReport;
use super::thread::{SignalHook, Usage};
use crate::apikey::KeyId;
use crate::{Error, Result};

/// Longest a usage or signal read waits for the fold to reach the log as it was when the read
/// began, so that it counts every verify answered before it (a read past it answers with what
/// is folded; its `covers_seq` says how far that is).
const READ_WAIT: Duration = Duration::from_secs(2);
/// Most buckets one query returns.
pub const MAX_BUCKETS: u64 = 1_000;
/// Most signals one query returns (the newest).
pub const MAX_SIGNALS_RETURNED: usize = 1_000;

/// One bucket of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageBucket {
    /// Start of the bucket (Unix s).
    pub start: u64,
    /// Verifies by code (only codes that occurred).
    pub counts: BTreeMap<String, u64>,
    /// Verifies of every code.
    pub total: u64,
    /// Credits spent.
    pub credits_spent: u64,
    /// Distinct client addresses.
    pub distinct_clients: u64,
    /// More addresses were seen than are kept: `distinct_clients` is a lower bound.
    pub clients_truncated: bool,
}

/// Usage of one key or one owner over a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// The key, for a key's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The owner.
    pub owner: String,
    /// Bucket size.
    pub bucket: Granularity,
    /// Start of the first bucket (Unix s).
    pub from: u64,
    /// End of the last bucket (Unix s, exclusive).
    pub to: u64,
    /// Every bucket of the range, in order, empty ones included.
    pub buckets: Vec<UsageBucket>,
    /// The whole range (its `start` is `from`; `distinct_clients` counts each address once).
    pub totals: UsageBucket,
    /// Sequence number up to which the audit log is counted (exclusive).
    pub covers_seq: u64,
}

/// What a usage query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    /// Bucket size.
    pub bucket: Granularity,
    /// From (Unix s; rounded down to a bucket start).
    pub from: u64,
    /// To (Unix s, exclusive; rounded up to a bucket end).
    pub to: u64,
}

impl UsageQuery {
    /// The last `buckets` buckets up to now.
    pub fn last(bucket: Granularity, buckets: u64) -> UsageQuery {
        let to = bucket.floor(crate::clock::now()) + bucket.seconds();
        UsageQuery {
            bucket,
            from: to.saturating_sub(buckets.saturating_mul(bucket.seconds())),
            to,
        }
    }

    /// The range rounded out to whole buckets, `[from, to)`; refused when empty or longer than
    /// [`MAX_BUCKETS`] buckets.
    pub fn range(&self) -> Result<(u64, u64)> {
        let size = self.bucket.seconds();
        let from = self.bucket.floor(self.from);
        let to = self.to.div_ceil(size).saturating_mul(size);
        if to <= from {
            return Err(Error::InvalidInput(
                "usage: `to` must be after `from`".into(),
            ));
        }
        if (to - from) / size > MAX_BUCKETS {
            return Err(Error::InvalidInput(format!(
                "usage: at most {MAX_BUCKETS} buckets at a time (a shorter range or a bigger bucket)"
            )));
        }
        Ok((from, to))
    }
}

fn report(agg: &Aggregate, subject: &Subject, q: &UsageQuery) -> Result<Vec<UsageBucket>> {
    let (from, to) = q.range()?;
    let size = q.bucket.seconds();
    let mut found = agg.series(q.bucket, subject, from, to).peekable();
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let counts = match found.peek() {
            Some((s, _)) if *s == start => found.next().map(|(_, c)| c),
            _ => None,
        };
        out.push(bucket_of(start, counts));
        match start.checked_add(size) {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(out)
}

fn bucket_of(start: u64, counts: Option<&Counts>) -> UsageBucket {
    match counts {
        None => UsageBucket {
            start,
            counts: Default::default(),
            total: 0,
            credits_spent: 0,
            distinct_clients: 0,
            clients_truncated: false,
        },
        Some(c) => UsageBucket {
            start,
            counts: c.codes.to_map(),
            total: c.total(),
            credits_spent: c.credits_spent,
            distinct_clients: c.clients.len() as u64,
            clients_truncated: c.clients_truncated,
        },
    }
}

/// The sum of `buckets` of `subject`, counting each client address once.
fn totals(agg: &Aggregate, subject: &Subject, q: &UsageQuery) -> Result<UsageBucket> {
    let (from, to) = q.range()?;
    let mut sum = Counts::default();
    let mut clients = HashSet::<u64, foldhash::quality::RandomState>::default();
    for (_, c) in agg.series(q.bucket, subject, from, to) {
        sum.codes.add_all(&c.codes);
        sum.credits_spent = sum.credits_spent.saturating_add(c.credits_spent);
        sum.clients_truncated |= c.clients_truncated;
        clients.extend(c.clients.iter());
    }
    let mut total = bucket_of(from, Some(&sum));
    total.distinct_clients = clients.len() as u64;
    Ok(total)
}

impl Usage {
    /// Usage of key `id` (whose owner is `owner`) over `q`'s range.
    pub(crate) fn key_report(
        &self,
        id: &KeyId,
        owner: String,
        q: &UsageQuery,
    ) -> Result<UsageReport> {
        let mut report = self.report(&Subject::Key(id.to_string()), q)?;
        report.key_id = Some(id.to_string());
        report.owner = owner;
        Ok(report)
    }

    /// Usage of every key of `owner` over `q`'s range: the owner's own series, which only that
    /// owner's keys feed.
    pub(crate) fn owner_report(&self, owner: &str, q: &UsageQuery) -> Result<UsageReport> {
        let mut report = self.report(&Subject::Owner(owner.to_owned()), q)?;
        report.owner = owner.to_owned();
        Ok(report)
    }

    /// The report of `subject`, once the fold has reached the log as it is now (or
    /// [`READ_WAIT`] has passed).
    fn report(&self, subject: &Subject, q: &UsageQuery) -> Result<UsageReport> {
        let (from, to) = q.range()?;
        let shared = &self.shared;
        let live = shared.live_from(shared.log_size(), READ_WAIT);
        Ok(UsageReport {
            key_id: None,
            owner: String::new(),
            bucket: q.bucket,
            from,
            to,
            buckets: report(&live.agg, subject, q)?,
            totals: totals(&live.agg, subject, q)?,
            covers_seq: live.agg.next_seq,
        })
    }

    /// The vault's verifies per minute over the last [`MINUTES`](super::MINUTES) minutes up
    /// to `now_ms`, once the fold has reached the log as it is now (or [`READ_WAIT`] has
    /// passed).
    pub(crate) fn minutes(&self, now_ms: u64) -> MinuteReport {
        let shared = &self.shared;
        let live = shared.live_from(shared.log_size(), READ_WAIT);
        live.minutes.report(now_ms, live.agg.next_seq)
    }

    /// Signals about key `id`, oldest first (at most the newest [`MAX_SIGNALS_RETURNED`]).
    pub(crate) fn key_signals(&self, id: &KeyId) -> Vec<Signal> {
        let key = id.to_string();
        self.select_signals(|s| s.key_id.as_deref() == Some(key.as_str()), false)
    }

    /// Signals last seen at or after `since_ms`, of `owner`'s keys if given (then never another
    /// owner's, nor those that concern no key), oldest first (at most the newest
    /// [`MAX_SIGNALS_RETURNED`]).
    pub(crate) fn signals(&self, owner: Option<&str>, since_ms: u64) -> Vec<Signal> {
        self.select_signals(
            |s| s.last_at_ms >= since_ms && owner.is_none_or(|o| s.owner.as_deref() == Some(o)),
            owner.is_none(),
        )
    }

    fn select_signals(
        &self,
        keep: impl Fn(&Signal) -> bool,
        with_unattributed: bool,
    ) -> Vec<Signal> {
        let shared = &self.shared;
        let mut out: Vec<Signal> = {
            let live = shared.live_from(shared.log_size(), READ_WAIT);
            live.agg
                .signals
                .iter()
                .filter(|s| keep(s))
                .cloned()
                .collect()
        };
        if with_unattributed {
            let u = shared
                .unattributed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            out.extend(u.signals.iter().filter(|s| keep(s)).cloned());
            out.sort_by_key(|s| s.last_at_ms);
        }
        let skip = out.len().saturating_sub(MAX_SIGNALS_RETURNED);
        out.split_off(skip)
    }

    /// Counts a failed verify that had no end-user address, from `peer`, at `now_ms`; past
    /// [`Thresholds::unattributed_failures_per_minute`] in a minute, raises or extends an
    /// `unattributed_failures` signal. A short lock, no I/O.
    pub(crate) fn note_unattributed_failure(&self, peer: Option<&str>, now_ms: u64) {
        let shared = &self.shared;
        let threshold = shared.thresholds().unattributed_failures_per_minute;
        if threshold == 0 {
            return;
        }
        let raised = {
            let mut u = shared
                .unattributed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let minute = now_ms / 60_000;
            if u.minute != minute {
                u.minute = minute;
                u.count = 0;
            }
            u.count += 1;
            if u.count < threshold {
                return;
            }
            let count = u.count;
            u.note(SignalKind::UnattributedFailures, now_ms, count, peer)
        };
        if let Some(s) = raised {
            shared.announce(&[s]);
        }
    }

    /// Records a reading of the disk watch over its high-water mark, at `now_ms`, as a
    /// `disk_alarm` signal; readings within an hour of the last extend it. In memory only.
    pub(crate) fn note_disk_alarm(&self, now_ms: u64) {
        let shared = &self.shared;
        let raised = shared
            .unattributed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(SignalKind::DiskAlarm, now_ms, 1, None);
        if let Some(s) = raised {
            shared.announce(&[s]);
        }
    }

    /// Sets the function called (on the usage thread) for every signal raised; replaces any
    /// earlier one.
    pub(crate) fn on_signal(&self, hook: SignalHook) {
        *self.shared.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Sets when signals fire, for entries folded from now on.
    pub(crate) fn set_thresholds(&self, thresholds: Thresholds) {
        *self
            .shared
            .thresholds
            .write()
            .unwrap_or_else(|e| e.into_inner()) = thresholds;
    }
}
