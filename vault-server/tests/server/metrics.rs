//! `GET /metrics`: Prometheus text, no token on loopback, answers while sealed; any valid token
//! elsewhere (`/openapi.json` too). Counters and the histogram are per process (shared with
//! every other test here), so they are checked as increases.

use axum::http::{Method, StatusCode, header};
use secrecy::ExposeSecret;
use serde_json::json;
use vault_core::Context;
use vault_core::keys::NewKey;
use vault_core::tokens::Role;

use crate::support::{Reply, app, call, get, passphrase_vault, with_token};

/// The value of the sample `name` (with its labels, exactly as rendered), if present.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

fn text(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test]
async fn metrics_answer_while_sealed_and_follow_the_seal_state() {
    let v = passphrase_vault();
    let app = app(&v);

    let scrape = text(&call(&app, get("/metrics")).await);
    assert_eq!(sample(&scrape, "keyvault_sealed"), Some(1.0), "{scrape}");
    assert!(scrape.contains("# TYPE keyvault_sealed gauge"), "{scrape}");
    let size = v.vault.audit_size() as f64;
    assert_eq!(sample(&scrape, "keyvault_audit_entries"), Some(size));
    assert_eq!(sample(&scrape, "keyvault_audit_queue_depth"), Some(0.0));
    assert_eq!(sample(&scrape, "keyvault_record_rollbacks"), Some(0.0));
    assert!(
        scrape.contains("# TYPE keyvault_record_rollbacks gauge"),
        "{scrape}"
    );

    v.unseal();
    // A token is neither needed nor looked at.
    let r = call(
        &app,
        with_token(Method::GET, "/metrics", "kvt_not_a_token", None),
    )
    .await;
    let scrape = text(&r);
    assert_eq!(sample(&scrape, "keyvault_sealed"), Some(0.0), "{scrape}");
    let size = v.vault.audit_size() as f64;
    assert_eq!(sample(&scrape, "keyvault_audit_entries"), Some(size));

    let r = call(&app, with_token(Method::POST, "/metrics", "x", None)).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn off_loopback_metrics_and_the_openapi_document_need_a_valid_token_of_any_role() {
    let v = passphrase_vault();
    // A router served some other way than on loopback or a Unix socket.
    let state = vault_server::AppState::new(v.vault.clone()).with_config(crate::support::config());
    let network = vault_server::app(state);
    let local = app(&v);
    for path in ["/metrics", "/openapi.json"] {
        // Sealed: no token can be checked.
        let r = call(&network, get(path)).await;
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "sealed");
        assert_eq!(call(&local, get(path)).await.status, StatusCode::OK);
    }
    v.unseal();
    for path in ["/metrics", "/openapi.json"] {
        let r = call(&network, get(path)).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let r = call(
            &network,
            with_token(Method::GET, path, "kvt_not_a_token", None),
        )
        .await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        for role in [Role::Verifier, Role::Auditor, Role::Operator] {
            let token = v.token(role);
            let r = call(&network, with_token(Method::GET, path, &token, None)).await;
            assert_eq!(r.status, StatusCode::OK, "{path} {role:?}");
        }
        // On loopback: no token.
        assert_eq!(call(&local, get(path)).await.status, StatusCode::OK);
    }

    // `serve` judges its listener: loopback needs no token, the unspecified address (every
    // interface) does.
    let open = crate::support::Server::start(&v, crate::support::config()).await;
    let r = open.send(Method::GET, "/metrics", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    open.stop().await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = vault_server::AppState::new(v.vault.clone()).with_config(crate::support::config());
    let task = tokio::spawn(vault_server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let get_metrics = |token: Option<String>| async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = axum::http::Request::get("/metrics");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap().status()
    };
    assert_eq!(get_metrics(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_metrics(Some(v.token(Role::Verifier))).await,
        StatusCode::OK
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn verifies_are_counted_by_code_and_timed() {
    let v = passphrase_vault();
    v.unseal();
    let app = app(&v);
    let verifier = v.token(Role::Verifier);
    let issued = v
        .vault
        .create_key(&Context::embedded(), NewKey::new("dana"))
        .unwrap();
    let key = issued.key.expose_secret_text().expose_secret().to_owned();

    let valid = "keyvault_verifies_total{code=\"VALID\"}";
    let malformed = "keyvault_verifies_total{code=\"MALFORMED\"}";
    let count = "keyvault_verify_seconds_count";
    let before = text(&call(&app, get("/metrics")).await);
    let at = |scrape: &str, name: &str| sample(scrape, name).unwrap_or(0.0);

    for body in [
        json!({"key": key}),
        json!({"key": key}),
        json!({"key": key}),
        json!({"key": "pvk_nonsense"}),
    ] {
        let r = call(
            &app,
            with_token(Method::POST, "/v1/keys/verify", &verifier, Some(&body)),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    }

    let after = text(&call(&app, get("/metrics")).await);
    assert!(at(&after, valid) >= at(&before, valid) + 3.0, "{after}");
    assert!(
        at(&after, malformed) >= at(&before, malformed) + 1.0,
        "{after}"
    );
    assert!(at(&after, count) >= at(&before, count) + 4.0, "{after}");
    assert!(
        after.contains("# TYPE keyvault_verifies_total counter"),
        "{after}"
    );
    assert!(
        after.contains("# TYPE keyvault_verify_seconds histogram"),
        "{after}"
    );
    // Buckets in seconds, 50 µs to 1 s.
    for le in ["0.00005", "0.001", "1", "+Inf"] {
        let bucket = format!("keyvault_verify_seconds_bucket{{le=\"{le}\"}}");
        assert!(sample(&after, &bucket).is_some(), "{bucket}: {after}");
    }
    let all = sample(&after, "keyvault_verify_seconds_bucket{le=\"+Inf\"}").unwrap();
    assert_eq!(all, at(&after, count));
}

/// The disk watch of a running server: its figures in `/metrics`, and the alarm (gauge,
/// counter, log line) when the filesystem is over the high-water mark; none under it.
#[tokio::test]
async fn the_disk_watch_reports_figures_and_raises_the_alarm_over_the_mark() {
    use std::time::Duration;

    use crate::support::{Server, config, logs};

    async fn scrape_until(server: &Server, done: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            let r = server.send(Method::GET, "/metrics", &[], "").await;
            let scrape = text(&r);
            if done(&scrape) {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the disk watch never reported");
    }

    // Any real filesystem is at least 1 % full: the alarm must rise.
    let v = passphrase_vault();
    v.unseal();
    let mut low = config();
    low.disk_high_water_percent = 1;
    low.disk_check_interval = Duration::from_millis(50);
    let alarms_before = {
        let server = Server::start(&v, config()).await;
        let r = server.send(Method::GET, "/metrics", &[], "").await;
        let before = sample(&text(&r), "keyvault_disk_alarms_total").unwrap_or(0.0);
        server.stop().await;
        before
    };
    let server = Server::start(&v, low).await;
    let scrape = scrape_until(&server, |s| sample(s, "keyvault_disk_alarm") == Some(1.0)).await;
    assert!(
        sample(&scrape, "keyvault_data_dir_bytes").unwrap() > 0.0,
        "{scrape}"
    );
    let total = sample(&scrape, "keyvault_disk_total_bytes").unwrap();
    let available = sample(&scrape, "keyvault_disk_available_bytes").unwrap();
    assert!(total > 0.0 && available <= total, "{scrape}");
    let live = v.vault.audit_size() as f64;
    assert!(sample(&scrape, "keyvault_audit_live_entries").unwrap() <= live);
    let oldest = sample(&scrape, "keyvault_audit_oldest_entry_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        oldest > now - 600.0 && oldest <= now + 1.0,
        "{oldest} {now}"
    );
    assert!(sample(&scrape, "keyvault_disk_alarms_total").unwrap() >= alarms_before + 1.0);
    assert!(logs().contains("DISK ALARM"), "no alarm log line");
    // And a usage signal, shown without an owner filter, counted by kind.
    let manager = v.token(Role::Manager);
    let auth = format!("Bearer {manager}");
    let r = server
        .send(Method::GET, "/v1/signals", &[("authorization", &auth)], "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let signals = r.json()["signals"].as_array().unwrap().clone();
    assert!(
        signals
            .iter()
            .any(|s| s["kind"] == "disk_alarm" && s["key_id"].is_null()),
        "{signals:?}"
    );
    let scrape = scrape_until(&server, |s| {
        sample(s, "keyvault_usage_signals_total{kind=\"disk_alarm\"}").is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(scrape.contains("disk_alarm"));
    server.stop().await;

    // At 100 % the alarm stays down.
    let mut high = config();
    high.disk_high_water_percent = 100;
    high.disk_check_interval = Duration::from_millis(50);
    let server = Server::start(&v, high).await;
    // Several readings' time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    scrape_until(&server, |s| sample(s, "keyvault_disk_alarm") == Some(0.0)).await;
    server.stop().await;
}

/// Prometheus' own checker (`promtool check metrics`, run by `scripts/check-prometheus.sh`)
/// wants help text on every family; this is the part of it that needs no tool.
#[tokio::test]
async fn every_metric_family_has_help_text() {
    let v = passphrase_vault();
    let app = app(&v);
    let scrape = text(&call(&app, get("/metrics")).await);
    let families: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        families.contains(&"keyvault_verify_failures_unattributed_total"),
        "{scrape}"
    );
    for family in families {
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with(&format!("# HELP {family} ")) && l.len() > 10 + family.len()),
            "{family} has no help text:\n{scrape}"
        );
    }
}
