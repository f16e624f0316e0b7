//! `keyvault key import`: keys by their text and by their SHA-256 verify with their text, a
//! second run says `exists` per line and adds nothing, and a run killed with SIGKILL and run
//! again ends with every key exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{against, init_passphrase_vault, json_of, run, serve_unsealed};

const PLAIN: &str = "sk_live_e2e_import_4f9a0c1b2d3e";
const HASHED: &str = "legacy-e2e-hash-only-8b7a6c5d4e";

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Writes one JSON object a line.
fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The `--json` result lines of an import (every line but the summary), and the summary.
fn results(stdout: &str) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = stdout.lines().map(json_of).collect();
    let summary = lines.pop().expect("a summary line")["summary"].clone();
    (lines, summary)
}

#[test]
fn imported_keys_verify_by_their_text_and_a_second_run_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let root = Some(root.as_str());
    let server = serve_unsealed(&data, &pass);
    let addr = server.1.clone();
    let file = tmp.path().join("keys.jsonl");
    write_lines(
        &file,
        &[
            json!({"key": PLAIN, "owner": "alice", "scopes": ["photos:read"]}),
            json!({"sha256": sha256_hex(HASHED), "owner": "bob",
                   "credits": {"remaining": 5, "refill": {"amount": 5, "interval": "monthly", "day": 31}}}),
        ],
    );
    let (code, stdout, stderr) = run(
        &addr,
        root,
        &["--json", "key", "import", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    let (lines, summary) = results(&stdout);
    assert_eq!(summary, json!({"imported": 2, "exists": 0}));
    assert_eq!(
        (lines[0]["line"].as_u64(), lines[1]["line"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(lines.iter().all(|l| l["status"] == "imported"));

    let (code, stdout, _) = run(
        &addr,
        root,
        &["key", "verify", PLAIN, "--scope", "photos:read"],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("VALID: key"), "{stdout}");
    let (code, stdout, _) = run(&addr, root, &["--json", "key", "verify", HASHED]);
    assert_eq!(
        (code, &json_of(&stdout)["credits_remaining"]),
        (0, &json!(4))
    );
    let near = format!("{}Z", &PLAIN[..PLAIN.len() - 1]);
    let (code, stdout, _) = run(&addr, root, &["key", "verify", &near]);
    assert_eq!((code, stdout.trim()), (1, "NOT_FOUND"));

    // `key show` tells an imported key and its refill.
    let id = lines[1]["key_id"].as_str().unwrap();
    let (_, shown, _) = run(&addr, root, &["key", "show", id]);
    assert!(
        shown.contains("refilled to 5 monthly on day 31") && shown.contains("imported"),
        "{shown}"
    );

    // Again: each line exists, the same ids, and the human summary says so.
    let (code, stdout, stderr) = run(&addr, root, &["key", "import", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "line 1: exists key {}",
            lines[0]["key_id"].as_str().unwrap()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing to import: all 2 keys were already in the vault"),
        "{stdout}"
    );
    assert_eq!(key_count(&addr, root), 2);

    // A bad line is named by its number, never shown.
    write_lines(
        &file,
        &[
            json!({"key": PLAIN, "owner": "alice"}),
            json!({"key": "sk_bad_line_secret_x", "owner": ""}),
        ],
    );
    let (code, _, stderr) = run(&addr, root, &["key", "import", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 2: owner must be 1 to 128 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk_bad_line_secret_x"), "{stderr}");
    std::fs::write(&file, "{\"key\": \"sk_not_json_secret_y\", \n").unwrap();
    let (code, _, stderr) = run(&addr, root, &["key", "import", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 1: not a JSON object") && !stderr.contains("sk_not_json_secret_y"),
        "{stderr}"
    );
}

/// Every key in the vault, counted through `key list` pages.
fn key_count(addr: &str, token: Option<&str>) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--json", "key", "list", "--limit", "1000"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (code, stdout, stderr) = run(addr, token, &args);
        assert_eq!(code, 0, "{stderr}");
        let page = json_of(&stdout);
        count += page["keys"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return count,
        }
    }
}

#[test]
fn an_import_killed_with_sigkill_and_run_again_makes_every_key_once() {
    const KEYS: usize = 6000;
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let root = Some(root.as_str());
    let server = serve_unsealed(&data, &pass);
    let addr = server.1.clone();
    let file = tmp.path().join("many.jsonl");
    let lines: Vec<Value> = (0..KEYS)
        .map(|i| match i % 2 {
            0 => json!({"key": format!("legacy-live-{i:06}"), "owner": format!("c{}", i % 7)}),
            _ => json!({"sha256": sha256_hex(&format!("legacy-live-{i:06}")), "owner": "h"}),
        })
        .collect();
    write_lines(&file, &lines);

    // The first run is killed as soon as its first batch is answered.
    let mut child = against(&addr, root)
        .args(["--json", "key", "import", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(json_of(&first)["status"], "imported", "{first}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (code, stdout, stderr) = run(
        &addr,
        root,
        &["--json", "key", "import", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    let (results, summary) = results(&stdout);
    assert_eq!(results.len(), KEYS);
    let (imported, exists) = (
        summary["imported"].as_u64().unwrap(),
        summary["exists"].as_u64().unwrap(),
    );
    assert_eq!(imported + exists, KEYS as u64);
    assert!(
        exists >= 1000 && imported > 0,
        "the second run resumed: {summary}"
    );
    assert!(
        stderr.contains("already in the vault (resumed after an earlier run)"),
        "{stderr}"
    );
    assert_eq!(key_count(&addr, root), KEYS);
    for i in [0, 1, KEYS / 2, KEYS - 1] {
        let (code, stdout, _) = run(
            &addr,
            root,
            &["key", "verify", &format!("legacy-live-{i:06}")],
        );
        assert_eq!(code, 0, "key {i}: {stdout}");
    }
}
