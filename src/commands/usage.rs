//! Usage and signals: `keyvault key usage` (a key's daily usage as a chart, and its signals),
//! `keyvault signals`, and `keyvault operator usage-rebuild` (on a stopped vault's data
//! directory).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use vault_core::Vault;

use crate::cli::ClientArgs;
use crate::client::{check_id, client, query};
use crate::config::Config;
use crate::output::{Out, date, date_time, spinner};

const DAY: u64 = 86_400;
/// Width of the longest bar.
const BAR_WIDTH: usize = 40;
/// Eighths of a block, for bars and the sparkline.
const EIGHTHS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Fetches the last `days` days of key `id` (per day) and its signals; prints a chart, or with
/// `--json` `{"usage": <report>, "signals": [...]}`.
pub fn key_usage(c: &ClientArgs, id: &str, days: u64, out: &Out) -> anyhow::Result<ExitCode> {
    let id = check_id(id)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = now - now % DAY + DAY;
    let from = to.saturating_sub(days * DAY);
    let client = client(c)?;
    let path = format!(
        "/v1/keys/{id}/usage{}",
        query(&[
            ("bucket", Some("day".to_owned())),
            ("from", Some(from.to_string())),
            ("to", Some(to.to_string())),
        ])
    );
    let usage = client.call("GET", &path, None)?;
    let signals = client.call("GET", &format!("/v1/keys/{id}/signals"), None)?;
    let value = json!({ "usage": usage, "signals": signals["signals"] });
    out.value(&value, || render(&usage, &signals["signals"]));
    Ok(ExitCode::SUCCESS)
}

fn render(usage: &Value, signals: &Value) -> String {
    let totals = &usage["totals"];
    let buckets = usage["buckets"].as_array().cloned().unwrap_or_default();
    let totals_of = |b: &Value| b["total"].as_u64().unwrap_or(0);
    let valid = |b: &Value| b["counts"]["VALID"].as_u64().unwrap_or(0);
    let mut s = format!(
        "key {} of {}: {} verifies in {} days ({} valid), {} credits spent, {} client address{}",
        usage["key_id"].as_str().unwrap_or("?"),
        usage["owner"].as_str().unwrap_or("?"),
        totals_of(totals),
        buckets.len(),
        valid(totals),
        totals["credits_spent"].as_u64().unwrap_or(0),
        totals["distinct_clients"].as_u64().unwrap_or(0),
        if totals["distinct_clients"] == 1 {
            ""
        } else {
            "es"
        },
    );
    let counts: Vec<u64> = buckets.iter().map(totals_of).collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    let span = match (buckets.first(), buckets.last()) {
        (Some(first), Some(last)) => format!(
            "{} to {}",
            date(first["start"].as_u64().unwrap_or(0)),
            date(last["start"].as_u64().unwrap_or(0))
        ),
        _ => "no days".to_owned(),
    };
    let _ = write!(
        s,
        "\n\nverifies per day, {span} (highest {max}): {}\n",
        sparkline(&counts, max)
    );
    for b in &buckets {
        let n = totals_of(b);
        let mut others: Vec<String> = b["counts"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(code, _)| *code != "VALID")
                    .map(|(code, n)| format!("{} {}", code.to_lowercase(), n))
                    .collect()
            })
            .unwrap_or_default();
        if b["credits_spent"].as_u64().unwrap_or(0) > 0 {
            others.push(format!("{} credits", b["credits_spent"]));
        }
        let note = if others.is_empty() {
            String::new()
        } else {
            format!("  ({})", others.join(", "))
        };
        let _ = writeln!(
            s,
            "{}  {:<width$} {n}{note}",
            date(b["start"].as_u64().unwrap_or(0)),
            bar(n, max),
            width = BAR_WIDTH
        );
    }
    let signals = signals.as_array().cloned().unwrap_or_default();
    if signals.is_empty() {
        s.push_str("\nno suspicious activity");
    } else {
        s.push_str("\nsignals (review these; if in doubt, rotate the key):");
        for sig in &signals {
            s.push_str("\n  ");
            s.push_str(&signal_line(sig));
        }
    }
    s
}

/// One signal on one line: kind, count, when, from where, and its figures.
fn signal_line(sig: &Value) -> String {
    let first = sig["first_at_ms"].as_u64().unwrap_or(0) / 1000;
    let last = sig["last_at_ms"].as_u64().unwrap_or(0) / 1000;
    let clients: Vec<&str> = sig["clients"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut s = format!(
        "{} x{}  {} to {}",
        sig["kind"].as_str().unwrap_or("?"),
        sig["count"],
        date_time(first),
        date_time(last),
    );
    if !clients.is_empty() {
        let _ = write!(s, "  from {}", clients.join(", "));
    }
    if let Some(b) = sig["baseline_per_hour"].as_u64() {
        let _ = write!(s, "  (usual: {b} an hour)");
    }
    if let Some(t) = sig["previous_secret_expires_at"].as_u64() {
        let _ = write!(s, "  (old secret ends {})", date_time(t));
    }
    s
}

/// `keyvault signals`: the open suspicious-activity signals (of one owner's keys, or of all,
/// then with the failures no key is named in), oldest first; `--json` gives the API's answer.
pub fn signals(
    c: &ClientArgs,
    owner: Option<&str>,
    since: Option<&str>,
    out: &Out,
) -> anyhow::Result<ExitCode> {
    let client = client(c)?;
    let path = format!(
        "/v1/signals{}",
        query(&[
            ("owner", owner.map(str::to_owned)),
            ("since", since.map(str::to_owned)),
        ])
    );
    let answer = client.call("GET", &path, None)?;
    out.value(&answer, || {
        let list = answer["signals"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return "no open signals".to_owned();
        }
        let mut s = format!(
            "{} open signal{} (review these; if in doubt, rotate the key):",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        );
        for sig in &list {
            let subject = match (sig["key_id"].as_str(), sig["owner"].as_str()) {
                (Some(key), Some(owner)) => format!("key {key} of {owner}"),
                (Some(key), None) => format!("key {key}"),
                _ => "the vault".to_owned(),
            };
            let _ = write!(s, "\n  {subject}: {}", signal_line(sig));
        }
        s
    });
    Ok(ExitCode::SUCCESS)
}

/// `keyvault operator usage-rebuild`: recomputes the usage figures of the stopped vault in
/// `data_dir` from its whole audit log and stores them.
pub fn rebuild(data_dir: &Path, config: Option<&Path>, out: &Out) -> anyhow::Result<ExitCode> {
    let thresholds = match config {
        Some(path) => Config::read(path)?.usage,
        None => vault_core::usage::Thresholds::default(),
    };
    let options = vault_core::VaultOptions {
        usage: true,
        thresholds,
        ..vault_core::VaultOptions::default()
    };
    let vault = Vault::open_with(data_dir, &options).with_context(|| {
        format!(
            "opening the vault in {} (stop its server first)",
            data_dir.display()
        )
    })?;
    let spinner = spinner("recomputing usage from the audit log");
    let entries = vault
        .rebuild_usage()
        .context("rebuilding the usage figures")?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let value = json!({ "entries": entries });
    out.value(&value, || {
        format!("usage summaries and signals rebuilt from {entries} audit entries")
    });
    Ok(ExitCode::SUCCESS)
}

/// A bar of `n` against `max` in eighths of a block.
fn bar(n: u64, max: u64) -> String {
    if n == 0 || max == 0 {
        return String::new();
    }
    let eighths = (u128::from(n) * (BAR_WIDTH as u128) * 8).div_ceil(u128::from(max)) as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(EIGHTHS[eighths % 8 - 1]);
    }
    s
}

/// One character per value, scaled to `max`; a blank for zero.
fn sparkline(values: &[u64], max: u64) -> String {
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let i = (u128::from(v) * 8).div_ceil(u128::from(max)) as usize;
                SPARKS[i.clamp(1, 8) - 1]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_bars_and_sparklines() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_868_800), "2000-03-01");
        assert_eq!(date_time(1_764_158_400 + 3_660), "2025-11-26 13:01 UTC");
        assert_eq!(bar(0, 10), "");
        assert_eq!(bar(10, 10).chars().count(), BAR_WIDTH);
        assert_eq!(bar(1, 80), "▌");
        assert_eq!(sparkline(&[0, 1, 4, 8], 8), " ▁▄█");
    }

    #[test]
    fn renders_a_report_and_its_signals() {
        let usage = json!({
            "key_id": "0a0b0c0d0e0f101112131415", "owner": "alice",
            "totals": {"total": 3, "counts": {"VALID": 2, "NOT_FOUND": 1}, "credits_spent": 0, "distinct_clients": 2},
            "buckets": [
                {"start": 1_764_115_200, "total": 0, "counts": {}, "credits_spent": 0},
                {"start": 1_764_201_600, "total": 3, "counts": {"VALID": 2, "NOT_FOUND": 1}, "credits_spent": 0},
            ],
        });
        let signals = json!([{"kind": "wrong_secret", "count": 1, "first_at_ms": 1_764_201_600_000u64,
            "last_at_ms": 1_764_201_600_000u64, "clients": ["203.0.113.5"]}]);
        let text = render(&usage, &signals);
        assert!(text.contains("3 verifies in 2 days (2 valid)"), "{text}");
        assert!(text.contains("2025-11-27  ████"), "{text}");
        assert!(text.contains("(not_found 1)"), "{text}");
        assert!(
            text.contains("wrong_secret x1  2025-11-27 00:00 UTC"),
            "{text}"
        );
        assert!(text.contains("from 203.0.113.5"), "{text}");
        assert!(render(&usage, &json!([])).ends_with("no suspicious activity"));
    }
}
