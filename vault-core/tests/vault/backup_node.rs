//! The backup format of a cluster node (format 2: format 1 with a node frame first), read with
//! no etcd: a one-host backup stays format 1 byte for byte, a node's backup names its node and
//! revision, and damaged or misplaced node backups are refused, by a one-host restore too,
//! leaving nothing behind. The restore into etcd is tested with a real etcd
//! (`vault::tests::cluster_backup`, `scripts/check-cluster.sh`).

use sha2::{Digest, Sha256};
use vault_core::Vault;
use vault_core::backup::{CLUSTER_FORMAT, ClusterOrigin, ONE_HOST_FORMAT, verify_backup};

use crate::common::*;

const HEADER_LEN: usize = 28;
const TAG_SNAPSHOT: u8 = 0x01;
const TAG_PUT: u8 = 0x02;
const TAG_NODE: u8 = 0x05;
const TAG_END: u8 = 0xFF;

fn frame(tag: u8, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = vec![tag];
    bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
    bytes.extend_from_slice(key);
    if let Some(value) = value {
        bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bytes.extend_from_slice(value);
    }
    bytes
}

fn node_frame(node: &str, revision: u64) -> Vec<u8> {
    frame(TAG_NODE, node.as_bytes(), Some(&revision.to_be_bytes()))
}

/// `bytes` with its trailing digest replaced by the SHA-256 of everything before it.
fn redigest(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(bytes.len() - 32);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// A real one-host backup made into a node's: format 2, a node frame after the header.
fn as_node_backup(one_host: &[u8], node: &str, revision: u64) -> Vec<u8> {
    let mut bytes = one_host[..HEADER_LEN].to_vec();
    bytes[8..10].copy_from_slice(&CLUSTER_FORMAT.to_be_bytes());
    bytes.extend_from_slice(&node_frame(node, revision));
    bytes.extend_from_slice(&one_host[HEADER_LEN..]);
    redigest(bytes)
}

/// A file of `frames` under a header of backup format `format`, with a trailer counting
/// `counts` (snapshot, captured, entries).
fn built(format: u16, frames: &[Vec<u8>], counts: [u64; 3]) -> Vec<u8> {
    let mut bytes = b"KVBACKUP".to_vec();
    bytes.extend_from_slice(&format.to_be_bytes());
    bytes.extend_from_slice(&vault_core::FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&[7; 8]);
    bytes.extend_from_slice(&1_765_000_000u64.to_be_bytes());
    for f in frames {
        bytes.extend_from_slice(f);
    }
    bytes.push(TAG_END);
    for count in counts {
        bytes.extend_from_slice(&count.to_be_bytes());
    }
    bytes.extend_from_slice(&[0; 32]);
    redigest(bytes)
}

fn one_host_backup() -> Vec<u8> {
    let (_tmp, vault) = passphrase_vault();
    vault
        .create_key(&ctx(), vault_core::keys::NewKey::new("alice"))
        .unwrap();
    let mut out = Vec::new();
    vault.backup(&ctx(), &mut out, |_| {}).unwrap();
    out
}

fn refusal(bytes: &[u8]) -> String {
    verify_backup(bytes, |_| {}).unwrap_err().to_string()
}

#[test]
fn a_one_host_backup_is_still_format_1_and_names_no_node() {
    let bytes = one_host_backup();
    assert_eq!(bytes[8..10], ONE_HOST_FORMAT.to_be_bytes());
    assert_eq!(bytes[HEADER_LEN], TAG_SNAPSHOT, "no node frame");
    let summary = verify_backup(&bytes[..], |_| {}).unwrap();
    assert_eq!(summary.cluster, None);
}

#[test]
fn a_node_backup_names_its_node_and_the_etcd_revision_of_its_shared_rows() {
    let bytes = as_node_backup(&one_host_backup(), "node-a", 4242);
    let summary = verify_backup(&bytes[..], |_| {}).unwrap();
    assert_eq!(
        summary.cluster,
        Some(ClusterOrigin {
            node_id: "node-a".into(),
            revision: 4242
        })
    );
}

#[test]
fn a_damaged_node_backup_is_refused() {
    let bytes = as_node_backup(&one_host_backup(), "node-a", 4242);
    let e = refusal(&bytes[..bytes.len() - 1]);
    assert!(e.contains("truncated"), "{e}");
    let e = refusal(&bytes[..HEADER_LEN + 3]);
    assert!(e.contains("truncated"), "{e}");
    // A flipped byte in the node id, in the revision, and in the rows after them.
    for at in [
        HEADER_LEN + 6,
        HEADER_LEN + 20,
        HEADER_LEN + 40,
        bytes.len() - 50,
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        let e = refusal(&flipped);
        assert!(e.contains("corrupted"), "byte {at}: {e}");
    }
}

#[test]
fn a_node_frame_only_opens_a_format_2_file() {
    let one_host = one_host_backup();
    // Format 2 with no node frame.
    let mut no_node = one_host.clone();
    no_node[8..10].copy_from_slice(&CLUSTER_FORMAT.to_be_bytes());
    let e = refusal(&redigest(no_node));
    assert!(e.contains("no node frame"), "{e}");
    // A node frame in a format 1 file, which no build ever wrote.
    let mut in_one = as_node_backup(&one_host, "node-a", 1);
    in_one[8..10].copy_from_slice(&ONE_HOST_FORMAT.to_be_bytes());
    let e = refusal(&redigest(in_one));
    assert!(e.contains("unknown frame tag 0x05"), "{e}");
    // A newer format than this build reads.
    let e = refusal(&built(CLUSTER_FORMAT + 1, &[], [0, 0, 0]));
    assert!(e.contains("newer than this keyvault reads"), "{e}");
}

#[test]
fn a_node_backup_holds_its_shared_rows_in_its_snapshot_only() {
    let snapshot = frame(TAG_SNAPSHOT, b"\x00format", Some(b"x"));
    // A captured change of a node-local row is what a node's backup carries after the scan.
    let local = frame(TAG_PUT, b"\x0baudit-tail", Some(b"y"));
    let fine = built(
        CLUSTER_FORMAT,
        &[node_frame("a", 9), snapshot.clone(), local],
        [1, 1, 0],
    );
    verify_backup(&fine[..], |_| {}).unwrap();
    // A captured change of a key record: the shared rows are those of one revision.
    let shared = frame(TAG_PUT, b"\x01key-id-12345", Some(b"z"));
    let bad = built(
        CLUSTER_FORMAT,
        &[node_frame("a", 9), snapshot, shared],
        [1, 1, 0],
    );
    let e = refusal(&bad);
    assert!(e.contains("captured change of a shared row"), "{e}");
}

#[test]
fn a_one_host_restore_of_a_node_backup_is_refused_and_leaves_nothing() {
    let bytes = as_node_backup(&one_host_backup(), "node-a", 4242);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restored");
    let e = Vault::restore(&bytes[..], &dir, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backup of node node-a of a cluster vault"),
        "{e}"
    );
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
