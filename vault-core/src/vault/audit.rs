//! The vault's audit calls: each checks what the vault must (unsealed), records its own entry
//! where the operation is audited, and asks the audit log (`crate::audit`), which knows
//! nothing of the vault.

use std::io::Write;

use super::{META_AUDIT_KEY, Vault, origin};
use crate::audit::Event;
use crate::audit::api::{ExportSummary, export_event};
use crate::audit::archive::ArchiveDigest;
use crate::audit::export::{ExportFilter, ExportFormat};
use crate::audit::log::{DropReport, SignedCheckpoint};
use crate::audit::merkle::Hash;
use crate::audit::note::NoteVerifier;
use crate::audit::segment::Reader;
use crate::context::Context;
use crate::storage::{Batch, Space};
use crate::{Error, Result, crypto, disk};

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
        self.commit(ctx, Batch::default(), export_event(filter))?;
        self.inner.audit.export(filter, format, out)
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
        self.keys()?;
        disk::release_reserve_if_full(self.dir());
        let audit = &self.inner.audit;
        let (first, note) = audit.archive_start(upto)?;
        self.commit(
            ctx,
            Batch::default(),
            Event::new("audit.archive.write", "ok")
                .detail("from", first)
                .detail("upto", upto),
        )?;
        audit.write_archive(first, upto, &note, out, progress)
    }

    /// Drops the live entries before `upto` once the last archive written in full
    /// ([`Vault::write_audit_archive`]) ends at `upto` and the caller sends back the SHA-256 of
    /// the bytes it stored, which must be that archive's; refuses otherwise
    /// ([`Error::Conflict`](crate::Error::Conflict)), dropping nothing, so no entry is dropped unless its archive was
    /// kept whole. Verifies keep running: entries go in small batches. The tree keeps its
    /// subtree hashes, so inclusion proofs of later entries and consistency proofs from older
    /// checkpoints still verify; an inclusion proof of a dropped entry is refused with
    /// [`Error::Archived`](crate::Error::Archived). Segment files that hold only archived entries are removed, which
    /// gives their space back. Running it again (same `upto` and digest) after a crash
    /// finishes the job.
    pub fn drop_archived(
        &self,
        ctx: &Context,
        upto: u64,
        sha256: &ArchiveDigest,
    ) -> Result<DropReport> {
        self.keys()?;
        disk::release_reserve_if_full(self.dir());
        let audit = &self.inner.audit;
        audit.check_archive_written(upto, sha256)?;
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
        disk::make_reserve(self.dir());
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
        disk::release_reserve_if_full(self.dir());
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
        self.inner.audit.inclusion_proof(seq, size)
    }

    /// The RFC 6962 consistency proof from tree size `old` to `new`.
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.inner.audit.consistency_proof(old, new)
    }

    /// The root of the tree of size `size`.
    pub fn audit_root(&self, size: u64) -> Result<Hash> {
        self.inner.audit.root(size)
    }

    /// The committed entries from `seq` on, in order, as `(seq, bytes)`: one sequential read,
    /// where [`Vault::audit_entry`] looks each one up. [`Error::Archived`](crate::Error::Archived) if `seq` was archived.
    pub fn audit_entries(&self, seq: u64) -> Result<Reader<'_>> {
        self.inner.audit.live_entries(seq)
    }

    /// The stored canonical bytes of entry `seq`.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        self.inner.audit.live_entry(seq)
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

    /// Reads the disk figures: a walk of the data directory, one `statvfs`, one audit entry.
    pub fn disk_usage(&self) -> Result<disk::DiskUsage> {
        disk::DiskUsage::read(self.dir(), &self.inner.audit)
    }

    /// The audit log's current public key as `name+hash+base64`: the one printed at init
    /// until the audit key is rotated, then the newest generation's. Auditors who pinned an
    /// older one keep it: `audit verify` follows the rotations.
    pub fn audit_public_key(&self) -> Result<String> {
        let mut keys = self.audit_public_keys()?;
        // Invariant: `audit_public_keys` starts with the key stored at init.
        Ok(keys.pop().expect("the key printed at init"))
    }

    /// Every audit public key the vault has signed with, oldest (the one printed at init)
    /// first. Works sealed.
    pub fn audit_public_keys(&self) -> Result<Vec<String>> {
        let bytes = self
            .inner
            .store
            .get(Space::Meta, META_AUDIT_KEY)?
            .ok_or_else(|| Error::Corrupt("the audit public key is missing".into()))?;
        let first = String::from_utf8(bytes)
            .map_err(|_| Error::Corrupt("the audit public key is not UTF-8".into()))?;
        // The vault's key, stored at init under the vault's name; a cluster node signs with it
        // under its own origin.
        let first = if self.origin() == origin(&self.vault_id(), None) {
            first
        } else {
            NoteVerifier::parse(&first)
                .and_then(|v| v.renamed(self.origin()))
                .map_err(|e| Error::Corrupt(format!("the audit public key: {e}")))?
                .to_string()
        };
        let mut keys = vec![first];
        keys.extend(
            self.inner
                .audit
                .rotations()?
                .into_iter()
                .map(|r| r.public_key),
        );
        Ok(keys)
    }
}
