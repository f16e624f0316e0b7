//! The console's overview over a real server on port 0: the chart of the vault's verifies per
//! minute (its SVG labelled for screen readers, its numbers in a table, polled through htmx, for
//! the roles that may read usage), the disk line with its state and numbers, and the cluster
//! nodes ("single node" for a vault on one host).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use secrecy::ExposeSecret;
use vault_core::keys::{NewKey, VerifyRequest};
use vault_core::tokens::Role;

use crate::support::*;
use crate::ui::{Browser, text};

/// The part of `html` from the element with id `id` to the end of its section.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id} in {html}"));
    let rest = &html[at..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

/// The numbers of the chart's table rows: (VALID, NOT_FOUND, MALFORMED, total) as the header
/// names them, read from the row cells in order.
fn table_rows(chart: &str) -> Vec<Vec<u64>> {
    let body = &chart[chart.find("<tbody>").unwrap()..chart.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split(r#"<td class="num">"#)
                .skip(1)
                .map(|cell| cell[..cell.find('<').unwrap()].parse().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_chart_of_verifies_per_minute_shows_every_verify_with_its_numbers_in_a_table() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    let issued = v.vault.create_key(&ctx, NewKey::new("cust_chart")).unwrap();
    let good = issued.key.expose_secret_text().expose_secret().to_owned();
    for text in [good.as_str(), good.as_str(), "pvk_not_a_key", good.as_str()] {
        v.vault.verify(&ctx, VerifyRequest::new(text)).unwrap();
    }
    let mut manager = Browser::open(&v).await;
    manager.sign_in(&v.token(Role::Manager)).await;
    let page = manager.get("/ui/").await;
    page.assert_status(StatusCode::OK);
    let html = text(&page);
    let chart = section(&html, "verifies");
    // Polled through htmx, drawn as SVG labelled for screen readers, with a table.
    assert!(
        chart.contains(r#"<div id="live-verifies" hx-get="/ui/live/verifies""#),
        "{chart}"
    );
    assert!(
        chart.contains(
            r#"role="img" aria-label="Verifies per minute, last 6 hours: 4 verifies in all""#
        ),
        "{chart}"
    );
    assert!(chart.contains(r#"class="c-VALID""#) && chart.contains(r#"class="c-MALFORMED""#));
    assert!(chart.contains("<caption>Verifies per minute, last 6 hours, as numbers"));
    // One or two busy minutes (the verifies may straddle a minute), summing to what was done.
    let rows = table_rows(chart);
    assert!(!rows.is_empty() && rows.len() <= 2, "{chart}");
    let total: u64 = rows.iter().map(|r| *r.last().unwrap()).sum();
    assert_eq!(total, 4);
    let valid: u64 = rows.iter().map(|r| r[0]).sum();
    assert_eq!(valid, 3, "VALID is the first column: {chart}");

    // The fragment answers the chart alone, with the verifies since.
    v.vault.verify(&ctx, VerifyRequest::new(&good)).unwrap();
    let fragment = manager.get("/ui/live/verifies").await;
    fragment.assert_status(StatusCode::OK);
    let fragment = text(&fragment);
    assert!(fragment.contains("5 verifies in all"), "{fragment}");
    assert!(!fragment.contains("<html") && !fragment.contains("live-verifies"));

    // An auditor reads usage too; an operator and a verifier do not.
    let mut auditor = Browser::open(&v).await;
    auditor.sign_in(&v.token(Role::Auditor)).await;
    assert!(text(&auditor.get("/ui/").await).contains("live-verifies"));
    for role in [Role::Operator, Role::Verifier] {
        let mut other = Browser::open(&v).await;
        other.sign_in(&v.token(role)).await;
        let html = text(&other.get("/ui/").await);
        assert!(!html.contains("live-verifies"), "{role:?}");
        other
            .get("/ui/live/verifies")
            .await
            .assert_status(StatusCode::FORBIDDEN);
        other.server.stop().await;
    }
    // Without a session the poll stops (286) with a way back.
    let mut nobody = Browser::open(&v).await;
    let reply = nobody.get("/ui/live/verifies").await;
    assert_eq!(reply.status.as_u16(), 286);
    assert!(text(&reply).contains(r#"href="/ui/""#));
    for b in [manager, auditor, nobody] {
        b.server.stop().await;
    }
}

/// The overview once the disk watch has read the disk.
async fn overview_with_disk(b: &mut Browser) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let html = text(&b.get("/ui/").await);
        if !html.contains("not read yet") || Instant::now() > deadline {
            return html;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_disk_line_says_ok_or_alarm_with_its_numbers_to_every_role() {
    let v = passphrase_vault();
    v.unseal();
    // A mark of 100 %: only a full disk is over it.
    let mut config = config();
    config.disk_high_water_percent = 100;
    let mut b = Browser::open_with(&v, config.clone()).await;
    b.sign_in(&v.token(Role::Verifier)).await;
    let html = overview_with_disk(&mut b).await;
    let disk = section(&html, "disk");
    assert!(
        disk.contains(r#"Disk: <strong class="state-ok">ok</strong>"#),
        "{disk}"
    );
    assert!(disk.contains("(alarm at 100%)"), "{disk}");
    assert!(
        disk.contains(" free of ") && disk.contains("live entries"),
        "{disk}"
    );
    b.server.stop().await;

    // A mark of 1 %: any disk in use is over it.
    config.disk_high_water_percent = 1;
    let mut b = Browser::open_with(&v, config).await;
    b.sign_in(&v.token(Role::Operator)).await;
    let html = overview_with_disk(&mut b).await;
    let disk = section(&html, "disk");
    assert!(
        disk.contains(r#"Disk: <strong class="state-alarm">ALARM</strong>"#),
        "{disk}"
    );
    assert!(disk.contains("(alarm at 1%)") && disk.contains("keyvault audit archive"));
    b.server.stop().await;
}

#[tokio::test]
async fn a_vault_on_one_host_says_single_node() {
    let v = passphrase_vault();
    v.unseal();
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.token(Role::Verifier)).await;
    let html = text(&b.get("/ui/").await);
    let cluster = section(&html, "cluster");
    assert!(cluster.contains("Single node"), "{cluster}");
    assert!(!html.contains(r#"<table id="nodes""#));
    b.server.stop().await;
}

#[tokio::test]
async fn with_usage_summaries_off_the_overview_says_so_instead_of_failing() {
    // Opened with usage summaries off, as an embedding process may.
    let v = passphrase_vault_with(vault_core::VaultOptions {
        usage: false,
        ..vault_core::VaultOptions::default()
    });
    v.unseal();
    let mut manager = Browser::open(&v).await;
    manager.sign_in(&v.token(Role::Manager)).await;
    let page = manager.get("/ui/").await;
    page.assert_status(StatusCode::OK);
    let html = text(&page);
    assert!(html.contains("usage summaries off"), "{html}");
    assert!(!html.contains("live-verifies"), "{html}");
    assert!(!html.contains("live-signals"), "{html}");
    assert!(html.contains(r#"id="disk""#), "{html}");
}
