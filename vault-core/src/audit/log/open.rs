//! Opening the log: where the store keeps its end and index, the reading of committed
//! entries, the rebuild of the tree file at open, and the moves of older formats (entries in
//! the store, subtree hashes in the store) into the segment and tree files.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::audit::merkle::{self, Frontier, Hash};
use crate::audit::segment::{self, Reader, Segments, Tail};
use crate::audit::tree::{self, TreeFile};
use crate::storage::{Batch, Space, Store};
use crate::{Error, Result};

/// The first live sequence number: entries before it were moved to an archive (u64 BE).
pub(crate) const META_ARCHIVED: &[u8] = b"audit-archived";
/// Where the committed log ends (a [`Tail`]).
pub(crate) const META_TAIL: &[u8] = b"audit-tail";
/// Store keys removed per batch (format-1 entries after their move, archived index entries),
/// so that no commit waits long behind one.
const DROP_CHUNK: usize = 2048;
/// Every this many entries, the index records where the entry sits.
pub(crate) const INDEX_EVERY: u64 = 256;
/// How far the tree file is synced (u64 BE): its nodes up to this size need no rebuilding.
pub(crate) const META_TREE: &[u8] = b"audit-tree-synced";

pub(super) fn meta_u64(store: &Store, name: &[u8]) -> Result<Option<u64>> {
    store
        .get(Space::Local, name)?
        .map(|bytes| decode_meta_u64(name, &bytes))
        .transpose()
}

/// The u64 BE value of meta record `name`.
pub(crate) fn decode_meta_u64(name: &[u8], bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{} is malformed", String::from_utf8_lossy(name))))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The id of subtree `(level, index)` in the store's node space, where formats 1 and 2 kept
/// the tree and backups carry it: level u8 | index u64 BE.
pub(crate) fn node_id(level: u8, index: u64) -> [u8; 9] {
    let mut id = [0u8; 9];
    id[0] = level;
    id[1..].copy_from_slice(&index.to_be_bytes());
    id
}

/// The perfect-subtree hashes that make up `[0, size)`, largest first.
pub(super) fn prefix_hashes(
    size: u64,
    mut get: impl FnMut(u8, u64) -> Result<Hash>,
) -> Result<Vec<Hash>> {
    let mut hashes = Vec::new();
    let mut offset = 0u64;
    for level in (0..64u8).rev() {
        if size & (1 << level) != 0 {
            hashes.push(get(level, offset >> level)?);
            offset += 1 << level;
        }
    }
    Ok(hashes)
}

pub(super) fn seq_of(key: &[u8]) -> Result<u64> {
    let seq: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt("an audit key is malformed".into()))?;
    Ok(u64::from_be_bytes(seq))
}

pub(crate) fn index_value(first: u64, offset: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&first.to_be_bytes());
    v[8..].copy_from_slice(&offset.to_be_bytes());
    v
}

/// Adds entry `bytes` (the next one) to `frontier`, appends the subtree hashes it completes to
/// `nodes` (the tree file's next bytes), and every [`INDEX_EVERY`] entries stages its place
/// (`offset` in the file starting at `file`) in `index`.
pub(super) fn push_entry(
    frontier: &mut Frontier,
    nodes: &mut Vec<u8>,
    index: &mut Batch,
    bytes: &[u8],
    place: Option<(u64, u64)>,
) {
    let seq = frontier.size();
    for (_, _, hash) in frontier.push(merkle::leaf_hash(bytes)) {
        nodes.extend_from_slice(&hash);
    }
    if let Some((file, offset)) = place
        && seq.is_multiple_of(INDEX_EVERY)
    {
        index.insert(
            Space::AuditIndex,
            &seq.to_be_bytes(),
            &index_value(file, offset),
        );
    }
}

/// Copies a format-2 log's subtree hashes from the store into the tree file (the store's
/// copies are removed once the store records the file as synced). Returns `size`.
pub(super) fn move_nodes_to_tree(store: &Store, tree: &TreeFile, size: u64) -> Result<u64> {
    let wanted = tree::nodes_in(size);
    let mut found = 0u64;
    for item in store.scan(Space::AuditNode) {
        let (key, hash) = item?;
        let bad = || Error::Corrupt("an audit tree node is malformed".into());
        // A `node_id`.
        let (&level, index) = key.split_first().ok_or_else(bad)?;
        let index = u64::from_be_bytes(index.try_into().map_err(|_| bad())?);
        if hash.len() != 32 {
            return Err(bad());
        }
        match tree::position(level, index) {
            Some(at) if at < wanted => {
                tree.write(at, &hash)?;
                found += 1;
            }
            _ => {}
        }
    }
    if found != wanted {
        return Err(Error::Corrupt(format!(
            "the audit tree of {size} entries should have {wanted} subtree hashes but the store holds {found}"
        )));
    }
    tree.cut(wanted)?;
    tree.sync()?;
    let mut batch = Batch::default();
    batch.insert(Space::Local, META_TREE, &size.to_be_bytes());
    store.apply(batch)?;
    if size > 0 {
        tracing::info!(entries = size, "moved the audit tree into its node file");
    }
    Ok(size)
}

/// Brings the tree file up to the log: its nodes from `synced` on are computed again from the
/// committed entries, then from the `replayed` ones (taken back past the stored `tail`), and
/// anything past them is cut. The file is then synced and the store records it, with the tail
/// that commits the replayed entries. Returns the frontier and that tail.
pub(super) fn rebuild_tree(
    store: &Store,
    segments: &Segments,
    tree: &TreeFile,
    synced: u64,
    tail: Tail,
    replayed: &[segment::Replayed],
) -> Result<(Frontier, Tail)> {
    if synced > tail.size {
        return Err(Error::Corrupt(format!(
            "the audit tree is recorded as synced to {synced} entries but the log holds {}",
            tail.size
        )));
    }
    let hashes = prefix_hashes(synced, |level, index| tree.node(level, index))?;
    let mut frontier = Frontier::from_parts(synced, hashes)
        .map_err(|e| Error::Corrupt(format!("the audit frontier: {e}")))?;
    let mut nodes = Vec::new();
    let mut index = Batch::default();
    for item in read_range(store, segments, synced, tail.size) {
        let (_, bytes) = item?;
        push_entry(&mut frontier, &mut nodes, &mut index, &bytes, None);
    }
    if frontier.size() != tail.size {
        return Err(Error::Corrupt(format!(
            "audit entries {}..{} are missing",
            frontier.size(),
            tail.size
        )));
    }
    let mut len = tail.len;
    for (offset, bytes) in replayed {
        let place = Some((tail.active, *offset));
        push_entry(&mut frontier, &mut nodes, &mut index, bytes, place);
        len = offset + segment::RECORD_HEADER + bytes.len() as u64;
    }
    let size = frontier.size();
    let tail = Tail { size, len, ..tail };
    if size != synced || tree.hashes()? != tree::nodes_in(size) {
        tree.write(tree::nodes_in(synced), &nodes)?;
        tree.cut(tree::nodes_in(size))?;
        tree.sync()?;
        index.insert(Space::Local, META_TREE, &size.to_be_bytes());
        index.insert(Space::Local, META_TAIL, &tail.encode());
        store.apply(index)?;
    }
    if !replayed.is_empty() {
        tracing::info!(
            entries = replayed.len(),
            "took back the audit entries synced after the store last recorded the log's end"
        );
    }
    Ok((frontier, tail))
}

/// A reader of the committed entries `[from, end)`: it starts in the file holding `from`, at
/// the indexed entry nearest below it if that is in the same file, else at the file's start.
pub(super) fn read_range<'a>(
    store: &Store,
    segments: &'a Segments,
    from: u64,
    end: u64,
) -> Reader<'a> {
    let Some((first, _)) = segments.holding(from) else {
        return Reader::new(segments, from, 0, from, from, end.min(from));
    };
    let indexed = store
        .floor(Space::AuditIndex, &from.to_be_bytes())
        .ok()
        .flatten()
        .and_then(|(key, value)| {
            let at = seq_of(&key).ok()?;
            let value: [u8; 16] = value.as_slice().try_into().ok()?;
            let file = u64::from_be_bytes(value[..8].try_into().ok()?);
            let offset = u64::from_be_bytes(value[8..].try_into().ok()?);
            (file == first && at >= first).then_some((offset, at))
        });
    let (offset, at) = indexed.unwrap_or((0, first));
    Reader::new(segments, first, offset, at, from, end)
}

/// Starts the segment files of a log that has none: a new vault's, or a format-1 vault's,
/// whose entries are in the store. Copies those into the first file and commits it (see
/// [`FirstSegment`]); until that commit the directory counts for nothing, so an interrupted
/// move starts over at the next open. The store's copies are removed afterwards, at open.
pub(super) fn start_segments(store: &Store, dir: &Path) -> Result<Tail> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(crate::error::io(|| {
            format!("removing the unfinished {}", dir.display())
        }))?;
    }
    let mut segment = FirstSegment::create(dir, 0)?;
    for item in store.scan(Space::Audit) {
        let (key, bytes) = item?;
        segment.push(seq_of(&key)?, &bytes)?;
    }
    let tail = segment.commit(store, Batch::default())?;
    if tail.size > 0 {
        tracing::info!(
            entries = tail.size,
            "moved the audit log into its segment files"
        );
    }
    Ok(tail)
}

/// Writes the first segment file of a log from its entries, given in sequence order, then
/// commits its tail and entry index: a format-1 vault's log moved out of the store, or a
/// restored one. Until the commit the file counts for nothing.
pub(crate) struct FirstSegment {
    path: PathBuf,
    out: BufWriter<File>,
    first: u64,
    next: u64,
    len: u64,
    index: Batch,
    record: Vec<u8>,
}

impl FirstSegment {
    /// Creates the file for entries from `first` on in `dir` (made 0700 if missing).
    pub(crate) fn create(dir: &Path, first: u64) -> Result<FirstSegment> {
        crate::datadir::create_private_dir(dir)?;
        let path = dir.join(segment::file_name(first));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(crate::error::io(|| format!("creating {}", path.display())))?;
        Ok(FirstSegment {
            path,
            out: BufWriter::new(file),
            first,
            next: first,
            len: 0,
            index: Batch::default(),
            record: Vec::new(),
        })
    }

    /// The entries written so far: `[first, next)`.
    pub(crate) fn range(&self) -> (u64, u64) {
        (self.first, self.next)
    }

    /// Appends entry `seq`, which must follow the last one.
    pub(crate) fn push(&mut self, seq: u64, bytes: &[u8]) -> Result<()> {
        if seq != self.next {
            return Err(Error::Corrupt(format!(
                "the audit log skips from entry {} to {seq}",
                self.next
            )));
        }
        if seq.is_multiple_of(INDEX_EVERY) {
            self.index.insert(
                Space::AuditIndex,
                &seq.to_be_bytes(),
                &index_value(self.first, self.len),
            );
        }
        self.record.clear();
        segment::frame(&mut self.record, bytes, false);
        self.out
            .write_all(&self.record)
            .map_err(crate::error::io(|| {
                format!("writing {}", self.path.display())
            }))?;
        self.len += self.record.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Syncs the file and its directory, then applies `batch` with the file's index and the
    /// tail naming it.
    pub(crate) fn commit(self, store: &Store, mut batch: Batch) -> Result<Tail> {
        let path = self.path;
        let file = self.out.into_inner().map_err(|e| {
            crate::error::io(|| format!("writing {}", path.display()))(e.into_error())
        })?;
        file.sync_all()
            .map_err(crate::error::io(|| format!("syncing {}", path.display())))?;
        if let Some(dir) = path.parent() {
            crate::datadir::sync_dir(dir)?;
        }
        let tail = Tail {
            size: self.next,
            active: self.first,
            len: self.len,
        };
        batch.extend(self.index);
        batch.insert(Space::Local, META_TAIL, &tail.encode());
        store.apply(batch)?;
        Ok(tail)
    }
}

/// Removes, a chunk at a time, the store's keys of `space` below `upto` (keys that are
/// sequence numbers).
pub(super) fn remove_keys_below(store: &Store, space: Space, upto: u64) -> Result<u64> {
    remove_keys_while(store, space, |key| Ok(seq_of(key)? < upto))
}

/// Removes, a chunk at a time, the store's keys of `space` from its first on, as long as
/// `doomed` says so; returns how many.
pub(crate) fn remove_keys_while(
    store: &Store,
    space: Space,
    doomed: impl Fn(&[u8]) -> Result<bool>,
) -> Result<u64> {
    let mut removed = 0;
    loop {
        let mut batch = Batch::default();
        let mut n = 0;
        for item in store.scan(space) {
            let (key, _) = item?;
            if n == DROP_CHUNK || !doomed(&key)? {
                break;
            }
            batch.remove(space, &key);
            n += 1;
        }
        if n == 0 {
            return Ok(removed);
        }
        store.apply(batch)?;
        removed += n as u64;
    }
}
