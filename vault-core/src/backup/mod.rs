//! Online backup and offline restore. `format.rs` holds the file format's constants and what a
//! backup and a restore report; `writer.rs` writes the file, `reader.rs` reads and checks it,
//! `restore.rs` turns it back into a data directory; the handle's methods (`vault/backup.rs`:
//! [`Vault::backup`](crate::Vault::backup), [`Vault::restore`](crate::Vault::restore)) only hand
//! them the store, the audit log and the usage figures.
//!
//! [`Vault::backup`](crate::Vault::backup) writes a consistent copy of a running vault
//! (records, keyring, seal configuration, audit log, its tree and checkpoints: the whole store;
//! and the usage figures) without pausing any operation; [`Vault::restore`](crate::Vault::restore)
//! builds a new data directory from it, all or nothing. The restored vault unseals with the
//! passphrase or shares that were current when the backup ran, and its audit log goes on from
//! the backed-up one, so its next checkpoint extends the last one in the backup.
//!
//! # Consistency
//! A backup starts a change capture in the store ([`Store::start_capture`](crate::storage::Store::start_capture)), then reads every
//! `(key, value)` of the store in key order into the file (the *snapshot*), then ends the capture
//! and appends its changes (the *tail*) in apply order, then the audit entries. The scan is not a point-in-time read: it
//! may or may not see a write applied while it runs. That does not matter, because every change
//! in the store is a whole-value put or a remove, applied in one batch with the rest of its
//! operation (a state change and its audit entry, say), and the capture holds every batch applied
//! between its start and its end, each whole. Replaying snapshot then tail, a key touched during
//! the backup ends with its last captured change, and a key not touched ends with the value the
//! scan read, which was its value throughout. So the restored store is exactly the store at the
//! instant the capture ended: each batch is in it whole or not at all, and the audit log has no
//! entry twice and none missing.
//!
//! One space is the exception: the usage figures live in their own file (`usage::file`), not
//! in the store, so the backup skips the store's usage space (where earlier builds kept them)
//! and carries the live figures instead, taken inside the capture before the log's end is
//! recorded, as puts in that space (the form `usage::legacy` reads). Folded only from committed
//! entries, they cover none the backup lacks; a restored vault moves them into its figures
//! file at its first open and folds the entries after them. So usage counted from entries
//! archived before the backup survives a restore.
//!
//! The audit entries themselves are not in the store but in append-only segment files, and the
//! tree's subtree hashes in the tree file; the store holds the log's tail (its size), which the
//! snapshot and capture carry like any other value (the backup has the writer record the
//! current tail just before the capture ends, since the store otherwise learns of a group that
//! changed nothing else up to a second late). So the backup, once the capture has ended, reads
//! from the restored-to-be store state the log's first live entry and its size at that
//! instant, and appends the tree's hashes for that size and exactly those entries from the
//! segment files, neither of which changes below the size. Restore writes the entries into one
//! fresh segment file and rebuilds the tail and the entry index for it; the hashes go into the
//! store's old node space, from which the vault's first open builds its tree file.
//!
//! The backup's own `sys.backup` entry (outcome `ok`, with the snapshot's record count) is
//! committed after the scan and before the capture ends, and while unsealed a checkpoint is then
//! signed over it; both are inside the backup, so the restored log ends with the backup's own
//! record, covered by a signed checkpoint. A backup that fails afterwards also records a
//! `sys.backup` entry with the error's code (outside the backup).
//!
//! # A cluster node
//! Through a cluster node the shared rows live in etcd, which other nodes write too, where a
//! capture sees only this process's batches. So the snapshot's shared rows are read at one
//! etcd revision `R`, picked after the capture started
//! ([`Store::scan_for_backup`](crate::storage::Store::scan_for_backup)), and captured changes
//! of shared rows are left out: the file holds the shared rows as of `R` and the node's own
//! rows and log as above. A node applies a batch's own part (its audit entry) before its
//! shared part, under the lock that starts the capture, so every change of this node's in the
//! rows at `R` has its entry in the backup; the log may also hold entries of changes after `R`,
//! which the restored vault does not hold (a log that over-reports, as a node's two-part apply
//! already allows; never one that omits). Such a file is format 2 and names the node and `R`;
//! restoring it is `vault/cluster_backup.rs`.
//!
//! # File format (`keyvault-backup/1`, and `/2` for a cluster node)
//! All integers big-endian:
//!
//! ```text
//! header  | "KVBACKUP" (8) | backup format u16 (= 1) | vault format u16 | vault id (8) | created_at u64 (Unix s) |
//! frame   | tag (1) | key len u32 | key | [value len u32 | value] |
//!           tag 0x01 snapshot put, 0x02 captured put (both with a value), 0x03 captured remove,
//!           0x04 audit entry (key: its sequence number, u64; value: its canonical bytes);
//!           the audit tree's hashes come as captured puts after the captured changes, keyed
//!           0x07 (the node space) | level u8 | index u64, in the order the subtrees complete,
//!           then the usage figures as captured puts keyed 0x09 (the usage space) | id
//! trailer | 0xFF | snapshot frames u64 | captured frames u64 | entry frames u64 |
//!           SHA-256 of every byte before it (32) |
//! ```
//!
//! Format 2 (a cluster node's backup; backup format 2 in the header) has one more frame,
//! first, in no count: `0x05 | node id len u32 | node id | 8 u32 | etcd revision u64`; its
//! captured frames name no shared row. A one-host backup stays format 1.
//!
//! Keys are raw store keys (space byte first, see the architecture notes); snapshot keys are in
//! strictly increasing order and come before every captured frame; entry frames come last, with
//! consecutive sequence numbers. Nothing may follow the
//! trailer. The digest catches truncation and corruption, not an attacker (who can recompute
//! it): what makes tampering evident is what the store already holds, records sealed with
//! XChaCha20-Poly1305 and an audit log whose checkpoints are signed. The file holds encrypted
//! records and the audit log, whose entries name owners and client addresses in the clear, so it
//! is as sensitive as the data directory: keep it owner-only (the CLI writes it 0600).

mod format;
mod reader;
pub(crate) mod restore;
mod writer;

pub use format::{
    BACKUP_FORMAT, BackupReport, BackupSummary, CLUSTER_FORMAT, ClusterOrigin, ONE_HOST_FORMAT,
    RestoreReport,
};
pub use reader::verify_backup;
pub(crate) use restore::Reopen;
pub(crate) use writer::{Source, write};
