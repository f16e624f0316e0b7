//! The audit log: entries, export, offline verify, tamper detection, proofs, fail-closed.

use std::io::Cursor;

use secrecy::ExposeSecret;
use vault_core::apikey::{ApiKey, Prefix};
use vault_core::audit::Entry;
use vault_core::audit::export::{
    ExportFilter, ExportFormat, VerifyError, VerifyReport, verify_export,
};
use vault_core::audit::merkle;
use vault_core::audit::note::{NoteSigner, NoteVerifier};
use vault_core::keys::{NewKey, VerifyCode, VerifyRequest};
use vault_core::storage::Fault;
use vault_core::{Error, Vault};

use crate::common::*;

fn text(key: &ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

/// A vault with two owners' keys used a few times; returns its public key too.
fn busy_vault() -> (tempfile::TempDir, Vault, NoteVerifier) {
    let (tmp, path) = dir();
    let (vault, issued) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    let verifier = NoteVerifier::parse(&issued.audit_public_key).unwrap();
    for owner in ["alice", "bob", "alice"] {
        let k = vault
            .create_key(
                &ctx().with_client("198.51.100.7").with_request_id("req-1"),
                NewKey::new(owner),
            )
            .unwrap();
        for _ in 0..3 {
            vault
                .verify(&ctx(), VerifyRequest::new(&text(&k.key)))
                .unwrap();
        }
    }
    vault
        .verify(&ctx(), VerifyRequest::new("pvk_garbage"))
        .unwrap();
    (tmp, vault, verifier)
}

fn check(
    text: &str,
    verifier: &NoteVerifier,
    earlier: Option<&str>,
) -> Result<VerifyReport, VerifyError> {
    verify_export(Cursor::new(text.as_bytes()), verifier, earlier, |_| {})
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn every_operation_leaves_an_entry_without_secrets() {
    let (_tmp, vault, verifier) = busy_vault();
    let text = export_with(&vault, &ExportFilter::default());
    let report = check(&text, &verifier, None).unwrap();
    let entries: Vec<Entry> = text
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| Entry::parse(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(report.entries as usize, entries.len());
    let events: Vec<&str> = entries.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(&events[..2], &["sys.init", "token.create"]);
    assert_eq!(events.iter().filter(|e| **e == "key.create").count(), 3);
    assert_eq!(events.iter().filter(|e| **e == "key.verify").count(), 10);
    assert_eq!(*events.last().unwrap(), "audit.export");
    let create = entries.iter().find(|e| e.event == "key.create").unwrap();
    assert_eq!(create.client.as_deref(), Some("198.51.100.7"));
    assert_eq!(create.request_id.as_deref(), Some("req-1"));
    assert_eq!(create.actor, "embedded");
    assert_eq!(create.owner.as_deref(), Some("alice"));
    let malformed = entries.iter().find(|e| e.outcome == "MALFORMED").unwrap();
    assert!(
        malformed.details["presented_digest"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    // The auditor can ask whether that string was tried.
    let digest = vault.audit_digest(&ctx(), "pvk_garbage").unwrap();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(malformed.details["presented_digest"], hex);
    assert!(!text.contains("pvk_garbage"));
    assert!(
        report
            .to_string()
            .starts_with(&format!("verified: {} entries, tree size", entries.len()))
    );
}

#[test]
fn tampering_with_an_export_is_detected_and_named() {
    let (_tmp, vault, verifier) = busy_vault();
    let good = export_with(&vault, &ExportFilter::default());
    check(&good, &verifier, None).unwrap();
    let l = lines(&good);
    // Entry lines are at 2, 4, 6, ... (after the header and the checkpoint), each followed by
    // its leaf_hash line.
    let entry_line = |i: usize| 2 + 2 * i;

    // Change one field of one entry.
    let mut changed = l.clone();
    changed[entry_line(5)] = changed[entry_line(5)]
        .replace("\"outcome\":\"VALID\"", "\"outcome\":\"NOT_FOUND\"")
        .replace("\"outcome\":\"ok\"", "\"outcome\":\"no\"");
    assert_ne!(changed, l);
    let e = check(&join(&changed), &verifier, None).unwrap_err();
    assert!(
        e.why.contains("entry 5") && e.line == entry_line(5) as u64 + 1,
        "{e}"
    );

    // Delete an entry (and its hash line).
    let mut deleted = l.clone();
    deleted.drain(entry_line(4)..entry_line(4) + 2);
    let e = check(&join(&deleted), &verifier, None).unwrap_err();
    assert!(e.why.contains("entries 4..5 are missing"), "{e}");

    // Insert one (a copy of another).
    let mut inserted = l.clone();
    let copy = inserted[entry_line(2)..entry_line(2) + 2].to_vec();
    inserted.splice(entry_line(6)..entry_line(6), copy);
    let e = check(&join(&inserted), &verifier, None).unwrap_err();
    assert!(e.why.contains("entry 2 is out of order or repeated"), "{e}");

    // Swap two.
    let mut swapped = l.clone();
    let a = swapped[entry_line(3)..entry_line(3) + 2].to_vec();
    let b = swapped[entry_line(4)..entry_line(4) + 2].to_vec();
    swapped.splice(entry_line(3)..entry_line(3) + 2, b);
    swapped.splice(entry_line(4)..entry_line(4) + 2, a);
    let e = check(&join(&swapped), &verifier, None).unwrap_err();
    assert!(
        e.why.contains("entry 4") || e.why.contains("entries 3..4"),
        "{e}"
    );

    // Truncate the tail.
    let e = check(&join(&l[..entry_line(6)]), &verifier, None).unwrap_err();
    assert!(
        e.why.contains("truncated") && e.why.contains("entries 6.."),
        "{e}"
    );
    // Truncate the tail but keep the end line.
    let mut cut = l[..entry_line(6)].to_vec();
    cut.push(l.last().unwrap().clone());
    let e = check(&join(&cut), &verifier, None).unwrap_err();
    assert!(e.why.contains("end line counts"), "{e}");
    // Cut the tail at an entry, leaving it without its hash line.
    let e = check(&join(&l[..entry_line(6) + 1]), &verifier, None).unwrap_err();
    assert!(e.why.contains("entry 6 has no leaf_hash line"), "{e}");
    // Drop the checkpoint.
    let mut no_checkpoint = l.clone();
    no_checkpoint.remove(1);
    let e = check(&join(&no_checkpoint), &verifier, None).unwrap_err();
    assert!(e.why.contains("expected the checkpoint line"), "{e}");

    // A checkpoint signed by another key (with the same name).
    let origin = NoteVerifier::parse(&vault.audit_public_key().unwrap())
        .unwrap()
        .name()
        .to_owned();
    let forger = NoteSigner::from_seed(&origin, &[7; 32]).unwrap();
    let cp_json: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    let note = cp_json["checkpoint"].as_str().unwrap();
    let body = note.split("\n\n").next().unwrap().to_owned() + "\n";
    let forged = forger.sign(&body).unwrap();
    let mut reforged = l.clone();
    reforged[1] = serde_json::json!({ "checkpoint": forged }).to_string();
    let e = check(&join(&reforged), &verifier, None).unwrap_err();
    assert!(e.why.contains("does not verify"), "{e}");
    // And a consistent forgery of the whole export by another key fails against the pinned key.
    let other = NoteVerifier::parse(&forger.verifier().to_string()).unwrap();
    assert!(check(&good, &other, None).is_err());
}

#[test]
fn filtered_exports_carry_inclusion_proofs() {
    let (_tmp, vault, verifier) = busy_vault();
    let text = export_with(
        &vault,
        &ExportFilter {
            owner: Some("bob".into()),
            ..ExportFilter::default()
        },
    );
    let report = check(&text, &verifier, None).unwrap();
    assert!(report.filtered);
    let entries: Vec<Entry> = text
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| Entry::parse(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(entries.len(), 4, "bob's create and three verifies");
    assert!(entries.iter().all(|e| e.owner.as_deref() == Some("bob")));
    // Another owner's filter shows none of bob's entries.
    let alice = export_with(
        &vault,
        &ExportFilter {
            owner: Some("alice".into()),
            ..ExportFilter::default()
        },
    );
    assert!(!alice.contains("\"owner\":\"bob\""));
    // A changed entry fails its proof, named.
    let mut l = lines(&text);
    l[4] = l[4].replace("\"owner\":\"bob\"", "\"owner\":\"bob2\"");
    let e = check(&join(&l), &verifier, None).unwrap_err();
    assert!(
        e.why.contains("not in the signed tree") && e.line == 5,
        "{e}"
    );
    // By event and by time.
    let verifies = export_with(
        &vault,
        &ExportFilter {
            event: Some("key.verify".into()),
            ..ExportFilter::default()
        },
    );
    assert_eq!(check(&verifies, &verifier, None).unwrap().entries, 10);
    // By outcome: the one malformed verify among the nine valid ones.
    let malformed = export_with(
        &vault,
        &ExportFilter {
            event: Some("key.verify".into()),
            outcome: Some("MALFORMED".into()),
            ..ExportFilter::default()
        },
    );
    let report = check(&malformed, &verifier, None).unwrap();
    assert!(report.filtered);
    assert_eq!(report.entries, 1);
    assert!(malformed.contains("\"outcome\":\"MALFORMED\""));
    assert!(!malformed.contains("\"outcome\":\"VALID\""));
    let none = export_with(
        &vault,
        &ExportFilter {
            until_ms: Some(1),
            ..ExportFilter::default()
        },
    );
    assert_eq!(check(&none, &verifier, None).unwrap().entries, 0);
}

/// Issue 18, item 9: `audit verify` accepted a filtered export, or one whose front was cut off
/// (with its header restated), as if it were the whole log. `require_complete` (what
/// `--complete` runs) accepts only an unfiltered export that the signed root proves runs
/// without a gap from the stated start to the checkpoint.
#[test]
fn complete_means_unfiltered_and_every_entry_from_the_start_to_the_checkpoint() {
    let (_tmp, vault, verifier) = busy_vault();
    let whole = export_with(&vault, &ExportFilter::default());
    let report = check(&whole, &verifier, None).unwrap();
    report.require_complete(0).unwrap();
    assert_eq!(report.entries, report.checkpoint.size);

    // Filtered: genuine entries, not complete.
    let filtered = export_with(
        &vault,
        &ExportFilter {
            owner: Some("bob".into()),
            ..ExportFilter::default()
        },
    );
    let e = check(&filtered, &verifier, None)
        .unwrap()
        .require_complete(0)
        .unwrap_err();
    assert!(e.why.contains("filtered"), "{e}");
    // Its `filtered` mark edited out: the entries carry inclusion proofs, not leaf hashes,
    // and the root cannot be recomputed from them.
    let unmarked = filtered.replacen("\"filtered\":true", "\"filtered\":false", 1);
    assert_ne!(unmarked, filtered);
    assert!(check(&unmarked, &verifier, None).is_err());

    // The front cut off and the header restated to start after it, with the subtree hashes of
    // the entries removed as its prefix: every hash checks out, so only the stated start can
    // tell.
    let cut = 5u64;
    let l = lines(&whole);
    let mut front = merkle::Frontier::new();
    for entry in l[2..2 + 2 * cut as usize].iter().step_by(2) {
        front.push(merkle::leaf_hash(entry.as_bytes()));
    }
    let mut header: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    header["first_seq"] = cut.into();
    header["prefix"] = front.hashes().iter().map(base64).collect();
    let mut forged = vec![header.to_string(), l[1].clone()];
    forged.extend(l[2 + 2 * cut as usize..l.len() - 1].iter().cloned());
    forged.push(format!(
        "{{\"end\":{{\"entries\":{}}}}}",
        report.entries - cut
    ));
    let forged_report = check(&join(&forged), &verifier, None).unwrap();
    assert_eq!(forged_report.first_seq, cut);
    assert!(!forged_report.filtered);
    let e = forged_report.require_complete(0).unwrap_err();
    assert!(
        e.why.contains(&format!("starts at entry {cut}")) && e.why.contains("--from"),
        "{e}"
    );
    // An auditor who states that start (holding the archive up to it) gets the range proven.
    forged_report.require_complete(cut).unwrap();

    // The end cut off, the end line counting what is left: refused by the root already.
    let mut short = l[..l.len() - 3].to_vec();
    short.push(format!(
        "{{\"end\":{{\"entries\":{}}}}}",
        report.entries - 1
    ));
    let e = check(&join(&short), &verifier, None).unwrap_err();
    assert!(e.why.contains("missing"), "{e}");
}

fn base64(hash: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hash)
}

#[test]
fn consistency_between_checkpoints() {
    let (_tmp, vault, verifier) = busy_vault();
    let yesterday = vault.audit_checkpoint().unwrap();
    let k = vault.create_key(&ctx(), NewKey::new("carol")).unwrap();
    vault
        .verify(&ctx(), VerifyRequest::new(&text(&k.key)))
        .unwrap();
    let today = vault.audit_checkpoint().unwrap();
    let (m, n) = (yesterday.checkpoint.size, today.checkpoint.size);
    assert!(n > m);
    let proof = vault.audit_consistency_proof(m, n).unwrap();
    merkle::verify_consistency(
        m,
        n,
        &yesterday.checkpoint.root,
        &today.checkpoint.root,
        &proof,
    )
    .unwrap();
    let mut forged = proof.clone();
    forged[0][0] ^= 1;
    assert!(
        merkle::verify_consistency(
            m,
            n,
            &yesterday.checkpoint.root,
            &today.checkpoint.root,
            &forged
        )
        .is_err()
    );
    // The offline verifier checks that an export extends an earlier checkpoint it is given.
    let text = export_with(&vault, &ExportFilter::default());
    let report = check(&text, &verifier, Some(&yesterday.note)).unwrap();
    assert_eq!(report.extends, Some(m));
    // Inclusion proofs from the API verify too.
    let p = vault.audit_inclusion_proof(3, n).unwrap();
    let leaf = merkle::leaf_hash(&vault.audit_entry(3).unwrap().unwrap());
    merkle::verify_inclusion(&leaf, 3, n, &p, &today.checkpoint.root).unwrap();
    assert!(vault.audit_inclusion_proof(n, n).is_err());
    assert!(vault.audit_consistency_proof(n, n + 100).is_err());
}

#[test]
fn verify_fails_closed_when_the_log_cannot_be_written() {
    let (_tmp, vault, verifier) = busy_vault();
    let k = vault
        .create_key(
            &ctx(),
            NewKey {
                credits: Some(5),
                ..NewKey::new("o")
            },
        )
        .unwrap();
    let key = text(&k.key);
    let before = vault.audit_size();
    for fault in [Fault::Write, Fault::Sync] {
        vault.danger().inject_storage_fault(Some(fault));
        let e = vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap_err();
        assert!(matches!(e, Error::AuditUnavailable(_)), "{e}");
        assert!(matches!(
            vault.create_key(&ctx(), NewKey::new("o")),
            Err(Error::AuditUnavailable(_))
        ));
        vault.danger().inject_storage_fault(None);
    }
    assert_eq!(vault.audit_size(), before, "no entry was acknowledged");
    assert_eq!(
        vault.show_key(&k.key.id()).unwrap().credits,
        Some(5),
        "no credit spent"
    );
    assert_eq!(
        vault.verify(&ctx(), VerifyRequest::new(&key)).unwrap().code,
        VerifyCode::Valid
    );
    assert_eq!(vault.show_key(&k.key.id()).unwrap().credits, Some(4));
    // The log verifies with no gap and no duplicate after recovery.
    let text = export_with(&vault, &ExportFilter::default());
    let report = check(&text, &verifier, None).unwrap();
    assert_eq!(report.entries, before + 2);
}

#[test]
fn csv_export_escapes_formulas() {
    let (_tmp, vault, _) = busy_vault();
    vault
        .create_key(
            &ctx().with_client("=HYPERLINK(\"x\")"),
            NewKey::new("+danger,owner"),
        )
        .unwrap();
    let mut out = Vec::new();
    vault
        .export_audit(
            &ctx(),
            &ExportFilter::default(),
            ExportFormat::Csv,
            &mut out,
        )
        .unwrap();
    let csv = String::from_utf8(out).unwrap();
    assert!(csv.starts_with(
        "seq,time_ms,time,event,outcome,key_id,owner,actor,client,request_id,details,salt\n"
    ));
    // `time` is `time_ms` as RFC 3339 UTC, for people reading the sheet.
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let ms: u64 = row[1].parse().unwrap();
    assert!(row[2].ends_with('Z') && row[2].len() == "2026-12-06T15:51:27.123Z".len());
    assert_eq!(&row[2][20..23], format!("{:03}", ms % 1000));
    assert!(csv.contains("\"'+danger,owner\""), "{csv}");
    assert!(csv.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{csv}");
}

#[test]
fn the_log_survives_reopen_and_keeps_extending() {
    let (_tmp, vault, verifier) = busy_vault();
    let first = vault.audit_checkpoint().unwrap();
    let vault = reopen(vault);
    // Unseal attempts are logged while sealed.
    assert!(
        vault
            .unseal_passphrase(
                &ctx(),
                &vault_core::kdf::Passphrase::new("wrong passphrase!")
            )
            .is_err()
    );
    vault
        .unseal_passphrase(&ctx(), &vault_core::kdf::Passphrase::new(PASSPHRASE))
        .unwrap();
    let text = export_with(&vault, &ExportFilter::default());
    let report = check(&text, &verifier, Some(&first.note)).unwrap();
    assert_eq!(report.extends, Some(first.checkpoint.size));
    assert!(text.contains("\"event\":\"sys.unseal\",\"outcome\":\"wrong_credential\""));
    vault.seal(&ctx()).unwrap();
    assert!(matches!(
        vault.export_audit(
            &ctx(),
            &ExportFilter::default(),
            ExportFormat::Jsonl,
            &mut Vec::new()
        ),
        Err(Error::Sealed)
    ));
}

/// `last: Some(N)` exports the last N entries of the log, verifiable as a whole range from
/// there (the header's prefix vouches for what is before); with another filter, the entries
/// of those N that it selects.
#[test]
fn an_export_of_the_last_entries_starts_there_and_verifies() {
    let (_tmp, vault, verifier) = busy_vault();
    let text = export_with(
        &vault,
        &ExportFilter {
            last: Some(5),
            ..ExportFilter::default()
        },
    );
    let report = check(&text, &verifier, None).unwrap();
    assert!(!report.filtered);
    assert_eq!(report.entries, 5);
    let size = report.checkpoint.size;
    assert_eq!(report.first_seq, size - 5);
    report.require_complete(size - 5).unwrap();
    assert!(report.require_complete(0).is_err());
    // More than the log holds: the whole log.
    let all = check(
        &export_with(
            &vault,
            &ExportFilter {
                last: Some(1_000_000),
                ..ExportFilter::default()
            },
        ),
        &verifier,
        None,
    )
    .unwrap();
    assert_eq!(all.first_seq, 0);
    // With an owner filter: only that owner's entries among the last ones.
    let text = export_with(
        &vault,
        &ExportFilter {
            last: Some(8),
            owner: Some("bob".into()),
            ..ExportFilter::default()
        },
    );
    let report = check(&text, &verifier, None).unwrap();
    assert!(report.filtered);
    assert!(report.entries <= 8);
    assert!(text.lines().all(|l| !l.contains("\"owner\":\"alice\"")));
}

#[test]
fn entries_are_stamped_with_the_vaults_clock() {
    // 2030-01-01T00:00:00Z, far from the machine's own time.
    let clock = vault_core::clock::Clock::manual(1_893_456_000_000);
    let (_tmp, vault) = passphrase_vault_on(clock.clone());
    vault.create_key(&ctx(), NewKey::new("owner")).unwrap();
    clock.advance(std::time::Duration::from_millis(1_500));
    vault.create_key(&ctx(), NewKey::new("owner")).unwrap();
    let times: Vec<u64> = export(&vault)
        .lines()
        .filter(|l| l.contains("\"key.create\""))
        .map(|l| Entry::parse(l.as_bytes()).unwrap().time_ms)
        .collect();
    assert_eq!(times, [1_893_456_000_000, 1_893_456_001_500]);
}
