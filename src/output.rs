//! Human or JSON output, tables and progress indicators.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::Value;

/// Where results go: JSON lines for scripts, or text for people.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// `--json` was given.
    pub json: bool,
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
