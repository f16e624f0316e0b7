//! Extractors that answer like the rest of the API: [`ApiJson`] for bodies, [`ApiPath`] and
//! [`ApiQuery`] for the URL. Each refuses with an [`ApiError`] (JSON, 400, 413 or 415), never
//! axum's plain-text rejections or its 422.
//!
//! Deserialisation messages name the field (`passphrase: invalid type: integer, expected a
//! string`) but never repeat a value the caller sent: serde's "invalid type" and "invalid value"
//! messages quote it, and that value may be a secret sent in the wrong field.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use vault_core::apikey::KeyId;
use zeroize::Zeroize;

use crate::error::ApiError;

/// Longest deserialisation message returned, in bytes: an unknown field's name is the caller's
/// and may be as long as the body.
const MAX_MESSAGE: usize = 300;

/// A JSON body of type `T` (use `#[serde(deny_unknown_fields)]` on request types), or a JSON
/// error: 415 without `content-type: application/json`, 413 over the body limit, 400
/// `invalid_body` naming the field for anything that does not deserialize.
///
/// Answering with `ApiJson(value)` serialises `value` as `application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        parse_and_wipe(bytes).map(ApiJson)
    }
}

/// Deserialises a body already read (see [`parse_json`]), then wipes it: the body may hold a
/// passphrase or a share. Only our copy can be wiped (hyper's read buffers are out of reach);
/// it is unique unless a layer kept one.
pub(crate) fn parse_and_wipe<T: DeserializeOwned>(bytes: Bytes) -> Result<T, ApiError> {
    let parsed = parse_json(&bytes);
    if let Ok(mut owned) = bytes.try_into_mut() {
        owned.as_mut().zeroize();
    }
    parsed
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Deserialises a whole JSON document, naming the failing field in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // A body that deserializes pays for no path tracking (a copy of each field name, on every
    // verify); only one that fails is read again, to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = match inner.classify() {
            serde_json::error::Category::Data => field_message(&path, &inner.to_string()),
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => format!("the body is not valid JSON: {inner}"),
        };
        ApiError::invalid_body(message)
    })?;
    de.end()
        .map_err(|e| ApiError::invalid_body(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Whether the request says its body is JSON: `application/json`, optionally with
/// `charset=utf-8` (JSON is UTF-8 by RFC 8259; no other parameter is accepted).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| {
        let param = param.trim();
        match param.split_once('=') {
            Some((name, value)) => {
                name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            None => param.is_empty(),
        }
    })
}

/// A body that could not be read: over the limit is 413, anything else 400.
pub(crate) fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this server accepts",
        ),
        _ => ApiError::invalid_body("the request body could not be read"),
    }
}

/// A path parameter of type `T`, or 400 `invalid_path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                truncate(format!("invalid path parameter: {}", e.body_text())),
            )),
            // Only when the handler's route has no such parameter: a bug here, not the caller's.
            Err(other) => Err(ApiError::internal(&other.body_text())),
        }
    }
}

/// The query string deserialised as `T` (use `#[serde(deny_unknown_fields)]`), or 400
/// `invalid_query` naming the parameter. Query strings are never logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = field_message(&path, &e.into_inner().to_string());
                ApiError::invalid_query(message)
            })
    }
}

/// `field: message`, with any quoted value the caller sent taken out of `message`.
fn field_message(path: &str, message: &str) -> String {
    let message = without_values(message);
    truncate(if path.is_empty() || path == "." {
        message
    } else {
        format!("{path}: {message}")
    })
}

/// Rewrites serde's `invalid type: string "hunter2", expected a boolean` as
/// `invalid type: string, expected a boolean`. Every other serde message names only fields,
/// variants and types, which come from our own definitions or name the caller's field.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // `rfind`: the quoted value may itself contain ", expected ".
            if let Some(at) = rest.rfind(", expected ") {
                let (unexpected, expected) = rest.split_at(at);
                let kind = unexpected
                    .split(['"', '`'])
                    .next()
                    .unwrap_or_default()
                    .trim_end();
                return format!("{prefix}{kind}{expected}");
            }
            return prefix.trim_end_matches([':', ' ']).to_owned();
        }
    }
    message.to_owned()
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// A key id from the path, or 400 `invalid_path`. The text is never echoed: a full key pasted
/// where an id belongs must not come back in an error.
pub(crate) fn key_id(text: &str) -> Result<KeyId, ApiError> {
    KeyId::parse_hex(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("invalid path parameter: {e}"),
        )
    })
}
