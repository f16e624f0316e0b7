//! Audit export and offline verify rates over a log of real verify entries.
//!
//! `cargo bench -p vault-core --bench audit_export` (EXPORT_ENTRIES, default 300,000; put
//! TMPDIR on the real disk). Fills a vault's log with verifies of 1,000 keys by 64 tasks, then
//! times an unfiltered JSON Lines export into memory and the offline verify of that text,
//! EXPORT_ROUNDS times each (default 5), and prints the median rates. Export reads the stored
//! segment files (warm in the page cache after the first round); verify reads the text from
//! memory, so both measure the vault's own work, not the disk.

use std::sync::Arc;
use std::time::Instant;

use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::audit::export::{ExportFilter, ExportFormat, verify_export};
use vault_core::audit::note::NoteVerifier;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{AsyncVerify, NewKey, VerifyRequest};
use vault_core::{Context, UnsealMethod, Vault};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Verifies keys from `tasks` tasks until the log holds `entries` more entries.
fn fill(vault: &Vault, texts: Arc<Vec<String>>, entries: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let tasks = 64u64;
    let per = entries.div_ceil(tasks);
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (vault, texts) = (vault.clone(), Arc::clone(&texts));
                tokio::spawn(async move {
                    let ctx = Context::embedded();
                    for i in 0..per {
                        let key = &texts[((t * per + i) as usize * 7919) % texts.len()];
                        let req = VerifyRequest {
                            key,
                            scope: None,
                            cost: 0,
                        };
                        match vault.verify_async(&ctx, req, false).await.expect("verify") {
                            AsyncVerify::Verdict(v) => assert!(v.valid),
                            AsyncVerify::MustBlock(pending) => {
                                let vault = vault.clone();
                                let v = tokio::task::spawn_blocking(move || {
                                    vault.finish_verify(&Context::embedded(), pending)
                                })
                                .await
                                .expect("blocking verify")
                                .expect("verify");
                                assert!(v.valid);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
}

fn main() {
    let entries: u64 = env("EXPORT_ENTRIES", 300_000);
    let rounds: usize = env("EXPORT_ROUNDS", 5);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let ctx = Context::embedded();
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("benchmark passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let dir = tmp.path().join("vault");
    let (vault, issued) = Vault::init(&dir, &method, &Prefix::default()).expect("init");
    let verifier = NoteVerifier::parse(&issued.audit_public_key).expect("public key");
    let texts: Vec<String> = (0..1000)
        .map(|i| {
            let k = vault
                .create_key(&ctx, NewKey::new(format!("customer-{}", i % 100)))
                .expect("create");
            k.key.expose_secret_text().expose_secret().to_owned()
        })
        .collect();
    let s = Instant::now();
    fill(&vault, Arc::new(texts), entries);
    let total = vault.audit_size();
    println!(
        "# audit export benchmark: {total} entries (filled at {:.0} verifies/s), data in {}",
        entries as f64 / s.elapsed().as_secs_f64(),
        tmp.path().display()
    );

    let mut text = Vec::new();
    let mut export_rates = Vec::new();
    for _ in 0..rounds {
        text.clear();
        let s = Instant::now();
        vault
            .export_audit(
                &ctx,
                &ExportFilter::default(),
                ExportFormat::Jsonl,
                &mut text,
            )
            .expect("export");
        export_rates.push(total as f64 / s.elapsed().as_secs_f64());
    }
    let mut verify_rates = Vec::new();
    for _ in 0..rounds {
        let s = Instant::now();
        let report = verify_export(text.as_slice(), &verifier, None, |_| {}).expect("verify");
        verify_rates.push(report.entries as f64 / s.elapsed().as_secs_f64());
    }
    println!(
        "| audit export (JSON Lines, {total} entries, median of {rounds}) | {:.0} entries/s |",
        median(export_rates)
    );
    println!(
        "| offline verify of an unfiltered export (median of {rounds}) | {:.0} entries/s |",
        median(verify_rates)
    );
}
