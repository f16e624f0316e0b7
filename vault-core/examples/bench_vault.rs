//! Makes a vault for the HTTP benchmark: `keys` keys of the typical shape of DESIGN section 8
//! (owner, name, 3 scopes, about 100 bytes of meta), a verifier token, and the files that
//! `keyvault serve` and the load generators read.
//!
//! `cargo run --release -p vault-core --example bench_vault -- DIR KEYS [SHAPE]`
//!
//! SHAPE is `typical` (the default) or `bare` (an owner and nothing else: no name, scopes or
//! meta), to compare what a key's shape costs per verify.
//!
//! Writes, beside `DIR` (never inside it, so that the data directory stays a vault's own):
//! `DIR.passphrase` (for `keyvault serve --unseal-passphrase-file`), `DIR.token` (the verifier
//! token) and `DIR.keys` (one key per line). The passphrase is a fixed benchmark passphrase and
//! the Argon2id parameters are the defaults, so unsealing the served vault costs what it costs
//! in production. Keys are created by 64 threads, as a busy manager would.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::NewKey;
use vault_core::tokens::Role;
use vault_core::{Context, UnsealMethod, Vault};

const PASSPHRASE: &str = "benchmark passphrase";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(keys)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_vault DIR KEYS");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let keys: usize = keys.parse()?;
    let typical = match args.next().as_deref() {
        None | Some("typical") => true,
        Some("bare") => false,
        Some(other) => {
            eprintln!("unknown shape {other}: typical or bare");
            std::process::exit(2);
        }
    };
    let side = |ext: &str| {
        let mut path = dir.clone().into_os_string();
        path.push(ext);
        PathBuf::from(path)
    };
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new(PASSPHRASE),
        params: KdfParams::DEFAULT,
    };
    let (vault, _issued) = Vault::init(&dir, &method, &Prefix::default())?;
    let ctx = Context::embedded();
    let token = vault.create_token(&ctx, None, Role::Verifier, "benchmark", None)?;
    std::fs::write(
        side(".token"),
        token.token.expose_secret_text().expose_secret(),
    )?;
    std::fs::write(side(".passphrase"), PASSPHRASE)?;

    let start = Instant::now();
    let texts = Arc::new(Mutex::new(Vec::with_capacity(keys)));
    let threads = 64;
    let per = keys.div_ceil(threads);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (vault, texts) = (vault.clone(), Arc::clone(&texts));
            std::thread::spawn(move || -> Result<(), vault_core::Error> {
                let ctx = Context::embedded();
                let mine: Vec<String> = (t * per..((t + 1) * per).min(keys))
                    .map(|i| {
                        let mut new = NewKey::new(format!("customer-{}", i % 5000));
                        if !typical {
                            return Ok(vault
                                .create_key(&ctx, new)?
                                .key
                                .expose_secret_text()
                                .expose_secret()
                                .to_owned());
                        }
                        new.name = "photo uploads".into();
                        new.scopes = vec![
                            "photos:read".into(),
                            "photos:write".into(),
                            "albums:read".into(),
                        ];
                        new.meta = serde_json::json!({
                            "plan": "pro", "region": "eu-west", "note": "x".repeat(60)
                        })
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                        let issued = vault.create_key(&ctx, new)?;
                        Ok(issued.key.expose_secret_text().expose_secret().to_owned())
                    })
                    .collect::<Result<_, vault_core::Error>>()?;
                // A poisoned list means another worker panicked; its panic is reported at join.
                if let Ok(mut texts) = texts.lock() {
                    texts.extend(mine);
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a creating thread panicked")??;
    }
    let texts = texts.lock().map_err(|_| "a creating thread panicked")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(side(".keys"))?);
    for text in texts.iter() {
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    println!(
        "created {} keys in {:.1} s ({:.0} keys/s) in {}",
        texts.len(),
        start.elapsed().as_secs_f64(),
        texts.len() as f64 / start.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}
