//! [`EtcdState`]: a vault's shared spaces in an etcd v3 cluster (DESIGN section 10), for many
//! nodes serving one vault.
//!
//! # Keys and values
//! Row `(space, id)` is the etcd key `prefix | "/" | space byte | id`, its value the bytes the
//! vault stores, unchanged: the same encrypted, AAD-bound envelopes as on disk, so etcd (and
//! whoever reads its disk or backups) learns nothing sled's file would not show. Key order in
//! etcd is byte order, so a space is one contiguous range and a scan is a range read. Bytes
//! `0x00`-`0x0B` after the `/` are spaces; `0xFF` holds the handles' apply markers (below).
//!
//! # Writes
//! A batch is one etcd transaction: its changes (the last change to a key wins, as in
//! [`Batch`]), plus a put of this node's *apply marker*, guarded by comparisons: every key it
//! changes or expects unchanged ([`Batch::expect_unchanged`]) must still have the mod revision
//! this handle last saw for it (a read, or its own write; a key it never saw, or saw absent,
//! must be absent), and the marker must be where this handle left it. A comparison that fails
//! means another writer got there first: nothing is applied and the batch fails with a
//! [`Conflict`] ([`StorageError::is_conflict`]), so two nodes never overwrite each other; the
//! caller reads again and redoes its change. Revisions this handle
//! saw are remembered for the rows that exist (a read that finds nothing forgets the key), so
//! what that costs grows with the rows read, not with the ids clients present.
//!
//! etcd takes at most 128 operations per transaction and 1.5 MiB per request. The trait
//! promises an atomic batch, so a batch too large for one transaction (more than 127 distinct
//! keys, or more than [`MAX_BATCH_BYTES`]) is refused whole rather than split.
//!
//! # Not knowing
//! A transaction whose member fails before it answers may have been applied. The trait says an
//! error must mean *not applied*, so it is never simply sent again: each attempt carries a
//! fresh random marker value, every attempt compares the marker's revision with the same last
//! one, so at most one attempt of a batch (or of the fences below) can ever apply. When an
//! attempt is in doubt, the handle settles it: it sends a *fence* (a marker put under the same
//! comparison); once the fence is applied no attempt of the batch can be, and once a fence
//! fails the marker's value names the attempt that was. A batch is answered only once settled;
//! if etcd stays unreachable past the deadline the batch fails, the handle keeps what is in
//! doubt, settles it before its next write, and logs an error if it turns out applied.
//!
//! # Nodes
//! See `registry.rs`: each node's live registration (on a lease) and durable record, under
//! `0xFF` beside the markers, and `report.rs`: what each node reports about itself (the
//! revision its view has applied, whether it is current, whether it is sealed).
//!
//! # Rate limits
//! See `rates.rs`: each node's tally of the rate-limit tokens it took, published beside its
//! report on its lease, and the watch that hands the others' to the node.
//!
//! # The view
//! See `watch.rs`: every change of the shared rows, fed to the node's caches, and whether
//! the node's view is current.
//!
//! # Backup and restore
//! See `backup.rs`: every shared row read at one revision, and written back into a prefix
//! that held nothing.
//!
//! # Members
//! See `members.rs`: a request that fails on one member is retried on the next, within a
//! deadline; etcd unreachable is a [`StorageError`], which the server answers 503
//! `storage_unavailable`.

mod ack;
pub mod backup;
mod members;
pub mod published;
pub mod rates;
pub mod registry;
pub mod report;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use rand::TryRng;
use rand::rngs::SysRng;

pub use members::Timing;
use members::{Failure, Members};

use super::etcd_config::EtcdConfig;
use super::shared::{Scan, SharedSnapshot, SharedState};
use super::space::{Batch, Conflict, Item, Space, StorageError, key};

/// Distinct keys a batch may change: etcd's 128 operations per transaction, less the marker.
pub const MAX_BATCH_KEYS: usize = 127;
/// Bytes of keys and values a batch may carry: etcd's 1.5 MiB request limit, less room for
/// the comparisons and the request's framing.
pub const MAX_BATCH_BYTES: usize = 1_400 * 1024;
/// Rows per range read of a scan.
const SCAN_PAGE: i64 = 256;
/// The byte after `prefix/` under which apply markers live (no space has it).
const MARKER_BYTE: u8 = 0xFF;

/// The shared spaces of one vault (one `prefix`) in etcd. See the module doc.
#[derive(Debug)]
pub struct EtcdState {
    /// What reads need, shared with the scans in progress.
    reader: Arc<Reader>,
    /// This node's apply marker key.
    marker: Vec<u8>,
    /// This node's id.
    node_id: String,
    /// Serialises applies and holds the marker's state.
    writes: Mutex<Writes>,
}

#[derive(Debug)]
struct Reader {
    members: Members,
    /// `prefix | "/"`.
    root: Vec<u8>,
    /// Mod revisions last seen, by raw key (space byte first), of rows that exist.
    seen: Mutex<HashMap<Vec<u8>, i64>>,
}

#[derive(Debug)]
struct Writes {
    /// The marker's mod revision as this handle last left it (0: absent).
    marker_revision: i64,
    /// Marker values of attempts sent since, none known to be applied or not (a batch or
    /// fences in doubt), with the raw keys the batch changes.
    in_doubt: Option<InDoubt>,
}

#[derive(Debug)]
struct InDoubt {
    batch_attempts: Vec<[u8; 16]>,
    fences: Vec<[u8; 16]>,
    keys: Vec<Vec<u8>>,
}

/// How an attempt in doubt turned out.
enum Settled {
    /// One of the batch's attempts was applied, at this revision.
    Applied(i64),
    /// None was, and none can be any more.
    NotApplied,
}

impl EtcdState {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A handle on the vault under `config.prefix` (no request is made until the first read or
    /// write, apart from reading where this node's marker stands).
    pub fn open(config: &EtcdConfig, timing: Timing) -> Result<EtcdState, StorageError> {
        let members = Members::new(config, timing)?;
        let mut root = config.prefix.as_bytes().to_vec();
        root.push(b'/');
        let mut marker = root.clone();
        marker.push(MARKER_BYTE);
        marker.extend_from_slice(b"applied/");
        marker.extend_from_slice(config.node_id.as_str().as_bytes());
        let state = EtcdState {
            reader: Arc::new(Reader {
                members,
                root,
                seen: Mutex::default(),
            }),
            marker,
            node_id: config.node_id.as_str().to_owned(),
            writes: Mutex::new(Writes {
                marker_revision: 0,
                in_doubt: None,
            }),
        };
        let marker = state.read_marker().map_err(Failure::into_storage)?;
        state.lock_writes().marker_revision = marker.map_or(0, |(_, revision)| revision);
        Ok(state)
    }

    /// The mod revision at which this handle last read or wrote raw key `raw` (space byte
    /// first), if it holds one: a watched change older than it is one this node has seen
    /// superseded.
    pub fn seen_revision(&self, raw: &[u8]) -> Option<i64> {
        self.lock_seen().get(raw).copied()
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, Writes> {
        // A panic while holding it leaves `Writes` whole (each field is replaced whole).
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn members(&self) -> &Members {
        &self.reader.members
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, i64>> {
        self.reader.lock_seen()
    }

    fn etcd_key(&self, raw: &[u8]) -> Vec<u8> {
        self.reader.etcd_key(raw)
    }

    /// The marker's value and mod revision, if it exists.
    fn read_marker(&self) -> Result<Option<(Vec<u8>, i64)>, Failure> {
        let marker = self.marker.clone();
        let response = self.members().call(move |mut client| {
            let marker = marker.clone();
            async move { client.get(marker, None).await }
        })?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Sends one attempt of a transaction that puts marker value `id` after `compares` and
    /// `ops`: `Ok(Some(revision))` applied, `Ok(None)` a comparison failed.
    fn attempt(
        &self,
        marker_revision: i64,
        compares: &[Compare],
        ops: &[TxnOp],
        id: [u8; 16],
    ) -> Result<Option<i64>, Failure> {
        let mut compares = compares.to_vec();
        compares.push(Compare::mod_revision(
            self.marker.clone(),
            CompareOp::Equal,
            marker_revision,
        ));
        let mut ops = ops.to_vec();
        ops.push(TxnOp::put(self.marker.clone(), id.to_vec(), None));
        let txn = Txn::new().when(compares).and_then(ops);
        let response = self
            .members()
            .once(&move |mut client: etcd_client::Client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(response.succeeded().then_some(revision))
    }

    /// Settles what `writes.in_doubt` holds, within the deadline of one request per step.
    fn settle(&self, writes: &mut Writes) -> Result<Settled, StorageError> {
        let Some(doubt) = writes.in_doubt.as_mut() else {
            return Ok(Settled::NotApplied);
        };
        let start = std::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < self.members_deadline() {
            let fence = random_id()?;
            doubt.fences.push(fence);
            match self.attempt(writes.marker_revision, &[], &[], fence) {
                Ok(Some(revision)) => {
                    writes.marker_revision = revision;
                    writes.in_doubt = None;
                    return Ok(Settled::NotApplied);
                }
                Ok(None) => {
                    // The marker moved: one attempt (of the batch or a fence) was applied.
                    let (value, revision) = match self.read_marker() {
                        Ok(Some(found)) => found,
                        Ok(None) => {
                            return Err(StorageError::other(
                                "this node's apply marker in etcd was removed",
                            ));
                        }
                        Err(e) => {
                            last = format!("{e:?}");
                            continue;
                        }
                    };
                    writes.marker_revision = revision;
                    let applied = doubt.batch_attempts.iter().any(|a| a[..] == value[..]);
                    let fenced = doubt.fences.iter().any(|f| f[..] == value[..]);
                    let keys = std::mem::take(&mut doubt.keys);
                    writes.in_doubt = None;
                    return match (applied, fenced) {
                        (true, _) => Ok(Settled::Applied(revision)),
                        (false, true) => Ok(Settled::NotApplied),
                        (false, false) => {
                            // Another process writes this node's marker: two nodes share an id.
                            for k in keys {
                                self.lock_seen().remove(&k);
                            }
                            Err(StorageError::other(
                                "another process writes with this node's id in etcd",
                            ))
                        }
                    };
                }
                Err(Failure::Refused(why)) => return Err(Failure::Refused(why).into_storage()),
                Err(Failure::Unreachable(why)) => last = why,
            }
        }
        Err(Failure::Unreachable(last).into_storage())
    }

    fn members_deadline(&self) -> std::time::Duration {
        self.members().deadline()
    }
}

impl Reader {
    fn lock_seen(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, i64>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The etcd key of raw key `raw` (space byte first).
    fn etcd_key(&self, raw: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.root.len() + raw.len());
        k.extend_from_slice(&self.root);
        k.extend_from_slice(raw);
        k
    }

    /// The etcd key just past `space`'s range.
    fn space_end(&self, space: Space) -> Vec<u8> {
        self.etcd_key(&[space as u8 + 1])
    }

    /// The id of etcd key `k` of `space` (its raw key without the root and the space byte).
    fn id_of(&self, k: &[u8]) -> Vec<u8> {
        k.get(self.root.len() + 1..).unwrap_or_default().to_vec()
    }

    /// Remembers that raw key `raw` exists at `revision` (a later revision never gives way to an
    /// earlier one, which a slow scan could bring).
    fn saw(&self, raw: Vec<u8>, revision: i64) {
        let mut seen = self.lock_seen();
        let at = seen.entry(raw).or_insert(revision);
        *at = (*at).max(revision);
    }

    /// Reads `space`'s rows in `[from, to)` of etcd keys, `limit` of them, ascending or not.
    fn range(
        &self,
        space: Space,
        from: Vec<u8>,
        to: Vec<u8>,
        limit: i64,
        order: SortOrder,
    ) -> Result<Vec<Item>, StorageError> {
        let options = GetOptions::new()
            .with_range(to)
            .with_limit(limit)
            .with_sort(SortTarget::Key, order);
        let kvs = self
            .members
            .call(move |mut client| {
                let from = from.clone();
                let options = options.clone();
                async move { client.get(from, Some(options)).await }
            })
            .map_err(Failure::into_storage)?;
        let mut rows = Vec::with_capacity(kvs.kvs().len());
        for kv in kvs.kvs() {
            let id = self.id_of(kv.key());
            self.saw(key(space, &id), kv.mod_revision());
            rows.push((id, kv.value().to_vec()));
        }
        Ok(rows)
    }
}

/// 16 random bytes: a marker value no other attempt has.
fn random_id() -> Result<[u8; 16], StorageError> {
    let mut id = [0u8; 16];
    SysRng
        .try_fill_bytes(&mut id)
        .map_err(|e| StorageError::other(format!("the OS random number generator failed: {e}")))?;
    Ok(id)
}

impl SharedState for EtcdState {
    fn get(&self, space: Space, id: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let raw = key(space, id);
        let k = self.etcd_key(&raw);
        let response = self
            .members()
            .call(move |mut client| {
                let k = k.clone();
                async move { client.get(k, None).await }
            })
            .map_err(Failure::into_storage)?;
        match response.kvs().first() {
            Some(kv) => {
                self.reader.saw(raw, kv.mod_revision());
                Ok(Some(kv.value().to_vec()))
            }
            None => {
                self.lock_seen().remove(&raw);
                Ok(None)
            }
        }
    }

    fn apply(&self, batch: &Batch) -> Result<(), StorageError> {
        // The last change to a key wins; etcd refuses a key twice in one transaction.
        let mut changes: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for (k, v) in batch.changes() {
            changes.insert(k, v);
        }
        if changes.is_empty() {
            return Ok(());
        }
        let bytes: usize = changes
            .iter()
            .map(|(k, v)| self.reader.root.len() + k.len() + v.map_or(0, <[u8]>::len))
            .sum();
        if changes.len() > MAX_BATCH_KEYS || bytes > MAX_BATCH_BYTES {
            return Err(StorageError::other(format!(
                "a batch of {} keys and {bytes} bytes is larger than one etcd transaction \
                 takes ({MAX_BATCH_KEYS} keys, {MAX_BATCH_BYTES} bytes); it was not applied",
                changes.len()
            )));
        }
        let mut writes = self.lock_writes();
        if writes.in_doubt.is_some() {
            match self.settle(&mut writes)? {
                Settled::Applied(_) => tracing::error!(
                    "an etcd write reported as failed had been applied (its member failed \
                     before answering and etcd stayed unreachable past the deadline)"
                ),
                Settled::NotApplied => {}
            }
        }
        let mut compared: BTreeMap<&[u8], i64> = BTreeMap::new();
        {
            let seen = self.lock_seen();
            for k in changes.keys().copied().chain(batch.expected_unchanged()) {
                compared.insert(k, seen.get(k).copied().unwrap_or(0));
            }
        }
        let compares: Vec<Compare> = compared
            .iter()
            .map(|(k, revision)| {
                Compare::mod_revision(self.etcd_key(k), CompareOp::Equal, *revision)
            })
            .collect();
        let ops: Vec<TxnOp> = changes
            .iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(self.etcd_key(k), v.to_vec(), None),
                None => TxnOp::delete(self.etcd_key(k), None),
            })
            .collect();
        let keys: Vec<Vec<u8>> = changes.keys().map(|k| k.to_vec()).collect();
        let start = std::time::Instant::now();
        let mut last = String::from("no attempt");
        let outcome = loop {
            if start.elapsed() >= self.members_deadline() {
                break Err(Failure::Unreachable(last).into_storage());
            }
            let id = random_id()?;
            match self.attempt(writes.marker_revision, &compares, &ops, id) {
                Ok(Some(revision)) => break Ok(revision),
                Ok(None) if writes.in_doubt.is_none() => break Err(StorageError::other(Conflict)),
                Ok(None) => match self.settle(&mut writes)? {
                    // An earlier attempt in doubt was applied after all.
                    Settled::Applied(revision) => break Ok(revision),
                    Settled::NotApplied => break Err(StorageError::other(Conflict)),
                },
                Err(Failure::Refused(why)) if writes.in_doubt.is_none() => {
                    break Err(Failure::Refused(why).into_storage());
                }
                Err(Failure::Refused(why)) | Err(Failure::Unreachable(why)) => {
                    last = why;
                    let doubt = writes.in_doubt.get_or_insert_with(|| InDoubt {
                        batch_attempts: Vec::new(),
                        fences: Vec::new(),
                        keys: keys.clone(),
                    });
                    doubt.batch_attempts.push(id);
                    // Settle before sending again: the same batch twice could apply twice.
                    match self.settle(&mut writes) {
                        Ok(Settled::Applied(revision)) => break Ok(revision),
                        Ok(Settled::NotApplied) => continue,
                        // Still in doubt: `writes.in_doubt` keeps it for the next write.
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        match outcome {
            Ok(revision) => {
                writes.marker_revision = revision;
                let mut seen = self.lock_seen();
                for (k, v) in &changes {
                    match v {
                        Some(_) => seen.insert(k.to_vec(), revision),
                        None => seen.remove(*k),
                    };
                }
                Ok(())
            }
            Err(e) => {
                if writes.in_doubt.is_some() {
                    // What these rows hold is unknown: a write to one must read it first.
                    let mut seen = self.lock_seen();
                    for k in &keys {
                        seen.remove(k);
                    }
                }
                Err(e)
            }
        }
    }

    fn max_batch_keys(&self) -> Option<usize> {
        Some(MAX_BATCH_KEYS)
    }

    fn snapshot(&self) -> Result<SharedSnapshot, StorageError> {
        self.snapshot_at_revision()
    }

    fn scan_from(&self, space: Space, start: &[u8]) -> Scan {
        Box::new(Pages {
            reader: self.reader.clone(),
            space,
            next: Some(self.etcd_key(&key(space, start))),
            rows: Vec::new().into_iter(),
        })
    }

    fn floor(&self, space: Space, id: &[u8]) -> Result<Option<Item>, StorageError> {
        let mut to = self.etcd_key(&key(space, id));
        to.push(0);
        let from = self.etcd_key(&[space as u8]);
        Ok(self
            .reader
            .range(space, from, to, 1, SortOrder::Descend)?
            .into_iter()
            .next())
    }

    fn last(&self, space: Space) -> Result<Option<Item>, StorageError> {
        let from = self.etcd_key(&[space as u8]);
        Ok(self
            .reader
            .range(
                space,
                from,
                self.reader.space_end(space),
                1,
                SortOrder::Descend,
            )?
            .into_iter()
            .next())
    }
}

/// A scan: range reads of [`SCAN_PAGE`] rows, each from just past the last row of the one
/// before. Each row is the value it held when its page was read; a row that exists throughout
/// is in some page, since pages cover the range without gaps.
struct Pages {
    reader: Arc<Reader>,
    space: Space,
    /// The etcd key the next page starts at; `None` once the range is done or failed.
    next: Option<Vec<u8>>,
    rows: std::vec::IntoIter<Item>,
}

impl Iterator for Pages {
    type Item = Result<Item, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.rows.next() {
            return Some(Ok(row));
        }
        let from = self.next.take()?;
        let end = self.reader.space_end(self.space);
        match self
            .reader
            .range(self.space, from, end, SCAN_PAGE, SortOrder::Ascend)
        {
            Err(e) => Some(Err(e)),
            Ok(rows) => {
                if rows.len() as i64 == SCAN_PAGE {
                    // Invariant: a full page has a last row.
                    let (id, _) = rows.last().expect("a full page has rows");
                    let mut after = self.reader.etcd_key(&key(self.space, id));
                    after.push(0);
                    self.next = Some(after);
                }
                self.rows = rows.into_iter();
                self.rows.next().map(Ok)
            }
        }
    }
}
