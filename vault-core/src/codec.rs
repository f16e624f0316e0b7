//! The one place that knows bincode (`=2.0.1`).
//!
//! bincode is unmaintained (RUSTSEC-2025-0141), so it encodes only private on-disk bytes (the
//! seal configuration, the keyring, record plaintexts inside their AEAD envelope), never bytes a
//! third party parses; golden tests pin those bytes. Decoding is bounded (1 MiB) and refuses
//! trailing bytes, so hostile input can neither exhaust memory nor hide data after a record.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest value decoded from disk.
const LIMIT: usize = 1 << 20;

fn config() -> Configuration<LittleEndian, Fixint, Limit<LIMIT>> {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<LIMIT>()
}

/// Encoded bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored bytes do not decode")]
pub struct CodecError;

/// Encodes a value for disk.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: encoding into a Vec fails only for values over the limit or for serde types
    // bincode does not support (none are used); both are programming errors caught by tests.
    bincode::serde::encode_to_vec(value, config()).expect("on-disk values encode")
}

fn compact_config() -> Configuration<LittleEndian, bincode::config::Varint, Limit<LIMIT>> {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes a value at the end of `out` with variable-length integers, for files of values back
/// to back whose figures are mostly small (the usage figures). Not for bytes pinned by golden
/// tests: those use [`encode`].
pub fn encode_compact_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Invariant: as for `encode`; writing to a Vec cannot fail otherwise.
    bincode::serde::encode_into_std_write(value, out, compact_config())
        .expect("on-disk values encode");
}

/// Decodes the value [`encode_compact_into`] wrote at the start of `bytes`; returns it and the
/// bytes it took.
pub fn decode_compact_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::decode_from_slice(bytes, compact_config()).map_err(|_| CodecError)
}

/// Decodes a value read from disk, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|_| CodecError)?;
    if read != bytes.len() {
        return Err(CodecError);
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let v = (7u32, String::from("x"), vec![1u8, 2]);
        let mut bytes = encode(&v);
        let mut two = Vec::new();
        encode_compact_into(&v, &mut two);
        encode_compact_into(&v, &mut two);
        let (first, used) = decode_compact_prefix::<(u32, String, Vec<u8>)>(&two).unwrap();
        assert_eq!(first, v);
        assert!(used < bytes.len(), "variable-length integers are shorter");
        let (second, rest) = decode_compact_prefix::<(u32, String, Vec<u8>)>(&two[used..]).unwrap();
        assert_eq!((second, used + rest), (v.clone(), two.len()));
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&bytes).unwrap(), v);
        bytes.push(0);
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&bytes), Err(CodecError));
        // A length prefix claiming 2^60 bytes is refused, not allocated.
        let mut huge = 7u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(decode::<(u32, String)>(&huge), Err(CodecError));
    }
}
