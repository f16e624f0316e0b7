//! The audit tree's node file: every perfect-subtree hash of the log, 32 bytes each, in the
//! order the subtrees complete (`DIR/audit/tree`).
//!
//! Appending leaf `n - 1` (the log reaching size `n`) completes the leaf and then one subtree
//! per trailing zero bit of `n`, levels `0..=tz(n)`, and they are appended in that order. So
//! after `n` leaves the file holds `2n - popcount(n)` hashes, and the subtree `(level, index)`,
//! which completes when the size reaches `m = (index + 1) << level`, is hash number
//! `2(m - 1) - popcount(m - 1) + level`. A group's nodes are one `pwrite` at the end.
//!
//! The file is written without a sync: everything in it is derived from the entries. The store
//! records how far it was last synced (`audit-tree-synced`, after an `fdatasync` of the file),
//! and the nodes after that are computed again from the entries at open. Entries are archived
//! only up to a synced size, so the entries needed for that are always live.
//!
//! Why not sled: the tree gains about two hashes per entry, and a sled insert costs about as
//! much CPU as the rest of a verify; the layout is fixed arithmetic, so it is written here.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::merkle::Hash;
use crate::error::io;
use crate::{Error, Result};

/// The file's name in the audit directory.
pub const TREE_FILE: &str = "tree";
const HASH: u64 = 32;

/// Hashes in the file of a log of `size` entries.
pub fn nodes_in(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// The hash number of subtree `(level, index)`; `None` if it is beyond any possible log.
pub fn position(level: u8, index: u64) -> Option<u64> {
    let size = index.checked_add(1)?.checked_shl(u32::from(level))?;
    if size >> level != index + 1 {
        return None;
    }
    let before = size - 1;
    before
        .checked_mul(2)?
        .checked_sub(u64::from(before.count_ones()))?
        .checked_add(u64::from(level))
}

/// The node file of one log.
#[derive(Debug)]
pub struct TreeFile {
    path: PathBuf,
    file: File,
}

impl TreeFile {
    /// Opens (creating if missing, mode 0600) the node file in `dir`.
    pub fn open(dir: &Path) -> Result<TreeFile> {
        let path = dir.join(TREE_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(|| format!("opening {}", path.display())))?;
        Ok(TreeFile { path, file })
    }

    /// The hash of subtree `(level, index)`.
    pub fn node(&self, level: u8, index: u64) -> Result<Hash> {
        let missing = || missing_node(level, index);
        let at = position(level, index).ok_or_else(missing)?;
        let mut hash = [0u8; 32];
        match self.file.read_exact_at(&mut hash, at * HASH) {
            Ok(()) => Ok(hash),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(missing()),
            Err(e) => Err(io(|| format!("reading {}", self.path.display()))(e)),
        }
    }

    /// Hashes in the file now.
    pub fn hashes(&self) -> Result<u64> {
        let bytes = self
            .file
            .metadata()
            .map_err(io(|| format!("reading {}", self.path.display())))?
            .len();
        Ok(bytes / HASH)
    }

    /// Writes `hashes` (32 bytes each) from hash number `first` on.
    pub fn write(&self, first: u64, hashes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(hashes, first * HASH)
            .map_err(io(|| format!("writing {}", self.path.display())))
    }

    /// Cuts the file to `nodes` hashes.
    pub fn cut(&self, nodes: u64) -> Result<()> {
        self.file
            .set_len(nodes * HASH)
            .map_err(io(|| format!("cutting {}", self.path.display())))
    }

    /// Makes what was written durable.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(io(|| format!("syncing {}", self.path.display())))
    }

    /// Calls `f` with every subtree of a log of `size` entries, as `(level, index, hash)`, in
    /// file order.
    pub fn for_each(&self, size: u64, f: impl FnMut(u8, u64, &Hash) -> Result<()>) -> Result<()> {
        self.for_each_from(0, size, f)
    }

    /// [`TreeFile::for_each`] for the subtrees that entries `[from, size)` complete (one
    /// sequential read).
    pub fn for_each_from(
        &self,
        from: u64,
        size: u64,
        mut f: impl FnMut(u8, u64, &Hash) -> Result<()>,
    ) -> Result<()> {
        let mut reader = self.reader_at(nodes_in(from))?;
        let mut hash = [0u8; 32];
        for n in from + 1..=size {
            for level in 0..=n.trailing_zeros() as u8 {
                reader.read_exact(&mut hash).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        Error::Corrupt(format!("the audit tree ends before {size} entries"))
                    }
                    _ => io(|| format!("reading {}", self.path.display()))(e),
                })?;
                f(level, (n >> level) - 1, &hash)?;
            }
        }
        Ok(())
    }

    /// The stored leaf hashes of entries `from, from + 1, ...` in order, read in one buffered
    /// pass over the file (an export wants one per entry; a `pread` each cost more than the
    /// rest of the entry's line).
    pub fn leaves(&self, from: u64) -> Result<Leaves> {
        let at = position(0, from).ok_or_else(|| missing_node(0, from))?;
        Ok(Leaves {
            path: self.path.clone(),
            reader: self.reader_at(at)?,
            next: from,
        })
    }

    /// A buffered reader of the file from hash number `hash` on, on a handle of its own (the
    /// shared one's offset is never used).
    fn reader_at(&self, hash: u64) -> Result<BufReader<File>> {
        use std::io::{Seek, SeekFrom};
        let reading = || format!("reading {}", self.path.display());
        let mut file = File::open(&self.path).map_err(io(reading))?;
        file.seek(SeekFrom::Start(hash * HASH))
            .map_err(io(reading))?;
        Ok(BufReader::with_capacity(1 << 16, file))
    }
}

fn missing_node(level: u8, index: u64) -> Error {
    Error::Corrupt(format!("audit tree node ({level}, {index}) is missing"))
}

/// A reader of consecutive leaf hashes ([`TreeFile::leaves`]).
#[derive(Debug)]
pub struct Leaves {
    path: PathBuf,
    reader: BufReader<File>,
    /// The entry whose leaf is read next.
    next: u64,
}

impl Leaves {
    /// The stored leaf hash of the next entry (`from` first).
    pub fn next_leaf(&mut self) -> Result<Hash> {
        let seq = self.next;
        let mut hash = [0u8; 32];
        self.reader
            .read_exact(&mut hash)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => missing_node(0, seq),
                _ => io(|| format!("reading {}", self.path.display()))(e),
            })?;
        // Past the subtrees that entry `seq` completed, to the next leaf.
        let inner = i64::from((seq + 1).trailing_zeros()) * HASH as i64;
        self.reader
            .seek_relative(inner)
            .map_err(io(|| format!("reading {}", self.path.display())))?;
        self.next += 1;
        Ok(hash)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::merkle::{self, Frontier};

    #[test]
    fn positions_follow_the_order_subtrees_complete() {
        let mut frontier = Frontier::new();
        let mut next = 0u64;
        for i in 0..1000u64 {
            for (level, index, _) in frontier.push(merkle::leaf_hash(&i.to_be_bytes())) {
                assert_eq!(position(level, index), Some(next), "({level}, {index})");
                next += 1;
            }
            assert_eq!(nodes_in(frontier.size()), next);
        }
        assert_eq!(position(63, 1), None);
        assert_eq!(position(1, u64::MAX), None);
        assert_eq!(position(0, 1 << 40), Some(nodes_in(1 << 40)));
        assert_eq!(position(0, u64::MAX - 1), None, "past 2^64 hashes");
    }

    #[test]
    fn for_each_reads_back_what_was_written() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = TreeFile::open(tmp.path()).unwrap();
        let mut frontier = Frontier::new();
        let mut bytes = Vec::new();
        let mut all = Vec::new();
        for i in 0..77u64 {
            for (level, index, hash) in frontier.push(merkle::leaf_hash(&i.to_be_bytes())) {
                bytes.extend_from_slice(&hash);
                all.push((level, index, hash));
            }
        }
        tree.write(0, &bytes).unwrap();
        let mut seen = Vec::new();
        tree.for_each(77, |l, i, h| {
            seen.push((l, i, *h));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, all);
        assert_eq!(
            tree.node(2, 3).unwrap(),
            all[position(2, 3).unwrap() as usize].2
        );
        assert!(matches!(tree.node(7, 0), Err(Error::Corrupt(_))));
        for from in [0, 1, 5, 31, 32, 76] {
            let mut leaves = tree.leaves(from).unwrap();
            for seq in from..77 {
                assert_eq!(
                    leaves.next_leaf().unwrap(),
                    tree.node(0, seq).unwrap(),
                    "{seq}"
                );
            }
            assert!(matches!(leaves.next_leaf(), Err(Error::Corrupt(_))));
        }
        assert!(matches!(
            tree.for_each(78, |_, _, _| Ok(())),
            Err(Error::Corrupt(_))
        ));
    }
}
