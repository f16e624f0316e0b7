//! The shared rows of a cluster vault for its backup and restore: read whole at one etcd
//! revision, and written back into a prefix that held nothing.
//!
//! # Reading at one revision
//! [`SharedState::snapshot`](crate::storage::SharedState::snapshot) learns the store's current revision `R` and then reads every shared
//! space page by page, each page a range read *at revision `R`*, so the rows are exactly those
//! of one instant however long the read takes and whatever other nodes write meanwhile (a
//! scan in the ordinary sense is not: `Pages` reads each page at its own time). A page asks
//! for `PAGE` rows; etcd keeps each value under its 1.5 MiB request limit, but a page of
//! large values could still pass the client's 4 MiB message limit, which etcd refuses, so a
//! refused page is asked again with half the rows, down to one. If etcd compacts `R` away
//! before the last page is read, the read fails (etcd: "required revision has been
//! compacted") and the backup with it: run it again.
//!
//! # Writing into an empty prefix
//! A restore first *claims* the prefix: it puts `P/0xFF "restore"` (a value the vault makes,
//! naming the backup: `vault/cluster_backup.rs`) in a transaction that requires that key and
//! `Meta/format` absent, after having checked that nothing at all is under the prefix; a
//! prefix that holds a claim already answers with it. Then it writes the rows in transactions of
//! at most [`MAX_BATCH_KEYS`] keys and [`MAX_BATCH_BYTES`] bytes, `Meta/format` last, alone:
//! a node opens only a prefix that has it, so none can start on a half-written one. The puts
//! carry no comparison (the claim already keeps others out), so sending one again after a
//! member failed changes nothing; a restore cut short is finished by running it again with
//! the same backup, which finds its own claim.

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::members::Failure;
use super::{EtcdState, MARKER_BYTE, MAX_BATCH_BYTES, MAX_BATCH_KEYS, Reader};
use crate::storage::shared::SharedSnapshot;
use crate::storage::space::{Item, Space, StorageError, key};

/// Rows asked for per page of a snapshot.
const PAGE: i64 = 256;
/// The claim's name after `P/0xFF`.
const CLAIM: &[u8] = b"restore";
/// `Meta/format`'s id: the row a node looks for before it opens.
const FORMAT_ID: &[u8] = b"format";

/// What a restore found under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The prefix held nothing and is now this restore's: write the shared rows.
    Claimed,
    /// A restore had claimed the prefix already, with this claim value; `complete` once it
    /// wrote the last row (`Meta/format`).
    Found {
        /// The claim's value, as that restore put it.
        claim: Vec<u8>,
        /// Whether its shared rows are all written.
        complete: bool,
    },
}

impl EtcdState {
    /// Every shared row at the store's current revision (see the module doc); what
    /// [`SharedState::snapshot`](crate::storage::SharedState::snapshot) answers.
    pub(super) fn snapshot_at_revision(&self) -> Result<SharedSnapshot, StorageError> {
        let probe = self.reader.etcd_key(&[Space::Meta as u8]);
        let response = self
            .members()
            .call(move |mut client| {
                let probe = probe.clone();
                async move {
                    client
                        .get(probe, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .map_err(Failure::into_storage)?;
        let revision = response.header().map_or(0, |h| h.revision());
        if revision <= 0 {
            return Err(StorageError::other("etcd answered with no revision"));
        }
        let reader = self.reader.clone();
        let rows = Space::ALL
            .into_iter()
            .filter(|space| space.is_shared())
            .flat_map(move |space| AtRevision {
                reader: reader.clone(),
                space,
                revision,
                next: Some(reader.etcd_key(&[space as u8])),
                limit: PAGE,
                rows: Vec::new().into_iter(),
            });
        Ok(SharedSnapshot {
            // Positive, just checked.
            revision: revision as u64,
            rows: Box::new(rows),
        })
    }

    /// Claims the prefix for a restore, with value `claim` (see the module doc); what an
    /// earlier restore's claim holds if there is one. Refused if the prefix holds anything
    /// else.
    pub fn claim_restore(&self, claim: &[u8]) -> Result<Claim, StorageError> {
        let claim_key = self.claim_key();
        let format_key = self.reader.etcd_key(&key(Space::Meta, FORMAT_ID));
        for _ in 0..2 {
            if let Some(found) = self.get_raw_key(claim_key.clone())? {
                let complete = self.get_raw_key(format_key.clone())?.is_some();
                return Ok(Claim::Found {
                    claim: found,
                    complete,
                });
            }
            if !self.prefix_is_empty()? {
                return Err(StorageError::other(
                    "the prefix holds a vault or other data; restore into a new prefix",
                ));
            }
            let txn = Txn::new()
                .when(vec![
                    Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(format_key.clone(), CompareOp::Equal, 0),
                ])
                .and_then(vec![TxnOp::put(claim_key.clone(), claim.to_vec(), None)]);
            let response = self
                .members()
                .call(move |mut client| {
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                })
                .map_err(Failure::into_storage)?;
            if response.succeeded() {
                return Ok(Claim::Claimed);
            }
            // Another restore or an init got there first: look again at what it left.
        }
        Err(StorageError::other(
            "the prefix changed while the restore claimed it; restore into a new prefix",
        ))
    }

    /// Writes restored shared rows (raw keys, space byte first) under the prefix, in
    /// transactions of at most [`MAX_BATCH_KEYS`] keys and [`MAX_BATCH_BYTES`] bytes, with
    /// `Meta/format` held back and written last, alone. Call only after
    /// [`EtcdState::claim_restore`] claimed the prefix.
    pub fn write_restored(
        &self,
        rows: impl IntoIterator<Item = Result<Item, StorageError>>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, StorageError> {
        let format_key = key(Space::Meta, FORMAT_ID);
        let mut format = None;
        let mut ops: Vec<TxnOp> = Vec::new();
        let mut bytes = 0usize;
        let mut written = 0u64;
        for row in rows {
            let (raw, value) = row?;
            if raw == format_key {
                format = Some(value);
                continue;
            }
            let size = self.reader.root.len() + raw.len() + value.len();
            if !ops.is_empty() && (ops.len() >= MAX_BATCH_KEYS || bytes + size > MAX_BATCH_BYTES) {
                written += ops.len() as u64;
                self.put_all(std::mem::take(&mut ops))?;
                bytes = 0;
                progress(written);
            }
            bytes += size;
            ops.push(TxnOp::put(self.reader.etcd_key(&raw), value, None));
        }
        if !ops.is_empty() {
            written += ops.len() as u64;
            self.put_all(ops)?;
        }
        let format = format.ok_or_else(|| {
            StorageError::other("the backup holds no vault format row; it holds no vault")
        })?;
        self.put_all(vec![TxnOp::put(
            self.reader.etcd_key(&format_key),
            format,
            None,
        )])?;
        progress(written + 1);
        Ok(written + 1)
    }

    fn put_all(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        let txn = Txn::new().and_then(ops);
        // Plain puts with no comparison: sent again after a member failed, they change nothing.
        self.members()
            .call(move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .map_err(Failure::into_storage)?;
        Ok(())
    }

    fn claim_key(&self) -> Vec<u8> {
        let mut k = self.reader.root.clone();
        k.push(MARKER_BYTE);
        k.extend_from_slice(CLAIM);
        k
    }

    fn get_raw_key(&self, k: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        let response = self
            .members()
            .call(move |mut client| {
                let k = k.clone();
                async move { client.get(k, None).await }
            })
            .map_err(Failure::into_storage)?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn prefix_is_empty(&self) -> Result<bool, StorageError> {
        let from = self.reader.root.clone();
        let mut to = from.clone();
        // The root ends in `/`; the key just past every key under it ends in `0`.
        if let Some(last) = to.last_mut() {
            *last += 1;
        }
        let response = self
            .members()
            .call(move |mut client| {
                let (from, to) = (from.clone(), to.clone());
                let options = GetOptions::new().with_range(to).with_count_only();
                async move { client.get(from, Some(options)).await }
            })
            .map_err(Failure::into_storage)?;
        Ok(response.count() == 0)
    }
}

/// One shared space read page by page at one revision.
struct AtRevision {
    reader: std::sync::Arc<Reader>,
    space: Space,
    revision: i64,
    /// The etcd key the next page starts at; `None` once the space is done or failed.
    next: Option<Vec<u8>>,
    limit: i64,
    rows: std::vec::IntoIter<Item>,
}

impl AtRevision {
    fn page(&self, from: Vec<u8>, limit: i64) -> Result<Vec<Item>, Failure> {
        let options = GetOptions::new()
            .with_range(self.reader.space_end(self.space))
            .with_limit(limit)
            .with_revision(self.revision)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let response = self.reader.members.call(move |mut client| {
            let from = from.clone();
            let options = options.clone();
            async move { client.get(from, Some(options)).await }
        })?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                let raw = kv.key().get(self.reader.root.len()..).unwrap_or_default();
                (raw.to_vec(), kv.value().to_vec())
            })
            .collect())
    }
}

impl Iterator for AtRevision {
    type Item = Result<Item, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.rows.next() {
            return Some(Ok(row));
        }
        let from = self.next.take()?;
        let rows = loop {
            match self.page(from.clone(), self.limit) {
                Ok(rows) => break rows,
                // Too large an answer is refused: ask for fewer rows (see the module doc).
                Err(Failure::Refused(_)) if self.limit > 1 => self.limit /= 2,
                Err(e) => return Some(Err(e.into_storage())),
            }
        };
        if rows.len() as i64 == self.limit {
            // Invariant: a full page has a last row.
            let (raw, _) = rows.last().expect("a full page has rows");
            let mut after = self.reader.etcd_key(raw);
            after.push(0);
            self.next = Some(after);
        }
        self.rows = rows.into_iter();
        self.rows.next().map(Ok)
    }
}
