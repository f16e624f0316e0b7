//! The overview's disk line: the data directory's filesystem against its high-water mark as
//! the disk watch (`crate::disk`) last read it (the same reading and alarm as `/metrics` and the
//! `disk_alarm` signal), and how much of it the audit log takes.

use maud::{Markup, html};
use vault_core::disk::DiskUsage;

use super::layout;

/// `bytes` for people: B, KB, MB, GB or TB, decimal as `df -H` counts. Written here since
/// the one place that needs it does not justify a dependency.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The line: `reading` is the watch's last one (none before its first), `alarm` its state,
/// `mark` the high-water mark (percent), `every_s` how often the watch reads.
pub(crate) fn line(reading: Option<&DiskUsage>, alarm: bool, mark: u8, every_s: u64) -> Markup {
    let Some(u) = reading else {
        return html! {
            p id="disk-line" { "Disk: " strong { "not read yet" } " (the server reads it every " (every_s) " s)." }
        };
    };
    html! {
        p id="disk-line" {
            "Disk: "
            @if alarm {
                strong class="state-alarm" { "ALARM" }
                " — the filesystem is over its high-water mark: archive the audit log ("
                code { "keyvault audit archive" } ") or add space, since a full disk stops every verify. "
            } @else {
                strong class="state-ok" { "ok" } " — "
            }
            (format!("{:.1}", u.used_percent())) "% of the filesystem used (alarm at " (mark) "%), "
            (size(u.fs_available_bytes)) " free of " (size(u.fs_total_bytes)) "."
        }
        dl class="record" {
            dt { "Log files" }
            dd {
                (size(u.audit_bytes)) " in the audit segment files, holding " (u.audit_live_entries) " live entries"
                @if let Some(oldest) = u.oldest_audit_ms { ", the oldest from " (layout::time(oldest / 1000)) }
            }
            dt { "Data directory" } dd { (size(u.data_bytes)) ", with " (size(u.reserve_bytes)) " held in reserve" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> DiskUsage {
        DiskUsage {
            data_bytes: 2_500_000,
            fs_total_bytes: 100_000_000_000,
            fs_available_bytes: 10_000_000_000,
            audit_live_entries: 1234,
            oldest_audit_ms: Some(1_893_456_000_000),
            audit_bytes: 1_500_000,
            reserve_bytes: 1_000_000,
        }
    }

    #[test]
    fn the_line_says_ok_or_alarm_with_its_numbers() {
        let ok = line(Some(&reading()), false, 95, 10).into_string();
        assert!(
            ok.contains(r#"<strong class="state-ok">ok</strong>"#),
            "{ok}"
        );
        assert!(
            ok.contains("90.0% of the filesystem used (alarm at 95%)"),
            "{ok}"
        );
        assert!(ok.contains("10.0 GB free of 100.0 GB"), "{ok}");
        assert!(ok.contains("1.5 MB in the audit segment files, holding 1234 live entries, the oldest from 2030-01-01 00:00:00 UTC"));
        assert!(!ok.contains("ALARM"));
        let alarm = line(Some(&reading()), true, 80, 10).into_string();
        assert!(
            alarm.contains(r#"<strong class="state-alarm">ALARM</strong>"#),
            "{alarm}"
        );
        assert!(alarm.contains("keyvault audit archive"));
        let none = line(None, false, 80, 10).into_string();
        assert!(
            none.contains("not read yet") && none.contains("every 10 s"),
            "{none}"
        );
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_000), "1.0 KB");
    }
}
