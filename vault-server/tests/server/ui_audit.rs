//! The console's audit page over a real server on port 0: who may open it, recent entries
//! newest first with filters and paging, downloads that are the API's export (verifiable JSON
//! Lines, CSV) under the session and the role, and the checkpoint and public key.

use std::io::Cursor;

use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use vault_core::audit::export::{CSV_HEADER, verify_export};
use vault_core::audit::note::NoteVerifier;
use vault_core::keys::NewKey;
use vault_core::tokens::Role;

use crate::support::*;
use crate::ui::{Browser, text};

fn new_key(owner: &str) -> NewKey {
    NewKey::new(owner)
}

/// The sequence numbers of the entries table's rows, in page order.
fn rows(html: &str) -> Vec<u64> {
    let Some(at) = html.find(r#"<table id="entries">"#) else {
        return Vec::new();
    };
    let table = &html[at..html[at..].find("</table>").unwrap() + at];
    table
        .split(r#"<tr><td class="num">"#)
        .skip(1)
        .map(|row| row[..row.find('<').unwrap()].parse().unwrap())
        .collect()
}

/// The `href` of the link whose text starts with `label`.
fn link(html: &str, label: &str) -> String {
    let at = html.find(&format!(">{label}")).expect("the link");
    let start = html[..at].rfind("href=\"").unwrap() + 6;
    let end = start + html[start..].find('"').unwrap();
    html[start..end].replace("&amp;", "&")
}

#[tokio::test]
async fn only_roles_the_audit_api_allows_open_the_page_or_download() {
    let v = passphrase_vault();
    v.unseal();
    for (role, allowed) in [
        (Role::Auditor, true),
        (Role::Admin, true),
        (Role::Manager, false),
        (Role::Operator, false),
        (Role::Verifier, false),
    ] {
        let token = if role == Role::Admin {
            v.root_token.clone()
        } else {
            v.token(role)
        };
        let mut b = Browser::open(&v).await;
        b.sign_in(&token).await;
        let overview = text(&b.get("/ui/").await);
        assert_eq!(
            overview.contains(r#"href="/ui/audit""#),
            allowed,
            "{role:?}"
        );
        for path in [
            "/ui/audit",
            "/ui/audit/export",
            "/ui/audit/export?format=csv",
        ] {
            let reply = b.get(path).await;
            let expected = if allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(reply.status, expected, "{role:?} {path}");
            if allowed {
                continue;
            }
            assert!(!text(&reply).contains(CSV_HEADER.trim_end()));
        }
        b.server.stop().await;
    }
    // Without a session: to sign-in, nothing exported.
    let before = v.vault.audit_size();
    let mut b = Browser::open(&v).await;
    for path in ["/ui/audit", "/ui/audit/export"] {
        let reply = b.get(path).await;
        reply.assert_status(StatusCode::SEE_OTHER);
        assert_eq!(reply.headers["location"], "/ui/sign-in");
    }
    assert_eq!(
        v.vault.audit_size(),
        before,
        "nothing was exported or audited"
    );
    b.server.stop().await;
}

#[tokio::test]
async fn recent_entries_are_newest_first_filtered_and_paged() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    for i in 0..60 {
        let owner = if i % 2 == 0 { "cust_even" } else { "cust_odd" };
        v.vault.create_key(&ctx, new_key(owner)).unwrap();
    }
    let auditor = v.token(Role::Auditor);
    let mut b = Browser::open(&v).await;
    b.sign_in(&auditor).await;

    let reply = b.get("/ui/audit").await;
    reply.assert_status(StatusCode::OK);
    let html = text(&reply);
    let seqs = rows(&html);
    assert_eq!(seqs.len(), 50);
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    assert_eq!(seqs[0], v.vault.audit_size() - 1);
    // The next page goes on where this one stopped.
    let older = link(&html, "Older entries");
    let next = rows(&text(&b.get(&older).await));
    assert_eq!(next[0], seqs[49] - 1);

    // Filtered by owner and event: only those, newest first, 30 of them.
    let html = text(&b.get("/ui/audit?owner=cust_odd&event=key.create").await);
    let seqs = rows(&html);
    assert_eq!(seqs.len(), 30);
    for seq in &seqs {
        let entry: serde_json::Value =
            serde_json::from_slice(&v.vault.audit_entry(*seq).unwrap().unwrap()).unwrap();
        assert_eq!(entry["owner"], "cust_odd");
        assert_eq!(entry["event"], "key.create");
    }
    assert!(seqs.windows(2).all(|w| w[0] > w[1]));
    // By outcome, and by a time range that holds nothing.
    assert!(rows(&text(&b.get("/ui/audit?outcome=no_such_outcome").await)).is_empty());
    let html = text(
        &b.get("/ui/audit?since=2000-01-01T00:00:00Z&until=946771200")
            .await,
    );
    assert!(rows(&html).is_empty());
    assert!(html.contains("No entries match"));
    // Bad filters: a 400 page that says which, with the form to fix them.
    for bad in ["key=nothex", "since=yesterday", "before=-1"] {
        let reply = b.get(&format!("/ui/audit?{bad}")).await;
        reply.assert_status(StatusCode::BAD_REQUEST);
        assert!(text(&reply).contains(r#"role="alert""#), "{bad}");
    }
    b.server.stop().await;
}

#[tokio::test]
async fn downloads_are_the_apis_export_as_the_signed_in_token() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    v.vault.create_key(&ctx, new_key("cust_dl")).unwrap();
    v.vault.create_key(&ctx, new_key("cust_other")).unwrap();
    let auditor = v.token(Role::Auditor);
    let token_id = v.vault.check_token(&auditor).unwrap().unwrap().token_id;
    let mut b = Browser::open(&v).await;
    b.sign_in(&auditor).await;
    let page = text(&b.get("/ui/audit?owner=cust_dl&outcome=ok").await);
    // The page shows the checkpoint and the key that verifies the downloads.
    assert!(page.contains(&v.audit_public_key));
    assert!(page.contains(r#"<pre id="checkpoint">"#));
    let key = NoteVerifier::parse(&v.audit_public_key).unwrap();

    // Everything: a complete export that verifies, audited as the auditor with via: ui.
    let all = b.get("/ui/audit/export?format=jsonl").await;
    all.assert_status(StatusCode::OK);
    assert_eq!(all.headers[CONTENT_TYPE], "application/x-ndjson");
    assert!(
        all.headers[CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let report = verify_export(Cursor::new(&all.body), &key, None, |_| {}).unwrap();
    assert!(!report.filtered);
    let last: serde_json::Value =
        serde_json::from_slice(&v.vault.audit_entry(report.entries - 1).unwrap().unwrap()).unwrap();
    assert_eq!(last["event"], "audit.export");
    assert_eq!(last["details"]["via"], "ui");
    assert!(
        last["actor"]
            .as_str()
            .unwrap()
            .contains(&token_id.to_string())
    );

    // The page's own download link: its filters (empty fields dropped), the outcome too.
    let jsonl = link(&page, "JSON Lines");
    assert!(jsonl.contains("outcome=ok"), "{jsonl}");
    let filtered = b.get(&jsonl).await;
    filtered.assert_status(StatusCode::OK);
    let report = verify_export(Cursor::new(&filtered.body), &key, None, |_| {}).unwrap();
    assert!(report.filtered);
    assert_eq!(report.entries, 1);
    let csv = b.get(&link(&page, "CSV")).await;
    csv.assert_status(StatusCode::OK);
    assert_eq!(csv.headers[CONTENT_TYPE], "text/csv; charset=utf-8");
    let csv = text(&csv);
    assert!(csv.starts_with(CSV_HEADER));
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("cust_dl") && !csv.contains("cust_other"));

    // A download must end, and bad parameters say why.
    let follow = b.get("/ui/audit/export?follow=true").await;
    follow.assert_status(StatusCode::BAD_REQUEST);
    for bad in ["format=xml", "key=nothex", "since=later", "colour=red"] {
        b.get(&format!("/ui/audit/export?{bad}"))
            .await
            .assert_status(StatusCode::BAD_REQUEST);
    }
    b.server.stop().await;
    assert!(!logs().contains(&auditor));
}

#[tokio::test]
async fn a_download_filtered_by_outcome_holds_that_outcome_only_and_verifies() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    let issued = v.vault.create_key(&ctx, new_key("cust_out")).unwrap();
    let good = secrecy::ExposeSecret::expose_secret(&issued.key.expose_secret_text()).to_owned();
    let wrong = vault_core::apikey::ApiKey::new(
        vault_core::apikey::Prefix::default(),
        issued.key.id(),
        vault_core::apikey::KeySecret::random(),
    );
    let wrong = secrecy::ExposeSecret::expose_secret(&wrong.expose_secret_text()).to_owned();
    for text in [&good, &wrong, &good, &wrong, &good] {
        v.vault
            .verify(&ctx, vault_core::keys::VerifyRequest::new(text))
            .unwrap();
    }
    let auditor = v.token(Role::Auditor);
    let mut b = Browser::open(&v).await;
    b.sign_in(&auditor).await;
    let page = text(&b.get("/ui/audit?event=key.verify&outcome=NOT_FOUND").await);
    assert_eq!(rows(&page).len(), 2, "{page}");
    let key = NoteVerifier::parse(&v.audit_public_key).unwrap();

    // The download is what the page shows: the two refusals, each with its inclusion proof.
    let jsonl = link(&page, "JSON Lines");
    assert!(jsonl.contains("outcome=NOT_FOUND"), "{jsonl}");
    let download = b.get(&jsonl).await;
    download.assert_status(StatusCode::OK);
    let report = verify_export(Cursor::new(&download.body), &key, None, |_| {}).unwrap();
    assert!(report.filtered);
    assert_eq!(report.entries, 2);
    let body = text(&download);
    let entries: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("event").is_some())
        .collect();
    assert_eq!(entries.len(), 2, "{body}");
    assert!(entries.iter().all(|e| e["outcome"] == "NOT_FOUND"));
    let csv = text(&b.get(&link(&page, "CSV")).await);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().skip(1).all(|l| l.contains("NOT_FOUND")),
        "{csv}"
    );

    // The export's own entry records the outcome it was filtered by.
    let last: serde_json::Value = serde_json::from_slice(
        &v.vault
            .audit_entry(v.vault.audit_size() - 1)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["event"], "audit.export");
    assert_eq!(last["details"]["outcome"], "NOT_FOUND");

    // The API's export takes the same filter.
    let api = b
        .get("/ui/audit/export?event=key.verify&outcome=VALID&format=jsonl")
        .await;
    let report = verify_export(Cursor::new(&api.body), &key, None, |_| {}).unwrap();
    assert_eq!(report.entries, 3);
    b.server.stop().await;
}

#[tokio::test]
async fn a_rare_filter_examines_a_bounded_stretch_per_page_and_links_on() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    v.vault.create_key(&ctx, new_key("cust_rare")).unwrap();
    let issued = v.vault.create_key(&ctx, new_key("cust_busy")).unwrap();
    let text_key =
        secrecy::ExposeSecret::expose_secret(&issued.key.expose_secret_text()).to_owned();
    // Over a page's budget of verifies after the rare entry, from threads sharing commits.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..640 {
                    let request = vault_core::keys::VerifyRequest::new(&text_key);
                    v.vault.verify(&ctx, request).unwrap();
                }
            });
        }
    });
    let auditor = v.token(Role::Auditor);
    let mut b = Browser::open(&v).await;
    b.sign_in(&auditor).await;
    let size = v.vault.audit_size();
    let html = text(&b.get("/ui/audit?owner=cust_rare").await);
    assert!(rows(&html).is_empty());
    assert!(
        html.contains("No entries match among the 5000 examined"),
        "{html}"
    );
    // The next stretch finds it.
    let older = link(&html, "Older entries");
    assert!(
        older.ends_with(&format!("before={}", size - 5000)),
        "{older} {size}"
    );
    let html = text(&b.get(&older).await);
    assert_eq!(rows(&html).len(), 1);
    assert!(
        !html.contains("Older entries"),
        "the start of the log reached"
    );
    b.server.stop().await;
}
