//! Memory under a flood of unknown ids: resident memory before, during and after
//! UNKNOWN_VERIFIES (default 1,000,000) verifies of well-formed keys whose ids are stored
//! nowhere, each from one of UNKNOWN_ADDRESSES (default 65,536) client addresses, with durable
//! audit and usage summaries on, as a server runs. DESIGN section 8 asks that resident memory
//! end no more than 64 MiB above where it started.
//!
//! `cargo bench -p vault-core --bench unknown_ids`. Put TMPDIR on the real disk, never tmpfs
//! (the run appends about half a gigabyte of audit log). UNKNOWN_TASKS (default 256) tasks call
//! `Vault::verify_async` on a tokio runtime with one worker per core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use secrecy::ExposeSecret;
use vault_core::apikey::{ApiKey, Prefix};
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{AsyncVerify, NewKey, VerifyCode, VerifyRequest};
use vault_core::{Context, UnsealMethod, Vault};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, in MiB (`VmRSS` of `/proc/self/status`, in kB).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

fn text(key: &ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

fn main() {
    let verifies: u64 = env("UNKNOWN_VERIFIES", 1_000_000);
    let addresses: u64 = env("UNKNOWN_ADDRESSES", 65_536);
    let tasks: u64 = env("UNKNOWN_TASKS", 256);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("vault");
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("benchmark passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let (vault, _) = Vault::init(&dir, &method, &Prefix::default()).expect("init");
    let ctx = Context::embedded();
    // A few real keys, verified before the start, so that the threads, the writer's buffers
    // and the usage figures of normal traffic exist before the measure begins.
    let known: Vec<String> = (0..1_000)
        .map(|i| {
            let issued = vault
                .create_key(&ctx, NewKey::new(format!("customer-{i}")))
                .expect("create");
            text(&issued.key)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let run = |count: u64, unknown: bool| {
        let done = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let known = Arc::new(known.clone());
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (vault, done, known) = (vault.clone(), Arc::clone(&done), Arc::clone(&known));
                let peak = Arc::clone(&peak);
                runtime.spawn(async move {
                    let prefix = vault.prefix();
                    let mut i = t;
                    while i < count {
                        let key = if unknown {
                            text(&ApiKey::generate(&prefix))
                        } else {
                            known[i as usize % known.len()].clone()
                        };
                        let a = i % addresses;
                        let ctx = Context::embedded().with_client(format!(
                            "10.{}.{}.{}",
                            a >> 16,
                            (a >> 8) & 255,
                            a & 255
                        ));
                        let verdict = match vault
                            .verify_async(&ctx, VerifyRequest::new(&key), false)
                            .await
                        {
                            Ok(AsyncVerify::Verdict(v)) => v,
                            Ok(AsyncVerify::MustBlock(pending)) => {
                                let vault = vault.clone();
                                tokio::task::spawn_blocking(move || {
                                    vault.finish_verify(&ctx, pending)
                                })
                                .await
                                .expect("join")
                                .expect("verify")
                            }
                            Err(e) => panic!("verify: {e}"),
                        };
                        let expected = if unknown {
                            VerifyCode::NotFound
                        } else {
                            VerifyCode::Valid
                        };
                        assert_eq!(verdict.code, expected);
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % 10_000 == 0 {
                            peak.fetch_max((rss_mib() * 1024.0) as u64, Ordering::Relaxed);
                        }
                        i += tasks;
                    }
                })
            })
            .collect();
        runtime.block_on(async {
            for h in handles {
                h.await.expect("task");
            }
        });
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    };
    run(20_000, false);
    let start = rss_mib();
    let began = Instant::now();
    let mut peak = start;
    let mut rows = Vec::new();
    let step = (verifies / 10).max(1);
    let mut sent = 0;
    while sent < verifies {
        let n = step.min(verifies - sent);
        peak = peak.max(run(n, true));
        sent += n;
        let now = rss_mib();
        peak = peak.max(now);
        rows.push((sent, now));
    }
    let seconds = began.elapsed().as_secs_f64();
    let end = rss_mib();
    println!(
        "unknown-id verifies: {verifies} from {addresses} addresses, {tasks} tasks, {:.0} verifies/s",
        verifies as f64 / seconds
    );
    for (sent, rss) in rows {
        println!(
            "  after {sent:>9}: RSS {rss:8.1} MiB ({:+.1} MiB)",
            rss - start
        );
    }
    println!(
        "RSS start {start:.1} MiB, peak {peak:.1} MiB ({:+.1}), end {end:.1} MiB ({:+.1}); bound +64 MiB: {}",
        peak - start,
        end - start,
        if end - start <= 64.0 {
            "met"
        } else {
            "NOT MET"
        }
    );
    drop(vault);
}
