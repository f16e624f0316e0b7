//! The audit log's read side as the vault serves it: streamed exports and archives, proofs and
//! roots, entries by sequence number, each refusing what was archived. The vault records the
//! entry of each operation (`audit.export`, ...) before calling these (see `vault/audit.rs`).

use std::io::Write;

use super::Event;
use super::archive::{ArchiveDigest, HashingWriter};
use super::entry::Entry;
use super::export::{
    CSV_HEADER, ExportFilter, ExportFormat, checkpoint_line, csv_row, end_line, header_line,
    leaf_hash_line, proof_line,
};
use super::log::AuditLog;
use super::merkle::{self, Hash, ProofError};
use super::rotation::{RotationLine, b64_hashes};
use super::segment::Reader;
use crate::{Error, Result};

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries written.
    pub entries: u64,
    /// The tree size of the checkpoint the export carries.
    pub tree_size: u64,
}

impl From<ProofError> for Error {
    fn from(e: ProofError) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Io {
        context: "writing the audit export".into(),
        source: e,
    }
}

/// Writes an entry's line and its leaf_hash line in one write (an export or an archive makes
/// one per entry), through `scratch`, a buffer the caller keeps from one entry to the next.
fn write_with_leaf_hash(
    out: &mut dyn Write,
    scratch: &mut Vec<u8>,
    entry: &[u8],
    leaf: &Hash,
) -> Result<()> {
    scratch.clear();
    scratch.extend_from_slice(entry);
    scratch.push(b'\n');
    scratch.extend_from_slice(&leaf_hash_line(leaf));
    scratch.push(b'\n');
    out.write_all(scratch).map_err(io)
}

/// The entry an export records: the filter it ran with.
pub fn export_event(filter: &ExportFilter) -> Event {
    let mut event = Event::new("audit.export", "ok");
    for (name, value) in [
        ("owner", &filter.owner),
        ("key_id", &filter.key_id),
        ("event", &filter.event),
        ("outcome", &filter.outcome),
    ] {
        if let Some(v) = value {
            event = event.detail(name, v.as_str());
        }
    }
    if let Some(last) = filter.last {
        event = event.detail("last", last);
    }
    event
}

impl AuditLog {
    /// Streams the log to `out`: signs a checkpoint that covers it (the caller has recorded the
    /// export's own entry), then writes every entry up to that checkpoint that `filter`
    /// selects. Memory use does not grow with the log.
    pub fn export(
        &self,
        filter: &ExportFilter,
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> Result<ExportSummary> {
        // A checkpoint that covers the export's own entry, then the one the witnesses cosigned
        // (the same or a later one), so that the export carries their cosignatures.
        self.checkpoint()?;
        let signed = self.witnessed_checkpoint()?;
        let size = signed.checkpoint.size;
        let filtered = !filter.is_everything();
        let first = self
            .first_live()
            .max(filter.last.map_or(0, |n| size.saturating_sub(n)))
            .min(size);
        if format == ExportFormat::Jsonl {
            let prefix = self.prefix(first)?;
            let header = header_line(self.origin(), size, filtered, first, &prefix);
            writeln!(out, "{header}").map_err(io)?;
            writeln!(out, "{}", checkpoint_line(&signed.note)).map_err(io)?;
            for line in self.rotation_lines(size)? {
                writeln!(out, "{line}").map_err(io)?;
            }
        } else {
            out.write_all(CSV_HEADER.as_bytes()).map_err(io)?;
        }
        let mut written = 0;
        let mut expected = first;
        let mut scratch = Vec::new();
        let mut leaves = self.leaves(first)?;
        for item in self.entries(first) {
            let (seq, bytes) = item?;
            if seq >= size {
                break;
            }
            if seq != expected {
                // Only an archive running at the same time drops entries.
                return Err(Error::Conflict(format!(
                    "audit entries {expected}..{seq} were archived while the export ran; export again"
                )));
            }
            expected += 1;
            if format == ExportFormat::Jsonl && !filtered {
                let leaf = leaves.next_leaf()?;
                write_with_leaf_hash(out, &mut scratch, &bytes, &leaf)?;
                written += 1;
                continue;
            }
            let entry = Entry::parse(&bytes)
                .map_err(|e| Error::Corrupt(format!("audit entry {seq}: {e}")))?;
            if !filter.matches(&entry) {
                continue;
            }
            match format {
                ExportFormat::Csv => out.write_all(csv_row(&entry).as_bytes()).map_err(io)?,
                ExportFormat::Jsonl => {
                    let proof = self.inclusion_proof(seq, size)?;
                    out.write_all(&bytes).map_err(io)?;
                    writeln!(out, "\n{}", proof_line(&proof)).map_err(io)?;
                }
            }
            written += 1;
        }
        if expected < size {
            return Err(Error::Conflict(format!(
                "audit entries {expected}..{size} were archived while the export ran; export again"
            )));
        }
        if format == ExportFormat::Jsonl {
            writeln!(out, "{}", end_line(written)).map_err(io)?;
        }
        out.flush().map_err(io)?;
        Ok(ExportSummary {
            entries: written,
            tree_size: size,
        })
    }

    /// Checks that an archive of every live entry before `upto` can be written: `upto` must be
    /// past the first live entry and the size of a checkpoint the vault signed. Returns the
    /// first live entry and that checkpoint's note, for [`AuditLog::write_archive`].
    pub fn archive_start(&self, upto: u64) -> Result<(u64, String)> {
        let first = self.first_live();
        if upto <= first {
            return Err(Error::Conflict(format!(
                "the entries before {upto} are already archived (the live log starts at {first})"
            )));
        }
        self.check_size(upto)?;
        let note = self.checkpoint_at(upto)?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "the vault signed no checkpoint of tree size {upto}; archive up to a signed checkpoint (GET /v1/audit/checkpoint gives the latest)"
            ))
        })?;
        Ok((first, note))
    }

    /// Writes the archive of entries `[first, upto)` under the checkpoint `note` (from
    /// [`AuditLog::archive_start`]): an unfiltered JSON Lines export, which `keyvault audit
    /// verify` checks on its own. Nothing is dropped; the log remembers the SHA-256 of the
    /// bytes written (the last archive only), which [`AuditLog::check_archive_written`] wants
    /// back, and returns it. `progress(entries)` is called as entries are written.
    pub fn write_archive(
        &self,
        first: u64,
        upto: u64,
        note: &str,
        out: &mut dyn Write,
        progress: impl FnMut(u64),
    ) -> Result<ArchiveDigest> {
        let mut hashing = HashingWriter::new(out);
        self.write_archive_entries(first, upto, note, &mut hashing, progress)?;
        let sha256 = hashing.finish();
        self.archive_written(upto, &sha256)?;
        Ok(sha256)
    }

    /// The bytes of [`AuditLog::write_archive`].
    fn write_archive_entries(
        &self,
        first: u64,
        upto: u64,
        note: &str,
        out: &mut dyn Write,
        mut progress: impl FnMut(u64),
    ) -> Result<()> {
        let audit = self;
        let prefix = audit.prefix(first)?;
        writeln!(
            out,
            "{}",
            header_line(audit.origin(), upto, false, first, &prefix)
        )
        .map_err(io)?;
        writeln!(out, "{}", checkpoint_line(note)).map_err(io)?;
        for line in self.rotation_lines(upto)? {
            writeln!(out, "{line}").map_err(io)?;
        }
        let mut expected = first;
        let mut scratch = Vec::new();
        let mut leaves = audit.leaves(first)?;
        for item in audit.entries(first) {
            let (seq, bytes) = item?;
            if seq >= upto {
                break;
            }
            if seq != expected {
                return Err(Error::Conflict(format!(
                    "audit entries {expected}..{seq} were archived while this archive was written"
                )));
            }
            let leaf = leaves.next_leaf()?;
            write_with_leaf_hash(out, &mut scratch, &bytes, &leaf)?;
            expected += 1;
            if expected.is_multiple_of(4096) {
                progress(expected - first);
            }
        }
        if expected != upto {
            return Err(Error::Conflict(format!(
                "audit entries {expected}..{upto} were archived while this archive was written"
            )));
        }
        writeln!(out, "{}", end_line(upto - first)).map_err(io)?;
        out.flush().map_err(io)?;
        progress(upto - first);
        Ok(())
    }

    /// Checks that the last archive written in full ([`AuditLog::write_archive`]) ends at
    /// `upto` and that `sha256` is the SHA-256 of its bytes ([`Error::Conflict`] otherwise), so
    /// that no entry is dropped unless its archive was kept whole.
    pub fn check_archive_written(&self, upto: u64, sha256: &ArchiveDigest) -> Result<()> {
        match self.last_archive_written()? {
            None => Err(Error::Conflict(format!(
                "no archive of the entries before {upto} was written; write it first (keyvault audit archive does both)"
            ))),
            Some((written, _)) if written != upto => Err(Error::Conflict(format!(
                "the last archive written ends at {written}, not {upto}; drop up to {written}, or write an archive up to {upto} first"
            ))),
            Some((_, stored)) if stored != *sha256 => Err(Error::Conflict(format!(
                "sha256 does not match the archive written up to {upto}: the bytes stored are not that archive; nothing was dropped"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The RFC 6962 inclusion proof of entry `seq` in the tree of size `size`
    /// ([`Error::Archived`] if `seq` was archived).
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        let first = self.first_live();
        if seq < first {
            return Err(Error::Archived { seq, first });
        }
        merkle::inclusion_proof(seq, size, |level, index| self.node(level, index))
    }

    /// The RFC 6962 consistency proof from tree size `old` to `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_size(new)?;
        merkle::consistency_proof(old, new, |level, index| self.node(level, index))
    }

    /// The root of the tree of size `size`.
    pub fn root(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        merkle::root_at(size, |level, index| self.node(level, index))
    }

    /// The committed entries from `seq` on, in order, as `(seq, bytes)`; [`Error::Archived`]
    /// if `seq` was archived.
    pub fn live_entries(&self, seq: u64) -> Result<Reader<'_>> {
        let first = self.first_live();
        if seq < first {
            return Err(Error::Archived { seq, first });
        }
        Ok(self.entries(seq))
    }

    /// The stored canonical bytes of entry `seq`; [`Error::Archived`] if it was archived.
    pub fn live_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let first = self.first_live();
        if seq < first {
            return Err(Error::Archived { seq, first });
        }
        self.entry(seq)
    }

    /// The `audit_key_rotation` lines of an export whose checkpoint has tree size `size`: one
    /// per rotation whose transition checkpoint is at or before it, oldest first (see
    /// [`rotation`](super::rotation)).
    fn rotation_lines(&self, size: u64) -> Result<Vec<String>> {
        let audit = self;
        let node = |level: u8, index: u64| audit.node(level, index);
        let mut lines = Vec::new();
        for r in audit.rotations()? {
            let Some(at) = r.checkpoint.filter(|&at| at <= size) else {
                continue;
            };
            let checkpoint = audit.checkpoint_at(at)?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "the transition checkpoint of size {at} of the audit key rotation at entry {} is missing",
                    r.seq
                ))
            })?;
            let line = RotationLine {
                seq: r.seq,
                inclusion_proof: b64_hashes(&merkle::inclusion_proof(r.seq, at, node)?),
                consistency_proof: b64_hashes(&merkle::consistency_proof(at, size, node)?),
                entry: r.entry,
                checkpoint,
            };
            lines.push(line.to_line());
        }
        Ok(lines)
    }

    fn check_size(&self, size: u64) -> Result<()> {
        let have = self.size();
        if size > have {
            return Err(Error::InvalidInput(format!(
                "tree size {size} is larger than the log ({have} entries)"
            )));
        }
        Ok(())
    }
}
