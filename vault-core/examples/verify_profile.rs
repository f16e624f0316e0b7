//! Verifies a fixed number of keys of a vault made by the `bench_vault` example, from tasks on
//! a tokio runtime as the server does, and exits: a run of known size for callgrind, whose
//! instruction counts do not depend on the machine's load.
//!
//! `cargo run --release -p vault-core --example verify_profile -- DIR VERIFIES [TASKS]`
//!
//! Reads `DIR.passphrase` and `DIR.keys` beside `DIR`, unseals, waits until the key cache is
//! warm, then runs VERIFIES verifies (keys picked by a fixed multiplicative walk over the list,
//! so that two runs verify the same keys) from TASKS tasks (default 64). The cost of one verify
//! is the difference between two runs of different VERIFIES divided by the difference in
//! VERIFIES: opening, unsealing and warming cancel out. Or, with VERIFY_PROFILE_PAUSE=1, the
//! run prints `ready` once warm and `done` after the verifies, and waits for a line on standard
//! input after each, so that `callgrind_control --zero` and `--dump` can bracket the verifies.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vault_core::kdf::Passphrase;
use vault_core::keys::{AsyncVerify, VerifyRequest};
use vault_core::{Context, Vault};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(verifies)) = (args.next(), args.next()) else {
        eprintln!("usage: verify_profile DIR VERIFIES [TASKS]");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let verifies: u64 = verifies.parse()?;
    let tasks: u64 = args.next().map_or(Ok(64), |t| t.parse())?;
    let side = |ext: &str| {
        let mut path = dir.clone().into_os_string();
        path.push(ext);
        PathBuf::from(path)
    };
    let passphrase = std::fs::read_to_string(side(".passphrase"))?;
    let texts: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(side(".keys"))?
            .lines()
            .map(str::to_owned)
            .collect(),
    );
    if texts.is_empty() {
        return Err("no keys beside the vault".into());
    }

    let vault = Vault::open(&dir)?;
    vault.unseal_passphrase(&Context::embedded(), &Passphrase::new(passphrase.trim()))?;
    while vault.key_cache_warming() {
        std::thread::sleep(Duration::from_millis(10));
    }

    let pause = std::env::var("VERIFY_PROFILE_PAUSE").is_ok_and(|v| v == "1");
    let wait = |what: &str| -> std::io::Result<()> {
        if pause {
            println!("{what}");
            std::io::stdout().flush()?;
            std::io::stdin().read_line(&mut String::new())?;
        }
        Ok(())
    };
    wait("ready")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().build()?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (vault, texts, next) = (vault.clone(), Arc::clone(&texts), Arc::clone(&next));
            runtime.spawn(async move {
                let ctx = Context::embedded();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= verifies {
                        return Ok::<(), String>(());
                    }
                    let at = (i as usize).wrapping_mul(2_654_435_761) % texts.len();
                    let req = VerifyRequest::new(&texts[at]);
                    let verdict = vault.verify_async(&ctx, req, false).await;
                    let valid = match verdict.map_err(|e| e.to_string())? {
                        AsyncVerify::Verdict(v) => v.valid,
                        // Another verify of the same key holds its cache slot: on the blocking
                        // pool, as the server does.
                        AsyncVerify::MustBlock(pending) => {
                            let vault = vault.clone();
                            tokio::task::spawn_blocking(move || {
                                vault.finish_verify(&Context::embedded(), pending)
                            })
                            .await
                            .map_err(|_| "a blocking verify panicked".to_owned())?
                            .map_err(|e| e.to_string())?
                            .valid
                        }
                    };
                    if !valid {
                        return Err("a stored key was refused".to_owned());
                    }
                }
            })
        })
        .collect();
    runtime.block_on(async {
        for worker in workers {
            worker.await.map_err(|_| "a verifying task panicked")??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    wait("done")?;
    println!(
        "{verifies} verifies of {} keys from {tasks} tasks in {seconds:.2} s ({:.0}/s)",
        texts.len(),
        verifies as f64 / seconds
    );
    Ok(())
}
