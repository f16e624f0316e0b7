//! Audit export (JSON Lines and CSV) and the offline verifier.
//!
//! # JSON Lines layout (`keyvault-audit-export/1`)
//!
//! ```text
//! {"keyvault_audit_export":1,"origin":"keyvault/…","tree_size":N,"filtered":false}
//! {"checkpoint":"<signed note>"}      C2SP tlog-checkpoint of tree size N, Ed25519, signed by
//!                                     the vault when the export began
//! {"audit_key_rotation":{…}}          one per audit key rotation at or before the checkpoint,
//!                                     oldest first (none if the key was never rotated)
//! <entry bytes>                       the exact leaf bytes of entry 0 (see `entry`)
//! {"leaf_hash":"<base64>"}            the vault's stored leaf hash of that entry (unfiltered)
//! <entry bytes>
//! {"inclusion_proof":["<base64>",…]}  (filtered exports: RFC 6962 proof of the entry, index =
//! …                                    its `seq`, in the tree of the checkpoint above)
//! {"end":{"entries":K}}               the last line: K entries were exported
//! ```
//!
//! Once entries were archived (`keyvault audit archive`), the live log starts at a later
//! sequence number F, and so do an unfiltered export and an archive file after the first. Their
//! header then also carries `"first_seq":F` and `"prefix":["<base64>",…]`: the perfect-subtree
//! hashes that make up entries `[0, F)`, largest first (one per set bit of F). The verifier
//! starts its tree from them, so the root it recomputes still proves the entries from F to the
//! checkpoint's size complete and unchanged; the prefix itself is vouched for by the signed root.
//!
//! The checkpoint comes first so that a verifier can check each entry as it streams by, with
//! memory that does not grow with the export.
//!
//! After an audit key rotation the checkpoint is signed by the newest key. An auditor keeps the
//! key they pinned: each `audit_key_rotation` line (`{"seq", "entry", "inclusion_proof",
//! "checkpoint", "consistency_proof"}`, see [`rotation`]) carries the
//! `audit.key_rotated` entry, its inclusion proof in the transition checkpoint's tree, that
//! checkpoint (signed by the old key and the new one) and a consistency proof from it to the
//! export's checkpoint. The verifier follows them from the pinned key ([`rotation::follow`]):
//! each transition must be signed by the key trusted so far and by the key its entry
//! announces, which then signs what follows. Since every rotation line carries its own proofs,
//! a filtered export proves the rotations exactly as an unfiltered one does, and so does an
//! export whose rotation entries were archived. A verifier older than this line refuses it as
//! unrecognised, which is right: it could not check the newer key.
//!
//! An unfiltered export holds every entry from sequence 0 to the checkpoint's size: the verifier
//! recomputes the RFC 6962 root from the entries and checks it against the signed checkpoint,
//! which proves none was changed, removed, inserted or reordered. The stored leaf hashes only
//! help name the entry that was changed; they are not trusted. A filtered export proves each
//! entry belongs to the signed tree, not that none was left out. The `filtered` mark is not
//! signed: [`VerifyReport::require_complete`] says whether what was proven is the whole log
//! from a start the auditor states.

use std::io::BufRead;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::cosignature::CosignatureVerifier;
use super::entry::Entry;
use super::lines::{leaf_hash_of_line, seq_of_entry};
use super::merkle::{self, Frontier, Hash};
use super::note::{self, Checkpoint, NoteVerifier};
use super::rotation::{self, Followed, RotationLine};

pub use super::lines::{
    EXPORT_VERSION, LEAF_HASH_LINE, checkpoint_line, end_line, header_line, leaf_hash_line,
    proof_line,
};

/// Which entries to export. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// Entries at or after this Unix millisecond.
    pub since_ms: Option<u64>,
    /// Entries before this Unix millisecond.
    pub until_ms: Option<u64>,
    /// Entries of this owner.
    pub owner: Option<String>,
    /// Entries of this key or token id (hex).
    pub key_id: Option<String>,
    /// Entries of this event (`key.verify`, ...).
    pub event: Option<String>,
    /// Entries with this outcome (a verify code such as `VALID`, or `ok`, `denied`, ...).
    pub outcome: Option<String>,
    /// Only the last this many entries of the log (before the other filters pick from them):
    /// the export starts there, with the prefix hashes of what is before, as after an archive.
    pub last: Option<u64>,
}

impl ExportFilter {
    /// Whether the filter selects every entry of the range it exports (`last` sets the range,
    /// and an export of the last N entries with no other filter is a whole range from there).
    pub fn is_everything(&self) -> bool {
        *self
            == ExportFilter {
                last: self.last,
                ..ExportFilter::default()
            }
    }

    /// Whether `entry` passes.
    pub fn matches(&self, entry: &Entry) -> bool {
        self.since_ms.is_none_or(|s| entry.time_ms >= s)
            && self.until_ms.is_none_or(|u| entry.time_ms < u)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| entry.owner.as_ref() == Some(o))
            && self
                .key_id
                .as_ref()
                .is_none_or(|k| entry.key_id.as_ref() == Some(k))
            && self.event.as_ref().is_none_or(|e| &entry.event == e)
            && self.outcome.as_ref().is_none_or(|o| &entry.outcome == o)
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Verifiable JSON Lines.
    Jsonl,
    /// CSV for spreadsheets (not verifiable).
    Csv,
}

/// The CSV header row. `time` is `time_ms` as RFC 3339 UTC, for people reading the sheet.
pub const CSV_HEADER: &str =
    "seq,time_ms,time,event,outcome,key_id,owner,actor,client,request_id,details,salt\n";

/// One entry as a CSV row. Cells that a spreadsheet would run as a formula (starting with `=`,
/// `+`, `-`, `@`, tab or CR) are prefixed with `'`.
pub fn csv_row(entry: &Entry) -> String {
    let details = serde_json::to_string(&entry.details).unwrap_or_default();
    let cells = [
        entry.seq.to_string(),
        entry.time_ms.to_string(),
        rfc3339_ms(entry.time_ms),
        entry.event.clone(),
        entry.outcome.clone(),
        entry.key_id.clone().unwrap_or_default(),
        entry.owner.clone().unwrap_or_default(),
        entry.actor.clone(),
        entry.client.clone().unwrap_or_default(),
        entry.request_id.clone().unwrap_or_default(),
        details,
        entry.salt.clone(),
    ];
    let mut row = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        row.push_str(&csv_cell(cell));
    }
    row.push('\n');
    row
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-12-06T15:51:27.123Z`).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

fn csv_cell(cell: &str) -> String {
    let guarded = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// What a successful verify proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// Whether the export was filtered (inclusion only) or whole (complete and untampered).
    pub filtered: bool,
    /// The signed checkpoint they were checked against.
    pub checkpoint: Checkpoint,
    /// Set when an earlier checkpoint was given and the signed tree extends it.
    pub extends: Option<u64>,
    /// The first sequence number the export could hold (entries before it were archived).
    pub first_seq: u64,
    /// The checkpoint's signed note as the export carries it, with any witness cosignatures.
    pub checkpoint_note: String,
    /// The audit key rotations followed from the pinned key to the key that signed the
    /// checkpoint, oldest first (empty if it was signed by the pinned key).
    pub rotations: Vec<Followed>,
}

impl VerifyReport {
    /// The witnesses among `witnesses` whose cosignature on the checkpoint verifies, with its
    /// time; fails unless there are at least `min` (distinct witnesses, each counted once).
    /// This is what `audit verify --witness KEY --min-cosignatures K` checks.
    pub fn require_cosignatures(
        &self,
        witnesses: &[CosignatureVerifier],
        min: usize,
    ) -> Result<Vec<(String, u64)>, VerifyError> {
        let mut cosigned: Vec<(String, u64)> = Vec::new();
        let mut refused = Vec::new();
        for w in witnesses {
            if cosigned.iter().any(|(name, _)| name == w.name()) {
                continue;
            }
            match w.verify(&self.checkpoint_note) {
                Ok(time) => cosigned.push((w.name().to_owned(), time)),
                Err(e) => refused.push(format!("{}: {e}", w.name())),
            }
        }
        if cosigned.len() < min {
            return Err(fail(
                0,
                format!(
                    "the checkpoint of size {} has {} valid cosignature(s) of the {} needed ({})",
                    self.checkpoint.size,
                    cosigned.len(),
                    min,
                    refused.join("; ")
                ),
            ));
        }
        Ok(cosigned)
    }

    /// Whether what was verified is the whole log from entry `from` to the checkpoint: fails
    /// unless the export is unfiltered, starts at or before `from`, and its entries ran
    /// without a gap to the checkpoint's tree size. This is what `audit verify --complete`
    /// checks.
    ///
    /// It rests on what the signed root proves, not on the header's word. For an unfiltered
    /// export, [`verify_export`] recomputed the root from the header's prefix (the subtree
    /// hashes of `[0, first_seq)`) and every entry from `first_seq` to the checkpoint's size,
    /// so no entry of that range can be missing, added or changed; a filtered export whose
    /// `filtered` mark was edited out carries inclusion proofs, not leaf hashes, and fails
    /// there. What the root cannot prove is why the export starts at `first_seq`: entries
    /// archived before it and entries cut off from its front (with a prefix recomputed from
    /// them) look alike. So the start is the auditor's to state: `from` is 0 unless they hold
    /// the archives of every entry before it (an archive's `upto`).
    pub fn require_complete(&self, from: u64) -> Result<(), VerifyError> {
        if self.filtered {
            return Err(fail(
                0,
                "the export is filtered, which proves each entry genuine but not that none was left out; export without filters",
            ));
        }
        if self.first_seq > from {
            return Err(fail(
                0,
                format!(
                    "the export starts at entry {}, so entries {from}..{} are not in it (archived, or cut off); if you hold the archive that ends at {}, verify with --from {}",
                    self.first_seq, self.first_seq, self.first_seq, self.first_seq
                ),
            ));
        }
        // verify_export already refuses an unfiltered export that stops short; checked again
        // here so that this method alone states what complete means.
        let end = self.first_seq.checked_add(self.entries);
        if end != Some(self.checkpoint.size) {
            return Err(fail(
                0,
                format!(
                    "the export holds {} entries from {}, but the checkpoint covers {}",
                    self.entries, self.first_seq, self.checkpoint.size
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let root = B64.encode(self.checkpoint.root);
        if self.first_seq > 0 && !self.filtered {
            write!(
                f,
                "verified: {} entries ({} to {}), tree size {}, root {root}",
                self.entries,
                self.first_seq,
                self.checkpoint.size.saturating_sub(1),
                self.checkpoint.size
            )?;
        } else if self.filtered {
            write!(
                f,
                "verified: {} entries, each included in tree size {}, root {root}",
                self.entries, self.checkpoint.size
            )?;
        } else {
            write!(
                f,
                "verified: {} entries, tree size {}, root {root}",
                self.entries, self.checkpoint.size
            )?;
        }
        if let Some(old) = self.extends {
            write!(f, "; extends the earlier checkpoint of size {old}")?;
        }
        for r in &self.rotations {
            write!(
                f,
                "; the audit key was rotated at entry {}; followed from the pinned key (transition checkpoint of size {}, new key {})",
                r.seq, r.checkpoint_size, r.public_key
            )?;
        }
        Ok(())
    }
}

/// Why an export failed to verify, naming the line (from 1) and entry where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct VerifyError {
    /// Line number in the export, from 1 (0 for the whole file).
    pub line: u64,
    /// What failed.
    pub why: String,
}

fn fail(line: u64, why: impl Into<String>) -> VerifyError {
    VerifyError {
        line,
        why: why.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    keyvault_audit_export: u64,
    origin: String,
    tree_size: u64,
    filtered: bool,
    #[serde(default)]
    first_seq: u64,
    #[serde(default)]
    prefix: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum Aux {
    #[serde(rename = "leaf_hash")]
    LeafHash(String),
    #[serde(rename = "inclusion_proof")]
    Proof(Vec<String>),
    #[serde(rename = "checkpoint")]
    Checkpoint(String),
    #[serde(rename = "audit_key_rotation")]
    Rotation(RotationLine),
    #[serde(rename = "end")]
    End(End),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    entries: u64,
}

/// Checks the leaf_hash line at line `n`, holding `stored`, against the entry read before it.
fn check_leaf(
    entry: Option<(u64, u64, Hash)>,
    filtered: bool,
    n: u64,
    stored: Hash,
) -> Result<(), VerifyError> {
    let (en, seq, leaf) = entry.ok_or_else(|| fail(n, "a leaf_hash line without an entry"))?;
    if filtered {
        return Err(fail(n, "a leaf_hash line in a filtered export"));
    }
    if stored != leaf {
        return Err(fail(
            en,
            format!("entry {seq} was changed: it does not hash to the leaf the vault stored"),
        ));
    }
    Ok(())
}

fn hash_from_b64(text: &str, line: u64) -> Result<Hash, VerifyError> {
    let bytes = B64
        .decode(text)
        .map_err(|_| fail(line, "a hash is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| fail(line, "a hash is not 32 bytes"))
}

/// Verifies an export read from `input` against the vault's public key `verifier`, and, if
/// `earlier` is given (a signed checkpoint the auditor kept), that the export's tree extends it.
/// Streams: memory does not grow with the export. `progress` gets the count of entries checked.
pub fn verify_export(
    input: impl BufRead,
    verifier: &NoteVerifier,
    earlier: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    let mut lines = input
        .split(b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l));
    let mut next_line = |what: &str| -> Result<(u64, Vec<u8>), VerifyError> {
        let (n, line) = lines
            .next()
            .ok_or_else(|| fail(0, format!("the export is truncated: {what} is missing")))?;
        Ok((n, line.map_err(|e| fail(n, e.to_string()))?))
    };
    let (n, header) = next_line("the header line")?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| fail(n, format!("not a keyvault audit export header: {e}")))?;
    if header.keyvault_audit_export != EXPORT_VERSION {
        return Err(fail(
            n,
            format!(
                "export format version {} is not supported",
                header.keyvault_audit_export
            ),
        ));
    }
    let (cn, line) = next_line("the checkpoint line")?;
    let Ok(Aux::Checkpoint(note)) = serde_json::from_slice::<Aux>(&line) else {
        return Err(fail(cn, "expected the checkpoint line after the header"));
    };
    // The audit key rotation lines right after it, and the first line that is not one.
    let mut rotation_lines = Vec::new();
    let mut first_after = None;
    for (n, line) in lines.by_ref() {
        let line = line.map_err(|e| fail(n, e.to_string()))?;
        match serde_json::from_slice::<Aux>(&line) {
            Ok(Aux::Rotation(r)) => {
                if rotation_lines.len() == 64 {
                    return Err(fail(n, "more than 64 audit key rotation lines"));
                }
                rotation_lines.push((n, r));
            }
            _ => {
                first_after = Some((n, Ok(line)));
                break;
            }
        }
    }
    let unsigned = note::split(&note)
        .map_err(|e| fail(cn, format!("the checkpoint: {e}")))?
        .0;
    let unverified = Checkpoint::parse_note_text(unsigned)
        .map_err(|e| fail(cn, format!("the checkpoint: {e}")))?;
    let (rotation_lines, rotation_line_numbers): (Vec<RotationLine>, Vec<u64>) =
        rotation_lines.into_iter().map(|(n, r)| (r, n)).unzip();
    // A cluster node's log (origin `keyvault/<vault id>/<node id>`) is signed with the vault's
    // audit key under the node's origin: the vault's key, as init printed it, verifies it.
    let node_key;
    let verifier = match unverified.origin.strip_prefix(verifier.name()) {
        Some(node) if node.starts_with('/') => {
            node_key = verifier
                .renamed(&unverified.origin)
                .map_err(|e| fail(cn, format!("the checkpoint's origin: {e}")))?;
            &node_key
        }
        _ => verifier,
    };
    let (trusted, followed) = rotation::follow(&rotation_lines, verifier, &unverified)
        .map_err(|(i, why)| fail(rotation_line_numbers[i], why))?;
    // Invariant: `follow` returns the pinned key first.
    let signer = trusted.last().expect("the pinned key is trusted");
    let text = signer.verify(&note).map_err(|e| {
        let whose = if followed.is_empty() {
            "the given public key".to_owned()
        } else {
            format!("the key the last audit key rotation announced ({signer})")
        };
        fail(
            cn,
            format!("the checkpoint does not verify with {whose}: {e}"),
        )
    })?;
    let cp =
        Checkpoint::parse_note_text(&text).map_err(|e| fail(cn, format!("the checkpoint: {e}")))?;
    if cp.origin != header.origin || cp.size != header.tree_size {
        return Err(fail(
            cn,
            "the checkpoint does not match the export's header",
        ));
    }
    let earlier = earlier
        .map(|note| {
            // Signed by any key followed: an earlier checkpoint may predate a rotation.
            let text = trusted
                .iter()
                .find_map(|k| k.verify(note).ok())
                .ok_or_else(|| {
                    fail(
                        0,
                        "the earlier checkpoint does not verify with the pinned key or a key followed from it",
                    )
                })?;
            Checkpoint::parse_note_text(&text)
                .map_err(|e| fail(0, format!("the earlier checkpoint: {e}")))
        })
        .transpose()?;
    if let Some(old) = &earlier {
        if old.origin != cp.origin {
            return Err(fail(0, "the earlier checkpoint is of another log"));
        }
        if old.size > cp.size {
            return Err(fail(
                0,
                format!(
                    "the earlier checkpoint (size {}) is larger than this export's ({})",
                    old.size, cp.size
                ),
            ));
        }
        if header.filtered {
            return Err(fail(
                0,
                format!(
                    "a filtered export cannot prove consistency with the checkpoint of size {}; verify an unfiltered export",
                    old.size
                ),
            ));
        }
    }

    let first_seq = header.first_seq;
    if first_seq > cp.size {
        return Err(fail(
            n,
            "the header's first_seq is past the checkpoint's tree size",
        ));
    }
    let mut frontier = if first_seq == 0 || header.filtered {
        Frontier::new()
    } else {
        if header.prefix.len() > 64 {
            return Err(fail(n, "a prefix longer than 64 hashes"));
        }
        let hashes = header
            .prefix
            .iter()
            .map(|h| hash_from_b64(h, n))
            .collect::<Result<Vec<_>, _>>()?;
        Frontier::from_parts(first_seq, hashes).map_err(|e| fail(n, format!("the prefix: {e}")))?
    };
    if let Some(old) = &earlier
        && !header.filtered
        && old.size < first_seq
    {
        return Err(fail(
            0,
            format!(
                "the earlier checkpoint (size {}) is before this export's first entry {first_seq} (the entries before it were archived): verify the archive that holds it, or ask the vault for a consistency proof",
                old.size
            ),
        ));
    }
    let mut earlier_root = earlier
        .as_ref()
        .filter(|c| c.size == frontier.size() && !header.filtered)
        .map(|_| frontier.root());
    let mut last_seq: Option<u64> = None;
    let mut count = 0u64;
    // The entry read last, waiting for its leaf_hash or inclusion_proof line.
    let mut current: Option<(u64, u64, Hash)> = None;
    let mut ended = false;
    // An entry read but never followed by its leaf_hash or inclusion_proof line.
    let unproven = |(line, seq, _): (u64, u64, Hash)| {
        let what = if header.filtered {
            "inclusion_proof"
        } else {
            "leaf_hash"
        };
        fail(line, format!("entry {seq} has no {what} line"))
    };
    for (n, line) in first_after.into_iter().chain(lines) {
        let line = line.map_err(|e| fail(n, e.to_string()))?;
        if line.is_empty() {
            continue;
        }
        if ended {
            return Err(fail(n, "data after the end line"));
        }
        if line.starts_with(b"{\"seq\":") {
            if let Some(missing) = current.take() {
                return Err(unproven(missing));
            }
            let seq = seq_of_entry(&line).ok_or_else(|| {
                fail(
                    n,
                    "an entry line does not begin with its sequence number and time",
                )
            })?;
            match (header.filtered, last_seq) {
                (false, None) if seq != first_seq => {
                    return Err(fail(
                        n,
                        if seq < first_seq {
                            format!(
                                "the first entry is {seq}, but the export starts at {first_seq}"
                            )
                        } else {
                            format!(
                                "the first entry is {seq}, not {first_seq}: entries {first_seq}..{seq} are missing"
                            )
                        },
                    ));
                }
                (false, Some(prev)) if seq != prev + 1 => {
                    return Err(fail(
                        n,
                        if seq <= prev {
                            format!("entry {seq} is out of order or repeated (after entry {prev})")
                        } else {
                            format!(
                                "entries {}..{seq} are missing (entry {seq} follows entry {prev})",
                                prev + 1
                            )
                        },
                    ));
                }
                (true, Some(prev)) if seq <= prev => {
                    return Err(fail(
                        n,
                        format!("entry {seq} is out of order or repeated (after entry {prev})"),
                    ));
                }
                _ => {}
            }
            if seq >= cp.size {
                return Err(fail(
                    n,
                    format!("entry {seq} is past the checkpoint's tree size {}", cp.size),
                ));
            }
            last_seq = Some(seq);
            let leaf = merkle::leaf_hash(&line);
            if !header.filtered {
                frontier.push(leaf);
                if earlier.as_ref().is_some_and(|c| c.size == frontier.size()) {
                    earlier_root = Some(frontier.root());
                }
            }
            count += 1;
            progress(count);
            current = Some((n, seq, leaf));
            continue;
        }
        if let Some(stored) = leaf_hash_of_line(&line) {
            check_leaf(current.take(), header.filtered, n, stored)?;
            continue;
        }
        let aux: Aux = serde_json::from_slice(&line)
            .map_err(|e| fail(n, format!("unrecognised line: {e}")))?;
        match aux {
            Aux::LeafHash(text) => {
                let stored = hash_from_b64(&text, n)?;
                check_leaf(current.take(), header.filtered, n, stored)?;
            }
            Aux::Proof(hashes) => {
                let (en, seq, leaf) = current
                    .take()
                    .ok_or_else(|| fail(n, "an inclusion_proof line without an entry"))?;
                if !header.filtered {
                    return Err(fail(n, "an inclusion_proof line in an unfiltered export"));
                }
                if hashes.len() > 64 {
                    return Err(fail(n, "an inclusion proof longer than 64 hashes"));
                }
                let proof = hashes
                    .iter()
                    .map(|h| hash_from_b64(h, n))
                    .collect::<Result<Vec<_>, _>>()?;
                merkle::verify_inclusion(&leaf, seq, cp.size, &proof, &cp.root)
                    .map_err(|e| fail(en, format!("entry {seq} is not in the signed tree: {e}")))?;
            }
            Aux::Checkpoint(_) => return Err(fail(n, "a second checkpoint line")),
            Aux::Rotation(_) => {
                return Err(fail(
                    n,
                    "an audit key rotation line away from the checkpoint line",
                ));
            }
            Aux::End(end) => {
                if let Some(missing) = current.take() {
                    return Err(unproven(missing));
                }
                if end.entries != count {
                    return Err(fail(
                        n,
                        format!(
                            "the end line counts {} entries but the export holds {count}: entries were removed or added",
                            end.entries
                        ),
                    ));
                }
                ended = true;
            }
        }
    }
    if let Some(missing) = current {
        return Err(unproven(missing));
    }
    let next = first_seq + count;
    if !ended {
        let missing = if header.filtered || next >= cp.size {
            String::new()
        } else {
            format!(
                " (the checkpoint covers {}: entries {next}..{} are missing)",
                cp.size, cp.size
            )
        };
        return Err(fail(
            0,
            format!("the export is truncated after {count} entries: it has no end line{missing}"),
        ));
    }
    if !header.filtered {
        if next < cp.size {
            return Err(fail(
                cn,
                format!(
                    "the export ends after {count} entries but the checkpoint covers {}: entries {next}..{} are missing",
                    cp.size, cp.size
                ),
            ));
        }
        if frontier.root() != cp.root {
            return Err(fail(
                cn,
                "the entries do not hash to the signed root: an entry was changed",
            ));
        }
    }
    let extends = match &earlier {
        None => None,
        Some(old) => {
            let root = earlier_root
                .ok_or_else(|| fail(0, "the earlier checkpoint's size was never reached"))?;
            if root != old.root {
                return Err(fail(
                    0,
                    format!(
                        "the log does not extend the earlier checkpoint of size {}: history was rewritten",
                        old.size
                    ),
                ));
            }
            Some(old.size)
        }
    };
    Ok(VerifyReport {
        entries: count,
        filtered: header.filtered,
        checkpoint: cp,
        extends,
        first_seq,
        checkpoint_note: note,
        rotations: followed,
    })
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn csv_times_are_rfc_3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_900_000_000_123), "2030-03-17T17:46:40.123Z");
    }
}
