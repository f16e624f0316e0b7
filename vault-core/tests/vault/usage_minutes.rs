//! The vault's verifies per minute (`Vault::verifies_per_minute`): every verify counted by
//! minute and code, against a plain count over the audit log; the window moves with the clock;
//! after a restart the minutes before the stored figures are marked unknown, not shown empty.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use vault_core::audit::Entry;
use vault_core::clock::Clock;
use vault_core::keys::{NewKey, VerifyRequest};
use vault_core::usage::{MINUTES, MinuteReport};
use vault_core::{Error, Vault, VaultOptions};

use crate::common::*;

/// 2030-01-01T00:00:30Z: half a minute in, far from the machine's own time.
const START_MS: u64 = 1_893_456_030_000;

fn verify(vault: &Vault, text: &str) {
    vault.verify(&ctx(), VerifyRequest::new(text)).unwrap();
}

/// The key.verify entries of the live log, by minute start and code.
fn counted_from_log(vault: &Vault) -> BTreeMap<(u64, String), u64> {
    let mut out = BTreeMap::new();
    for line in export(vault).lines().filter(|l| l.starts_with("{\"seq\":")) {
        let e = Entry::parse(line.as_bytes()).unwrap();
        if e.event == "key.verify" {
            *out.entry((e.time_ms / 60_000 * 60, e.outcome)).or_insert(0) += 1;
        }
    }
    out
}

fn counted_in(report: &MinuteReport) -> BTreeMap<(u64, String), u64> {
    let mut out = BTreeMap::new();
    for m in &report.minutes {
        for (code, n) in &m.counts {
            out.insert((m.start, code.clone()), *n);
        }
    }
    out
}

#[test]
fn every_verify_counts_by_minute_and_code_as_the_log_says() {
    let clock = Clock::manual(START_MS);
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    let issued = vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    let good = issued.key.expose_secret_text().expose_secret().to_owned();
    for _ in 0..3 {
        verify(&vault, &good);
    }
    clock.advance(Duration::from_secs(60));
    verify(&vault, "pvk_not_a_key");
    vault.revoke_key(&ctx(), &issued.info.key_id).unwrap();
    verify(&vault, &good);
    verify(&vault, &good);

    let report = vault.verifies_per_minute().unwrap();
    assert_eq!(report.minutes.len() as u64, MINUTES);
    assert_eq!(
        report.to,
        (START_MS / 60_000 + 2) * 60,
        "ends with the current minute"
    );
    assert_eq!(report.from, report.to - MINUTES * 60);
    assert_eq!(
        report.known_from, report.from,
        "a new vault's ring saw every entry"
    );
    assert_eq!(report.covers_seq, vault.audit_size());
    assert_eq!(counted_in(&report), counted_from_log(&vault));
    assert_eq!(report.total, 6);
    assert_eq!(report.totals.get("VALID"), Some(&3));
    assert_eq!(report.totals.get("REVOKED"), Some(&2));
    assert_eq!(report.totals.get("MALFORMED"), Some(&1));
    let last = report.minutes.last().unwrap();
    assert_eq!(last.total, 3);

    // Six hours on, the window holds none of them.
    clock.advance(Duration::from_secs(MINUTES * 60));
    let report = vault.verifies_per_minute().unwrap();
    assert_eq!(report.total, 0);
    assert!(report.minutes.iter().all(|m| m.counts.is_empty()));
}

#[test]
fn after_a_restart_the_minutes_before_it_are_unknown_and_the_new_ones_count() {
    let clock = Clock::manual(START_MS);
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    let issued = vault.create_key(&ctx(), NewKey::new("alice")).unwrap();
    let good = issued.key.expose_secret_text().expose_secret().to_owned();
    verify(&vault, &good);
    let path = vault.dir().to_path_buf();
    // Closing stores the figures; the ring is not stored with them.
    drop(vault);
    clock.advance(Duration::from_secs(120));
    let options = VaultOptions {
        clock: clock.clone(),
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(&path, &options).unwrap();
    assert!(matches!(vault.verifies_per_minute(), Err(Error::Sealed)));
    unseal_with_passphrase(&vault);
    verify(&vault, &good);
    let report = vault.verifies_per_minute().unwrap();
    assert!(report.known_from > report.from);
    assert!(report.known_from <= START_MS / 1000 + 120);
    assert_eq!(report.total, 1, "only the verify after the restart");
    let unknown = report
        .minutes
        .iter()
        .filter(|m| m.start < report.known_from);
    assert!(unknown.clone().all(|m| m.total == 0));
    assert!(unknown.count() as u64 >= MINUTES - 3);
}
