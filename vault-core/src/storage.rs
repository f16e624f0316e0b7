//! The one place that knows sled (`0.34.7`).
//!
//! Everything lives in sled's default tree, in key spaces told apart by a first byte
//! ([`Space`]), so that one `apply_batch` changes several spaces atomically: a key record, its
//! index entries and (later) its audit entry become durable together or not at all.
//!
//! sled is stable but stalled, with reports of corruption after abrupt stops; keeping it behind
//! this module lets the crash tests decide whether another engine must take its place.

use std::path::Path;

/// A key space inside the store; the byte is the first byte of every key in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Space {
    /// Vault metadata: format version, seal configuration, keyring.
    Meta = 0,
    /// API-key records.
    Keys = 1,
    /// Vault-token records.
    Tokens = 2,
    /// Secondary indexes (keyed by HMACs of their values).
    Index = 3,
}

/// The storage engine failed (I/O, corruption reported by sled).
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageError(#[from] sled::Error);

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
}

/// Changes applied atomically by [`Store::apply`].
#[derive(Debug, Default)]
pub struct Batch(sled::Batch);

impl Batch {
    /// Sets `space/id` to `value`.
    pub fn insert(&mut self, space: Space, id: &[u8], value: &[u8]) {
        self.0.insert(key(space, id), value);
    }

    /// Removes `space/id`.
    #[allow(dead_code)] // used by the key lifecycle (index maintenance)
    pub fn remove(&mut self, space: Space, id: &[u8]) {
        self.0.remove(key(space, id));
    }
}

fn key(space: Space, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(space as u8);
    k.extend_from_slice(id);
    k
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        let db = sled::Config::new().path(path).open()?;
        Ok(Store { db })
    }

    /// The value at `space/id`.
    pub fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get(key(space, id))?.map(|v| v.to_vec()))
    }

    /// Applies `batch` atomically and makes it durable before returning.
    pub fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.db.apply_batch(batch.0)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every `(id, value)` in `space`, in id order.
    pub fn scan(
        &self,
        space: Space,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + '_ {
        self.db.scan_prefix([space as u8]).map(|item| {
            let (k, v) = item?;
            Ok((k[1..].to_vec(), v.to_vec()))
        })
    }
}
