//! Who is calling: the bearer token, its role, and the end user's address.
//!
//! Routes that need a token sit in a group whose `route_layer` is
//! `from_fn(|req, next| require(Role::X, req, next))`: it
//! answers 503 `sealed` while sealed (no token can be checked then), 401 for a missing or
//! invalid token, 403 for a token whose role does not include `role`, and otherwise puts a
//! [`Caller`] in the request's extensions for the handler.
//!
//! A refused token is answered 401 at once, with no durable write: it is added to its peer's
//! per-minute sum, which `throttle` audits as one `token.authenticate` entry, so that junk
//! tokens cannot fill the log.
//!
//! The end user's address comes from the `x-forwarded-for` header only when the TCP peer is one
//! of [`ServerConfig::trusted_proxies`](crate::ServerConfig); otherwise the request has no
//! end-user address, and the audit log records the peer's. Each proxy appends the address it
//! received the request from, so only the right-hand end of the header was written by proxies
//! we trust; everything left of the first address they name came from the client, who can write
//! anything there. So the header is read from the right ([`forwarded_client`]):
//!
//! - trusted proxies are skipped, and the first address that is not one is the end user;
//! - an entry that is not an address ends the walk with no end user: stepping over it could only
//!   reach entries the client wrote;
//! - if every entry is a trusted proxy, the leftmost one (the first hop) is the end user, as
//!   nginx's `real_ip_recursive on` does: the request started inside the trusted network;
//! - several `x-forwarded-for` header lines are one list, in order (RFC 9110, 5.3).
//!
//! Addresses compare in their canonical form, so an IPv4-mapped IPv6 peer (a listener on `[::]`)
//! matches its IPv4 entry in `trusted_proxies`.

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
        self.origin
            .context_for(Actor::Token(self.token.token_id), self.end_user)
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

/// The end user's address: the rightmost `x-forwarded-for` address that is not a trusted proxy,
/// if the peer is trusted (see the module doc).
pub(crate) fn end_user(
    state: &AppState,
    origin: &Origin,
    headers: &axum::http::HeaderMap,
) -> Option<IpAddr> {
    let peer = origin.peer?.ip();
    let trusted = &state.config().trusted_proxies;
    if !is_trusted(trusted, peer) {
        return None;
    }
    forwarded_client(headers, trusted)
}

/// Whether `ip` is one of `trusted`, both in canonical form.
fn is_trusted(trusted: &[IpAddr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == ip)
}

/// Walks the `x-forwarded-for` entries (every header line, in order) from the right: the first
/// that is not a trusted proxy; the leftmost if all are; `None` at an entry that is not an
/// address, or with no header.
fn forwarded_client(headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let mut first_hop = None;
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        // A line that is not visible ASCII is garbage like any other entry.
        let line = line.to_str().ok()?;
        for entry in line.rsplit(',') {
            let ip = parse_entry(entry.trim())?;
            if !is_trusted(trusted, ip) {
                return Some(ip);
            }
            first_hop = Some(ip);
        }
    }
    first_hop
}

/// One `x-forwarded-for` entry: an address, or an address with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`), as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
}

/// The bearer token of a request, if it has one.
fn bearer(parts: &axum::http::HeaderMap) -> Option<&str> {
    let value = parts.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: the request must carry a valid token whose role includes `role`. The
/// [`AppState`] comes from the request's extensions, where [`app`](crate::app) puts it, so that
/// route groups can be built (and documented) without a vault.
pub async fn require(role: Role, req: Request, next: Next) -> Response {
    require_one_of(&[role], req, next).await
}

/// Middleware: as [`require`], for a route that tokens of any of `roles` may call (usage and
/// signals: managers and auditors).
pub async fn require_one_of(roles: &[Role], req: Request, next: Next) -> Response {
    authorize(roles, req, next).await
}

/// Middleware of `/metrics` and `/openapi.json`: open on a local listener (a loopback address or
/// the Unix socket, see [`AppState::with_local_listener`]), else any valid token, whatever its
/// role. Elsewhere they would tell anyone who can connect the vault's activity and every route.
/// While sealed no token can be checked, so off a local listener they answer 503 `sealed` then
/// (`/v1/sys/health` and `/v1/sys/seal-status` say as much with no token).
pub(crate) async fn require_off_local(req: Request, next: Next) -> Response {
    let local = req
        .extensions()
        .get::<AppState>()
        .is_some_and(AppState::local_listener);
    if local {
        return next.run(req).await;
    }
    authorize(&[], req, next).await
}

/// [`require_one_of`], with no roles accepting any role.
async fn authorize(roles: &[Role], req: Request, next: Next) -> Response {
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
    // A valid token is checked in memory on this worker; a refusal is summed in memory too.
    let info = match state.vault().check_token(token) {
        Ok(Some(info)) => info,
        Ok(None) => {
            let vault = state.vault();
            state.refused_tokens().add(
                origin.peer.map(|p| p.ip()),
                &origin.context(Actor::Anonymous),
                || vault.refused_token_digest(token).ok(),
                std::time::Instant::now(),
            );
            return ApiError::from(vault_core::Error::Unauthorized).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !roles.is_empty() && !roles.iter().any(|role| info.role.allows(*role)) {
        let needed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs a {} token; this token is {}",
                needed.join(" or "),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn client(lines: &[&str], trusted: &[&str]) -> Option<IpAddr> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        forwarded_client(&headers, &ips(trusted))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_end_user_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let proxies = ["10.0.0.1", "10.0.0.2"];
        assert_eq!(client(&["203.0.113.9"], &proxies), ip("203.0.113.9"));
        // Entries the client wrote on the left count for nothing.
        assert_eq!(
            client(&["1.1.1.1, 2.2.2.2, 203.0.113.9"], &proxies),
            ip("203.0.113.9")
        );
        // Trusted proxies on the right are stepped over.
        assert_eq!(
            client(&["1.1.1.1, 203.0.113.9, 10.0.0.2, 10.0.0.1"], &proxies),
            ip("203.0.113.9")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(&["1.1.1.1", "203.0.113.9, 10.0.0.2", "10.0.0.1"], &proxies),
            ip("203.0.113.9")
        );
        // Ports and IPv6.
        assert_eq!(
            client(&["1.1.1.1, [2001:db8::7]:443, 10.0.0.1:80"], &proxies),
            ip("2001:db8::7")
        );
        // An IPv4-mapped proxy address is that proxy.
        assert_eq!(
            client(&["203.0.113.9, ::ffff:10.0.0.1"], &proxies),
            ip("203.0.113.9")
        );
        // No header: no end user.
        assert_eq!(client(&[], &proxies), None);
    }

    #[test]
    fn a_header_of_trusted_proxies_only_names_the_first_hop() {
        let proxies = ["10.0.0.1", "10.0.0.2"];
        assert_eq!(client(&["10.0.0.2, 10.0.0.1"], &proxies), ip("10.0.0.2"));
        assert_eq!(client(&["10.0.0.1"], &proxies), ip("10.0.0.1"));
    }

    #[test]
    fn garbage_ends_the_walk_rather_than_being_stepped_over() {
        let proxies = ["10.0.0.1"];
        for lines in [
            &["203.0.113.9, unknown, 10.0.0.1"][..],
            &["203.0.113.9, , 10.0.0.1"],
            &["203.0.113.9,"],
            &["203.0.113.9", "10.0.0.1, nonsense"],
            &["203.0.113.9", ""],
        ] {
            assert_eq!(client(lines, &proxies), None, "{lines:?}");
        }
        // Garbage left of the end user is never reached.
        assert_eq!(
            client(&["junk, 203.0.113.9, 10.0.0.1"], &proxies),
            ip("203.0.113.9")
        );
    }
}
