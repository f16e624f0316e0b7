//! Audit segment files: the entries' canonical bytes, appended in sequence order.
//!
//! The log lives in `DIR/audit/`, one file per segment, named by the sequence number of its
//! first entry (20 decimal digits, `.seg`). A file is a run of records:
//!
//! ```text
//! R (1 bit) | len (31 bits): u32 BE | crc32(bytes): u32 BE (CRC-32/ISO-HDLC) | bytes (the entry's canonical JSON)
//! ```
//!
//! Only the last file (the active one) grows. What of it is committed is not in the file but in
//! the store (the *tail*: the log's size, the active file and its committed length), which the
//! writer updates with every group that changes state, and about once a second otherwise.
//! A record with `R` set ([`REPLAYABLE`]) belongs to a group that changed nothing but the log,
//! which its own `fdatasync` committed; past the stored tail, such whole records are taken back
//! at open. Anything else past the tail is a group that never committed (a crash between the
//! file's fdatasync and the store's flush, or a failed store write): it is cut off at open, and
//! after a failed write at once. Files are never rewritten; archiving removes whole files,
//! which is what gives the disk space back.
//!
//! Why not sled: every entry inserted into sled cost about as much CPU as the rest of a verify,
//! and sled 0.34 does not give the space of removed entries back, so an archive freed nothing.
//! The format is ours, small and append-only, so it is written here rather than taken from a
//! crate.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::datadir::{create_private_dir, sync_dir};
use crate::error::io;
use crate::{Error, Result};

/// Largest entry a segment accepts (entries are well under a kilobyte; this bounds a corrupt
/// length field).
const MAX_RECORD: u32 = 1 << 20;
/// Bytes before a record's entry bytes.
pub const RECORD_HEADER: u64 = 8;
/// The top bit of a record's length: the entry's group changed nothing but the log (a verify
/// without a credit spend, say), so the store batch that commits it holds only what the log
/// can rebuild. Such groups are not waited on in the store: past the committed tail, whole
/// replayable records are taken back at open instead of cut off (see [`Segments::open`]).
pub const REPLAYABLE: u32 = 1 << 31;

/// Where the committed log ends: the store keeps it (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Entries in the log (the next sequence number).
    pub size: u64,
    /// The first sequence number of the active file.
    pub active: u64,
    /// The committed length of the active file, in bytes.
    pub len: u64,
}

impl Tail {
    /// The tail of an empty log.
    pub const EMPTY: Tail = Tail {
        size: 0,
        active: 0,
        len: 0,
    };

    /// `size | active | len`, each u64 BE.
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.size.to_be_bytes());
        out[8..16].copy_from_slice(&self.active.to_be_bytes());
        out[16..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// The inverse of [`Tail::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Tail> {
        let bytes: [u8; 24] = bytes
            .try_into()
            .map_err(|_| Error::Corrupt("the audit log's tail record is malformed".into()))?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(w)
        };
        Ok(Tail {
            size: word(0),
            active: word(8),
            len: word(16),
        })
    }
}

/// A record taken back past the stored tail at open: its offset in the active file and its
/// entry bytes.
pub type Replayed = (u64, Vec<u8>);

/// Appends one record for `entry` to `buf`; `replayable` marks an entry that changed nothing
/// but the log (see [`REPLAYABLE`]).
pub fn frame(buf: &mut Vec<u8>, entry: &[u8], replayable: bool) {
    // Entries are built by this crate and far below MAX_RECORD.
    let len = u32::try_from(entry.len()).unwrap_or(MAX_RECORD);
    let len = if replayable { len | REPLAYABLE } else { len };
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(entry).to_be_bytes());
    buf.extend_from_slice(entry);
}

/// The name of the file whose first entry is `first`.
pub(crate) fn file_name(first: u64) -> String {
    format!("{first:020}.seg")
}

#[derive(Debug)]
struct Active {
    first: u64,
    /// Shared with a sync in progress, which must not hold the lock while it waits.
    file: Arc<File>,
    /// The committed length.
    len: u64,
    /// Where the records written but not yet committed end (`len` when there are none).
    written: u64,
    /// How far the file is allocated (`fallocate`, reading as zeros past `written`).
    allocated: u64,
}

/// What [`Segments::sync`] runs instead of `fdatasync` in tests (given the number of the
/// call, from 0): the seam through which they make syncs slow or failing.
#[cfg(test)]
pub(crate) struct SyncHook(pub(crate) Box<dyn Fn(u64) -> std::io::Result<()> + Send + Sync>);

#[cfg(test)]
impl std::fmt::Debug for SyncHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncHook")
    }
}

/// The active file is allocated this much at a time ahead of its records, so that most syncs
/// change neither its size nor its block map (measured here: a sync of an append into
/// allocated space takes about 15 % less time than one that grows the file). Files are cut to
/// their records when the next one starts and at open, so only the active file ever has an
/// allocated tail, and readers never go past the committed records.
const ALLOCATE: u64 = 1 << 20;

/// The segment files of one log.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    /// Every file by its first sequence number (the active one last).
    files: RwLock<BTreeMap<u64, PathBuf>>,
    /// The file being appended to; only the audit writer appends.
    active: Mutex<Active>,
    #[cfg(test)]
    sync_hook: Mutex<Option<Arc<SyncHook>>>,
    #[cfg(test)]
    syncs: std::sync::atomic::AtomicU64,
}

impl Segments {
    /// Opens the files in `dir` (created if missing) for the committed `tail`: removes files
    /// started after it, checks that the active file is not shorter than its committed length,
    /// and takes back the whole replayable records after it that `accept` (given each one's
    /// position past the tail and its entry bytes) agrees to, up to the first that is not one;
    /// the rest is cut off. Returns the files and the records taken back, as their offsets and
    /// entry bytes, which the caller must commit in a new tail.
    pub fn open(
        dir: &Path,
        tail: Tail,
        mut accept: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(Segments, Vec<Replayed>)> {
        create_private_dir(dir)?;
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io(|| format!("reading {}", dir.display())))? {
            let entry = entry.map_err(io(|| format!("reading {}", dir.display())))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            if first > tail.active {
                // Started by a group that never committed.
                fs::remove_file(entry.path())
                    .map_err(io(|| format!("removing {}", entry.path().display())))?;
                continue;
            }
            files.insert(first, entry.path());
        }
        let path = dir.join(file_name(tail.active));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(tail.len == 0)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::Corrupt(format!(
                    "the active audit segment {} is missing",
                    path.display()
                )),
                _ => io(|| format!("opening {}", path.display()))(e),
            })?;
        let on_disk = file
            .metadata()
            .map_err(io(|| format!("reading {}", path.display())))?
            .len();
        if on_disk < tail.len {
            return Err(Error::Corrupt(format!(
                "the audit segment {} holds {on_disk} bytes but {} were committed: entries are lost",
                path.display(),
                tail.len
            )));
        }
        let mut len = tail.len;
        let mut replayed = Vec::new();
        if on_disk > tail.len {
            let mut rest = Vec::new();
            let read = file.try_clone().and_then(|f| {
                use std::io::{Seek, SeekFrom};
                let mut f = f;
                f.seek(SeekFrom::Start(tail.len))?;
                f.read_to_end(&mut rest)
            });
            read.map_err(io(|| format!("reading {}", path.display())))?;
            let mut at = 0usize;
            while let Some(entry) = replayable_record(&rest[at..]) {
                if !accept(replayed.len() as u64, entry) {
                    break;
                }
                replayed.push((len, entry.to_vec()));
                let whole = RECORD_HEADER as usize + entry.len();
                at += whole;
                len += whole as u64;
            }
            if len < on_disk {
                file.set_len(len)
                    .and_then(|()| file.sync_all())
                    .map_err(io(|| format!("cutting {}", path.display())))?;
            }
        }
        files.insert(tail.active, path);
        sync_dir(dir)?;
        let segments = Segments {
            dir: dir.to_path_buf(),
            files: RwLock::new(files),
            active: Mutex::new(Active {
                first: tail.active,
                file: Arc::new(file),
                len,
                written: len,
                allocated: len,
            }),
            #[cfg(test)]
            sync_hook: Mutex::new(None),
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((segments, replayed))
    }

    /// The active file's first sequence number and committed length.
    pub fn position(&self) -> (u64, u64) {
        let active = self.active();
        (active.first, active.len)
    }

    /// The active file's first sequence number and where its written records end (past the
    /// committed length while groups wait for their sync).
    pub fn written(&self) -> (u64, u64) {
        let active = self.active();
        (active.first, active.written)
    }

    /// Starts a new active file whose first entry will be `next` (after cutting the old one
    /// to its records). The store must then commit a tail naming it before anything relies on
    /// it (the next group does). Only with no records waiting for their commit.
    pub fn roll(&self, next: u64) -> Result<()> {
        let mut active = self.active();
        if active.first == next {
            return Ok(());
        }
        if active.written != active.len {
            return Err(Error::Corrupt(
                "an audit segment was to be started while records of the last one wait".into(),
            ));
        }
        Self::trim_active(&mut active)?;
        let path = self.dir.join(file_name(next));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(|| format!("creating {}", path.display())))?;
        sync_dir(&self.dir)?;
        *active = Active {
            first: next,
            file: Arc::new(file),
            len: 0,
            written: 0,
            allocated: 0,
        };
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(next, path);
        Ok(())
    }

    /// Cuts the active file's allocated space past its records (when the log closes).
    pub fn trim(&self) -> Result<()> {
        Self::trim_active(&mut self.active())
    }

    fn trim_active(active: &mut Active) -> Result<()> {
        // To the written records, never into ones whose group may still commit.
        if active.allocated > active.written {
            active
                .file
                .set_len(active.written)
                .and_then(|()| active.file.sync_all())
                .map_err(io(|| "cutting the audit segment to its records".to_owned()))?;
            active.allocated = active.written;
        }
        Ok(())
    }

    /// Writes `records` after the records written so far, without syncing them; returns where
    /// they end. They are durable once a [`Segments::sync`] called after this returns has
    /// returned `Ok`, count once [`Segments::committed`] is called (after the store commit),
    /// and are cut off by [`Segments::abandon`] otherwise.
    pub fn write(&self, records: &[u8]) -> Result<u64> {
        let mut active = self.active();
        let end = active.written + records.len() as u64;
        if end > active.allocated {
            let start = active.allocated;
            let more = end - start + ALLOCATE;
            match rustix::fs::fallocate(
                &*active.file,
                rustix::fs::FallocateFlags::empty(),
                start,
                more,
            ) {
                Ok(()) => active.allocated = start + more,
                // Without it the records are simply appended (a full disk fails below if at
                // all).
                Err(e) => tracing::debug!(error = %e, "allocating audit segment space failed"),
            }
        }
        let at = active.written;
        // Past the records, whatever happens: a failed write is cut off by `abandon`.
        active.written = end;
        active
            .file
            .write_all_at(records, at)
            .map_err(io(|| "appending to the audit log".to_owned()))?;
        Ok(end)
    }

    /// Makes every record written before the call durable (`fdatasync` of the active file).
    /// The lock is not held meanwhile, so the writer goes on writing the next records.
    pub fn sync(&self) -> Result<()> {
        let file = Arc::clone(&self.active().file);
        #[cfg(test)]
        {
            let call = self
                .syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Called without the lock: a hook may wait while another sync runs.
            let hook = self
                .sync_hook
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(hook) = hook {
                return (hook.0)(call).map_err(io(|| "syncing the audit log".to_owned()));
            }
        }
        file.sync_data()
            .map_err(io(|| "syncing the audit log".to_owned()))
    }

    /// Makes [`Segments::sync`] run `hook` instead of syncing (tests only), counting its
    /// calls from 0.
    #[cfg(test)]
    pub(crate) fn set_sync_hook(&self, hook: Option<SyncHook>) {
        let mut slot = self.sync_hook.lock().unwrap_or_else(|e| e.into_inner());
        self.syncs.store(0, std::sync::atomic::Ordering::Relaxed);
        *slot = hook.map(Arc::new);
    }

    /// The written records up to `len` are committed: the active length becomes `len`.
    pub fn committed(&self, len: u64) {
        self.active().len = len;
    }

    /// The written records past the committed length did not commit: cut them off (best
    /// effort; the next open cuts them off anyway, and the next write overwrites them). Only
    /// with no sync of them in progress.
    pub fn abandon(&self) {
        let mut active = self.active();
        active.written = active.len;
        active.allocated = active.len;
        if let Err(e) = active
            .file
            .set_len(active.len)
            .and_then(|()| active.file.sync_data())
        {
            tracing::warn!(error = %e, "cutting an uncommitted audit group off its segment failed");
        }
    }

    /// Removes every file whose entries all come before `upto` (never the active one).
    /// Returns the bytes freed.
    pub fn remove_below(&self, upto: u64) -> Result<u64> {
        let active_first = self.active().first;
        let doomed: Vec<(u64, PathBuf)> = {
            let files = self.files.read().unwrap_or_else(|e| e.into_inner());
            let firsts: Vec<u64> = files.keys().copied().collect();
            firsts
                .windows(2)
                .filter(|w| w[1] <= upto && w[0] != active_first)
                .filter_map(|w| files.get(&w[0]).map(|p| (w[0], p.clone())))
                .collect()
        };
        let mut freed = 0;
        for (first, path) in doomed {
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io(|| format!("removing {}", path.display())))?;
            self.files
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&first);
            freed += len;
        }
        sync_dir(&self.dir)?;
        Ok(freed)
    }

    /// Bytes in every segment file.
    pub fn bytes(&self) -> u64 {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files
            .values()
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// The file holding sequence number `seq` (the one with the largest first number at or
    /// below it), as `(first, path)`.
    pub fn holding(&self, seq: u64) -> Option<(u64, PathBuf)> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files
            .range(..=seq)
            .next_back()
            .map(|(first, path)| (*first, path.clone()))
    }

    /// The file that starts at `first`, if there is one.
    pub fn starting_at(&self, first: u64) -> Option<PathBuf> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files.get(&first).cloned()
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        // Only plain fields: a panic cannot leave them half-changed.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads records from one position of one file on, moving to the next file at the end of
/// each, up to a sequence number it never passes.
#[derive(Debug)]
pub struct Reader<'a> {
    segments: &'a Segments,
    file: Option<(PathBuf, BufReader<File>)>,
    /// Sequence number of the next record to read.
    seq: u64,
    /// First sequence number not to read (the committed size when the reader was made).
    end: u64,
    /// Records before the wanted one still to skip.
    skip: u64,
    /// Why the start could not be opened, reported by the first `next`.
    error: Option<Error>,
}

impl<'a> Reader<'a> {
    /// A reader of `[from, end)`, starting in the file that starts at `first` at byte `offset`,
    /// which holds the record of sequence number `at` (`at <= from`).
    pub fn new(
        segments: &'a Segments,
        first: u64,
        offset: u64,
        at: u64,
        from: u64,
        end: u64,
    ) -> Self {
        let mut reader = Reader {
            segments,
            file: None,
            seq: at,
            end,
            skip: from.saturating_sub(at),
            error: None,
        };
        match segments.starting_at(first) {
            None => {
                reader.error = Some(Error::Corrupt(format!(
                    "the audit segment starting at entry {first} is missing"
                )));
            }
            Some(path) => {
                let opened = File::open(&path).and_then(|mut f| {
                    use std::io::{Seek, SeekFrom};
                    f.seek(SeekFrom::Start(offset))?;
                    Ok(f)
                });
                match opened {
                    Ok(f) => reader.file = Some((path, BufReader::new(f))),
                    Err(e) => {
                        reader.error = Some(io(|| format!("opening {}", path.display()))(e));
                    }
                }
            }
        }
        reader
    }

    fn read_record(&mut self) -> Result<Vec<u8>> {
        loop {
            let Some((path, file)) = self.file.as_mut() else {
                return Err(Error::Corrupt(format!(
                    "the audit segment holding entry {} is missing",
                    self.seq
                )));
            };
            let mut header = [0u8; 8];
            match read_full(file, &mut header) {
                Ok(true) => {}
                Ok(false) => {
                    // End of this file: the next one must start at this sequence number.
                    let next = self.segments.starting_at(self.seq).ok_or_else(|| {
                        Error::Corrupt(format!(
                            "the audit log has no segment starting at entry {} after {}",
                            self.seq,
                            path.display()
                        ))
                    })?;
                    let f =
                        File::open(&next).map_err(io(|| format!("opening {}", next.display())))?;
                    self.file = Some((next, BufReader::new(f)));
                    continue;
                }
                Err(e) => return Err(io(|| format!("reading {}", path.display()))(e)),
            }
            let len =
                u32::from_be_bytes([header[0], header[1], header[2], header[3]]) & !REPLAYABLE;
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD {
                return Err(Error::Corrupt(format!(
                    "audit entry {} in {}: a record length of {len} bytes",
                    self.seq,
                    path.display()
                )));
            }
            let mut bytes = vec![0u8; len as usize];
            file.read_exact(&mut bytes).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Corrupt(format!(
                    "audit entry {} in {} is cut short",
                    self.seq,
                    path.display()
                )),
                _ => io(|| format!("reading {}", path.display()))(e),
            })?;
            if crc32fast::hash(&bytes) != crc {
                return Err(Error::Corrupt(format!(
                    "audit entry {} in {} fails its checksum",
                    self.seq,
                    path.display()
                )));
            }
            return Ok(bytes);
        }
    }
}

/// The entry bytes of the record at the start of `bytes` if it is whole, replayable and
/// passes its checksum.
fn replayable_record(bytes: &[u8]) -> Option<&[u8]> {
    let header = bytes.get(..RECORD_HEADER as usize)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len & REPLAYABLE == 0 || len & !REPLAYABLE > MAX_RECORD {
        return None;
    }
    let start = RECORD_HEADER as usize;
    let entry = bytes.get(start..start + (len & !REPLAYABLE) as usize)?;
    (crc32fast::hash(entry) == crc).then_some(entry)
}

/// Fills `buf`; `Ok(false)` at a clean end of file (nothing read).
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut read = 0;
    while read < buf.len() {
        match r.read(&mut buf[read..]) {
            Ok(0) if read == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a record header is cut short",
                ));
            }
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Iterator for Reader<'_> {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.seq >= self.end {
                return None;
            }
            if let Some(e) = self.error.take() {
                self.end = self.seq;
                return Some(Err(e));
            }
            let record = match self.read_record() {
                Ok(record) => record,
                Err(e) => {
                    self.end = self.seq; // stop after an error
                    return Some(Err(e));
                }
            };
            let seq = self.seq;
            self.seq += 1;
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            return Some(Ok((seq, record)));
        }
    }
}
