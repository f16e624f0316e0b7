//! Tests of the cluster export's verifier, on files made of node exports written with the
//! export's own line writers and signed as a node signs its log (the vault's audit key under
//! the node's origin), so that each part is what a node serves.

use super::*;
use crate::audit::export::{checkpoint_line, end_line, header_line, leaf_hash_line};
use crate::audit::merkle::{Frontier, leaf_hash};
use crate::audit::note::NoteSigner;

const VAULT: &str = "00112233445566778899aabbccddeeff";
const SEED: [u8; 32] = [7; 32];

fn vault_key() -> NoteVerifier {
    NoteSigner::from_seed(&format!("keyvault/{VAULT}"), &SEED)
        .unwrap()
        .verifier()
}

fn entry(node: &str, seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"time_ms":{},"event":"key.verify","node":"{node}"}}"#,
        1_000 + seq
    )
}

/// Node `node`'s signed checkpoint of its first `size` entries.
fn checkpoint(node: &str, size: u64) -> String {
    let origin = format!("keyvault/{VAULT}/{node}");
    let mut frontier = Frontier::new();
    for seq in 0..size {
        frontier.push(leaf_hash(entry(node, seq).as_bytes()));
    }
    let cp = Checkpoint {
        origin: origin.clone(),
        size,
        root: frontier.root(),
    };
    NoteSigner::from_seed(&origin, &SEED)
        .unwrap()
        .sign(&cp.to_note_text())
        .unwrap()
}

/// Node `node`'s whole log of `size` entries, exported as the vault exports it.
fn node_export(node: &str, size: u64) -> String {
    let origin = format!("keyvault/{VAULT}/{node}");
    let mut out = String::new();
    out.push_str(&header_line(&origin, size, false, 0, &[]));
    out.push('\n');
    out.push_str(&checkpoint_line(&checkpoint(node, size)));
    out.push('\n');
    for seq in 0..size {
        let e = entry(node, seq);
        out.push_str(&e);
        out.push('\n');
        out.push_str(std::str::from_utf8(&leaf_hash_line(&leaf_hash(e.as_bytes()))).unwrap());
        out.push('\n');
    }
    out.push_str(&end_line(size));
    out.push('\n');
    out
}

fn cluster_file(listed: &[&str], parts: &[(&str, u64)]) -> String {
    let nodes: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    let mut out = cluster_header_line(VAULT, &nodes, 1_900_000_000);
    out.push('\n');
    for (node, size) in parts {
        out.push_str(&node_export(node, *size));
    }
    out
}

fn verify(text: &str) -> Result<ClusterVerifyReport, VerifyError> {
    verify_cluster_export(text.as_bytes(), &vault_key(), None, |_| Ok(()))
}

#[test]
fn every_listed_nodes_log_verifies_on_its_own_checkpoint() {
    let text = cluster_file(&["a", "b", "c"], &[("a", 3), ("b", 5), ("c", 1)]);
    assert!(is_cluster_export(text.as_bytes()));
    let report = verify(&text).unwrap();
    assert!(report.is_verified(), "{report:?}");
    assert!(report.missing.is_empty());
    assert_eq!(report.header.nodes, ["a", "b", "c"]);
    assert_eq!(report.header.time, 1_900_000_000);
    let seen: Vec<(&str, u64, u64)> = report
        .nodes
        .iter()
        .map(|o| {
            let r = o.result.as_ref().unwrap();
            (o.node.as_str(), r.entries, r.checkpoint.size)
        })
        .collect();
    assert_eq!(seen, [("a", 3, 3), ("b", 5, 5), ("c", 1, 1)]);
    assert_eq!(report.nodes[0].line, 2);
    // Header, checkpoint, two lines per entry and the end line: a is 9 lines.
    assert_eq!(report.nodes[1].line, 11);
    assert!(
        report.nodes[1].result.as_ref().unwrap().checkpoint.origin == format!("keyvault/{VAULT}/b")
    );
}

#[test]
fn a_listed_node_with_no_log_in_the_file_fails_the_verify() {
    let text = cluster_file(&["a", "b", "c"], &[("a", 3), ("c", 2)]);
    let report = verify(&text).unwrap();
    assert!(!report.is_verified());
    assert_eq!(report.missing, ["b"]);
    assert!(report.nodes.iter().all(|o| o.result.is_ok()));
}

#[test]
fn a_tampered_entry_fails_its_node_and_only_its_node() {
    let text = cluster_file(&["a", "b", "c"], &[("a", 3), ("b", 4), ("c", 2)]);
    let original = entry("b", 2);
    let tampered = original.replace("key.verify", "key.revoke");
    assert_eq!(text.matches(&original).count(), 1);
    let text = text.replacen(&original, &tampered, 1);
    let report = verify(&text).unwrap();
    assert!(!report.is_verified());
    let b = &report.nodes[1];
    assert_eq!(b.node, "b");
    let e = b.result.as_ref().unwrap_err();
    assert!(e.why.contains("entry 2 was changed"), "{e}");
    // The line of the file that holds it: b starts at 11; header, checkpoint, 0, hash, 1, hash.
    assert_eq!(e.line, 11 + 6);
    assert_eq!(
        text.lines().nth(e.line as usize - 1),
        Some(tampered.as_str())
    );
    assert!(report.nodes[0].result.is_ok() && report.nodes[2].result.is_ok());
}

#[test]
fn a_part_cut_short_fails_its_node_and_the_next_part_still_verifies() {
    let a = node_export("a", 3);
    let cut: Vec<&str> = a.lines().collect();
    let mut text = cluster_header_line(VAULT, &["a".into(), "b".into()], 1) + "\n";
    // Without its last entry's leaf hash and its end line.
    for line in &cut[..cut.len() - 2] {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&node_export("b", 2));
    let report = verify(&text).unwrap();
    assert!(!report.is_verified());
    assert!(report.nodes[0].result.is_err());
    assert_eq!(report.nodes[1].node, "b");
    assert!(report.nodes[1].result.is_ok(), "{report:?}");
}

#[test]
fn a_log_not_listed_twice_given_or_of_another_vault_is_refused() {
    let text = cluster_file(&["a", "b"], &[("a", 1), ("x", 1), ("b", 1)]);
    let e = verify(&text).unwrap_err();
    assert!(
        e.why.contains("node x") && e.why.contains("does not list"),
        "{e}"
    );

    let text = cluster_file(&["a", "b"], &[("a", 1), ("b", 1), ("a", 2)]);
    let e = verify(&text).unwrap_err();
    assert!(e.why.contains("node a's log twice"), "{e}");

    let other = NoteSigner::from_seed("keyvault/ffff", &SEED)
        .unwrap()
        .verifier();
    let text = cluster_file(&["a"], &[("a", 1)]);
    let e = verify_cluster_export(text.as_bytes(), &other, None, |_| Ok(())).unwrap_err();
    assert!(e.why.contains("of vault"), "{e}");

    let mut one_host = cluster_header_line(VAULT, &["a".into()], 1) + "\n";
    one_host.push_str(&header_line(&format!("keyvault/{VAULT}"), 0, false, 0, &[]));
    one_host.push('\n');
    let e = verify(&one_host).unwrap_err();
    assert!(e.why.contains("not a node's log"), "{e}");

    let e = verify(&node_export("a", 1)).unwrap_err();
    assert!(e.why.contains("cluster export"), "{e}");
}

#[test]
fn an_earlier_checkpoint_applies_to_its_own_nodes_log() {
    let text = cluster_file(&["a", "b"], &[("a", 3), ("b", 5)]);
    let kept = checkpoint("b", 2);
    let report =
        verify_cluster_export(text.as_bytes(), &vault_key(), Some(&kept), |_| Ok(())).unwrap();
    assert!(report.is_verified());
    assert_eq!(report.nodes[0].result.as_ref().unwrap().extends, None);
    assert_eq!(report.nodes[1].result.as_ref().unwrap().extends, Some(2));

    let elsewhere = checkpoint("c", 1);
    let e = verify_cluster_export(text.as_bytes(), &vault_key(), Some(&elsewhere), |_| Ok(()))
        .unwrap_err();
    assert!(e.why.contains("does not hold"), "{e}");
}

#[test]
fn a_check_that_fails_counts_as_its_nodes_failure() {
    let text = cluster_file(&["a", "b"], &[("a", 3), ("b", 5)]);
    let report = verify_cluster_export(text.as_bytes(), &vault_key(), None, |r| {
        if r.entries == 5 {
            Err(fail(0, "not complete"))
        } else {
            Ok(())
        }
    })
    .unwrap();
    assert!(!report.is_verified());
    assert!(report.nodes[0].result.is_ok());
    assert_eq!(
        report.nodes[1].result.as_ref().unwrap_err().why,
        "not complete"
    );
}
