//! The lines of a JSON Lines export besides the entries (see [`export`](super::export) for
//! the layout): how the vault writes them, and how the verifier reads the two it meets once
//! per entry (an entry's sequence number and a leaf_hash line) without a JSON parser.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::merkle::Hash;

/// Format name and version in the header line.
pub const EXPORT_VERSION: u64 = 1;

/// The header line. `first_seq` is the first entry the export can hold (entries before it
/// were archived) and `prefix` the subtree hashes of `[0, first_seq)`; both are left out when
/// `first_seq` is 0, which gives the header of exports before archiving existed.
pub fn header_line(
    origin: &str,
    tree_size: u64,
    filtered: bool,
    first_seq: u64,
    prefix: &[Hash],
) -> String {
    let mut header = serde_json::json!({
        "keyvault_audit_export": EXPORT_VERSION,
        "origin": origin,
        "tree_size": tree_size,
        "filtered": filtered,
    });
    if first_seq > 0 {
        header["first_seq"] = first_seq.into();
        header["prefix"] = prefix.iter().map(|h| B64.encode(h)).collect();
    }
    header.to_string()
}

/// What a leaf_hash line holds around its base64 hash.
const LEAF_HASH_OPEN: &[u8] = br#"{"leaf_hash":""#;
const LEAF_HASH_CLOSE: &[u8] = br#""}"#;
/// Characters of a 32-byte hash in padded base64.
const HASH_B64: usize = 44;
/// Bytes of a leaf_hash line, without its newline.
pub const LEAF_HASH_LINE: usize = LEAF_HASH_OPEN.len() + HASH_B64 + LEAF_HASH_CLOSE.len();

/// The line after an entry of an unfiltered export: `{"leaf_hash":"<base64>"}`, the same bytes
/// `serde_json` writes. Put together by hand because it is written once per entry (building a
/// JSON value for it was most of an export's time) and base64 never needs escaping.
pub fn leaf_hash_line(hash: &Hash) -> [u8; LEAF_HASH_LINE] {
    let mut line = [0u8; LEAF_HASH_LINE];
    let (open, rest) = line.split_at_mut(LEAF_HASH_OPEN.len());
    let (b64, close) = rest.split_at_mut(HASH_B64);
    open.copy_from_slice(LEAF_HASH_OPEN);
    // Invariant: 32 bytes are exactly 44 characters of padded base64.
    let written = B64
        .encode_slice(hash, b64)
        .expect("a hash fits its base64 slot");
    debug_assert_eq!(written, HASH_B64);
    close.copy_from_slice(LEAF_HASH_CLOSE);
    line
}

/// The hash of a leaf_hash line in the exact form [`leaf_hash_line`] writes; `None` for any
/// other text, which the verifier then reads as JSON (so a line written another way is still
/// understood, or refused with the parser's reason).
pub(crate) fn leaf_hash_of_line(line: &[u8]) -> Option<Hash> {
    let b64 = line
        .strip_prefix(LEAF_HASH_OPEN)?
        .strip_suffix(LEAF_HASH_CLOSE)?;
    if b64.len() != HASH_B64 {
        return None;
    }
    let mut hash = [0u8; 33];
    match B64.decode_slice(b64, &mut hash) {
        Ok(32) => Some(hash[..32].try_into().ok()?),
        _ => None,
    }
}

/// The sequence number of an entry line: canonical entries begin `{"seq":N,"time_ms":`.
/// The verifier reads only that of an entry; the entry's bytes themselves are proven by its
/// hash (the signed root, or an inclusion proof at index `seq`), which only the vault's own
/// bytes pass, so parsing the rest would prove nothing more.
pub(crate) fn seq_of_entry(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(br#"{"seq":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    if !rest[digits..].starts_with(br#","time_ms":"#) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The line after an entry of a filtered export.
pub fn proof_line(proof: &[Hash]) -> String {
    let hashes: Vec<String> = proof.iter().map(|h| B64.encode(h)).collect();
    serde_json::json!({ "inclusion_proof": hashes }).to_string()
}

/// The last line.
pub fn end_line(entries: u64) -> String {
    serde_json::json!({ "end": { "entries": entries } }).to_string()
}

/// The line after the header.
pub fn checkpoint_line(note: &str) -> String {
    serde_json::json!({ "checkpoint": note }).to_string()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use proptest::prelude::*;

    use super::{B64, leaf_hash_line, leaf_hash_of_line, seq_of_entry};

    proptest! {
        /// The hand-made leaf_hash line is the line `serde_json` writes, and reads back.
        #[test]
        fn a_leaf_hash_line_is_the_json_line(hash in any::<[u8; 32]>()) {
            let line = leaf_hash_line(&hash);
            let json = serde_json::json!({ "leaf_hash": B64.encode(hash) }).to_string();
            prop_assert_eq!(&line[..], json.as_bytes());
            prop_assert_eq!(leaf_hash_of_line(&line), Some(hash));
        }

        /// The sequence number read from an entry's first bytes is the one the entry holds.
        #[test]
        fn the_seq_of_an_entry_line_is_its_seq(seq in any::<u64>(), time in any::<u64>()) {
            let line = format!(r#"{{"seq":{seq},"time_ms":{time},"event":"key.verify"}}"#);
            prop_assert_eq!(seq_of_entry(line.as_bytes()), Some(seq));
        }
    }

    #[test]
    fn lines_in_another_form_are_left_to_the_json_parser() {
        let hash = [7u8; 32];
        let line = leaf_hash_line(&hash);
        let text = std::str::from_utf8(&line).expect("ascii");
        for other in [
            text.replace(':', ": "),
            text.replace("leaf_hash", "leaf_hasx"),
            format!("{text} "),
            text.replace('=', "A"),
        ] {
            assert_eq!(leaf_hash_of_line(other.as_bytes()), None, "{other}");
        }
        for entry in [
            r#"{"seq":01,"time_ms":0}"#,
            r#"{"seq":,"time_ms":0}"#,
            r#"{"seq": 1,"time_ms":0}"#,
            r#"{"seq":1,"time":0}"#,
            r#"{"seq":99999999999999999999,"time_ms":0}"#,
            r#"{"time_ms":0,"seq":1}"#,
        ] {
            assert_eq!(seq_of_entry(entry.as_bytes()), None, "{entry}");
        }
    }
}
