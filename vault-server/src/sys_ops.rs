//! The operator's `/v1/sys/*` routes: seal, rotate, rewrap, backup, rekey and generate-root.
//!
//! # Ceremonies (rekey and generate-root)
//! Both need the current unseal credential besides an `operator` token. A passphrase vault gives
//! the passphrase in one call, which completes at once. A shares vault collects `threshold`
//! current shares, one per call, under a nonce, much as unseal does:
//!
//! 1. The first call (no `nonce`) gives one share (and, for rekey, the `new` method). It starts a
//!    ceremony, replacing any in progress, and answers `{"nonce", "progress", "threshold"}`.
//! 2. Each later call gives `{"nonce", "share"}`. The call that reaches the threshold runs the
//!    operation and answers `{"complete": true, ...}` with what it made (new shares, a token).
//! 3. `{"nonce", "cancel": true}` drops the ceremony and the shares it holds.
//!
//! A share of another vault or another split, or one given twice, is refused when it is given
//! (`invalid_share`) and the ceremony keeps its progress. Shares that do not combine into the
//! unseal key (`wrong_credential`) end the ceremony. Every refused credential is answered after
//! [`ServerConfig::unseal_failure_delay`](crate::ServerConfig), as unseal is. A ceremony lasts
//! [`CEREMONY_TTL`] from its start; sealing through `/v1/sys/seal` and a completed rekey drop
//! every ceremony (their shares would no longer be current).
//!
//! The ceremony's shares are held in [`Share`]s, which zeroize themselves, in this process's
//! memory only. vault-core audits the operation itself (its success or its refused credential);
//! a share refused before the threshold is reached has no audit entry of its own, since
//! vault-core offers no entry point for it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::shamir::{Share, ShareError};
use vault_core::tokens::Role;
use vault_core::{Context, Credential, UnsealMethod, Vault};

use crate::AppState;
use crate::audit_routes::{CHANNEL_CHUNKS, ChannelWriter};
use crate::auth::{Caller, blocking, require};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::secret_json;
use crate::json::ApiJson;
use crate::sys::SealStatusBody;

/// How long a ceremony waits for its shares, from its start.
pub const CEREMONY_TTL: Duration = Duration::from_secs(10 * 60);

/// The operator routes, behind the `operator` check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(seal))
        .routes(routes!(rotate))
        .routes(routes!(rewrap))
        .routes(routes!(backup))
        .routes(routes!(rekey))
        .routes(routes!(generate_root))
        .route_layer(from_fn(|req, next| require(Role::Operator, req, next)))
}

// ---------------------------------------------------------------------------------------------
// seal, rotate, rewrap

/// `POST /v1/sys/seal`: seal now. Every key leaves memory and every route but health,
/// seal-status, unseal, metrics and the OpenAPI document answers 503 until an unseal. Any body
/// is ignored.
#[utoipa::path(
    post,
    path = "/v1/sys/seal",
    tag = "sys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sealed; the seal status", body = SealStatusBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 503, description = "Already sealed (`sealed`); or sealed, but its audit entry or checkpoint could not be written (`audit_unavailable`); overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn seal(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<SealStatusBody>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let sealing = vault.clone();
    // Commits the seal's entry and signs a last checkpoint.
    let result = blocking(move || sealing.seal(&ctx)).await;
    state.ceremonies.clear();
    // vault-core seals whatever happens; an error says the entry or checkpoint was not written.
    result?;
    Ok(ApiJson(vault.seal_status().into()))
}

/// Answer of `POST /v1/sys/rotate`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotateAnswer {
    /// The new keyring term, which new writes now use.
    term: u32,
}

/// `POST /v1/sys/rotate`: add a keyring term. Records under older terms still decrypt; rewrap
/// moves them to the new one. Any body is ignored.
#[utoipa::path(
    post,
    path = "/v1/sys/rotate",
    tag = "sys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new term", body = RotateAnswer),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<RotateAnswer>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let term = blocking(move || vault.rotate(&ctx)).await?;
    Ok(ApiJson(RotateAnswer { term }))
}

/// Answer of `POST /v1/sys/rewrap`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RewrapAnswer {
    /// Records re-encrypted.
    rewritten: u64,
    /// Records looked at.
    seen: u64,
    /// The term every record is now under.
    term: u32,
}

/// `POST /v1/sys/rewrap`: re-encrypt every record under the newest term, online, a batch per
/// commit. Answered when done. Shortcut: it runs inside the request, so on a vault large enough
/// to take longer than the request timeout the answer is a 503 `timeout` while the rewrap runs
/// on to its end (running it again finishes the job and reports what it did). Any body is
/// ignored.
#[utoipa::path(
    post,
    path = "/v1/sys/rewrap",
    tag = "sys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What the rewrap did", body = RewrapAnswer),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn rewrap(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<RewrapAnswer>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let report = blocking(move || vault.rewrap(&ctx, |_, _| {})).await?;
    Ok(ApiJson(RewrapAnswer {
        rewritten: report.rewritten,
        seen: report.seen,
        term: report.term,
    }))
}

// ---------------------------------------------------------------------------------------------
// backup

/// `GET /v1/sys/backup`: a consistent copy of the whole vault (seal configuration, keyring,
/// records, audit log and checkpoints), streamed as `keyvault-backup/1` (see the architecture
/// notes) while the vault keeps serving. `keyvault operator restore` brings it back into a new
/// data directory, offline. The file's last 32 bytes are the SHA-256 of the rest: a transfer cut
/// short (the body is aborted if the backup fails after it started) is refused at restore.
///
/// The copy holds encrypted records and the audit log, which names owners and client addresses
/// in the clear: store it as carefully as the data directory. One backup runs at a time.
#[utoipa::path(
    get,
    path = "/v1/sys/backup",
    tag = "sys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The backup file, streamed", content(
            ("application/octet-stream"),
        )),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 409, description = "A backup is already running (`conflict`)", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn backup(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let writer_tx = tx.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(writer_tx);
        vault.backup(&ctx, &mut out, |_| {})
    });
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(report)) => tracing::info!(
                records = report.records,
                captured = report.captured,
                bytes = report.bytes,
                "backup written"
            ),
            Ok(Err(e)) => {
                if tx.is_closed() {
                    tracing::warn!("the client left during a backup");
                } else {
                    let _ = tx.send(Err(ApiError::from(e))).await;
                }
            }
            Err(join) => {
                let _ = tx.send(Err(ApiError::internal(&join))).await;
            }
        }
    });
    // The status waits for the first chunk: a backup refused at its start answers its error.
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e),
        None => Bytes::new(),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        // Past the first chunk the status is sent: abort the body instead.
        Some((item.map_err(|e| std::io::Error::other(e.message)), rx))
    });
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]).chain(rest);
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream"),
            (CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// rekey and generate-root

/// Body of `POST /v1/sys/rekey`. First call: `passphrase` (completes at once) or `share`, and
/// `new`. Later calls: `nonce` and `share`. To abandon: `nonce` and `cancel: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RekeyRequest {
    /// The current passphrase (passphrase vaults).
    #[schema(value_type = Option<String>, format = Password)]
    passphrase: Option<Secret>,
    /// One current share, `kvs1_...` (shares vaults).
    #[schema(value_type = Option<String>, format = Password)]
    share: Option<Secret>,
    /// The ceremony's nonce, on every call after the first.
    nonce: Option<String>,
    /// `true`, with `nonce`: abandon the ceremony.
    cancel: Option<bool>,
    /// The new unseal method, on the first call only.
    new: Option<NewMethod>,
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
    passphrase: Option<Secret>,
    /// Shares to make (at most 255).
    shares: Option<u8>,
    /// Shares needed to unseal (at least 2, at most `shares`).
    threshold: Option<u8>,
}

/// Body of `POST /v1/sys/generate-root`: as for rekey, without `new`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRootRequest {
    /// The current passphrase (passphrase vaults).
    #[schema(value_type = Option<String>, format = Password)]
    passphrase: Option<Secret>,
    /// One current share, `kvs1_...` (shares vaults).
    #[schema(value_type = Option<String>, format = Password)]
    share: Option<Secret>,
    /// The ceremony's nonce, on every call after the first.
    nonce: Option<String>,
    /// `true`, with `nonce`: abandon the ceremony.
    cancel: Option<bool>,
}

/// Answer of `POST /v1/sys/rekey`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RekeyAnswer<'a> {
    /// Whether the rekey ran: the new method is in force.
    complete: bool,
    /// While the ceremony runs: its nonce, to send with each further share.
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    /// Current shares given so far (1 for a passphrase).
    progress: u8,
    /// Current shares needed (1 for a passphrase).
    threshold: u8,
    /// Set when the ceremony was cancelled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancelled: bool,
    /// On completion with a new shares method: the new shares (`kvs1_...`), one to hand to each
    /// operator. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    shares: Option<Vec<&'a str>>,
}

/// Answer of `POST /v1/sys/generate-root`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateRootAnswer<'a> {
    /// Whether the token was made.
    complete: bool,
    /// While the ceremony runs: its nonce, to send with each further share.
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    /// Current shares given so far (1 for a passphrase).
    progress: u8,
    /// Current shares needed (1 for a passphrase).
    threshold: u8,
    /// Set when the ceremony was cancelled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancelled: bool,
    /// On completion: a new `admin` token (`kvt_...`). Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Password)]
    token: Option<&'a str>,
    /// On completion: the new token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
}

/// `POST /v1/sys/rekey`: a new root key and a new unseal method (passphrase or shares, either
/// way round), given the current passphrase or `threshold` current shares (see the module doc
/// for the ceremony). No record is rewritten; the old credential stops working at once.
#[utoipa::path(
    post,
    path = "/v1/sys/rekey",
    tag = "sys",
    security(("bearer" = [])),
    request_body = RekeyRequest,
    responses(
        (status = 200, description = "Progress of the ceremony, or its completion with the new shares", body = RekeyAnswer),
        (status = 400, description = "Bad body (`invalid_body`, `invalid_input`, e.g. a new passphrase under 12 characters), wrong passphrase or shares (`wrong_credential`), unusable share (`invalid_share`), other method (`wrong_method`), no ceremony with that nonce (`invalid_nonce`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
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
    let step = Step::parse(
        request.passphrase,
        request.share,
        request.nonce,
        request.cancel,
    )?;
    let new = match (&step, request.new) {
        (Step::Start(_), Some(new)) => Some(new.into_method(state.vault())?),
        (Step::Start(_), None) => {
            return Err(ApiError::invalid_input(
                "the first call of a rekey gives the new method in `new`",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid_input(
                "`new` is given on the first call only (without `nonce`)",
            ));
        }
        (_, None) => None,
    };
    let answer = run_step(&state, Kind::Rekey, caller.context(), step, new).await;
    let answer = after_failure_delay(&state, answer).await?;
    let (threshold, issued) = match answer {
        Progress::Pending(p) => {
            return Ok(ApiJson(RekeyAnswer {
                complete: false,
                nonce: p.nonce,
                progress: p.progress,
                threshold: p.threshold,
                cancelled: p.cancelled,
                shares: None,
            })
            .into_response());
        }
        Progress::Done {
            threshold,
            outcome: Outcome::Rekeyed(issued),
        } => (threshold, issued),
        Progress::Done { .. } => {
            return Err(ApiError::internal(&"a rekey ceremony made a token"));
        }
    };
    let texts: Vec<SecretString> = issued.shares.iter().map(Share::expose_text).collect();
    let body = RekeyAnswer {
        complete: true,
        nonce: None,
        progress: threshold,
        threshold,
        cancelled: false,
        shares: (!texts.is_empty()).then(|| texts.iter().map(|t| t.expose_secret()).collect()),
    };
    Ok(secret_json(&body).response(StatusCode::OK))
}

/// `POST /v1/sys/generate-root`: a new `admin` token, given the current passphrase or
/// `threshold` current shares (see the module doc for the ceremony): the way back in when every
/// admin token is lost or revoked.
#[utoipa::path(
    post,
    path = "/v1/sys/generate-root",
    tag = "sys",
    security(("bearer" = [])),
    request_body = GenerateRootRequest,
    responses(
        (status = 200, description = "Progress of the ceremony, or its completion with the new admin token", body = GenerateRootAnswer),
        (status = 400, description = "Bad body (`invalid_body`, `invalid_input`), wrong passphrase or shares (`wrong_credential`), unusable share (`invalid_share`), other method (`wrong_method`), no ceremony with that nonce (`invalid_nonce`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn generate_root(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<GenerateRootRequest>,
) -> Result<Response, ApiError> {
    let step = Step::parse(
        request.passphrase,
        request.share,
        request.nonce,
        request.cancel,
    )?;
    let answer = run_step(&state, Kind::GenerateRoot, caller.context(), step, None).await;
    let answer = after_failure_delay(&state, answer).await?;
    let (threshold, token) = match answer {
        Progress::Pending(p) => {
            return Ok(ApiJson(GenerateRootAnswer {
                complete: false,
                nonce: p.nonce,
                progress: p.progress,
                threshold: p.threshold,
                cancelled: p.cancelled,
                token: None,
                token_id: None,
            })
            .into_response());
        }
        Progress::Done {
            threshold,
            outcome: Outcome::Token(token),
        } => (threshold, token),
        Progress::Done { .. } => {
            return Err(ApiError::internal(&"a generate-root ceremony rekeyed"));
        }
    };
    let text = token.expose_secret_text();
    let body = GenerateRootAnswer {
        complete: true,
        nonce: None,
        progress: threshold,
        threshold,
        cancelled: false,
        token: Some(text.expose_secret()),
        token_id: Some(token.id().to_string()),
    };
    Ok(secret_json(&body).response(StatusCode::OK))
}

/// The ceremonies in progress: at most one rekey and one generate-root per server. A std
/// `Mutex`, not a Tokio one: it is never held across an await.
#[derive(Debug, Clone, Default)]
pub struct Ceremonies(Arc<Mutex<Slots>>);

#[derive(Debug, Default)]
struct Slots {
    rekey: Option<Ceremony>,
    generate_root: Option<Ceremony>,
}

/// One ceremony: the shares given so far and, for a rekey, the new method.
#[derive(Debug)]
struct Ceremony {
    nonce: String,
    started: Instant,
    threshold: u8,
    shares: Vec<Share>,
    new: Option<UnsealMethod>,
}

impl Ceremony {
    fn is_live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < CEREMONY_TTL
    }
}

impl Ceremonies {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every critical section only moves whole values in and out; a panic leaves them whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every ceremony and the shares it holds.
    pub(crate) fn clear(&self) {
        let mut slots = self.lock();
        slots.rekey = None;
        slots.generate_root = None;
    }
}

impl Slots {
    fn slot(&mut self, kind: Kind) -> &mut Option<Ceremony> {
        match kind {
            Kind::Rekey => &mut self.rekey,
            Kind::GenerateRoot => &mut self.generate_root,
        }
    }
}

/// Which ceremony.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Rekey,
    GenerateRoot,
}

/// A request's credential.
enum Given {
    Passphrase(Passphrase),
    Share(Secret),
}

/// What one request asks of a ceremony, once its body is checked.
enum Step {
    Start(Given),
    Continue { nonce: String, share: Secret },
    Cancel { nonce: String },
}

impl Step {
    fn parse(
        passphrase: Option<Secret>,
        share: Option<Secret>,
        nonce: Option<String>,
        cancel: Option<bool>,
    ) -> Result<Step, ApiError> {
        match (passphrase, share, nonce, cancel) {
            (None, None, Some(nonce), Some(true)) => Ok(Step::Cancel { nonce }),
            (_, _, _, Some(false)) => Err(ApiError::invalid_input(
                "`cancel` must be true (leave it out to give a credential)",
            )),
            (_, _, _, Some(true)) => Err(ApiError::invalid_input(
                "to cancel, give only `nonce` and `cancel`",
            )),
            (None, Some(share), Some(nonce), None) => Ok(Step::Continue { nonce, share }),
            (_, _, Some(_), None) => Err(ApiError::invalid_input(
                "with `nonce`, give one `share` (a passphrase completes in one call, with no nonce)",
            )),
            (Some(p), None, None, None) => Ok(Step::Start(Given::Passphrase(Passphrase::new(
                p.0.expose_secret(),
            )))),
            (None, Some(share), None, None) => Ok(Step::Start(Given::Share(share))),
            _ => Err(ApiError::invalid_input(
                "give exactly one of `passphrase` or `share`",
            )),
        }
    }
}

impl NewMethod {
    fn into_method(self, vault: &Vault) -> Result<UnsealMethod, ApiError> {
        match (self.passphrase, self.shares, self.threshold) {
            (Some(p), None, None) => {
                let passphrase = Passphrase::new(p.0.expose_secret());
                passphrase
                    .check_new()
                    .map_err(|e| ApiError::invalid_input(format!("new.passphrase: {e}")))?;
                let params = if vault.insecure_kdf() {
                    KdfParams::INSECURE_FAST
                } else {
                    KdfParams::DEFAULT
                };
                Ok(UnsealMethod::Passphrase { passphrase, params })
            }
            (None, Some(shares), Some(threshold)) => {
                if threshold < 2 || threshold > shares {
                    return Err(ApiError::invalid_input(format!(
                        "new: the threshold must be at least 2 and at most the number of shares \
                         (got {threshold} of {shares})"
                    )));
                }
                Ok(UnsealMethod::Shares { threshold, shares })
            }
            _ => Err(ApiError::invalid_input(
                "new: give either `passphrase`, or `shares` and `threshold`",
            )),
        }
    }
}

/// Where a ceremony stands after a request.
enum Progress {
    Pending(Pending),
    Done { threshold: u8, outcome: Outcome },
}

struct Pending {
    nonce: Option<String>,
    progress: u8,
    threshold: u8,
    cancelled: bool,
}

/// What a completed ceremony made.
enum Outcome {
    Rekeyed(vault_core::Issued),
    Token(vault_core::apikey::ApiKey),
}

/// Applies one step to the ceremony of `kind`, running the operation when it completes under
/// `ctx` (the caller that gives the last share).
async fn run_step(
    state: &AppState,
    kind: Kind,
    ctx: Context,
    step: Step,
    new: Option<UnsealMethod>,
) -> Result<Progress, ApiError> {
    let vault = state.vault();
    let status = vault.seal_status();
    match step {
        Step::Start(Given::Passphrase(passphrase)) => {
            state.ceremonies.lock().slot(kind).take();
            let credential = Credential::Passphrase(passphrase);
            let outcome = complete(state, kind, ctx, credential, new).await?;
            Ok(Progress::Done {
                threshold: 1,
                outcome,
            })
        }
        Step::Start(Given::Share(text)) => {
            if status.method != "shares" {
                return Err(vault_core::Error::WrongMethod {
                    expected: "a passphrase",
                    given: "a share",
                }
                .into());
            }
            let share = check_share(vault, &text, status.threshold, &[])?;
            let mut nonce = [0u8; 16];
            vault_core::crypto::fill_random(&mut nonce);
            let nonce = hex(&nonce);
            let ceremony = Ceremony {
                nonce: nonce.clone(),
                started: Instant::now(),
                threshold: status.threshold,
                shares: vec![share],
                new,
            };
            // Replaces (and so cancels) any ceremony in progress.
            *state.ceremonies.lock().slot(kind) = Some(ceremony);
            Ok(Progress::Pending(Pending {
                nonce: Some(nonce),
                progress: 1,
                threshold: status.threshold,
                cancelled: false,
            }))
        }
        Step::Cancel { nonce } => {
            let mut slots = state.ceremonies.lock();
            let slot = slots.slot(kind);
            let threshold = live(slot, &nonce, Instant::now())?.threshold;
            *slot = None;
            Ok(Progress::Pending(Pending {
                nonce: None,
                progress: 0,
                threshold,
                cancelled: true,
            }))
        }
        Step::Continue { nonce, share } => {
            let ready = {
                let mut slots = state.ceremonies.lock();
                let slot = slots.slot(kind);
                let ceremony = live(slot, &nonce, Instant::now())?;
                let share = check_share(vault, &share, ceremony.threshold, &ceremony.shares)?;
                ceremony.shares.push(share);
                if ceremony.shares.len() < usize::from(ceremony.threshold) {
                    return Ok(Progress::Pending(Pending {
                        nonce: Some(nonce),
                        progress: ceremony.shares.len() as u8,
                        threshold: ceremony.threshold,
                        cancelled: false,
                    }));
                }
                // Invariant: `live` just found the ceremony in this slot.
                slot.take().expect("the slot holds the live ceremony")
            };
            let Ceremony {
                threshold,
                shares,
                new,
                ..
            } = ready;
            let outcome = complete(state, kind, ctx, Credential::Shares(shares), new).await?;
            Ok(Progress::Done { threshold, outcome })
        }
    }
}

/// Runs the ceremony's operation on the blocking pool (Argon2id for a passphrase, a commit).
async fn complete(
    state: &AppState,
    kind: Kind,
    ctx: Context,
    credential: Credential,
    new: Option<UnsealMethod>,
) -> Result<Outcome, ApiError> {
    let vault = state.vault().clone();
    match kind {
        Kind::Rekey => {
            let Some(new) = new else {
                return Err(ApiError::internal(&"a rekey ceremony without a new method"));
            };
            let issued = blocking(move || vault.rekey(&ctx, credential, &new)).await?;
            // The shares any other ceremony holds are no longer current.
            state.ceremonies.clear();
            Ok(Outcome::Rekeyed(issued))
        }
        Kind::GenerateRoot => {
            let token = blocking(move || vault.generate_root(&ctx, credential)).await?;
            Ok(Outcome::Token(token))
        }
    }
}

/// The live ceremony in `slot` if its nonce is `nonce`; an expired one is dropped.
fn live<'a>(
    slot: &'a mut Option<Ceremony>,
    nonce: &str,
    now: Instant,
) -> Result<&'a mut Ceremony, ApiError> {
    if slot.as_ref().is_some_and(|c| !c.is_live(now)) {
        *slot = None;
    }
    match slot {
        Some(ceremony) if ceremony.nonce == nonce => Ok(ceremony),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_nonce",
            "no ceremony with this nonce is in progress: it completed, was cancelled or \
             replaced, or expired; start again without a nonce",
        )),
    }
}

/// Parses a share and checks it against the vault and the shares already given: of this vault,
/// of its current split, not given twice. vault-core checks the same when it combines them; this
/// refuses a bad share when it is given rather than after the last one.
fn check_share(
    vault: &Vault,
    text: &Secret,
    threshold: u8,
    given: &[Share],
) -> Result<Share, ApiError> {
    let share = Share::parse(text.0.expose_secret()).map_err(vault_core::Error::from)?;
    let refused = if share.vault_id() != vault.vault_id() {
        Some(ShareError::OtherVault)
    } else if share.threshold() != threshold {
        Some(ShareError::OtherSplit(share.threshold()))
    } else if given.iter().any(|s| s.index() == share.index()) {
        Some(ShareError::Repeated)
    } else {
        None
    };
    match refused {
        Some(e) => Err(vault_core::Error::from(e).into()),
        None => Ok(share),
    }
}

/// A refused credential is answered only after the configured delay, as unseal does, to slow
/// guessing; a malformed request is answered at once.
async fn after_failure_delay<T>(
    state: &AppState,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if let Err(e) = &result
        && matches!(
            e.code,
            "wrong_credential" | "invalid_share" | "wrong_method"
        )
    {
        let delay = state.config().unseal_failure_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A string from the body that is a secret (a passphrase, a share): zeroizing from the moment
/// it is parsed, redacted in `Debug`. The same shortcut as unseal's: a string with JSON escapes
/// passes through serde_json's scratch buffer, which is not wiped.
#[derive(Debug)]
struct Secret(SecretString);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(SecretString::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(SecretString::from(v)))
            }
        }
        deserializer.deserialize_string(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceremony(started: Instant) -> Option<Ceremony> {
        Some(Ceremony {
            nonce: "n".into(),
            started,
            threshold: 2,
            shares: Vec::new(),
            new: None,
        })
    }

    #[test]
    fn a_ceremony_expires_after_its_ttl_and_is_dropped() {
        let start = Instant::now();
        let mut slot = ceremony(start);
        assert!(
            live(
                &mut slot,
                "n",
                start + CEREMONY_TTL - Duration::from_secs(1)
            )
            .is_ok()
        );
        assert!(live(&mut slot, "other", start).is_err());
        assert!(slot.is_some(), "a wrong nonce leaves the ceremony alone");
        let Err(e) = live(&mut slot, "n", start + CEREMONY_TTL) else {
            panic!("an expired ceremony was accepted");
        };
        assert_eq!(e.code, "invalid_nonce");
        assert!(slot.is_none(), "an expired ceremony is dropped");
    }
}
