//! Usage summaries and suspicious-activity signals, kept up to date from the audit log.
//!
//! The audit writer hands every group of entries to the `keyvault-usage` thread over a channel
//! once the group is durable (so an entry is counted only once committed), and goes on: the
//! verify path never waits for the figures. The thread folds the entries into an [`Aggregate`]
//! (per key and per owner, per hour and per day: verifies by code, credits spent, distinct client
//! addresses; and the signals), which queries read under a short lock.
//!
//! At most every 30 seconds (less often when storing costs more: see `PERSIST_SHARE`), on
//! seal and when the vault closes, the thread stores what changed in the figures file
//! (`DIR/usage/figures`, see `file`), ended by the sequence number the figures cover; at open
//! the usage thread loads the stored figures (readers wait for that; opening the vault does
//! not) and folds only the entries after that number again. A rebuild recomputes everything
//! from the whole log.
//!
//! # Layout
//! - [`aggregate`]: the figures and signals as a pure fold over entries.
//! - `file`: the figures file; `legacy`: the figures in the store, where earlier builds kept
//!   them and backups still carry them.
//! - `thread`: the usage thread, when to store, and the rebuild.
//! - `query`: the reports and the signals as the vault's callers ask for them.
//! - `minutes`: the vault's verifies per minute over the last hours, in memory only.
//! - `unattributed`: the signals the server raises itself, in memory only.
//!
//! The vault's calls (`Vault::key_usage`, ...) are in `vault/usage.rs`: this component knows
//! nothing of the vault that holds it.

pub mod aggregate;
mod file;
pub(crate) mod legacy;
mod minutes;
mod query;
mod thread;
mod unattributed;

pub use aggregate::{
    Aggregate, CLIENTS_PER_BUCKET, ClientSet, Codes, Counts, DAILY_RETENTION, Granularity,
    HOURLY_RETENTION, Observation, Signal, SignalKind, Subject, Thresholds, client_hash,
};
/// The string type of [`Observation`]'s fields (inline up to 24 bytes).
pub use compact_str::CompactString;
#[cfg(test)]
pub(crate) use file::DIR as FIGURES_DIR;
pub use minutes::{MINUTES, MinuteCounts, MinuteReport, OTHER_CODE};
pub use query::{MAX_BUCKETS, MAX_SIGNALS_RETURNED, UsageBucket, UsageQuery, UsageReport};
pub use thread::SignalHook;
pub(crate) use thread::Usage;
