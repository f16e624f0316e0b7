//! The pieces of a verify, and a whole verify, in-process (criterion).
//!
//! `cargo bench -p vault-core --bench pieces`. The store lives in a temporary directory on the
//! real disk (set TMPDIR to a disk-backed directory if /tmp is tmpfs), so the audit append is a
//! durable write.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::ExposeSecret;
use vault_core::apikey::{ApiKey, Prefix};
use vault_core::crypto::{self, SecretKey};
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keyring::Keyring;
use vault_core::keys::{NewKey, VerifyRequest};
use vault_core::storage::{Batch, Space, Store};
use vault_core::{Context, UnsealMethod, Vault, VaultOptions, record};

fn pieces(c: &mut Criterion) {
    let prefix = Prefix::default();
    let key = ApiKey::generate(&prefix);
    let text = key.expose_secret_text();
    c.bench_function("parse", |b| {
        b.iter(|| ApiKey::parse(black_box(text.expose_secret()), &prefix).is_ok())
    });

    let lookup = SecretKey::random();
    c.bench_function("hmac", |b| {
        b.iter(|| crypto::hmac(&lookup, &[key.id().as_bytes(), key.secret().expose_bytes()]))
    });

    let keyring = Keyring::generate(0);
    let plaintext = vec![7u8; 200];
    let sealed = record::seal(&keyring, Space::Keys, b"id", 1, &plaintext);
    c.bench_function("decrypt 200 B record", |b| {
        b.iter(|| record::open(&keyring, Space::Keys, b"id", black_box(&sealed)).is_ok())
    });

    let tmp = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&tmp.path().join("store")).expect("a store");
    let mut batch = Batch::default();
    for i in 0u32..10_000 {
        batch.insert(Space::Keys, &i.to_be_bytes(), &sealed);
    }
    store.apply(batch).expect("bulk insert");
    let mut i = 0u32;
    c.bench_function("record read (store get)", |b| {
        b.iter(|| {
            i = (i + 7919) % 10_000;
            store.get(Space::Keys, &i.to_be_bytes()).expect("get")
        })
    });
    drop(store);

    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("bench passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let (vault, _) = Vault::init(&tmp.path().join("vault"), &method, &prefix).expect("init");
    let ctx = Context::embedded();
    c.bench_function("audit append (one durable entry, one caller)", |b| {
        b.iter(|| {
            vault
                .verify(&ctx, VerifyRequest::new("not-a-key"))
                .expect("verify")
        })
    });
    let issued = vault
        .create_key(&ctx, NewKey::new("bench"))
        .expect("create");
    let key_text = issued.key.expose_secret_text();
    c.bench_function("whole verify (VALID, durable, one caller)", |b| {
        b.iter(|| {
            vault
                .verify(&ctx, VerifyRequest::new(key_text.expose_secret()))
                .expect("verify")
        })
    });
    // The two NOT_FOUND cases must not tell an attacker whether an id exists: timed as a
    // client sees them, durable audit append included.
    let wrong = ApiKey::new(
        prefix,
        issued.key.id(),
        vault_core::apikey::KeySecret::random(),
    );
    let wrong = wrong.expose_secret_text();
    let unknown = ApiKey::generate(&prefix).expose_secret_text();
    vault
        .verify(&ctx, VerifyRequest::new(unknown.expose_secret()))
        .expect("verify");
    c.bench_function("verify NOT_FOUND, wrong secret of a known id", |b| {
        b.iter(|| {
            vault
                .verify(&ctx, VerifyRequest::new(wrong.expose_secret()))
                .expect("verify")
        })
    });
    c.bench_function("verify NOT_FOUND, unknown id", |b| {
        b.iter(|| {
            vault
                .verify(&ctx, VerifyRequest::new(unknown.expose_secret()))
                .expect("verify")
        })
    });
    drop(vault);
    cache_miss(c, &tmp.path().join("vault"));
}

/// What a key that is not cached costs: a verify of it against one of a key in the cache, in a
/// vault whose cache holds 16 keys while 1,024 are stored, so that going round them always
/// misses. The verifies are throttled and present a wrong secret: the key is looked up, read
/// and checked as always, but no audit entry is written, whose fdatasync would hide the
/// difference.
fn cache_miss(c: &mut Criterion, dir: &std::path::Path) {
    let options = VaultOptions {
        keys_cached: 16,
        ..VaultOptions::default()
    };
    let vault = Vault::open_with(dir, &options).expect("open");
    let ctx = Context::embedded();
    vault
        .unseal_passphrase(&ctx, &Passphrase::new("bench passphrase"))
        .expect("unseal");
    let prefix = vault.prefix();
    let ids: Vec<_> = std::thread::scope(|s| {
        let makers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    (0..64)
                        .map(|_| {
                            let mut new = NewKey::new("bench");
                            new.scopes = vec!["photos:read".into(), "photos:write".into()];
                            vault.create_key(&ctx, new).expect("create").key.id()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        makers
            .into_iter()
            .flat_map(|m| m.join().expect("maker"))
            .collect()
    });
    let wrong: Vec<String> = ids
        .iter()
        .map(|id| {
            let key = ApiKey::new(prefix, *id, vault_core::apikey::KeySecret::random());
            key.expose_secret_text().expose_secret().to_owned()
        })
        .collect();
    let mut i = 0;
    c.bench_function(
        "verify of a key not in the cache (store read, decrypt)",
        |b| {
            b.iter(|| {
                i = (i + 1) % wrong.len();
                vault
                    .verify_throttled(&ctx, VerifyRequest::new(&wrong[i]))
                    .expect("verify")
            })
        },
    );
    c.bench_function("verify of a key in the cache", |b| {
        b.iter(|| {
            vault
                .verify_throttled(&ctx, VerifyRequest::new(&wrong[0]))
                .expect("verify")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = pieces
}
criterion_main!(benches);
