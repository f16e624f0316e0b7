//! The witness's HTTP face ([`vault_server::witness_app`]) fed real checkpoints and consistency
//! proofs of real vaults: what it cosigns, what it refuses and how it says so on the wire
//! (C2SP `tlog-witness`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use vault_core::audit::cosignature::{CosignatureVerifier, add_signatures};
use vault_core::audit::log::SignedCheckpoint;
use vault_core::audit::note::{NoteSigner, NoteVerifier};
use vault_core::kdf::Passphrase;
use vault_core::keys::NewKey;
use vault_core::testing::copy_dir;
use vault_core::witness::Witness;
use vault_core::witness::protocol::{AddCheckpoint, MAX_BODY};
use vault_core::{Context, Vault};

use crate::support::{PASSPHRASE, Reply, TestVault, call, get, passphrase_vault};

/// A witness of the logs whose verifier keys are given, in a temporary directory.
struct TestWitness {
    app: Router,
    dir: TempDir,
}

impl TestWitness {
    fn new(logs: &[&str]) -> TestWitness {
        let dir = tempfile::tempdir().unwrap();
        let logs: Vec<NoteVerifier> = logs
            .iter()
            .map(|k| NoteVerifier::parse(k).unwrap())
            .collect();
        let (witness, created) = Witness::open(dir.path(), "witness.test/w1", &logs).unwrap();
        assert!(created);
        TestWitness {
            app: vault_server::witness_app(Arc::new(witness)),
            dir,
        }
    }

    /// The witness's verifier key, read from its directory as `keyvault witness key` does.
    fn key(&self) -> CosignatureVerifier {
        Witness::key(self.dir.path()).unwrap()
    }

    async fn add(&self, body: impl Into<Body>) -> Reply {
        call(&self.app, add_checkpoint(body)).await
    }

    /// `GET /<origin hash>/checkpoint`.
    async fn latest(&self, origin: &str) -> Reply {
        let hash = hex::encode(Sha256::digest(origin.as_bytes()));
        call(&self.app, get(&format!("/{hash}/checkpoint"))).await
    }
}

fn add_checkpoint(body: impl Into<Body>) -> Request<Body> {
    Request::post("/add-checkpoint")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body.into())
        .unwrap()
}

/// An unsealed passphrase vault whose log has grown by `entries` key creations.
fn busy_vault(entries: usize) -> TestVault {
    let v = passphrase_vault();
    v.unseal();
    grow(&v.vault, entries);
    v
}

fn grow(vault: &Vault, entries: usize) {
    for i in 0..entries {
        vault
            .create_key(&Context::embedded(), NewKey::new(format!("owner-{i}")))
            .unwrap();
    }
}

/// A fresh checkpoint of `vault` and the `add-checkpoint` body that takes a witness from `old`
/// to it.
fn request(vault: &Vault, old: u64) -> (SignedCheckpoint, String) {
    let signed = vault.audit_checkpoint().unwrap();
    let proof = vault
        .audit_consistency_proof(old, signed.checkpoint.size)
        .unwrap();
    let body = AddCheckpoint {
        old,
        proof,
        checkpoint: signed.note.clone(),
    }
    .to_body();
    (signed, body)
}

fn text(reply: &Reply) -> &str {
    std::str::from_utf8(&reply.body).unwrap()
}

#[track_caller]
fn assert_text(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", text(reply));
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_checkpoint_is_cosigned_and_the_monitor_gets_it_back_with_both_signatures() {
    let v = busy_vault(3);
    let w = TestWitness::new(&[&v.audit_public_key]);
    let (signed, body) = request(&v.vault, 0);
    let origin = signed.checkpoint.origin.clone();
    // Nothing cosigned yet.
    assert_text(&w.latest(&origin).await, StatusCode::NOT_FOUND);

    let before = now();
    let reply = w.add(body).await;
    assert_text(&reply, StatusCode::OK);
    let lines = text(&reply);
    assert!(
        lines.starts_with("\u{2014} witness.test/w1 ") && lines.ends_with('\n'),
        "{lines}"
    );
    let time = w
        .key()
        .verify(&add_signatures(&signed.note, lines))
        .unwrap();
    assert!((before..=now()).contains(&time), "{time}");

    let latest = w.latest(&origin).await;
    assert_text(&latest, StatusCode::OK);
    let note = text(&latest);
    assert_eq!(w.key().verify(note), Ok(time));
    let log = NoteVerifier::parse(&v.audit_public_key).unwrap();
    log.verify(note).unwrap();
    assert!(note.starts_with(&signed.note[..signed.note.find("\n\n").unwrap()]));

    // The log grows: the witness follows with a consistency proof from what it holds.
    grow(&v.vault, 2);
    let (newer, body) = request(&v.vault, signed.checkpoint.size);
    assert!(newer.checkpoint.size > signed.checkpoint.size);
    let reply = w.add(body).await;
    assert_text(&reply, StatusCode::OK);
    w.key()
        .verify(&add_signatures(&newer.note, text(&reply)))
        .unwrap();
    let latest = w.latest(&origin).await;
    assert!(
        text(&latest).contains(&format!("\n{}\n", newer.checkpoint.size)),
        "{}",
        text(&latest)
    );

    // Monitors of other logs, and other paths, find nothing.
    assert_text(&w.latest("keyvault/unknown").await, StatusCode::NOT_FOUND);
    for path in ["/", "/checkpoint", "/abc/checkpoint", "/v1/sys/health"] {
        assert_text(&call(&w.app, get(path)).await, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn an_old_size_that_is_not_the_witnesses_is_409_with_its_size_as_text_x_tlog_size() {
    let v = busy_vault(2);
    let w = TestWitness::new(&[&v.audit_public_key]);
    let (first, body) = request(&v.vault, 0);
    assert_text(&w.add(body).await, StatusCode::OK);
    grow(&v.vault, 3);
    let (newer, _) = request(&v.vault, 0);
    for old in [0, 1, newer.checkpoint.size] {
        let body = AddCheckpoint {
            old,
            proof: v
                .vault
                .audit_consistency_proof(old, newer.checkpoint.size)
                .unwrap(),
            checkpoint: newer.note.clone(),
        }
        .to_body();
        let reply = w.add(body).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "old {old}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], "text/x.tlog.size");
        assert_eq!(text(&reply), format!("{}\n", first.checkpoint.size));
    }
    // What the 409 said is what the client needs to go on.
    let (_, body) = request(&v.vault, first.checkpoint.size);
    assert_text(&w.add(body).await, StatusCode::OK);
}

/// Opens the vault in `dir`, sealed, waiting for its last handle to let go.
async fn open_when_closed(dir: &Path) -> Vault {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Vault::open(dir) {
            Ok(vault) => return vault,
            Err(vault_core::Error::InUse(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
}

/// Opens and unseals the vault in `dir`.
async fn reopen(dir: &Path) -> Vault {
    let vault = open_when_closed(dir).await;
    vault
        .unseal_passphrase(&Context::embedded(), &Passphrase::new(PASSPHRASE))
        .unwrap();
    vault
}

#[tokio::test]
async fn a_rolled_back_data_directory_that_forks_the_log_gets_422_and_is_never_cosigned() {
    let v = busy_vault(2);
    let w = TestWitness::new(&[&v.audit_public_key]);
    v.vault.seal(&Context::embedded()).unwrap();
    let dir = v.into_dir();
    let copy = tempfile::tempdir().unwrap();
    let rolled_dir = copy.path().join("vault");
    // The vault is closed once every handle is gone: wait for that, then take the copy.
    drop(open_when_closed(dir.path()).await);
    copy_dir(dir.path(), &rolled_dir);

    // The real vault goes on and its checkpoint is cosigned.
    let vault = reopen(dir.path()).await;
    grow(&vault, 3);
    let (real, body) = request(&vault, 0);
    assert_text(&w.add(body).await, StatusCode::OK);

    // The old copy is served instead and writes a different history past that size.
    let rolled = reopen(&rolled_dir).await;
    grow(&rolled, 8);
    let fork = rolled.audit_checkpoint().unwrap();
    assert_eq!(fork.checkpoint.origin, real.checkpoint.origin);
    assert!(fork.checkpoint.size > real.checkpoint.size);
    // Asked with the size the witness holds, and the fork's own proof from it.
    let body = AddCheckpoint {
        old: real.checkpoint.size,
        proof: rolled
            .audit_consistency_proof(real.checkpoint.size, fork.checkpoint.size)
            .unwrap(),
        checkpoint: fork.note.clone(),
    }
    .to_body();
    let reply = w.add(body).await;
    assert_text(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(&reply).contains("consistency"), "{}", text(&reply));
    // A client that starts from nothing learns the real size instead.
    let (_, body) = request(&rolled, 0);
    let reply = w.add(body).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(text(&reply), format!("{}\n", real.checkpoint.size));

    // Monitors still see the real checkpoint, and the real log still extends.
    let latest = w.latest(&real.checkpoint.origin).await;
    assert!(
        text(&latest).contains(&format!("\n{}\n", real.checkpoint.size)),
        "{}",
        text(&latest)
    );
    grow(&vault, 1);
    let (_, body) = request(&vault, real.checkpoint.size);
    assert_text(&w.add(body).await, StatusCode::OK);
}

#[tokio::test]
async fn unknown_logs_are_404_and_checkpoints_without_a_valid_log_signature_403() {
    let v = busy_vault(2);
    let stranger = busy_vault(1);
    let w = TestWitness::new(&[&v.audit_public_key]);
    let (_, body) = request(&stranger.vault, 0);
    let reply = w.add(body).await;
    assert_text(&reply, StatusCode::NOT_FOUND);

    let (signed, _) = request(&v.vault, 0);
    let (text_part, signature) = signed.note.split_once("\n\n").unwrap();
    let note_text = format!("{text_part}\n");
    // The right origin signed by another key.
    let impostor = NoteSigner::from_seed(&signed.checkpoint.origin, &[9; 32]).unwrap();
    let forged = impostor.sign(&note_text).unwrap();
    // The log's own signature line with one signature byte flipped.
    let (prefix, b64) = signature.trim_end().rsplit_once(' ').unwrap();
    let mut sig = STANDARD.decode(b64).unwrap();
    *sig.last_mut().unwrap() ^= 1;
    let flipped = format!("{note_text}\n{prefix} {}\n", STANDARD.encode(&sig));
    for note in [forged, flipped] {
        let body = AddCheckpoint {
            old: 0,
            proof: Vec::new(),
            checkpoint: note,
        }
        .to_body();
        let reply = w.add(body).await;
        assert_text(&reply, StatusCode::FORBIDDEN);
    }
    // None of it was recorded.
    assert_text(
        &w.latest(&signed.checkpoint.origin).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn oversized_non_utf8_and_malformed_bodies_are_4xx_in_text() {
    let v = busy_vault(1);
    let w = TestWitness::new(&[&v.audit_public_key]);
    let huge = vec![b'a'; MAX_BODY + 1];
    // Declared too large: refused before reading.
    let req = Request::post("/add-checkpoint")
        .header(header::CONTENT_LENGTH, huge.len())
        .body(Body::from(huge.clone()))
        .unwrap();
    assert_text(&call(&w.app, req).await, StatusCode::PAYLOAD_TOO_LARGE);
    // Undeclared: refused when the stream passes the limit.
    let stream = futures_util::stream::iter(
        huge.chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let reply = w.add(Body::from_stream(stream)).await;
    assert_text(&reply, StatusCode::PAYLOAD_TOO_LARGE);
    // A body of exactly the limit is read (and is malformed).
    assert_text(&w.add(vec![b'a'; MAX_BODY]).await, StatusCode::BAD_REQUEST);

    let (_, body) = request(&v.vault, 0);
    let mut not_utf8 = body.clone().into_bytes();
    not_utf8.push(0xff);
    let reply = w.add(not_utf8).await;
    assert_text(&reply, StatusCode::BAD_REQUEST);
    assert!(text(&reply).contains("UTF-8"));
    for bad in [
        String::new(),
        "old 0\n".to_owned(),
        body.replacen("old 0", "old 01", 1),
        body.replacen("old 0", "old 99999", 1),
    ] {
        assert_text(&w.add(bad).await, StatusCode::BAD_REQUEST);
    }
    let reply = call(&w.app, get("/add-checkpoint")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    // After all that, the checkpoint is cosigned as if nothing happened.
    assert_text(&w.add(body).await, StatusCode::OK);
}

#[tokio::test]
async fn the_witness_answers_on_a_real_listener_and_stops_when_told() {
    let v = busy_vault(1);
    let w = TestWitness::new(&[&v.audit_public_key]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vault_server::serve_router(
        listener,
        w.app.clone(),
        vault_server::Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let (signed, body) = request(&v.vault, 0);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/add-checkpoint")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let lines = response.into_body().collect().await.unwrap().to_bytes();
    let lines = std::str::from_utf8(&lines).unwrap();
    w.key()
        .verify(&add_signatures(&signed.note, lines))
        .unwrap();
    drop(sender);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve_router drains and returns")
        .unwrap()
        .unwrap();
}
