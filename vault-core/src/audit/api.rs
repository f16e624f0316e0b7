//! The audit operations of a [`Vault`]: export, checkpoints, proofs, keyed digests.

use std::io::Write;

use super::Event;
use super::entry::Entry;
use super::export::{
    CSV_HEADER, ExportFilter, ExportFormat, checkpoint_line, csv_row, end_line, header_line,
    leaf_hash_line, proof_line,
};
use super::log::SignedCheckpoint;
use super::merkle::{self, Hash, ProofError};
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
        self.commit(ctx, Batch::default(), event)?;
        let signed = self.inner.audit.checkpoint()?;
        let size = signed.checkpoint.size;
        let filtered = !filter.is_everything();
        if format == ExportFormat::Jsonl {
            writeln!(
                out,
                "{}",
                header_line(self.inner.audit.origin(), size, filtered)
            )
            .map_err(io)?;
            writeln!(out, "{}", checkpoint_line(&signed.note)).map_err(io)?;
        } else {
            out.write_all(CSV_HEADER.as_bytes()).map_err(io)?;
        }
        let mut written = 0;
        for item in self.inner.audit.entries(0) {
            let (seq, bytes) = item?;
            if seq >= size {
                break;
            }
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
        if format == ExportFormat::Jsonl {
            writeln!(out, "{}", end_line(written)).map_err(io)?;
        }
        out.flush().map_err(io)?;
        Ok(ExportSummary {
            entries: written,
            tree_size: size,
        })
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

    /// The stored canonical bytes of entry `seq`.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        self.inner.audit.entry(seq)
    }

    /// The keyed digest the log keeps for a presented string that matched nothing, so an
    /// auditor can ask whether a leaked key was ever tried. The request itself is audited.
    pub fn audit_digest(&self, ctx: &Context, text: &str) -> Result<[u8; 32]> {
        let keys = self.keys()?;
        let digest = crypto::hmac(&keys.keyring.audit_digest, &[text.as_bytes()]);
        self.commit(ctx, Batch::default(), Event::new("audit.digest", "ok"))?;
        Ok(digest)
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
