//! The web console's page times at a million keys (DESIGN section 8: every console page answers
//! in <= 200 ms of server time at 1 M keys), against `GET /v1/sys/health` in the same run.
//!
//! `TMPDIR=/var/tmp cargo bench -p vault-server --bench console_pages`
//!
//! Environment: `CONSOLE_BENCH_KEYS` (default 1,000,000), `CONSOLE_BENCH_ROUNDS` (default 30),
//! `CONSOLE_BENCH_VAULT` (a vault made by `bench_vault` to use instead; it is opened with that
//! example's passphrase, and a vault made by a build without the name index builds it in the
//! background after this unseal; the run waits for it and prints its time).
//!
//! The vault is made once and kept at `$TMPDIR/keyvault-console-KEYS` (keys of the typical
//! shape, as `bench_vault` makes them: 5,000 owners, every key named "photo uploads", so a
//! search by that name is the worst case of the name index), with its first key's text beside
//! it. Each run opens and unseals it in process, waits for the key cache's warm after unseal
//! (pages are timed in the steady state), gives the first key a few verifies (its page's
//! chart has figures) and a name no other key has, makes an admin token, serves the real router
//! on 127.0.0.1:0 and signs in through the sign-in form. Then, round after round, it asks for
//! every page in turn on a fresh connection (so load on the shared machine falls on every page
//! alike) and reports each page's median and p99 from the request's start to its body's end: the
//! server's time plus the loopback's, which the health figure shows.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use tokio::net::{TcpListener, TcpStream};
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{KeyUpdate, NewKey, VerifyRequest};
use vault_core::tokens::Role;
use vault_core::{Context, UnsealMethod, Vault};
use vault_server::{AppState, ServerConfig};

/// `bench_vault`'s passphrase, so that its vaults can be used here.
const PASSPHRASE: &str = "benchmark passphrase";

/// The name given to the first key: no other key has it.
const UNIQUE_NAME: &str = "console-bench-unique";

/// DESIGN section 8's bound on a console page's server time.
const TARGET: Duration = Duration::from_millis(200);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn side(dir: &Path, ext: &str) -> PathBuf {
    let mut path = dir.as_os_str().to_owned();
    path.push(ext);
    PathBuf::from(path)
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Makes a vault of `keys` typical keys in `dir` from 64 threads, as `bench_vault` does, and
/// writes the first key's text to `DIR.keys`.
fn make_vault(dir: &Path, keys: usize) -> Result<(), Box<dyn std::error::Error>> {
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new(PASSPHRASE),
        params: KdfParams::DEFAULT,
    };
    let (vault, _) = Vault::init(dir, &method, &Prefix::default())?;
    let start = Instant::now();
    let first = Arc::new(Mutex::new(None));
    let threads = 64;
    let per = keys.div_ceil(threads);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (vault, first) = (vault.clone(), Arc::clone(&first));
            std::thread::spawn(move || -> Result<(), vault_core::Error> {
                let ctx = Context::embedded();
                for i in t * per..((t + 1) * per).min(keys) {
                    let mut new = NewKey::new(format!("customer-{}", i % 5000));
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
                    if i == 0
                        && let Ok(mut first) = first.lock()
                    {
                        *first = Some(issued.key.expose_secret_text().expose_secret().to_owned());
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a creating thread panicked")??;
    }
    let first = first
        .lock()
        .map_err(|_| "a creating thread panicked")?
        .take();
    std::fs::write(side(dir, ".keys"), first.ok_or("no key was made")? + "\n")?;
    println!(
        "made {keys} keys in {:.1} s in {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// A signed-in client of the served console.
struct Client {
    addr: std::net::SocketAddr,
    cookies: Vec<(String, String)>,
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Client {
    async fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Reply {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let host = self.addr.to_string();
        let cookie = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &host)
            .header("cookie", cookie);
        if form.is_some() {
            req = req
                .header("origin", format!("http://{host}"))
                .header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        for set in parts.headers.get_all("set-cookie") {
            let Some((pair, _)) = set.to_str().unwrap_or_default().split_once(';') else {
                continue;
            };
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(n, _)| n != name);
                if !value.is_empty() {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn sign_in(&mut self, token: &str) {
        let page = self.send(Method::GET, "/ui/sign-in", None).await;
        let html = String::from_utf8_lossy(&page.body).into_owned();
        let marker = r#"name="csrf" value=""#;
        let at = html
            .find(marker)
            .expect("the sign-in form has a csrf field")
            + marker.len();
        let csrf = &html[at..at + html[at..].find('"').expect("a closed attribute")];
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", csrf)
            .append_pair("token", token)
            .finish();
        let reply = self.send(Method::POST, "/ui/sign-in", Some(form)).await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "sign-in: {:?}",
            reply.headers
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = env_number("CONSOLE_BENCH_KEYS", 1_000_000);
    let rounds = env_number("CONSOLE_BENCH_ROUNDS", 30).max(1);
    let tmp = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = match std::env::var_os("CONSOLE_BENCH_VAULT") {
        Some(dir) => PathBuf::from(dir),
        None => tmp.join(format!("keyvault-console-{keys}")),
    };
    if !side(&dir, ".keys").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        make_vault(&dir, keys)?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "vault {} (load average at start: {})",
        dir.display(),
        load.trim()
    );

    let store_before = bytes_under(&dir.join("store"));
    let start = Instant::now();
    let vault = Vault::open(&dir)?;
    let opened = start.elapsed();
    let start = Instant::now();
    vault.unseal_passphrase(&Context::embedded(), &Passphrase::new(PASSPHRASE))?;
    let unsealed = start.elapsed();
    let store_after = bytes_under(&dir.join("store"));
    println!(
        "open {}, unseal {}, store {} B -> {} B",
        ms(opened),
        ms(unsealed),
        store_before,
        store_after
    );
    // A vault made before the name index builds it in the background: name searches wait.
    let start = Instant::now();
    while vault.name_index_building() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !vault.name_index_ready()? {
        return Err("the name index build failed (see the log)".into());
    }
    println!(
        "name index ready after {:.1} s more (store {} B)",
        start.elapsed().as_secs_f64(),
        bytes_under(&dir.join("store"))
    );
    let start = Instant::now();
    while vault.key_cache_warming() {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("key cache warmed in {:.1} s", start.elapsed().as_secs_f64());

    let ctx = Context::embedded();
    let text = std::fs::read(side(&dir, ".keys"))?
        .lines()
        .next()
        .ok_or("no key text")??;
    let mut key_id = None;
    for _ in 0..50 {
        let verdict = vault.verify(&ctx, VerifyRequest::new(&text))?;
        key_id = verdict.key_id;
    }
    let key_id = key_id.ok_or("the first key does not verify")?;
    let owner = vault.show_key(&key_id)?.owner;
    let rename = KeyUpdate {
        name: Some(UNIQUE_NAME.into()),
        ..KeyUpdate::default()
    };
    vault.update_key(&ctx, &key_id, rename)?;
    let admin = vault.create_token(&ctx, None, Role::Admin, "console bench", None)?;
    let admin = admin.token.expose_secret_text().expose_secret().to_owned();

    let owner_q = form_urlencoded::byte_serialize(owner.as_bytes()).collect::<String>();
    let pages: Vec<(&str, String)> = vec![
        ("GET /v1/sys/health (baseline)", "/v1/sys/health".into()),
        ("overview", "/ui/".into()),
        ("keys, first page", "/ui/keys".into()),
        (
            "keys, a later page (cursor mid-way)",
            "/ui/keys?owner=&status=&after=800000000000000000000000".into(),
        ),
        (
            "keys by status (disabled, none are)",
            "/ui/keys?status=disabled".into(),
        ),
        ("keys by owner", format!("/ui/keys?owner={owner_q}")),
        (
            "keys by owner, revoked",
            format!("/ui/keys?owner={owner_q}&status=revoked"),
        ),
        (
            "keys by name (every key's)",
            "/ui/keys?name=photo+uploads".into(),
        ),
        (
            "keys by name (one key's)",
            format!("/ui/keys?name={UNIQUE_NAME}"),
        ),
        (
            "keys by owner and name",
            format!("/ui/keys?owner={owner_q}&name=photo+uploads"),
        ),
        ("a key's page, with its chart", format!("/ui/keys/{key_id}")),
        ("signals", "/ui/signals".into()),
        ("audit", "/ui/audit".into()),
        ("tokens", "/ui/tokens".into()),
    ];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let times = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = AppState::new(vault.clone()).with_config(ServerConfig::default());
        tokio::spawn(vault_server::serve(listener, state, std::future::pending()));
        let mut client = Client {
            addr,
            cookies: Vec::new(),
        };
        client.sign_in(&admin).await;
        let mut times = vec![Vec::with_capacity(rounds); pages.len()];
        // One round unrecorded: first uses fill what later ones find ready.
        for round in 0..=rounds {
            for (n, (label, path)) in pages.iter().enumerate() {
                let start = Instant::now();
                let reply = client.send(Method::GET, path, None).await;
                let took = start.elapsed();
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "{label} ({path}): {}",
                    String::from_utf8_lossy(&reply.body)
                );
                // A page timed must be the page, not the sign-in form a lost session gets.
                let html = String::from_utf8_lossy(&reply.body);
                assert!(
                    !html.contains(r#"action="/ui/sign-in""#),
                    "{label}: not signed in"
                );
                if round == 0 {
                    let rows = html.matches("<tr>").count();
                    println!("{label}: {} bytes, {rows} table rows", reply.body.len());
                }
                if round > 0 {
                    times[n].push(took);
                }
            }
        }
        times
    });

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n{rounds} rounds; load average at the end: {}",
        load.trim()
    );
    println!("| page | median | p99 | target | met |");
    println!("| --- | --- | --- | --- | --- |");
    let mut out = std::io::stdout().lock();
    for ((label, _), mut t) in pages.iter().zip(times) {
        t.sort();
        let (median, p99) = (percentile(&t, 0.5), percentile(&t, 0.99));
        let met = if label.starts_with("GET /v1/sys/health") {
            "—"
        } else if p99 <= TARGET {
            "yes"
        } else {
            "**no**"
        };
        writeln!(
            out,
            "| {label} | {} | {} | ≤ 200 ms | {met} |",
            ms(median),
            ms(p99)
        )?;
    }
    Ok(())
}
