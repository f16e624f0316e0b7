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

//!
//! # Layout
//! - `buckets`: the figures ([`Counts`] per bucket of a [`Subject`]).
//! - `signals`: the [`Signal`]s, their [`Thresholds`], and what is remembered per key.
//! - `small`: the address sets, laid out for one address.
//! - this module: the fold itself ([`Aggregate`]).

mod buckets;
mod signals;
mod small;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use compact_str::CompactString;

use crate::audit::Entry;
pub use crate::audit::Observation;
#[cfg(test)]
use buckets::Buckets;
pub use buckets::{
    CLIENTS_PER_BUCKET, ClientSet, Codes, Counts, DAILY_RETENTION, DAY, Granularity, HOUR,
    HOURLY_RETENTION, Subject, client_hash,
};
pub(crate) use buckets::{Code, KNOWN_CODES, Series};
pub(crate) use signals::{
    Baseline, KeyTrack, Remembered, forget_expired, near_expiry, rate_spike, retention_start,
    seen_window_ms,
};
pub use signals::{
    EVIDENCE_CLIENTS, MAX_SIGNALS, MERGE_WINDOW_MS, SEEN_PER_KEY, Signal, SignalKind, Thresholds,
};
pub(crate) use small::FastMap;

/// The observation of a stored entry read back (a replay or a rebuild from the log): what the
/// writer handed the usage thread when it committed the entry (see
/// [`Observation`](crate::audit::Observation)).
pub(crate) fn observe(e: Entry) -> Observation {
    Observation::from_parts(
        &e.event,
        &e.outcome,
        e.key_id.map(CompactString::from),
        e.owner.map(CompactString::from),
        e.client.map(CompactString::from),
        &e.details,
    )
    .at(e.seq, e.time_ms)
}

/// The outcome of a verify with a wrong secret for an existing key id.
const WRONG_SECRET: &str = "NOT_FOUND";

/// What [`Aggregate::apply`] changed since the figures were last stored, for persistence
/// (with the `changed` flag of each key's and owner's series, `Series::changed`) and for signal
/// hooks.
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
        if !figures.series.changed {
            figures.series.changed = true;
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
    /// Keys only: the memo of `rate_spike`'s baseline. Bookkeeping too.
    pub(crate) baseline: Option<Box<Baseline>>,
}

impl PartialEq for Figures {
    fn eq(&self, other: &Figures) -> bool {
        self.series == other.series && self.track == other.track
    }
}

impl Eq for Figures {}

impl Figures {
    /// Whether nothing is left: no bucket, and no address remembered. A key unused for the
    /// whole retention is forgotten, as if never used (if used again, its first counted verify
    /// is its first).
    fn is_empty(&self) -> bool {
        self.series.is_empty() && self.track.as_ref().is_none_or(|t| t.seen.is_empty())
    }
}

/// Usage figures and signals of every key, folded from the audit log up to `next_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// The next entry to fold (every entry before it is counted).
    pub(crate) next_seq: u64,
    /// The newest entry time folded (ms); retention is measured from it.
    pub(crate) latest_ms: u64,
    /// By key id (hex). Boxed: a slot of a hash table at a million keys is about two slots'
    /// room, so a slot holds a pointer, not the figures.
    pub(crate) keys: FastMap<CompactString, Box<Figures>>,
    /// By owner.
    pub(crate) owners: FastMap<CompactString, Box<Figures>>,
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
        self.apply(th, &observe(entry.clone()), &mut Changes::default());
    }

    /// Folds `observation` in, as the usage thread does with what the audit writer hands it
    /// (for measuring the fold on its own). Observations before [`Aggregate::covers`] are
    /// ignored.
    pub fn observe(&mut self, th: &Thresholds, observation: &Observation) {
        let mut changes = Changes::default();
        self.apply(th, observation, &mut changes);
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
        self.series_of(subject)?.get(g, start)
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
                    s.iter(g)
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
            figures.series.remove(g, start);
            if figures.is_empty() {
                all.remove(name.as_str());
            }
        }
    }

    /// Folds `entry` in. Entries before `next_seq` (already counted) are ignored.
    pub(crate) fn apply(&mut self, th: &Thresholds, entry: &Observation, ch: &mut Changes) {
        // A key that an entry of an earlier hour left with nothing (all of it past retention)
        // is dropped, as pruning does and loading does.
        if self.count(th, entry, ch)
            && let Some(key) = &entry.key_id
            && self.keys.get(key.as_str()).is_some_and(|f| f.is_empty())
        {
            self.keys.remove(key.as_str());
        }
    }

    /// Folds `entry` in; answers whether it was a verify of an hour before the newest, whose
    /// key may be left with nothing.
    fn count(&mut self, th: &Thresholds, entry: &Observation, ch: &mut Changes) -> bool {
        if entry.seq < self.next_seq {
            return false;
        }
        self.next_seq = entry.seq + 1;
        let t = entry.time_ms;
        if t / (HOUR * 1_000) > self.latest_ms / (HOUR * 1_000) {
            self.latest_ms = t;
            self.prune(th, ch);
        }
        self.latest_ms = self.latest_ms.max(t);
        if !entry.verify {
            return false;
        }
        let (Some(key), Some(named)) = (&entry.key_id, &entry.owner) else {
            return false;
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
        } = &mut **figures;
        // An entry of an hour before the memo's changed a bucket the memo may have summed.
        if baseline.as_ref().is_some_and(|b| hour < b.hour) {
            *baseline = None;
        }
        // The key's figures go to the owner it had at its first counted verify. A key's owner
        // never changes, so that is the owner every entry of it names; and so every address in
        // a key's bucket is in its owner's bucket too.
        let track = track.get_or_insert_with(|| KeyTrack {
            owner: named.clone(),
            first_ms: t,
            seen: Default::default(),
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
            rate_spike(th, series, baseline, hour, this_hour.total, first_ms)
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
            return late;
        }
        let owner = owner.clone();
        if wrong {
            if wrong_secret {
                self.raise(SignalKind::WrongSecret, key, &owner, entry, ch, |_| {});
            }
            return late;
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
        late
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
            .flat_map(move |s| s.range(g, from, to))
    }
}
