//! The SHA-256 of an archive file: what the vault remembers of the archive it streamed, and
//! what a caller sends back to show it stored exactly those bytes before entries are dropped.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// The SHA-256 of an archive's bytes, as streamed by
/// [`Vault::write_audit_archive`](crate::Vault::write_audit_archive) and as stored by its
/// caller. Written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveDigest([u8; 32]);

/// Why a text is not an [`ArchiveDigest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected a SHA-256 as 64 lowercase hex digits")]
pub struct MalformedDigest;

impl ArchiveDigest {
    /// The digest of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ArchiveDigest {
        ArchiveDigest(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads 64 lowercase hex digits (the form `sha256sum` prints); anything else is refused.
    pub fn parse_hex(text: &str) -> Result<ArchiveDigest, MalformedDigest> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return Err(MalformedDigest);
        }
        let nibble = |d: u8| match d {
            b'0'..=b'9' => Ok(d - b'0'),
            b'a'..=b'f' => Ok(d - b'a' + 10),
            _ => Err(MalformedDigest),
        };
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Ok(ArchiveDigest(bytes))
    }

    /// The digest of everything `input` holds, read to its end.
    pub fn of_reader(mut input: impl Read) -> io::Result<ArchiveDigest> {
        let mut hashing = HashingWriter::new(io::sink());
        io::copy(&mut input, &mut hashing)?;
        Ok(hashing.finish())
    }
}

impl fmt::Display for ArchiveDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A [`Write`] that hashes exactly the bytes its inner writer accepted.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hash: Sha256::new(),
        }
    }

    /// The digest of every byte written.
    pub(crate) fn finish(self) -> ArchiveDigest {
        ArchiveDigest(self.hash.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_only_lowercase_64_digits_parse() {
        // SHA-256 of "abc" (FIPS 180-4, appendix B.1).
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let digest = ArchiveDigest::of_reader(&b"abc"[..]).unwrap();
        assert_eq!(digest.to_string(), abc);
        assert_eq!(ArchiveDigest::parse_hex(abc), Ok(digest));
        for bad in [
            "",
            &abc[..63],
            &format!("{abc}0"),
            &abc.to_uppercase(),
            &format!("g{}", &abc[1..]),
            &format!(" {}", &abc[1..]),
        ] {
            assert_eq!(ArchiveDigest::parse_hex(bad), Err(MalformedDigest), "{bad}");
        }
    }

    #[test]
    fn a_hashing_writer_hashes_what_it_wrote() {
        let mut out = Vec::new();
        let mut w = HashingWriter::new(&mut out);
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        let digest = w.finish();
        assert_eq!(out, b"abc");
        assert_eq!(digest, ArchiveDigest::of_reader(&b"abc"[..]).unwrap());
    }
}
