//! Reading a backup frame by frame, checking its framing, order, counts and digest as it goes.

use std::io::{ErrorKind, Read};

use sha2::{Digest, Sha256};

use super::format::{
    BACKUP_FORMAT, BackupSummary, CLUSTER_FORMAT, ClusterOrigin, HEADER_LEN, MAGIC, MAX_KEY,
    MAX_VALUE, PROGRESS_EVERY, TAG_END, TAG_ENTRY, TAG_NODE, TAG_PUT, TAG_REMOVE, TAG_SNAPSHOT,
    bad,
};
use crate::shamir::VaultId;
use crate::storage::is_shared_key;
use crate::{Error, Result};

/// One change read from a backup, in order.
#[derive(Debug)]
pub(super) enum Frame {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    /// An audit entry: its sequence number and bytes.
    Entry(u64, Vec<u8>),
}

/// Reads and checks a backup frame by frame.
pub(super) struct BackupReader<R> {
    input: R,
    hash: Sha256,
    /// Bytes read so far.
    pub(super) bytes: u64,
    vault_id: VaultId,
    /// The vault's format version, from the header.
    pub(super) vault_format: u16,
    /// A cluster node's backup: its node frame, read with the header.
    pub(super) cluster: Option<ClusterOrigin>,
    created_at: u64,
    records: u64,
    captured: u64,
    entries: u64,
    last_entry: Option<u64>,
    last_snapshot_key: Option<Vec<u8>>,
    done: Option<[u8; 32]>,
}

impl<R: Read> BackupReader<R> {
    pub(super) fn new(input: R) -> Result<BackupReader<R>> {
        let mut reader = BackupReader {
            input,
            hash: Sha256::new(),
            bytes: 0,
            vault_id: [0; 8],
            vault_format: 0,
            cluster: None,
            created_at: 0,
            records: 0,
            captured: 0,
            entries: 0,
            last_entry: None,
            last_snapshot_key: None,
            done: None,
        };
        let mut header = [0u8; HEADER_LEN];
        reader
            .read(&mut header, "the header")
            .map_err(|e| match e {
                Error::Backup(_) => bad("not a keyvault backup (the file is too short)"),
                other => other,
            })?;
        if &header[..8] != MAGIC {
            return Err(bad("not a keyvault backup (wrong magic bytes)"));
        }
        let format = u16::from_be_bytes([header[8], header[9]]);
        if format > BACKUP_FORMAT {
            return Err(bad(format!(
                "backup format {format} is newer than this keyvault reads ({BACKUP_FORMAT})"
            )));
        }
        reader.vault_format = u16::from_be_bytes([header[10], header[11]]);
        reader.vault_id.copy_from_slice(&header[12..20]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&header[20..28]);
        reader.created_at = u64::from_be_bytes(created);
        if format == CLUSTER_FORMAT {
            reader.cluster = Some(reader.node_frame()?);
        }
        Ok(reader)
    }

    /// Format 2's first frame: the node whose log the file holds, and the etcd revision.
    fn node_frame(&mut self) -> Result<ClusterOrigin> {
        let at = self.bytes;
        let mut tag = [0u8; 1];
        self.read(&mut tag, "the node frame")?;
        if tag[0] != TAG_NODE {
            return Err(bad(format!(
                "the file is corrupted (a cluster node's backup with no node frame at byte {at})"
            )));
        }
        let node = self.field(MAX_KEY, "node id")?;
        let revision = self.field(MAX_KEY, "revision")?;
        let node_id = String::from_utf8(node)
            .map_err(|_| bad(format!("the file is corrupted (its node id at byte {at})")))?;
        let revision = <[u8; 8]>::try_from(revision.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| bad(format!("the file is corrupted (its revision at byte {at})")))?;
        Ok(ClusterOrigin { node_id, revision })
    }

    /// In a cluster node's backup the shared rows are all in the snapshot, at one revision: a
    /// captured change to one is not what the writer makes.
    fn check_captured(&self, key: &[u8], at: u64) -> Result<()> {
        if self.cluster.is_some() && is_shared_key(key) {
            return Err(bad(format!(
                "the file is corrupted (a captured change of a shared row at byte {at})"
            )));
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes into the digest; a short file is a truncated backup.
    fn read(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.read_unhashed(buf, what)?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn read_unhashed(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => bad(format!(
                "the file is truncated ({what} at byte {} is cut off)",
                self.bytes
            )),
            _ => Error::Io {
                context: "reading the backup".into(),
                source: e,
            },
        })?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn read_u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b, what)?;
        Ok(u64::from_be_bytes(b))
    }

    fn field(&mut self, max: u32, what: &str) -> Result<Vec<u8>> {
        let at = self.bytes;
        let len = self.read_u32(what)?;
        if len > max {
            return Err(bad(format!(
                "the file is corrupted (a {what} of {len} bytes at byte {at})"
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read(&mut bytes, what)?;
        Ok(bytes)
    }

    /// The next change, or `None` after a trailer whose counts and digest check out and after
    /// which the file ends.
    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.done.is_some() {
            return Ok(None);
        }
        let at = self.bytes;
        let mut tag = [0u8; 1];
        self.read(&mut tag, "a frame")?;
        match tag[0] {
            TAG_SNAPSHOT | TAG_PUT | TAG_REMOVE if self.entries > 0 => Err(bad(format!(
                "the file is corrupted (a store frame after the audit entries, at byte {at})"
            ))),
            TAG_ENTRY => {
                let key = self.field(MAX_KEY, "entry number")?;
                let seq = <[u8; 8]>::try_from(key.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| {
                        bad(format!(
                            "the file is corrupted (an entry number at byte {at})"
                        ))
                    })?;
                if self.last_entry.is_some_and(|last| seq != last + 1) {
                    return Err(bad(format!(
                        "the file is corrupted (audit entry {seq} does not follow entry {} at byte {at})",
                        self.last_entry.unwrap_or_default()
                    )));
                }
                let value = self.field(MAX_VALUE, "audit entry")?;
                self.last_entry = Some(seq);
                self.entries += 1;
                Ok(Some(Frame::Entry(seq, value)))
            }
            TAG_SNAPSHOT => {
                if self.captured > 0 {
                    return Err(bad(format!(
                        "the file is corrupted (a snapshot frame after the captured changes, at byte {at})"
                    )));
                }
                let key = self.field(MAX_KEY, "key")?;
                if self.last_snapshot_key.as_ref().is_some_and(|k| *k >= key) {
                    return Err(bad(format!(
                        "the file is corrupted (snapshot keys out of order at byte {at})"
                    )));
                }
                let value = self.field(MAX_VALUE, "value")?;
                self.last_snapshot_key = Some(key.clone());
                self.records += 1;
                Ok(Some(Frame::Put(key, value)))
            }
            TAG_PUT => {
                let key = self.field(MAX_KEY, "key")?;
                self.check_captured(&key, at)?;
                let value = self.field(MAX_VALUE, "value")?;
                self.captured += 1;
                Ok(Some(Frame::Put(key, value)))
            }
            TAG_REMOVE => {
                let key = self.field(MAX_KEY, "key")?;
                self.check_captured(&key, at)?;
                self.captured += 1;
                Ok(Some(Frame::Remove(key)))
            }
            TAG_END => {
                let records = self.read_u64("the trailer")?;
                let captured = self.read_u64("the trailer")?;
                let entries = self.read_u64("the trailer")?;
                let computed: [u8; 32] = self.hash.clone().finalize().into();
                let mut stored = [0u8; 32];
                self.read_unhashed(&mut stored, "the digest")?;
                if stored != computed {
                    return Err(bad(
                        "the file is corrupted (its SHA-256 does not match the digest in its trailer)",
                    ));
                }
                if (records, captured, entries) != (self.records, self.captured, self.entries) {
                    return Err(bad(format!(
                        "the file is corrupted (its trailer counts {records} records, \
                         {captured} changes and {entries} audit entries, the file holds {}, {} \
                         and {})",
                        self.records, self.captured, self.entries
                    )));
                }
                let mut extra = [0u8; 1];
                match self.input.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => return Err(bad("bytes follow the trailer")),
                    Err(e) => {
                        return Err(Error::Io {
                            context: "reading the backup".into(),
                            source: e,
                        });
                    }
                }
                self.done = Some(computed);
                Ok(None)
            }
            other => Err(bad(format!(
                "the file is corrupted (unknown frame tag {other:#04x} at byte {at})"
            ))),
        }
    }

    pub(super) fn summary(&self) -> Result<BackupSummary> {
        let sha256 = self.done.ok_or_else(|| bad("the file has no trailer"))?;
        Ok(BackupSummary {
            vault_id: self.vault_id,
            vault_format: self.vault_format,
            created_at: self.created_at,
            records: self.records,
            captured: self.captured,
            entries: self.entries,
            bytes: self.bytes,
            sha256,
            cluster: self.cluster.clone(),
        })
    }
}

/// Reads a whole backup and checks its framing, order, counts and digest without restoring it
/// (as the CLI does before it keeps a downloaded backup). `progress` gets the bytes read.
pub fn verify_backup(input: impl Read, mut progress: impl FnMut(u64)) -> Result<BackupSummary> {
    let mut reader = BackupReader::new(input)?;
    let mut frames = 0u64;
    while reader.next_frame()?.is_some() {
        frames += 1;
        if frames.is_multiple_of(PROGRESS_EVERY) {
            progress(reader.bytes);
        }
    }
    progress(reader.bytes);
    reader.summary()
}
