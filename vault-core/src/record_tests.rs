//! The record envelope's bytes: version 2 with its record version, version 1 as older builds
//! wrote it, and every header byte bound by the AAD.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn keyring() -> Keyring {
    Keyring::generate(5)
}

/// A version 1 envelope laid out as older builds wrote it: a 5-byte header, no record version.
pub(crate) fn sealed_v1(keyring: &Keyring, space: Space, id: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let term = keyring.current();
    let mut header = vec![RECORD_VERSION_1];
    header.extend_from_slice(&term.number.to_be_bytes());
    let mut out = header.clone();
    out.extend_from_slice(&crypto::seal(
        &term.record,
        &aad(&header, space, id),
        plaintext,
    ));
    out
}

#[test]
fn a_version_2_envelope_carries_its_record_version() {
    let keyring = keyring();
    let sealed = seal(
        &keyring,
        Space::Keys,
        b"id-1",
        0x0102_0304_0506_0708,
        b"plain",
    );
    assert_eq!(sealed[0], 2);
    assert_eq!(&sealed[1..5], &keyring.current().number.to_be_bytes());
    assert_eq!(&sealed[5..13], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(sealed.len(), 13 + 24 + 5 + 16);
    let opened = open_versioned(&keyring, Space::Keys, b"id-1", &sealed).unwrap();
    assert_eq!(opened.plain.as_slice(), b"plain");
    assert_eq!(opened.version, 0x0102_0304_0506_0708);
    assert_eq!(term_of(&sealed).unwrap(), keyring.current().number);
}

#[test]
fn a_version_1_envelope_older_builds_wrote_reads_as_record_version_0() {
    let keyring = keyring();
    let sealed = sealed_v1(&keyring, Space::Credits, b"id-1", b"old");
    assert_eq!(sealed.len(), 5 + 24 + 3 + 16);
    assert_eq!(term_of(&sealed).unwrap(), keyring.current().number);
    let opened = open_versioned(&keyring, Space::Credits, b"id-1", &sealed).unwrap();
    assert_eq!(opened.plain.as_slice(), b"old");
    assert_eq!(opened.version, 0);
    // Moved, it is refused as before.
    assert_eq!(
        open(&keyring, Space::Keys, b"id-1", &sealed).unwrap_err(),
        RecordError::Forged
    );
}

#[test]
fn a_changed_record_version_is_refused() {
    let keyring = keyring();
    let sealed = seal(&keyring, Space::Tokens, b"t", 7, b"plain");
    for at in 5..13 {
        for bit in [0x01u8, 0x80] {
            let mut bad = sealed.clone();
            bad[at] ^= bit;
            assert_eq!(
                open_versioned(&keyring, Space::Tokens, b"t", &bad).unwrap_err(),
                RecordError::Forged,
                "flip {bit:#x} at byte {at}"
            );
        }
    }
    // A version 2 envelope relabelled version 1 (its record version read as nonce) is refused
    // too, and so is a version 1 envelope relabelled version 2.
    let mut relabelled = sealed.clone();
    relabelled[0] = RECORD_VERSION_1;
    assert!(open(&keyring, Space::Tokens, b"t", &relabelled).is_err());
    let mut v1 = sealed_v1(&keyring, Space::Tokens, b"t", b"plain");
    v1[0] = RECORD_VERSION;
    assert!(open(&keyring, Space::Tokens, b"t", &v1).is_err());
}

#[test]
fn unknown_formats_and_short_headers_are_refused() {
    let keyring = keyring();
    let sealed = seal(&keyring, Space::Keys, b"k", 1, b"plain");
    let mut v3 = sealed.clone();
    v3[0] = 3;
    assert_eq!(term_of(&v3).unwrap_err(), RecordError::Version(3));
    for len in 0..HEADER_LEN {
        assert!(term_of(&sealed[..len]).is_err(), "{len}");
        assert!(open(&keyring, Space::Keys, b"k", &sealed[..len]).is_err());
    }
    assert_eq!(term_of(&[]).unwrap_err(), RecordError::Truncated);
}

#[test]
fn an_older_version_is_refused_and_an_equal_or_newer_one_taken() {
    assert_eq!(
        check_not_older(5, 4),
        Err(RecordError::RolledBack { seen: 5, got: 4 })
    );
    assert_eq!(check_not_older(5, 5), Ok(()));
    assert_eq!(check_not_older(5, 6), Ok(()));
    assert_eq!(check_not_older(0, 0), Ok(()));
}

proptest! {
    /// Through any sequence of writes (each seals what it read plus one, a rewrap keeps it),
    /// and of stale envelopes offered back, the version a reader holds only moves forward.
    #[test]
    fn versions_only_move_forward(steps in proptest::collection::vec((0u8..3, any::<prop::sample::Index>()), 1..40)) {
        let keyring = keyring();
        let mut stored = sealed_v1(&keyring, Space::Keys, b"id", b"v0");
        let mut history = vec![stored.clone()];
        let mut seen = 0u64;
        for (kind, pick) in steps {
            let offered = match kind {
                // A write: reads the row, seals its version plus one.
                0 => {
                    let read = open_versioned(&keyring, Space::Keys, b"id", &stored).unwrap();
                    stored = seal(&keyring, Space::Keys, b"id", read.version + 1, b"next");
                    history.push(stored.clone());
                    stored.clone()
                }
                // A rewrap: the same version again.
                1 => {
                    let read = open_versioned(&keyring, Space::Keys, b"id", &stored).unwrap();
                    stored = seal(&keyring, Space::Keys, b"id", read.version, &read.plain);
                    stored.clone()
                }
                // Any envelope the row ever held, put back.
                _ => pick.get(&history).clone(),
            };
            let got = open_versioned(&keyring, Space::Keys, b"id", &offered).unwrap().version;
            match check_not_older(seen, got) {
                Ok(()) => {
                    prop_assert!(got >= seen);
                    seen = got;
                }
                Err(RecordError::RolledBack { seen: s, got: g }) => {
                    prop_assert!(g < s);
                    prop_assert_eq!(s, seen);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
        // Every write counted: the newest envelope holds the number of writes.
        let newest = open_versioned(&keyring, Space::Keys, b"id", &stored).unwrap().version;
        prop_assert_eq!(newest, history.len() as u64 - 1);
    }
}
