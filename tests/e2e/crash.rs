//! Crash consistency: the real server killed with SIGKILL under load, restarted, checked.

use crate::support::{http, init_passphrase_vault, json_of, serve_unsealed};

/// What the workers saw acknowledged for one key.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    text: String,
    revoked: bool,
    credits: Option<u64>,
    /// A rotation was sent but not answered (the server died): it may or may not have
    /// happened, so `text` may be the current secret, the previous one, or (after two such
    /// rotations) neither.
    uncertain: bool,
}

/// Crash consistency: the real server under a mixed load (create, verify with credits, rotate,
/// revoke) is killed with SIGKILL at random moments. After each restart every acknowledged
/// write is there, credits never went up, every record reads back whole, and the audit log
/// verifies. `KEYVAULT_CRASH_CYCLES` sets the number of kills (default 3; see BENCHMARKS.md for
/// the long run).
#[test]
fn acknowledged_writes_survive_sigkill_of_the_server_under_load() {
    use std::sync::{Arc, Mutex};
    let cycles: u32 = std::env::var("KEYVAULT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let verifier =
        vault_core::audit::note::NoteVerifier::parse(init["public_key"].as_str().unwrap()).unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let keys: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut acknowledged_ops = 0u64;
    for cycle in 0..cycles {
        let server = serve_unsealed(&data, &pass);
        let addr = server.1.clone();
        check_after_restart(
            &addr,
            &root,
            &mut keys.lock().unwrap(),
            &verifier,
            acknowledged_ops,
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, root, keys, stop) = (
                    addr.clone(),
                    root.clone(),
                    Arc::clone(&keys),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    let mut acked = 0u64;
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        // Each worker owns the keys it made (index % 4 == w): one op in flight per key.
                        let mine: Vec<(usize, Acked)> = keys
                            .lock()
                            .unwrap()
                            .iter()
                            .cloned()
                            .enumerate()
                            .filter(|(n, k)| n % 4 == w && !k.revoked)
                            .collect();
                        let op = if mine.is_empty() { 0 } else { i % 5 };
                        let pick = mine.get((i as usize) % mine.len().max(1)).cloned();
                        match (op, pick) {
                            (0, _) => {
                                let body =
                                    format!("{{\"owner\":\"crash-{cycle}\",\"credits\":1000}}");
                                let Some((201, r)) =
                                    http(&addr, "POST", "/v1/keys", &root, Some(&body))
                                else {
                                    break;
                                };
                                let v = json_of(&r);
                                let mut keys = keys.lock().unwrap();
                                // Keep the worker-ownership rule: pad so the new key lands on one of ours.
                                while keys.len() % 4 != w {
                                    let filler = Acked {
                                        id: String::new(),
                                        text: String::new(),
                                        revoked: true,
                                        credits: None,
                                        uncertain: false,
                                    };
                                    keys.push(filler);
                                }
                                keys.push(Acked {
                                    id: v["key_id"].as_str().unwrap().into(),
                                    text: v["key"].as_str().unwrap().into(),
                                    revoked: false,
                                    credits: Some(1000),
                                    uncertain: false,
                                });
                            }
                            (1 | 2, Some((n, k))) if !k.uncertain => {
                                let body = format!("{{\"key\":\"{}\",\"cost\":1}}", k.text);
                                let Some((200, r)) =
                                    http(&addr, "POST", "/v1/keys/verify", &root, Some(&body))
                                else {
                                    break;
                                };
                                let v = json_of(&r);
                                assert_eq!(v["code"], "VALID", "{r}");
                                keys.lock().unwrap()[n].credits = v["credits_remaining"].as_u64();
                            }
                            (3, Some((n, k))) if !k.uncertain => {
                                let path = format!("/v1/keys/{}/rotate", k.id);
                                let Some((200, r)) = http(
                                    &addr,
                                    "POST",
                                    &path,
                                    &root,
                                    Some("{\"grace_seconds\":3600}"),
                                ) else {
                                    keys.lock().unwrap()[n].uncertain = true;
                                    break;
                                };
                                keys.lock().unwrap()[n].text =
                                    json_of(&r)["key"].as_str().unwrap().into();
                            }
                            (4, Some((n, k))) if n % 3 == 0 && !k.uncertain => {
                                let path = format!("/v1/keys/{}/revoke", k.id);
                                let Some((200, _)) = http(&addr, "POST", &path, &root, None) else {
                                    keys.lock().unwrap()[n].uncertain = true;
                                    break;
                                };
                                keys.lock().unwrap()[n].revoked = true;
                            }
                            _ => continue,
                        }
                        acked += 1;
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200 + random(600)));
        drop(server); // SIGKILL
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            acknowledged_ops += w.join().unwrap();
        }
    }
    let server = serve_unsealed(&data, &pass);
    check_after_restart(
        &server.1,
        &root,
        &mut keys.lock().unwrap(),
        &verifier,
        acknowledged_ops,
    );
    let made = keys
        .lock()
        .unwrap()
        .iter()
        .filter(|k| !k.id.is_empty())
        .count();
    assert!(made > 0 && acknowledged_ops > 0, "the load did nothing");
    eprintln!(
        "crash consistency: {cycles} kills, {acknowledged_ops} acknowledged operations, {made} keys checked after each restart"
    );
}

fn check_after_restart(
    addr: &str,
    root: &str,
    keys: &mut [Acked],
    verifier: &vault_core::audit::note::NoteVerifier,
    acknowledged_ops: u64,
) {
    for k in keys.iter_mut().filter(|k| !k.id.is_empty()) {
        let (status, body) = http(addr, "GET", &format!("/v1/keys/{}", k.id), root, None).unwrap();
        assert_eq!(status, 200, "acknowledged key {} is missing: {body}", k.id);
        let info = json_of(&body);
        if k.revoked {
            assert_eq!(info["status"], "revoked", "an acknowledged revoke was lost");
            continue;
        }
        // Credits never go up: at most what the last acknowledged spend left.
        if let (Some(acked), Some(now)) = (k.credits, info["credits"].as_u64()) {
            assert!(
                now <= acked,
                "credits went up for {}: {acked} acknowledged, {now} after restart",
                k.id
            );
        }
        if k.uncertain && info["status"] == "revoked" {
            // An unanswered revoke that happened.
            k.revoked = true;
            k.uncertain = false;
            continue;
        }
        if k.uncertain {
            // Learn the key's secret again with an acknowledged rotation.
            let path = format!("/v1/keys/{}/rotate", k.id);
            let (status, r) =
                http(addr, "POST", &path, root, Some("{\"grace_seconds\":3600}")).unwrap();
            assert_eq!(status, 200, "{r}");
            k.text = json_of(&r)["key"].as_str().unwrap().into();
            k.uncertain = false;
        }
        // The last acknowledged secret still verifies (rotations keep an hour of grace).
        let body = format!("{{\"key\":\"{}\",\"cost\":0}}", k.text);
        let (_, r) = http(addr, "POST", "/v1/keys/verify", root, Some(&body)).unwrap();
        assert_eq!(
            json_of(&r)["code"],
            "VALID",
            "acknowledged secret of {} no longer verifies: {r}",
            k.id
        );
    }
    // Every stored record reads back whole.
    let (status, body) = http(addr, "GET", "/v1/keys?limit=1000", root, None).unwrap();
    assert_eq!(status, 200, "{body}");
    for k in json_of(&body)["keys"].as_array().unwrap() {
        let (status, body) = http(
            addr,
            "GET",
            &format!("/v1/keys/{}", k["key_id"].as_str().unwrap()),
            root,
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "a record does not read back: {body}");
    }
    // The audit log verifies and holds at least every acknowledged operation.
    let (status, export) = http(addr, "GET", "/v1/audit/export", root, None).unwrap();
    assert_eq!(status, 200);
    let export = dechunk(&export);
    let report =
        vault_core::audit::export::verify_export(export.as_bytes(), verifier, None, |_| {})
            .unwrap_or_else(|e| panic!("the audit log does not verify after a kill: {e}"));
    assert!(
        report.entries >= acknowledged_ops,
        "{} entries, {acknowledged_ops} acknowledged operations",
        report.entries
    );
}

/// Undoes HTTP/1.1 chunked transfer encoding.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}
