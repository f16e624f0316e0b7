//! Request bodies that [`ApiJson`] alone does not cover: a body that may be left out
//! ([`OptionalJson`]) and a body that must be a JSON object ([`Object`]).

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use crate::json::ApiJson;

/// An optional JSON body: none when the body is empty (whatever the headers say), else exactly
/// what [`ApiJson`] accepts (`content-type: application/json`, the shape of `T`).
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub(crate) Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        // The body limit travels in the extensions.
        let mut body_only = Request::new(body);
        *body_only.extensions_mut() = parts.extensions.clone();
        let bytes = Bytes::from_request(body_only, state)
            .await
            .map_err(bytes_rejection)?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        let req = Request::from_parts(parts, Body::from(bytes));
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(OptionalJson(Some(value)))
    }
}

/// A body that must be a JSON object. serde's derived structs also accept an array of their
/// fields in order, so `[]` would pass as a request whose fields are all optional.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// As `ApiJson` answers: over the limit is 413, anything else 400.
fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this server accepts",
        ),
        _ => ApiError::invalid_body("the request body could not be read"),
    }
}
