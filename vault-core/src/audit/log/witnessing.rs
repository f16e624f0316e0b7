//! Keeping the audit log rollback-proof: the largest checkpoint of its own that the vault can
//! see, and the witnesses that cosign its checkpoints.
//!
//! **The floor.** At unseal, before the signer is set, [`check_rollback`] finds the largest
//! checkpoint of this log in the store (its `Checkpoint` space, whatever the pointer says), in
//! the checkpoint file (its last 64 KiB) and at every reachable witness (its latest cosigned
//! checkpoint, or the size it answers 409 with). A checkpoint larger than the log, or one whose
//! root is not the log's tree at its size, is a rolled-back or forked data directory: unseal
//! fails with [`Error::RolledBack`], naming the sizes, and nothing is signed. The largest one
//! found is the *floor*: the writer never signs a checkpoint that does not extend it, and a
//! witness that later answers with a larger size raises it.
//!
//! **Submission.** Each signed checkpoint wakes the witness thread, which sends it to each
//! witness with a consistency proof from the size that witness holds (`add-checkpoint`), keeps
//! the cosignature lines that verify under the witness's key in the stored note, the checkpoint
//! file and the log's latest checkpoint, and retries what failed every [`RETRY`]. A witness that
//! holds more than the log (409), or that finds the checkpoint inconsistent with its own (422),
//! means another history of this log was signed: the log stops, as after an integrity failure,
//! and says why. The verify path never waits for a witness; an export waits up to
//! [`EXPORT_WAIT`] for one round, so that its checkpoint carries the cosignatures.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::checkpoint::SignedCheckpoint;
use crate::audit::cosignature::add_signatures;
use crate::audit::merkle::{self, Hash};
use crate::audit::note::{Checkpoint, NoteVerifier};
use crate::storage::{Space, Store};
use crate::witness::client::{Answer, Client, WitnessConfig};
use crate::witness::protocol::AddCheckpoint;
use crate::{Error, Result};

/// What witnessing needs of the log it keeps rollback-proof (the log's shared state implements
/// it, beside the signing of checkpoints, which the floor constrains).
pub(super) trait WitnessedLog {
    /// The log's origin line.
    fn origin(&self) -> &str;
    /// The store, whose `Checkpoint` space holds every checkpoint signed.
    fn store(&self) -> &Store;
    /// The latest signed checkpoint.
    fn latest(&self) -> Option<SignedCheckpoint>;
    /// The stored perfect-subtree hash at `(level, index)`.
    fn node(&self, level: u8, index: u64) -> Result<Hash>;
    /// Raises the floor to the checkpoint of `size` (with `root`, if known) that `source`
    /// holds, after checking that the log extends it.
    fn raise_floor(&self, size: u64, root: Option<Hash>, source: &str) -> Result<()>;
    /// Stops the log for `e`, loudly: no later commit or checkpoint until an operator looks.
    fn stop_for(&self, e: &Error);
    /// Adds cosignature `lines` to the stored checkpoint of `size`, the checkpoint file and the
    /// latest checkpoint if it is that one.
    fn add_cosignatures(&self, size: u64, lines: &str) -> Result<()>;
}

/// How often submissions that failed are tried again.
const RETRY: Duration = Duration::from_secs(10);
/// Longest an export waits for its checkpoint's cosignatures.
pub(super) const EXPORT_WAIT: Duration = Duration::from_secs(6);
/// How much of the end of the checkpoint file is read at unseal.
const FILE_TAIL: u64 = 64 * 1024;

/// The witnesses of one log and the thread's wake-ups.
#[derive(Debug)]
pub(super) struct Witnesses {
    client: Client,
    remotes: Vec<Remote>,
    wake: Mutex<Wake>,
    /// Signalled to wake the thread (a new checkpoint, an export waiting, stop).
    woken: Condvar,
    /// Signalled when a round of submissions ends.
    rounds: Condvar,
}

#[derive(Debug)]
struct Remote {
    config: WitnessConfig,
    state: Mutex<RemoteState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct RemoteState {
    /// The size of the checkpoint the witness holds, as far as the vault knows.
    holds: Option<u64>,
}

#[derive(Debug, Default)]
struct Wake {
    pending: bool,
    stop: bool,
    /// Rounds started and ended.
    started: u64,
    ended: u64,
    /// The size of the checkpoint the latest round sent.
    sent: Option<u64>,
}

impl Witnesses {
    pub(super) fn new(configs: Vec<WitnessConfig>) -> Witnesses {
        Witnesses {
            client: Client::new(),
            remotes: configs
                .into_iter()
                .map(|config| Remote {
                    config,
                    state: Mutex::new(RemoteState::default()),
                })
                .collect(),
            wake: Mutex::new(Wake::default()),
            woken: Condvar::new(),
            rounds: Condvar::new(),
        }
    }

    fn wake_lock(&self) -> MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new checkpoint was signed: send it.
    pub(super) fn notify(&self) {
        self.wake_lock().pending = true;
        self.woken.notify_one();
    }

    /// Ends the thread after its current round.
    pub(super) fn stop(&self) {
        self.wake_lock().stop = true;
        self.woken.notify_one();
    }

    /// Starts a round now and waits until it ends, at most `timeout`; the size of the checkpoint
    /// the round sent, if it ended in time.
    pub(super) fn wait_round(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut wake = self.wake_lock();
        // A round that starts after this call sees the latest checkpoint.
        let want = wake.started + 1;
        wake.pending = true;
        self.woken.notify_one();
        while wake.ended < want && !wake.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            wake = self
                .rounds
                .wait_timeout(wake, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if wake.ended < want { None } else { wake.sent }
    }
}

/// The witness thread: a round of submissions at each new checkpoint, and every [`RETRY`]
/// while a witness lags.
pub(super) fn run(shared: Arc<impl WitnessedLog>, witnesses: Arc<Witnesses>) {
    let mut lagging = false;
    loop {
        {
            let mut wake = witnesses.wake_lock();
            let started = Instant::now();
            while !wake.pending && !wake.stop {
                let left = RETRY.saturating_sub(started.elapsed());
                if lagging && left.is_zero() {
                    break;
                }
                let wait = if lagging { left } else { RETRY };
                wake = witnesses
                    .woken
                    .wait_timeout(wake, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if wake.stop {
                wake.ended = wake.started;
                witnesses.rounds.notify_all();
                return;
            }
            wake.pending = false;
            wake.started += 1;
        }
        lagging = false;
        let last = shared.latest();
        witnesses.wake_lock().sent = last.as_ref().map(|l| l.checkpoint.size);
        if let Some(last) = last {
            for remote in &witnesses.remotes {
                lagging |= !submit(&*shared, &witnesses.client, remote, &last);
            }
        }
        let mut wake = witnesses.wake_lock();
        wake.ended = wake.started;
        witnesses.rounds.notify_all();
    }
}

/// Sends `last` to one witness; whether the witness now holds it.
fn submit(
    shared: &impl WitnessedLog,
    client: &Client,
    remote: &Remote,
    last: &SignedCheckpoint,
) -> bool {
    let name = remote.config.name();
    let size = last.checkpoint.size;
    let mut state = *remote.state.lock().unwrap_or_else(|e| e.into_inner());
    // Two tries: the second after a 409 that told the witness's size.
    for _ in 0..2 {
        let old = state.holds.unwrap_or(0);
        if old == size && state.holds.is_some() && last.note.contains(&format!("\u{2014} {name} "))
        {
            return true;
        }
        if old > size {
            // The witness holds a later checkpoint than the last one signed here: wait for
            // the next, unless it is past the log itself (checked when its size was learnt).
            return false;
        }
        let proof = match merkle::consistency_proof(old, size, |l, i| shared.node(l, i)) {
            Ok(proof) => proof,
            Err(e) => {
                tracing::warn!(witness = name, error = %e, "no consistency proof for a witness");
                return false;
            }
        };
        let req = AddCheckpoint {
            old,
            proof,
            checkpoint: last.note.clone(),
        };
        match client.add_checkpoint(&remote.config, &req) {
            Answer::Cosigned(lines) => {
                let valid: String = lines
                    .lines()
                    .filter(|l| {
                        let note = add_signatures(&last.note, &format!("{l}\n"));
                        remote.config.key.verify(&note).is_ok()
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                if valid.is_empty() {
                    tracing::warn!(
                        witness = name,
                        "a witness answered without a valid cosignature"
                    );
                    return false;
                }
                set_holds(remote, size);
                if let Err(e) = shared.add_cosignatures(size, &valid) {
                    tracing::warn!(witness = name, error = %e, "storing a cosignature failed");
                }
                return true;
            }
            Answer::Holds(held) => {
                set_holds(remote, held);
                state.holds = Some(held);
                if let Err(e) = shared.raise_floor(held, None, &format!("witness {name}")) {
                    shared.stop_for(&e);
                    return false;
                }
            }
            Answer::Inconsistent(why) => {
                let e = Error::RolledBack(format!(
                    "witness {name} holds a checkpoint that the log of size {size} does not \
                     extend ({why}): another history of this log was signed"
                ));
                shared.stop_for(&e);
                return false;
            }
            Answer::Refused(status, why) => {
                tracing::warn!(witness = name, status, %why, "a witness refused a checkpoint");
                return false;
            }
            Answer::Unreachable(why) => {
                tracing::warn!(witness = name, %why, "a witness is unreachable; retrying");
                return false;
            }
        }
    }
    false
}

fn set_holds(remote: &Remote, size: u64) {
    remote.state.lock().unwrap_or_else(|e| e.into_inner()).holds = Some(size);
}

/// The unseal check (see the module doc): `Ok` if the log extends every checkpoint of its own
/// that the store, the checkpoint file and the reachable witnesses hold; the largest becomes
/// the floor.
pub(super) fn check_rollback(
    shared: &impl WitnessedLog,
    witnesses: Option<&Witnesses>,
    verifiers: &[NoteVerifier],
    checkpoint_file: &Path,
) -> Result<()> {
    if let Some((_, stored)) = shared.store().last(Space::Checkpoint)? {
        let note = String::from_utf8_lossy(&stored);
        if let Some(c) = verified(verifiers, &note) {
            shared.raise_floor(c.size, Some(c.root), "the store's checkpoints")?;
        }
    }
    for c in file_tail(checkpoint_file)
        .iter()
        .filter_map(|note| verified(verifiers, note))
    {
        shared.raise_floor(c.size, Some(c.root), "the checkpoint file")?;
    }
    let Some(witnesses) = witnesses else {
        return Ok(());
    };
    let last = shared.latest();
    for remote in &witnesses.remotes {
        let name = remote.config.name();
        let source = format!("witness {name}");
        match witnesses.client.latest(&remote.config, shared.origin()) {
            Ok(Some(note)) => match verified(verifiers, &note) {
                Some(c) => {
                    shared.raise_floor(c.size, Some(c.root), &source)?;
                    set_holds(remote, c.size);
                    continue;
                }
                None => {
                    tracing::warn!(
                        witness = name,
                        "a witness served a checkpoint that does not verify"
                    );
                }
            },
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(witness = name, %why, "a witness is unreachable at unseal; going on without it");
                continue;
            }
        }
        // No checkpoint to read: offer the last one, which tells the size the witness holds.
        let Some(last) = &last else { continue };
        let req = AddCheckpoint {
            old: 0,
            proof: Vec::new(),
            checkpoint: last.note.clone(),
        };
        match witnesses.client.add_checkpoint(&remote.config, &req) {
            Answer::Holds(held) => {
                shared.raise_floor(held, None, &source)?;
                set_holds(remote, held);
            }
            Answer::Cosigned(_) => set_holds(remote, last.checkpoint.size),
            Answer::Inconsistent(why) => {
                return Err(Error::RolledBack(format!(
                    "{source} finds the log's checkpoint of size {} inconsistent with its own: {why}",
                    last.checkpoint.size
                )));
            }
            Answer::Refused(status, why) => {
                tracing::warn!(witness = name, status, %why, "a witness refused the last checkpoint at unseal");
            }
            Answer::Unreachable(why) => {
                tracing::warn!(witness = name, %why, "a witness is unreachable at unseal; going on without it");
            }
        }
    }
    Ok(())
}

/// The checkpoint in `note` if it is this log's and its signature verifies under one of
/// `verifiers` (the vault's audit key generations: a checkpoint signed before a rotation is
/// still the vault's).
/// Raises the floor to the checkpoint in `note` that `source` holds, if one of `verifiers`
/// signed it for this log ([`Error::RolledBack`] if the log does not extend it). A note that
/// does not verify is passed over with a warning: it proves nothing, and whoever wrote it
/// cannot keep the vault sealed with it.
pub(super) fn check_note(
    shared: &impl WitnessedLog,
    verifiers: &[NoteVerifier],
    note: &str,
    source: &str,
) -> Result<()> {
    match verified(verifiers, note) {
        Some(c) => shared.raise_floor(c.size, Some(c.root), source),
        None => {
            tracing::warn!(
                source,
                "a checkpoint held elsewhere does not verify; passed over"
            );
            Ok(())
        }
    }
}

fn verified(verifiers: &[NoteVerifier], note: &str) -> Option<Checkpoint> {
    verifiers.iter().find_map(|verifier| {
        let text = verifier.verify(note).ok()?;
        Checkpoint::parse_note_text(&text)
            .ok()
            .filter(|c| c.origin == verifier.name())
    })
}

/// The notes in the last [`FILE_TAIL`] bytes of the checkpoint file (JSON lines
/// `{"checkpoint": note}`); none if it cannot be read.
fn file_tail(path: &Path) -> Vec<String> {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let from = len.saturating_sub(FILE_TAIL);
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // Past a cut, the first line is partial.
        Ok(match (from, text.split_once('\n')) {
            (0, _) | (_, None) => text,
            (_, Some((_, rest))) => rest.to_owned(),
        })
    };
    let Ok(text) = read() else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(value.get("checkpoint")?.as_str()?.to_owned())
        })
        .collect()
}
