//! The one-second fence against a real etcd: with two of its three members stopped (no
//! quorum), a node's verifies fail `cluster_unavailable` within about a second, and answer
//! again once the members are back.
//!
//! `scripts/check-cluster.sh` runs it alone, with `KEYVAULT_ETCD_STOP_PIDS` naming the process
//! ids of two members (not the first endpoint's), which the test stops with `SIGSTOP` and
//! resumes with `SIGCONT` (also when it fails, so that the script's later tests have their
//! cluster back).

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::keys::VerifyRequest;
use crate::storage::etcd::watch::MAX_VIEW_AGE;

fn signal(pids: &[String], signal: &str) {
    for pid in pids {
        let status = std::process::Command::new("kill")
            .args([signal, pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

/// Resumes the members when dropped, whatever the test did.
struct Resume(Vec<String>);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

#[test]
fn a_node_cut_off_from_etcd_answers_no_verify_after_a_second_and_recovers() {
    let Ok(pids) = std::env::var("KEYVAULT_ETCD_STOP_PIDS") else {
        eprintln!("KEYVAULT_ETCD_STOP_PIDS is not set: scripts/check-cluster.sh runs this test");
        return;
    };
    let pids: Vec<String> = pids.split(',').map(|p| p.trim().to_owned()).collect();
    assert_eq!(pids.len(), 2, "two members to stop");
    let Some((cluster, a)) = Cluster::new() else {
        panic!("KEYVAULT_ETCD_ENDPOINTS is needed with KEYVAULT_ETCD_STOP_PIDS");
    };
    let b = cluster.node("b");
    let (_, text) = issue(&a, "owner-1");
    let verify = || {
        b.verify(
            &ctx(),
            VerifyRequest {
                cost: 0,
                ..VerifyRequest::new(&text)
            },
        )
    };
    assert!(verify().unwrap().valid);

    let resume = Resume(pids.clone());
    signal(&pids, "-STOP");
    let stopped = Instant::now();
    let fenced = loop {
        match verify() {
            Err(Error::ClusterUnavailable) => break stopped.elapsed(),
            Ok(v) => assert!(v.valid),
            Err(e) => panic!("{e}"),
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "a node without etcd kept answering verifies"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("fenced {fenced:?} after two members stopped");
    // Within a second of the last moment the view was known current (one probe interval
    // before the stop at most), plus a loaded host's scheduling.
    assert!(
        fenced <= MAX_VIEW_AGE + Duration::from_millis(700),
        "fenced only after {fenced:?}"
    );
    // It stays fenced while etcd has no quorum, with the typed error the server answers 503.
    std::thread::sleep(Duration::from_millis(500));
    let e = verify().unwrap_err();
    assert_eq!(e.code(), "cluster_unavailable");

    drop(resume);
    let resumed = Instant::now();
    loop {
        match verify() {
            Ok(v) => {
                assert!(v.valid);
                break;
            }
            Err(Error::ClusterUnavailable) => assert!(
                resumed.elapsed() < Duration::from_secs(20),
                "the node did not catch up after etcd came back"
            ),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "caught up {:?} after the members resumed",
        resumed.elapsed()
    );
}
