//! Human or JSON output, tables and progress indicators.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::Value;

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
    let stamp = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"));
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

const DAY: u64 = 86_400;

/// `YYYY-MM-DD` of Unix seconds (UTC).
pub fn date(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / DAY) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM UTC` of Unix seconds.
pub fn date_time(secs: u64) -> String {
    let rem = secs % DAY;
    format!(
        "{} {:02}:{:02} UTC",
        date(secs),
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod when_tests {
    use super::when_at;

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
