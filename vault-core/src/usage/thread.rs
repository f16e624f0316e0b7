//! The usage thread of one vault: it loads the stored figures, folds the entries the audit
//! writer hands it, and stores what changed (when, see `PERSIST_SHARE`); and a rebuild of the
//! figures from the whole log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::aggregate::{self, Aggregate, Changes, Observation, Signal, Thresholds};
use super::file::{FiguresFile, Loaded, Update};
use super::legacy;
use super::minutes::Minutes;
use super::unattributed::Unattributed;
use crate::audit::Entry;
use crate::audit::log::LogReader;
use crate::storage::Store;
use crate::{Error, Result};

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

/// Called on the usage thread for every signal raised (not for one merely extended).
pub type SignalHook = Arc<dyn Fn(&Signal) + Send + Sync>;

/// The live aggregate and what changed since it was last stored.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) agg: Aggregate,
    dirty: Changes,
    /// The vault's verifies per minute, counted as the entries are folded.
    pub(super) minutes: Minutes,
    /// The stored figures are loaded (the thread loads them, so that opening a vault with
    /// figures for a million keys does not wait for them); until then readers wait.
    loaded: bool,
}

pub(super) struct Shared {
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
    pub(super) thresholds: RwLock<Thresholds>,
    pub(super) hook: RwLock<Option<SignalHook>>,
    pub(super) unattributed: Mutex<Unattributed>,
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

/// The usage thread of one vault.
#[derive(Debug)]
pub(crate) struct Usage {
    pub(super) shared: Arc<Shared>,
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

impl Usage {
    /// Waits (at most `timeout`) until every entry logged before the call is counted; whether
    /// it was.
    pub(crate) fn sync(&self, timeout: Duration) -> bool {
        self.shared.wait_for(self.shared.log.size(), timeout)
    }

    /// A copy of the live figures and signals.
    pub(crate) fn snapshot(&self) -> Aggregate {
        self.shared.live().agg.clone()
    }

    /// A copy of the live figures for a backup. Waits (briefly) for the entries logged so far
    /// to be counted, so that the restored vault folds few again.
    pub(crate) fn for_backup(&self) -> Aggregate {
        self.sync(Duration::from_secs(10));
        self.snapshot()
    }

    /// The figures and signals recomputed from the whole log, up to the entry the live ones
    /// cover, without changing anything.
    pub(crate) fn refold(&self) -> Result<Aggregate> {
        let live = self.shared.live();
        fold_log(
            &self.shared.log,
            &self.shared.thresholds(),
            live.agg.next_seq,
        )
    }

    /// Recomputes the figures and signals from the whole log and stores them in place of the
    /// old ones; returns the number of entries read. Holds the figures' lock throughout (queries
    /// wait; verifies do not).
    pub(crate) fn rebuild(&self) -> Result<u64> {
        let shared = &self.shared;
        self.sync(Duration::from_secs(60));
        let mut live = shared.live();
        let upto = live.agg.next_seq;
        let mut fresh = fold_log(&shared.log, &shared.thresholds(), upto)?;
        shared.write(shared.file_lock(), Update::everything(&mut fresh))?;
        live.agg = fresh;
        live.dirty = Changes::default();
        Ok(upto)
    }
}

impl Drop for Usage {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// The figures, once loaded.
    pub(super) fn live(&self) -> MutexGuard<'_, Live> {
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
        // The ring sees the entries folded from here on: those after the stored figures.
        let after_ms = if agg.next_seq == 0 { 0 } else { agg.latest_ms };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.agg = agg;
        live.minutes = Minutes::new(after_ms);
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

    /// Entries in the audit log now (the next sequence number).
    pub(super) fn log_size(&self) -> u64 {
        self.log.size()
    }

    pub(super) fn thresholds(&self) -> Thresholds {
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
                Ok(entry) => chunk.push(aggregate::observe(entry)),
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
            let Live {
                agg,
                dirty,
                minutes,
                ..
            } = &mut *live;
            for entry in entries {
                // The replay and the writer may both hand an entry: count it once, as the
                // fold does.
                if entry.seq >= agg.next_seq {
                    minutes.note(entry);
                }
                agg.apply(&th, entry, dirty);
            }
            std::mem::take(&mut dirty.raised)
        };
        // Hooks first, so that whoever waits for the fold also sees what the hooks did.
        self.announce(&raised);
        self.folded.notify_all();
    }

    pub(super) fn announce(&self, raised: &[Signal]) {
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
    pub(super) fn live_from(&self, seq: u64, timeout: Duration) -> MutexGuard<'_, Live> {
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
        agg.apply(th, &aggregate::observe(entry), &mut changes);
        // Only the end state matters here; do not let the raised signals pile up.
        changes.raised.clear();
    }
    Ok(agg)
}
