//! The fsync bound the in-process verify is measured against (DESIGN section 8: 8 callers
//! reach >= 80 % of 8 divided by the fdatasync time of an 8-entry batch), and the quick loop
//! of verify points as ratios to it (LOAD_VERIFY_ONLY; see the bench's top doc).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use vault_core::keys::VerifyRequest;
use vault_core::{Context, Vault};

use crate::{env, load, load_async};

/// Median seconds of appending `batch` 200-byte entries to a file and fdatasync'ing it.
pub fn fdatasync_time(dir: &Path, batch: usize) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("probe file");
    let entry = [b'x'; 200];
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                file.write_all(&entry).expect("write");
            }
            file.sync_data().expect("fdatasync");
            start.elapsed().as_secs_f64()
        })
        .collect();
    std::fs::remove_file(&path).ok();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// LOAD_VERIFY_ROUNDS rounds of the verify points (threads, then tasks, at each of `callers`),
/// each as a ratio to the fsync bound measured just before it (see the module doc).
pub fn verify_rounds(
    tmp: &Path,
    vault: &Vault,
    texts: &Arc<Vec<String>>,
    callers: &[usize],
    seconds: f64,
) {
    let rounds: usize = env("LOAD_VERIFY_ROUNDS", 1);
    for round in 1..=rounds {
        for &c in callers {
            for tasks in [false, true] {
                let bound = 8.0 / fdatasync_time(tmp, 8);
                let (rate, p50, p99) = if tasks {
                    load_async(vault, texts, c, seconds)
                } else {
                    let (vault, texts) = (vault.clone(), Arc::clone(texts));
                    load(c, seconds, move |_, i| {
                        let key = &texts[(i as usize * 2_654_435_761) % texts.len()];
                        let v = vault
                            .verify(&Context::embedded(), VerifyRequest::new(key))
                            .expect("verify");
                        assert!(v.valid);
                    })
                };
                let kind = if tasks { "tasks" } else { "threads" };
                println!(
                    "| round {round}, {c} {kind} | {rate:.0} verifies/s | p50 {p50:.0} µs | p99 {p99:.0} µs | bound {bound:.0}/s | ratio {:.3} |",
                    rate / bound
                );
            }
        }
    }
}
