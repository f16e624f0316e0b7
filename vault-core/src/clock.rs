//! Wall-clock time, injectable.
//!
//! Every expiry, grace period, rate-limit window and usage bucket in the vault reads the time
//! through a [`Clock`]. A vault runs on [`Clock::system`]; a test opens one with
//! [`Clock::manual`] (through `VaultOptions::clock`) and moves time with [`Clock::advance`]
//! instead of sleeping.
//!
//! Monotonic durations that never reach a record or an entry (timeouts, throttles of
//! background threads) keep using `std::time::Instant`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of Unix time. Clones share one time: advancing a manual clock moves every clone.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands at `start_ms` (Unix milliseconds) until it is advanced.
    pub fn manual(start_ms: u64) -> Clock {
        Clock(Some(Arc::new(AtomicU64::new(start_ms))))
    }

    /// A manual clock that starts at the system's time now.
    pub fn manual_now() -> Clock {
        Clock::manual(system_ms())
    }

    /// Moves a manual clock forward by `by`.
    ///
    /// # Panics
    /// On the system clock, which no one can move: a test that believes it moves time but
    /// does not would pass for the wrong reason.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        match &self.0 {
            Some(now) => {
                now.fetch_add(ms, Ordering::SeqCst);
            }
            None => panic!("the system clock cannot be advanced"),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(now) => now.load(Ordering::SeqCst),
            None => system_ms(),
        }
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// Two clocks are equal when they are one time source: both the system's, or clones of one
/// manual clock.
impl PartialEq for Clock {
    fn eq(&self, other: &Clock) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

/// Unix seconds now on the system clock, for what happens without an open vault's [`Clock`]
/// (the keyring made at init, a backup file's header, `UsageQuery::last`).
pub(crate) fn now() -> u64 {
    system_ms() / 1000
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_follow() {
        let clock = Clock::manual(1_000);
        let clone = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(2_500));
        assert_eq!(clone.now_ms(), 3_500);
        assert_eq!(clone.now(), 3);
    }

    #[test]
    fn the_system_clock_is_near_the_system_time() {
        let before = system_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000);
    }

    #[test]
    #[should_panic(expected = "cannot be advanced")]
    fn advancing_the_system_clock_is_a_bug() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
