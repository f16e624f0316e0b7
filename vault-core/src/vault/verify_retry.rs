//! A verify on a cluster node goes again when its group commit was refused as a conflict,
//! so that a race between nodes never reaches the caller.
//!
//! A conflict means another node committed a change to a shared row a job of the group had
//! read (a credit spend or refill of the same key, most often), before this node's
//! transaction: nothing of the group was applied and its audit entries were cut from the
//! segment, and every job of it (and of the groups failed with it) is answered with the
//! conflict. The verify that spent forgot its key's cache slot (`keys/verify.rs`), so the next
//! try reads the key again from etcd (a linearizable read, which sees the other node's spend)
//! and ends in `VALID` or `USAGE_EXCEEDED` per the count etcd holds; the key's rate-limit
//! bucket outlives the emptied slot (`keys/book.rs`), so a retry never finds a fresh, full
//! bucket, and the token the lost try took stays taken (strict); a verify that spends
//! nothing lost no race of its own and simply goes again. One host never conflicts, and this
//! runs only on a cluster node.

use std::time::{Duration, Instant};

use super::Vault;
use crate::{Error, Result, crypto};

/// The longest a verify goes on trying. A conflict is refused only because another node's
/// change of the row committed first, so every lost try is another node's progress; but a
/// node whose spend lost must read the key again before it tries, while the winner's next
/// spend starts from a current cache, so under steady contention the loser keeps losing more
/// often than its share. Measured in the 3-node check (nine threads spending one key's
/// credits over HTTP on a loaded debug build): with 8 tries, 14 of about 320 spends still ran
/// out of tries; with 2 s, 2 and 3 of about 310 did in two runs on a slower day. A try is
/// about one group commit (an `fdatasync` and an etcd transaction, 10 to 30 ms there), so
/// 4 s is some 130 or more tries. That stays inside etcd's 6 s deadline; the loser's
/// disadvantage itself (it re-reads while the others spend from their caches) is what is
/// left to fix.
const RETRY_FOR: Duration = Duration::from_secs(4);

/// At most this many tries in all, however fast they fail.
pub(crate) const VERIFY_TRIES: u32 = 128;

/// The backoff after the first lost try; it doubles per try up to [`MAX_BACKOFF`]. Short: a
/// verify that sleeps long only lets the node that won go on winning; the jitter keeps the
/// nodes that lost together from trying again together.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);

/// The most a backoff grows to.
const MAX_BACKOFF: Duration = Duration::from_millis(8);

/// When a verify that lost a race goes again.
pub(crate) struct Retry {
    started: Instant,
    tries: u32,
}

impl Retry {
    pub(crate) fn new() -> Retry {
        Retry {
            started: Instant::now(),
            tries: 1,
        }
    }

    /// Whether the verify that ended in `error` goes again: a conflict, within
    /// [`VERIFY_TRIES`] tries and [`RETRY_FOR`].
    pub(crate) fn again(&mut self, error: &Error) -> bool {
        if !error.is_conflict() || self.tries >= VERIFY_TRIES || self.started.elapsed() >= RETRY_FOR
        {
            return false;
        }
        self.tries += 1;
        true
    }
}

impl Vault {
    /// Whether this handle is a cluster node (whose verifies may lose a race to another's).
    pub(crate) fn is_cluster_node(&self) -> bool {
        self.inner.node.get().is_some()
    }

    /// Runs `verify` until it ends other than in a conflict, or [`Retry`] gives up, sleeping
    /// a short jittered backoff between tries.
    pub(crate) fn verify_redone<T>(&self, mut verify: impl FnMut() -> Result<T>) -> Result<T> {
        let mut retry = Retry::new();
        loop {
            match verify() {
                Err(e) if retry.again(&e) => {
                    tracing::debug!(
                        tries = retry.tries,
                        "a verify lost a race to another node; going again"
                    );
                    std::thread::sleep(backoff(retry.tries - 1));
                }
                other => return other,
            }
        }
    }
}

/// The sleep after try `tries` failed: uniform between none and an exponential step, so that
/// nodes that lost together do not try again together.
fn backoff(tries: u32) -> Duration {
    let step = FIRST_BACKOFF
        .saturating_mul(1 << (tries - 1).min(8))
        .min(MAX_BACKOFF);
    let mut byte = [0u8; 1];
    // Only spreads retries; any byte does, the OS generator is simply at hand.
    crypto::fill_random(&mut byte);
    step * u32::from(byte[0]) / 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_stay_short_and_only_conflicts_go_again() {
        for tries in 1..VERIFY_TRIES {
            assert!(backoff(tries) <= MAX_BACKOFF);
        }
        let mut retry = Retry::new();
        let conflict = Error::Storage(crate::storage::StorageError::other(
            crate::storage::Conflict,
        ));
        assert!(!retry.again(&Error::ClusterUnavailable));
        for _ in 1..VERIFY_TRIES {
            assert!(retry.again(&conflict));
        }
        assert!(!retry.again(&conflict), "at most VERIFY_TRIES tries");
        let mut late = Retry {
            started: Instant::now() - RETRY_FOR,
            tries: 1,
        };
        assert!(!late.again(&conflict), "at most RETRY_FOR");
    }
}
