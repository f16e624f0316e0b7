//! What a console request carries: its session ([`Signed`], [`MaybeSigned`]), its form and the
//! CSRF token that must come with it ([`Posted`], [`PreForm`]), and the cookies that hold them.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use vault_core::Context;
use vault_core::tokens::Role;

use super::layout;
use super::session::{Ended, Live, Nonce, Sessions};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::request::Origin;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "kv_session";
/// The cookie holding the CSRF token of the forms shown before sign-in.
pub(crate) const FORM_COOKIE: &str = "kv_form";
/// What audit entries of console actions carry as `details.via`.
pub(crate) const VIA: &str = "ui";

/// A 303 to `to`: after a form, the browser fetches the result with GET.
pub(crate) fn see_other(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(to) => (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response(),
        Err(_) => layout::error_page(StatusCode::BAD_REQUEST, "That address is not valid."),
    }
}

/// A `Set-Cookie` for the console: `HttpOnly`, `SameSite=Strict`, path `/ui`, `Secure` under
/// TLS; an empty value with `Max-Age=0` removes it.
pub(crate) fn cookie(name: &str, value: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let age = if value.is_empty() { "; Max-Age=0" } else { "" };
    let text = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict{secure}{age}");
    // Names are constants and values hex digits, all valid header text.
    HeaderValue::from_str(&text).expect("a cookie of hex digits is a valid header")
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The state and the console's sessions, from the request's extensions.
fn states(parts: &Parts) -> Option<(AppState, Arc<Sessions>)> {
    let state = parts.extensions.get::<AppState>()?.clone();
    let ui = parts.extensions.get::<Arc<Sessions>>()?.clone();
    Some((state, ui))
}

/// A request from a signed-in browser: its live session and its audit context.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) live: Live,
    caller: Caller,
}

impl Signed {
    /// The live session of the request, or why there is none.
    async fn find(parts: &mut Parts) -> Result<Signed, Ended> {
        let (state, ui) = states(parts).ok_or(Ended::Unknown)?;
        let id = cookie_value(&parts.headers, SESSION_COOKIE)
            .and_then(Nonce::parse)
            .ok_or(Ended::Unknown)?;
        let live = ui.touch(state.vault(), &id)?;
        let origin = match Origin::from_request_parts(parts, &()).await {
            Ok(origin) => origin,
            Err(never) => match never {},
        };
        let end_user = crate::auth::end_user(&state, &origin, &parts.headers);
        let caller = Caller {
            token: live.token.clone(),
            origin,
            end_user,
        };
        Ok(Signed { live, caller })
    }

    /// The audit context of this request: the signed-in token, as the API would record it,
    /// marked as coming through the console.
    pub(crate) fn context(&self) -> Context {
        self.caller.context().with_via(VIA)
    }

    /// Whether the signed-in token's role includes `role` (the API's rule).
    pub(crate) fn may(&self, role: Role) -> bool {
        self.live.token.role.allows(role)
    }

    /// A 403 unless the signed-in token's role includes `role`.
    pub(crate) fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.may(role) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "This needs a {} token; you signed in with a {} token.",
                role.as_str(),
                self.live.token.role.as_str()
            ),
        ))
    }
}

/// Where a request without a live session goes: the overview while sealed (it shows the
/// unseal form), else sign-in, saying why, with the stale cookie removed.
pub(crate) fn ended(why: Ended, tls: bool) -> Response {
    let to = match why {
        Ended::Sealed => return see_other("/ui/"),
        Ended::Unknown => "/ui/sign-in",
        Ended::Expired => "/ui/sign-in?ended=expired",
        Ended::TokenGone => "/ui/sign-in?ended=token",
    };
    let mut response = see_other(to);
    response
        .headers_mut()
        .append(SET_COOKIE, cookie(SESSION_COOKIE, "", tls));
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let tls = parts
            .extensions
            .get::<AppState>()
            .is_some_and(AppState::tls);
        Signed::find(parts).await.map_err(|why| ended(why, tls))
    }
}

/// A signed-in request, or why it is not: for the overview, which shows the seal state to
/// anyone while sealed.
pub(crate) struct MaybeSigned(pub(crate) Result<Signed, Ended>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeSigned {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeSigned(Signed::find(parts).await))
    }
}

/// A form posted from a signed-in page: the session, and the form's fields, whose `csrf` must
/// be the session's CSRF token (else 403, nothing done).
pub(crate) struct Posted<T> {
    pub(crate) signed: Signed,
    pub(crate) form: T,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let body = read_body(Request::from_parts(parts, body), state).await?;
        if !csrf_field(&body).is_some_and(|c| signed.live.csrf.matches(&c)) {
            return Err(csrf_refused());
        }
        let form = parse_form(&body).map_err(layout::api_error)?;
        Ok(Posted { signed, form })
    }
}

/// A form shown before sign-in (sign-in, unseal): its `csrf` field must equal the
/// [`FORM_COOKIE`] set when the form was shown.
pub(crate) struct PreForm<T> {
    pub(crate) origin: Origin,
    pub(crate) form: T,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PreForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let expected = cookie_value(&parts.headers, FORM_COOKIE).and_then(Nonce::parse);
        let origin = match Origin::from_request_parts(&mut parts, &()).await {
            Ok(origin) => origin,
            Err(never) => match never {},
        };
        let body = read_body(Request::from_parts(parts, body), state).await?;
        let given = csrf_field(&body);
        let ok = matches!((expected, given), (Some(e), Some(g)) if e.matches(&g));
        if !ok {
            return Err(csrf_refused());
        }
        Ok(PreForm {
            origin,
            form: parse_form(&body).map_err(layout::api_error)?,
        })
    }
}

/// The form nonce of a page shown before sign-in: the browser's [`FORM_COOKIE`] if it has a
/// valid one, else a fresh one with the `Set-Cookie` that gives it.
pub(crate) fn form_nonce(headers: &HeaderMap, tls: bool) -> (Nonce, Option<HeaderValue>) {
    match cookie_value(headers, FORM_COOKIE).and_then(Nonce::parse) {
        Some(nonce) => (nonce, None),
        None => {
            let nonce = Nonce::random();
            let set = cookie(FORM_COOKIE, &nonce.hex(), tls);
            (nonce, Some(set))
        }
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<bytes::Bytes, Response> {
    match bytes::Bytes::from_request(req, state).await {
        Ok(body) => Ok(body),
        Err(e) => Err(layout::error_page(
            e.status(),
            "The form could not be read (too large, or the connection broke).",
        )),
    }
}

/// The `csrf` field of a URL-encoded body.
fn csrf_field(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned())
}

fn csrf_refused() -> Response {
    layout::error_page(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this console. Reload the page and try again.",
    )
}

/// The fields of a URL-encoded body (unknown ones, `csrf` among them, ignored).
fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::invalid_body(format!("The form is not valid: {e}")))
}
