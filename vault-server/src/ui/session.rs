//! The console's server-side sessions: who is signed in, with which token, until when.
//!
//! A session is opened by signing in with a vault token. The browser holds only a random id
//! (32 bytes from the OS RNG, in an `HttpOnly`, `SameSite=Strict` cookie); the token stays
//! here, in a [`SecretString`] that is wiped when the session ends, and never reaches a page.
//! Each request checks the token again ([`Vault::check_token`], in memory), so a revoked or
//! expired token ends its sessions at their next request, and a role change is seen at once.
//!
//! Times come from the vault's [`Clock`](vault_core::clock::Clock), so tests move them instead
//! of sleeping: a session ends after [`IDLE`] without a request, or [`ABSOLUTE`] after sign-in,
//! whichever comes first.
//!
//! The store is bounded ([`MAX_SESSIONS`]): when full, ended sessions are dropped first, then
//! the one idle longest, so sign-ins cannot grow the memory without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use vault_core::Vault;
use vault_core::tokens::TokenInfo;

/// A session ends after this long without a request.
pub(crate) const IDLE: Duration = Duration::from_secs(15 * 60);
/// A session ends this long after sign-in, however busy.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// Most sessions held at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// A session's id or CSRF token: 32 random bytes, written as 64 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Nonce([u8; 32]);

impl Nonce {
    /// 32 bytes from the operating system's RNG.
    pub(crate) fn random() -> Nonce {
        let mut bytes = [0u8; 32];
        vault_core::crypto::fill_random(&mut bytes);
        Nonce(bytes)
    }

    /// Parses 64 hex digits.
    pub(crate) fn parse(text: &str) -> Option<Nonce> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(Nonce(bytes))
    }

    /// The 64 hex digits.
    pub(crate) fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `text` is this nonce, compared in constant time.
    pub(crate) fn matches(&self, text: &str) -> bool {
        match Nonce::parse(text) {
            Some(other) => bool::from(self.0.ct_eq(&other.0)),
            None => false,
        }
    }
}

/// The id is as good as the token while the session lasts: never print it.
impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonce(..)")
    }
}

/// One signed-in browser.
struct Session {
    /// The vault token it signed in with; wiped on drop.
    token: SecretString,
    /// Tied to this session: every form it posts carries it.
    csrf: Nonce,
    /// Sign-in time, Unix ms.
    started_ms: u64,
    /// Last request, Unix ms.
    last_ms: u64,
}

/// A live session as a request sees it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// The session's id (the cookie's value).
    pub(crate) id: Nonce,
    /// The token, as checked just now.
    pub(crate) token: TokenInfo,
    /// The session's CSRF token.
    pub(crate) csrf: Nonce,
}

/// Why a request has no live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// No cookie, or an id this store does not hold (signed out, timed out long ago, restarted).
    Unknown,
    /// Idle too long, or past its absolute limit.
    Expired,
    /// Its token was revoked or expired.
    TokenGone,
    /// Sealed: no token can be checked now (the session is kept).
    Sealed,
}

/// Every session of this server.
#[derive(Default)]
pub(crate) struct Sessions {
    // A std Mutex, not a Tokio one: no await is held, and each use is a map lookup.
    map: Mutex<HashMap<Nonce, Session>>,
}

impl Sessions {
    /// Opens a session for `token` (already checked) at `now_ms`; its id and CSRF token.
    pub(crate) fn open(&self, token: SecretString, now_ms: u64) -> (Nonce, Nonce) {
        let id = Nonce::random();
        let csrf = Nonce::random();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| alive(s, now_ms));
        }
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: csrf.clone(),
                started_ms: now_ms,
                last_ms: now_ms,
            },
        );
        (id, csrf)
    }

    /// The live session `id`, its token checked again and its idle time restarted; a session
    /// found ended is dropped (and its token wiped).
    pub(crate) fn touch(&self, vault: &Vault, id: &Nonce) -> Result<Live, Ended> {
        let now_ms = vault.clock().now_ms();
        let mut map = self.lock();
        let Some(session) = map.get_mut(id) else {
            return Err(Ended::Unknown);
        };
        if !alive(session, now_ms) {
            map.remove(id);
            return Err(Ended::Expired);
        }
        if vault.is_sealed() {
            return Err(Ended::Sealed);
        }
        match vault.check_token(session.token.expose_secret()) {
            Ok(Some(token)) => {
                session.last_ms = now_ms;
                Ok(Live {
                    id: id.clone(),
                    token,
                    csrf: session.csrf.clone(),
                })
            }
            Ok(None) => {
                map.remove(id);
                Err(Ended::TokenGone)
            }
            // Sealed between the two checks, or the token book unreadable: keep the session.
            Err(_) => Err(Ended::Sealed),
        }
    }

    /// Ends session `id` (sign-out).
    pub(crate) fn close(&self, id: &Nonce) {
        self.lock().remove(id);
    }

    /// Sessions held now (ended ones included until they are next seen or pushed out).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Nonce, Session>> {
        // A panic while holding the lock leaves only whole map operations behind: the map is
        // still consistent, so a poisoned lock is used as it is.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `s` is within both its idle and its absolute limit at `now_ms`.
fn alive(s: &Session, now_ms: u64) -> bool {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    now_ms < s.last_ms.saturating_add(ms(IDLE))
        && now_ms < s.started_ms.saturating_add(ms(ABSOLUTE))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_round_trips_through_hex_and_matches_only_itself() {
        let a = Nonce::random();
        let b = Nonce::random();
        assert_eq!(Nonce::parse(&a.hex()).unwrap(), a);
        assert!(a.matches(&a.hex()));
        assert!(!a.matches(&b.hex()));
        assert!(!a.matches(""));
        assert!(!a.matches("zz"));
        assert_eq!(format!("{a:?}"), "Nonce(..)");
    }

    #[test]
    fn a_full_store_drops_the_session_idle_longest() {
        let sessions = Sessions::default();
        let first = sessions.open(SecretString::from("t"), 0).0;
        for i in 1..MAX_SESSIONS as u64 {
            sessions.open(SecretString::from("t"), i);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        sessions.open(SecretString::from("t"), MAX_SESSIONS as u64);
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(!sessions.lock().contains_key(&first));
    }
}
