//! The rate-limit tokens a cluster node tallies for the others, and the others' taken out of
//! its buckets: the key book's side of `rate_share` (which holds the list, the tally and its
//! bytes, and is a file of its own so that the book can hold a `RateShare` without an import
//! circle).

// Only a cluster node (the `etcd` feature) publishes and reads tallies; the accounting is built
// and unit-tested without it all the same.
#![cfg_attr(not(feature = "etcd"), allow(dead_code))]

use super::book::KeyBook;
use super::cache::{lock, try_lock};
use super::rate_share::{MAX_TALLIED, Tally};
use super::record::Bucket;
#[cfg(test)]
use crate::apikey::KeyId;

impl KeyBook {
    /// Shares this node's rate-limit tokens from now on (a cluster node).
    pub(crate) fn share_rates(&self) {
        self.rates.turn_on();
    }

    /// The tokens taken here since the previous tally, per key, busiest first, at most
    /// [`MAX_TALLIED`] keys; each key's count starts again from zero.
    pub(crate) fn tally_taken(&self) -> Tally {
        self.tally_within(MAX_TALLIED)
    }

    pub(super) fn tally_within(&self, cap: usize) -> Tally {
        let ids = self.rates.drain();
        let mut busy = Vec::new();
        let mut again = Vec::new();
        for id in ids {
            let Some(slot) = self.cache.peek(&id) else {
                continue;
            };
            // Never wait for a key whose lock a commit holds (tens of milliseconds on a
            // cluster): its count goes in the next tally.
            let Some(mut guard) = try_lock(&slot) else {
                again.push(id);
                continue;
            };
            let taken = guard
                .as_mut()
                .and_then(|c| c.bucket.as_deref_mut())
                .map_or(0, Bucket::take_unshared);
            if taken > 0 {
                busy.push((id, taken));
            }
        }
        self.rates.relist(again);
        busy.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.1));
        busy.truncate(cap);
        Tally(busy)
    }

    /// Takes the tokens another node's tally says it took out of this node's buckets. A key
    /// not cached here, or without a rate limit, is skipped without making a slot.
    pub(crate) fn lose_taken(&self, tally: &Tally) {
        let now_ms = self.clock.now_ms();
        for (id, taken) in &tally.0 {
            let Some(slot) = self.cache.peek(id) else {
                continue;
            };
            let mut guard = lock(&slot);
            if let Some(c) = guard.as_mut()
                && let (Some(limit), Some(bucket)) = (c.record.ratelimit, c.bucket.as_deref_mut())
            {
                bucket.lose(&limit, now_ms, *taken);
            }
        }
    }

    /// The tokens left in key `id`'s bucket here, if it is cached with a rate limit: for the
    /// cluster tests to wait for another node's tally instead of sleeping.
    #[cfg(test)]
    pub(crate) fn tokens_left(&self, id: &KeyId) -> Option<f64> {
        let slot = self.cache.peek(id)?;
        let guard = lock(&slot);
        guard.as_ref()?.bucket.as_ref().map(|b| b.tokens)
    }
}
