//! The verdict as the verify routes write it: the same bytes as serialising vault-core's
//! [`Verdict`] with serde_json, made with less work on the hot path.
//!
//! A verify's answer is most of what the server writes, so it is serialised straight into its
//! body's buffer from a view that borrows the verdict, with the key id's hex text made once
//! ([`KeyId::hex`]) for the body and, in forward-auth, its header. The field names, order and
//! omissions are the verdict's own; a test holds the two forms byte for byte the same.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vault_core::apikey::KeyIdHex;
use vault_core::keys::{PreviousSecret, RateLimitState, Scopes, Verdict, VerifyCode};

use crate::error::ApiError;

/// [`Verdict`] borrowed, field for field (names, order, omissions: keep them the verdict's),
/// but for `meta`, written between [`Head`] and [`Tail`] as its text (see [`to_json`]).
#[derive(Serialize)]
struct Head<'a> {
    valid: bool,
    code: VerifyCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<&'a Scopes>,
}

/// The verdict's fields after `meta`.
#[derive(Serialize)]
struct Tail<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits_remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratelimit: Option<&'a RateLimitState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret: Option<&'a PreviousSecret>,
}

/// The verdict's JSON.
fn to_json(verdict: &Verdict, id: Option<&KeyIdHex>) -> serde_json::Result<Vec<u8>> {
    let head = Head {
        valid: verdict.valid,
        code: verdict.code,
        key_id: id.map(KeyIdHex::as_str),
        owner: verdict.owner.as_deref(),
        scopes: verdict.scopes.as_ref(),
    };
    let tail = Tail {
        expires_at: verdict.expires_at,
        credits_remaining: verdict.credits_remaining,
        ratelimit: verdict.ratelimit.as_ref(),
        previous_secret: verdict.previous_secret.as_ref(),
    };
    // A valid answer with a few scopes and no meta fits; a bigger one grows once or twice.
    let mut body = Vec::with_capacity(192);
    serde_json::to_writer(&mut body, &head)?;
    // `head` always has fields, so its object ends in `}` after at least one of them: each
    // part below goes in before that brace. The meta is JSON object text (checked when its
    // record was read) and goes in as it is; through serde it would be scanned again, as a
    // `RawValue`, on every verify.
    body.pop();
    if let Some(meta) = &verdict.meta {
        body.extend_from_slice(br#","meta":"#);
        body.extend_from_slice(meta.json().as_bytes());
    }
    let at = body.len();
    serde_json::to_writer(&mut body, &tail)?;
    if body[at..] == *b"{}" {
        body.truncate(at);
        body.push(b'}');
    } else {
        // `{"expires_at":...}` goes on as `,"expires_at":...}`.
        body[at] = b',';
    }
    Ok(body)
}

/// `status` with the verdict as its JSON body; `id` is the verdict's key id already in hex, if
/// the caller made it for a header too.
pub(crate) fn response(status: StatusCode, verdict: &Verdict, id: Option<&KeyIdHex>) -> Response {
    let made;
    let id = match (id, &verdict.key_id) {
        (Some(id), _) => Some(id),
        (None, Some(key_id)) => {
            made = key_id.hex();
            Some(&made)
        }
        (None, None) => None,
    };
    match to_json(verdict, id) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            // What `axum::Json` writes, as every other answer of the API.
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        // Writing these fields to a `Vec` cannot fail.
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Map, Value};
    use vault_core::apikey::KeyId;
    use vault_core::keys::RawMeta;

    use super::*;

    fn verdicts() -> Vec<Verdict> {
        let mut meta = Map::new();
        meta.insert("plan".into(), Value::from("pro \"gold\" \u{e9}"));
        meta.insert("seats".into(), Value::from(3));
        meta.insert("ratio".into(), Value::from(0.25));
        meta.insert("tags".into(), serde_json::json!(["a", {"b": null}]));
        let full = Verdict {
            valid: true,
            code: VerifyCode::Valid,
            key_id: Some(KeyId::from_bytes([0xab; 12])),
            owner: Some("customer-7 \u{1f600}".into()),
            scopes: Scopes::new(&["photos:read", "photos:write \"\u{e9}"]),
            meta: Some(RawMeta::from(&meta)),
            expires_at: Some(1_900_000_000),
            credits_remaining: Some(41),
            ratelimit: Some(RateLimitState {
                limit: 10,
                remaining: 9,
                reset_seconds: 60,
            }),
            previous_secret: Some(PreviousSecret {
                expires_at: 1_800_000_000,
            }),
        };
        let mut empty_scopes = full.clone();
        empty_scopes.scopes = Scopes::new::<&str>(&[]);
        empty_scopes.meta = Some(RawMeta::from(&Map::new()));
        let mut refused = full.clone();
        refused.valid = false;
        refused.code = VerifyCode::NotFound;
        refused.key_id = None;
        refused.owner = None;
        refused.scopes = None;
        refused.meta = None;
        refused.expires_at = None;
        refused.credits_remaining = None;
        refused.ratelimit = None;
        refused.previous_secret = None;
        let mut revoked = refused.clone();
        revoked.code = VerifyCode::Revoked;
        revoked.key_id = Some(KeyId::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]));
        revoked.owner = Some("o".into());
        // The meta last, nothing after it.
        let mut meta_last = full.clone();
        meta_last.expires_at = None;
        meta_last.credits_remaining = None;
        meta_last.ratelimit = None;
        meta_last.previous_secret = None;
        vec![full, empty_scopes, meta_last, refused, revoked]
    }

    #[test]
    fn the_answer_is_the_verdict_serialised_byte_for_byte() {
        for verdict in verdicts() {
            let expected = serde_json::to_vec(&verdict).unwrap();
            let id = verdict.key_id.as_ref().map(KeyId::hex);
            assert_eq!(
                String::from_utf8(to_json(&verdict, id.as_ref()).unwrap()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
