//! Shamir shares of the unseal key, and their text form.
//!
//! The arithmetic is `blahaj`'s (GF(2^8), a maintained fork of the withdrawn `sharks`); this module
//! adds what an operator needs around it: each share names its vault and threshold and carries a
//! checksum, so a mistyped share, a share of another vault or the same share given twice is
//! refused at once with a message that says which, instead of a failed unseal after the last one.
//!
//! Share text: `kvs1_` + lowercase hex of
//!
//! ```text
//! | vault id (8) | threshold (1) | x (1) | y (32) | CRC-32 of the preceding 42 bytes, BE (4) |
//! ```

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::crypto::{KEY_LEN, SecretKey};

const SHARE_PREFIX: &str = "kvs1_";
const SHARE_BYTES: usize = 8 + 1 + 1 + KEY_LEN + 4;

/// A vault's public identifier, random at init; shares and the audit log name it.
pub type VaultId = [u8; 8];

/// One operator's share of the unseal key. Zeroized on drop; no `Debug` that shows it.
#[derive(Clone)]
pub struct Share {
    vault_id: VaultId,
    threshold: u8,
    x: u8,
    y: Zeroizing<[u8; KEY_LEN]>,
}

impl Share {
    /// Parses a share's text form. Whitespace around it is ignored.
    pub fn parse(text: &str) -> Result<Share, ShareError> {
        let hex = text
            .trim()
            .strip_prefix(SHARE_PREFIX)
            .ok_or(ShareError::Malformed)?;
        if hex.len() != SHARE_BYTES * 2 || !hex.is_ascii() {
            return Err(ShareError::Malformed);
        }
        // Constant time: the digits are the secret share.
        let mut bytes = Zeroizing::new([0u8; SHARE_BYTES]);
        base16ct::mixed::decode(hex, &mut *bytes).map_err(|_| ShareError::Malformed)?;
        let (body, crc) = bytes.split_at(SHARE_BYTES - 4);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err(ShareError::Checksum);
        }
        let mut y = Zeroizing::new([0u8; KEY_LEN]);
        y.copy_from_slice(&body[10..]);
        let share = Share {
            vault_id: body[..8].try_into().map_err(|_| ShareError::Malformed)?,
            threshold: body[8],
            x: body[9],
            y,
        };
        if share.x == 0 || share.threshold < 2 {
            return Err(ShareError::Malformed);
        }
        Ok(share)
    }

    /// The share's text, to hand to its operator once at init or rekey.
    pub fn expose_text(&self) -> SecretString {
        let mut bytes = Zeroizing::new(Vec::with_capacity(SHARE_BYTES));
        bytes.extend_from_slice(&self.vault_id);
        bytes.push(self.threshold);
        bytes.push(self.x);
        bytes.extend_from_slice(self.y.as_slice());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        let mut text = String::with_capacity(SHARE_PREFIX.len() + 2 * SHARE_BYTES);
        text.push_str(SHARE_PREFIX);
        for b in bytes.iter() {
            text.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            text.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        SecretString::from(text)
    }

    /// The vault this share belongs to.
    pub fn vault_id(&self) -> VaultId {
        self.vault_id
    }

    /// How many shares unseal.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The share's x coordinate (1..=255), which tells shares of one split apart.
    pub fn index(&self) -> u8 {
        self.x
    }

    /// Whether `other` is this very share (every field equal; the secret part compared in
    /// constant time).
    pub fn same_as(&self, other: &Share) -> bool {
        use subtle::ConstantTimeEq;
        let public = self.vault_id == other.vault_id
            && self.threshold == other.threshold
            && self.x == other.x;
        let secret: bool = self.y.as_slice().ct_eq(other.y.as_slice()).into();
        public & secret
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("index", &self.x)
            .field("threshold", &self.threshold)
            .field("y", &"[REDACTED]")
            .finish()
    }
}

/// A share that cannot be used. Never includes the share's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Not a share's text.
    #[error("not a keyvault unseal share (expected `kvs1_` followed by 94 hex digits)")]
    Malformed,
    /// A typo: the checksum does not match.
    #[error("the share's checksum does not match: check it for typos")]
    Checksum,
    /// The share was made for another vault.
    #[error("the share belongs to another vault")]
    OtherVault,
    /// The share was made by an earlier split (before a rekey) with another threshold.
    #[error("the share belongs to another set of shares of this vault (threshold {0})")]
    OtherSplit(u8),
    /// This share was already submitted.
    #[error("this share was already submitted")]
    Repeated,
}

/// Splits `secret` into `n` shares of which any `t` recover it; `2 <= t <= n <= 255`.
pub fn split(secret: &SecretKey, vault_id: VaultId, t: u8, n: u8) -> Vec<Share> {
    debug_assert!(2 <= t && t <= n);
    blahaj::Sharks(t)
        .dealer(secret.expose())
        .take(usize::from(n))
        .map(|s| {
            let bytes = Zeroizing::new(Vec::from(&s));
            let mut y = Zeroizing::new([0u8; KEY_LEN]);
            y.copy_from_slice(&bytes[1..]);
            Share {
                vault_id,
                threshold: t,
                x: bytes[0],
                y,
            }
        })
        .collect()
}

/// Recovers the secret from at least `threshold` distinct shares. A wrong result is possible if
/// the shares do not belong together; the caller detects it when unwrapping with the key fails.
pub fn combine(shares: &[Share]) -> Option<SecretKey> {
    let threshold = shares.first()?.threshold;
    let parsed: Vec<blahaj::Share> = shares
        .iter()
        .filter_map(|s| {
            let mut bytes = Zeroizing::new(Vec::with_capacity(1 + KEY_LEN));
            bytes.push(s.x);
            bytes.extend_from_slice(s.y.as_slice());
            blahaj::Share::try_from(bytes.as_slice()).ok()
        })
        .collect();
    let secret = Zeroizing::new(blahaj::Sharks(threshold).recover(&parsed).ok()?);
    let bytes: [u8; KEY_LEN] = secret.as_slice().try_into().ok()?;
    Some(SecretKey::from_bytes(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn text_round_trip_and_typos() {
        let secret = SecretKey::random();
        let shares = split(&secret, [9; 8], 3, 5);
        assert_eq!(shares.len(), 5);
        for s in &shares {
            let text = s.expose_text();
            let back = Share::parse(text.expose_secret()).unwrap();
            assert_eq!((back.x, back.threshold, back.vault_id), (s.x, 3, [9; 8]));
            assert_eq!(back.y.as_slice(), s.y.as_slice());
            // Any single changed hex digit is caught by the checksum or the format.
            let t = text.expose_secret();
            for i in SHARE_PREFIX.len()..t.len() {
                let mut bad: Vec<u8> = t.as_bytes().to_vec();
                bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
                assert!(Share::parse(std::str::from_utf8(&bad).unwrap()).is_err());
            }
            assert!(!format!("{s:?}").contains(&t[10..20]));
        }
        assert_eq!(Share::parse("nonsense").unwrap_err(), ShareError::Malformed);
        assert_eq!(Share::parse("kvs1_é").unwrap_err(), ShareError::Malformed);
        // Digits in either case, as a person may type them; a sign is no digit (an integer
        // parser took `+f` for one).
        let t = shares[0].expose_text();
        let upper = format!("kvs1_{}", t.expose_secret()[5..].to_uppercase());
        assert!(Share::parse(&upper).is_ok());
        let mut signed = t.expose_secret().to_owned();
        signed.replace_range(5..6, "+");
        assert_eq!(Share::parse(&signed).unwrap_err(), ShareError::Malformed);
    }

    #[test]
    fn any_threshold_subset_recovers() {
        let secret = SecretKey::random();
        let shares = split(&secret, [1; 8], 2, 4);
        for i in 0..4 {
            for j in (i + 1)..4 {
                let got = combine(&[shares[i].clone(), shares[j].clone()]).unwrap();
                assert_eq!(got.expose(), secret.expose());
            }
        }
        assert!(combine(&shares[..1]).is_none());
    }
}
