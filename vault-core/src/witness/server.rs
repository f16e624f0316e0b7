//! A witness (C2SP `tlog-witness`): it cosigns a log's checkpoint only if it extends the
//! largest checkpoint of that log the witness has cosigned, so a log that is rolled back or
//! forked cannot get a second history cosigned.
//!
//! Its data directory (0700) holds:
//!
//! | file | what |
//! | --- | --- |
//! | `witness.json` (0600) | its name and the 32-byte Ed25519 seed of its key, hex; made at the first start |
//! | `state.json` (0600) | per log origin: the size, root and cosigned note of the latest checkpoint it cosigned |
//!
//! A log is known by its origin and accepted under any of the verifier keys given for that
//! origin, so a vault whose audit key was rotated is witnessed on: give the witness the new key
//! beside the old one.
//! | `lock` | an advisory lock: one process per directory |
//!
//! Checking a request against the state and storing the new state happen under one lock, and
//! the new state is durable (written to a temporary file, synced, renamed over the old one, the
//! directory synced) before the cosignature is returned, as the protocol requires: two racing
//! requests can never both be cosigned, and a restart never forgets a cosigned size.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::protocol::{AddCheckpoint, Refusal};
use crate::audit::cosignature::{self, CosignatureVerifier, Cosigner};
use crate::audit::merkle::{self, Hash};
use crate::audit::note::{Checkpoint, NoteError, NoteVerifier};
use crate::datadir::{create_private_dir, lock, sync_dir};
use crate::error::io;
use crate::{Error, Result};

const KEY_FILE: &str = "witness.json";
const STATE_FILE: &str = "state.json";

/// A running witness: its key, the logs it witnesses and what it has cosigned of each.
#[derive(Debug)]
pub struct Witness {
    dir: PathBuf,
    cosigner: Cosigner,
    /// The logs' verifier keys by origin (a log's origin is its key's name). A log may have
    /// several: a vault whose audit key was rotated signs with its new key, and the witness is
    /// given both (a checkpoint signed by any of them is the log's).
    logs: BTreeMap<String, Vec<NoteVerifier>>,
    /// A std mutex, not a Tokio one: it is held across a file write and sync, which run on a
    /// blocking thread, and across no await.
    state: Mutex<State>,
    _lock: File,
}

/// What a witness has cosigned, by log origin.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    logs: BTreeMap<String, Latest>,
}

/// The latest checkpoint cosigned for one log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latest {
    size: u64,
    /// Base64, as in the checkpoint.
    root: String,
    /// The checkpoint as the log signed it, with this witness's cosignature.
    checkpoint: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    name: String,
    /// Hex of the 32-byte seed.
    seed: String,
}

impl Witness {
    /// Opens the witness in `dir`, making its key (named `name`) at the first start; whether it
    /// made one comes back too. `logs` are the verifier keys of the logs it accepts; several
    /// keys of one origin (a log's keys before and after an audit key rotation) are all
    /// accepted for it.
    pub fn open(dir: &Path, name: &str, logs: &[NoteVerifier]) -> Result<(Witness, bool)> {
        create_private_dir(dir)?;
        // A directory the operator made may be wider: the key lives here.
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io(|| format!("setting the mode of {}", dir.display())))?;
        let lock = lock(dir)?;
        let key_path = dir.join(KEY_FILE);
        let created = !key_path.exists();
        if created {
            let seed = Zeroizing::new(rand::random::<[u8; 32]>());
            // Checked before anything is written.
            Cosigner::from_seed(name, &seed)
                .map_err(|e| Error::InvalidInput(format!("the witness name {name:?}: {e}")))?;
            let text = Zeroizing::new(
                serde_json::to_string(&KeyFile {
                    name: name.to_owned(),
                    seed: hex::encode(*seed),
                })
                .map_err(|e| Error::Corrupt(format!("writing the witness key: {e}")))?,
            );
            write_durably(dir, KEY_FILE, text.as_bytes())?;
        }
        let cosigner = read_key(dir)?;
        let state = match fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt(format!("the witness state {STATE_FILE}: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(|| format!("reading {}", dir.join(STATE_FILE).display()))(e)),
        };
        let mut by_origin: BTreeMap<String, Vec<NoteVerifier>> = BTreeMap::new();
        for v in logs {
            let keys = by_origin.entry(v.name().to_owned()).or_default();
            if !keys.contains(v) {
                keys.push(v.clone());
            }
        }
        let logs = by_origin;
        let witness = Witness {
            dir: dir.to_path_buf(),
            cosigner,
            logs,
            state: Mutex::new(state),
            _lock: lock,
        };
        Ok((witness, created))
    }

    /// The verifier key of the witness in `dir`, without opening it (it may be running).
    pub fn key(dir: &Path) -> Result<CosignatureVerifier> {
        Ok(read_key(dir)?.verifier())
    }

    /// This witness's verifier key.
    pub fn verifier(&self) -> CosignatureVerifier {
        self.cosigner.verifier()
    }

    /// Handles an `add-checkpoint` request: the cosignature line(s) to answer 200 with, or why
    /// not. `now` is the time to cosign at (POSIX seconds).
    pub fn add_checkpoint(&self, body: &str, now: u64) -> Result<String, Refusal> {
        let req = AddCheckpoint::parse(body)?;
        let checkpoint = parse_checkpoint(&req.checkpoint)?;
        let keys = self
            .logs
            .get(&checkpoint.origin)
            .ok_or_else(|| Refusal::UnknownLog(checkpoint.origin.clone()))?;
        // Any of the log's keys: the first that verifies decides, else the first key's refusal.
        let verified: Vec<_> = keys.iter().map(|k| k.verify(&req.checkpoint)).collect();
        let text = match verified.iter().find_map(|v| v.as_ref().ok()) {
            Some(text) => text.clone(),
            None => {
                // Invariant: a log is in the map only with at least one key.
                let e = verified
                    .into_iter()
                    .find_map(Result::err)
                    .expect("a log has a key");
                return Err(match e {
                    NoteError::NoSignature { .. } | NoteError::InvalidSignature { .. } => {
                        Refusal::Forbidden(e.to_string())
                    }
                    other => Refusal::BadRequest(other.to_string()),
                });
            }
        };
        if req.old > checkpoint.size {
            return Err(Refusal::BadRequest(format!(
                "the old size {} is larger than the checkpoint's {}",
                req.old, checkpoint.size
            )));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let latest = state.logs.get(&checkpoint.origin);
        let held = latest.map_or(0, |l| l.size);
        if req.old != held {
            return Err(Refusal::Conflict(held));
        }
        if checkpoint.size == 0 && checkpoint.root != merkle::empty_root() {
            return Err(Refusal::Unprocessable(
                "a checkpoint of size 0 must have the empty tree's root".into(),
            ));
        }
        let old_root = match latest {
            None => merkle::empty_root(),
            Some(l) => decode_root(&l.root)?,
        };
        merkle::verify_consistency(
            req.old,
            checkpoint.size,
            &old_root,
            &checkpoint.root,
            &req.proof,
        )
        .map_err(|e| Refusal::Unprocessable(format!("the consistency proof: {e}")))?;
        let line = self
            .cosigner
            .cosign(&text, now)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let new = Latest {
            size: checkpoint.size,
            root: STANDARD.encode(checkpoint.root),
            checkpoint: cosignature::add_signatures(&req.checkpoint, &line),
        };
        let previous = state.logs.insert(checkpoint.origin.clone(), new);
        if let Err(e) = self.store(&state) {
            // Not durable: not cosigned, and the state stays as it was.
            match previous {
                Some(p) => state.logs.insert(checkpoint.origin, p),
                None => state.logs.remove(&checkpoint.origin),
            };
            return Err(Refusal::Unavailable(e.to_string()));
        }
        Ok(line)
    }

    /// The latest cosigned checkpoint of the log whose origin hashes (SHA-256, lowercase hex)
    /// to `origin_hash`, with this witness's cosignature and the log's signature.
    pub fn latest(&self, origin_hash: &str) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .logs
            .iter()
            .find(|(origin, _)| hex::encode(Sha256::digest(origin.as_bytes())) == origin_hash)
            .map(|(_, l)| l.checkpoint.clone())
    }

    fn store(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::Corrupt(format!("writing the witness state: {e}")))?;
        write_durably(&self.dir, STATE_FILE, &bytes)
    }
}

fn parse_checkpoint(note: &str) -> Result<Checkpoint, Refusal> {
    let (text, _) = crate::audit::note::split(note)
        .map_err(|e| Refusal::BadRequest(format!("the checkpoint: {e}")))?;
    Checkpoint::parse_note_text(text)
        .map_err(|e| Refusal::BadRequest(format!("the checkpoint: {e}")))
}

fn decode_root(root: &str) -> Result<Hash, Refusal> {
    STANDARD
        .decode(root)
        .ok()
        .and_then(|r| Hash::try_from(r.as_slice()).ok())
        .ok_or_else(|| Refusal::Unavailable("the witness state holds a malformed root".into()))
}

fn read_key(dir: &Path) -> Result<Cosigner> {
    let path = dir.join(KEY_FILE);
    let text = Zeroizing::new(
        fs::read_to_string(&path).map_err(io(|| format!("reading {}", path.display())))?,
    );
    let file: KeyFile = serde_json::from_str(&text)
        .map_err(|_| Error::Corrupt(format!("{} is not a witness key file", path.display())))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(&file.seed, &mut *seed)
        .map_err(|_| Error::Corrupt(format!("{} holds a malformed seed", path.display())))?;
    Cosigner::from_seed(&file.name, &seed)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
}

/// Writes `DIR/name` so that either the old or the new bytes are there after a crash.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(|| format!("opening {}", tmp.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(|| format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(|| format!("renaming {}", tmp.display())))?;
    sync_dir(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::audit::merkle::{Frontier, ProofError};
    use crate::audit::note::NoteSigner;

    /// A log: its signer and a Merkle tree of numbered leaves.
    struct Log {
        signer: NoteSigner,
        nodes: HashMap<(u8, u64), Hash>,
        frontier: Frontier,
    }

    impl Log {
        fn new(name: &str, seed: u8) -> Log {
            Log {
                signer: NoteSigner::from_seed(name, &[seed; 32]).unwrap(),
                nodes: HashMap::new(),
                frontier: Frontier::new(),
            }
        }

        fn grow(&mut self, to: u64, salt: u8) {
            while self.frontier.size() < to {
                let leaf = merkle::leaf_hash(&[salt, self.frontier.size() as u8]);
                for (level, index, hash) in self.frontier.push(leaf) {
                    self.nodes.insert((level, index), hash);
                }
            }
        }

        fn get(&self) -> impl FnMut(u8, u64) -> Result<Hash, ProofError> + '_ {
            |level, index| {
                self.nodes
                    .get(&(level, index))
                    .copied()
                    .ok_or(ProofError::WrongLength)
            }
        }

        fn note(&self) -> String {
            let checkpoint = Checkpoint {
                origin: self.signer.name().to_owned(),
                size: self.frontier.size(),
                root: self.frontier.root(),
            };
            self.signer.sign(&checkpoint.to_note_text()).unwrap()
        }

        fn request(&self, old: u64) -> String {
            let proof = merkle::consistency_proof(old, self.frontier.size(), self.get()).unwrap();
            AddCheckpoint {
                old,
                proof,
                checkpoint: self.note(),
            }
            .to_body()
        }
    }

    fn witness(dir: &Path, log: &Log) -> Witness {
        Witness::open(dir, "witness.test/w1", &[log.signer.verifier()])
            .unwrap()
            .0
    }

    #[test]
    fn a_growing_log_is_cosigned_and_the_cosignature_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new("keyvault/test", 1);
        let (w, created) =
            Witness::open(tmp.path(), "witness.test/w1", &[log.signer.verifier()]).unwrap();
        assert!(created);
        log.grow(5, 0);
        let line = w.add_checkpoint(&log.request(0), 100).unwrap();
        let cosigned = cosignature::add_signatures(&log.note(), &line);
        assert_eq!(w.verifier().verify(&cosigned), Ok(100));
        log.grow(12, 0);
        w.add_checkpoint(&log.request(5), 101).unwrap();
        // The same checkpoint again (old = its size) is cosigned again.
        w.add_checkpoint(&log.request(12), 102).unwrap();
        let origin_hash = hex::encode(Sha256::digest(b"keyvault/test"));
        let latest = w.latest(&origin_hash).unwrap();
        assert_eq!(w.verifier().verify(&latest), Ok(102));
        log.signer.verifier().verify(&latest).unwrap();
        assert_eq!(w.latest(&"0".repeat(64)), None);
    }

    #[test]
    fn an_old_size_that_is_not_the_witnesses_is_a_conflict_naming_its_size() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new("keyvault/test", 1);
        let w = witness(tmp.path(), &log);
        log.grow(10, 0);
        w.add_checkpoint(&log.request(0), 1).unwrap();
        log.grow(20, 0);
        assert_eq!(
            w.add_checkpoint(&log.request(0), 2),
            Err(Refusal::Conflict(10))
        );
        assert_eq!(
            w.add_checkpoint(&log.request(15), 2),
            Err(Refusal::Conflict(10))
        );
        assert_eq!(Refusal::Conflict(10).body(), "10\n");
        assert_eq!(Refusal::Conflict(10).status(), 409);
    }

    #[test]
    fn a_fork_or_a_rollback_is_never_cosigned() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new("keyvault/test", 1);
        let w = witness(tmp.path(), &log);
        log.grow(10, 0);
        w.add_checkpoint(&log.request(0), 1).unwrap();
        // The same log rolled back to 6 entries and rewritten past 10 (a fork).
        let mut fork = Log::new("keyvault/test", 1);
        fork.grow(6, 0);
        fork.grow(14, 9);
        let refused = w.add_checkpoint(&fork.request(10), 2);
        assert!(
            matches!(refused, Err(Refusal::Unprocessable(_))),
            "{refused:?}"
        );
        // A different tree of the same size.
        let mut same_size = Log::new("keyvault/test", 1);
        same_size.grow(10, 9);
        let refused = w.add_checkpoint(&same_size.request(10), 2);
        assert!(
            matches!(refused, Err(Refusal::Unprocessable(_))),
            "{refused:?}"
        );
        // A smaller tree than the witness holds: a conflict that names the witness's size.
        let mut smaller = Log::new("keyvault/test", 1);
        smaller.grow(6, 0);
        assert_eq!(
            w.add_checkpoint(&smaller.request(6), 3),
            Err(Refusal::Conflict(10))
        );
        // The real log still extends.
        log.grow(11, 0);
        w.add_checkpoint(&log.request(10), 4).unwrap();
    }

    /// A vault whose audit key was rotated: the witness given both keys of its origin cosigns
    /// the transition (signed by both) and the checkpoints after it (the new key only), and
    /// keeps refusing a key it was not given.
    #[test]
    fn a_log_with_two_keys_is_witnessed_across_its_audit_key_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new("keyvault/test", 1);
        let new = NoteSigner::from_seed("keyvault/test", &[4; 32]).unwrap();
        let w = Witness::open(
            tmp.path(),
            "witness.test/w1",
            &[log.signer.verifier(), new.verifier()],
        )
        .unwrap()
        .0;
        log.grow(3, 0);
        w.add_checkpoint(&log.request(0), 1).unwrap();
        log.grow(5, 0);
        // The transition: the old key's signature, then the new key's.
        let transition = new.add_signature(&log.note()).unwrap();
        let body = log.request(3).replace(&log.note(), &transition);
        w.add_checkpoint(&body, 2).unwrap();
        // Then the new key only.
        log.signer = new;
        log.grow(8, 0);
        w.add_checkpoint(&log.request(5), 3).unwrap();
        // A witness given only the old key refuses that one.
        let other = tempfile::tempdir().unwrap();
        let old_only = Witness::open(
            other.path(),
            "witness.test/w2",
            &[Log::new("keyvault/test", 1).signer.verifier()],
        )
        .unwrap()
        .0;
        let refused = old_only.add_checkpoint(&log.request(0), 1);
        assert_eq!(refused.as_ref().map_err(Refusal::status), Err(403));
    }

    #[test]
    fn unknown_logs_and_bad_signatures_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new("keyvault/test", 1);
        let w = witness(tmp.path(), &log);
        log.grow(3, 0);
        let mut stranger = Log::new("keyvault/other", 2);
        stranger.grow(3, 0);
        assert!(matches!(
            w.add_checkpoint(&stranger.request(0), 1),
            Err(Refusal::UnknownLog(_))
        ));
        // The right origin signed by another key.
        let mut impostor = Log::new("keyvault/test", 3);
        impostor.grow(3, 0);
        let refused = w.add_checkpoint(&impostor.request(0), 1);
        assert_eq!(refused.as_ref().map_err(Refusal::status), Err(403));
        // A flipped signature byte.
        let body = log.request(0);
        let mut bytes = body.into_bytes();
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        let refused = w.add_checkpoint(&String::from_utf8(bytes).unwrap(), 1);
        assert!(
            matches!(refused, Err(Refusal::Forbidden(_) | Refusal::BadRequest(_))),
            "{refused:?}"
        );
        // An old size past the checkpoint's.
        assert!(matches!(
            w.add_checkpoint(&log.request(0).replacen("old 0", "old 7", 1), 1),
            Err(Refusal::BadRequest(_))
        ));
        // Nothing of these was recorded.
        w.add_checkpoint(&log.request(0), 1).unwrap();
    }

    #[test]
    fn what_was_cosigned_survives_a_restart_and_the_key_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new("keyvault/test", 1);
        let key = {
            let w = witness(tmp.path(), &log);
            log.grow(8, 0);
            w.add_checkpoint(&log.request(0), 1).unwrap();
            w.verifier()
        };
        assert_eq!(Witness::key(tmp.path()).unwrap(), key);
        let (w, created) =
            Witness::open(tmp.path(), "ignored/name", &[log.signer.verifier()]).unwrap();
        assert!(!created);
        assert_eq!(w.verifier(), key);
        assert_eq!(
            w.add_checkpoint(&log.request(0), 2),
            Err(Refusal::Conflict(8))
        );
        // A second process cannot open the same directory.
        assert!(matches!(
            Witness::open(tmp.path(), "w", &[log.signer.verifier()]),
            Err(Error::InUse(_))
        ));
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777
        };
        assert_eq!(mode(tmp.path()), 0o700);
        assert_eq!(mode(&tmp.path().join(KEY_FILE)), 0o600);
        assert_eq!(mode(&tmp.path().join(STATE_FILE)), 0o600);
    }
}
