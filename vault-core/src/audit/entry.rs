//! Audit entries and their canonical bytes.
//!
//! An entry's leaf bytes are its canonical JSON: the fields below in this order, every field
//! always present (`null` when unknown), integers only, UTF-8, no whitespace, no trailing
//! newline; `details` is an object with keys in byte order whose values are strings, integers or
//! booleans. The export carries exactly these bytes, one entry per line, so a third party hashes
//! the line as it is.
//!
//! ```text
//! {"seq":0,"time_ms":1764150000000,"event":"key.verify","outcome":"VALID",
//!  "key_id":"0a1b…","owner":"cust_42","actor":"token:9f…","client":"203.0.113.7",
//!  "request_id":"…","details":{"scope":"photos:write"},"salt":"32 hex digits"}
//! ```
//!
//! A request made through the web console carries `"via":"ui"` in `details` (see
//! [`Context::via`]); API requests carry no `via`.
//!
//! Never a secret: a presented string that matched nothing is recorded only as the keyed digest
//! `HMAC-SHA256(audit digest key, string)` in `details.presented_digest`.

use std::collections::BTreeMap;

use compact_str::{CompactString, ToCompactString as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::observation::Observation;
use crate::apikey::{KeyId, KeyIdHex};
use crate::context::Context;
use crate::keys::VerifyCode;

/// What an operation asks the log to record; the log adds sequence number, time, caller and salt.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    event: &'static str,
    outcome: String,
    key_id: Option<KeyId>,
    owner: Option<String>,
    details: BTreeMap<String, Value>,
}

impl Event {
    /// An event about no particular key (`sys.seal`, say).
    pub fn new(event: &'static str, outcome: impl Into<String>) -> Event {
        Event {
            event,
            outcome: outcome.into(),
            key_id: None,
            owner: None,
            details: BTreeMap::new(),
        }
    }

    /// An event about key or token `id` of `owner`.
    pub fn key(event: &'static str, outcome: impl Into<String>, id: KeyId, owner: &str) -> Event {
        let mut e = Event::new(event, outcome);
        e.key_id = Some(id);
        e.owner = Some(owner.to_owned());
        e
    }

    /// A verify that matched no key.
    pub fn verify(code: VerifyCode) -> Event {
        Event::new("key.verify", code.as_str())
    }

    /// Adds a detail (a string, an integer or a boolean).
    pub fn detail(mut self, name: &str, value: impl Into<Value>) -> Event {
        let value = value.into();
        debug_assert!(matches!(
            value,
            Value::String(_) | Value::Bool(_) | Value::Number(_)
        ));
        self.details.insert(name.to_owned(), value);
        self
    }

    /// Records the keyed digest of a presented string that matched nothing.
    pub fn presented(self, digest: [u8; 32]) -> Event {
        self.detail("presented_digest", hex::encode(digest))
    }

    /// The event name.
    pub fn name(&self) -> &'static str {
        self.event
    }

    /// What the usage figures will read of the entry this event makes for `ctx`, built from
    /// the typed fields rather than the entry's JSON; its sequence number and time are 0 until
    /// the writer sets them.
    pub(crate) fn observation(&self, ctx: &Context) -> Observation {
        Observation::from_parts(
            self.event,
            &self.outcome,
            self.key_id.map(|id| id.to_compact_string()),
            self.owner.as_deref().map(CompactString::from),
            ctx.client.as_deref().map(CompactString::from),
            &self.details,
        )
    }
}

/// One audit entry, as exported and parsed back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log, from 0; also the Merkle leaf index.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: u64,
    /// What happened (`key.verify`, `key.create`, `sys.unseal`, ...).
    pub event: String,
    /// The outcome (`ok`, a verify code, an error code).
    pub outcome: String,
    /// The key or token concerned.
    pub key_id: Option<String>,
    /// Its owner.
    pub owner: Option<String>,
    /// Who asked.
    pub actor: String,
    /// From where.
    pub client: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Small details.
    pub details: BTreeMap<String, Value>,
    /// 16 random bytes, hex: keeps the leaf hash of a guessable entry unguessable.
    pub salt: String,
}

impl Entry {
    /// Builds the entry for `event` at `seq`.
    pub fn new(seq: u64, time_ms: u64, event: Event, ctx: &Context) -> Entry {
        Entry::salted(seq, time_ms, event, ctx, fresh_salt())
    }

    /// [`Entry::new`] with its salt given.
    fn salted(seq: u64, time_ms: u64, event: Event, ctx: &Context, salt: [u8; 16]) -> Entry {
        // How the request came is a detail, not a field of its own: every field is always
        // present in the canonical bytes, so a new one would change every entry's leaf and
        // what older verifiers accept; a detail is only there when set.
        let details = with_via(event.details, ctx);
        Entry {
            seq,
            time_ms,
            event: event.event.to_owned(),
            outcome: event.outcome,
            key_id: event.key_id.map(|id| id.to_string()),
            owner: event.owner,
            actor: ctx.actor.to_string(),
            client: ctx.client.clone(),
            request_id: ctx.request_id.clone(),
            details,
            salt: hex::encode(salt),
        }
    }

    /// The canonical JSON bytes: the Merkle leaf and the export line. Written as
    /// `Prepared` writes them (one definition of the bytes: the private `Tail`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let tail = Tail {
            event: &self.event,
            outcome: &self.outcome,
            key_id: self.key_id.as_deref(),
            owner: self.owner.as_deref(),
            actor: &self.actor,
            client: self.client.as_deref(),
            request_id: self.request_id.as_deref(),
            details: &self.details,
            salt: &self.salt,
        };
        let mut bytes = positioned(self.seq, self.time_ms, BODY_CAPACITY);
        tail.write_after(&mut bytes);
        bytes
    }

    /// Parses canonical bytes, refusing anything that does not re-serialise to the same bytes.
    pub fn parse(bytes: &[u8]) -> Result<Entry, EntryError> {
        let entry: Entry = serde_json::from_slice(bytes).map_err(|e| EntryError(e.to_string()))?;
        if entry.to_bytes() != bytes {
            return Err(EntryError("not in canonical form".into()));
        }
        Ok(entry)
    }
}

/// An entry encoded but for its sequence number and time, which only the writer knows: the
/// callers do the JSON encoding in parallel, and the writer prefixes two integers.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The canonical bytes after `{"seq":N,"time_ms":T`.
    body: Vec<u8>,
    /// What the usage figures need of it (sequence number and time set by `finish`).
    pub(crate) observation: Observation,
}

impl Prepared {
    /// Encodes the entry for `event`.
    pub(crate) fn new(event: Event, ctx: &Context) -> Prepared {
        Prepared::salted(event, ctx, fresh_salt())
    }

    /// [`Prepared::new`] with its salt given: the bytes of [`Entry::salted`]'s after the
    /// sequence number and time, serialised from borrowed fields (no `Entry`, no string copied
    /// or formatted on the heap: this runs for every verify).
    fn salted(event: Event, ctx: &Context, salt: [u8; 16]) -> Prepared {
        let observation = event.observation(ctx);
        let key_id = event.key_id.as_ref().map(KeyId::hex);
        let mut salt_hex = [0u8; 32];
        // Invariant: 16 bytes are exactly 32 hex digits.
        hex::encode_to_slice(salt, &mut salt_hex).expect("two hex digits per byte");
        let details = with_via(event.details, ctx);
        let tail = Tail {
            event: event.event,
            outcome: &event.outcome,
            key_id: key_id.as_ref().map(KeyIdHex::as_str),
            owner: event.owner.as_deref(),
            actor: &ctx.actor,
            client: ctx.client.as_deref(),
            request_id: ctx.request_id.as_deref(),
            details: &details,
            // Invariant: hex digits are ASCII.
            salt: std::str::from_utf8(&salt_hex).expect("hex is ASCII"),
        };
        let mut body = Vec::with_capacity(BODY_CAPACITY);
        tail.write_after(&mut body);
        Prepared { body, observation }
    }

    /// The canonical bytes of the entry at `seq` and `time_ms` (exactly
    /// `Entry::new(seq, time_ms, ..).to_bytes()` with the same salt).
    pub(crate) fn finish(&mut self, seq: u64, time_ms: u64) -> Vec<u8> {
        self.observation.seq = seq;
        self.observation.time_ms = time_ms;
        let mut bytes = positioned(seq, time_ms, self.body.len());
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Room for what follows `{"seq":N,"time_ms":T`: a verify's entry is about 300 bytes.
const BODY_CAPACITY: usize = 384;

/// The start of an entry's canonical bytes, `{"seq":N,"time_ms":T`, with room for `more`
/// bytes after it (what [`Tail::write_after`] writes).
fn positioned(seq: u64, time_ms: u64, more: usize) -> Vec<u8> {
    use std::io::Write;
    let mut bytes = Vec::with_capacity(48 + more);
    // Writing to a Vec cannot fail.
    let _ = write!(bytes, r#"{{"seq":{seq},"time_ms":{time_ms}"#);
    bytes
}

/// The fields of an entry after `seq` and `time_ms`, borrowed, in the order and with the
/// names and `null`s of the canonical bytes: what both [`Entry::to_bytes`] and [`Prepared`]
/// write ([`Entry`]'s own field names are what [`Entry::parse`] reads back).
#[derive(Serialize)]
struct Tail<'a> {
    event: &'a str,
    outcome: &'a str,
    key_id: Option<&'a str>,
    owner: Option<&'a str>,
    /// Serialised as its `Display` text (what `to_string` would make), without the string.
    #[serde(serialize_with = "display")]
    actor: &'a dyn std::fmt::Display,
    client: Option<&'a str>,
    request_id: Option<&'a str>,
    details: &'a BTreeMap<String, Value>,
    salt: &'a str,
}

impl Tail<'_> {
    /// Appends the canonical bytes after `{"seq":N,"time_ms":T`: `,"event":...}`.
    fn write_after(&self, bytes: &mut Vec<u8>) {
        let start = bytes.len();
        // Invariant: strings, integers, booleans and string-keyed maps, which serde_json
        // always serialises.
        serde_json::to_writer(&mut *bytes, self).expect("an entry serialises");
        // `{"event":...}` becomes `,"event":...}`.
        bytes[start] = b',';
    }
}

/// Serialises a value as its `Display` text (for [`Tail`]'s actor).
fn display<S: serde::Serializer>(
    value: &&dyn std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// An entry's salt: 16 random bytes. It must be unpredictable, not fresh from the kernel: the
/// thread's CSPRNG (ChaCha12, seeded and reseeded from the OS) fills it without a syscall per
/// entry.
fn fresh_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut salt);
    salt
}

/// The details with how the request came (`via`), if it did not come through the API itself.
fn with_via(mut details: BTreeMap<String, Value>, ctx: &Context) -> BTreeMap<String, Value> {
    if let Some(via) = ctx.via {
        details.insert("via".to_owned(), Value::from(via));
    }
    details
}

/// An entry's bytes do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed audit entry: {0}")]
pub struct EntryError(String);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::context::Actor;

    #[test]
    fn canonical_bytes_round_trip_and_order() {
        let ctx = Context::new(Actor::Operator)
            .with_client("127.0.0.1")
            .with_request_id("r-1");
        let event = Event::key("key.verify", "VALID", KeyId::from_bytes([1; 12]), "cust")
            .detail("scope", "photos:write")
            .detail("cost", 2u64)
            .detail("a_flag", true);
        let observation = event.observation(&ctx);
        let entry = Entry::new(7, 1_700_000_000_000, event, &ctx);
        let bytes = entry.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"seq":7,"time_ms":1700000000000,"event":"key.verify","outcome":"VALID","key_id":"010101010101010101010101","owner":"cust","actor":"operator","client":"127.0.0.1","request_id":"r-1","details":{"a_flag":true,"cost":2,"scope":"photos:write"},"salt":""#), "{text}");
        assert!(!text.contains('\n') && !text.contains(' '));
        assert_eq!(Entry::parse(&bytes).unwrap(), entry);
        // Prepared by the caller and finished by the writer: the same bytes.
        let mut prepared = Prepared {
            body: bytes[br#"{"seq":7,"time_ms":1700000000000"#.len()..].to_vec(),
            observation,
        };
        assert_eq!(prepared.finish(7, 1_700_000_000_000), bytes);
        let fresh = Prepared::new(Event::new("sys.seal", "ok"), &ctx).finish(12, 34);
        let parsed = Entry::parse(&fresh).unwrap();
        assert_eq!(
            (parsed.seq, parsed.time_ms, parsed.event.as_str()),
            (12, 34, "sys.seal")
        );
        // Whitespace or reordering is refused: the bytes are the leaf.
        let spaced = text.replacen(':', ": ", 1);
        assert!(Entry::parse(spaced.as_bytes()).is_err());
        assert!(Entry::parse(b"{}").is_err());
    }

    #[test]
    fn the_prepared_bytes_are_the_entry_s_bytes() {
        let salt = [0x5a; 16];
        let contexts = [
            Context::new(Actor::Token(KeyId::from_bytes([9; 12])))
                .with_client("203.0.113.7")
                .with_request_id("0123456789abcdef0123456789abcdef"),
            Context::new(Actor::Anonymous),
            Context::new(Actor::Operator)
                .with_request_id("r \"quoted\" \u{e9}")
                .with_via("ui"),
        ];
        let events = [
            Event::key(
                "key.verify",
                "VALID",
                KeyId::from_bytes([1; 12]),
                "cust \"7\" \u{1f600}",
            )
            .detail("scope", "photos:write")
            .detail("previous_secret", true)
            .detail("cost", 2u64),
            Event::verify(VerifyCode::NotFound).presented([3; 32]),
            Event::new("sys.seal", "ok"),
        ];
        for ctx in &contexts {
            for event in &events {
                let entry = Entry::salted(12, 34, event.clone(), ctx, salt).to_bytes();
                let mut prepared = Prepared::salted(event.clone(), ctx, salt);
                assert_eq!(
                    String::from_utf8(prepared.finish(12, 34)).unwrap(),
                    String::from_utf8(entry).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_request_through_the_console_is_marked_in_the_details_and_others_are_not() {
        let api = Context::new(Actor::Operator);
        let ui = Context::new(Actor::Operator).with_via("ui");
        let event = || Event::new("key.revoke", "ok").detail("zeta", 1u64);
        let plain = Entry::new(1, 2, event(), &api);
        assert!(!plain.details.contains_key("via"));
        let marked = Entry::new(1, 2, event(), &ui);
        assert_eq!(marked.details["via"], "ui");
        let bytes = marked.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains(r#""details":{"via":"ui","zeta":1}"#),
            "{text}"
        );
        assert_eq!(Entry::parse(&bytes).unwrap(), marked);
        // The writer's path makes the same bytes.
        let parsed = Entry::parse(&Prepared::new(event(), &ui).finish(3, 4)).unwrap();
        assert_eq!(parsed.details["via"], "ui");
    }
}
