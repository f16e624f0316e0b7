//! Warming the key cache after unseal, in the background.
//!
//! A sealed vault caches nothing, so right after unseal every verify of a key would pay a store
//! read and a decryption under the key's lock, and with a million keys the first minutes of
//! traffic would run at a fraction of the usual rate. So unseal starts a thread that reads the
//! keys into the cache while the vault already answers: it never makes unseal wait.
//!
//! **Which keys.** Those used most recently first: when the vault seals or closes, the ids of
//! the cached keys used since the cache's last sweep (the cache's approximation of recent use)
//! are written to `DIR/warm-keys`, 12 bytes each; the warm reads those first, in id order (the
//! store's order, so each page of the store is read once). Then, while the cache has room,
//! every other key in id order. Up to the cache's capacity
//! (2^20 keys by default) that is every key; past it, the keys used before the last seal. The
//! file is a hint, never trusted: key ids are public, an id no key has is skipped, and a
//! missing or torn file (a crash) only means the warm starts with the id order.
//!
//! **Never in the way.** The thread fills only slots that are empty and unlocked, through the
//! same fill under the key's lock as a verify (a fresh store read, so a change committed
//! meanwhile is never overwritten by an older copy), never takes a shard past its capacity and
//! marks what it fills unused, so that keys traffic uses are kept first. Seal stops and joins it
//! before the cache is cleared, so nothing it read survives a seal.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::book::{Background, KeyBook, id_from};
use super::cache::try_lock;
use crate::apikey::KeyId;
use crate::keyring::Keyring;
use crate::storage::Space;

/// The file of recently used key ids, in the data directory.
const WARM_FILE: &str = "warm-keys";

impl KeyBook {
    /// Starts warming the cache with the keyring `keys` holds (see the module doc); a warm
    /// already running is stopped first.
    pub(crate) fn start_warm<K>(self: &Arc<Self>, dir: &Path, keys: Arc<K>)
    where
        K: AsRef<Keyring> + Send + Sync + 'static,
    {
        let mut warmer = self.warmer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = warmer.take() {
            old.stop();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (book, path, halt) = (Arc::clone(self), dir.join(WARM_FILE), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("keyvault-warm".into())
            .spawn(move || book.warm(&path, keys.as_ref().as_ref(), &halt));
        match thread {
            Ok(thread) => *warmer = Some(Background { stop, thread }),
            // No thread: the cache fills as keys are used, as it would without warming.
            Err(e) => tracing::warn!(error = %e, "could not start warming the key cache"),
        }
    }

    /// Stops a running warm, if any, and waits for it.
    pub(crate) fn stop_warm(&self) {
        let warmer = self.warmer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(warmer) = warmer {
            warmer.stop();
        }
    }

    /// Whether a warm is still running.
    pub(crate) fn warming(&self) -> bool {
        let warmer = self.warmer.lock().unwrap_or_else(|e| e.into_inner());
        warmer.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// Writes the ids of the keys used since the cache's last sweep to `DIR/warm-keys` (see the
    /// module doc). Best effort: the file is a hint.
    pub(crate) fn save_recent(&self, dir: &Path) {
        let ids = self.cache.recent_ids();
        let bytes: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
        let path = dir.join(WARM_FILE);
        let tmp: PathBuf = dir.join(format!("{WARM_FILE}.tmp"));
        // Owner-only, as every file of the data directory.
        let written = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| file.write_all(&bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not save the recently used key ids");
        }
    }

    fn warm(&self, recent: &Path, keyring: &Keyring, stop: &AtomicBool) {
        let started = std::time::Instant::now();
        let mut hinted: Vec<KeyId> = fs::read(recent)
            .unwrap_or_default()
            .chunks_exact(12)
            .filter_map(|c| id_from(c).ok())
            .collect();
        // Read in id order, which is the store's: each leaf of sled's tree is read once, where
        // the cache's (random) order read one from the log file per key and took 80 µs a key
        // at a million. The hinted keys are all recent alike (used since the last sweep).
        hinted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut filled = 0usize;
        for id in &hinted {
            if stop.load(Ordering::Acquire) {
                return;
            }
            filled += usize::from(self.warm_one(keyring, id));
        }
        for item in self.store.scan(Space::Keys) {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let Ok((id, _)) = item else {
                break; // a storage error: the cache fills as keys are used
            };
            if let Ok(id) = id_from(&id) {
                filled += usize::from(self.warm_one(keyring, &id));
            }
        }
        tracing::info!(
            keys = filled,
            seconds = started.elapsed().as_secs_f64(),
            "key cache warmed"
        );
        // What the open and the warm freed stays resident in the allocator unless given back,
        // and nothing of that size follows (see `heap`).
        crate::heap::give_back_free_memory();
    }

    /// Fills the slot of `id` if the cache has room and no one holds it; whether it did.
    fn warm_one(&self, keyring: &Keyring, id: &KeyId) -> bool {
        let Some(slot) = self.cache.warm_slot(id) else {
            return false;
        };
        let Some(guard) = try_lock(&slot) else {
            return false;
        };
        // An id no key has, or a record that does not open, is left to the verify that asks
        // for it (which reports it); the empty slot goes at the next sweep.
        matches!(self.fill(keyring, guard, id), Ok(g) if g.is_some())
    }
}
