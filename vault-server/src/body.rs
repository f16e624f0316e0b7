//! Request bodies that [`ApiJson`](crate::json::ApiJson) alone does not cover: a body that may be left out
//! ([`OptionalJson`]) and a body that must be a JSON object ([`Object`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use crate::json::{bytes_rejection, is_json, parse_and_wipe};

/// An optional JSON body: none when the body is empty (whatever the headers say), else exactly
/// what [`ApiJson`](crate::json::ApiJson) accepts (`content-type: application/json`, the shape of `T`).
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub(crate) Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read through the request itself, so that the body limit in its extensions applies
        // without copying them; only whether the body says it is JSON is kept of the head.
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        parse_and_wipe(bytes).map(|value| OptionalJson(Some(value)))
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
