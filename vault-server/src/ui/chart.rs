//! Usage charts drawn on the server as SVG: bars per hour or day, stacked by verify code, with
//! the same numbers in a table beside them.
//!
//! Drawn here rather than by a script library: an SVG in the page needs no JavaScript (the
//! console reads without it) and no inline style (colours are classes in the stylesheet, so the
//! CSP stays strict), and a stacked bar chart is a few rectangles.

use maud::{Markup, html};
use vault_core::usage::{UsageBucket, UsageReport};

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

/// The chart and its table for `report`, titled `title`.
pub(crate) fn usage(report: &UsageReport, title: &str) -> Markup {
    let n = report.buckets.len().max(1) as u64;
    let max = report
        .buckets
        .iter()
        .map(|b| b.total)
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = WIDTH / n;
    let used: Vec<&str> = CODES
        .iter()
        .copied()
        .filter(|c| report.totals.counts.get(*c).is_some_and(|n| *n > 0))
        .collect();
    let other = |b: &UsageBucket| {
        b.counts
            .iter()
            .filter(|(c, _)| !CODES.contains(&c.as_str()))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let any_other = report.buckets.iter().any(|b| other(b) > 0);
    let mut rects = Vec::new();
    for (i, b) in report.buckets.iter().enumerate() {
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
    html! {
        div class="chart-pair" {
            figure {
                svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                    aria-label={ (title) ": " (report.totals.total) " verifies in all" } {
                    @for r in &rects {
                        rect class={ "c-" (r.code) } x=(r.x) y=(r.y) width=(r.width) height=(r.height) {
                            title { (layout::time(r.start)) ": " (r.count) " " (r.code) }
                        }
                    }
                }
                figcaption {
                    (title) ". Peak " (max) " per bucket."
                    ul class="legend" {
                        @for code in &used { li { span class={ "swatch c-" (code) } {} (code) } }
                    }
                }
            }
            div class="table-wrap" {
                table {
                    caption { (title) ", as numbers" }
                    thead { tr {
                        th scope="col" { "From (UTC)" }
                        @for code in &used { th scope="col" class="num" { (code) } }
                        @if any_other { th scope="col" class="num" { "other" } }
                        th scope="col" class="num" { "Total" }
                    } }
                    tbody {
                        @for b in report.buckets.iter().rev() {
                            tr {
                                th scope="row" { (layout::time(b.start)) }
                                @for code in &used { td class="num" { (b.counts.get(*code).copied().unwrap_or(0)) } }
                                @if any_other { td class="num" { (other(b)) } }
                                td class="num" { (b.total) }
                            }
                        }
                    }
                }
            }
        }
    }
}
