//! A VALID verdict's scopes and meta, shared with the key cache's copy of the key.
//!
//! A verify hands a key's scopes and meta on (to an HTTP answer, most often) rather than reading
//! them, so the verdict holds the cached record's texts by reference count, not copies: per
//! verify that is one count taken and given back where copying was a `Vec`, a `String` per
//! scope and the meta's text, each allocated, copied and freed (about a tenth of a typical
//! key's verify outside hashing). The meta's JSON is checked once, when the record is read into
//! the cache, not per verify.
//!
//! Both types view bytes laid out as a key record's texts (see `packed`): from `at`, the scope
//! count (1 byte), then each scope's length (1 byte) and text; the meta is the rest of the
//! bytes from its own `at`, JSON text of an object or empty (no meta). Whoever makes one has
//! checked that layout and that UTF-8.

use std::fmt;
use std::sync::Arc;

use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A key's scopes, read as strings; serialised as a list of them.
#[derive(Clone)]
pub struct Scopes {
    bytes: Arc<[u8]>,
    at: usize,
}

impl Scopes {
    /// Scopes of a key record's texts whose scope count is at `at` (layout checked).
    pub(crate) fn shared(bytes: Arc<[u8]>, at: usize) -> Scopes {
        Scopes { bytes, at }
    }

    /// Scopes made from strings: none if there are more than 255 or one is longer than 255
    /// bytes (a key holds at most [`MAX_SCOPES`](crate::keys::MAX_SCOPES) of at most
    /// [`MAX_SCOPE`](crate::keys::MAX_SCOPE) bytes).
    pub fn new<S: AsRef<str>>(scopes: &[S]) -> Option<Scopes> {
        let mut bytes = vec![u8::try_from(scopes.len()).ok()?];
        for scope in scopes {
            let scope = scope.as_ref().as_bytes();
            bytes.push(u8::try_from(scope.len()).ok()?);
            bytes.extend_from_slice(scope);
        }
        Some(Scopes::shared(bytes.into(), 0))
    }

    /// The scopes in the key's order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let count = usize::from(self.bytes[self.at]);
        let mut rest = &self.bytes[self.at + 1..];
        (0..count).map(move |_| {
            let len = usize::from(rest[0]);
            let scope = std::str::from_utf8(&rest[1..1 + len]).unwrap_or_default();
            rest = &rest[1 + len..];
            scope
        })
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.bytes[self.at])
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The scopes copied out.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// The scopes joined by `separator`.
    pub fn join(&self, separator: &str) -> String {
        let mut out = String::new();
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                out.push_str(separator);
            }
            out.push_str(scope);
        }
        out
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Scopes) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Scopes {}

/// Scopes are a key's public description, no secret.
impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A key's meta object as JSON text, serialised as that object.
///
/// The text is what serialising the key's [`Map`] gives (`serde_json`, compact, keys in the
/// map's order), so a verdict serialises to the same bytes as with the map.
#[derive(Clone)]
pub struct RawMeta {
    bytes: Arc<[u8]>,
    at: usize,
}

impl RawMeta {
    /// The meta of a key record's texts, from `at` to the end: checked by [`meta_is_json`].
    pub(crate) fn shared(bytes: Arc<[u8]>, at: usize) -> RawMeta {
        RawMeta { bytes, at }
    }

    /// The JSON text, compact: `{}` for a key without meta.
    pub fn json(&self) -> &str {
        match std::str::from_utf8(&self.bytes[self.at..]) {
            Ok("") | Err(_) => "{}",
            Ok(text) => text,
        }
    }

    /// The meta parsed into a map (empty if the text is, against expectation, no object).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.json()).unwrap_or_default()
    }
}

/// Whether a key record's meta text is what a verdict may hand on as it is: empty (no meta) or
/// exactly the JSON text of an object. Records hold text that `serde_json` wrote, so this fails
/// only for damaged ones, whose meta then reads as empty.
pub(crate) fn meta_is_json(text: &str) -> bool {
    // A scan without allocation: the borrowed raw value is the text's span of the value.
    text.is_empty()
        || serde_json::from_str::<&RawValue>(text)
            .is_ok_and(|raw| raw.get().len() == text.len() && raw.get().starts_with('{'))
}

impl From<&Map<String, Value>> for RawMeta {
    fn from(map: &Map<String, Value>) -> RawMeta {
        // A map of JSON values always serialises (its keys are strings), as an object.
        let text = serde_json::to_string(map).unwrap_or_default();
        RawMeta::shared(text.into_bytes().into(), 0)
    }
}

impl Serialize for RawMeta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json writes a raw value's text as it is only from a `RawValue`; borrowing one
        // re-scans the text (checked when the record was read, so this does not fail) but
        // neither allocates nor copies.
        let raw: &RawValue = serde_json::from_str(self.json()).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Equal when the texts are: two texts that `serde_json` wrote from equal maps are equal.
impl PartialEq for RawMeta {
    fn eq(&self, other: &RawMeta) -> bool {
        self.json() == other.json()
    }
}

impl Eq for RawMeta {}

/// The JSON text: meta is the key's public description, no secret.
impl fmt::Debug for RawMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scopes_serialise_as_a_list_of_strings() {
        let list = vec![
            "photos:read".to_owned(),
            String::new(),
            "\u{e9}\"".to_owned(),
        ];
        let scopes = Scopes::new(&list).unwrap();
        assert_eq!(scopes.to_vec(), list);
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes.join(","), "photos:read,,\u{e9}\"");
        assert_eq!(
            serde_json::to_string(&scopes).unwrap(),
            serde_json::to_string(&list).unwrap()
        );
        let none = Scopes::new::<&str>(&[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(serde_json::to_string(&none).unwrap(), "[]");
        assert!(Scopes::new(&["x".repeat(256)]).is_none());
    }

    #[test]
    fn only_an_object_s_exact_text_or_nothing_is_handed_on() {
        for good in ["", "{}", r#"{"a":[1,{"b":null}]}"#] {
            assert!(meta_is_json(good), "{good}");
        }
        for bad in ["[]", "1", " {}", "{} ", "{", "{}{}", "\"x\""] {
            assert!(!meta_is_json(bad), "{bad}");
        }
        let empty = RawMeta::shared(Arc::from(&b""[..]), 0);
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }
}
