//! The vault's usage calls: each checks what the vault must (unsealed, the key exists) and asks
//! the usage component (`crate::usage`), which knows nothing of the vault.

use std::time::Duration;

use super::Vault;
use crate::apikey::KeyId;
use crate::usage::{
    Aggregate, MinuteReport, Signal, SignalHook, Thresholds, Usage, UsageQuery, UsageReport,
};
use crate::{Error, Result};

impl Vault {
    /// Whether this vault keeps usage summaries and signals ([`VaultOptions::usage`]); when
    /// not, every usage call answers [`Error::InvalidInput`].
    ///
    /// [`VaultOptions::usage`]: crate::VaultOptions::usage
    pub fn usage_enabled(&self) -> bool {
        self.inner.usage.is_some()
    }

    fn usage(&self) -> Result<&Usage> {
        self.inner
            .usage
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("usage summaries are off in this vault".into()))
    }

    /// Usage of key `id` (which must exist) over `q`'s range.
    pub fn key_usage(&self, id: &KeyId, q: &UsageQuery) -> Result<UsageReport> {
        let info = self.show_key(id)?;
        self.usage()?.key_report(id, info.owner, q)
    }

    /// Usage of every key of `owner` over `q`'s range: the owner's own series, which only that
    /// owner's keys feed.
    pub fn owner_usage(&self, owner: &str, q: &UsageQuery) -> Result<UsageReport> {
        self.keys()?;
        self.usage()?.owner_report(owner, q)
    }

    /// The vault's verifies per minute, by code, over the last
    /// [`MINUTES`](crate::usage::MINUTES) minutes up to now (in memory only: after a restart,
    /// [`MinuteReport::known_from`] says from which minute on they are known).
    pub fn verifies_per_minute(&self) -> Result<MinuteReport> {
        self.keys()?;
        Ok(self.usage()?.minutes(self.inner.clock.now_ms()))
    }

    /// Signals about key `id` (which must exist), oldest first (at most the newest
    /// [`MAX_SIGNALS_RETURNED`](crate::usage::MAX_SIGNALS_RETURNED)).
    pub fn key_signals(&self, id: &KeyId) -> Result<Vec<Signal>> {
        self.show_key(id)?;
        Ok(self.usage()?.key_signals(id))
    }

    /// Signals last seen at or after `since_ms`, of `owner`'s keys if given (then never another
    /// owner's, nor those that concern no key), oldest first (at most the newest
    /// [`MAX_SIGNALS_RETURNED`](crate::usage::MAX_SIGNALS_RETURNED)).
    pub fn signals(&self, owner: Option<&str>, since_ms: u64) -> Result<Vec<Signal>> {
        self.keys()?;
        Ok(self.usage()?.signals(owner, since_ms))
    }

    /// Counts a failed verify that had no end-user address (so the throttle refused nothing),
    /// from `peer` (the caller's own address); past [`Thresholds::unattributed_failures_per_minute`]
    /// in a minute, raises or extends an `unattributed_failures` signal. A short lock, no I/O.
    pub fn note_unattributed_failure(&self, peer: Option<&str>) {
        if let Ok(usage) = self.usage() {
            usage.note_unattributed_failure(peer, self.inner.clock.now_ms());
        }
    }

    /// Records a reading of the disk watch over its high-water mark as a `disk_alarm` signal
    /// (with no key: shown without an owner filter, like `unattributed_failures`); readings
    /// within an hour of the last extend it. In memory only.
    pub fn note_disk_alarm(&self) {
        if let Ok(usage) = self.usage() {
            usage.note_disk_alarm(self.inner.clock.now_ms());
        }
    }

    /// Sets the function called (on the usage thread) for every signal raised; replaces any
    /// earlier one.
    pub fn on_usage_signal(&self, hook: SignalHook) {
        if let Ok(usage) = self.usage() {
            usage.on_signal(hook);
        }
    }

    /// Sets when signals fire, for entries folded from now on.
    pub fn set_usage_thresholds(&self, thresholds: Thresholds) {
        if let Ok(usage) = self.usage() {
            usage.set_thresholds(thresholds);
        }
    }

    /// Waits (at most `timeout`) until every entry logged before the call is counted; whether
    /// it was.
    pub fn usage_sync(&self, timeout: Duration) -> Result<bool> {
        Ok(self.usage()?.sync(timeout))
    }

    /// A copy of the live figures and signals (to compare with [`Vault::usage_from_log`]).
    pub fn usage_snapshot(&self) -> Result<Aggregate> {
        Ok(self.usage()?.snapshot())
    }

    /// A copy of the live figures for a backup, none with usage off. Waits (briefly) for the
    /// entries logged so far to be counted, so that the restored vault folds few again.
    pub(crate) fn usage_for_backup(&self) -> Option<Aggregate> {
        Some(self.inner.usage.as_ref()?.for_backup())
    }

    /// The figures and signals recomputed from the whole log, up to the entry the live ones
    /// cover, without changing anything.
    pub fn usage_from_log(&self) -> Result<Aggregate> {
        self.usage()?.refold()
    }

    /// Recomputes the figures and signals from the whole log and stores them in place of the
    /// old ones; returns the number of entries read. Holds the figures' lock throughout (queries
    /// wait; verifies do not). Works sealed: the log needs no key.
    pub fn rebuild_usage(&self) -> Result<u64> {
        self.usage()?.rebuild()
    }
}
