//! The vault's verifies per minute, by code, over the last [`MINUTES`] minutes: the console
//! overview's chart of how busy the vault is now, which the per-key hour and day buckets are too
//! coarse (and too scattered over a million keys) to show.
//!
//! Every `key.verify` entry counts, whether or not it names a key (a malformed key or an
//! unknown id is exactly what an operator watching the rate wants to see). The usage thread
//! counts each entry as it folds it, under the lock it already holds for the fold, so the
//! verify path does nothing more: the audit writer hands the usage thread every committed entry
//! anyway.
//!
//! # Size
//! A ring of 360 minutes (6 hours): long enough to see a working shift's trend and the hour
//! before an incident, short enough that the whole ring is 360 slots of 11 counters (about
//! 32 KB) whatever the number of keys. Past six hours the hourly figures take over.
//!
//! # Kept in memory only
//! The ring is not stored with the figures: after a restart it holds the entries the usage
//! thread folds again (those after the stored figures) and those logged since. The minutes
//! before that are unknown, not empty; [`MinuteReport::known_from`] says where the known
//! minutes start, so that the chart never shows a restart as a quiet spell. Storing it would
//! cost a format change of the figures file for figures that are at most six hours old.

use std::collections::BTreeMap;

use serde::Serialize;

use super::aggregate::{Code, KNOWN_CODES, Observation};

/// Minutes the ring holds.
pub const MINUTES: u64 = 360;
/// The name under which verifies of a code the vault does not know are counted.
pub const OTHER_CODE: &str = "other";

/// One minute's verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    /// The minute (Unix s / 60) the counts are of.
    minute: u64,
    /// By code, in the order of [`KNOWN_CODES`].
    known: [u64; KNOWN_CODES.len()],
    /// Codes not in [`KNOWN_CODES`].
    other: u64,
}

/// The ring of the last [`MINUTES`] minutes.
#[derive(Debug, Clone)]
pub(crate) struct Minutes {
    /// Minute `m` is in slot `m % MINUTES` while it is one of the last [`MINUTES`].
    slots: Box<[Slot]>,
    /// The first minute (Unix s) whose every verify the ring saw.
    known_from: u64,
}

impl Default for Minutes {
    fn default() -> Minutes {
        Minutes::new(0)
    }
}

impl Minutes {
    /// An empty ring that sees every entry from time `after_ms` on (0: every entry).
    pub(crate) fn new(after_ms: u64) -> Minutes {
        let known_from = if after_ms == 0 {
            0
        } else {
            // The minute of `after_ms` may hold entries folded before: only the next is whole.
            (after_ms / 60_000 + 1) * 60
        };
        Minutes {
            slots: vec![Slot::default(); MINUTES as usize].into_boxed_slice(),
            known_from,
        }
    }

    /// Counts `entry` if it is a verify. The caller hands each entry once.
    pub(crate) fn note(&mut self, entry: &Observation) {
        if !entry.verify {
            return;
        }
        let minute = entry.time_ms / 60_000;
        let slot = &mut self.slots[(minute % MINUTES) as usize];
        if slot.minute != minute {
            if slot.minute > minute {
                // Older than the ring reaches (a clock stepped back by hours): not shown.
                return;
            }
            *slot = Slot {
                minute,
                ..Slot::default()
            };
        }
        match Code::of(&entry.outcome) {
            Code::Known(i) => slot.known[i] += 1,
            Code::Other(_) => slot.other += 1,
        }
    }

    /// The [`MINUTES`] minutes up to and including the one of `now_ms`, oldest first.
    pub(crate) fn report(&self, now_ms: u64, covers_seq: u64) -> MinuteReport {
        let to = (now_ms / 60_000 + 1) * 60;
        let from = to.saturating_sub(MINUTES * 60);
        let mut totals = BTreeMap::new();
        let minutes = (from / 60..to / 60)
            .map(|minute| {
                let slot = &self.slots[(minute % MINUTES) as usize];
                let mut counts = BTreeMap::new();
                if slot.minute == minute {
                    let known = KNOWN_CODES.iter().map(|c| c.as_str()).zip(slot.known);
                    for (code, n) in known.chain([(OTHER_CODE, slot.other)]) {
                        if n > 0 {
                            counts.insert(code.to_owned(), n);
                            *totals.entry(code.to_owned()).or_insert(0) += n;
                        }
                    }
                }
                MinuteCounts {
                    start: minute * 60,
                    total: counts.values().sum(),
                    counts,
                }
            })
            .collect();
        MinuteReport {
            from,
            to,
            known_from: self.known_from.max(from),
            total: totals.values().sum(),
            totals,
            minutes,
            covers_seq,
        }
    }
}

/// One minute of a [`MinuteReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteCounts {
    /// Start of the minute (Unix s).
    pub start: u64,
    /// Verifies by code (only codes that occurred; [`OTHER_CODE`] for codes the vault does not
    /// know).
    pub counts: BTreeMap<String, u64>,
    /// Verifies of every code.
    pub total: u64,
}

/// The vault's verifies per minute over the last [`MINUTES`] minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteReport {
    /// Start of the first minute (Unix s).
    pub from: u64,
    /// End of the last minute (Unix s, exclusive): the end of the current minute.
    pub to: u64,
    /// The first minute whose verifies are all counted (Unix s, at least `from`): the minutes
    /// before it are unknown (before the server last started, the ring kept only what it folded
    /// again), not empty.
    pub known_from: u64,
    /// Every minute of the range, oldest first, empty ones included.
    pub minutes: Vec<MinuteCounts>,
    /// The whole range by code.
    pub totals: BTreeMap<String, u64>,
    /// Verifies in the whole range.
    pub total: u64,
    /// Sequence number up to which the audit log is counted (exclusive).
    pub covers_seq: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn verify(seq: u64, time_ms: u64, code: &str) -> Observation {
        Observation::from_parts("key.verify", code, None, None, None, &Default::default())
            .at(seq, time_ms)
    }

    const T0: u64 = 1_764_000_000_000;

    #[test]
    fn counts_verifies_by_code_per_minute_and_nothing_else() {
        let mut m = Minutes::default();
        m.note(&verify(0, T0, "VALID"));
        m.note(&verify(1, T0 + 1, "VALID"));
        m.note(&verify(2, T0 + 2, "NOT_FOUND"));
        m.note(&verify(3, T0 + 60_000, "MALFORMED"));
        m.note(&verify(4, T0 + 60_001, "SOMETHING_NEW"));
        let not_verify =
            Observation::from_parts("key.create", "ok", None, None, None, &Default::default())
                .at(5, T0);
        m.note(&not_verify);
        let r = m.report(T0 + 60_002, 6);
        assert_eq!(r.minutes.len(), MINUTES as usize);
        assert_eq!(r.to, (T0 / 60_000 + 2) * 60);
        assert_eq!(r.from, r.to - MINUTES * 60);
        assert_eq!(r.known_from, r.from, "a ring that saw everything");
        let last = &r.minutes[MINUTES as usize - 1];
        let before = &r.minutes[MINUTES as usize - 2];
        assert_eq!(before.start, T0 / 60_000 * 60);
        assert_eq!(before.counts.get("VALID"), Some(&2));
        assert_eq!(before.counts.get("NOT_FOUND"), Some(&1));
        assert_eq!(before.total, 3);
        assert_eq!(last.counts.get("MALFORMED"), Some(&1));
        assert_eq!(last.counts.get(OTHER_CODE), Some(&1));
        assert_eq!(r.total, 5);
        assert_eq!(r.totals.get("VALID"), Some(&2));
        assert!(
            r.minutes[..MINUTES as usize - 2]
                .iter()
                .all(|m| m.total == 0)
        );
        assert_eq!(r.covers_seq, 6);
    }

    #[test]
    fn a_minute_past_the_window_is_not_shown_and_its_slot_is_reused() {
        let mut m = Minutes::default();
        m.note(&verify(0, T0, "VALID"));
        // Exactly the ring's length later: the same slot, a new minute.
        let later = T0 + MINUTES * 60_000;
        let r = m.report(later, 1);
        assert_eq!(r.total, 0, "the old minute is out of the window");
        m.note(&verify(1, later, "REVOKED"));
        let r = m.report(later, 2);
        assert_eq!(r.total, 1);
        assert_eq!(r.totals.get("REVOKED"), Some(&1));
        // An entry older than what its slot holds now is dropped, not mixed in.
        m.note(&verify(2, T0, "VALID"));
        assert_eq!(m.report(later, 3).total, 1);
    }

    #[test]
    fn after_a_restart_the_minutes_before_the_stored_figures_are_unknown() {
        let m = Minutes::new(T0 + 30_000);
        let r = m.report(T0 + 120_000, 0);
        assert_eq!(r.known_from, (T0 / 60_000 + 1) * 60);
        // Long after, the whole window is known.
        let r = m.report(T0 + 24 * 3_600_000, 0);
        assert_eq!(r.known_from, r.from);
    }
}
