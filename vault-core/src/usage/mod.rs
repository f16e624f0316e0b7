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
//! not) and folds only the entries after that number again. [`Vault::rebuild_usage`]
//! recomputes everything from the whole log.
//!
//! # Layout
//! - [`aggregate`]: the figures and signals as a pure fold over entries.
//! - `file`: the figures file; `legacy`: the figures in the store, where earlier builds kept
//!   them and backups still carry them.
//! - this module: the thread, when to store, and the [`Vault`] calls.

pub mod aggregate;
mod file;
#[cfg(test)]
pub(crate) use file::DIR as FIGURES_DIR;
pub(crate) mod legacy;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use aggregate::Changes;
pub use aggregate::{
    Aggregate, CLIENTS_PER_BUCKET, ClientSet, Codes, Counts, DAILY_RETENTION, Granularity,
    HOURLY_RETENTION, Observation, Signal, SignalKind, Subject, Thresholds, client_hash,
};
/// The string type of [`Observation`]'s fields (inline up to 24 bytes).
pub use compact_str::CompactString;
use file::{FiguresFile, Loaded, Update};

use crate::apikey::KeyId;
use crate::audit::Entry;
use crate::audit::log::LogReader;
use crate::storage::Store;
use crate::{Error, Result, Vault};

/// Changes are stored at most this often while entries arrive; a crash costs a refold of the
/// entries since the last store.
const PERSIST_EVERY: Duration = Duration::from_secs(30);
/// ... and no sooner than this many times what the store is expected to take, so that storing
/// takes at most 2 % of the thread's time even when each of a million keys changes between two
/// stores (about 4 s to store; then once every few minutes, and a crash refolds that much).
const PERSIST_SHARE: u32 = 50;
/// What storing one changed key or owner is expected to take until a store has been timed
/// (about what a million keys take, the costly case: their figures are far apart in memory).
const FIRST_COST_PER_ITEM: Duration = Duration::from_micros(4);
/// The cost per item is learnt from stores of at least this many keys and owners.
const LEARN_FROM_ITEMS: u32 = 1_000;
/// Changes are stored at least this often, whatever storing costs.
const PERSIST_AT_LEAST: Duration = Duration::from_secs(600);
/// Under load the thread folds at most this often (sooner when a reader waits for the figures,
/// or the vault closes). Waking once per audit group would cost a context switch per group on
/// cores the audit writer needs, and the fold costs less per entry in larger batches: each
/// key's figures are fetched into the cache once for the verifies of the batch, not once per
/// verify (a third less per entry with a thousand keys than with 20-ms batches). The figures
/// lag the log by up to this much under load.
const FOLD_PAUSE: Duration = Duration::from_millis(200);
/// How often the thread wakes without entries (to store, or to stop).
const TICK: Duration = Duration::from_millis(500);
/// Longest a usage or signal read waits for the fold to reach the log as it was when the read
/// began, so that it counts every verify answered before it (a read past it answers with what
/// is folded; its `covers_seq` says how far that is).
const READ_WAIT: Duration = Duration::from_secs(2);
/// Most buckets one query returns.
pub const MAX_BUCKETS: u64 = 1_000;
/// Most signals one query returns (the newest).
pub const MAX_SIGNALS_RETURNED: usize = 1_000;
/// Unattributed-failure signals kept.
const MAX_UNATTRIBUTED: usize = 1_000;

/// Called on the usage thread for every signal raised (not for one merely extended).
pub type SignalHook = Arc<dyn Fn(&Signal) + Send + Sync>;

/// How a vault is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultOptions {
    /// Keep usage summaries and signals (default true). Off, the audit writer hands nothing on
    /// and every usage call answers [`Error::InvalidInput`].
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
    pub witnesses: Vec<crate::witness::WitnessConfig>,
    /// The time key and token expiry, rotation grace periods, rate-limit windows and record
    /// times read ([`Clock::system`](crate::clock::Clock::system) by default); a test passes a
    /// manual clock and advances it instead of sleeping.
    pub clock: crate::clock::Clock,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            usage: true,
            thresholds: Thresholds::default(),
            keys_cached: crate::keys::DEFAULT_KEYS_CACHED,
            unknown_ids_cached: crate::keys::DEFAULT_UNKNOWN_IDS_CACHED,
            witnesses: Vec::new(),
            clock: crate::clock::Clock::system(),
        }
    }
}

/// The live aggregate and what changed since it was last stored.
#[derive(Debug, Default)]
struct Live {
    agg: Aggregate,
    dirty: Changes,
    /// The stored figures are loaded (the thread loads them, so that opening a vault with
    /// figures for a million keys does not wait for them); until then readers wait.
    loaded: bool,
}

struct Shared {
    store: Store,
    /// The audit log's entries, for the replay at open.
    log: LogReader,
    live: Mutex<Live>,
    /// Where the figures are stored. Locked after `live` when both are held.
    file: Mutex<FiguresFile>,
    /// The store's `Usage` space still holds figures (see [`legacy`]): emptied once a store to
    /// the file succeeds.
    legacy: AtomicBool,
    /// Signalled whenever entries are folded.
    folded: Condvar,
    thresholds: RwLock<Thresholds>,
    hook: RwLock<Option<SignalHook>>,
    unattributed: Mutex<Unattributed>,
    stop: AtomicBool,
    persist_now: AtomicBool,
    /// Set to end the thread's pause between folds early.
    hurry: Mutex<bool>,
    hurried: Condvar,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Failed verifies without an end-user address (a one-minute window), and the signals the
/// server raises itself (`unattributed_failures`, `disk_alarm`). In memory only (an audit
/// entry cannot tell an end user's address from a peer's, and a disk reading is no entry), so
/// these signals are neither stored nor rebuilt.
#[derive(Debug, Default)]
struct Unattributed {
    minute: u64,
    count: u64,
    signals: VecDeque<Signal>,
    next_id: u64,
}

impl Unattributed {
    /// Extends the newest signal of `kind` if it is within the merge window of `now_ms` (one
    /// more occurrence, `peer` among its addresses), else starts one with `count` occurrences;
    /// returns a signal that was started, to be announced.
    fn note(
        &mut self,
        kind: SignalKind,
        now_ms: u64,
        count: u64,
        peer: Option<&str>,
    ) -> Option<Signal> {
        let open = self.signals.iter_mut().rev().find(|s| {
            s.kind == kind && s.last_at_ms.saturating_add(aggregate::MERGE_WINDOW_MS) > now_ms
        });
        if let Some(s) = open {
            s.last_at_ms = now_ms;
            s.count += 1;
            s.add_client(peer);
            return None;
        }
        let s = Signal {
            id: self.next_id,
            kind,
            key_id: None,
            owner: None,
            first_at_ms: now_ms,
            last_at_ms: now_ms,
            count,
            first_seq: None,
            last_seq: None,
            clients: peer.map(|p| vec![p.to_owned()]).unwrap_or_default(),
            clients_truncated: false,
            previous_secret_expires_at: None,
            baseline_per_hour: None,
        };
        self.next_id += 1;
        self.signals.push_back(s.clone());
        if self.signals.len() > MAX_UNATTRIBUTED {
            self.signals.pop_front();
        }
        Some(s)
    }
}

/// The usage thread of one vault.
#[derive(Debug)]
pub(crate) struct Usage {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Usage {
    /// Starts the thread, which loads the stored figures, folds the entries logged after them
    /// and then those `rx` brings. Readers of the figures wait until they are loaded.
    pub(crate) fn open(
        store: Store,
        log: LogReader,
        dir: &std::path::Path,
        thresholds: Thresholds,
        rx: Receiver<Vec<Observation>>,
    ) -> Result<Usage> {
        let shared = Arc::new(Shared {
            store,
            log,
            live: Mutex::new(Live::default()),
            file: Mutex::new(FiguresFile::new(dir)),
            legacy: AtomicBool::new(false),
            folded: Condvar::new(),
            thresholds: RwLock::new(thresholds),
            hook: RwLock::new(None),
            unattributed: Mutex::new(Unattributed::default()),
            stop: AtomicBool::new(false),
            persist_now: AtomicBool::new(false),
            hurry: Mutex::new(false),
            hurried: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keyvault-usage".into())
            .spawn(move || thread_shared.run(rx))
            .map_err(|e| Error::Io {
                context: "starting the usage thread".into(),
                source: e,
            })?;
        Ok(Usage {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stores what changed, then stops the thread (after the entries already handed over).
    pub(crate) fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.hurry();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// Asks the thread to store what changed at its next wake (on seal).
    pub(crate) fn persist_soon(&self) {
        self.shared.persist_now.store(true, Ordering::Release);
        self.shared.hurry();
    }
}

impl Drop for Usage {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// The figures, once loaded.
    fn live(&self) -> MutexGuard<'_, Live> {
        // Folding only inserts whole values; a panic mid-fold leaves figures that are at worst
        // one entry short, which a rebuild repairs.
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while !live.loaded {
            live = self.folded.wait(live).unwrap_or_else(|e| e.into_inner());
        }
        live
    }

    /// Loads the stored figures. They are derived data: if they cannot be read, they are
    /// folded again from the whole log rather than keeping the vault from working.
    fn load_stored(&self) {
        /// Marks the figures loaded even if loading panics, so that no reader waits forever.
        struct Done<'a>(&'a Shared);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.live.lock().unwrap_or_else(|e| e.into_inner()).loaded = true;
                self.0.folded.notify_all();
            }
        }
        let _done = Done(self);
        let mut agg = self.stored().unwrap_or_else(|e| {
            tracing::error!(error = %e, "usage: the stored figures cannot be read; refolding the whole audit log");
            self.file_lock().forget();
            Aggregate::default()
        });
        // Stores do not record what pruning drops: drop it again.
        agg.drop_expired(&self.thresholds());
        self.live.lock().unwrap_or_else(|e| e.into_inner()).agg = agg;
    }

    /// The stored figures: from the file, or from the store's space where an earlier build
    /// kept them (or a restored backup put them), whichever covers more.
    fn stored(&self) -> Result<Aggregate> {
        // Figures in the old space count only if they cover no entry the log lacks; failing to
        // read them costs only them.
        let legacy = match legacy::covers(&self.store) {
            Ok(Some(seq)) if seq <= self.log.size() => Some(seq),
            Ok(Some(seq)) => {
                tracing::error!(
                    covers = seq,
                    "usage: the figures in the store cover entries the audit log lacks; ignored"
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "usage: the figures in the store cannot be read; ignored");
                None
            }
        };
        let present = legacy::present(&self.store).unwrap_or(true);
        self.legacy.store(present, Ordering::Release);
        let mut file = self.file_lock();
        let loaded = file.load()?.filter(|loaded| self.matches_log(loaded));
        if let Some(loaded) = &loaded
            && loaded.damaged
        {
            tracing::warn!(
                "usage: the figures file ends in damage; the entries after its last whole store are folded again"
            );
        }
        match loaded {
            Some(loaded) if legacy.is_none_or(|seq| seq <= loaded.agg.next_seq) => Ok(loaded.agg),
            _ if legacy.is_some() => {
                file.forget();
                legacy::load(&self.store)
            }
            _ => {
                file.forget();
                Ok(Aggregate::default())
            }
        }
    }

    /// Whether figures read back were folded from this vault's log: they cover no entry it
    /// lacks, and the last one they count is the one it holds (when it still holds it).
    fn matches_log(&self, loaded: &Loaded) -> bool {
        let covers = loaded.agg.next_seq;
        let matches = covers <= self.log.size()
            && match (loaded.last_entry, self.entry_hash(covers)) {
                (Some(stored), Some(live)) => stored == live,
                _ => true,
            };
        if !matches {
            tracing::error!(
                covers,
                "usage: the figures file was not folded from this vault's audit log; refolding it"
            );
        }
        matches
    }

    /// SHA-256 of the canonical bytes of the entry before `next_seq`, if the live log holds it.
    fn entry_hash(&self, next_seq: u64) -> Option<[u8; 32]> {
        let last = next_seq.checked_sub(1)?;
        match self.log.entries(last).next()? {
            Ok((seq, bytes)) if seq == last => Some(Sha256::digest(&bytes).into()),
            _ => None,
        }
    }

    fn file_lock(&self) -> MutexGuard<'_, FiguresFile> {
        // Writes leave the file's state consistent (a failed one makes the next store full).
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn thresholds(&self) -> Thresholds {
        *self.thresholds.read().unwrap_or_else(|e| e.into_inner())
    }

    fn run(self: Arc<Self>, rx: Receiver<Vec<Observation>>) {
        self.load_stored();
        lower_priority();
        self.replay();
        let mut stored_at = Instant::now();
        let mut per_item = FIRST_COST_PER_ITEM;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            match rx.recv_timeout(TICK) {
                Ok(entries) => {
                    let mut groups = vec![entries];
                    while let Ok(more) = rx.try_recv() {
                        groups.push(more);
                    }
                    self.fold(groups.iter().flatten());
                    if !stopping {
                        self.pause(FOLD_PAUSE);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.persist();
                    return;
                }
            }
            if stopping {
                // The audit writer is closed before this thread: nothing more is coming.
                while let Ok(more) = rx.try_recv() {
                    self.fold(more.iter());
                }
                self.persist();
                return;
            }
            if self.persist_now.swap(false, Ordering::AcqRel) || self.store_due(stored_at, per_item)
            {
                let started = Instant::now();
                let items = self.persist();
                stored_at = Instant::now();
                // A small store's time is mostly its fdatasync, which says nothing per item.
                if items >= LEARN_FROM_ITEMS {
                    per_item = stored_at.duration_since(started) / items;
                }
            }
        }
    }

    /// Whether it is time to store: at least [`PERSIST_EVERY`] since the last store, and
    /// [`PERSIST_SHARE`] times as long as storing what changed is expected to take (but no
    /// longer than [`PERSIST_AT_LEAST`]).
    fn store_due(&self, stored_at: Instant, per_item: Duration) -> bool {
        let since = stored_at.elapsed();
        if since < PERSIST_EVERY {
            return false;
        }
        let items = u32::try_from(self.live().dirty.marked).unwrap_or(u32::MAX);
        since >= PERSIST_AT_LEAST
            || since >= per_item.saturating_mul(items).saturating_mul(PERSIST_SHARE)
    }

    /// Folds the entries logged after the stored figures.
    fn replay(&self) {
        let from = self.live().agg.next_seq;
        let mut chunk = Vec::with_capacity(1024);
        for item in self.log.entries(from) {
            if self.stop.load(Ordering::Acquire) {
                // Closing mid-replay: what is folded is stored, the rest is folded next time.
                break;
            }
            let parsed = item.and_then(|(_, bytes)| {
                Entry::parse(&bytes).map_err(|e| Error::Corrupt(format!("an audit entry: {e}")))
            });
            match parsed {
                Ok(entry) => chunk.push(Observation::from(entry)),
                Err(e) => {
                    tracing::error!(error = %e, "usage: an audit entry could not be read; the figures skip it");
                }
            }
            if chunk.len() == chunk.capacity() {
                self.fold(chunk.iter());
                chunk.clear();
            }
        }
        self.fold(chunk.iter());
    }

    fn fold<'a>(&self, entries: impl Iterator<Item = &'a Observation>) {
        let th = self.thresholds();
        let raised = {
            let mut live = self.live();
            let Live { agg, dirty, .. } = &mut *live;
            for entry in entries {
                agg.apply(&th, entry, dirty);
            }
            std::mem::take(&mut dirty.raised)
        };
        // Hooks first, so that whoever waits for the fold also sees what the hooks did.
        self.announce(&raised);
        self.folded.notify_all();
    }

    fn announce(&self, raised: &[Signal]) {
        if raised.is_empty() {
            return;
        }
        let hook = self.hook.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            for signal in raised {
                hook(signal);
            }
        }
    }

    /// Stores what changed since the last time (everything, when the file must be written
    /// afresh), with the sequence number it covers; returns how many keys and owners it wrote.
    /// The figures' lock is held only while the bytes are built; a failed write makes the next
    /// store a full one.
    fn persist(&self) -> u32 {
        let (next, file) = {
            let mut live = self.live();
            let file = self.file_lock();
            let dirty = std::mem::take(&mut live.dirty);
            let next = Update::next(file.needs_full(), &mut live.agg, &dirty);
            (next, file)
        };
        let items = match next {
            Some((update, items)) => {
                if let Err(e) = self.write(file, update) {
                    tracing::error!(error = %e, "usage: storing the figures failed; retrying later");
                    return 0;
                }
                items
            }
            // Nothing changed since a clean file was read or written: it holds everything.
            None => {
                drop(file);
                self.clear_legacy();
                0
            }
        };
        u32::try_from(items).unwrap_or(u32::MAX)
    }

    /// Writes `update` to the file, ended by the hash of the last entry it counts, then empties
    /// the store's old usage space: the file holds everything.
    fn write(&self, mut file: MutexGuard<'_, FiguresFile>, update: Update) -> Result<()> {
        let last_entry = self.entry_hash(update.covers());
        file.write(update, last_entry)?;
        drop(file);
        self.clear_legacy();
        Ok(())
    }

    /// Empties the store's old usage space once the file holds everything.
    fn clear_legacy(&self) {
        if self.legacy.load(Ordering::Acquire) {
            match legacy::clear(&self.store) {
                Ok(_) => self.legacy.store(false, Ordering::Release),
                Err(e) => {
                    tracing::error!(error = %e, "usage: emptying the old usage space failed; retrying later")
                }
            }
        }
    }

    /// Waits `pause`, or less if someone hurries the thread.
    fn pause(&self, pause: Duration) {
        let hurry = self.hurry.lock().unwrap_or_else(|e| e.into_inner());
        let (mut hurry, _) = self
            .hurried
            .wait_timeout_while(hurry, pause, |hurry| !*hurry)
            .unwrap_or_else(|e| e.into_inner());
        *hurry = false;
    }

    /// Ends the thread's pause between folds now.
    fn hurry(&self) {
        *self.hurry.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.hurried.notify_all();
    }

    fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        self.live_from(seq, timeout).agg.next_seq >= seq
    }

    /// The live figures once every entry before `seq` is folded, or when `timeout` has passed
    /// (then they cover less: `next_seq` says how much).
    fn live_from(&self, seq: u64, timeout: Duration) -> MutexGuard<'_, Live> {
        let deadline = Instant::now() + timeout;
        let mut live = self.live();
        while live.agg.next_seq < seq {
            self.hurry();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = self
                .folded
                .wait_timeout(live, left.min(TICK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        live
    }
}

/// Runs the calling thread at nice 10: the figures are background work, and when the cores are
/// saturated the audit writer and the verifies waiting on it come first. (At nice 10 the thread
/// still gets about a tenth of a busy core, several times what folding needs, so it keeps up.)
/// Best effort: a failure leaves the thread at the process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` and `setpriority` take and return integers and touch no memory; on
        // Linux, `PRIO_PROCESS` with a thread id changes only that thread.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
        };
        if rc != 0 {
            tracing::debug!("usage: the thread's priority could not be lowered");
        }
    }
}

/// Folds the whole live log (entries archived away are not there any more), up to `upto`, into
/// a fresh aggregate.
fn fold_log(log: &LogReader, th: &Thresholds, upto: u64) -> Result<Aggregate> {
    let mut agg = Aggregate::default();
    let mut changes = Changes::default();
    for item in log.entries(0) {
        let (seq, bytes) = item?;
        if seq >= upto {
            break;
        }
        let entry =
            Entry::parse(&bytes).map_err(|e| Error::Corrupt(format!("audit entry {seq}: {e}")))?;
        agg.apply(th, &Observation::from(entry), &mut changes);
        // Only the end state matters here; do not let the raised signals pile up.
        changes.raised.clear();
    }
    Ok(agg)
}

// ---- Answers --------------------------------------------------------------------------------

/// One bucket of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageBucket {
    /// Start of the bucket (Unix s).
    pub start: u64,
    /// Verifies by code (only codes that occurred).
    pub counts: std::collections::BTreeMap<String, u64>,
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
    let mut clients = ClientSet::default();
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

impl Vault {
    fn usage(&self) -> Result<&Usage> {
        self.inner
            .usage
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("usage summaries are off in this vault".into()))
    }

    /// Usage of key `id` (which must exist) over `q`'s range.
    pub fn key_usage(&self, id: &KeyId, q: &UsageQuery) -> Result<UsageReport> {
        let info = self.show_key(id)?;
        let subject = Subject::Key(id.to_string());
        let mut report = self.usage_report(&subject, q)?;
        report.key_id = Some(id.to_string());
        report.owner = info.owner;
        Ok(report)
    }

    /// Usage of every key of `owner` over `q`'s range: the owner's own series, which only that
    /// owner's keys feed.
    pub fn owner_usage(&self, owner: &str, q: &UsageQuery) -> Result<UsageReport> {
        self.keys()?;
        let mut report = self.usage_report(&Subject::Owner(owner.to_owned()), q)?;
        report.owner = owner.to_owned();
        Ok(report)
    }

    fn usage_report(&self, subject: &Subject, q: &UsageQuery) -> Result<UsageReport> {
        let usage = self.usage()?;
        let (from, to) = q.range()?;
        let live = usage.shared.live_from(self.inner.audit.size(), READ_WAIT);
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

    /// Signals about key `id` (which must exist), oldest first (at most the newest
    /// [`MAX_SIGNALS_RETURNED`]).
    pub fn key_signals(&self, id: &KeyId) -> Result<Vec<Signal>> {
        self.show_key(id)?;
        let key = id.to_string();
        self.select_signals(|s| s.key_id.as_deref() == Some(key.as_str()), false)
    }

    /// Signals last seen at or after `since_ms`, of `owner`'s keys if given (then never another
    /// owner's, nor those that concern no key), oldest first (at most the newest
    /// [`MAX_SIGNALS_RETURNED`]).
    pub fn signals(&self, owner: Option<&str>, since_ms: u64) -> Result<Vec<Signal>> {
        self.keys()?;
        self.select_signals(
            |s| s.last_at_ms >= since_ms && owner.is_none_or(|o| s.owner.as_deref() == Some(o)),
            owner.is_none(),
        )
    }

    fn select_signals(
        &self,
        keep: impl Fn(&Signal) -> bool,
        with_unattributed: bool,
    ) -> Result<Vec<Signal>> {
        let usage = self.usage()?;
        let mut out: Vec<Signal> = {
            let live = usage.shared.live_from(self.inner.audit.size(), READ_WAIT);
            live.agg
                .signals
                .iter()
                .filter(|s| keep(s))
                .cloned()
                .collect()
        };
        if with_unattributed {
            let u = usage
                .shared
                .unattributed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            out.extend(u.signals.iter().filter(|s| keep(s)).cloned());
            out.sort_by_key(|s| s.last_at_ms);
        }
        let skip = out.len().saturating_sub(MAX_SIGNALS_RETURNED);
        Ok(out.split_off(skip))
    }

    /// Counts a failed verify that had no end-user address (so the throttle refused nothing),
    /// from `peer` (the caller's own address); past [`Thresholds::unattributed_failures_per_minute`]
    /// in a minute, raises or extends an `unattributed_failures` signal. A short lock, no I/O.
    pub fn note_unattributed_failure(&self, peer: Option<&str>) {
        let Ok(usage) = self.usage() else { return };
        let threshold = usage.shared.thresholds().unattributed_failures_per_minute;
        if threshold == 0 {
            return;
        }
        let now_ms = crate::clock::now_ms();
        let raised = {
            let mut u = usage
                .shared
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
            usage.shared.announce(&[s]);
        }
    }

    /// Records a reading of the disk watch over its high-water mark as a `disk_alarm` signal
    /// (with no key: shown without an owner filter, like `unattributed_failures`); readings
    /// within an hour of the last extend it. In memory only.
    pub fn note_disk_alarm(&self) {
        let Ok(usage) = self.usage() else { return };
        let raised = usage
            .shared
            .unattributed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(SignalKind::DiskAlarm, crate::clock::now_ms(), 1, None);
        if let Some(s) = raised {
            usage.shared.announce(&[s]);
        }
    }

    /// Sets the function called (on the usage thread) for every signal raised; replaces any
    /// earlier one.
    pub fn on_usage_signal(&self, hook: SignalHook) {
        if let Ok(usage) = self.usage() {
            *usage.shared.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
        }
    }

    /// Sets when signals fire, for entries folded from now on.
    pub fn set_usage_thresholds(&self, thresholds: Thresholds) {
        if let Ok(usage) = self.usage() {
            *usage
                .shared
                .thresholds
                .write()
                .unwrap_or_else(|e| e.into_inner()) = thresholds;
        }
    }

    /// Waits (at most `timeout`) until every entry logged before the call is counted; whether
    /// it was.
    pub fn usage_sync(&self, timeout: Duration) -> Result<bool> {
        let usage = self.usage()?;
        Ok(usage.shared.wait_for(self.inner.audit.size(), timeout))
    }

    /// A copy of the live figures and signals (to compare with [`Vault::usage_from_log`]).
    pub fn usage_snapshot(&self) -> Result<Aggregate> {
        Ok(self.usage()?.shared.live().agg.clone())
    }

    /// A copy of the live figures for a backup, none with usage off. Waits (briefly) for the
    /// entries logged so far to be counted, so that the restored vault folds few again.
    pub(crate) fn usage_for_backup(&self) -> Option<Aggregate> {
        let usage = self.inner.usage.as_ref()?;
        usage
            .shared
            .wait_for(self.inner.audit.size(), Duration::from_secs(10));
        Some(usage.shared.live().agg.clone())
    }

    /// The figures and signals recomputed from the whole log, up to the entry the live ones
    /// cover, without changing anything.
    pub fn usage_from_log(&self) -> Result<Aggregate> {
        let usage = self.usage()?;
        let live = usage.shared.live();
        fold_log(
            &usage.shared.log,
            &usage.shared.thresholds(),
            live.agg.next_seq,
        )
    }

    /// Recomputes the figures and signals from the whole log and stores them in place of the
    /// old ones; returns the number of entries read. Holds the figures' lock throughout (queries
    /// wait; verifies do not). Works sealed: the log needs no key.
    pub fn rebuild_usage(&self) -> Result<u64> {
        let usage = self.usage()?;
        usage
            .shared
            .wait_for(self.inner.audit.size(), Duration::from_secs(60));
        let mut live = usage.shared.live();
        let upto = live.agg.next_seq;
        let mut fresh = fold_log(&usage.shared.log, &usage.shared.thresholds(), upto)?;
        usage
            .shared
            .write(usage.shared.file_lock(), Update::everything(&mut fresh))?;
        live.agg = fresh;
        live.dirty = Changes::default();
        Ok(upto)
    }
}
