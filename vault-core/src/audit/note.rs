//! C2SP signed notes and tlog checkpoints (Ed25519).
//!
//! A signed note (<https://c2sp.org/signed-note>, the format of Go's
//! `golang.org/x/mod/sumdb/note`) is a UTF-8 text ending in a newline, an empty line, then one
//! or more signature lines `— <key name> base64(key hash || signature)`. The key hash is the
//! first four bytes (big-endian) of `SHA-256(name || "\n" || 0x01 || Ed25519 public key)`, and
//! the signature is Ed25519 over the text bytes (final newline included).
//!
//! A checkpoint (<https://c2sp.org/tlog-checkpoint>) is a note text of three lines: the log's
//! origin, the decimal tree size and the base64 RFC 6962 root hash.
//!
//! Parsing and verifying never panic, whatever the input.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

/// The signature type identifier byte of Ed25519 keys.
const ALG_ED25519: u8 = 0x01;
/// The start of a signature line: U+2014 EM DASH, space.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";
/// More signature lines than this make a note malformed (Go's limit; the spec asks for >= 16).
pub(crate) const MAX_SIGNATURES: usize = 100;

/// Why a key, note or checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Key names must be non-empty, without spaces, '+' or control characters.
    #[error("invalid key name: it must be non-empty, without spaces, '+' or control characters")]
    InvalidKeyName,
    /// The verifier key text is not `name+hex8+base64(0x01 || public key)`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// The verifier key's hash does not belong to its name and public key.
    #[error("verifier key hash does not match its name and public key")]
    VerifierKeyHashMismatch,
    /// The key is not of the type expected here (0x01 for an Ed25519 note key, 0x04 for an
    /// Ed25519 witness key).
    #[error("unsupported key type {0:#04x} (expected 0x01 for a log's key, 0x04 for a witness's)")]
    UnsupportedKeyType(u8),
    /// The 32 bytes are not an Ed25519 public key.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    /// The text cannot be signed as a note.
    #[error("invalid note text: {0}")]
    InvalidText(&'static str),
    /// The signed note does not have the signed-note format.
    #[error("malformed signed note: {0}")]
    MalformedNote(&'static str),
    /// The note carries a signature by this key that does not verify.
    #[error("signature by key {name}+{key_hash:08x} does not verify")]
    InvalidSignature { name: String, key_hash: u32 },
    /// The note carries no signature by this key.
    #[error("note has no signature by key {name}+{key_hash:08x}")]
    NoSignature { name: String, key_hash: u32 },
    /// The note text is not a tlog checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

/// Whether `s` holds an ASCII control character other than newline (forbidden in notes).
pub(crate) fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < b' ' && b != b'\n')
}

/// The key hash of a key: `SHA-256(name || "\n" || key)[..4]` as a big-endian integer, where
/// `key` is the type byte followed by the public key.
pub(crate) fn key_hash(name: &str, key: &[u8]) -> u32 {
    let h = Sha256::new()
        .chain_update(name)
        .chain_update("\n")
        .chain_update(key)
        .finalize();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// `0x01 || public key`: a public key as note key texts and key hashes carry it.
fn typed_key(key: &VerifyingKey) -> [u8; 33] {
    let mut typed = [ALG_ED25519; 33];
    typed[1..].copy_from_slice(key.as_bytes());
    typed
}

/// A note signer: a key name and an Ed25519 private key. Its `Debug` leaves the key out.
pub struct NoteSigner {
    name: String,
    key_hash: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_hash", &format_args!("{:08x}", self.key_hash))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NoteSigner {
    /// A signer named `name` with the Ed25519 key of the 32-byte `seed` (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let key = SigningKey::from_bytes(seed);
        let key_hash = key_hash(name, &typed_key(&key.verifying_key()));
        Ok(Self {
            name: name.to_owned(),
            key_hash,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier of this signer's signatures.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` and returns the signed note: `text`, an empty line, one signature line.
    ///
    /// `text` must end in a newline and must not contain ASCII control characters other than
    /// newline. It may contain empty lines.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::InvalidText("it must end with a newline"));
        }
        if has_control(text) {
            return Err(NoteError::InvalidText("it contains a control character"));
        }
        let mut sig = self.key_hash.to_be_bytes().to_vec();
        sig.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(sig)
        ))
    }
}

impl NoteSigner {
    /// Adds this signer's signature line to `signed_note`, after its signature lines: the
    /// same text signed by one more key (an audit key rotation's transition checkpoint is
    /// signed by the old key and then by the new one).
    pub fn add_signature(&self, signed_note: &str) -> Result<String, NoteError> {
        let (text, _) = split(signed_note)?;
        let mine = self.sign(text)?;
        let line = &mine[text.len() + 1..];
        Ok(format!("{signed_note}{line}"))
    }
}

/// A note verifier: a key name, its key hash and an Ed25519 public key.
///
/// Its text form (`Display`, [`NoteVerifier::parse`]) is `name+hex8(key hash)+base64(0x01 ||
/// public key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_hash: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key text `name+hex8(key hash)+base64(0x01 || public key)`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, key_hash, key) = parse_verifier_key(text, ALG_ED25519)?;
        Ok(Self {
            name,
            key_hash,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash that signature lines carry.
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    /// The same public key under the name `name` (its key hash follows the name): a cluster
    /// node signs its log with the vault's audit key under the node's own origin.
    pub fn renamed(&self, name: &str) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        Ok(Self {
            name: name.to_owned(),
            key_hash: key_hash(name, &typed_key(&self.key)),
            key: self.key,
        })
    }

    /// Checks `signed_note` and returns its text (without the empty line and signatures).
    ///
    /// Signatures by other keys (another name or key hash) are ignored, but every signature
    /// line must be well formed. The first signature by this key decides: if it does not
    /// verify, the note is rejected; without one, too.
    pub fn verify(&self, signed_note: &str) -> Result<String, NoteError> {
        let (text, sigs) = split(signed_note)?;
        let mine = sigs
            .iter()
            .find(|s| s.name == self.name && s.key_hash == self.key_hash);
        let Some(sig) = mine else {
            let (name, key_hash) = (self.name.clone(), self.key_hash);
            return Err(NoteError::NoSignature { name, key_hash });
        };
        let ok = Signature::from_slice(&sig.signature)
            .is_ok_and(|s| self.key.verify_strict(text.as_bytes(), &s).is_ok());
        if !ok {
            return Err(NoteError::InvalidSignature {
                name: self.name.clone(),
                key_hash: self.key_hash,
            });
        }
        Ok(text.to_owned())
    }
}

/// Parses a verifier key text `name+hex8(key hash)+base64(alg || Ed25519 public key)`.
pub(crate) fn parse_verifier_key(
    text: &str,
    alg: u8,
) -> Result<(String, u32, VerifyingKey), NoteError> {
    let malformed = NoteError::MalformedVerifierKey;
    let (name, rest) = text
        .split_once('+')
        .ok_or(malformed("expected name+hash+key"))?;
    let (hash_hex, key_b64) = rest
        .split_once('+')
        .ok_or(malformed("expected name+hash+key"))?;
    if !is_valid_name(name) {
        return Err(NoteError::InvalidKeyName);
    }
    if hash_hex.len() != 8 || !hash_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the key hash must be 8 hex digits"));
    }
    let hash = u32::from_str_radix(hash_hex, 16).map_err(|_| malformed("bad key hash"))?;
    let key = STANDARD
        .decode(key_b64)
        .map_err(|_| malformed("the key is not base64"))?;
    if key.is_empty() {
        return Err(malformed("empty key"));
    }
    if key_hash(name, &key) != hash {
        return Err(NoteError::VerifierKeyHashMismatch);
    }
    if key[0] != alg {
        return Err(NoteError::UnsupportedKeyType(key[0]));
    }
    let public: &[u8; 32] = key[1..]
        .try_into()
        .map_err(|_| malformed("an Ed25519 key has 32 bytes"))?;
    let key = VerifyingKey::from_bytes(public).map_err(|_| NoteError::InvalidPublicKey)?;
    Ok((name.to_owned(), hash, key))
}

/// One signature line of a signed note: the key name, the key hash and the bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoteSignature<'a> {
    pub name: &'a str,
    pub key_hash: u32,
    pub signature: Vec<u8>,
    /// The whole line, without its newline.
    pub line: &'a str,
}

/// Splits a signed note into its text (final newline included) and its signature lines, every
/// one of which must be well formed.
pub(crate) fn split(signed_note: &str) -> Result<(&str, Vec<NoteSignature<'_>>), NoteError> {
    let malformed = NoteError::MalformedNote;
    if has_control(signed_note) {
        return Err(malformed("it contains a control character"));
    }
    // The text ends at the last empty line; everything after it is signature lines.
    let split = signed_note
        .rfind("\n\n")
        .ok_or(malformed("no empty line before signatures"))?;
    let (text, sigs) = (&signed_note[..split + 1], &signed_note[split + 2..]);
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or(malformed("it must end with a signature line"))?;
    let mut out = Vec::new();
    for (i, whole) in sigs.split('\n').enumerate() {
        if i == MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        let line = whole
            .strip_prefix(SIG_PREFIX)
            .ok_or(malformed("bad signature line"))?;
        let (name, b64) = line
            .split_once(' ')
            .ok_or(malformed("bad signature line"))?;
        let sig = STANDARD
            .decode(b64)
            .map_err(|_| malformed("signature is not base64"))?;
        if !is_valid_name(name) || sig.len() < 5 {
            return Err(malformed("bad signature line"));
        }
        out.push(NoteSignature {
            name,
            key_hash: u32::from_be_bytes([sig[0], sig[1], sig[2], sig[3]]),
            signature: sig[4..].to_vec(),
            line: whole,
        });
    }
    Ok((text, out))
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = STANDARD.encode(typed_key(&self.key));
        write!(f, "{}+{:08x}+{key}", self.name, self.key_hash)
    }
}

/// A tlog checkpoint: the log's origin line, tree size and RFC 6962 root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `example.com/log`: one non-empty line.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The root hash of the tree of `size` leaves.
    pub root: [u8; 32],
}

impl Checkpoint {
    /// The note text `origin\nsize\nbase64(root)\n` (no extension lines).
    ///
    /// The origin is written as it is: it must be one non-empty line without control
    /// characters, or the text does not parse back as this checkpoint.
    pub fn to_note_text(&self) -> String {
        let root = STANDARD.encode(self.root);
        format!("{}\n{}\n{root}\n", self.origin, self.size)
    }

    /// Parses a checkpoint note text; extension lines after the root are accepted and ignored.
    pub fn parse_note_text(text: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::MalformedCheckpoint;
        if has_control(text) {
            return Err(malformed("it contains a control character"));
        }
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed("it must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(malformed("empty origin"));
        }
        let size = lines.next().ok_or(malformed("no tree size line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("the tree size must be decimal digits"));
        }
        if size.len() > 1 && size.starts_with('0') {
            return Err(malformed("the tree size has a leading zero"));
        }
        let size = size
            .parse()
            .map_err(|_| malformed("the tree size is too large"))?;
        let root = lines.next().ok_or(malformed("no root hash line"))?;
        let root = STANDARD
            .decode(root)
            .map_err(|_| malformed("the root hash is not base64"))?;
        let root = root
            .try_into()
            .map_err(|_| malformed("the root hash must be 32 bytes"))?;
        if lines.any(str::is_empty) {
            return Err(malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        ed25519_seed_hex: String,
        ed25519_public_key_hex: String,
        key_hash_hex: String,
        verifier_key: String,
        signer_key: String,
        text: String,
        signed_note: String,
    }

    fn vector() -> Vector {
        serde_json::from_str(include_str!("../../testdata/signed-note.json")).unwrap()
    }
    fn unhex(s: &str) -> Vec<u8> {
        let byte = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).unwrap();
        (0..s.len()).step_by(2).map(byte).collect()
    }
    fn seed(v: &Vector) -> [u8; 32] {
        unhex(&v.ed25519_seed_hex).try_into().unwrap()
    }
    /// The signature lines of a signed note of `text`.
    fn sig_lines<'a>(note: &'a str, text: &str) -> &'a str {
        &note[text.len() + 1..]
    }

    /// The same key under another name: what a signer of that name makes verifies, and the
    /// old name's verifier no longer does.
    #[test]
    fn a_renamed_verifier_is_the_signer_of_that_name() {
        let v = vector();
        let named = NoteSigner::from_seed("keyvault/00/node-1", &seed(&v)).unwrap();
        let renamed = NoteVerifier::parse(&v.verifier_key)
            .unwrap()
            .renamed("keyvault/00/node-1")
            .unwrap();
        assert_eq!(renamed, named.verifier());
        let note = named.sign("hello\n").unwrap();
        assert_eq!(renamed.verify(&note).unwrap(), "hello\n");
        let original = NoteVerifier::parse(&v.verifier_key).unwrap();
        assert!(original.verify(&note).is_err());
        assert!(matches!(
            original.renamed("two words"),
            Err(NoteError::InvalidKeyName)
        ));
    }

    #[test]
    fn go_vector() {
        let v = vector();
        let signer = NoteSigner::from_seed(&v.name, &seed(&v)).unwrap();
        let verifier = signer.verifier();
        assert_eq!(verifier.to_string(), v.verifier_key);
        assert_eq!(verifier.name(), v.name);
        assert_eq!(format!("{:08x}", verifier.key_hash()), v.key_hash_hex);
        assert_eq!(
            verifier.key.as_bytes().to_vec(),
            unhex(&v.ed25519_public_key_hex)
        );
        // The private key text (never produced by this module) has the documented layout.
        let private = STANDARD.encode([&[ALG_ED25519][..], &seed(&v)].concat());
        let private = format!("PRIVATE+KEY+{}+{}+{private}", v.name, v.key_hash_hex);
        assert_eq!(v.signer_key, private);
        assert_eq!(signer.sign(&v.text).unwrap(), v.signed_note);
        let parsed = NoteVerifier::parse(&v.verifier_key).unwrap();
        assert_eq!(parsed, verifier);
        assert_eq!(parsed.verify(&v.signed_note).unwrap(), v.text);
        let debug = format!("{signer:?}");
        assert!(
            debug.contains(&v.key_hash_hex) && debug.contains("redacted"),
            "{debug}"
        );
        assert!(
            !debug.contains("129, 10") && !debug.contains("[129"),
            "{debug}"
        );
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let v = vector();
        let verifier = NoteVerifier::parse(&v.verifier_key).unwrap();
        let mut checked = 0;
        for i in 0..v.signed_note.len() {
            for mask in [0x01, 0x02, 0x20, 0x40, 0x80] {
                let mut bytes = v.signed_note.clone().into_bytes();
                bytes[i] ^= mask;
                let Ok(note) = String::from_utf8(bytes) else {
                    continue;
                };
                let r = verifier.verify(&note);
                assert!(r.is_err(), "byte {i} ^ {mask:#x} accepted: {r:?}");
                checked += 1;
            }
        }
        assert!(checked > 3 * v.signed_note.len(), "{checked}");
    }

    #[test]
    fn other_keys_are_ignored_but_not_trusted() {
        let v = vector();
        let (text, ours) = (&v.text, NoteSigner::from_seed(&v.name, &seed(&v)).unwrap());
        let other = NoteSigner::from_seed("example.com/other", &[7; 32]).unwrap();
        let same_name = NoteSigner::from_seed(&v.name, &[8; 32]).unwrap();
        let (verifier, key_hash) = (ours.verifier(), ours.verifier().key_hash());
        let no_sig = Err(NoteError::NoSignature {
            name: v.name.clone(),
            key_hash,
        });
        let (o, s) = (other.sign(text).unwrap(), same_name.sign(text).unwrap());
        assert_eq!(verifier.verify(&o), no_sig);
        assert_eq!(verifier.verify(&s), no_sig);
        let (o, s, ours) = (sig_lines(&o, text), sig_lines(&s, text), &v.signed_note);
        let all = format!("{text}\n{o}{s}{}", sig_lines(ours, text));
        assert_eq!(verifier.verify(&all).unwrap(), *text);
        assert_eq!(other.verifier().verify(&all).unwrap(), *text);
        // A bad signature by this key (name and key hash) rejects the note, even with a good one.
        let sig = [&key_hash.to_be_bytes()[..], &[0; 64]].concat();
        let bad = format!("{SIG_PREFIX}{} {}\n", v.name, STANDARD.encode(&sig));
        let invalid = Err(NoteError::InvalidSignature {
            name: v.name.clone(),
            key_hash,
        });
        assert_eq!(
            verifier.verify(&format!("{text}\n{bad}{}", sig_lines(ours, text))),
            invalid
        );
        let short = format!("{SIG_PREFIX}{} {}\n", v.name, STANDARD.encode(&sig[..40]));
        assert_eq!(verifier.verify(&format!("{text}\n{short}")), invalid);
        let moved = format!("{text}x\n\n{}", sig_lines(ours, text));
        assert!(matches!(
            verifier.verify(&moved),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn malformed_notes_and_texts() {
        let v = vector();
        let (verifier, text) = (NoteVerifier::parse(&v.verifier_key).unwrap(), &v.text);
        let sigs = sig_lines(&v.signed_note, text);
        let sig = sigs.trim_end();
        for bad in [
            String::new(),
            v.text.clone(),
            v.signed_note.trim_end().to_owned(),
            format!("{text}{sigs}"),
            format!("{text}\n{}\n", sig.replace('\u{2014}', "--")),
            format!("{text}\n{}\n", sig.replace(' ', "  ")),
            format!("{text}\n{sig}=\n"),
            format!("{text}\n{sigs}\n"),
            format!("{text}\t\n{sigs}"),
            format!("{text}\n{}", sigs.repeat(101)),
        ] {
            assert!(
                matches!(verifier.verify(&bad), Err(NoteError::MalformedNote(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            verifier
                .verify(&format!("{text}\n{}", sigs.repeat(100)))
                .unwrap(),
            *text
        );
        let signer = NoteSigner::from_seed("a", &[1; 32]).unwrap();
        for bad in ["", "no newline", "tab\there\n", "cr\r\n"] {
            assert!(
                matches!(signer.sign(bad), Err(NoteError::InvalidText(_))),
                "{bad:?}"
            );
        }
        for ok in [
            "\n",
            "a\n\nb\n",
            "ends blank\n\n",
            "\u{2014} not a signature\n",
        ] {
            assert_eq!(
                signer.verifier().verify(&signer.sign(ok).unwrap()).unwrap(),
                ok
            );
        }
        for name in ["", "a b", "a+b", "a\u{3000}b", "tab\t", "nl\n"] {
            let r = NoteSigner::from_seed(name, &[1; 32]);
            assert_eq!(r.err(), Some(NoteError::InvalidKeyName), "{name:?}");
        }
    }

    #[test]
    fn verifier_key_texts() {
        let v = vector();
        let (name, rest) = v.verifier_key.split_once('+').unwrap();
        let (hash, key) = rest.split_once('+').unwrap();
        let upper = format!("{name}+{}+{key}", hash.to_uppercase());
        assert_eq!(
            NoteVerifier::parse(&upper).unwrap().to_string(),
            v.verifier_key
        );
        let retyped = |typed: &[u8]| {
            let key = STANDARD.encode(typed);
            NoteVerifier::parse(&format!("{name}+{:08x}+{key}", key_hash(name, typed)))
        };
        let mut typed = STANDARD.decode(key).unwrap();
        assert!(matches!(
            retyped(&typed[..32]),
            Err(NoteError::MalformedVerifierKey(_))
        ));
        typed[0] = 0x02;
        assert_eq!(retyped(&typed), Err(NoteError::UnsupportedKeyType(2)));
        for bad in [
            String::new(),
            name.to_owned(),
            format!("{name}+{hash}"),
            format!("{name}+{}+{key}", &hash[..7]),
            format!("{name}+0{hash}+{key}"),
            format!("{name}++{}+{key}", &hash[..7]),
            format!("{name}+{hash}+{}", &key[1..]),
            format!("{name}+{hash}+"),
        ] {
            assert!(NoteVerifier::parse(&bad).is_err(), "{bad:?}");
        }
        let wrong_name = format!("Peter+{hash}+{key}");
        assert_eq!(
            NoteVerifier::parse(&wrong_name),
            Err(NoteError::VerifierKeyHashMismatch)
        );
        assert_eq!(
            NoteVerifier::parse(&format!("+{rest}")),
            Err(NoteError::InvalidKeyName)
        );
    }

    #[test]
    fn checkpoints() {
        let c = Checkpoint {
            origin: "example.com/log".into(),
            size: 20852163,
            root: [0xab; 32],
        };
        let (text, root) = (c.to_note_text(), STANDARD.encode([0xab; 32]));
        assert_eq!(text, format!("example.com/log\n20852163\n{root}\n"));
        assert_eq!(Checkpoint::parse_note_text(&text).unwrap(), c);
        let extended = format!("{text}ext one\next two\n");
        assert_eq!(Checkpoint::parse_note_text(&extended).unwrap(), c);
        for size in [0, 1, u64::MAX] {
            let c = Checkpoint { size, ..c.clone() };
            assert_eq!(Checkpoint::parse_note_text(&c.to_note_text()).unwrap(), c);
        }
        let signer = NoteSigner::from_seed("example.com/log", &[3; 32]).unwrap();
        let signed_text = signer
            .verifier()
            .verify(&signer.sign(&text).unwrap())
            .unwrap();
        assert_eq!(Checkpoint::parse_note_text(&signed_text).unwrap(), c);
        let short = STANDARD.encode([0xab; 31]);
        for bad in [
            String::new(),
            "\n".into(),
            "o\n1\n".into(),
            format!("o\n1\n{root}"),
            format!("\n1\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n 1\n{root}\n"),
            format!("o\n1 \n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n1\n{short}\n"),
            format!("o\n1\n{root}{short}\n"),
            format!("o\n1\n{}\n", root.trim_end_matches('=')),
            format!("o\n1\n{root}\n\n"),
            format!("o\n1\n{root}\next\n\n"),
            format!("o\t\n1\n{root}\n"),
        ] {
            let r = Checkpoint::parse_note_text(&bad);
            assert!(
                matches!(r, Err(NoteError::MalformedCheckpoint(_))),
                "{bad:?}: {r:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>(), sig in prop::collection::vec(any::<u8>(), 0..80)) {
            let v = NoteVerifier::parse(&vector().verifier_key).unwrap();
            let _ = (NoteVerifier::parse(&s), Checkpoint::parse_note_text(&s), v.verify(&s));
            let name = v.name();
            let ours = [&v.key_hash().to_be_bytes()[..], &sig].concat();
            for sig in [&sig, &ours] {
                let note = format!("{s}\n\n{SIG_PREFIX}{name} {}\n", STANDARD.encode(sig));
                prop_assert!(v.verify(&note).is_err());
            }
            let key = STANDARD.encode(&sig);
            let _ = NoteVerifier::parse(&format!("{name}+{:08x}+{key}", v.key_hash()));
        }
    }
}
