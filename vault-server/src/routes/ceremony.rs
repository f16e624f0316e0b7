//! The rekey (`POST /v1/sys/rekey`, operator) and generate-root (`POST /v1/sys/generate-root`, no
//! token: the unseal credential is its authority) ceremonies.
//!
//! The state machine is vault-core's (`vault_core::ceremony`): an initiator starts a ceremony
//! and gets a nonce, each holder gives their own current share under it in their own call, and
//! the call that reaches the threshold completes it. Every answer carries the ceremony's
//! description and configuration digest. Every rule (which fields go together, the new method,
//! the recipients, the shares) is vault-core's too: here a request's fields are handed to
//! `vault_core::ceremony::Call` and the vault, the call runs on the blocking pool, and a refused
//! credential is answered after [`ServerConfig::unseal_failure_delay`](crate::ServerConfig), as
//! unseal is.

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::ceremony::{
    Call, CeremonyKind, CeremonyState, CeremonyStatus, Fields, NewMethodFields, NonceCall,
    Recipient, RekeyStart,
};
use vault_core::kdf::Passphrase;
use vault_core::shamir::Share;
use vault_core::tokens::Role;
use vault_core::{Actor, Context};

use crate::AppState;
use crate::auth::{Caller, require};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::secret_json;
use crate::json::ApiJson;
use crate::request::Origin;

/// The rekey ceremony, behind the `operator` check.
pub(crate) fn operator_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rekey))
        .route_layer(from_fn(|req, next| require(Role::Operator, req, next)))
}

/// The routes that take no token: generate-root, whose authority is the unseal credential.
pub(crate) fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate_root))
}

/// Body of `POST /v1/sys/rekey`: to start, `new` (and `new_share_recipients`); then, under the
/// `nonce` the start answered, each holder's `share` (or the `passphrase`), or `nonce` alone to
/// read the ceremony, or `nonce` with `cancel: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RekeyRequest {
    /// Start: the new unseal method.
    new: Option<NewMethod>,
    /// Start, with new shares: one age X25519 recipient (`age1...`) per new share, in order.
    /// Each new share then comes back encrypted to its recipient (armored age); without them the
    /// shares come back in clear, once, to the holder whose share completes the ceremony.
    new_share_recipients: Option<Vec<String>>,
    /// The ceremony's nonce, on every call after the start.
    nonce: Option<String>,
    /// The current passphrase (passphrase vaults): completes the ceremony.
    #[schema(value_type = Option<String>, format = Password)]
    passphrase: Option<SecretString>,
    /// One current share, `kvs1_...` (shares vaults).
    #[schema(value_type = Option<String>, format = Password)]
    share: Option<SecretString>,
    /// With a credential: give it only if the ceremony's configuration digest is this one
    /// (409 `conflict` otherwise, nothing given).
    digest: Option<String>,
    /// `true`, with `nonce`: abandon the ceremony.
    cancel: Option<bool>,
}

/// The new unseal method of a rekey: `{"passphrase"}` or `{"shares", "threshold"}`.
///
/// A new passphrase gets the default Argon2id parameters (RFC 9106's second choice), or the
/// test-grade ones if the vault is already marked `insecure_kdf` (tests, `serve --dev`): a rekey
/// over HTTP never weakens the KDF of a vault that has a real one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMethod {
    /// A new passphrase, at least 12 characters.
    #[schema(value_type = Option<String>, format = Password)]
    passphrase: Option<SecretString>,
    /// Shares to make (at most 255).
    shares: Option<u8>,
    /// Shares needed to unseal (at least 2, at most `shares`).
    threshold: Option<u8>,
}

/// Body of `POST /v1/sys/generate-root`: to start, `recipient`; then as for rekey.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRootRequest {
    /// Start: the initiator's one-time age X25519 recipient (`age1...`). The new admin token
    /// comes back encrypted to it (armored age), never in clear.
    recipient: Option<String>,
    /// The ceremony's nonce, on every call after the start.
    nonce: Option<String>,
    /// The current passphrase (passphrase vaults): completes the ceremony.
    #[schema(value_type = Option<String>, format = Password)]
    passphrase: Option<SecretString>,
    /// One current share, `kvs1_...` (shares vaults).
    #[schema(value_type = Option<String>, format = Password)]
    share: Option<SecretString>,
    /// With a credential: give it only if the ceremony's configuration digest is this one
    /// (409 `conflict` otherwise, nothing given).
    digest: Option<String>,
    /// `true`, with `nonce`: abandon the ceremony.
    cancel: Option<bool>,
}

/// Every answer of `POST /v1/sys/rekey` and `POST /v1/sys/generate-root`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyAnswer<'a> {
    /// `open` (waiting for shares), `complete` or `cancelled`.
    #[schema(value_type = String, example = "open")]
    state: &'static str,
    /// The ceremony's nonce (32 hex digits): each holder gives it with their share.
    nonce: &'a str,
    /// Current shares given so far (a passphrase counts as the one share of a passphrase vault).
    progress: u8,
    /// Current shares needed (1 for a passphrase vault).
    threshold: u8,
    /// What the ceremony makes, one `name: value` per line: the vault, the kind, the nonce, the
    /// new method (threshold and shares, or Argon2id parameters and salt), and the age recipient
    /// of each new share or of the token. Never a secret.
    description: &'a str,
    /// SHA-256 (hex) of `description`, followed for a new passphrase by a commitment to it
    /// derived through Argon2id: holders compare it with the initiator before they give a share.
    digest: &'a str,
    /// Unix seconds when the ceremony expires (ten minutes after its start).
    expires_at: u64,
    /// A completed rekey to shares without recipients: the new shares (`kvs1_...`), in clear,
    /// to the caller whose share completed it only. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    shares: Option<Vec<&'a str>>,
    /// A completed rekey with recipients: each new share encrypted to its recipient, in order
    /// (armored age).
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted_shares: Option<&'a [String]>,
    /// A completed generate-root: the new admin token encrypted to the initiator's recipient
    /// (armored age); `keyvault operator generate-root --decrypt` opens it.
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted_token: Option<&'a str>,
    /// A completed generate-root: the new token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
}

/// `POST /v1/sys/rekey`: a new root key and a new unseal method (passphrase or shares, either
/// way round), approved by the holders of the current one, each in their own call.
///
/// 1. Start: `{"new": {...}, "new_share_recipients"?: ["age1...", ...]}` opens a ceremony and
///    answers its `nonce`, `description` and `digest` (a conflict while another is open).
/// 2. Each holder: `{"nonce", "share"}` (a passphrase vault: `{"nonce", "passphrase"}`, once),
///    optionally with the `digest` they agreed with the initiator. The call that reaches the
///    threshold rekeys and answers the new shares, encrypted to their recipients or in clear.
/// 3. `{"nonce"}` reads the ceremony (a completed one with its encrypted shares, until it
///    expires); `{"nonce", "cancel": true}` abandons it.
///
/// A share of another vault or split, or given twice, is refused when given (`invalid_share`)
/// and the progress is kept; shares that do not combine into the unseal key, or a wrong
/// passphrase (`wrong_credential`), end the ceremony. Refused credentials are audited and
/// answered after the unseal failure delay. No record is rewritten; the old credential stops
/// working at once, and every other ceremony is dropped. Any operator token may start, give a
/// share to, read or cancel a ceremony whose nonce it knows.
#[utoipa::path(
    post,
    path = "/v1/sys/rekey",
    tag = "sys",
    security(("bearer" = [])),
    request_body = RekeyRequest,
    responses(
        (status = 200, description = "The ceremony: opened, its progress, read, cancelled, or completed with the new shares", body = CeremonyAnswer),
        (status = 400, description = "Bad body (`invalid_body`, `invalid_input`, e.g. a new passphrase under 12 characters or a recipient that is not `age1...`), wrong passphrase or shares (`wrong_credential`), unusable share (`invalid_share`), other method (`wrong_method`), no ceremony with that nonce (`invalid_nonce`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 409, description = "A rekey ceremony is already open; or the `digest` given is not the ceremony's; or it is complete (`conflict`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn rekey(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<RekeyRequest>,
) -> Result<Response, ApiError> {
    let starting = request.new.is_some() || request.new_share_recipients.is_some();
    let fields = Fields {
        nonce: request.nonce,
        passphrase: request.passphrase.map(into_passphrase),
        share: request.share,
        digest: request.digest,
        cancel: request.cancel,
    };
    let call = match Call::parse(starting, fields)? {
        Call::Start => {
            let new = request.new.map(NewMethod::into_fields);
            let start = RekeyStart::parse(
                new,
                request.new_share_recipients,
                state.vault().insecure_kdf(),
            )?;
            let vault = state.vault().clone();
            let ctx = caller.context();
            let status =
                blocking(move || vault.start_rekey(&ctx, &start.new, start.recipients)).await?;
            return Ok(answer(&status, &[]));
        }
        Call::Nonce(call) => call,
    };
    run(&state, CeremonyKind::Rekey, caller.context(), call).await
}

/// `POST /v1/sys/generate-root`: a new `admin` token when every admin token is lost or
/// revoked. It takes no token at all: the unseal credential is the authority.
///
/// 1. Start: `{"recipient": "age1..."}`, a one-time age X25519 public key whose identity only
///    the initiator holds (`keyvault operator generate-root` makes one), answers the `nonce`,
///    `description` and `digest` (a conflict while another is open: nobody can displace it).
/// 2. Each holder: `{"nonce", "share"}` (a passphrase vault: `{"nonce", "passphrase"}`, once),
///    optionally with the agreed `digest`. The call that reaches the threshold mints the token
///    and answers it encrypted to the recipient (`encrypted_token`, armored age) with its
///    `token_id`. The token is never in clear in any answer, log or audit entry.
/// 3. `{"nonce"}` reads the ceremony (a completed one with its encrypted token, until it
///    expires); `{"nonce", "cancel": true}` abandons it: knowing the nonce (128 random bits the
///    initiator hands to the holders) is the authority, as no token is.
///
/// Needs the keyring, so it answers 503 while sealed. Each submission is audited (actor
/// `anonymous`, the client address), refused ones after the unseal failure delay; the start
/// and a cancel, which hold no credential, are not.
#[utoipa::path(
    post,
    path = "/v1/sys/generate-root",
    tag = "sys",
    request_body = GenerateRootRequest,
    responses(
        (status = 200, description = "The ceremony: opened, its progress, read, cancelled, or completed with the encrypted token", body = CeremonyAnswer),
        (status = 400, description = "Bad body (`invalid_body`, `invalid_input`, e.g. a recipient that is not `age1...`), wrong passphrase or shares (`wrong_credential`), unusable share (`invalid_share`), other method (`wrong_method`), no ceremony with that nonce (`invalid_nonce`)", body = ErrorBody),
        (status = 409, description = "A generate-root ceremony is already open; or the `digest` given is not the ceremony's; or it is complete (`conflict`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn generate_root(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(request): ApiJson<GenerateRootRequest>,
) -> Result<Response, ApiError> {
    if state.vault().is_sealed() {
        return Err(vault_core::Error::Sealed.into());
    }
    let fields = Fields {
        nonce: request.nonce,
        passphrase: request.passphrase.map(into_passphrase),
        share: request.share,
        digest: request.digest,
        cancel: request.cancel,
    };
    let ctx = origin.context(Actor::Anonymous);
    let call = match Call::parse(request.recipient.is_some(), fields)? {
        Call::Start => {
            let text = request.recipient.unwrap_or_default();
            let recipient = Recipient::parse_field("recipient", &text)?;
            let status = state.vault().start_generate_root(recipient)?;
            return Ok(answer(&status, &[]));
        }
        Call::Nonce(call) => call,
    };
    run(&state, CeremonyKind::GenerateRoot, ctx, call).await
}

/// Runs a call under a ceremony's nonce, as `ctx`. A refused credential is answered only after
/// the configured delay, as unseal does, to slow guessing; anything else at once.
async fn run(
    state: &AppState,
    kind: CeremonyKind,
    ctx: Context,
    call: NonceCall,
) -> Result<Response, ApiError> {
    let vault = state.vault().clone();
    // The vault's own result inside: its error decides the delay before it becomes an answer.
    let result = blocking(move || Ok(vault.call_ceremony(&ctx, kind, call))).await?;
    match result {
        Ok(done) => Ok(answer(&done.status, &done.shares)),
        Err(e) => {
            if e.is_refused_credential() {
                let delay = state.config().unseal_failure_delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            Err(e.into())
        }
    }
}

/// The answer for `status`, with the clear `shares` of a completing rekey if any.
fn answer(status: &CeremonyStatus, shares: &[Share]) -> Response {
    let texts: Vec<SecretString> = shares.iter().map(Share::expose_text).collect();
    let result = status.result.as_ref();
    let body = CeremonyAnswer {
        state: match status.state {
            CeremonyState::Open => "open",
            CeremonyState::Complete => "complete",
            CeremonyState::Cancelled => "cancelled",
        },
        nonce: &status.nonce,
        progress: status.progress,
        threshold: status.threshold,
        description: &status.description,
        digest: &status.digest,
        expires_at: status.expires_at,
        shares: (!texts.is_empty()).then(|| texts.iter().map(|t| t.expose_secret()).collect()),
        encrypted_shares: result
            .map(|r| r.encrypted_shares.as_slice())
            .filter(|s| !s.is_empty()),
        encrypted_token: result.and_then(|r| r.encrypted_token.as_deref()),
        token_id: result.and_then(|r| r.token_id).map(|id| id.to_string()),
    };
    // Zeroizing and `no-store`: a completing rekey's answer holds the clear shares.
    secret_json(&body).response(StatusCode::OK)
}

impl NewMethod {
    fn into_fields(self) -> NewMethodFields {
        NewMethodFields {
            passphrase: self.passphrase.map(into_passphrase),
            shares: self.shares,
            threshold: self.threshold,
        }
    }
}

/// A passphrase from the body. The body's secrets (passphrases, shares) are `SecretString`s:
/// zeroizing from the moment they are parsed, redacted in `Debug`. The same shortcut as
/// unseal's: a string with JSON escapes passes through serde_json's scratch buffer, which is
/// not wiped.
fn into_passphrase(secret: SecretString) -> Passphrase {
    Passphrase::new(secret.expose_secret())
}
