//! In-process load benchmark: verify throughput and latency at several concurrencies with
//! durable audit on, beside the fsync floor measured in the same run; create, rotate and revoke
//! rates; unseal and open times; bytes on disk; export and offline-verify rates.
//!
//! `cargo bench -p vault-core --bench load` (LOAD_KEYS=1000000 for the 1 M-key run,
//! LOAD_SECONDS per point, LOAD_CALLERS=1,2,8,64). Put TMPDIR on the real disk, never tmpfs.
//! Callers are threads calling `Vault::verify`, then tasks on a tokio runtime (one worker per
//! core) calling `Vault::verify_async`, as the server does.
//!
//! Verify throughput with usage summaries on and off is compared in the same run, reopening the
//! vault each way in alternate order for LOAD_USAGE_ROUNDS rounds (default 3) at
//! LOAD_USAGE_CALLERS (default 8,64), each verify from one of 250 client addresses (by thread
//! and iteration, so a key sees many: with many keys, a storm of new-address signals; or, with
//! LOAD_USAGE_ADDRESSES=per-key, always the one of its key), for LOAD_USAGE_SECONDS per round
//! (default LOAD_SECONDS; above 30 a round includes a store of the figures).
//!
//! Resident memory per stored key is measured twice. In this process: VmRSS after the verify
//! points (usage on, every key cached by then if the cache was warmed) minus VmRSS before the
//! vault under test was opened, per key, with and without the bench's own list of key texts;
//! it also holds what creating the keys from 64 threads left in the allocator's arenas. And as
//! a deployed process holds it (`load/memory.rs`): a child process opens the vault this one
//! made, verifies every key once and measures itself.
//! LOAD_CHANGES=0 skips the rotate, revoke and export phases (a quicker 1 M-key run).
//! LOAD_VERIFY_ONLY=1 runs only the verify points (no default-parameter unseal, no flat, usage,
//! change or open phases), LOAD_VERIFY_ROUNDS times (default 1) alternating threads and tasks,
//! and prints each point's rate as a ratio to the fsync bound measured just before it: the
//! quick loop for work on the audit writer.
//!
//! Cost flat in the number of keys: with LOAD_FLAT_PEER=1000 (say), a second vault of that many
//! keys is made beside the one under test, and verify rates of the two are compared in
//! alternate order, LOAD_FLAT_ROUNDS rounds (default 3) at LOAD_FLAT_CALLERS (default 8,64),
//! so that the disk's and the machine's drifts fall on both alike; callers are threads, then
//! tasks (LOAD_FLAT_MODES, default threads,tasks): threads at 64 are bound by their context
//! switches, which hide what a million keys add per verify, and tasks are not.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::audit::export::{ExportFilter, ExportFormat, verify_export};
use vault_core::audit::note::NoteVerifier;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{AsyncVerify, NewKey, VerifyRequest};
use vault_core::{Context, UnsealMethod, Vault};

use bound::{fdatasync_time, verify_rounds};
use rounds::{flat_in_keys, usage_on_and_off};

#[path = "load/bound.rs"]
mod bound;
#[path = "load/memory.rs"]
mod memory;
#[path = "load/rounds.rs"]
mod rounds;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// This process's resident memory in bytes (VmRSS from `/proc/self/status`; 0 elsewhere).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Opens and unseals the vault under test.
fn reopen(dir: &Path) -> Vault {
    let vault = Vault::open(dir).expect("open");
    vault
        .unseal_passphrase(
            &Context::embedded(),
            &Passphrase::new("benchmark passphrase"),
        )
        .expect("unseal");
    vault
}

/// Waits until the key cache is warm after unseal; the seconds it took.
fn wait_warm(vault: &Vault) -> f64 {
    let s = Instant::now();
    while vault.key_cache_warming() {
        std::thread::sleep(Duration::from_millis(10));
    }
    s.elapsed().as_secs_f64()
}

/// Runs `op` on `callers` threads for `seconds`; (ops/s, p50 µs, p99 µs).
fn load(
    callers: usize,
    seconds: f64,
    op: impl Fn(usize, u64) + Send + Sync + 'static,
) -> (f64, f64, f64) {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|t| {
            let (op, stop) = (Arc::clone(&op), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(100_000);
                let mut i = t as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    op(t, i);
                    lat.push(s.elapsed().as_micros() as u32);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let all: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    rate_and_percentiles(all, start.elapsed().as_secs_f64())
}

/// Runs `callers` tasks calling [`Vault::verify_async`] on a tokio runtime with one worker per
/// core for `seconds`, as the server does; (ops/s, p50 µs, p99 µs).
fn load_async(
    vault: &Vault,
    texts: &Arc<Vec<String>>,
    callers: usize,
    seconds: f64,
) -> (f64, f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|t| {
            let (vault, texts, stop) = (vault.clone(), Arc::clone(texts), Arc::clone(&stop));
            runtime.spawn(async move {
                let ctx = Context::embedded();
                let mut lat = Vec::with_capacity(100_000);
                let mut i = t as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    let at = (i as usize * 2_654_435_761) % texts.len();
                    let req = VerifyRequest {
                        key: &texts[at],
                        scope: None,
                        cost: 0,
                    };
                    assert!(verify_valid(&vault, &ctx, req).await);
                    lat.push(s.elapsed().as_micros() as u32);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let all: Vec<u32> = runtime.block_on(async {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("task"));
        }
        all
    });
    rate_and_percentiles(all, start.elapsed().as_secs_f64())
}

/// (ops/s, p50 µs, p99 µs) of the latencies `all` (µs) measured over `elapsed` seconds.
/// One verify as the server makes it: in the task, or on the blocking pool when another verify
/// of the same key holds its cache slot. Whether it answered VALID.
async fn verify_valid(vault: &Vault, ctx: &Context, req: VerifyRequest<'_>) -> bool {
    match vault.verify_async(ctx, req, false).await.expect("verify") {
        AsyncVerify::Verdict(v) => v.valid,
        AsyncVerify::MustBlock(pending) => {
            let vault = vault.clone();
            tokio::task::spawn_blocking(move || {
                vault
                    .finish_verify(&Context::embedded(), pending)
                    .expect("verify")
                    .valid
            })
            .await
            .expect("blocking verify")
        }
    }
}

fn rate_and_percentiles(mut all: Vec<u32>, elapsed: f64) -> (f64, f64, f64) {
    all.sort_unstable();
    let pct = |p: f64| f64::from(all[((all.len() as f64 * p) as usize).min(all.len() - 1)]);
    (all.len() as f64 / elapsed, pct(0.50), pct(0.99))
}

/// The mean of `samples` and the half-width of its 95 % confidence interval (Student's t; the
/// half-width is infinite for a single sample).
fn mean_and_interval(samples: &[f64]) -> (f64, f64) {
    let n = samples.len();
    let mean = samples.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::INFINITY);
    }
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Two-sided 97.5 % quantiles of Student's t for 1 to 10 degrees of freedom; past that, 2.1
    // (within 5 % up to 30).
    const T: [f64; 10] = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23];
    let t = T.get(n - 2).copied().unwrap_or(2.1);
    (mean, t * (variance / n as f64).sqrt())
}

/// CPU seconds (user + system) used so far by this process's threads named `name` (Linux
/// `/proc`; 0 elsewhere).
fn thread_cpu(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// CPU seconds (user + system) used so far by the whole process (Linux `/proc`; 0 elsewhere).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(14) + field(15)) as f64 / 100.0
}

/// Makes `keys` keys of the typical shape in `vault` with 64 callers; their texts.
fn create_keys(vault: &Vault, keys: usize) -> Vec<String> {
    let per = keys.div_ceil(64);
    let makers: Vec<_> = (0..64)
        .map(|t| {
            let vault = vault.clone();
            std::thread::spawn(move || {
                let ctx = Context::embedded();
                (0..per)
                    .map(|i| {
                        let mut new = NewKey::new(format!("customer-{}", (t * per + i) % 5000));
                        new.name = "photo uploads".into();
                        new.scopes = vec![
                            "photos:read".into(),
                            "photos:write".into(),
                            "albums:read".into(),
                        ];
                        new.meta = serde_json::json!({"plan": "pro", "region": "eu-west", "note": "x".repeat(60)})
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        let k = vault.create_key(&ctx, new).expect("create");
                        k.key.expose_secret_text().expose_secret().to_owned()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    makers
        .into_iter()
        .flat_map(|m| m.join().expect("maker"))
        .collect()
}

fn main() {
    if let Ok(dir) = std::env::var(memory::CHILD) {
        memory::child(&dir);
        return;
    }
    let keys: usize = env("LOAD_KEYS", 1000);
    let seconds: f64 = env("LOAD_SECONDS", 3.0);
    let callers: Vec<usize> = env("LOAD_CALLERS", "1,2,8,64".to_owned())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let ctx = Context::embedded();
    println!(
        "# keyvault load benchmark: {keys} keys, {seconds} s per point, data in {}",
        tmp.path().display()
    );

    // The floor, measured now on the same disk.
    let t1 = fdatasync_time(tmp.path(), 1);
    let t8 = fdatasync_time(tmp.path(), 8);
    println!("| fdatasync of a 1-entry batch | {:.0} µs |", t1 * 1e6);
    println!(
        "| fdatasync of an 8-entry batch | {:.0} µs; fsync bound at 8 callers = {:.0} verifies/s |",
        t8 * 1e6,
        8.0 / t8
    );

    let verify_only = env("LOAD_VERIFY_ONLY", 0) == 1;
    // Unseal with the default Argon2id parameters.
    if !verify_only {
        unseal_time(tmp.path());
    }

    // The vault under test (test-grade Argon2 only to make the set-up quick).
    let dir = tmp.path().join("vault");
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("benchmark passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let (vault, issued) = Vault::init(&dir, &method, &Prefix::default()).expect("init");
    let verifier = NoteVerifier::parse(&issued.audit_public_key).expect("public key");
    // Sizes are read with the vault closed: an open log keeps space allocated ahead.
    drop(vault);
    let before = dir_bytes(&dir);
    let rss_before = rss();
    let vault = reopen(&dir);
    let texts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let s = Instant::now();
    let per = keys.div_ceil(64);
    let creators: Vec<_> = (0..64)
        .map(|t| {
            let (vault, texts) = (vault.clone(), Arc::clone(&texts));
            std::thread::spawn(move || {
                let ctx = Context::embedded();
                let mut mine = Vec::with_capacity(per);
                for i in 0..per {
                    let mut new = NewKey::new(format!("customer-{}", (t * per + i) % 5000));
                    new.name = "photo uploads".into();
                    new.scopes = vec!["photos:read".into(), "photos:write".into(), "albums:read".into()];
                    new.meta = serde_json::json!({"plan": "pro", "region": "eu-west", "note": "x".repeat(60)}).as_object().cloned().unwrap_or_default();
                    let k = vault.create_key(&ctx, new).expect("create");
                    mine.push(k.key.expose_secret_text().expose_secret().to_owned());
                }
                texts.lock().expect("texts").extend(mine);
            })
        })
        .collect();
    creators
        .into_iter()
        .for_each(|t| t.join().expect("creator"));
    let created = texts.lock().expect("texts").len();
    println!(
        "| create, 64 callers | {:.0} keys/s |",
        created as f64 / s.elapsed().as_secs_f64()
    );
    let closing = Instant::now();
    drop(vault);
    let close_after_create = closing.elapsed().as_secs_f64();
    let bytes_after_create = dir_bytes(&dir);
    let opening = Instant::now();
    let vault = Vault::open(&dir).expect("open");
    println!(
        "| close after creating the keys, then open | close {close_after_create:.3} s, open {:.3} s |",
        opening.elapsed().as_secs_f64()
    );
    let rss_cold = rss();
    vault
        .unseal_passphrase(&ctx, &Passphrase::new("benchmark passphrase"))
        .expect("unseal");
    // Verifies are answered while the cache warms; the points below measure the steady state.
    let warm = wait_warm(&vault);
    println!(
        "| key cache warm after unseal (in the background) | {warm:.2} s; resident memory {:.0} B per key more than before unseal (the cache, sled's pages) |",
        rss().saturating_sub(rss_cold) as f64 / created as f64
    );
    let entries_before = vault.audit_size();
    println!(
        "| disk per key (typical shape, incl. its audit entry and index) | {:.0} B |",
        (bytes_after_create - before) as f64 / created as f64
    );
    // Where they are: the store (sled's log file and snapshots) and the audit segments.
    let mut parts: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .flatten()
        .map(|e| {
            let bytes = if e.path().is_dir() {
                dir_bytes(&e.path())
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .chain(
            std::fs::read_dir(dir.join("store"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let name = format!("store/{}", e.file_name().to_string_lossy());
                    (name, e.metadata().map_or(0, |m| m.len()))
                }),
        )
        .filter(|(_, bytes)| *bytes > (1 << 20))
        .collect();
    parts.sort();
    println!(
        "| where, per key (parts over 1 MiB) | {} |",
        parts
            .iter()
            .map(|(n, b)| format!("{n} {:.0} B", *b as f64 / created as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let texts: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *texts.lock().expect("texts")));
    if verify_only {
        verify_rounds(tmp.path(), &vault, &texts, &callers, seconds);
        return;
    }
    for &c in &callers {
        let (vault, texts) = (vault.clone(), Arc::clone(&texts));
        let (rate, p50, p99) = load(c, seconds, move |_, i| {
            let key = &texts[(i as usize * 2_654_435_761) % texts.len()];
            let v = vault
                .verify(
                    &Context::embedded(),
                    VerifyRequest {
                        key,
                        scope: None,
                        cost: 0,
                    },
                )
                .expect("verify");
            assert!(v.valid);
        });
        println!(
            "| verify, {c} callers | {rate:.0} verifies/s | p50 {p50:.0} µs | p99 {p99:.0} µs |"
        );
    }
    for &c in &callers {
        let (rate, p50, p99) = load_async(&vault, &texts, c, seconds);
        println!(
            "| verify_async, {c} tasks on {} runtime threads | {rate:.0} verifies/s | p50 {p50:.0} µs | p99 {p99:.0} µs |",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    // The bench's own list of texts: each String's heap block (rounded up to malloc's 16-byte
    // granule, plus its 8-byte header) and the list's slots.
    let texts_bytes: usize = texts
        .iter()
        .map(|t| (t.capacity() + 8).next_multiple_of(16) + size_of::<String>())
        .sum();
    let grown_rss = rss().saturating_sub(rss_before) as f64;
    println!(
        "| resident memory per stored key (this process, which also created the keys; usage on, after the verify points) | {:.0} B; {:.0} B less the bench's list of key texts |",
        grown_rss / created as f64,
        (grown_rss - texts_bytes as f64) / created as f64
    );
    flat_in_keys(tmp.path(), &vault, &texts, seconds);
    let entries = vault.audit_size() - entries_before;
    drop(vault);
    let grown = dir_bytes(&dir) - bytes_after_create;
    println!(
        "| disk per audit entry (verify) | {:.0} B |",
        grown as f64 / entries as f64
    );
    memory::in_a_fresh_process(&dir, &texts);

    usage_on_and_off(&dir, &texts, seconds);
    if env("LOAD_CHANGES", 1) == 0 {
        open_time(&dir, keys);
        return;
    }
    let vault = reopen(&dir);

    let (vault2, texts2) = (vault.clone(), Arc::clone(&texts));
    let (rate, _, p99) = load(8, seconds, move |_, i| {
        let key = &texts2[(i as usize * 40_503) % texts2.len()];
        let id = vault_core::apikey::ApiKey::parse(key, &Prefix::default())
            .expect("parse")
            .id();
        vault2
            .rotate_key(&Context::embedded(), &id, 3600)
            .expect("rotate");
    });
    println!("| rotate, 8 callers | {rate:.0} rotations/s | p99 {p99:.0} µs |");
    // Each key revoked once: 8 callers share the list.
    let s = Instant::now();
    let revokers: Vec<_> = (0..8)
        .map(|t| {
            let (vault, texts) = (vault.clone(), Arc::clone(&texts));
            std::thread::spawn(move || {
                for key in texts.iter().skip(t).step_by(8) {
                    let id = vault_core::apikey::ApiKey::parse(key, &Prefix::default())
                        .expect("parse")
                        .id();
                    vault.revoke_key(&Context::embedded(), &id).expect("revoke");
                }
            })
        })
        .collect();
    revokers
        .into_iter()
        .for_each(|t| t.join().expect("revoker"));
    println!(
        "| revoke, 8 callers | {:.0} revocations/s |",
        texts.len() as f64 / s.elapsed().as_secs_f64()
    );

    let total = vault.audit_size();
    let s = Instant::now();
    vault
        .export_audit(
            &ctx,
            &ExportFilter::default(),
            ExportFormat::Jsonl,
            &mut std::io::sink(),
        )
        .expect("export");
    println!(
        "| audit export (JSON Lines, {total} entries) | {:.0} entries/s |",
        total as f64 / s.elapsed().as_secs_f64()
    );
    let mut text = Vec::new();
    vault
        .export_audit(
            &ctx,
            &ExportFilter::default(),
            ExportFormat::Jsonl,
            &mut text,
        )
        .expect("export");
    let s = Instant::now();
    let report = verify_export(text.as_slice(), &verifier, None, |_| {}).expect("verify");
    println!(
        "| offline verify of an unfiltered export | {:.0} entries/s |",
        report.entries as f64 / s.elapsed().as_secs_f64()
    );

    let closing = Instant::now();
    drop(vault);
    println!(
        "| close after rotating and revoking | {:.3} s |",
        closing.elapsed().as_secs_f64()
    );
    open_time(&dir, keys);
}

/// Prints the median of 3 unseals with the default Argon2id parameters, of a vault made in
/// `tmp`.
fn unseal_time(tmp: &Path) {
    let ctx = Context::embedded();
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("benchmark passphrase"),
        params: KdfParams::DEFAULT,
    };
    let (v, _) = Vault::init(&tmp.join("argon"), &method, &Prefix::default()).expect("init");
    let mut unseal = Vec::new();
    for _ in 0..3 {
        v.seal(&ctx).expect("seal");
        let s = Instant::now();
        v.unseal_passphrase(&ctx, &Passphrase::new("benchmark passphrase"))
            .expect("unseal");
        unseal.push(s.elapsed().as_secs_f64());
    }
    unseal.sort_by(f64::total_cmp);
    println!(
        "| unseal, Argon2id 64 MiB t=3 p=4 (median of 3) | {:.3} s |",
        unseal[1]
    );
    drop(v);
}

/// Prints how long opening the (closed) vault in `dir` takes.
fn open_time(dir: &Path, keys: usize) {
    let s = Instant::now();
    let vault = Vault::open(dir).expect("open");
    println!(
        "| open a {keys}-key vault | {:.3} s |",
        s.elapsed().as_secs_f64()
    );
    drop(vault);
}
