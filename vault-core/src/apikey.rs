//! API keys and vault tokens as text.
//!
//! Fixed format (customers hold these keys; secret scanners match them): `<prefix>_`, then 49
//! base62 (`0-9A-Za-z`) digits of `key id (12 bytes) || secret (24 bytes)` as one big-endian
//! number, then 6 base62 digits of the CRC-32 (ISO-HDLC, as zlib) of all the ASCII before them.
//! Both are left-padded with `0`. The only way back to text is [`ApiKey::expose_secret_text`].

use std::fmt;

use rand::TryRng;
use rand::rngs::SysRng;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 24;
const NUMBER_LEN: usize = ID_LEN + SECRET_LEN;
const BODY_LEN: usize = 49; // 62^49 > 2^288 > 62^48
const CHECK_LEN: usize = 6; // 62^6 > 2^32 > 62^5

/// The prefix of a key: 2 to 8 lowercase ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Prefix {
    bytes: [u8; 8],
    len: u8,
}

/// A prefix that is not 2 to 8 lowercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key prefix must be 2 to 8 lowercase ASCII letters")]
pub struct InvalidPrefix;

impl Prefix {
    /// The fixed prefix of vault tokens, `kvt`.
    pub const TOKEN: Prefix = Prefix {
        bytes: *b"kvt\0\0\0\0\0",
        len: 3,
    };
    /// The default prefix of API keys, `pvk`.
    pub const DEFAULT: Prefix = Prefix {
        bytes: *b"pvk\0\0\0\0\0",
        len: 3,
    };

    /// Checks that `prefix` is `[a-z]{2,8}`.
    pub fn new(prefix: &str) -> Result<Prefix, InvalidPrefix> {
        let text = prefix.as_bytes();
        if !(2..=8).contains(&text.len()) || !text.iter().all(u8::is_ascii_lowercase) {
            return Err(InvalidPrefix);
        }
        let mut bytes = [0u8; 8];
        bytes[..text.len()].copy_from_slice(text);
        let len = text.len() as u8;
        Ok(Prefix { bytes, len })
    }

    /// The prefix text, without the `_` separator.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored, so this is always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("prefix is ASCII")
    }
}

impl Default for Prefix {
    fn default() -> Prefix {
        Prefix::DEFAULT
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Prefix").field(&self.as_str()).finish()
    }
}

impl TryFrom<String> for Prefix {
    type Error = InvalidPrefix;
    fn try_from(text: String) -> Result<Prefix, InvalidPrefix> {
        Prefix::new(&text)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The public, loggable half of a key. Shown as 24 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct KeyId([u8; ID_LEN]);

/// A key id that is not exactly 24 hexadecimal characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key id must be exactly 24 hexadecimal characters")]
pub struct InvalidKeyId;

impl KeyId {
    /// A fresh id from the OS CSPRNG.
    pub fn random() -> KeyId {
        let mut bytes = [0u8; ID_LEN];
        fill_from_os(&mut bytes);
        KeyId(bytes)
    }

    pub fn from_bytes(bytes: [u8; ID_LEN]) -> KeyId {
        KeyId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Parses exactly 24 hex characters (either case).
    pub fn parse_hex(text: &str) -> Result<KeyId, InvalidKeyId> {
        let text = text.as_bytes();
        if text.len() != 2 * ID_LEN {
            return Err(InvalidKeyId);
        }
        let mut bytes = [0u8; ID_LEN];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let hi = char::from(pair[0]).to_digit(16).ok_or(InvalidKeyId)?;
            let lo = char::from(pair[1]).to_digit(16).ok_or(InvalidKeyId)?;
            *byte = (hi * 16 + lo) as u8;
        }
        Ok(KeyId(bytes))
    }
}

/// A key id's 24 lower-case hex digits, on the stack: what `Display` writes, for callers that
/// need the text without allocating it (a response header, say).
#[derive(Debug, Clone, Copy)]
pub struct KeyIdHex([u8; 2 * ID_LEN]);

impl KeyIdHex {
    pub fn as_str(&self) -> &str {
        // Invariant: hex digits are ASCII.
        std::str::from_utf8(&self.0).expect("hex is ASCII")
    }
}

impl KeyId {
    /// The id as hex text, made in one buffer: an id is written twice into every verify's
    /// audit entry and once into its answer, and a `write!` per byte cost more than the rest
    /// of the entry's encoding.
    pub fn hex(&self) -> KeyIdHex {
        let mut text = [0u8; 2 * ID_LEN];
        // Invariant: the buffer is exactly twice the id's length, as hex needs.
        hex::encode_to_slice(self.0, &mut text).expect("two hex digits per byte");
        KeyIdHex(text)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId(\"{self}\")")
    }
}

impl TryFrom<String> for KeyId {
    type Error = InvalidKeyId;
    fn try_from(text: String) -> Result<KeyId, InvalidKeyId> {
        KeyId::parse_hex(&text)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The secret half of a key: 24 bytes, boxed and zeroized on drop. Never displayed or serialized.
pub struct KeySecret(SecretBox<[u8; SECRET_LEN]>);

impl KeySecret {
    /// A fresh secret from the OS CSPRNG.
    pub fn random() -> KeySecret {
        KeySecret(SecretBox::init_with_mut(|bytes: &mut [u8; SECRET_LEN]| {
            fill_from_os(bytes)
        }))
    }

    /// Wraps secret bytes (e.g. decrypted from storage). The caller should zeroize its copy.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> KeySecret {
        KeySecret(SecretBox::new(Box::new(bytes)))
    }

    /// The raw secret bytes. Named so every use is visible in review.
    pub fn expose_bytes(&self) -> &[u8; SECRET_LEN] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret([REDACTED])")
    }
}

/// Why a text is not a well-formed key. Messages never include the input: it may be a real key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedKey {
    #[error("the key does not start with the expected prefix and '_'")]
    WrongPrefix,
    #[error("the key has the wrong length")]
    Length,
    #[error("the key contains a character outside 0-9, A-Z and a-z")]
    Character,
    #[error("the key checksum does not match (mistyped or truncated key)")]
    Checksum,
    #[error("the key body or checksum is out of range")]
    Overflow,
}

/// An API key or vault token: prefix, public id and secret.
pub struct ApiKey {
    prefix: Prefix,
    id: KeyId,
    secret: KeySecret,
}

impl ApiKey {
    /// A new key with a fresh id and secret.
    pub fn generate(prefix: &Prefix) -> ApiKey {
        ApiKey::new(*prefix, KeyId::random(), KeySecret::random())
    }

    /// A key from its parts (e.g. rotation: same id, new secret).
    pub fn new(prefix: Prefix, id: KeyId, secret: KeySecret) -> ApiKey {
        ApiKey { prefix, id, secret }
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn secret(&self) -> &KeySecret {
        &self.secret
    }

    /// Parses key text whose prefix must equal `expected`. Never panics and never echoes `text`.
    pub fn parse(text: &str, expected: &Prefix) -> Result<ApiKey, MalformedKey> {
        let bytes = text.as_bytes();
        let rest = bytes
            .strip_prefix(expected.as_str().as_bytes())
            .and_then(|rest| rest.strip_prefix(b"_"))
            .ok_or(MalformedKey::WrongPrefix)?;
        if rest.len() != BODY_LEN + CHECK_LEN {
            return Err(MalformedKey::Length);
        }
        if !rest.iter().all(|&c| digit_value(c).is_some()) {
            return Err(MalformedKey::Character);
        }
        let (body, check) = rest.split_at(BODY_LEN);
        if crc32fast::hash(&bytes[..bytes.len() - CHECK_LEN]) != decode_checksum(check)? {
            return Err(MalformedKey::Checksum);
        }
        let number = decode_body(body)?;
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&number[..ID_LEN]);
        let secret = SecretBox::init_with_mut(|secret: &mut [u8; SECRET_LEN]| {
            secret.copy_from_slice(&number[ID_LEN..]);
        });
        Ok(ApiKey::new(*expected, KeyId(id), KeySecret(secret)))
    }

    /// The full key text. Only for showing a key once, at create, rotate or reveal; never log it.
    pub fn expose_secret_text(&self) -> SecretString {
        let prefix = self.prefix.as_str();
        let mut number = Zeroizing::new([0u8; NUMBER_LEN]);
        number[..ID_LEN].copy_from_slice(self.id.as_bytes());
        number[ID_LEN..].copy_from_slice(self.secret.expose_bytes());
        let mut body = Zeroizing::new([0u8; BODY_LEN]);
        encode_body(&mut number, &mut body);
        // Exact capacity, so the conversion to a boxed `str` below does not reallocate and leave
        // an unzeroized copy behind.
        let mut text = String::with_capacity(prefix.len() + 1 + BODY_LEN + CHECK_LEN);
        text.push_str(prefix);
        text.push('_');
        text.extend(body.iter().map(|&c| char::from(c)));
        let mut check = [0u8; CHECK_LEN];
        encode_checksum(crc32fast::hash(text.as_bytes()), &mut check);
        text.extend(check.iter().map(|&c| char::from(c)));
        debug_assert_eq!(text.len(), text.capacity());
        SecretString::from(text)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("prefix", &self.prefix.as_str())
            .field("id", &self.id.to_string())
            .field("secret", &format_args!("[REDACTED]"))
            .finish()
    }
}

fn fill_from_os(buf: &mut [u8]) {
    // Panic like rand's `ThreadRng` does: if the OS cannot supply entropy there is no safe way to
    // mint a key, no caller could recover, and a weaker fallback would silently weaken every key.
    if let Err(err) = SysRng.try_fill_bytes(buf) {
        panic!("the operating system's random number generator failed: {err}");
    }
}

// Base62 of a fixed-width 36-byte big-endian number, left-padded to 49 digits, is hand-written:
// no well-kept crate gives exactly this layout (most base62 crates do u128 or strip leading
// zeros). Schoolbook division/multiplication by 62 over bytes is plenty for 36 bytes.

fn digit_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'a'..=b'z' => Some(c - b'a' + 36),
        _ => None,
    }
}

/// Writes `number` in base62 into `out`, most significant digit first; leaves `number` zero.
fn encode_body(number: &mut [u8; NUMBER_LEN], out: &mut [u8; BODY_LEN]) {
    for slot in out.iter_mut().rev() {
        let mut rem = 0u32;
        for byte in number.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8; // rem < 62, so acc < 62 * 256 and the quotient fits.
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    debug_assert!(number.iter().all(|&b| b == 0), "62^49 > 2^288");
}

fn decode_body(body: &[u8]) -> Result<Zeroizing<[u8; NUMBER_LEN]>, MalformedKey> {
    // Verify parses every presented key (and the bearer token), so this is on the hot path: the
    // number is kept in five 64-bit limbs (least significant first, 320 bits for the 288
    // needed), and the digits are taken ten at a time (62^10 < 2^60, so a chunk's value fits a
    // u64), which makes each chunk five multiply-adds instead of each digit.
    let mut limbs = Zeroizing::new([0u64; 5]);
    for chunk in body.chunks(10) {
        let mut value = Zeroizing::new(0u64);
        let mut scale = 1u64;
        for &c in chunk {
            *value = *value * 62 + u64::from(digit_value(c).ok_or(MalformedKey::Character)?);
            scale *= 62;
        }
        let mut carry = u128::from(*value);
        for limb in limbs.iter_mut() {
            let acc = u128::from(*limb) * u128::from(scale) + carry;
            *limb = acc as u64; // the low 64 bits; the rest carries
            carry = acc >> 64;
        }
        if carry != 0 {
            return Err(MalformedKey::Overflow);
        }
    }
    // At or past 2^288 (36 bytes): a value no key encodes.
    if limbs[4] >> 32 != 0 {
        return Err(MalformedKey::Overflow);
    }
    let mut number = Zeroizing::new([0u8; NUMBER_LEN]);
    number[..4].copy_from_slice(&(limbs[4] as u32).to_be_bytes());
    for (i, limb) in limbs[..4].iter().rev().enumerate() {
        number[4 + 8 * i..12 + 8 * i].copy_from_slice(&limb.to_be_bytes());
    }
    Ok(number)
}

fn encode_checksum(mut crc: u32, out: &mut [u8; CHECK_LEN]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
}

fn decode_checksum(check: &[u8]) -> Result<u32, MalformedKey> {
    let mut value = 0u64; // 62^6 < 2^36: no overflow in u64.
    for &c in check {
        value = value * 62 + u64::from(digit_value(c).ok_or(MalformedKey::Character)?);
    }
    u32::try_from(value).map_err(|_| MalformedKey::Overflow)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::MalformedKey::*;
    use super::*;
    use proptest::prelude::*;

    // Derived independently (Python big integers and zlib.crc32): 0, 2^288 - 1 and 2^288.
    const ZERO_KEY: &str = "pvk_00000000000000000000000000000000000000000000000002N5EWF";
    const MAX_KEY: &str = "pvk_4aayPrHErxRw4RlpBrwySYBqld0KYBESq8ER8ckHOABzglXg72XVKsc";
    const MAX_PLUS_ONE: &str = "4aayPrHErxRw4RlpBrwySYBqld0KYBESq8ER8ckHOABzglXg8";

    /// Test-local: `signed` followed by its CRC-32 in base62, by plain string building.
    fn with_checksum(signed: &str) -> String {
        let alphabet: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
        let mut n = crc32fast::hash(signed.as_bytes());
        let mut digits = String::new();
        for _ in 0..6 {
            digits.insert(0, alphabet[(n % 62) as usize]);
            n /= 62;
        }
        format!("{signed}{digits}")
    }

    fn key(prefix: Prefix, id: [u8; 12], secret: [u8; 24]) -> ApiKey {
        ApiKey::new(prefix, KeyId::from_bytes(id), KeySecret::from_bytes(secret))
    }

    fn text(key: &ApiKey) -> String {
        key.expose_secret_text().expose_secret().to_owned()
    }

    fn err(text: &str) -> MalformedKey {
        ApiKey::parse(text, &Prefix::default()).unwrap_err()
    }

    #[test]
    fn known_answers() {
        let zeros = "0".repeat(49);
        for (byte, expected, body) in [(0, ZERO_KEY, &*zeros), (0xff, MAX_KEY, &MAX_KEY[4..53])] {
            assert_eq!(with_checksum(&format!("pvk_{body}")), expected);
            let key = key(Prefix::default(), [byte; 12], [byte; 24]);
            assert_eq!(text(&key), expected);
            let parsed = ApiKey::parse(expected, &Prefix::default()).unwrap();
            assert_eq!(parsed.id().as_bytes(), &[byte; 12]);
            assert_eq!(parsed.secret().expose_bytes(), &[byte; 24]);
        }
    }

    #[test]
    fn specific_errors() {
        for body in [MAX_PLUS_ONE.to_owned(), "z".repeat(49)] {
            assert_eq!(err(&with_checksum(&format!("pvk_{body}"))), Overflow);
        }
        // "zzzzzz" = 62^6 - 1 and "4gfFC4" = 2^32 do not fit a u32.
        for check in ["zzzzzz", "4gfFC4"] {
            assert_eq!(err(&format!("pvk_{}{check}", "0".repeat(49))), Overflow);
        }
        assert_eq!(err(""), WrongPrefix);
        assert_eq!(err(&ZERO_KEY.replacen("pvk", "PVK", 1)), WrongPrefix);
        assert_eq!(err(&ZERO_KEY.replacen("pvk_", "pvkx_", 1)), WrongPrefix);
        assert_eq!(err(&"x".repeat(1 << 20)), WrongPrefix);
        assert_eq!(err(&ZERO_KEY[..ZERO_KEY.len() - 1]), Length);
        assert_eq!(err(&ZERO_KEY.replacen('0', "é", 1)), Length);
        assert_eq!(err(&format!("pvk_{}", "0".repeat(1 << 20))), Length);
        assert_eq!(err(&ZERO_KEY.replacen('0', "-", 1)), Character);
        assert_eq!(err(&ZERO_KEY.replacen("00", "é", 1)), Character);
        assert_eq!(err(&ZERO_KEY.replacen('0', "1", 1)), Checksum);
    }

    #[test]
    fn prefixes() {
        assert_eq!(Prefix::TOKEN, Prefix::new("kvt").unwrap());
        assert_eq!(Prefix::default(), Prefix::new("pvk").unwrap());
        for n in 0..12 {
            let text = "q".repeat(n);
            assert_eq!(Prefix::new(&text).is_ok(), (2..=8).contains(&n), "{n}");
        }
        for bad in ["Pvk", "p_k", "pvk1", "pvké", "ǆǆ", "pv k", "pvk_"] {
            assert_eq!(Prefix::new(bad), Err(InvalidPrefix), "{bad:?}");
        }
        let json = serde_json::to_string(&Prefix::TOKEN).unwrap();
        assert_eq!(json, "\"kvt\"");
        assert_eq!(
            serde_json::from_str::<Prefix>(&json).unwrap(),
            Prefix::TOKEN
        );
        assert!(serde_json::from_str::<Prefix>("\"PVK\"").is_err());
        assert_eq!(
            format!("{:?} {}", Prefix::TOKEN, Prefix::TOKEN),
            "Prefix(\"kvt\") kvt"
        );
    }

    #[test]
    fn key_id_hex() {
        let bytes = [
            0, 1, 2, 0xab, 0xcd, 0xef, 0x10, 0x20, 0x7f, 0x80, 0xfe, 0xff,
        ];
        let (id, hex) = (KeyId::from_bytes(bytes), "000102abcdef10207f80feff");
        assert_eq!(id.to_string(), hex);
        assert_eq!(id.hex().as_str(), hex);
        assert_eq!(KeyId::parse_hex(hex).unwrap(), id);
        assert_eq!(KeyId::parse_hex(&hex.to_uppercase()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<KeyId>("\"xyz\"").is_err());
        let (long, short) = (format!("{hex}0"), &hex[1..]);
        let (g, plus) = (hex.replace('f', "g"), hex.replacen('0', "+", 1));
        let (space, accent) = (hex.replacen('0', " ", 1), hex.replacen("00", "é", 1));
        for bad in ["", "00", short, &long, &g, &plus, &space, &accent] {
            assert_eq!(KeyId::parse_hex(bad), Err(InvalidKeyId), "{bad:?}");
        }
    }

    #[test]
    fn generate_is_random() {
        let a = ApiKey::generate(&Prefix::TOKEN);
        let b = ApiKey::generate(&Prefix::TOKEN);
        assert_ne!(a.id(), b.id());
        assert_ne!(a.secret().expose_bytes(), b.secret().expose_bytes());
        assert!(text(&a).starts_with("kvt_") && text(&a).len() == 3 + 1 + 49 + 6);
    }

    fn arb_key() -> impl Strategy<Value = ApiKey> {
        ("[a-z]{2,8}", any::<[u8; 12]>(), any::<[u8; 24]>())
            .prop_map(|(p, id, secret)| key(Prefix::new(&p).unwrap(), id, secret))
    }

    proptest! {
        #[test]
        fn round_trip(key in arb_key()) {
            let parsed = ApiKey::parse(&text(&key), key.prefix()).unwrap();
            prop_assert_eq!(parsed.prefix(), key.prefix());
            prop_assert_eq!(parsed.id(), key.id());
            prop_assert_eq!(parsed.secret().expose_bytes(), key.secret().expose_bytes());
        }

        #[test]
        fn single_edits_fail(
            key in arb_key(),
            pos in any::<prop::sample::Index>(),
            alpha in prop::sample::select(ALPHABET.to_vec()),
            other in any::<char>(),
        ) {
            let chars: Vec<char> = text(&key).chars().collect();
            let i = pos.index(chars.len());
            let parses = |c: &[char]| ApiKey::parse(&String::from_iter(c), key.prefix()).is_ok();
            for c in [char::from(alpha), other] {
                let mut changed = chars.clone();
                changed[i] = c;
                prop_assert!(c == chars[i] || !parses(&changed));
                let mut inserted = chars.clone();
                inserted.insert(pos.index(chars.len() + 1), c);
                prop_assert!(!parses(&inserted));
            }
            let mut deleted = chars.clone();
            deleted.remove(i);
            prop_assert!(!parses(&deleted));
        }

        #[test]
        fn random_text_never_parses(
            text in any::<String>(),
            shaped in "pvk_[0-9A-Za-z]{55}",
            prefix in "[a-z]{2,8}",
        ) {
            prop_assert!(ApiKey::parse(&text, &Prefix::new(&prefix).unwrap()).is_err());
            prop_assert!(ApiKey::parse(&text, &Prefix::default()).is_err());
            prop_assert!(ApiKey::parse(&shaped, &Prefix::default()).is_err());
        }

        #[test]
        fn token_is_not_an_api_key(id in any::<[u8; 12]>(), secret in any::<[u8; 24]>()) {
            let token = text(&key(Prefix::TOKEN, id, secret));
            prop_assert_eq!(err(&token), WrongPrefix);
            prop_assert!(ApiKey::parse(&token, &Prefix::TOKEN).is_ok());
        }

        #[test]
        fn renderings_do_not_leak(key in arb_key()) {
            let text = text(&key);
            let body = &text.as_bytes()[key.prefix().as_str().len() + 1..];
            let secret = key.secret().expose_bytes();
            let secret_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let secret_list = format!("{:?}", &secret[..4]);
            let debug = format!("{key:?}");
            prop_assert!(debug.contains(&key.id().to_string()) && debug.contains("[REDACTED]"));
            let mut rendered = vec![debug, format!("{:?}", key.secret())];
            for e in [WrongPrefix, Length, Character, Checksum, Overflow] {
                rendered.extend([e.to_string(), format!("{e:?}")]);
            }
            for r in &rendered {
                let leaks = body.windows(8).any(|w| r.as_bytes().windows(8).any(|v| v == w));
                prop_assert!(!leaks, "{}", r);
                prop_assert!(!r.contains(&secret_hex[..16]) && !r.contains(&secret_list));
            }
        }
    }
}
