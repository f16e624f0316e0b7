//! `keyvault key import FILE.jsonl`: brings existing keys into the vault, a batch a request.
//!
//! Each line of the file is one JSON object: the key's text (`key`) or the lowercase hex
//! SHA-256 of its text (`sha256`), with the fields of `POST /v1/keys` (`owner`, `name`,
//! `scopes`, `meta`, `expires_at` or `ttl_seconds`, `enabled`, `ratelimit`, `credits`). Blank
//! lines are skipped. The lines are sent as they are, up to 1,000 (and 1.5 MiB) a request, and
//! the vault checks them as create does.
//!
//! Resuming: the vault imports a key once (by its text's hash) and answers `exists` for one it
//! already holds, so running the same file again after a failure or a `kill -9` goes on where
//! the earlier run stopped and duplicates nothing; the summary says how many keys were already
//! there. Nothing is kept on this side: the vault is the record of what was imported (a local
//! note could disagree with it, after a restore say).
//!
//! A line's text never appears in an error: a line that is not a JSON object is named by its
//! number only, and the vault's errors name the key by its place (`keys[i]`), turned back into
//! the line number here.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use zeroize::Zeroize;

use crate::client::{check, client};
use crate::output::{Out, bar};

/// Most keys a request (the vault's limit).
const BATCH_KEYS: usize = 1000;
/// Most bytes of keys a request, well under the vault's 2 MiB body limit.
const BATCH_BYTES: usize = 1536 * 1024;

/// `keyvault key import FILE`.
pub fn import(file: &Path, out: &Out) -> anyhow::Result<ExitCode> {
    let total = count_lines(file)?;
    let reader =
        BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let client = client(&out.client)?;
    let progress = bar("keys", total);
    let mut batch = Batch::default();
    let (mut imported, mut existed) = (0u64, 0u64);
    let mut send = |batch: &mut Batch| -> anyhow::Result<()> {
        let body = json!({ "keys": std::mem::take(&mut batch.keys) });
        let lines = std::mem::take(&mut batch.lines);
        batch.bytes = 0;
        let response = client.send("POST", "/v1/keys/import", Some(&body), &[]);
        wipe(body);
        let response = response?;
        check(&response).map_err(|e| with_line_numbers(e, &lines))?;
        let answer = response.json()?;
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        if results.len() != lines.len() {
            bail!(
                "the vault answered {} results for {} keys",
                results.len(),
                lines.len()
            );
        }
        for (line, result) in lines.iter().zip(&results) {
            let status = result["status"].as_str().unwrap_or("?");
            match status {
                "imported" => imported += 1,
                _ => existed += 1,
            }
            let key_id = result["key_id"].as_str().unwrap_or("?");
            let row = json!({ "line": line, "status": status, "key_id": key_id });
            let print = || out.value(&row, || format!("line {line}: {status} key {key_id}"));
            match &progress {
                Some(p) => p.suspend(print),
                None => print(),
            }
        }
        if let Some(p) = &progress {
            p.inc(lines.len() as u64);
        }
        Ok(())
    };
    for (n, line) in reader.lines().enumerate() {
        let n = n + 1;
        let mut text = line.with_context(|| format!("reading line {n} of {}", file.display()))?;
        if text.trim().is_empty() {
            text.zeroize();
            continue;
        }
        // The line may hold a key: its text is never repeated in the error.
        let parsed: Result<Map<String, Value>, _> = serde_json::from_str(&text);
        let bytes = text.len();
        text.zeroize();
        let Ok(object) = parsed else {
            bail!(
                "line {n}: not a JSON object (one key a line: {{\"key\" or \"sha256\", \"owner\", ...}})"
            );
        };
        if batch.keys.len() == BATCH_KEYS || batch.bytes + bytes > BATCH_BYTES {
            send(&mut batch)?;
        }
        batch.keys.push(Value::Object(object));
        batch.lines.push(n);
        batch.bytes += bytes;
    }
    if !batch.keys.is_empty() {
        send(&mut batch)?;
    }
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    let summary = json!({ "imported": imported, "exists": existed });
    let text = if existed > 0 && imported > 0 {
        format!(
            "imported {imported} keys; {existed} were already in the vault (resumed after an earlier run)"
        )
    } else if existed > 0 {
        format!("nothing to import: all {existed} keys were already in the vault")
    } else {
        format!("imported {imported} keys")
    };
    if out.json {
        eprintln!("{text}");
        println!("{}", json!({ "summary": summary }));
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Keys waiting to be sent, and the line each came from.
#[derive(Default)]
struct Batch {
    keys: Vec<Value>,
    lines: Vec<usize>,
    bytes: usize,
}

/// Wipes the key texts of a request body once sent.
fn wipe(body: Value) {
    if let Value::Object(mut body) = body
        && let Some(Value::Array(keys)) = body.remove("keys")
    {
        for key in keys {
            if let Value::Object(mut key) = key {
                for field in ["key", "sha256"] {
                    if let Some(Value::String(mut s)) = key.remove(field) {
                        s.zeroize();
                    }
                }
            }
        }
    }
}

/// The vault's `keys[i]` turned into `line N`, the line that key came from.
fn with_line_numbers(error: anyhow::Error, lines: &[usize]) -> anyhow::Error {
    let message = error.to_string();
    let Some(at) = message.find("keys[") else {
        return error;
    };
    let rest = &message[at + "keys[".len()..];
    let Some((index, rest)) = rest.split_once(']') else {
        return error;
    };
    match index.parse::<usize>().ok().and_then(|i| lines.get(i)) {
        Some(line) => anyhow::anyhow!("{}line {line}{rest}", &message[..at]),
        None => error,
    }
}

/// Lines that hold something, for the progress bar.
fn count_lines(file: &Path) -> anyhow::Result<u64> {
    let reader =
        BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let mut n = 0;
    for line in reader.lines() {
        let mut line = line.with_context(|| format!("reading {}", file.display()))?;
        if !line.trim().is_empty() {
            n += 1;
        }
        line.zeroize();
    }
    Ok(n)
}
