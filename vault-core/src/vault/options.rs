//! How a vault is opened: which components run, their bounds, the witnesses, the clock.

use crate::clock::Clock;
use crate::keys::{DEFAULT_KEYS_CACHED, DEFAULT_UNKNOWN_IDS_CACHED};
use crate::usage::Thresholds;
use crate::witness::WitnessConfig;

/// How a vault is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultOptions {
    /// Keep usage summaries and signals (default true). Off, the audit writer hands nothing on
    /// and every usage call answers [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub usage: bool,
    /// When signals fire.
    pub thresholds: Thresholds,
    /// Most key records kept decrypted in memory (default
    /// [`DEFAULT_KEYS_CACHED`](crate::keys::DEFAULT_KEYS_CACHED)); past it the ones used least
    /// recently are dropped and read from the store again when next used. A dropped key's
    /// rate-limit bucket starts full again.
    pub keys_cached: usize,
    /// Most ids of keys that do not exist remembered, so that verifies of them skip the store
    /// (default [`DEFAULT_UNKNOWN_IDS_CACHED`](crate::keys::DEFAULT_UNKNOWN_IDS_CACHED)).
    pub unknown_ids_cached: usize,
    /// The witnesses every checkpoint is sent to, and that the unseal check asks for the
    /// largest checkpoint of this log they hold (`[[audit.witness]]`; none by default).
    pub witnesses: Vec<WitnessConfig>,
    /// The time key and token expiry, rotation grace periods, rate-limit windows and record
    /// times read ([`Clock::system`](crate::clock::Clock::system) by default); a test passes a
    /// manual clock and advances it instead of sleeping.
    pub clock: Clock,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            usage: true,
            thresholds: Thresholds::default(),
            keys_cached: DEFAULT_KEYS_CACHED,
            unknown_ids_cached: DEFAULT_UNKNOWN_IDS_CACHED,
            witnesses: Vec::new(),
            clock: Clock::system(),
        }
    }
}
