//! Human or JSON output, tables and progress indicators.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::formatting::Formattable;
use time::macros::format_description;

/// The global flags: where results go (JSON lines for scripts, or text for people), and where
/// the server is and which token to send.
#[derive(Debug, Clone)]
pub struct Out {
    /// `--json` was given.
    pub json: bool,
    /// `--addr`, `--token-file`, `--token`, `--ca-cert` (and their environment variables).
    pub client: crate::cli::ClientArgs,
}

impl Out {
    /// The answer to an audit export (a node's or a cluster's) that does not verify: a JSON
    /// line and exit 1 with `--json`, else the error naming the file and line.
    pub fn not_verified(
        &self,
        file: &std::path::Path,
        e: &vault_core::audit::export::VerifyError,
    ) -> anyhow::Result<std::process::ExitCode> {
        if self.json {
            println!(
                "{}",
                serde_json::json!({ "verified": false, "line": e.line, "error": e.why })
            );
            return Ok(std::process::ExitCode::from(1));
        }
        anyhow::bail!(
            "NOT verified: {} line {}: {}",
            file.display(),
            e.line,
            e.why
        )
    }

    /// Prints `value` as JSON, or the text `human` makes of it.
    pub fn value(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }
}

/// A plain text table with a header row.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)".into();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push('\n');
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// A spinner on standard error when it is a terminal; none when piped.
pub fn spinner(message: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// A counter of items on standard error when it is a terminal; none when piped.
pub fn counter(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {{pos}} {what} ({{per_sec}})"
    )) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// A bar of `total` items on standard error when it is a terminal; none when piped.
pub fn bar(what: &str, total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{wide_bar}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
    )) {
        bar.set_style(style);
    }
    Some(bar)
}

/// A byte counter on standard error when it is a terminal (a bar when the total is known);
/// none when piped.
pub fn bytes_progress(message: &str, total: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} ({bytes_per_sec})",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// Runs `work` with a [`bytes_progress`] bar, which `work` moves by calling the function it is
/// given with the bytes done so far; the bar is cleared when `work` returns, whatever it
/// returns (a restore's progress, for one).
pub fn with_bytes_progress<T>(
    message: &str,
    total: Option<u64>,
    work: impl FnOnce(&dyn Fn(u64)) -> T,
) -> T {
    let bar = bytes_progress(message, total);
    let result = work(&|done| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = print_table(
            &["A", "BB"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq    22");
        assert_eq!(print_table(&["A"], &[]), "(none)");
    }
}

/// Unix seconds as people read them: RFC 3339 in UTC with how far that is from now,
/// `2030-01-31T12:00:00Z (in 59 minutes)`. `--json` keeps the Unix seconds.
pub fn when(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    when_at(secs, now)
}

fn when_at(secs: u64, now: u64) -> String {
    let stamp = utc(secs, &Rfc3339);
    let (ahead, gap) = if secs >= now {
        (true, secs - now)
    } else {
        (false, now - secs)
    };
    let amount = match gap {
        0..90 => format!("{gap} second{}", plural(gap)),
        90..5_400 => format!("{} minutes", (gap + 30) / 60),
        5_400..172_800 => format!("{} hours", (gap + 1_800) / 3_600),
        _ => format!("{} days", (gap + 43_200) / 86_400),
    };
    if gap == 0 {
        format!("{stamp} (now)")
    } else if ahead {
        format!("{stamp} (in {amount})")
    } else {
        format!("{stamp} ({amount} ago)")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `YYYY-MM-DD`.
const DATE: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");
/// `YYYY-MM-DD HH:MM UTC`.
const DATE_TIME: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute] UTC");

/// `YYYY-MM-DD` of Unix seconds (UTC).
pub fn date(secs: u64) -> String {
    utc(secs, DATE)
}

/// `YYYY-MM-DD HH:MM UTC` of Unix seconds.
pub fn date_time(secs: u64) -> String {
    utc(secs, DATE_TIME)
}

/// Unix seconds in UTC as `format` writes them. A time `time` cannot hold (after the year 9999,
/// as a token created with an absurd `--ttl` may have) is shown as `SECS (Unix seconds)`.
fn utc(secs: u64, format: &(impl Formattable + ?Sized)) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

#[cfg(test)]
mod when_tests {
    use super::{date, date_time, when_at};

    /// Known days and times: leap days (2000 and 2024, not 2100), the last minute before the
    /// year 10000, and past it the Unix seconds. Checked against `date -u`, and against the
    /// hand-written calendar this replaced on every day from 1970 to 9999.
    #[test]
    fn dates_are_utc_calendar_days_up_to_the_year_9999() {
        for (secs, shown) in [
            (0, "1970-01-01 00:00 UTC"),
            (86_399, "1970-01-01 23:59 UTC"),
            (951_782_400, "2000-02-29 00:00 UTC"),
            (951_868_799, "2000-02-29 23:59 UTC"),
            (951_868_800, "2000-03-01 00:00 UTC"),
            (1_709_164_800, "2024-02-29 00:00 UTC"),
            (1_764_162_060, "2025-11-26 13:01 UTC"),
            (4_107_456_000, "2100-02-28 00:00 UTC"),
            (4_107_542_400, "2100-03-01 00:00 UTC"),
            (253_402_300_799, "9999-12-31 23:59 UTC"),
            (253_402_300_800, "253402300800 (Unix seconds)"),
            (u64::MAX, "18446744073709551615 (Unix seconds)"),
        ] {
            assert_eq!(date_time(secs), shown, "{secs}");
            let day = shown.split(' ').next().unwrap_or_default();
            if !shown.ends_with("(Unix seconds)") {
                assert_eq!(date(secs), day, "{secs}");
            }
        }
    }

    #[test]
    fn times_are_rfc_3339_with_a_relative_hint() {
        let now = 1_900_000_000;
        assert_eq!(when_at(now, now), "2030-03-17T17:46:40Z (now)");
        assert_eq!(
            when_at(now + 3_540, now),
            "2030-03-17T18:45:40Z (in 59 minutes)"
        );
        assert_eq!(when_at(now - 1, now), "2030-03-17T17:46:39Z (1 second ago)");
        assert_eq!(
            when_at(now + 7_200, now),
            "2030-03-17T19:46:40Z (in 2 hours)"
        );
        assert_eq!(
            when_at(now - 3 * 86_400, now),
            "2030-03-14T17:46:40Z (3 days ago)"
        );
    }
}
