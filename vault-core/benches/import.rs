//! Import throughput against creating keys one by one, in one run (a plain binary).
//!
//! `TMPDIR=/var/tmp cargo bench -p vault-core --bench import`. Each round makes a fresh vault on
//! the real disk (fail-closed durability: every answer waits for its group commit's fdatasync)
//! and imports `IMPORT_KEYS` keys in calls of 1,000 (half by text, half by SHA-256, each with
//! owner, name, 3 scopes and meta), then in another fresh vault creates `CREATE_KEYS` keys of
//! the same shape one by one; rounds alternate, and the ratio is of the best rates.
//! `KEYVAULT_BENCH_ROUNDS` sets the rounds (default 2); `KEYVAULT_BENCH_IMPORT_KEYS` the keys
//! imported a round (default 50,000; a smaller count suits callgrind). DESIGN section 8 asks
//! >= 20k keys/s.

use std::time::Instant;

use secrecy::SecretString;
use serde_json::json;
use sha2::{Digest, Sha256};
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{ImportKey, ImportedSecret, MAX_IMPORT, NewKey};
use vault_core::{Context, UnsealMethod, Vault};

const IMPORT_KEYS: usize = 50_000;

/// The keys imported a round: `KEYVAULT_BENCH_IMPORT_KEYS`, else `IMPORT_KEYS`.
fn import_keys() -> usize {
    std::env::var("KEYVAULT_BENCH_IMPORT_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(IMPORT_KEYS)
}
const CREATE_KEYS: usize = 3_000;

fn new_key(i: usize) -> NewKey {
    let mut new = NewKey::new(format!("customer-{}", i % 5000));
    new.name = format!("key {i}");
    new.scopes = vec![
        "photos:read".into(),
        "photos:write".into(),
        "albums:read".into(),
    ];
    let meta = json!({"plan": "pro", "region": "eu-west", "note": "x".repeat(60)});
    new.meta = meta.as_object().cloned().unwrap_or_default();
    new
}

fn fresh_vault(dir: &std::path::Path) -> Vault {
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("bench passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    Vault::init(dir, &method, &Prefix::default())
        .expect("init")
        .0
}

/// Keys per second of importing `IMPORT_KEYS` keys, a thousand a call.
fn import_rate(runtime: &tokio::runtime::Runtime, count: usize) -> f64 {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = fresh_vault(&tmp.path().join("vault"));
    let ctx = Context::embedded();
    let calls: Vec<Vec<ImportKey>> = (0..count)
        .map(|i| {
            let text = format!("sk_live_bench_import_{i:010}");
            let secret = if i % 2 == 0 {
                ImportedSecret::Text(SecretString::from(text))
            } else {
                ImportedSecret::sha256_hex(&hex::encode(Sha256::digest(text.as_bytes())))
                    .expect("a hash")
            };
            ImportKey {
                secret,
                new: new_key(i),
            }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut calls: Vec<Vec<ImportKey>>, key| {
            match calls.last_mut() {
                Some(call) if call.len() < MAX_IMPORT => call.push(key),
                _ => calls.push(vec![key]),
            }
            calls
        });
    let start = Instant::now();
    for call in calls {
        let out = runtime
            .block_on(vault.import_keys(&ctx, call))
            .expect("import");
        assert!(out.len() <= MAX_IMPORT);
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// Keys per second of creating `CREATE_KEYS` keys one by one.
fn create_rate() -> f64 {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = fresh_vault(&tmp.path().join("vault"));
    let ctx = Context::embedded();
    let start = Instant::now();
    for i in 0..CREATE_KEYS {
        vault.create_key(&ctx, new_key(i)).expect("create");
    }
    CREATE_KEYS as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rounds: usize = std::env::var("KEYVAULT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let count = import_keys();
    let (mut best_import, mut best_create) = (0f64, 0f64);
    for round in 1..=rounds {
        let import = import_rate(&runtime, count);
        let create = create_rate();
        println!(
            "round {round}: import {import:.0} keys/s ({count} keys, 1,000 a call); create one by one {create:.0} keys/s ({CREATE_KEYS} keys)"
        );
        best_import = best_import.max(import);
        best_create = best_create.max(create);
    }
    println!(
        "best: import {best_import:.0} keys/s, create one by one {best_create:.0} keys/s, ratio {:.1}x; target >= 20000 keys/s: {}",
        best_import / best_create,
        if best_import >= 20_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
