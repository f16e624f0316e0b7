//! Resident memory per stored key as a deployed process holds it: the vault made by the bench's
//! own process, then opened, unsealed and verified against by a child process of the same
//! bench binary, which measures itself, as the server's figure is measured.
//!
//! The bench's process created the keys from 64 threads, and what that left in glibc's
//! per-thread arenas (freed, not returned) stays in its resident memory; a server that opens
//! a vault holds none of it. The child reads the key texts first, then takes its baseline, so
//! what it reports is the vault's: the key cache, sled's pages, the usage figures after one
//! VALID verify of every stored key (usage on), the audit writer's and the runtime's threads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vault_core::Context;
use vault_core::keys::VerifyRequest;

use crate::{reopen, rss, verify_valid, wait_warm};

/// The environment variable that makes the bench binary the measuring child: the vault's
/// directory; the key texts are in the file named by [`KEYS_FILE`].
pub const CHILD: &str = "LOAD_MEMORY_OF";
const KEYS_FILE: &str = "LOAD_MEMORY_KEYS";

/// Runs the child on the closed vault in `dir` and prints its figure (the child's own line).
pub fn in_a_fresh_process(dir: &Path, texts: &[String]) {
    let keys = dir.with_extension("keys");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&keys).expect("keys file"));
    for text in texts {
        writeln!(file, "{text}").expect("write keys");
    }
    file.flush().expect("write keys");
    drop(file);
    let out = std::process::Command::new(std::env::current_exe().expect("this bench's binary"))
        .env(CHILD, dir)
        .env(KEYS_FILE, &keys)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the measuring process");
    let _ = std::fs::remove_file(&keys);
    assert!(out.status.success(), "the measuring process failed");
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The child: measures and prints, then exits.
pub fn child(dir: &str) {
    let keys = PathBuf::from(std::env::var(KEYS_FILE).expect("keys file named"));
    let texts: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&keys)
            .expect("keys file")
            .lines()
            .map(str::to_owned)
            .collect(),
    );
    let before = rss();
    let vault = reopen(Path::new(dir));
    wait_warm(&vault);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (vault, texts, next) = (vault.clone(), Arc::clone(&texts), Arc::clone(&next));
            runtime.spawn(async move {
                let ctx = Context::embedded();
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = texts.get(at) else { return };
                    let req = VerifyRequest::new(key);
                    assert!(verify_valid(&vault, &ctx, req).await);
                }
            })
        })
        .collect();
    runtime.block_on(async {
        for task in tasks {
            task.await.expect("task");
        }
    });
    // Every verify folded into the usage figures before memory is read.
    vault
        .usage_sync(Duration::from_secs(600))
        .expect("usage sync");
    let grown = rss().saturating_sub(before) as f64;
    println!(
        "| resident memory per stored key (a fresh process: opened the vault another made, one verify of every key, usage on) | {:.0} B ({:.0} MiB) |",
        grown / texts.len() as f64,
        grown / f64::from(1 << 20)
    );
}
