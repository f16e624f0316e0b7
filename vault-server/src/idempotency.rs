//! `Idempotency-Key` on `POST /v1/keys` and `POST /v1/keys/{id}/rotate`: a retry with the same
//! header value, from the same vault token, within [`ServerConfig::idempotency_ttl`] (24 h)
//! gets the first answer again, secret included, instead of a second key or a second rotation.
//!
//! Shortcut, with its trade-off: the answers are kept in this process's memory only, so they do
//! not survive a restart (a retry after one makes a second key), and at most
//! [`ServerConfig::idempotency_max_entries`] are kept (past that the oldest is forgotten early).
//! Each stored answer holds a full key, so it lives in a zeroizing buffer and is wiped when it
//! expires or is evicted and the last response sending it is gone; every answer is forgotten
//! within a second of the vault sealing.
//!
//! Only successes are kept: a request that fails (bad input, a revoked key, a sealed vault) can
//! be retried with the same header value. While the first request is still running, a retry is
//! refused with 409 `idempotency_in_progress`; a retry whose request differs (another body,
//! route or key id) is refused with 409 `idempotency_conflict`, following the IETF
//! `Idempotency-Key` draft and Stripe.
//!
//! [`ServerConfig::idempotency_ttl`]: crate::ServerConfig::idempotency_ttl
//! [`ServerConfig::idempotency_max_entries`]: crate::ServerConfig::idempotency_max_entries

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use vault_core::Vault;
use vault_core::apikey::KeyId;
use vault_core::crypto::{SecretKey, hmac};
use zeroize::Zeroizing;

use crate::ServerConfig;
use crate::error::ApiError;

/// The request header.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header set on a replayed answer (as Stripe names it).
pub(crate) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// How often the store checks whether the vault was sealed.
const SEAL_CHECK: Duration = Duration::from_secs(1);

/// Longest header value accepted, in bytes (as Stripe).
const MAX_KEY_LEN: usize = 255;

/// A JSON answer that carries a secret: wiped when the last holder (the store, a response
/// being written) drops it.
#[derive(Clone)]
pub(crate) struct SecretBody(Arc<Zeroizing<Vec<u8>>>);

/// `value` as JSON in a zeroizing buffer of exactly its size (so no reallocation leaves an
/// unwiped copy of a secret behind): the body of an answer that carries a secret.
pub(crate) fn secret_json(value: &impl serde::Serialize) -> SecretBody {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Invariant: these answers are plain data with string keys, which always serialise.
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("an answer serialises");
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, value).expect("an answer serialises");
    SecretBody::new(out)
}

impl SecretBody {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> SecretBody {
        SecretBody(Arc::new(bytes))
    }

    /// A response with this body, never cached by an intermediary.
    pub(crate) fn response(&self, status: StatusCode) -> Response {
        let mut response = Response::new(Body::from(Bytes::from_owner(self.clone())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl AsRef<[u8]> for SecretBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBody([REDACTED])")
    }
}

/// The store of first answers, one per server.
pub(crate) struct Idempotency {
    /// Keys the fingerprints, so a stored fingerprint says nothing of the request it came from.
    digest_key: SecretKey,
    inner: Mutex<Inner>,
    /// Set once the task that forgets every answer when the vault seals is running.
    watching: OnceLock<()>,
}

/// Which token sent which header value: `HMAC(digest key, token id || header value)`.
type Slot = [u8; 32];

#[derive(Default)]
struct Inner {
    entries: HashMap<Slot, Entry>,
    /// Slots in the order they were claimed (so also in expiry order, the TTL being one value),
    /// each with the sequence number of its claim: an entry removed or claimed again leaves a
    /// stale item here, skipped when it reaches the front.
    order: VecDeque<(u64, Slot)>,
    next_seq: u64,
}

struct Entry {
    seq: u64,
    fingerprint: [u8; 32],
    expires: Instant,
    /// `None` while the first request runs.
    answer: Option<(StatusCode, SecretBody)>,
}

/// What [`Idempotency::begin`] decided.
pub(crate) enum Begin {
    /// The first request with this key: run it, then [`Claim::complete`].
    Fresh(Claim),
    /// A retry: send this stored answer.
    Replay(Response),
}

/// The right to run the first request of an idempotency key. Dropped without
/// [`Claim::complete`] (the request failed, or its task was dropped), it frees the key.
pub(crate) struct Claim {
    store: Arc<Idempotency>,
    slot: Slot,
    seq: u64,
    ttl: Duration,
    done: bool,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            digest_key: SecretKey::random(),
            inner: Mutex::new(Inner::default()),
            watching: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("entries", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// A std mutex, not a Tokio one: no await is held, and the work under it is a map lookup.
    /// A panic under it leaves the maps consistent enough (at worst an entry never completes).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure the answers (each holding a full key) are forgotten within a second of the
    /// vault sealing, as the rest of its key material is: a seal leaves no key in memory. A
    /// retry after the vault is unsealed again then makes a new key. Started by the first
    /// request that uses the store; the task ends when the store is dropped.
    pub(crate) fn forget_on_seal(self: &Arc<Self>, vault: &Vault) {
        self.watching.get_or_init(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let store = Arc::downgrade(self);
            let vault = vault.clone();
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(SEAL_CHECK);
                loop {
                    tick.tick().await;
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    if vault.is_sealed() {
                        let mut inner = store.lock();
                        inner.entries.clear();
                        inner.order.clear();
                    }
                }
            });
        });
    }

    /// Claims `key` (the header value) for `token`, or finds its stored answer. `request` is
    /// what makes two requests the same (route, key id, canonical body); a stored answer is
    /// replayed only for the same request.
    pub(crate) fn begin(
        self: &Arc<Self>,
        config: &ServerConfig,
        token: &KeyId,
        key: &str,
        request: &[&[u8]],
    ) -> Result<Begin, ApiError> {
        let slot = hmac(&self.digest_key, &[token.as_bytes(), key.as_bytes()]);
        let mut parts = Vec::with_capacity(request.len() + 1);
        parts.push(b"request".as_slice());
        parts.extend_from_slice(request);
        let fingerprint = hmac(&self.digest_key, &parts);
        let now = Instant::now();
        let ttl = config.idempotency_ttl;

        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get(&slot)
            && entry.expires > now
        {
            if entry.fingerprint != fingerprint {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "this Idempotency-Key was already used for a different request; use a new \
                     key for a new request",
                ));
            }
            return match &entry.answer {
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                )),
                Some((status, body)) => {
                    let mut response = body.response(*status);
                    response
                        .headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                    Ok(Begin::Replay(response))
                }
            };
        }
        inner.evict(now, config.idempotency_max_entries.max(1));
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.push_back((seq, slot));
        inner.entries.insert(
            slot,
            Entry {
                seq,
                fingerprint,
                expires: now + ttl,
                answer: None,
            },
        );
        Ok(Begin::Fresh(Claim {
            store: Arc::clone(self),
            slot,
            seq,
            ttl,
            done: false,
        }))
    }
}

impl Inner {
    /// Drops expired entries and stale order items, then the oldest entries until one more fits.
    fn evict(&mut self, now: Instant, max: usize) {
        while let Some(&(seq, slot)) = self.order.front() {
            let live = self.entries.get(&slot).filter(|e| e.seq == seq);
            let expired = live.is_some_and(|e| e.expires <= now);
            // Keep stale items from piling up when many claims fail within one TTL.
            let full = self.entries.len() >= max || self.order.len() > 2 * max;
            if live.is_some() && !expired && !full {
                break;
            }
            self.order.pop_front();
            if live.is_some() {
                self.entries.remove(&slot);
                if !expired {
                    tracing::warn!(
                        max,
                        "idempotency store full: forgot the oldest answer before its time"
                    );
                }
            }
        }
    }
}

impl Claim {
    /// Stores the first request's answer for retries. Called where the answer is made (on the
    /// blocking pool), so that it is kept even if the HTTP request was abandoned meanwhile.
    pub(crate) fn complete(mut self, status: StatusCode, body: SecretBody) {
        self.done = true;
        let mut inner = self.store.lock();
        if let Some(entry) = inner.entries.get_mut(&self.slot)
            && entry.seq == self.seq
        {
            entry.answer = Some((status, body));
            entry.expires = Instant::now() + self.ttl;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = self.store.lock();
        if inner
            .entries
            .get(&self.slot)
            .is_some_and(|e| e.seq == self.seq)
        {
            inner.entries.remove(&self.slot);
        }
    }
}

/// The request's `Idempotency-Key`, if any: 1 to 255 visible ASCII characters, else 400.
pub(crate) fn header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if values.next().is_some()
        || bytes.is_empty()
        || bytes.len() > MAX_KEY_LEN
        || !bytes.iter().all(u8::is_ascii_graphic)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "Idempotency-Key must be one header of 1 to 255 visible ASCII characters (a UUID, \
             say)",
        ));
    }
    // Visible ASCII is UTF-8.
    Ok(value.to_str().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(max: usize, ttl: Duration) -> ServerConfig {
        ServerConfig {
            idempotency_max_entries: max,
            idempotency_ttl: ttl,
            ..ServerConfig::default()
        }
    }

    fn body(text: &str) -> SecretBody {
        SecretBody::new(Zeroizing::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn replays_refuses_and_forgets() {
        let store = Arc::new(Idempotency::default());
        let c = config(2, Duration::from_secs(60));
        let token = KeyId::from_bytes([1; 12]);
        let other = KeyId::from_bytes([2; 12]);

        let Ok(Begin::Fresh(claim)) = store.begin(&c, &token, "k1", &[b"a"]) else {
            panic!("fresh");
        };
        // In flight: the same request waits, another conflicts.
        let e = store.begin(&c, &token, "k1", &[b"a"]).err().unwrap();
        assert_eq!(e.code, "idempotency_in_progress");
        let e = store.begin(&c, &token, "k1", &[b"b"]).err().unwrap();
        assert_eq!(e.code, "idempotency_conflict");
        claim.complete(StatusCode::CREATED, body("{}"));
        assert!(matches!(
            store.begin(&c, &token, "k1", &[b"a"]),
            Ok(Begin::Replay(r)) if r.status() == StatusCode::CREATED
        ));
        // The same header value from another token is another slot.
        assert!(matches!(
            store.begin(&c, &other, "k1", &[b"a"]),
            Ok(Begin::Fresh(_))
        ));
        // A dropped claim frees its key.
        let Ok(Begin::Fresh(claim)) = store.begin(&c, &token, "k2", &[b"a"]) else {
            panic!("fresh");
        };
        drop(claim);
        let Ok(Begin::Fresh(claim)) = store.begin(&c, &token, "k2", &[b"b"]) else {
            panic!("fresh after a failure");
        };
        claim.complete(StatusCode::OK, body("{}"));
        // Full (2): a third key evicts the oldest, k1.
        let Ok(Begin::Fresh(claim)) = store.begin(&c, &token, "k3", &[b"a"]) else {
            panic!("fresh");
        };
        claim.complete(StatusCode::OK, body("{}"));
        assert!(store.lock().entries.len() <= 2);
        assert!(matches!(
            store.begin(&c, &token, "k1", &[b"a"]),
            Ok(Begin::Fresh(_))
        ));
    }

    #[test]
    fn answers_expire() {
        let store = Arc::new(Idempotency::default());
        let c = config(10, Duration::from_millis(30));
        let token = KeyId::from_bytes([1; 12]);
        let Ok(Begin::Fresh(claim)) = store.begin(&c, &token, "k", &[b"a"]) else {
            panic!("fresh");
        };
        claim.complete(StatusCode::OK, body("{}"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(
            store.begin(&c, &token, "k", &[b"b"]),
            Ok(Begin::Fresh(_))
        ));
    }
}
