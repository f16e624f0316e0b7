//! The load bench's comparisons in alternating rounds, each against a peer measured in the same
//! run: the vault under test against a vault of LOAD_FLAT_PEER keys (cost flat in key count),
//! and usage summaries on against off (see the bench's top doc for the knobs).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::VerifyRequest;
use vault_core::{Context, UnsealMethod, Vault, VaultOptions};

use crate::{
    create_keys, env, load, load_async, mean_and_interval, process_cpu, thread_cpu, wait_warm,
};

/// Verify rate of `vault` over `texts` with `callers` threads for `seconds`.
fn verify_rate(vault: &Vault, texts: &Arc<Vec<String>>, callers: usize, seconds: f64) -> f64 {
    let (vault, texts) = (vault.clone(), Arc::clone(texts));
    load(callers, seconds, move |_, i| {
        let key = &texts[(i as usize * 2_654_435_761) % texts.len()];
        let v = vault
            .verify(&Context::embedded(), VerifyRequest::new(key))
            .expect("verify");
        assert!(v.valid);
    })
    .0
}

/// The verify rate of the vault under test against that of a vault of LOAD_FLAT_PEER keys,
/// in alternate order, same run (see the module doc).
pub fn flat_in_keys(tmp: &Path, vault: &Vault, texts: &Arc<Vec<String>>, seconds: f64) {
    let peer_keys: usize = env("LOAD_FLAT_PEER", 0);
    if peer_keys == 0 {
        return;
    }
    let rounds: usize = env("LOAD_FLAT_ROUNDS", 3);
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("benchmark passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let (peer, _) = Vault::init(&tmp.join("peer"), &method, &Prefix::default()).expect("init");
    let peer_texts = Arc::new(create_keys(&peer, peer_keys));
    wait_warm(vault);
    let callers: Vec<usize> = env("LOAD_FLAT_CALLERS", "8,64".to_owned())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let modes: Vec<bool> = env("LOAD_FLAT_MODES", "threads,tasks".to_owned())
        .split(',')
        .filter_map(|m| match m {
            "threads" => Some(false),
            "tasks" => Some(true),
            _ => None,
        })
        .collect();
    for (tasks, c) in modes
        .iter()
        .flat_map(|&t| callers.iter().map(move |&c| (t, c)))
    {
        let rate = |vault: &Vault, texts: &Arc<Vec<String>>| {
            if tasks {
                load_async(vault, texts, c, seconds).0
            } else {
                verify_rate(vault, texts, c, seconds)
            }
        };
        let (mut big, mut small) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for many in if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            } {
                if many {
                    big.push(rate(vault, texts));
                } else {
                    small.push(rate(&peer, &peer_texts));
                }
            }
        }
        let ratios: Vec<f64> = big.iter().zip(&small).map(|(b, s)| b / s).collect();
        let (ratio, within) = mean_and_interval(&ratios);
        let list = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| verify, {c} {}, {} keys vs {peer_keys} keys ({rounds} rounds each, alternating) | [{}] vs [{}] | ratio per round {ratio:.3} ± {within:.3} (95 %) |",
            if tasks { "tasks" } else { "threads" },
            texts.len(),
            list(&big),
            list(&small)
        );
    }
}

/// Verify throughput with usage summaries on and off, in alternate order, same keys, same run.
pub fn usage_on_and_off(dir: &Path, texts: &Arc<Vec<String>>, seconds: f64) {
    let rounds: usize = env("LOAD_USAGE_ROUNDS", 3);
    if rounds == 0 {
        return;
    }
    // Rounds longer than the figures' 30-s store interval include a store's cost.
    let seconds: f64 = env("LOAD_USAGE_SECONDS", seconds);
    let per_key = env("LOAD_USAGE_ADDRESSES", "any".to_owned()) == "per-key";
    let callers: Vec<usize> = env("LOAD_USAGE_CALLERS", "8,64".to_owned())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    for c in callers {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        let (mut fold_cpu, mut writer_cpu, mut all_cpu, mut verifies) = (0.0, 0.0, 0.0, 0.0);
        let (mut close_on, mut close_off) = (0.0, 0.0);
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for usage in order {
                let options = VaultOptions {
                    usage,
                    ..VaultOptions::default()
                };
                let vault = Vault::open_with(dir, &options).expect("open");
                vault
                    .unseal_passphrase(
                        &Context::embedded(),
                        &Passphrase::new("benchmark passphrase"),
                    )
                    .expect("unseal");
                wait_warm(&vault);
                if usage {
                    // Entries logged while usage was off are folded first, not during the load.
                    assert!(
                        vault
                            .usage_sync(Duration::from_secs(600))
                            .expect("usage sync")
                    );
                }
                let (v, texts) = (vault.clone(), Arc::clone(texts));
                let (usage_before, writer_before, all_before) = (
                    thread_cpu("keyvault-usage"),
                    thread_cpu("keyvault-audit"),
                    process_cpu(),
                );
                let (rate, _, p99) = load(c, seconds, move |t, i| {
                    let at = (i as usize * 2_654_435_761) % texts.len();
                    let key = &texts[at];
                    // Each key from its own customer's address, or from any of them.
                    let client = if per_key { at } else { t + i as usize } % 250;
                    let ctx = Context::embedded().with_client(format!("192.0.2.{client}"));
                    let verdict = v
                        .verify(
                            &ctx,
                            VerifyRequest {
                                key,
                                scope: None,
                                cost: 0,
                            },
                        )
                        .expect("verify");
                    assert!(verdict.valid);
                });
                if usage {
                    // Let the last groups be folded, so that their cost is counted.
                    assert!(
                        vault
                            .usage_sync(Duration::from_secs(60))
                            .expect("usage sync")
                    );
                    fold_cpu += thread_cpu("keyvault-usage") - usage_before;
                    writer_cpu += thread_cpu("keyvault-audit") - writer_before;
                    all_cpu += process_cpu() - all_before;
                    verifies += rate * seconds;
                    on.push((rate, p99));
                } else {
                    off.push((rate, p99));
                }
                // Closing stores what changed in the figures: the same store the usage thread
                // makes every few minutes under load.
                let closing = Instant::now();
                drop(vault);
                if usage {
                    close_on += closing.elapsed().as_secs_f64();
                } else {
                    close_off += closing.elapsed().as_secs_f64();
                }
            }
        }
        let mean = |v: &[(f64, f64)]| v.iter().map(|r| r.0).sum::<f64>() / v.len() as f64;
        let rates = |v: &[(f64, f64)]| {
            v.iter()
                .map(|r| format!("{:.0}", r.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Each round's on and off ran back to back, so their ratio cancels the machine's slow
        // drifts; the spread of the ratios says how far the mean can be trusted.
        let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a.0 / b.0).collect();
        let (ratio, within) = mean_and_interval(&ratios);
        println!(
            "| verify, {c} callers, usage on vs off ({rounds} rounds each, alternating) | on {:.0}/s [{}] | off {:.0}/s [{}] | on/off {:.3}; per round {ratio:.3} ± {within:.3} (95 %) |",
            mean(&on),
            rates(&on),
            mean(&off),
            rates(&off),
            mean(&on) / mean(&off)
        );
        println!(
            "| CPU per verify while on, {c} callers | usage thread {:.2} µs, audit writer (its workers, syncs included) {:.2} µs, whole process {:.2} µs: usage {:.1} % |",
            fold_cpu * 1e6 / verifies.max(1.0),
            writer_cpu * 1e6 / verifies.max(1.0),
            all_cpu * 1e6 / verifies.max(1.0),
            100.0 * fold_cpu / all_cpu.max(f64::EPSILON)
        );
        println!(
            "| close after a round, {c} callers (mean) | usage on {:.2} s, off {:.2} s (the difference is storing the figures) |",
            close_on / rounds as f64,
            close_off / rounds as f64
        );
    }
}
