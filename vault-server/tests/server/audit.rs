//! `/v1/audit/*`: exports that verify offline with only the public key, checkpoints, proofs,
//! digests, and the followed export that `keyvault audit tail` reads.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use vault_core::audit::Entry;
use vault_core::audit::export::{CSV_HEADER, verify_export};
use vault_core::audit::merkle::{self, Hash};
use vault_core::audit::note::{Checkpoint, NoteVerifier};
use vault_core::keys::NewKey;
use vault_core::tokens::Role;
use vault_core::{Context, Vault};

use crate::support::{
    Reply, Server, TestVault, app, assert_json_refusals, call, config, passphrase_vault, with_token,
};

pub(crate) async fn get_as(server: &Server, token: &str, uri: &str) -> Reply {
    let auth = format!("Bearer {token}");
    server
        .send(Method::GET, uri, &[("authorization", auth.as_str())], "")
        .await
}

pub(crate) fn verifier(public_key: &str) -> NoteVerifier {
    NoteVerifier::parse(public_key).unwrap()
}

fn hash(b64: &Value) -> Hash {
    B64.decode(b64.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array().unwrap().iter().map(hash).collect()
}

/// A vault with a few keys of two owners, a failed token check, and an auditor token.
pub(crate) fn busy_vault() -> (TestVault, String, Vec<String>) {
    let v = passphrase_vault();
    v.unseal();
    let ctx = Context::embedded();
    let mut alice = Vec::new();
    for owner in ["alice", "bob", "alice"] {
        let issued = v.vault.create_key(&ctx, NewKey::new(owner)).unwrap();
        if owner == "alice" {
            alice.push(issued.info.key_id.to_string());
        }
    }
    let _ = v.vault.authenticate(&ctx, "kvt_not_a_real_token");
    let auditor = v.token(Role::Auditor);
    (v, auditor, alice)
}

#[tokio::test]
async fn http_exports_verify_with_the_public_key() {
    let (v, auditor, alice) = busy_vault();
    let server = Server::start(&v, config()).await;

    let r = get_as(&server, &auditor, "/v1/audit/public-key").await;
    assert_eq!(r.status, StatusCode::OK);
    let public_key = r.json()["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public_key, v.audit_public_key);
    let key = verifier(&public_key);

    let r = get_as(&server, &auditor, "/v1/audit/checkpoint").await;
    let earlier = r.json()["checkpoint"].as_str().unwrap().to_owned();
    let earlier_size = r.json()["size"].as_u64().unwrap();

    // Unfiltered: complete and untampered, and extending the earlier checkpoint.
    let r = get_as(&server, &auditor, "/v1/audit/export").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let report = verify_export(Cursor::new(&r.body), &key, Some(&earlier), |_| {}).unwrap();
    assert!(!report.filtered);
    assert_eq!(report.entries, report.checkpoint.size);
    assert_eq!(report.extends, Some(earlier_size));
    // The export audited itself, under the auditor's token, before its checkpoint.
    let last = v.vault.audit_entry(report.entries - 1).unwrap().unwrap();
    let last = Entry::parse(&last).unwrap();
    assert_eq!(last.event, "audit.export");
    assert!(last.actor.starts_with("token:"), "{}", last.actor);
    // A changed byte fails.
    let mut tampered = r.body.to_vec();
    let at = tampered.windows(7).position(|w| w == b"\"alice\"").unwrap();
    tampered[at + 1] = b'A';
    assert!(verify_export(Cursor::new(&tampered), &key, None, |_| {}).is_err());

    // Filtered: each entry proven included.
    let upper = alice[0].to_uppercase();
    for (query, expected) in [
        ("owner=alice", Some(2)),
        ("owner=nobody", Some(0)),
        (format!("key={upper}").as_str(), Some(1)),
        ("event=key.create&owner=bob", Some(1)),
        ("event=sys.unseal", None),
        ("since=4102444800", Some(0)),
        ("since=2030-01-01T00:00:00Z", Some(0)),
        ("until=0", Some(0)),
        (
            "since=0&until=2100-01-01T00:00:00%2B01:00&owner=alice",
            Some(2),
        ),
    ] {
        let r = get_as(&server, &auditor, &format!("/v1/audit/export?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}");
        let report = verify_export(Cursor::new(&r.body), &key, None, |_| {})
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(report.filtered, "{query}");
        match expected {
            Some(n) => assert_eq!(report.entries, n, "{query}"),
            None => assert!(report.entries >= 1, "{query}"),
        }
    }

    // CSV: the header row, then one row per entry up to the export's checkpoint.
    let r = get_as(&server, &auditor, "/v1/audit/export?format=csv&owner=alice").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER.trim_end()));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows.iter().all(|row| row.contains(",key.create,ok,")),
        "{text}"
    );
    let r = get_as(&server, &auditor, "/v1/audit/export?format=csv").await;
    assert!(r.body.starts_with(CSV_HEADER.as_bytes()));
    server.stop().await;
}

#[tokio::test]
async fn a_large_export_arrives_in_several_chunks_and_verifies() {
    let (v, auditor, _) = busy_vault();
    // Enough entries for several 64 KiB chunks, committed from a few threads at once.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for i in 0..80 {
                    v.vault
                        .audit_digest(&Context::embedded(), &format!("probe {i}"))
                        .unwrap();
                }
            });
        }
    });
    let server = Server::start(&v, config()).await;
    let mut export = LineStream::open(server.addr, "/v1/audit/export", &auditor).await;
    let mut body = Vec::new();
    let mut frames = 0;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), export.body.frame())
        .await
        .expect("the export keeps coming")
    {
        if let Ok(data) = frame.unwrap().into_data() {
            body.extend_from_slice(&data);
            frames += 1;
        }
    }
    assert!(frames >= 3, "{frames} frames for {} bytes", body.len());
    let report = verify_export(
        Cursor::new(&body),
        &verifier(&v.audit_public_key),
        None,
        |_| {},
    )
    .unwrap();
    assert!(report.entries > 640);
    server.stop().await;
}

#[tokio::test]
async fn checkpoints_and_proofs_verify() {
    let (v, auditor, _) = busy_vault();
    let app = app(&v);
    let key = verifier(&v.audit_public_key);
    let get = |uri: &str| with_token(Method::GET, uri, &auditor, None);
    let checkpoint = |body: &Value| {
        let note = body["checkpoint"].as_str().unwrap();
        let cp = Checkpoint::parse_note_text(&key.verify(note).unwrap()).unwrap();
        assert_eq!(cp.size, body["size"].as_u64().unwrap());
        assert_eq!(cp.root, hash(&body["root"]));
        cp
    };

    let r = call(&app, get("/v1/audit/checkpoint")).await;
    assert_eq!(r.status, StatusCode::OK);
    let a_body = r.json();
    let a = checkpoint(&a_body);
    assert_eq!(a.size, v.vault.audit_size());
    for _ in 0..5 {
        v.token(Role::Verifier);
    }
    let b_body = call(&app, get("/v1/audit/checkpoint")).await.json();
    let b = checkpoint(&b_body);
    assert_eq!(b.size, a.size + 5);

    let r = call(
        &app,
        get(&format!("/v1/audit/proof?old={}&new={}", a.size, b.size)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let c = r.json();
    assert_eq!(
        (c["old"].as_u64(), c["new"].as_u64()),
        (Some(a.size), Some(b.size))
    );
    assert_eq!(hash(&c["old_root"]), a.root);
    assert_eq!(hash(&c["new_root"]), b.root);
    let proof = hashes(&c["proof"]);
    merkle::verify_consistency(a.size, b.size, &a.root, &b.root, &proof).unwrap();
    let mut bent = proof.clone();
    bent[0][0] ^= 1;
    assert!(merkle::verify_consistency(a.size, b.size, &a.root, &b.root, &bent).is_err());

    // From the empty tree: an empty proof.
    let c = call(&app, get(&format!("/v1/audit/proof?old=0&new={}", b.size)))
        .await
        .json();
    assert_eq!(c["proof"], json!([]));
    assert_eq!(hash(&c["old_root"]), merkle::empty_root());

    for (index, size, cp) in [
        (0, b.size, &b_body),
        (a.size, b.size, &b_body),
        (b.size - 1, b.size, &b_body),
        (3, a.size, &a_body),
    ] {
        let r = call(
            &app,
            get(&format!("/v1/audit/proof?index={index}&size={size}")),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let p = r.json();
        assert_eq!(p["index"], index);
        assert_eq!(p["size"], size);
        assert_eq!(
            p["checkpoint"], cp["checkpoint"],
            "the note signed at that size"
        );
        let root = hash(&p["root"]);
        assert_eq!(root, hash(&cp["root"]));
        let leaf = merkle::leaf_hash(&v.vault.audit_entry(index).unwrap().unwrap());
        merkle::verify_inclusion(&leaf, index, size, &hashes(&p["proof"]), &root).unwrap();
    }

    let huge = u64::MAX;
    for (query, code) in [
        ("", "invalid_query"),
        ("index=1", "invalid_query"),
        ("old=1", "invalid_query"),
        ("size=3&new=4", "invalid_query"),
        ("index=1&size=2&old=1&new=2", "invalid_query"),
        ("index=x&size=2", "invalid_query"),
        ("index=-1&size=2", "invalid_query"),
        ("index=1&size=2&extra=1", "invalid_query"),
        ("index=5&size=5", "invalid_input"),
        ("index=0&size=0", "invalid_input"),
        (&format!("index=0&size={huge}"), "invalid_input"),
        (&format!("index=0&size={}", b.size + 100), "invalid_input"),
        ("old=5&new=3", "invalid_input"),
        (&format!("old=1&new={huge}"), "invalid_input"),
    ] {
        let r = call(&app, get(&format!("/v1/audit/proof?{query}"))).await;
        r.assert_error(StatusCode::BAD_REQUEST, code);
    }
}

#[tokio::test]
async fn a_digest_matches_what_the_log_recorded_for_a_presented_string() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let auditor = v.token(Role::Auditor);
    let leaked = "kvt_leaked_example_0123456789";
    // A refused token is summed per peer per minute; the sum, written when the server stops,
    // names the first string refused.
    let server = Server::start(&v, config()).await;
    let bearer = format!("Bearer {leaked}");
    let r = server
        .send(
            Method::GET,
            "/v1/audit/public-key",
            &[("authorization", &bearer)],
            "",
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    server.stop().await;

    let r = call(
        &app,
        with_token(
            Method::POST,
            "/v1/audit/digest",
            &auditor,
            Some(&json!({"text": leaked})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let digest = r.json()["digest"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 64);
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );

    let entries: Vec<Entry> = (0..v.vault.audit_size())
        .map(|seq| Entry::parse(&v.vault.audit_entry(seq).unwrap().unwrap()).unwrap())
        .collect();
    let tried = entries
        .iter()
        .find(|e| e.event == "token.authenticate")
        .unwrap();
    assert_eq!(tried.details["presented_digest"], digest.as_str());
    assert_eq!(entries.last().unwrap().event, "audit.digest");
    let log: String = (0..v.vault.audit_size())
        .map(|seq| String::from_utf8(v.vault.audit_entry(seq).unwrap().unwrap()).unwrap())
        .collect();
    assert!(!log.contains(leaked));

    // Another string, another digest.
    let r = call(
        &app,
        with_token(
            Method::POST,
            "/v1/audit/digest",
            &auditor,
            Some(&json!({"text": "something else"})),
        ),
    )
    .await;
    assert_ne!(r.json()["digest"], digest.as_str());

    assert_json_refusals(&app, Method::POST, "/v1/audit/digest", &auditor).await;
    for (body, field) in [
        (json!({}), "missing field `text`"),
        (json!({"text": 5}), "text: invalid type"),
        (json!({"text": ["a"]}), "text: invalid type"),
    ] {
        let r = call(
            &app,
            with_token(Method::POST, "/v1/audit/digest", &auditor, Some(&body)),
        )
        .await;
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
        assert!(m.contains(field), "{body}: {m}");
    }
}

#[tokio::test]
async fn bad_export_parameters_are_400() {
    let (v, auditor, _) = busy_vault();
    let app = app(&v);
    let size = v.vault.audit_size();
    for (query, mention) in [
        ("format=xml", "format"),
        ("format=JSONL", "format"),
        ("key=zz", "key"),
        ("key=0123456789abcdef0123456", "key"),
        ("since=yesterday", "since"),
        ("since=2030-02-30T00:00:00Z", "since"),
        ("until=1e9", "until"),
        ("until=-5", "until"),
        ("follow=maybe", "follow"),
        ("follow=true&format=csv", "follow"),
        ("owner=a&limit=5", "limit"),
    ] {
        let r = call(
            &app,
            with_token(
                Method::GET,
                &format!("/v1/audit/export?{query}"),
                &auditor,
                None,
            ),
        )
        .await;
        let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
        assert!(m.contains(mention), "{query}: {m}");
    }
    assert_eq!(v.vault.audit_size(), size, "no export ran");
}

#[tokio::test]
async fn audit_routes_answer_503_while_sealed_and_403_to_other_roles() {
    let v = passphrase_vault();
    v.unseal();
    let verifier_token = v.token(Role::Verifier);
    let operator = v.token(Role::Operator);
    let app = app(&v);
    let routes = [
        (Method::GET, "/v1/audit/export", None),
        (Method::GET, "/v1/audit/export?follow=true", None),
        (Method::GET, "/v1/audit/checkpoint", None),
        (Method::GET, "/v1/audit/proof?index=0&size=1", None),
        (Method::GET, "/v1/audit/public-key", None),
        (Method::POST, "/v1/audit/digest", Some(json!({"text": "x"}))),
    ];
    for (method, uri, body) in &routes {
        for token in [&verifier_token, &operator] {
            let r = call(&app, with_token(method.clone(), uri, token, body.as_ref())).await;
            r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        }
    }
    v.vault.seal(&Context::embedded()).unwrap();
    for (method, uri, body) in &routes {
        let r = call(
            &app,
            with_token(method.clone(), uri, &v.root_token, body.as_ref()),
        )
        .await;
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
    }
}

/// A response body read line by line as it arrives, each read bounded by a deadline.
struct LineStream {
    body: Incoming,
    buf: Vec<u8>,
    conn: JoinHandle<Result<(), hyper::Error>>,
}

impl LineStream {
    async fn open(addr: SocketAddr, uri: &str, token: &str) -> LineStream {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
            .await
            .expect("the response head arrives")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        LineStream {
            body: response.into_body(),
            buf: Vec::new(),
            conn,
        }
    }

    /// The next line (keep-alive newlines included, as empty lines), or `None` at the end.
    async fn line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                return Some(String::from_utf8(line[..at].to_vec()).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame())
                .await
                .expect("the stream went silent past its deadline")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next non-empty line.
    async fn entry_line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            let line = self.line(deadline).await?;
            if !line.is_empty() {
                return Some(line);
            }
        }
    }

    /// Reads the export up to its end line; the tree size of its checkpoint.
    async fn past_checkpoint(&mut self, key: &NoteVerifier) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut size = None;
        loop {
            let line = self.entry_line(deadline).await.expect("the export's lines");
            let value: Value = serde_json::from_str(&line).unwrap();
            if let Some(note) = value["checkpoint"].as_str() {
                let text = key.verify(note).unwrap();
                size = Some(Checkpoint::parse_note_text(&text).unwrap().size);
            }
            if value.get("end").is_some() {
                return size.expect("a checkpoint line before the end line");
            }
        }
    }
}

fn new_token(vault: &Vault) {
    vault
        .create_token(&Context::embedded(), None, Role::Verifier, "later", None)
        .unwrap();
}

#[tokio::test]
async fn a_followed_export_streams_new_entries_until_the_vault_seals() {
    let (v, auditor, _) = busy_vault();
    let key = verifier(&v.audit_public_key);
    let server = Server::start(&v, config()).await;

    let mut all = LineStream::open(server.addr, "/v1/audit/export?follow=true", &auditor).await;
    let mut keys_only = LineStream::open(
        server.addr,
        "/v1/audit/export?follow=true&event=key.create",
        &auditor,
    )
    .await;
    let size = all.past_checkpoint(&key).await;
    keys_only.past_checkpoint(&key).await;

    // Made after both requests started.
    new_token(&v.vault);
    let created = v
        .vault
        .create_key(&Context::embedded(), NewKey::new("carol"))
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = all.entry_line(deadline).await.expect("new entries");
        let entry = Entry::parse(line.as_bytes()).unwrap();
        seen.push((entry.seq, entry.event));
    }
    // Entry `size` is the second request's own export entry, committed after the first
    // request's checkpoint.
    assert_eq!(
        seen,
        [
            (size, "audit.export".to_owned()),
            (size + 1, "token.create".to_owned())
        ]
    );
    let line = keys_only.entry_line(deadline).await.unwrap();
    let entry = Entry::parse(line.as_bytes()).unwrap();
    assert_eq!(entry.event, "key.create");
    assert_eq!(entry.key_id, Some(created.info.key_id.to_string()));
    assert_eq!(entry.owner.as_deref(), Some("carol"));

    // Quiet: keep-alive newlines arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut line = keys_only.line(deadline).await.unwrap();
    while !line.is_empty() {
        line = keys_only.line(deadline).await.unwrap();
    }

    // Sealing ends both streams.
    v.vault.seal(&Context::embedded()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while all.line(deadline).await.is_some() {}
    while keys_only.line(deadline).await.is_some() {}
    server.stop().await;
    drop((all.conn, keys_only.conn));
}

/// Reads `stream` to its end, which must come by `deadline` (keep-alive newlines do not count).
async fn ends_by(stream: &mut LineStream, deadline: Instant) {
    while stream.line(deadline).await.is_some() {}
}

/// Issue 18, item 5: a followed export kept streaming after the token that opened it was
/// revoked. Each poll now checks the token again; the stream ends within a poll or two.
#[tokio::test]
async fn a_followed_export_ends_when_its_token_is_revoked() {
    let (v, auditor, _) = busy_vault();
    let other = v.token(Role::Auditor);
    let key = verifier(&v.audit_public_key);
    let server = Server::start(&v, config()).await;
    let mut revoked = LineStream::open(server.addr, "/v1/audit/export?follow=true", &auditor).await;
    let mut kept = LineStream::open(server.addr, "/v1/audit/export?follow=true", &other).await;
    revoked.past_checkpoint(&key).await;
    kept.past_checkpoint(&key).await;

    let id = v.vault.check_token(&auditor).unwrap().unwrap().token_id;
    v.vault.revoke_token(&Context::embedded(), &id).unwrap();
    ends_by(&mut revoked, Instant::now() + Duration::from_secs(3)).await;

    // The other follower goes on, and sees the revoke.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = kept.entry_line(deadline).await.expect("the revoke's entry");
        if Entry::parse(line.as_bytes()).unwrap().event == "token.revoke" {
            break;
        }
    }
    server.stop().await;
    drop((revoked.conn, kept.conn));
}

/// A followed export also ends when its token expires. There is no injectable clock, so the
/// token lives 2 s (at least 1 s: expiry is checked to the second).
#[tokio::test]
async fn a_followed_export_ends_when_its_token_expires() {
    let (v, _, _) = busy_vault();
    let key = verifier(&v.audit_public_key);
    let issued = v
        .vault
        .create_token(&Context::embedded(), None, Role::Auditor, "brief", Some(2))
        .unwrap();
    let token = issued.token.expose_secret_text().expose_secret().to_owned();
    let expires_at = issued.info.expires_at.unwrap();
    let server = Server::start(&v, config()).await;
    let mut follower = LineStream::open(server.addr, "/v1/audit/export?follow=true", &token).await;
    follower.past_checkpoint(&key).await;
    ends_by(&mut follower, Instant::now() + Duration::from_secs(5)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now >= expires_at,
        "the stream ended before the token expired"
    );
    server.stop().await;
    drop(follower.conn);
}

#[tokio::test]
async fn a_follower_that_leaves_ends_its_stream() {
    let (v, auditor, _) = busy_vault();
    let key = verifier(&v.audit_public_key);
    let server = Server::start(&v, config()).await;
    let mut follower =
        LineStream::open(server.addr, "/v1/audit/export?follow=true", &auditor).await;
    follower.past_checkpoint(&key).await;
    // The client goes away without a word.
    follower.conn.abort();
    drop(follower.body);
    server.stop().await;

    // The follow task holds a handle of the vault until it ends; the vault opens again (its
    // lock is free) only once every handle is gone.
    let dir = v.into_dir();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Vault::open(dir.path()) {
            Ok(_) => break,
            Err(vault_core::Error::InUse(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the follow task still holds the vault: {e}"),
        }
    }
}
