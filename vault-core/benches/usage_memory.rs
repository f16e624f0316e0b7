//! Memory and CPU of the usage figures per used key: resident memory grown by the figures of N
//! keys, each verified a few times, and the fold's CPU per verify.
//!
//! `cargo bench -p vault-core --bench usage_memory`. For each N of USAGE_KEYS (default
//! 1000,100000,1000000) a fresh process (this binary again, so that no earlier run's freed
//! memory is reused) folds USAGE_USES (default 3) rounds of one verify per key, in batches of
//! 10,000 as the usage thread takes them from the audit writer, with 8 MiB of other memory
//! walked between batches (the verifies between two folds evict the figures the same way). Each
//! key is verified from USAGE_ADDRESSES (default 1) of 250 client addresses, round by round; its
//! owner is one of 5,000, as in the load benchmark. The rounds span USAGE_HOURS hours (default
//! 1, so each key has one hourly and one daily bucket). It reports the growth of `VmRSS`
//! (`/proc/self/status`) per key and the fold's CPU (the thread's own clock) per verify: over
//! every round, and over the last (every key already known).

use std::hint::black_box;
use std::process::Command;

use vault_core::usage::{Aggregate, CompactString, Observation, Thresholds};

/// A time in late 2025 (Unix ms), on an hour.
const T0: u64 = 1_764_000_000_000;
const HOUR_MS: u64 = 3_600_000;
const BATCH: usize = 10_000;
const OWNERS: u64 = 5_000;
const ADDRESSES: u64 = 250;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process in bytes (`VmRSS` of `/proc/self/status`, in kB).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec`, which `ts` is, and reads nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A key id as the vault writes it: 24 hex characters.
fn key_id(k: u64) -> CompactString {
    let mixed = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k << 7);
    CompactString::from(format!("{:08x}{mixed:016x}", k as u32))
}

fn observation(seq: u64, time_ms: u64, k: u64, round: u64, addresses: u64) -> Observation {
    // A key's addresses, one after the other round by round.
    let address = (k * 7 + round % addresses) % ADDRESSES;
    Observation {
        seq,
        time_ms,
        verify: true,
        outcome: "VALID".into(),
        key_id: Some(key_id(k)),
        owner: Some(CompactString::from(format!("customer-{}", k % OWNERS))),
        client: Some(CompactString::from(format!("192.0.2.{address}"))),
        credits: 0,
        previous_until: None,
        previous_since: None,
    }
}

/// One measure, in this process: prints `keys bytes_per_key ns_per_verify ns_per_verify_last`.
fn measure(keys: u64) {
    let uses: u64 = env("USAGE_USES", 3);
    let addresses: u64 = env("USAGE_ADDRESSES", 1).max(1);
    let hours: u64 = env("USAGE_HOURS", 1).max(1);
    let th = Thresholds::default();
    let total = keys * uses;
    let span_ms = hours * HOUR_MS - 1;
    // Everything but the figures is made before the first reading.
    let mut batch: Vec<Observation> = (0..BATCH as u64)
        .map(|i| observation(i, T0, i, 0, 1))
        .collect();
    // Written once, so that its pages are resident before the first reading.
    let mut other = vec![1u64; (8 << 20) / 8];
    let mut agg = Aggregate::default();
    let before = rss();
    let (mut cpu, mut cpu_last) = (0u64, 0u64);
    let mut seq = 0u64;
    while seq < total {
        let n = (total - seq).min(BATCH as u64) as usize;
        for (slot, s) in batch.iter_mut().zip(seq..seq + n as u64) {
            let (round, k) = (s / keys, s % keys);
            *slot = observation(s, T0 + s * span_ms / total, k, round, addresses);
        }
        // The verifies between two folds walk other memory.
        for (i, word) in other.iter_mut().enumerate() {
            *word = word.wrapping_add(i as u64);
        }
        black_box(&other);
        let started = thread_cpu_ns();
        for o in &batch[..n] {
            agg.observe(&th, o);
        }
        let spent = thread_cpu_ns() - started;
        cpu += spent;
        if seq >= total - keys {
            cpu_last += spent;
        }
        seq += n as u64;
    }
    let grown = rss().saturating_sub(before);
    black_box(&agg);
    println!(
        "{keys} {:.1} {:.1} {:.1}",
        grown as f64 / keys as f64,
        cpu as f64 / total as f64,
        cpu_last as f64 / keys.min(total) as f64
    );
}

fn main() {
    if let Ok(keys) = std::env::var("USAGE_MEMORY_ONE") {
        measure(keys.parse().expect("USAGE_MEMORY_ONE is a number"));
        return;
    }
    let sizes: String = env("USAGE_KEYS", "1000,100000,1000000".to_owned());
    println!(
        "usage figures: {} verifies per key from {} address(es), over {} hour(s)",
        env("USAGE_USES", 3u64),
        env("USAGE_ADDRESSES", 1u64),
        env("USAGE_HOURS", 1u64)
    );
    println!("| keys | resident memory per key | fold CPU per verify | ... of the last round |");
    println!("| --- | --- | --- | --- |");
    let me = std::env::current_exe().expect("current_exe");
    for keys in sizes
        .split(',')
        .filter_map(|n| n.trim().parse::<u64>().ok())
    {
        let out = Command::new(&me)
            .env("USAGE_MEMORY_ONE", keys.to_string())
            .output()
            .expect("run a measure");
        assert!(out.status.success(), "the measure of {keys} keys failed");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        println!("| {} | {} B | {} ns | {} ns |", f[0], f[1], f[2], f[3]);
    }
}
