//! The address sets of the usage figures, laid out for the common case of one address: a
//! bucket's client addresses ([`ClientSet`]) and what a key remembers of its addresses
//! ([`Seen`]). A million keys each used from an address or two hold a million of each, so a
//! hash table per set (64 bytes and a heap table of at least four slots) was most of the
//! figures' memory; one address is held in place, a few in one small array, and only many
//! (an owner's bucket, a widely used key) in a hash table, where a lookup stays one probe.

use std::collections::{HashMap, HashSet};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};

/// The fold's hash maps, by key id and owner (and client address hash). Foldhash (randomly
/// seeded per process; the hasher hashbrown itself defaults to) hashes such a string several
/// times faster than the standard SipHash. Their keys are ids the vault made and owners
/// operators set, and client addresses enter only as SHA-256 prefixes.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// Addresses held in a small array before the set turns into a hash set.
const FEW: usize = 4;
/// Addresses remembered in a small array before the map turns into a hash map: a lookup scans
/// them, which costs less than hashing for this many.
const SEEN_FEW: usize = 4;

/// A set of client addresses (as [`client_hash`](super::client_hash)es).
#[derive(Debug, Clone, Default)]
pub struct ClientSet(Clients);

#[derive(Debug, Clone, Default)]
enum Clients {
    #[default]
    None,
    One(u64),
    Few(u8, Box<[u64; FEW]>),
    #[expect(
        clippy::box_collection,
        reason = "a pointer keeps the set as small as one address in place"
    )]
    Many(Box<HashSet<u64, foldhash::quality::RandomState>>),
}

impl ClientSet {
    /// Addresses in the set.
    pub fn len(&self) -> usize {
        match &self.0 {
            Clients::None => 0,
            Clients::One(_) => 1,
            Clients::Few(n, _) => usize::from(*n),
            Clients::Many(set) => set.len(),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `client` is in the set.
    pub fn contains(&self, client: &u64) -> bool {
        match &self.0 {
            Clients::None => false,
            Clients::One(c) => c == client,
            Clients::Few(n, few) => few[..usize::from(*n)].contains(client),
            Clients::Many(set) => set.contains(client),
        }
    }

    /// Adds `client`; answers whether it was new.
    pub fn insert(&mut self, client: u64) -> bool {
        match &mut self.0 {
            Clients::None => self.0 = Clients::One(client),
            Clients::One(c) if *c == client => return false,
            Clients::One(c) => {
                let few = Box::new([*c, client, 0, 0]);
                self.0 = Clients::Few(2, few);
            }
            Clients::Few(n, few) => {
                let len = usize::from(*n);
                if few[..len].contains(&client) {
                    return false;
                }
                if len < FEW {
                    few[len] = client;
                    *n += 1;
                } else {
                    let mut set = HashSet::with_capacity_and_hasher(2 * FEW, Default::default());
                    set.extend(few.iter().copied());
                    set.insert(client);
                    self.0 = Clients::Many(Box::new(set));
                }
            }
            Clients::Many(set) => return set.insert(client),
        }
        true
    }

    /// The addresses, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &u64> {
        let (few, many): (&[u64], _) = match &self.0 {
            Clients::None => (&[], None),
            Clients::One(c) => (std::slice::from_ref(c), None),
            Clients::Few(n, few) => (&few[..usize::from(*n)], None),
            Clients::Many(set) => (&[], Some(set.iter())),
        };
        few.iter().chain(many.into_iter().flatten())
    }
}

impl PartialEq for ClientSet {
    fn eq(&self, other: &ClientSet) -> bool {
        self.len() == other.len() && self.iter().all(|c| other.contains(c))
    }
}

impl Eq for ClientSet {}

impl FromIterator<u64> for ClientSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> ClientSet {
        let mut set = ClientSet::default();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

/// Stored as the sequence of the addresses, as the hash set it replaced was.
impl Serialize for ClientSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // With its length first: the figures file's encoding needs it.
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for c in self.iter() {
            seq.serialize_element(c)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ClientSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<u64>::deserialize(deserializer)?.into_iter().collect())
    }
}

/// The addresses a key remembers (as address hashes), each with when it was last seen (ms).
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen(Remembered);

#[derive(Debug, Clone, Default)]
enum Remembered {
    #[default]
    None,
    One(u64, u64),
    Few(u8, Box<[(u64, u64); SEEN_FEW]>),
    Many(Box<FastMap<u64, u64>>),
}

impl Seen {
    pub(crate) fn len(&self) -> usize {
        match &self.0 {
            Remembered::None => 0,
            Remembered::One(..) => 1,
            Remembered::Few(n, _) => usize::from(*n),
            Remembered::Many(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `client` was last seen, to read or move on.
    pub(crate) fn get_mut(&mut self, client: u64) -> Option<&mut u64> {
        match &mut self.0 {
            Remembered::None => None,
            Remembered::One(c, last) => (*c == client).then_some(last),
            Remembered::Few(n, few) => few[..usize::from(*n)]
                .iter_mut()
                .find(|(c, _)| *c == client)
                .map(|(_, last)| last),
            Remembered::Many(map) => map.get_mut(&client),
        }
    }

    pub(crate) fn get(&self, client: u64) -> Option<u64> {
        self.iter()
            .find(|(c, _)| *c == client)
            .map(|(_, last)| last)
    }

    /// Sets when `client` was last seen.
    pub(crate) fn insert(&mut self, client: u64, last: u64) {
        if let Some(have) = self.get_mut(client) {
            *have = last;
            return;
        }
        match &mut self.0 {
            Remembered::None => self.0 = Remembered::One(client, last),
            Remembered::One(c, l) => {
                let mut few = Box::new([(0, 0); SEEN_FEW]);
                few[0] = (*c, *l);
                few[1] = (client, last);
                self.0 = Remembered::Few(2, few);
            }
            Remembered::Few(n, few) if usize::from(*n) < SEEN_FEW => {
                few[usize::from(*n)] = (client, last);
                *n += 1;
            }
            Remembered::Few(_, few) => {
                let mut map = FastMap::with_capacity_and_hasher(2 * SEEN_FEW, Default::default());
                map.extend(few.iter().copied());
                map.insert(client, last);
                self.0 = Remembered::Many(Box::new(map));
            }
            Remembered::Many(map) => {
                map.insert(client, last);
            }
        }
    }

    /// Keeps the addresses for which `keep(last seen)` holds (and gives back the room of those
    /// it forgets, down to none).
    pub(crate) fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        match &mut self.0 {
            Remembered::None => return,
            Remembered::One(_, last) => {
                if !keep(*last) {
                    self.0 = Remembered::None;
                }
                return;
            }
            Remembered::Few(n, few) => {
                let mut kept = 0;
                for i in 0..usize::from(*n) {
                    if keep(few[i].1) {
                        few[kept] = few[i];
                        kept += 1;
                    }
                }
                // Invariant: at most SEEN_FEW, which fits a u8.
                *n = u8::try_from(kept).expect("a few addresses");
            }
            Remembered::Many(map) => map.retain(|_, last| keep(*last)),
        }
        if self.len() <= 1 {
            let one = self.iter().next();
            self.0 = match one {
                Some((c, last)) => Remembered::One(c, last),
                None => Remembered::None,
            };
        }
    }

    /// The addresses with when each was last seen, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> {
        let (few, many): (&[(u64, u64)], _) = match &self.0 {
            Remembered::None => (&[], None),
            Remembered::One(..) => (&[], None),
            Remembered::Few(n, few) => (&few[..usize::from(*n)], None),
            Remembered::Many(map) => (&[], Some(map.iter())),
        };
        let one = match self.0 {
            Remembered::One(c, last) => Some((c, last)),
            _ => None,
        };
        one.into_iter()
            .chain(few.iter().copied())
            .chain(many.into_iter().flatten().map(|(c, last)| (*c, *last)))
    }
}

impl PartialEq for Seen {
    fn eq(&self, other: &Seen) -> bool {
        self.len() == other.len() && self.iter().all(|(c, last)| other.get(c) == Some(last))
    }
}

impl Eq for Seen {}

/// Stored as the map from address to when it was last seen, as the hash map it replaced was.
impl Serialize for Seen {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (c, last) in self.iter() {
            map.serialize_entry(&c, &last)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = FastMap::<u64, u64>::deserialize(deserializer)?;
        let mut seen = Seen::default();
        for (c, last) in map {
            seen.insert(c, last);
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    /// The figures file holds these as the hash set and hash map they replaced: bytes written
    /// either way read back either way.
    #[test]
    fn stored_as_the_hash_set_and_map_they_replaced() {
        use crate::codec::{decode_compact_prefix, encode_compact_into};

        for n in [0u64, 1, 3, 6, 40] {
            let old: HashSet<u64> = (0..n).map(|i| i * 0x0123_4567_89ab).collect();
            let mut bytes = Vec::new();
            encode_compact_into(&old, &mut bytes);
            let (set, used): (ClientSet, _) = decode_compact_prefix(&bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(set, old.iter().copied().collect::<ClientSet>());
            let mut again = Vec::new();
            encode_compact_into(&set, &mut again);
            let (back, _): (HashSet<u64>, _) = decode_compact_prefix(&again).unwrap();
            assert_eq!(back, old);

            let old: HashMap<u64, u64> =
                (0..n).map(|i| (i * 0x0123_4567_89ab, 1_000 + i)).collect();
            let mut bytes = Vec::new();
            encode_compact_into(&old, &mut bytes);
            let (seen, used): (Seen, _) = decode_compact_prefix(&bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(seen.iter().collect::<HashMap<_, _>>(), old);
            let mut again = Vec::new();
            encode_compact_into(&seen, &mut again);
            let (back, _): (HashMap<u64, u64>, _) = decode_compact_prefix(&again).unwrap();
            assert_eq!(back, old);
        }
        // One address, as a file holds it: one entry, then the hash as a varint.
        let mut bytes = Vec::new();
        encode_compact_into(&ClientSet::from_iter([7]), &mut bytes);
        assert_eq!(bytes, [1, 7]);
    }

    proptest! {
        /// The sets answer as a plain set of the same insertions does, and store as it does.
        #[test]
        fn client_sets_behave_as_a_set(adds in proptest::collection::vec(0..12u64, 0..40)) {
            let (mut set, mut model) = (ClientSet::default(), BTreeSet::new());
            for c in adds {
                prop_assert_eq!(set.insert(c), model.insert(c));
                prop_assert_eq!(set.len(), model.len());
                prop_assert!(set.contains(&c));
                let all: BTreeSet<u64> = set.iter().copied().collect();
                prop_assert_eq!(&all, &model);
            }
            let back: ClientSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
            prop_assert_eq!(&back, &set);
            prop_assert_eq!(back, model.into_iter().collect::<ClientSet>());
        }

        /// The remembered addresses answer as a plain map of the same operations does.
        #[test]
        fn seen_behaves_as_a_map(ops in proptest::collection::vec((0..14u64, 0..100u64, proptest::bool::weighted(0.1)), 0..60)) {
            let (mut seen, mut model) = (Seen::default(), BTreeMap::new());
            for (c, t, forget) in ops {
                if forget {
                    seen.retain(|last| last >= t);
                    model.retain(|_, last| *last >= t);
                } else {
                    seen.insert(c, t);
                    model.insert(c, t);
                }
                prop_assert_eq!(seen.len(), model.len());
                let all: BTreeMap<u64, u64> = seen.iter().collect();
                prop_assert_eq!(&all, &model);
                prop_assert_eq!(seen.get_mut(c).copied(), model.get(&c).copied());
            }
            let back: Seen = serde_json::from_str(&serde_json::to_string(&seen).unwrap()).unwrap();
            prop_assert_eq!(back, seen);
        }
    }
}
