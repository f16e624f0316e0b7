//! What the audit log hands to its observer (the usage figures) for each durable entry.
//!
//! The observer needs a handful of an entry's fields, not its JSON: the writer builds them from
//! the typed event and the caller's context before the entry is serialised, so the usage thread
//! never parses what the writer has just encoded. A reader of stored entries (a rebuild from the
//! log) makes the same from the parsed entry; the two agree field for field.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde_json::Value;

/// The event name of a verify, the only entries the figures count.
pub(crate) const VERIFY_EVENT: &str = "key.verify";

/// What the usage figures read of one committed entry (and nothing else). Its strings
/// are inline up to 24 bytes (an outcome, a key id, a short owner, an IPv4 address), so the
/// usage thread reads them without chasing, or freeing, another thread's heap strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The entry's sequence number.
    pub seq: u64,
    /// Its time (Unix ms).
    pub time_ms: u64,
    /// Whether it is a `key.verify`.
    pub verify: bool,
    /// Its outcome (a verify code).
    pub outcome: CompactString,
    /// The key id (hex), when the entry names one.
    pub key_id: Option<CompactString>,
    /// The owner.
    pub owner: Option<CompactString>,
    /// The client address.
    pub client: Option<CompactString>,
    /// Credits spent (`details.cost`; 0 if none).
    pub credits: u64,
    /// When the previous secret used ends (`details.previous_secret_expires_at`), if it was used.
    pub previous_until: Option<u64>,
    /// When the key last changed before that verify (`details.previous_secret_since`: its
    /// rotation, or a later update), if the entry says (entries before it was logged do not).
    pub previous_since: Option<u64>,
}

impl Observation {
    /// The observation of an entry from its fields, its sequence number and time 0: the one
    /// rule for both the writer's typed events (`Event::observation`) and stored entries read
    /// back (the usage fold's).
    pub(crate) fn from_parts(
        event: &str,
        outcome: &str,
        key_id: Option<CompactString>,
        owner: Option<CompactString>,
        client: Option<CompactString>,
        details: &BTreeMap<String, Value>,
    ) -> Observation {
        let number = |name: &str| details.get(name).and_then(Value::as_u64);
        let previous = details.get("previous_secret") == Some(&Value::Bool(true));
        let previous_until = previous
            .then(|| number("previous_secret_expires_at"))
            .flatten();
        let previous_since = previous.then(|| number("previous_secret_since")).flatten();
        Observation {
            seq: 0,
            time_ms: 0,
            verify: event == VERIFY_EVENT,
            credits: number("cost").unwrap_or(0),
            previous_until,
            previous_since,
            outcome: outcome.into(),
            key_id,
            owner,
            client,
        }
    }

    /// The same at `seq` and `time_ms`.
    pub(crate) fn at(mut self, seq: u64, time_ms: u64) -> Observation {
        self.seq = seq;
        self.time_ms = time_ms;
        self
    }
}
