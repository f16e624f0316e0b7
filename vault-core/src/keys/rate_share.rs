//! Rate limits shared approximately between the nodes of a cluster (DESIGN section 10): what a
//! node counts of the tokens it takes, and how it takes the others' out of its own buckets.
//!
//! Each node keeps its own token bucket per key (`record::Bucket`). While sharing is on (on a
//! cluster node, `KeyBook::share_rates`), a `VALID` verify of a key with a rate limit also
//! counts its token as unshared in the bucket, and the first such token since the last tally
//! puts the key's id on a list: so the hot path of a key without a rate limit does nothing
//! more, and that of a key with one adds a counter and, once per key per tally, a push. About
//! once a second the node takes a [`Tally`] of every listed key's unshared tokens
//! (`KeyBook::tally_taken`, in `rate_exchange`) and publishes it (`vault/rate_share.rs`); each
//! other node takes those tokens out of its own bucket for the key (`KeyBook::lose_taken`),
//! down to a debt of
//! one `limit`. A key it does not cache, or that has no rate limit there, is skipped: it starts
//! full when it is next read, as after a restart.
//!
//! A tally holds at most [`MAX_TALLIED`] keys, the busiest first; past that, the quietest keys'
//! tokens of that second are not shared (the other nodes then let those keys through a little
//! more often, never less).
//!
//! # Tally bytes (the plaintext of the envelope a node publishes)
//! ```text
//! u8      format (1)
//! u32 BE  count of entries (at most MAX_TALLIED)
//! count × ( [u8; 12] key id | u32 BE tokens taken since the previous tally, at least 1 )
//! ```

// Only a cluster node (the `etcd` feature) publishes and reads tallies; the accounting is built
// and unit-tested without it all the same.
#![cfg_attr(not(feature = "etcd"), allow(dead_code))]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::record::Bucket;
use crate::apikey::KeyId;

/// Most keys in one tally: 16 bytes each, so a tally stays near 128 KiB, well within etcd's
/// 1.5 MiB request with the node's report beside it.
pub(crate) const MAX_TALLIED: usize = 8192;
/// The tally format this build writes and reads.
const FORMAT: u8 = 1;
/// Bytes of one entry: a key id and a u32.
const ENTRY: usize = 12 + 4;

/// Tokens taken per key on one node since its previous tally, busiest key first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally(pub(super) Vec<(KeyId, u32)>);

impl Tally {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, busiest key first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[(KeyId, u32)] {
        &self.0
    }

    /// The bytes above.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.0.len() * ENTRY);
        out.push(FORMAT);
        // At most MAX_TALLIED entries (`tally_within`), far below u32::MAX.
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (id, taken) in &self.0 {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&taken.to_be_bytes());
        }
        out
    }

    /// The tally in `bytes`, if they are one this build reads: the format known, the count
    /// within [`MAX_TALLIED`] and matching the length exactly.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Tally> {
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT {
            return None;
        }
        let count = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..)?;
        if count > MAX_TALLIED || body.len() != count * ENTRY {
            return None;
        }
        let entries = body
            .chunks_exact(ENTRY)
            .map(|entry| {
                let (id, taken) = entry.split_at(12);
                let id: [u8; 12] = id.try_into().ok()?;
                let taken = u32::from_be_bytes(taken.try_into().ok()?);
                Some((KeyId::from_bytes(id), taken))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Tally(entries))
    }
}

/// Whether rates are shared, and the keys with tokens taken since the last tally.
#[derive(Debug, Default)]
pub(crate) struct RateShare {
    on: AtomicBool,
    /// Each key at most once per tally: it is pushed at its first unshared token, and its
    /// count is cleared when the tally takes it. A key whose bucket was replaced meanwhile (a
    /// changed limit) may be here twice; the second finds nothing to take.
    listed: Mutex<Vec<KeyId>>,
}

impl RateShare {
    /// Counts the token a verify of key `id` just took from `bucket`, if rates are shared.
    pub(super) fn taken(&self, id: KeyId, bucket: &mut Bucket) {
        if self.on.load(Ordering::Relaxed) && bucket.count_unshared() {
            self.list().push(id);
        }
    }

    /// Shares from now on (a cluster node).
    pub(super) fn turn_on(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// The keys listed since the last call.
    pub(super) fn drain(&self) -> Vec<KeyId> {
        std::mem::take(&mut *self.list())
    }

    /// Lists `ids` again, for the next tally.
    pub(super) fn relist(&self, ids: Vec<KeyId>) {
        if !ids.is_empty() {
            self.list().extend(ids);
        }
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<KeyId>> {
        // A panic while holding it leaves a list of ids, each still valid.
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }
}
