//! The operator's `/v1/sys/*` routes: seal, rotate, rewrap, rotate-audit-key and backup (the
//! rekey ceremony, also the operator's, is in [`ceremony`](super::ceremony)).

use axum::extract::State;
use axum::middleware::from_fn;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::tokens::Role;

use super::sys::SealStatusBody;
use crate::AppState;
use crate::auth::{Caller, require};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiQuery};
use crate::stream::{CHANNEL_CHUNKS, ChannelWriter, streamed};

/// The operator routes, behind the `operator` check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(seal))
        .routes(routes!(rotate))
        .routes(routes!(rewrap))
        .routes(routes!(rotate_audit_key))
        .routes(routes!(backup))
        .route_layer(from_fn(|req, next| require(Role::Operator, req, next)))
}

// ---------------------------------------------------------------------------------------------
// seal, rotate, rewrap, rotate-audit-key

/// Query of `POST /v1/sys/seal`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SealParams {
    /// Seal every node of a cluster vault (`keyvault seal --cluster`), this one last: answered
    /// once every live node has begun sealing (it refuses verifies from then on) or fenced
    /// itself. 400 on a one-host vault.
    #[serde(default)]
    cluster: bool,
}

/// `POST /v1/sys/seal`: seal now. Every key leaves memory and every route but health,
/// seal-status, unseal, metrics and the OpenAPI document answers 503 until an unseal. Any body
/// is ignored.
#[utoipa::path(
    post,
    path = "/v1/sys/seal",
    tag = "sys",
    params(SealParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sealed; the seal status", body = SealStatusBody),
        (status = 400, description = "`?cluster=true` on a one-host vault (`invalid_input`), or a bad query", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 503, description = "Already sealed (`sealed`); or sealed, but its audit entry or checkpoint could not be written (`audit_unavailable`); overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn seal(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<SealParams>,
) -> Result<ApiJson<SealStatusBody>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let sealing = vault.clone();
    // Commits the seal's entry and signs a last checkpoint.
    // vault-core drops every ceremony with the keys.
    let result = if params.cluster {
        // Waits for the other nodes (`Vault::await_cluster`, up to a second): a blocking task.
        blocking(move || seal_cluster(&sealing, &ctx)).await
    } else {
        blocking(move || sealing.seal(&ctx)).await
    };
    // vault-core seals whatever happens; an error says the entry or checkpoint was not written.
    result?;
    Ok(ApiJson(vault.seal_status().into()))
}

#[cfg(feature = "etcd")]
fn seal_cluster(vault: &vault_core::Vault, ctx: &vault_core::Context) -> vault_core::Result<()> {
    vault.seal_cluster(ctx)
}

#[cfg(not(feature = "etcd"))]
fn seal_cluster(_vault: &vault_core::Vault, _ctx: &vault_core::Context) -> vault_core::Result<()> {
    Err(vault_core::Error::InvalidInput(
        "this vault runs on one host: seal it without ?cluster=true".into(),
    ))
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

/// Answer of `POST /v1/sys/rotate-audit-key`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotateAuditKeyAnswer {
    /// The new audit key generation (the vault's first is 1).
    generation: u32,
    /// The new audit verifier key, `name+hash+base64`, which signs every checkpoint from now
    /// on. Give it to the witnesses (`keyvault witness serve --log`, beside the old one);
    /// auditors keep the key they pinned: `audit verify` follows the rotation.
    public_key: String,
    /// The sequence number of the `audit.key_rotated` entry that carries it.
    seq: u64,
    /// The tree size of the checkpoint signed by both the old key and the new one.
    transition_size: u64,
    /// The generation whose index key the owner index is now under.
    index_generation: u32,
    /// Keys whose owner index entry was moved.
    index_seen: u64,
}

/// `POST /v1/sys/rotate-audit-key`: a new audit signing key, digest key and index key (a new
/// audit key generation; the old ones stay, so old checkpoints verify and old digests can
/// still be asked for). Appends an `audit.key_rotated` entry carrying the new verifier key,
/// signs the checkpoint that first includes it with both keys and later ones with the new key
/// only, then rebuilds the owner index under the new index key, online. Answered when done;
/// the shortcut of `/v1/sys/rewrap` applies: past the request timeout the answer is a 503
/// `timeout` while the rebuild runs on, and running it again (a further generation) finishes
/// an interrupted rebuild. Any body is ignored.
#[utoipa::path(
    post,
    path = "/v1/sys/rotate-audit-key",
    tag = "sys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new generation and its verifier key", body = RotateAuditKeyAnswer),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator token", body = ErrorBody),
        (status = 409, description = "The previous rotation's transition checkpoint is not signed yet (`conflict`): try again", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn rotate_audit_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<RotateAuditKeyAnswer>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    let r = blocking(move || vault.rotate_audit_key(&ctx, |_, _| {})).await?;
    Ok(ApiJson(RotateAuditKeyAnswer {
        generation: r.generation,
        public_key: r.public_key,
        seq: r.seq,
        transition_size: r.transition_size,
        index_generation: r.index.generation,
        index_seen: r.index.seen,
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
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
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
    streamed(rx, "application/octet-stream").await
}
