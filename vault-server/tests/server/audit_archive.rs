//! `POST /v1/audit/archive` over HTTP: the archive written, then its entries dropped only when
//! an operator sends back the archive's SHA-256.

use std::io::Cursor;

use axum::http::{Method, StatusCode};
use serde_json::json;
use vault_core::audit::archive::ArchiveDigest;
use vault_core::audit::export::verify_export;
use vault_core::tokens::Role;

use crate::audit::{busy_vault, get_as, verifier};
use crate::support::{Server, config};

#[tokio::test]
async fn archive_over_http_is_written_then_dropped_by_an_operator_only() {
    let (v, auditor, _alice) = busy_vault();
    let operator = v.token(Role::Operator);
    let server = Server::start(&v, config()).await;
    let key = verifier(&v.audit_public_key);
    let auth = format!("Bearer {operator}");
    let as_operator = [("authorization", auth.as_str())];

    // Roles: auditors read the log but do not archive it.
    let r = get_as(&server, &auditor, "/v1/audit/archive?upto=latest").await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let r = server
        .send(Method::GET, "/v1/audit/archive?upto=latest", &[], "")
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Bad input.
    for (uri, status, code) in [
        (
            "/v1/audit/archive?upto=soon",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/audit/archive",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/audit/archive?upto=999999",
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        ("/v1/audit/archive?upto=0", StatusCode::CONFLICT, "conflict"),
    ] {
        let r = server.send(Method::GET, uri, &as_operator, "").await;
        r.assert_error(status, code);
    }
    let r = get_as(&server, &auditor, "/v1/audit/checkpoint").await;
    let before = r.json()["checkpoint"].as_str().unwrap().to_owned();
    let upto = r.json()["size"].as_u64().unwrap();

    // Dropping before the archive was written is refused.
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let zeros = "0".repeat(64);
    let body = json!({ "upto": upto, "sha256": zeros }).to_string();
    let r = server
        .send(Method::POST, "/v1/audit/archive", &json, &body)
        .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");

    let r = server
        .send(
            Method::GET,
            &format!("/v1/audit/archive?upto={upto}"),
            &as_operator,
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers["x-keyvault-audit-public-key"],
        v.audit_public_key.as_str()
    );
    let report = verify_export(Cursor::new(&r.body), &key, None, |_| {}).unwrap();
    assert_eq!((report.first_seq, report.checkpoint.size), (0, upto));
    assert_eq!(report.entries, upto);
    let sha256 = ArchiveDigest::of_reader(&r.body[..]).unwrap().to_string();

    // Issue 18, item 6: the drop needs the SHA-256 of the archive as stored. Without it, with
    // a malformed one or with another one, nothing is dropped.
    let wrong = ArchiveDigest::of_reader(&r.body[..r.body.len() - 1])
        .unwrap()
        .to_string();
    for (body, status, code, says) in [
        (
            json!({ "upto": upto }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "sha256",
        ),
        (
            json!({ "upto": upto, "sha256": sha256.to_uppercase() }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "sha256",
        ),
        (
            json!({ "upto": upto, "sha256": &sha256[1..] }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "sha256",
        ),
        (
            json!({ "upto": upto, "sha256": 7 }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "sha256",
        ),
        (
            json!({ "upto": upto, "sha256": wrong }),
            StatusCode::CONFLICT,
            "conflict",
            "nothing was dropped",
        ),
        (
            json!({ "upto": upto - 1, "sha256": sha256 }),
            StatusCode::CONFLICT,
            "conflict",
            "not",
        ),
    ] {
        let r = server
            .send(Method::POST, "/v1/audit/archive", &json, &body.to_string())
            .await;
        let message = r.assert_error(status, code);
        assert!(message.contains(says), "{body}: {message}");
        // Every entry is still exported.
        let r = get_as(&server, &auditor, "/v1/audit/export").await;
        let report = verify_export(Cursor::new(&r.body), &key, None, |_| {}).unwrap();
        assert_eq!(report.first_seq, 0, "{body}");
        assert!(report.entries > upto, "{body}");
    }

    let body = json!({ "upto": upto, "sha256": sha256 }).to_string();
    let r = server
        .send(Method::POST, "/v1/audit/archive", &json, &body)
        .await;
    r.assert_status(StatusCode::OK);
    let dropped = r.json();
    assert_eq!(dropped["dropped"], upto, "{dropped}");
    assert_eq!(dropped["first_live"], upto, "{dropped}");
    // One segment file, which also holds later entries: nothing to remove yet.
    assert_eq!(dropped["bytes_freed"], 0, "{dropped}");

    // The live log verifies from there and extends the checkpoint before the archive.
    let r = get_as(&server, &auditor, "/v1/audit/export").await;
    let report = verify_export(Cursor::new(&r.body), &key, Some(&before), |_| {}).unwrap();
    assert_eq!(report.first_seq, upto);
    assert_eq!(report.extends, Some(upto));
    // A proof of an archived entry: 410, pointing to the archive.
    let size = report.checkpoint.size;
    let r = get_as(
        &server,
        &auditor,
        &format!("/v1/audit/proof?index=1&size={size}"),
    )
    .await;
    let message = r.assert_error(StatusCode::GONE, "archived");
    assert!(message.contains("archive"), "{message}");
    // Consistency from before the archive still verifies.
    let r = get_as(
        &server,
        &auditor,
        &format!("/v1/audit/proof?old=2&new={size}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    server.stop().await;
}
