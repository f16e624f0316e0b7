//! Who is calling: the bearer token, its role, and the end user's address.
//!
//! Routes that need a token sit in a group whose `route_layer` is
//! `from_fn(|req, next| require(Role::X, req, next))`: it
//! answers 503 `sealed` while sealed (no token can be checked then), 401 for a missing or
//! invalid token, 403 for a token whose role does not include `role`, and otherwise puts a
//! [`Caller`] in the request's extensions for the handler.
//!
//! The end user's address comes from the `x-forwarded-for` header (its first address) only when
//! the TCP peer is one of [`ServerConfig::trusted_proxies`](crate::ServerConfig); otherwise the
//! request has no end-user address, and the audit log records the peer's.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vault_core::tokens::{Role, TokenInfo};
use vault_core::{Actor, Context};

use crate::AppState;
use crate::error::ApiError;
use crate::request::Origin;

/// The header carrying the end user's address, trusted only from configured proxies.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The authenticated caller of a route, put in the request's extensions by [`require`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token that authenticated.
    pub token: TokenInfo,
    /// The request's id and peer.
    pub origin: Origin,
    /// The end user's address, when a trusted proxy passed one.
    pub end_user: Option<IpAddr>,
}

impl Caller {
    /// The audit context of this request: the token as actor, the end user's address (else the
    /// peer's), the request id.
    pub fn context(&self) -> Context {
        let ctx = self.origin.context(Actor::Token(self.token.token_id));
        match self.end_user {
            Some(ip) => ctx.with_client(ip.to_string()),
            None => ctx,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Present on every route behind `require`; a handler elsewhere asking for it is a
        // wiring mistake, answered as "no token".
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::from(vault_core::Error::Unauthorized))
    }
}

/// The end user's address: the first `x-forwarded-for` address, if the peer is trusted.
pub(crate) fn end_user(
    state: &AppState,
    origin: &Origin,
    parts: &axum::http::HeaderMap,
) -> Option<IpAddr> {
    let peer = origin.peer?.ip();
    if !state.config().trusted_proxies.contains(&peer) {
        return None;
    }
    parts
        .get(X_FORWARDED_FOR)?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The bearer token of a request, if it has one.
fn bearer(parts: &axum::http::HeaderMap) -> Option<String> {
    let value = parts.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Middleware: the request must carry a valid token whose role includes `role`. The
/// [`AppState`] comes from the request's extensions, where [`app`](crate::app) puts it, so that
/// route groups can be built (and documented) without a vault.
pub async fn require(role: Role, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(state) = parts.extensions.get::<AppState>().cloned() else {
        return ApiError::internal(&"the app state is not in the request extensions")
            .into_response();
    };
    let origin = match Origin::from_request_parts(&mut parts, &()).await {
        Ok(origin) => origin,
        Err(never) => match never {},
    };
    if state.vault().is_sealed() {
        return ApiError::from(vault_core::Error::Sealed).into_response();
    }
    let Some(token) = bearer(&parts.headers) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs a vault token: send `Authorization: Bearer <token>`",
        )
        .into_response();
    };
    let end_user = end_user(&state, &origin, &parts.headers);
    let mut ctx = origin.context(Actor::Anonymous);
    if let Some(ip) = end_user {
        ctx = ctx.with_client(ip.to_string());
    }
    // A valid token is checked in memory on this worker; only a refusal, which is audited
    // (a durable write), goes to the blocking pool.
    let info = match state.vault().check_token(&token) {
        Ok(Some(info)) => info,
        Ok(None) => {
            let vault = state.vault().clone();
            let refused = blocking(move || vault.refuse_token(&ctx, &token)).await;
            return match refused {
                Ok(unauthorized) => ApiError::from(unauthorized).into_response(),
                Err(e) => e.into_response(),
            };
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !info.role.allows(role) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs a {} token; this token is {}",
                role.as_str(),
                info.role.as_str()
            ),
        )
        .into_response();
    }
    parts.extensions.insert(Caller {
        token: info,
        origin,
        end_user,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// Runs a vault-core call that may block (a group commit, Argon2) on the blocking pool, so
/// the async workers keep serving other requests.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> vault_core::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(&e)),
    }
}
