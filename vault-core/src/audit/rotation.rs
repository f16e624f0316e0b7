//! Audit key rotations: what the log records of each, and the export line that lets a verifier
//! holding an older key follow it.
//!
//! `rotate-audit-key` commits an `audit.key_rotated` entry (details `generation` and
//! `public_key`, the new verifier key) with the new keyring. The writer switches signers as it
//! commits that entry: the first checkpoint whose tree includes it (the *transition
//! checkpoint*) is signed by the old key and then by the new one (two signature lines, one
//! origin, two key hashes), and every later checkpoint by the new key only. A crash between the
//! entry and its transition leaves the record below without a checkpoint; the next unseal signs
//! the transition then.
//!
//! The store keeps every rotation in `Local/audit-rotations` as JSON, oldest first:
//! `[{"generation":2,"seq":N,"public_key":"name+hash+base64","checkpoint":S or null,
//! "entry":"<the entry's canonical bytes>"}]`, where `seq` is the entry's sequence number and
//! `checkpoint` the size of the transition checkpoint once it is signed (its note is the stored
//! checkpoint of that size). The entry's bytes are kept so that exports can carry it after it
//! was archived (the tree keeps the hashes its inclusion proof needs).
//!
//! An export carries one `{"audit_key_rotation":{...}}` line per rotation whose transition is at
//! or before its checkpoint, oldest first, right after the checkpoint line (see
//! [`export`](super::export)): the entry's bytes, its inclusion proof in the transition tree,
//! the transition checkpoint, and the consistency proof from the transition tree to the
//! export's. [`follow`] checks them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::entry::Entry;
use super::merkle::{self, Hash};
use super::note::{Checkpoint, NoteVerifier};
use crate::storage::{Space, Store};
use crate::{Error, Result};

/// Where the rotations are stored (space `Local`: each node's log has its own).
pub(crate) const META_ROTATIONS: &[u8] = b"audit-rotations";

/// The event of a rotation's entry.
pub const KEY_ROTATED: &str = "audit.key_rotated";

/// One audit key rotation, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// The new generation's number.
    pub generation: u32,
    /// The sequence number of the `audit.key_rotated` entry.
    pub seq: u64,
    /// The new generation's verifier key, `name+hash+base64`.
    pub public_key: String,
    /// The size of the transition checkpoint, once signed.
    pub checkpoint: Option<u64>,
    /// The entry's canonical bytes, kept so that an export can carry it once the entry is
    /// archived.
    pub entry: String,
}

/// The rotations recorded in `store`, oldest first.
pub(crate) fn read(store: &Store) -> Result<Vec<KeyRotation>> {
    match store.get(Space::Local, META_ROTATIONS)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|_| Error::Corrupt("the audit key rotations do not decode".into())),
    }
}

/// The stored bytes of `rotations`.
pub(crate) fn encode(rotations: &[KeyRotation]) -> Vec<u8> {
    // Invariant: a Vec of plain structs always serialises.
    serde_json::to_vec(rotations).expect("rotations serialise")
}

/// The `audit_key_rotation` line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationLine {
    /// The sequence number of the `audit.key_rotated` entry.
    pub seq: u64,
    /// The entry's canonical bytes (a JSON text inside the JSON line).
    pub entry: String,
    /// The entry's RFC 6962 inclusion proof in the transition checkpoint's tree.
    pub inclusion_proof: Vec<String>,
    /// The transition checkpoint's signed note: old key and new key.
    pub checkpoint: String,
    /// The RFC 6962 consistency proof from the transition tree to the export's tree.
    pub consistency_proof: Vec<String>,
}

impl RotationLine {
    /// The line's JSON text.
    pub fn to_line(&self) -> String {
        serde_json::json!({ "audit_key_rotation": self }).to_string()
    }
}

/// Encodes hashes for a line.
pub(crate) fn b64_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// A rotation [`follow`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    /// The sequence number of its `audit.key_rotated` entry.
    pub seq: u64,
    /// The size of its transition checkpoint.
    pub checkpoint_size: u64,
    /// The key it moved to.
    pub public_key: String,
}

/// Why a rotation line was refused.
pub type FollowError = String;

/// The new key an `audit.key_rotated` entry carries, if `bytes` is one.
fn announced_key(bytes: &[u8]) -> std::result::Result<(u64, NoteVerifier), FollowError> {
    let entry = Entry::parse(bytes).map_err(|e| format!("its entry does not parse: {e}"))?;
    if entry.event != KEY_ROTATED || entry.outcome != "ok" {
        return Err(format!(
            "its entry {} is a {} entry, not {KEY_ROTATED}",
            entry.seq, entry.event
        ));
    }
    let key = entry
        .details
        .get("public_key")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("its entry {} carries no public_key", entry.seq))?;
    let key = NoteVerifier::parse(key)
        .map_err(|e| format!("the key its entry {} carries: {e}", entry.seq))?;
    Ok((entry.seq, key))
}

fn hashes(texts: &[String]) -> std::result::Result<Vec<Hash>, FollowError> {
    if texts.len() > 64 {
        return Err("a proof longer than 64 hashes".into());
    }
    texts
        .iter()
        .map(|t| {
            B64.decode(t)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| "a proof hash is not 32 bytes of base64".to_owned())
        })
        .collect()
}

/// Follows the rotation lines of an export from the pinned key `pinned` to the key that must
/// sign the export's checkpoint `head` (origin, size and root; its signature is the caller's to
/// check with the key returned). Each rotation followed must:
///
/// - carry an `audit.key_rotated` entry that is included (inclusion proof) in its transition
///   checkpoint's tree, so it is at or before that checkpoint;
/// - have its transition checkpoint (of `head`'s origin) signed by the key trusted so far AND
///   by the new key that entry carries;
/// - be extended by `head` (consistency proof), and come after the previous rotation.
///
/// Rotations up to the one whose new key is `pinned` (an auditor who pinned a later key) are
/// skipped: nothing in them needs trusting. The keys trusted along the way (the pinned one
/// first) and the rotations followed are returned.
pub fn follow(
    lines: &[RotationLine],
    pinned: &NoteVerifier,
    head: &Checkpoint,
) -> std::result::Result<(Vec<NoteVerifier>, Vec<Followed>), (usize, FollowError)> {
    let mut announced = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let (seq, key) = announced_key(line.entry.as_bytes()).map_err(|e| (i, e))?;
        if seq != line.seq {
            return Err((i, format!("its entry is {seq}, not {}", line.seq)));
        }
        announced.push(key);
    }
    let start = announced
        .iter()
        .rposition(|k| k == pinned)
        .map_or(0, |i| i + 1);
    let mut trusted = vec![pinned.clone()];
    let mut followed: Vec<Followed> = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start) {
        let err = |why: String| (i, why);
        let new = &announced[i];
        // Invariant: `trusted` starts with the pinned key and only grows.
        let old = trusted.last().expect("the pinned key is trusted");
        let text = old.verify(&line.checkpoint).map_err(|e| {
            err(format!(
                "the audit key rotation at entry {} is not signed by the key it replaces ({}): {e}",
                line.seq, old
            ))
        })?;
        new.verify(&line.checkpoint).map_err(|e| {
            err(format!(
                "the transition checkpoint of the audit key rotation at entry {} is not signed by the new key its entry carries ({new}): {e}",
                line.seq
            ))
        })?;
        let transition = Checkpoint::parse_note_text(&text)
            .map_err(|e| err(format!("the transition checkpoint: {e}")))?;
        if transition.origin != head.origin {
            return Err(err("the transition checkpoint is of another log".into()));
        }
        if transition.size > head.size {
            return Err(err(format!(
                "the transition checkpoint (size {}) is past the export's (size {})",
                transition.size, head.size
            )));
        }
        if let Some(prev) = followed.last()
            && (line.seq < prev.checkpoint_size || transition.size < prev.checkpoint_size)
        {
            return Err(err(format!(
                "the audit key rotation at entry {} comes before the one it follows (entry {})",
                line.seq, prev.seq
            )));
        }
        let leaf = merkle::leaf_hash(line.entry.as_bytes());
        let proof = hashes(&line.inclusion_proof).map_err(err)?;
        merkle::verify_inclusion(&leaf, line.seq, transition.size, &proof, &transition.root)
            .map_err(|e| {
                err(format!(
                    "entry {} is not in the transition checkpoint's tree: {e}",
                    line.seq
                ))
            })?;
        let proof = hashes(&line.consistency_proof).map_err(err)?;
        merkle::verify_consistency(
            transition.size,
            head.size,
            &transition.root,
            &head.root,
            &proof,
        )
        .map_err(|e| {
            err(format!(
                "the export's tree does not extend the transition checkpoint of size {}: {e}",
                transition.size
            ))
        })?;
        followed.push(Followed {
            seq: line.seq,
            checkpoint_size: transition.size,
            public_key: new.to_string(),
        });
        trusted.push(new.clone());
    }
    Ok((trusted, followed))
}
