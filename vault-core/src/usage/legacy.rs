//! The figures in the store's `Usage` space, where vaults kept them before the figures file.
//!
//! Still read: a vault whose figures are there (written by an earlier build, or restored from a
//! backup, which carries the figures in this form) loads them at open, and the first full store
//! to the figures file then empties the space. Still written: only into backups (see
//! [`each`]), whose file format predates the figures file.
//!
//! ```text
//! 0x09 'b' | size ('h' | 'd') | subject ('k' | 'o') | bucket start, Unix s, u64 BE | key id hex or owner (UTF-8)
//!      -> JSON {"codes":{"VALID":n,...},"credits_spent":n,"clients":[address hash,...],"clients_truncated":bool}
//! 0x09 'k' | key id hex -> JSON {"owner":"...","first_ms":n,"seen":{"address hash":last seen ms,...}}
//! 0x09 's' -> JSON {"next_signal":n,"signals":[Signal,...],"open":[[kind,key id,signal id],...]}
//! 0x09 'c' -> next sequence number to fold u64 BE (8) | newest entry time ms u64 BE (8)
//! ```

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregate, Counts, Granularity, KeyTrack, Signal, SignalKind, Subject};
use crate::storage::{Space, Store};
use crate::{Error, Result};

const COVERS: &[u8] = b"c";
const SIGNALS: &[u8] = b"s";
const BUCKET: u8 = b'b';
const KEY: u8 = b'k';

fn bucket_id(g: Granularity, subject: &Subject, start: u64) -> Vec<u8> {
    let mut id = vec![BUCKET, g.tag(), subject.tag()];
    id.extend_from_slice(&start.to_be_bytes());
    id.extend_from_slice(subject.text().as_bytes());
    id
}

fn key_id(key: &str) -> Vec<u8> {
    let mut id = vec![KEY];
    id.extend_from_slice(key.as_bytes());
    id
}

#[derive(Serialize, Deserialize)]
struct StoredSignals {
    next_signal: u64,
    signals: VecDeque<Signal>,
    open: Vec<(SignalKind, String, u64)>,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: the stored types hold strings, integers, booleans, sequences and maps with
    // string keys, which serde_json always serialises.
    serde_json::to_vec(value).expect("usage figures serialise")
}

/// Calls `f` with every `(id in the space, value)` of `agg` in the stored form.
pub(crate) fn each(agg: &Aggregate, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
    for ((g, subject, start), counts) in agg.buckets() {
        f(&bucket_id(g, &subject, start), &to_json(counts))?;
    }
    for (key, track) in agg.tracks() {
        f(&key_id(key), &to_json(track))?;
    }
    let mut open: Vec<_> = agg
        .open
        .iter()
        .map(|((kind, key), id)| (*kind, key.to_string(), *id))
        .collect();
    // In (kind, key) order: the same open slots give the same bytes.
    open.sort_unstable();
    let stored = StoredSignals {
        next_signal: agg.next_signal,
        signals: agg.signals.clone(),
        open,
    };
    f(SIGNALS, &to_json(&stored))?;
    let mut covers = [0u8; 16];
    covers[..8].copy_from_slice(&agg.next_seq.to_be_bytes());
    covers[8..].copy_from_slice(&agg.latest_ms.to_be_bytes());
    f(COVERS, &covers)
}

fn corrupt(what: &str, why: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("stored usage figures: {what}: {why}"))
}

/// The sequence number the figures in the space cover, if any are there.
pub(crate) fn covers(store: &Store) -> Result<Option<u64>> {
    let Some(value) = store.get(Space::Usage, COVERS)? else {
        return Ok(None);
    };
    let seq: [u8; 8] = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("the covered sequence number", "not 16 bytes"))?;
    Ok(Some(u64::from_be_bytes(seq)))
}

/// Whether the space holds anything.
pub(crate) fn present(store: &Store) -> Result<bool> {
    Ok(store.scan(Space::Usage).next().transpose()?.is_some())
}

/// The figures in the space (empty if there are none).
pub(crate) fn load(store: &Store) -> Result<Aggregate> {
    let mut agg = Aggregate::default();
    for item in store.scan(Space::Usage) {
        let (id, value) = item?;
        match id.first() {
            Some(&BUCKET) => {
                let (g, subject, start) =
                    parse_bucket_id(&id).ok_or_else(|| corrupt("a bucket id", "malformed"))?;
                let counts: Counts =
                    serde_json::from_slice(&value).map_err(|e| corrupt("a bucket", e))?;
                agg.series_mut(subject).insert(g, start, counts);
            }
            Some(&KEY) => {
                let key =
                    String::from_utf8(id[1..].to_vec()).map_err(|e| corrupt("a key id", e))?;
                let track: KeyTrack =
                    serde_json::from_slice(&value).map_err(|e| corrupt("a key", e))?;
                agg.set_track(key.into(), Some(track));
            }
            _ if id == SIGNALS => {
                let stored: StoredSignals =
                    serde_json::from_slice(&value).map_err(|e| corrupt("the signals", e))?;
                agg.next_signal = stored.next_signal;
                agg.signals = stored.signals;
                agg.open = stored
                    .open
                    .into_iter()
                    .map(|(kind, key, id)| ((kind, key.into()), id))
                    .collect();
            }
            _ if id == COVERS => {
                let bytes: [u8; 16] = value
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("the covered sequence number", "not 16 bytes"))?;
                let (seq, latest) = bytes.split_at(8);
                // Invariant: halves of a 16-byte array.
                agg.next_seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
                agg.latest_ms = u64::from_be_bytes(latest.try_into().expect("8 bytes"));
            }
            _ => return Err(corrupt("an id", "unknown")),
        }
    }
    Ok(agg)
}

fn parse_bucket_id(id: &[u8]) -> Option<(Granularity, Subject, u64)> {
    let g = Granularity::from_tag(*id.get(1)?)?;
    let start = u64::from_be_bytes(id.get(3..11)?.try_into().ok()?);
    let text = String::from_utf8(id.get(11..)?.to_vec()).ok()?;
    let subject = match id.get(2)? {
        b'k' => Subject::Key(text),
        b'o' => Subject::Owner(text),
        _ => return None,
    };
    Some((g, subject, start))
}

/// Empties the space (a chunk at a time).
pub(crate) fn clear(store: &Store) -> Result<u64> {
    crate::audit::log::remove_keys_while(store, Space::Usage, |_| Ok(true))
}
