//! C2SP tlog cosignatures (<https://c2sp.org/tlog-cosignature>), Ed25519 type: a witness's
//! statement that, as of a time, the checkpoint is the largest consistent tree it has seen of
//! that log.
//!
//! A cosignature is a signed-note signature line `— <witness name> base64(key hash || timestamp
//! || signature)`, where the key hash is `SHA-256(name || "\n" || 0x04 || public key)[..4]`, the
//! timestamp is a big-endian `u64` of POSIX seconds, and the signature is Ed25519 over
//!
//! ```text
//! cosignature/v1
//! time <timestamp, decimal>
//! <the checkpoint's note text, final newline included, no signature lines>
//! ```
//!
//! A witness's verifier key is written like a note verifier key, with type byte 0x04:
//! `name+hex8(key hash)+base64(0x04 || public key)`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::note::{self, NoteError, SIG_PREFIX};

/// The type byte of Ed25519 cosigner keys (`cosignature/v1`).
const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The newest timestamp a cosignature may carry (the spec's 2^63 - 1).
const MAX_TIME: u64 = i64::MAX as u64;

/// The bytes a `cosignature/v1` signs: the header line, the time line and the checkpoint's
/// note text.
pub fn message(checkpoint_text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{checkpoint_text}")
}

/// A witness's signing key and name. Its `Debug` leaves the key out.
pub struct Cosigner {
    name: String,
    key_hash: u32,
    key: SigningKey,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .field("key_hash", &format_args!("{:08x}", self.key_hash))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Cosigner {
    /// A cosigner named `name` with the Ed25519 key of the 32-byte `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !note::is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let key = SigningKey::from_bytes(seed);
        let key_hash = note::key_hash(name, &typed_key(&key.verifying_key()));
        Ok(Cosigner {
            name: name.to_owned(),
            key_hash,
            key,
        })
    }

    /// The verifier of this cosigner's cosignatures.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            key: self.key.verifying_key(),
        }
    }

    /// The cosignature line (newline included) of `checkpoint_text` at `time`.
    pub fn cosign(&self, checkpoint_text: &str, time: u64) -> Result<String, NoteError> {
        if !checkpoint_text.ends_with('\n') || note::has_control(checkpoint_text) {
            return Err(NoteError::InvalidText(
                "a checkpoint text ends with a newline and has no control character",
            ));
        }
        if time > MAX_TIME {
            return Err(NoteError::InvalidText("the time is past 2^63 - 1"));
        }
        let signature = self.key.sign(message(checkpoint_text, time).as_bytes());
        let mut bytes = Vec::with_capacity(4 + 8 + 64);
        bytes.extend_from_slice(&self.key_hash.to_be_bytes());
        bytes.extend_from_slice(&time.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(bytes)
        ))
    }
}

/// A witness's verifier key: its name, key hash and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_hash: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses `name+hex8(key hash)+base64(0x04 || public key)`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, key_hash, key) = note::parse_verifier_key(text, ALG_COSIGNATURE_V1)?;
        Ok(CosignatureVerifier {
            name,
            key_hash,
            key,
        })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time of this witness's valid cosignature on `signed_note`. Other signatures are
    /// ignored; a line with this witness's name and key hash that does not verify is an error,
    /// and so is a note without one.
    pub fn verify(&self, signed_note: &str) -> Result<u64, NoteError> {
        let (text, sigs) = note::split(signed_note)?;
        let sig = sigs
            .iter()
            .find(|s| s.name == self.name && s.key_hash == self.key_hash)
            .ok_or_else(|| NoteError::NoSignature {
                name: self.name.clone(),
                key_hash: self.key_hash,
            })?;
        let invalid = || NoteError::InvalidSignature {
            name: self.name.clone(),
            key_hash: self.key_hash,
        };
        let (time, signature) = sig.signature.split_first_chunk::<8>().ok_or_else(invalid)?;
        let time = u64::from_be_bytes(*time);
        let signature = Signature::from_slice(signature).map_err(|_| invalid())?;
        if time > MAX_TIME {
            return Err(invalid());
        }
        self.key
            .verify_strict(message(text, time).as_bytes(), &signature)
            .map_err(|_| invalid())?;
        Ok(time)
    }
}

impl fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = STANDARD.encode(typed_key(&self.key));
        write!(f, "{}+{:08x}+{key}", self.name, self.key_hash)
    }
}

/// `0x04 || public key`.
fn typed_key(key: &VerifyingKey) -> [u8; 33] {
    let mut typed = [ALG_COSIGNATURE_V1; 33];
    typed[1..].copy_from_slice(key.as_bytes());
    typed
}

/// `signed_note` with `lines` (signature lines, each ending in a newline) added to its
/// signatures, leaving out any line it already has.
pub fn add_signatures(signed_note: &str, lines: &str) -> String {
    let mut out = signed_note.to_owned();
    for line in lines.lines().filter(|l| !l.is_empty()) {
        let present = signed_note.lines().any(|l| l == line);
        if !present {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::note::NoteSigner;

    /// Computed by `scripts/cosignature-vector.py` with Python's `cryptography` (an
    /// implementation independent of this one): the witness key of seed 32 x 0x07 named
    /// `witness.example/w1`, cosigning the checkpoint below at time 1679315147.
    const VECTOR: &str = include_str!("../../testdata/cosignature-v1.txt");

    fn field<'a>(name: &str) -> &'a str {
        VECTOR
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
            .unwrap_or_else(|| panic!("no {name} in the vector"))
    }

    fn checkpoint_text() -> String {
        field("checkpoint").replace("\\n", "\n")
    }

    #[test]
    fn cosignatures_match_an_independent_implementation_byte_for_byte() {
        let cosigner = Cosigner::from_seed("witness.example/w1", &[7; 32]).unwrap();
        assert_eq!(cosigner.verifier().to_string(), field("vkey"));
        let time: u64 = field("time").parse().unwrap();
        let line = cosigner.cosign(&checkpoint_text(), time).unwrap();
        assert_eq!(line.trim_end(), field("line"));
    }

    #[test]
    fn a_cosignature_verifies_and_any_flipped_byte_is_refused() {
        let log = NoteSigner::from_seed("example.com/log", &[1; 32]).unwrap();
        let note = log.sign(&checkpoint_text()).unwrap();
        let verifier = CosignatureVerifier::parse(field("vkey")).unwrap();
        let cosigned = add_signatures(&note, &format!("{}\n", field("line")));
        assert_eq!(verifier.verify(&cosigned), Ok(1679315147));
        // The log's own signature still verifies beside it.
        log.verifier().verify(&cosigned).unwrap();
        // Every byte of the checkpoint text and of the cosignature line.
        let line_start = cosigned.find(field("line")).unwrap();
        let covered = (0..checkpoint_text().len()).chain(line_start..cosigned.len() - 1);
        for i in covered {
            let mut bytes = cosigned.clone().into_bytes();
            bytes[i] ^= 1;
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(verifier.verify(&tampered).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn a_note_without_the_witness_is_refused_and_other_witnesses_are_ignored() {
        let log = NoteSigner::from_seed("example.com/log", &[1; 32]).unwrap();
        let note = log.sign(&checkpoint_text()).unwrap();
        let ours = Cosigner::from_seed("witness.example/w1", &[7; 32]).unwrap();
        let other = Cosigner::from_seed("witness.example/w2", &[8; 32]).unwrap();
        assert!(matches!(
            ours.verifier().verify(&note),
            Err(NoteError::NoSignature { .. })
        ));
        let line = other.cosign(&checkpoint_text(), 5).unwrap();
        let cosigned = add_signatures(&note, &line);
        assert_eq!(other.verifier().verify(&cosigned), Ok(5));
        assert!(ours.verifier().verify(&cosigned).is_err());
        // Adding the same line twice keeps one.
        assert_eq!(add_signatures(&cosigned, &line), cosigned);
    }

    #[test]
    fn a_note_verifier_key_is_not_a_cosigner_key() {
        let log = NoteSigner::from_seed("example.com/log", &[1; 32]).unwrap();
        assert!(matches!(
            CosignatureVerifier::parse(&log.verifier().to_string()),
            Err(NoteError::UnsupportedKeyType(0x01))
        ));
    }
}
