//! The audit operations of a [`Vault`]: export, checkpoints, proofs, keyed digests.

use std::io::Write;

use super::Event;
use super::archive::{ArchiveDigest, HashingWriter};
use super::entry::Entry;
use super::export::{
    CSV_HEADER, ExportFilter, ExportFormat, checkpoint_line, csv_row, end_line, header_line,
    leaf_hash_line, proof_line,
};
use super::log::{DropReport, SignedCheckpoint};
use super::merkle::{self, Hash, ProofError};
use super::rotation::{RotationLine, b64_hashes};
use super::segment::Reader;
use crate::context::Context;
use crate::storage::Batch;
use crate::{Error, Result, Vault, crypto};

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

impl Vault {
    /// Streams the audit log to `out`: records the export, signs a checkpoint that covers it,
    /// then writes every entry up to that checkpoint that `filter` selects. Needs the vault
    /// unsealed (the checkpoint is signed). Memory use does not grow with the log.
    pub fn export_audit(
        &self,
        ctx: &Context,
        filter: &ExportFilter,
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> Result<ExportSummary> {
        self.keys()?;
        let mut event = Event::new("audit.export", "ok");
        for (name, value) in [
            ("owner", &filter.owner),
            ("key_id", &filter.key_id),
            ("event", &filter.event),
        ] {
            if let Some(v) = value {
                event = event.detail(name, v.as_str());
            }
        }
        if let Some(last) = filter.last {
            event = event.detail("last", last);
        }
        self.commit(ctx, Batch::default(), event)?;
        // A checkpoint that covers the export's own entry, then the one the witnesses cosigned
        // (the same or a later one), so that the export carries their cosignatures.
        self.inner.audit.checkpoint()?;
        let signed = self.inner.audit.witnessed_checkpoint()?;
        let size = signed.checkpoint.size;
        let filtered = !filter.is_everything();
        let first = self
            .inner
            .audit
            .first_live()
            .max(filter.last.map_or(0, |n| size.saturating_sub(n)))
            .min(size);
        if format == ExportFormat::Jsonl {
            let prefix = self.inner.audit.prefix(first)?;
            let header = header_line(self.inner.audit.origin(), size, filtered, first, &prefix);
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
        for item in self.inner.audit.entries(first) {
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
                out.write_all(&bytes).map_err(io)?;
                writeln!(out, "\n{}", leaf_hash_line(&self.inner.audit.node(0, seq)?))
                    .map_err(io)?;
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
                    let proof = self.audit_inclusion_proof(seq, size)?;
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

    /// Writes the archive of every live entry before `upto`, which must be the size of a
    /// checkpoint the vault signed: an unfiltered JSON Lines export of entries
    /// `[first live, upto)` under that checkpoint, which `keyvault audit verify` checks on its
    /// own. Nothing is dropped: once the caller has the file safe, [`Vault::drop_archived`]
    /// with the SHA-256 of the bytes it stored drops the entries. The vault remembers the
    /// SHA-256 of the bytes it wrote here (the last archive only), and returns it.
    /// `progress(entries)` is called as entries are written.
    pub fn write_audit_archive(
        &self,
        ctx: &Context,
        upto: u64,
        out: &mut dyn Write,
        progress: impl FnMut(u64),
    ) -> Result<ArchiveDigest> {
        let mut hashing = HashingWriter::new(out);
        self.write_archive_entries(ctx, upto, &mut hashing, progress)?;
        let sha256 = hashing.finish();
        self.inner.audit.archive_written(upto, &sha256)?;
        Ok(sha256)
    }

    /// The bytes of [`Vault::write_audit_archive`].
    fn write_archive_entries(
        &self,
        ctx: &Context,
        upto: u64,
        out: &mut dyn Write,
        mut progress: impl FnMut(u64),
    ) -> Result<()> {
        self.keys()?;
        crate::disk::release_reserve_if_full(self.dir());
        let audit = &self.inner.audit;
        let first = audit.first_live();
        if upto <= first {
            return Err(Error::Conflict(format!(
                "the entries before {upto} are already archived (the live log starts at {first})"
            )));
        }
        self.check_size(upto)?;
        let note = audit.checkpoint_at(upto)?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "the vault signed no checkpoint of tree size {upto}; archive up to a signed checkpoint (GET /v1/audit/checkpoint gives the latest)"
            ))
        })?;
        self.commit(
            ctx,
            Batch::default(),
            Event::new("audit.archive.write", "ok")
                .detail("from", first)
                .detail("upto", upto),
        )?;
        let prefix = audit.prefix(first)?;
        writeln!(
            out,
            "{}",
            header_line(audit.origin(), upto, false, first, &prefix)
        )
        .map_err(io)?;
        writeln!(out, "{}", checkpoint_line(&note)).map_err(io)?;
        for line in self.rotation_lines(upto)? {
            writeln!(out, "{line}").map_err(io)?;
        }
        let mut expected = first;
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
            out.write_all(&bytes).map_err(io)?;
            writeln!(out, "\n{}", leaf_hash_line(&audit.node(0, seq)?)).map_err(io)?;
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

    /// Drops the live entries before `upto` once the last archive written in full
    /// ([`Vault::write_audit_archive`]) ends at `upto` and the caller sends back the SHA-256 of
    /// the bytes it stored, which must be that archive's; refuses otherwise
    /// ([`Error::Conflict`]), dropping nothing, so no entry is dropped unless its archive was
    /// kept whole. Verifies keep running: entries go in small batches. The tree keeps its
    /// subtree hashes, so inclusion proofs of later entries and consistency proofs from older
    /// checkpoints still verify; an inclusion proof of a dropped entry is refused with
    /// [`Error::Archived`]. Segment files that hold only archived entries are removed, which
    /// gives their space back. Running it again (same `upto` and digest) after a crash
    /// finishes the job.
    pub fn drop_archived(
        &self,
        ctx: &Context,
        upto: u64,
        sha256: &ArchiveDigest,
    ) -> Result<DropReport> {
        self.keys()?;
        crate::disk::release_reserve_if_full(self.dir());
        let audit = &self.inner.audit;
        match audit.last_archive_written()? {
            None => {
                return Err(Error::Conflict(format!(
                    "no archive of the entries before {upto} was written; write it first (keyvault audit archive does both)"
                )));
            }
            Some((written, _)) if written != upto => {
                return Err(Error::Conflict(format!(
                    "the last archive written ends at {written}, not {upto}; drop up to {written}, or write an archive up to {upto} first"
                )));
            }
            Some((_, stored)) if stored != *sha256 => {
                return Err(Error::Conflict(format!(
                    "sha256 does not match the archive written up to {upto}: the bytes stored are not that archive; nothing was dropped"
                )));
            }
            Some(_) => {}
        }
        let first = audit.first_live();
        let dropped = audit.drop_archived(upto)?;
        self.commit(
            ctx,
            Batch::default(),
            Event::new("audit.archive.drop", "ok")
                .detail("from", first)
                .detail("upto", upto)
                .detail("entries", dropped.entries)
                .detail("bytes_freed", dropped.bytes_freed),
        )?;
        crate::disk::make_reserve(self.dir());
        Ok(dropped)
    }

    /// The first entry still in the live log: entries before it were archived.
    pub fn audit_first_live(&self) -> u64 {
        self.inner.audit.first_live()
    }

    /// Starts a new audit segment file at the log's current size and signs a checkpoint there:
    /// the checkpoint to archive up to when the whole log is to go, since an archive removes
    /// only whole files.
    pub fn audit_roll_checkpoint(&self) -> Result<SignedCheckpoint> {
        self.keys()?;
        crate::disk::release_reserve_if_full(self.dir());
        self.inner.audit.roll()
    }

    /// Whether the audit log is stopped after an integrity failure, a rollback or a fork (every
    /// operation then fails closed until an operator looks).
    pub fn audit_stopped(&self) -> bool {
        self.inner.audit.is_stopped()
    }

    /// Signs a checkpoint of the whole log now (if it grew) and returns it.
    pub fn audit_checkpoint(&self) -> Result<SignedCheckpoint> {
        self.keys()?;
        self.inner.audit.checkpoint()
    }

    /// The signed checkpoint of tree size `size`, if the vault signed one.
    pub fn audit_checkpoint_at(&self, size: u64) -> Result<Option<String>> {
        self.inner.audit.checkpoint_at(size)
    }

    /// Entries in the log.
    pub fn audit_size(&self) -> u64 {
        self.inner.audit.size()
    }

    /// Commits waiting for the audit writer (the audit queue depth).
    pub fn audit_queue_depth(&self) -> usize {
        self.inner.audit.queue_depth()
    }

    /// The RFC 6962 inclusion proof of entry `seq` in the tree of size `size`.
    pub fn audit_inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        let first = self.inner.audit.first_live();
        if seq < first {
            return Err(Error::Archived { seq, first });
        }
        merkle::inclusion_proof(seq, size, |level, index| {
            self.inner.audit.node(level, index)
        })
    }

    /// The RFC 6962 consistency proof from tree size `old` to `new`.
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_size(new)?;
        merkle::consistency_proof(old, new, |level, index| self.inner.audit.node(level, index))
    }

    /// The root of the tree of size `size`.
    pub fn audit_root(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        merkle::root_at(size, |level, index| self.inner.audit.node(level, index))
    }

    /// The committed entries from `seq` on, in order, as `(seq, bytes)`: one sequential read,
    /// where [`Vault::audit_entry`] looks each one up. [`Error::Archived`] if `seq` was archived.
    pub fn audit_entries(&self, seq: u64) -> Result<Reader<'_>> {
        let first = self.inner.audit.first_live();
        if seq < first {
            return Err(Error::Archived { seq, first });
        }
        Ok(self.inner.audit.entries(seq))
    }

    /// The stored canonical bytes of entry `seq`.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let first = self.inner.audit.first_live();
        if seq < first {
            return Err(Error::Archived { seq, first });
        }
        self.inner.audit.entry(seq)
    }

    /// The keyed digest the log keeps for a presented string that matched nothing, so an
    /// auditor can ask whether a leaked key was ever tried. The request itself is audited.
    /// Under the current audit key generation's digest key; [`Vault::audit_digests`] gives it
    /// under every generation's.
    pub fn audit_digest(&self, ctx: &Context, text: &str) -> Result<[u8; 32]> {
        let keys = self.keys()?;
        let digest = crypto::hmac(&keys.keyring.audit_digest, &[text.as_bytes()]);
        self.commit(ctx, Batch::default(), Event::new("audit.digest", "ok"))?;
        Ok(digest)
    }

    /// The keyed digest of `text` under every audit key generation's digest key, as
    /// `(generation, digest)`, oldest first: entries written before an audit key rotation hold
    /// the digest of an older generation, so "was this leaked key ever tried" asks each. The
    /// request itself is audited (one entry).
    pub fn audit_digests(&self, ctx: &Context, text: &str) -> Result<Vec<(u32, [u8; 32])>> {
        let keys = self.keys()?;
        let digests = keys
            .keyring
            .audit_generations()
            .map(|g| (g.number, crypto::hmac(&g.digest, &[text.as_bytes()])))
            .collect();
        self.commit(ctx, Batch::default(), Event::new("audit.digest", "ok"))?;
        Ok(digests)
    }

    /// The `audit_key_rotation` lines of an export whose checkpoint has tree size `size`: one
    /// per rotation whose transition checkpoint is at or before it, oldest first (see
    /// [`rotation`](super::rotation)).
    fn rotation_lines(&self, size: u64) -> Result<Vec<String>> {
        let audit = &self.inner.audit;
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
        let have = self.inner.audit.size();
        if size > have {
            return Err(Error::InvalidInput(format!(
                "tree size {size} is larger than the log ({have} entries)"
            )));
        }
        Ok(())
    }
}
