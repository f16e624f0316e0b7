//! Resident memory per stored key as a deployed process holds it: the vault made by the bench's
//! own process, then opened, unsealed and verified against by a child process of the same
//! bench binary, which measures itself, as the server's figure is measured.
//!
//! The bench's process created the keys from 64 threads, and what that left in glibc's
//! per-thread arenas (freed, not returned) stays in its resident memory; a server that opens
//! a vault holds none of it. The child reads the key texts first, then takes its baseline, so
//! what it reports is the vault's: the key cache, sled's pages, the usage figures after one
//! VALID verify of every stored key (usage on), the audit writer's and the runtime's threads.
//!
//! Beside the figure it tells, per phase, what glibc's allocator holds in use and free (freed,
//! kept in its arenas), so a change in the figure can be put down to live data or to the
//! allocator; `LOAD_MEMORY_MALLOC_STATS=1` prints every arena's figures on stderr. With
//! `LOAD_MEMORY_KEEP=DIR` the parent keeps a copy of the vault as the child finds it
//! (`DIR/vault`) and the key texts (`DIR/keys`): running the bench binary again with
//! `LOAD_MEMORY_OF` set to a fresh copy of `DIR/vault` and `LOAD_MEMORY_KEYS=DIR/keys` measures
//! another build on the same vault without making the keys again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vault_core::Context;
use vault_core::keys::VerifyRequest;

use crate::{reopen, rss, verify_valid, wait_warm};

/// The environment variable that makes the bench binary the measuring child: the vault's
/// directory; the key texts are in the file named by [`KEYS_FILE`].
pub const CHILD: &str = "LOAD_MEMORY_OF";
const KEYS_FILE: &str = "LOAD_MEMORY_KEYS";
/// Where to keep a copy of the vault and its key texts for measuring again.
const KEEP: &str = "LOAD_MEMORY_KEEP";

/// Runs the child on the closed vault in `dir` and prints its figure (the child's own line).
pub fn in_a_fresh_process(dir: &Path, texts: &[String]) {
    let keys = dir.with_extension("keys");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&keys).expect("keys file"));
    for text in texts {
        writeln!(file, "{text}").expect("write keys");
    }
    file.flush().expect("write keys");
    drop(file);
    if let Some(keep) = std::env::var_os(KEEP) {
        // A copy of the vault as the child will find it, and the key texts, to measure again
        // (LOAD_MEMORY_OF=KEEP/vault-copy LOAD_MEMORY_KEYS=KEEP/keys) without making the keys.
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("keep directory");
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir)
            .arg(&keep)
            .status()
            .expect("cp");
        assert!(copied.success(), "copying the vault failed");
        std::fs::copy(&keys, keep.join("keys")).expect("copy the key texts");
    }
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
    let heap_before = Heap::now();
    let vault = reopen(Path::new(dir));
    wait_warm(&vault);
    let warm = rss().saturating_sub(before) as f64;
    let heap_warm = Heap::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicUsize::new(0));
    let verifying = Instant::now();
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
    // Beside the memory, what the pass cost: a check that a smaller cache did not slow verifies
    // (one pass over every key, so noisier than the load points).
    println!(
        "| one verify of every key, 64 tasks, just after the warm | {:.0} verifies/s |",
        texts.len() as f64 / verifying.elapsed().as_secs_f64()
    );
    // Every verify folded into the usage figures before memory is read.
    vault
        .usage_sync(Duration::from_secs(600))
        .expect("usage sync");
    let grown = rss().saturating_sub(before) as f64;
    let heap_after = Heap::now();
    let n = texts.len() as f64;
    println!(
        "| of which, per key: opened and warm {:.0} B (malloc in use {:.0} B, free {:.0} B); the verifies and the usage figures {:.0} B (malloc in use {:.0} B, free {:.0} B) |",
        warm / n,
        heap_warm.in_use.saturating_sub(heap_before.in_use) as f64 / n,
        heap_warm.free.saturating_sub(heap_before.free) as f64 / n,
        (grown - warm) / n,
        heap_after.in_use.saturating_sub(heap_warm.in_use) as f64 / n,
        heap_after.free.saturating_sub(heap_warm.free) as f64 / n,
    );
    // Per arena, on stderr: how many there are and what each keeps.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("LOAD_MEMORY_MALLOC_STATS").is_some() {
        // SAFETY: malloc_stats(3) only reads the allocator's own state and prints to stderr.
        unsafe { libc::malloc_stats() };
    }
    println!(
        "| resident memory per stored key (a fresh process: opened the vault another made, one verify of every key, usage on) | {:.0} B ({:.0} MiB) |",
        grown / texts.len() as f64,
        grown / f64::from(1 << 20)
    );
}

/// What glibc's allocator holds, over all its arenas: bytes handed out, and bytes free but kept
/// (not returned to the system, so still resident if they were ever touched).
struct Heap {
    in_use: u64,
    free: u64,
}

impl Heap {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn now() -> Heap {
        // SAFETY: mallinfo2(3) takes no arguments and returns a plain struct by value.
        let info = unsafe { libc::mallinfo2() };
        Heap {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free: info.fordblks as u64,
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn now() -> Heap {
        Heap { in_use: 0, free: 0 }
    }
}
