//! Bad input and hostile clients: every refusal is a JSON error (or, below HTTP, a closed
//! connection), never a hang, a 422, a 500 or a plain-text body.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vault_server::{Limits, ServerConfig};

use crate::support::{
    PASSPHRASE, Server, app, app_with, call, config, get, post_json, shares_vault, unseal,
};

fn unseal_with_type(content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::post("/v1/sys/unseal");
    if let Some(t) = content_type {
        req = req.header(header::CONTENT_TYPE, t);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn unseal_needs_a_json_content_type() {
    let v = shares_vault();
    let app = app(&v);
    // A reset with no progress: a no-op, answered 200 when the body gets through.
    let body = json!({"reset": true, "share": v.shares[0]}).to_string();
    let body = body.as_str();
    for bad in [
        None,
        Some("text/plain"),
        Some("application/jsonx"),
        Some("application/json; charset=latin1"),
    ] {
        let r = call(&app, unseal_with_type(bad, body)).await;
        r.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    for good in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=\"UTF-8\"",
    ] {
        let r = call(&app, unseal_with_type(Some(good), body)).await;
        assert_eq!(r.status, StatusCode::OK, "{good}");
    }
}

#[tokio::test]
async fn malformed_unseal_bodies_are_400_naming_the_problem() {
    let v = shares_vault();
    let app = app(&v);

    let r = call(&app, post_json("/v1/sys/unseal", "{\"reset\": tru")).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(m.contains("not valid JSON"), "{m}");

    let r = call(&app, post_json("/v1/sys/unseal", "")).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");

    let r = call(&app, post_json("/v1/sys/unseal", "{\"reset\": true} {}")).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");

    let r = call(&app, unseal(&json!({"reset": true, "foo": 1}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(m.contains("unknown field `foo`"), "{m}");

    let r = call(&app, unseal(&json!({"reset": "yes"}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        m.starts_with("reset: invalid type: string, expected a boolean"),
        "{m}"
    );

    // A secret sent in the wrong field is not echoed back.
    let r = call(&app, unseal(&json!({"reset": PASSPHRASE}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(!m.contains("horse"), "{m}");
    let r = call(&app, unseal(&json!({"passphrase": 1234567}))).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        m.starts_with("passphrase: invalid type: integer, expected a string"),
        "{m}"
    );
    assert!(!m.contains("1234567"), "{m}");

    let r = call(&app, unseal(&json!([1, 2]))).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");

    // Not UTF-8, inside a string and outside one.
    let r = call(
        &app,
        post_json("/v1/sys/unseal", b"{\"share\": \"\xff\xfe\"}".to_vec()),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");
    let r = call(&app, post_json("/v1/sys/unseal", b"\xff{}".to_vec())).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_body");

    // Exactly one of `passphrase` or `share`, or `reset` with `share`.
    for body in [
        json!({}),
        json!({"passphrase": PASSPHRASE, "share": v.shares[0]}),
        json!({"reset": true}),
        json!({"passphrase": PASSPHRASE, "reset": true}),
        json!({"share": v.shares[0], "reset": false}),
        json!({"reset": false}),
    ] {
        let r = call(&app, unseal(&body)).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    }
    assert_eq!(
        call(&app, get("/v1/sys/seal-status")).await.json()["progress"],
        0
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let v = shares_vault();
    let app = app(&v);
    let huge = format!("{{\"share\": \"{}\"}}", "a".repeat(100 * 1024));

    // Declared too long: refused before reading.
    let req = Request::post("/v1/sys/unseal")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, huge.len())
        .body(Body::from(huge.clone()))
        .unwrap();
    call(&app, req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // Undeclared (no content-length): refused when the body passes the limit.
    let req = post_json("/v1/sys/unseal", huge.clone());
    assert!(!req.headers().contains_key(header::CONTENT_LENGTH));
    call(&app, req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // A smaller configured limit applies too.
    let small = ServerConfig {
        limits: Limits {
            body_bytes: 16,
            ..Limits::default()
        },
        ..config()
    };
    let r = call(
        &app_with(&v, small),
        unseal(&json!({"reset": true, "x": "0123456789"})),
    )
    .await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // And through a real server.
    let server = Server::start(&v, config()).await;
    let r = server
        .send(
            Method::POST,
            "/v1/sys/unseal",
            &[("content-type", "application/json")],
            &huge,
        )
        .await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let v = shares_vault();
    let app = app(&v);

    call(&app, get("/nope"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    call(&app, get("/v1/sys/nope?x=1"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let r = call(&app, post_json("/v1/nope", "{}")).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found");

    let r = call(&app, get("/v1/sys/unseal")).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(r.headers[header::ALLOW], "POST");
    let r = call(&app, post_json("/v1/sys/health", "{}")).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let allow = r.headers[header::ALLOW].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
}

#[tokio::test]
async fn the_request_id_is_echoed_or_made() {
    let v = shares_vault();
    let app = app(&v);
    let with_id = |id: &str| {
        Request::get("/v1/sys/seal-status")
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let is_generated = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());

    let r = call(&app, with_id("req-42_abc.DEF")).await;
    assert_eq!(r.headers["x-request-id"], "req-42_abc.DEF");
    let long = "a".repeat(128);
    assert_eq!(
        call(&app, with_id(&long)).await.headers["x-request-id"],
        long.as_str()
    );

    for bad in ["a".repeat(129), "has space".to_owned(), String::new()] {
        let r = call(&app, with_id(&bad)).await;
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert!(is_generated(id), "{bad:?} -> {id}");
    }

    let a = call(&app, get("/v1/sys/seal-status")).await;
    let b = call(&app, get("/v1/sys/seal-status")).await;
    let (a, b) = (
        a.headers["x-request-id"].to_str().unwrap(),
        b.headers["x-request-id"].to_str().unwrap(),
    );
    assert!(is_generated(a) && is_generated(b) && a != b);

    // Errors carry it too, from the router's fallback to the guards.
    let r = call(
        &app,
        Request::get("/nope")
            .header("x-request-id", "e1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "e1");
    let r = call(&app, unseal_with_type(Some("text/plain"), "{}")).await;
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn over_the_concurrency_cap_is_503_at_once() {
    let v = shares_vault();
    let config = ServerConfig {
        limits: Limits {
            concurrency: 1,
            ..Limits::default()
        },
        unseal_failure_delay: Duration::from_millis(600),
        ..ServerConfig::default()
    };
    let app = app_with(&v, config);

    // A failed unseal holds the only slot for its delay.
    let slow = tokio::spawn({
        let app = app.clone();
        async move { call(&app, unseal(&json!({"share": "kvs1_00"}))).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let start = Instant::now();
    let r = call(&app, get("/v1/sys/seal-status")).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(r.headers.contains_key("x-request-id"));
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "shed, not queued"
    );

    slow.await
        .unwrap()
        .assert_error(StatusCode::BAD_REQUEST, "invalid_share");
    let r = call(&app, get("/v1/sys/seal-status")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_503() {
    let v = shares_vault();
    let config = ServerConfig {
        limits: Limits {
            request_timeout: Duration::from_millis(100),
            ..Limits::default()
        },
        unseal_failure_delay: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let app = app_with(&v, config);
    let start = Instant::now();
    let r = call(&app, unseal(&json!({"share": "kvs1_00"}))).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "timeout");
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// Sends `head` on a raw connection and reads until the server answers or closes.
/// Returns the status line, or `None` if the connection was reset or closed without one.
async fn raw_exchange(server: &Server, head: Vec<u8>) -> Option<String> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Write in the background: the server may stop reading (and reset) before the end.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&head).await;
        write
    });
    let mut answer = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes, it does not hang");
    drop(writer);
    match outcome {
        Ok(_) if !answer.is_empty() => {
            let text = String::from_utf8_lossy(&answer);
            Some(text.lines().next().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

fn request_with_header(bytes: usize) -> Vec<u8> {
    format!(
        "GET /v1/sys/seal-status HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-filler: {}\r\n\r\n",
        "a".repeat(bytes)
    )
    .into_bytes()
}

#[tokio::test]
async fn overlong_headers_are_refused_not_hung() {
    let v = shares_vault();
    let server = Server::start(&v, config()).await;

    let ok = raw_exchange(&server, request_with_header(8 * 1024)).await;
    assert_eq!(ok.as_deref(), Some("HTTP/1.1 200 OK"));

    // hyper answers 431 and closes; a client still writing may see the reset before the answer,
    // so not every exchange must show the 431, but at least one must and none may show more.
    let mut answered = 0;
    for size in [20 * 1024, 100 * 1024, 1024 * 1024] {
        if let Some(line) = raw_exchange(&server, request_with_header(size)).await {
            assert!(line.starts_with("HTTP/1.1 431"), "{size}: {line}");
            answered += 1;
        }
    }
    assert!(answered > 0, "no 431 seen");

    // Many headers, each small.
    let mut head = b"GET /v1/sys/seal-status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
    for i in 0..200 {
        head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    if let Some(line) = raw_exchange(&server, head).await {
        assert!(line.starts_with("HTTP/1.1 431"), "{line}");
    }

    // The server is still there.
    let r = server
        .send(Method::GET, "/v1/sys/seal-status", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    let v = shares_vault();
    let config = ServerConfig {
        limits: Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
        ..config()
    };
    let server = Server::start(&v, config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/sys/seal-status HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes a slow connection");
    assert!(start.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let v = shares_vault();
    let config = ServerConfig {
        unseal_failure_delay: Duration::from_millis(500),
        ..config()
    };
    let server = Server::start(&v, config).await;
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post("/v1/sys/unseal")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(axum::body::Bytes::from_static(
                br#"{"share": "kvs1_00"}"#,
            )))
            .unwrap();
        sender.send_request(req).await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let start = Instant::now();
    server.stop().await;
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "waited for the request"
    );
    assert_eq!(slow.await.unwrap(), StatusCode::BAD_REQUEST);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
