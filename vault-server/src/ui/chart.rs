//! Usage charts drawn on the server as SVG: bars per hour or day (a key's usage) or per minute
//! (the vault's verifies, on the overview), stacked by verify code, with the same numbers in a
//! table beside them.
//!
//! Drawn here rather than by a script library: an SVG in the page needs no JavaScript (the
//! console reads without it) and no inline style (colours are classes in the stylesheet, so the
//! CSP stays strict), and a stacked bar chart is a few rectangles.

use std::collections::BTreeMap;

use maud::{Markup, html};
use vault_core::usage::{MinuteReport, UsageReport};

use super::layout;

/// The codes in stacking order (bottom first); any other code a bucket holds goes in "other".
const CODES: [&str; 9] = [
    "VALID",
    "NOT_FOUND",
    "MALFORMED",
    "REVOKED",
    "DISABLED",
    "EXPIRED",
    "INSUFFICIENT_SCOPE",
    "RATE_LIMITED",
    "USAGE_EXCEEDED",
];

const WIDTH: u64 = 720;
const HEIGHT: u64 = 200;

/// One bar segment: `count` verifies answered `code` in the bucket from `start`.
struct Rect<'a> {
    code: &'a str,
    x: u64,
    y: u64,
    width: u64,
    height: u64,
    start: u64,
    count: u64,
}

/// One bucket of a chart: its verifies by code.
struct Bar<'a> {
    start: u64,
    counts: &'a BTreeMap<String, u64>,
    total: u64,
}

/// What the table beside a chart lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Every bucket.
    All,
    /// The buckets with verifies (a chart of hundreds of minutes, mostly quiet ones).
    Busy,
}

/// The chart and its table for `report`, titled `title`.
pub(crate) fn usage(report: &UsageReport, title: &str) -> Markup {
    let bars: Vec<Bar<'_>> = report
        .buckets
        .iter()
        .map(|b| Bar {
            start: b.start,
            counts: &b.counts,
            total: b.total,
        })
        .collect();
    draw(
        &bars,
        &report.totals.counts,
        report.totals.total,
        title,
        Rows::All,
        None,
    )
}

/// The chart of the vault's verifies per minute, and a table of the minutes with verifies.
/// The minutes before `report.known_from` are shaded as unknown (before a restart), not drawn
/// as quiet.
pub(crate) fn minutes(report: &MinuteReport, title: &str) -> Markup {
    let bars: Vec<Bar<'_>> = report
        .minutes
        .iter()
        .map(|m| Bar {
            start: m.start,
            counts: &m.counts,
            total: m.total,
        })
        .collect();
    let unknown = report
        .minutes
        .iter()
        .take_while(|m| m.start < report.known_from)
        .count();
    draw(
        &bars,
        &report.totals,
        report.total,
        title,
        Rows::Busy,
        (unknown > 0).then_some((unknown, report.known_from)),
    )
}

/// Draws `bars`, stacked by code, and their table. `unknown`: the first so many bars are not
/// known, up to the time given (Unix s).
fn draw(
    bars: &[Bar<'_>],
    totals: &BTreeMap<String, u64>,
    total: u64,
    title: &str,
    rows: Rows,
    unknown: Option<(usize, u64)>,
) -> Markup {
    let n = bars.len().max(1) as u64;
    let max = bars.iter().map(|b| b.total).max().unwrap_or(0).max(1);
    let bar = WIDTH / n;
    let used: Vec<&str> = CODES
        .iter()
        .copied()
        .filter(|c| totals.get(*c).is_some_and(|n| *n > 0))
        .collect();
    let other = |b: &Bar<'_>| {
        b.counts
            .iter()
            .filter(|(c, _)| !CODES.contains(&c.as_str()))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let any_other = bars.iter().any(|b| other(b) > 0);
    let mut rects = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        let mut y = HEIGHT;
        for code in &used {
            let count = b.counts.get(*code).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            let top = y.saturating_sub((count * HEIGHT).div_ceil(max));
            rects.push(Rect {
                code,
                x: i as u64 * bar,
                y: top,
                width: bar.saturating_sub(1).max(1),
                height: y - top,
                start: b.start,
                count,
            });
            y = top;
        }
    }
    let listed: Vec<&Bar<'_>> = bars
        .iter()
        .rev()
        .filter(|b| rows == Rows::All || b.total > 0)
        .collect();
    html! {
        div class="chart-pair" {
            figure {
                svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                    aria-label={ (title) ": " (total) " verifies in all" } {
                    @if let Some((count, _)) = unknown {
                        rect class="unknown" x="0" y="0" width=(count as u64 * bar) height=(HEIGHT) {
                            title { "Not known: before the server last started" }
                        }
                    }
                    @for r in &rects {
                        rect class={ "c-" (r.code) } x=(r.x) y=(r.y) width=(r.width) height=(r.height) {
                            title { (layout::time(r.start)) ": " (r.count) " " (r.code) }
                        }
                    }
                }
                figcaption {
                    (title) ". Peak " (max) " per bucket."
                    @if let Some((_, from)) = unknown {
                        " Counted from " (layout::time(from)) " (the shaded part is before the server last started, not known)."
                    }
                    ul class="legend" {
                        @for code in &used { li { span class={ "swatch c-" (code) } {} (code) } }
                    }
                }
            }
            div class="table-wrap" {
                table {
                    caption {
                        (title) ", as numbers"
                        @if rows == Rows::Busy { " (only the buckets with verifies; the others had none)" }
                    }
                    thead { tr {
                        th scope="col" { "From (UTC)" }
                        @for code in &used { th scope="col" class="num" { (code) } }
                        @if any_other { th scope="col" class="num" { "other" } }
                        th scope="col" class="num" { "Total" }
                    } }
                    tbody {
                        @for b in &listed {
                            tr {
                                th scope="row" { (layout::time(b.start)) }
                                @for code in &used { td class="num" { (b.counts.get(*code).copied().unwrap_or(0)) } }
                                @if any_other { td class="num" { (other(b)) } }
                                td class="num" { (b.total) }
                            }
                        }
                        @if listed.is_empty() {
                            tr { td colspan=(used.len() + 2 + usize::from(any_other)) { "No verifies." } }
                        }
                    }
                }
            }
        }
    }
}
