//! `/v1/audit/*`: streamed export (and tail), signed checkpoints, Merkle proofs, the public key
//! and keyed digests; `auditor` only.
//!
//! # Streaming
//! An export runs vault-core's synchronous `export_audit` on the blocking pool, writing into a
//! [`ChannelWriter`](crate::stream::ChannelWriter): a bounded channel of byte chunks that the
//! response body reads. Memory stays
//! bounded whatever the log's size, and a client that goes away ends the export: the body is
//! dropped, the channel closes, the writer's next send fails and the export returns. The status
//! waits for the first chunk (the header line, written after the export's own audit entry and
//! checkpoint), so an export refused at the start (sealed, audit log unavailable) answers with
//! its error; one that fails later aborts the body, which then lacks its end line and so fails
//! to verify.
//!
//! With `follow=true` the stream goes on after the end line with each new entry (its
//! canonical JSON, one line, filtered like the export), polling the log every
//! [`FOLLOW_POLL`], and a bare newline after each [`KEEP_ALIVE`] without one, so that a client
//! that left is noticed. It ends when the client leaves, the vault seals, the server stops, or
//! the token that opened it is no longer valid: each poll asks the vault again whether that
//! token (by its id) is revoked or expired, so a follower never outlives its authorisation by
//! more than one poll. The body then simply ends. Entries after the end line are not covered by
//! a signature: a later export proves them.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::middleware::from_fn;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::Vault;
use vault_core::apikey::KeyId;
use vault_core::audit::Entry;
use vault_core::audit::api::ExportSummary;
use vault_core::audit::export::{ExportFilter, ExportFormat};
use vault_core::tokens::Role;

use crate::AppState;
use crate::auth::{Caller, require};
use crate::error::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiQuery};
use crate::rfc3339::parse_time;
use crate::stream::{CHANNEL_CHUNKS, ChannelWriter, Chunk, streamed};

/// How often a followed export looks for new entries.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Longest a followed export stays silent: then it sends a bare newline.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Most entries a followed export reads per poll.
const FOLLOW_BATCH: u64 = 1024;

/// The audit routes, behind the `auditor` check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(checkpoint))
        .routes(routes!(proof))
        .routes(routes!(public_key))
        .routes(routes!(digest))
        .route_layer(from_fn(|req, next| require(Role::Auditor, req, next)))
}

// ---------------------------------------------------------------------------------------------
// export

/// Export formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormatName {
    /// Verifiable JSON Lines (`keyvault audit verify`).
    #[default]
    Jsonl,
    /// CSV for spreadsheets; not verifiable.
    Csv,
}

/// Query of `GET /v1/audit/export`. Times are RFC 3339 (`2025-01-31T12:00:00Z`, any offset,
/// fractions of a second dropped) or Unix seconds.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Entries at or after this time.
    since: Option<String>,
    /// Entries before this time.
    until: Option<String>,
    /// Entries of this owner.
    owner: Option<String>,
    /// Entries of this key or token id (24 hex digits).
    key: Option<String>,
    /// Entries of this event (`key.verify`, `sys.seal`, ...).
    event: Option<String>,
    /// Entries with this outcome (`VALID`, `NOT_FOUND`, ... for verifies; `ok`, `denied`, ...).
    outcome: Option<String>,
    /// `jsonl` (default) or `csv`.
    #[param(inline)]
    format: Option<ExportFormatName>,
    /// `true`: after the export, keep streaming new entries (JSON Lines only), until the
    /// client leaves, the vault seals, or the token is revoked or expires.
    follow: Option<bool>,
    /// Only the last this many entries of the log (the other filters pick from them); the
    /// export starts there, verifiable from there on (`keyvault audit tail -n N`).
    last: Option<u64>,
}

impl ExportQuery {
    /// Whether it asks for CSV.
    pub(crate) fn is_csv(&self) -> bool {
        self.format == Some(ExportFormatName::Csv)
    }

    fn filter(&self) -> Result<ExportFilter, ApiError> {
        let key_id = match &self.key {
            None => None,
            Some(text) => Some(
                KeyId::parse_hex(text)
                    .map_err(|e| ApiError::invalid_query(format!("key: {e}")))?
                    .to_string(),
            ),
        };
        Ok(ExportFilter {
            since_ms: self
                .since
                .as_deref()
                .map(|t| parse_time("since", t))
                .transpose()?,
            until_ms: self
                .until
                .as_deref()
                .map(|t| parse_time("until", t))
                .transpose()?,
            owner: self.owner.clone(),
            key_id,
            event: self.event.clone(),
            outcome: self.outcome.clone(),
            last: self.last,
        })
    }
}

/// `GET /v1/audit/export`: the audit log, streamed, as JSON Lines (verifiable offline with only
/// the public key) or CSV. The export is itself audited and carries a checkpoint signed for
/// it; a filtered JSON Lines export carries an inclusion proof per entry.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    security(("bearer" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "The export, streamed (see `keyvault-audit-export/1` in the architecture notes); with `follow=true`, then new entries as they are appended", content(
            ("application/x-ndjson"),
            ("text/csv"),
        )),
        (status = 400, description = "A bad parameter (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an auditor token", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    start_export(&state, caller.context(), caller.token.token_id, query).await
}

/// Starts the export `query` asks for, audited under `ctx`, as the token `token` (a followed
/// export ends when it does): the API's route and the console's download both come here.
pub(crate) async fn start_export(
    state: &AppState,
    ctx: vault_core::Context,
    token: KeyId,
    query: ExportQuery,
) -> Result<Response, ApiError> {
    let format = query.format.unwrap_or_default();
    let follow = query.follow.unwrap_or(false);
    if follow && format == ExportFormatName::Csv {
        return Err(ApiError::invalid_query(
            "follow: a followed export is JSON Lines only (leave out format, or format=jsonl)",
        ));
    }
    let filter = query.filter()?;
    let (core_format, content_type) = match format {
        ExportFormatName::Jsonl => (ExportFormat::Jsonl, "application/x-ndjson"),
        ExportFormatName::Csv => (ExportFormat::Csv, "text/csv; charset=utf-8"),
    };

    let vault = state.vault().clone();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let exporting = vault.clone();
    let export_filter = filter.clone();
    let writer_tx = tx.clone();
    let export = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(writer_tx);
        exporting.export_audit(&ctx, &export_filter, core_format, &mut out)
    });
    let follow = follow.then(|| Follow {
        vault,
        filter,
        token,
        closing: state.closing(),
    });
    tokio::spawn(drive(export, tx, follow));

    streamed(rx, content_type).await
}

/// What a followed export needs once its export is written.
struct Follow {
    vault: Vault,
    filter: ExportFilter,
    /// The token that opened the export: the stream ends once it is revoked or expired.
    token: KeyId,
    /// Turns true when the server stops.
    closing: tokio::sync::watch::Receiver<bool>,
}

/// Waits for the export; then sends its error, or follows the log if asked to.
async fn drive(
    export: tokio::task::JoinHandle<vault_core::Result<ExportSummary>>,
    tx: mpsc::Sender<Chunk>,
    follow: Option<Follow>,
) {
    let summary = match export.await {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => {
            if tx.is_closed() {
                // The writer failed because the client left: nothing went wrong here.
                tracing::debug!("the client left during an audit export");
            } else {
                let _ = tx.send(Err(ApiError::from(e))).await;
            }
            return;
        }
        Err(join) => {
            let _ = tx.send(Err(ApiError::internal(&join))).await;
            return;
        }
    };
    if let Some(follow) = follow {
        tail(follow, summary.tree_size, tx).await;
    }
}

/// Streams the entries from `next` on as they are appended, until the client leaves, the
/// vault seals, the server stops or the caller's token is no longer valid.
async fn tail(follow: Follow, mut next: u64, tx: mpsc::Sender<Chunk>) {
    let Follow {
        vault,
        filter,
        token,
        mut closing,
    } = follow;
    let mut last_sent = Instant::now();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            changed = closing.changed() => {
                if changed.is_err() {
                    return; // the server is gone
                }
            }
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        if vault.is_sealed() || *closing.borrow() {
            return;
        }
        // Memory only, but for the token's first use since an unseal (one store read).
        match vault.token_is_live(&token) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(%token, "a followed audit export ends: its token was revoked or expired");
                return;
            }
            // Sealed since the check above, or the token record unreadable: end either way.
            Err(e) => {
                tracing::debug!(%token, error = %e, "a followed audit export ends: its token cannot be checked");
                return;
            }
        }
        if vault.audit_size() > next {
            let reading = vault.clone();
            let read_filter = filter.clone();
            // Store reads, possibly many: off the async workers.
            let read = blocking(move || new_entries(&reading, &read_filter, next)).await;
            match read {
                Ok((chunk, upto)) => {
                    next = upto;
                    if !chunk.is_empty() {
                        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                            return;
                        }
                        last_sent = Instant::now();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        if last_sent.elapsed() >= KEEP_ALIVE {
            if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                return;
            }
            last_sent = Instant::now();
        }
    }
}

/// Up to [`FOLLOW_BATCH`] entries from `from` that `filter` selects, one line each, and the
/// sequence number to read from next.
fn new_entries(
    vault: &Vault,
    filter: &ExportFilter,
    from: u64,
) -> vault_core::Result<(Vec<u8>, u64)> {
    let end = from.saturating_add(FOLLOW_BATCH);
    let everything = filter.is_everything();
    let mut out = Vec::new();
    let mut next = from;
    for item in vault.audit_entries(from)? {
        let (seq, bytes) = item?;
        if seq >= end {
            break;
        }
        next = seq + 1;
        if !everything {
            let entry = Entry::parse(&bytes)
                .map_err(|e| vault_core::Error::Corrupt(format!("audit entry {seq}: {e}")))?;
            if !filter.matches(&entry) {
                continue;
            }
        }
        out.extend_from_slice(&bytes);
        out.push(b'\n');
    }
    Ok((out, next))
}

// ---------------------------------------------------------------------------------------------
// checkpoint, proofs, public key, digest

/// Answer of `GET /v1/audit/checkpoint`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointAnswer {
    /// The C2SP `tlog-checkpoint` signed note (origin, size, base64 root; Ed25519).
    checkpoint: String,
    /// Its tree size.
    size: u64,
    /// Its RFC 6962 root hash, base64.
    root: String,
}

/// `GET /v1/audit/checkpoint`: a checkpoint of the whole log, signed now if the log grew since
/// the last one.
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoint",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The latest signed checkpoint", body = CheckpointAnswer),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an auditor token", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<ApiJson<CheckpointAnswer>, ApiError> {
    let vault = state.vault().clone();
    // Checks the stored tree, signs, appends to the checkpoint file.
    let signed = blocking(move || vault.audit_checkpoint()).await?;
    Ok(ApiJson(CheckpointAnswer {
        checkpoint: signed.note,
        size: signed.checkpoint.size,
        root: B64.encode(signed.checkpoint.root),
    }))
}

/// Query of `GET /v1/audit/proof`: `index` and `size` (inclusion), or `old` and `new`
/// (consistency).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// Inclusion: the entry's sequence number.
    index: Option<u64>,
    /// Inclusion: the tree size (at most the log's).
    size: Option<u64>,
    /// Consistency: the earlier tree size.
    old: Option<u64>,
    /// Consistency: the later tree size (at most the log's).
    new: Option<u64>,
}

/// An inclusion or a consistency proof, by the query's form.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ProofAnswer {
    /// `?index&size`.
    Inclusion(InclusionProof),
    /// `?old&new`.
    Consistency(ConsistencyProof),
}

/// RFC 6962 inclusion proof of entry `index` in the tree of `size` entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    /// The entry's sequence number (its leaf index).
    index: u64,
    /// The tree size.
    size: u64,
    /// The tree's root, base64.
    root: String,
    /// The audit path from the leaf up, base64 hashes.
    proof: Vec<String>,
    /// The checkpoint the vault signed at this size, if it signed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
}

/// RFC 6962 consistency proof from tree size `old` to `new`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    /// The earlier size.
    old: u64,
    /// The later size.
    new: u64,
    /// The earlier tree's root, base64.
    old_root: String,
    /// The later tree's root, base64.
    new_root: String,
    /// The proof, base64 hashes.
    proof: Vec<String>,
}

/// `GET /v1/audit/proof`: an inclusion proof (`?index=I&size=N`) or a consistency proof
/// (`?old=M&new=N`). Check it against checkpoints the vault signed at those sizes.
#[utoipa::path(
    get,
    path = "/v1/audit/proof",
    tag = "audit",
    security(("bearer" = [])),
    params(ProofQuery),
    responses(
        (status = 200, description = "The proof", body = ProofAnswer),
        (status = 400, description = "Parameters of neither form (`invalid_query`), or out of range: an index not below the size, a size past the log, old above new (`invalid_input`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an auditor token", body = ErrorBody),
        (status = 410, description = "The entry was archived (`archived`): its proof is in the archive file", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn proof(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<ProofQuery>,
) -> Result<ApiJson<ProofAnswer>, ApiError> {
    let vault = state.vault().clone();
    let answer = match (query.index, query.size, query.old, query.new) {
        (Some(index), Some(size), None, None) => {
            // Reads O(log size) stored tree nodes.
            let (root, proof, checkpoint) = blocking(move || {
                let proof = vault.audit_inclusion_proof(index, size)?;
                let root = vault.audit_root(size)?;
                Ok((root, proof, vault.audit_checkpoint_at(size)?))
            })
            .await?;
            ProofAnswer::Inclusion(InclusionProof {
                index,
                size,
                root: B64.encode(root),
                proof: proof.iter().map(|h| B64.encode(h)).collect(),
                checkpoint,
            })
        }
        (None, None, Some(old), Some(new)) => {
            let (old_root, new_root, proof) = blocking(move || {
                let proof = vault.audit_consistency_proof(old, new)?;
                Ok((vault.audit_root(old)?, vault.audit_root(new)?, proof))
            })
            .await?;
            ProofAnswer::Consistency(ConsistencyProof {
                old,
                new,
                old_root: B64.encode(old_root),
                new_root: B64.encode(new_root),
                proof: proof.iter().map(|h| B64.encode(h)).collect(),
            })
        }
        _ => {
            return Err(ApiError::invalid_query(
                "give `index` and `size` (inclusion), or `old` and `new` (consistency)",
            ));
        }
    };
    Ok(ApiJson(answer))
}

/// Answer of `GET /v1/audit/public-key`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyAnswer {
    /// The verifier key of the checkpoints signed now, `name+hash+base64`: the one `init`
    /// printed until the audit key is rotated, then the newest generation's.
    public_key: String,
    /// Every verifier key the vault has signed checkpoints with, oldest (the one `init`
    /// printed) first; the last is `public_key`.
    public_keys: Vec<String>,
}

/// `GET /v1/audit/public-key`: the key that verifies checkpoints and exports. Auditors should
/// pin the one `init` printed rather than trust this answer: `audit verify` follows audit key
/// rotations from it.
#[utoipa::path(
    get,
    path = "/v1/audit/public-key",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The public key", body = PublicKeyAnswer),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an auditor token", body = ErrorBody),
        (status = 503, description = "Sealed, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn public_key(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<ApiJson<PublicKeyAnswer>, ApiError> {
    let vault = state.vault().clone();
    let public_keys = blocking(move || vault.audit_public_keys()).await?;
    Ok(ApiJson(PublicKeyAnswer {
        public_key: public_keys.last().cloned().unwrap_or_default(),
        public_keys,
    }))
}

/// Body of `POST /v1/audit/digest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    /// The string to digest, such as a leaked key. Treated as a secret: never logged or stored.
    #[schema(value_type = String, format = Password)]
    text: SecretString,
}

/// Answer of `POST /v1/audit/digest`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DigestAnswer {
    /// HMAC-SHA256 of the text under the current audit digest key, lowercase hex: the
    /// `presented_digest` the log records for a presented string that matched nothing.
    digest: String,
    /// The digest under every audit key generation's digest key, oldest first: entries
    /// written before an audit key rotation hold an older generation's.
    digests: Vec<GenerationDigest>,
}

/// The digest of a string under one audit key generation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GenerationDigest {
    /// The audit key generation (1 is the vault's first).
    generation: u32,
    /// HMAC-SHA256 of the text under that generation's digest key, lowercase hex.
    digest: String,
}

/// `POST /v1/audit/digest`: the keyed digest of a string, to search the log for ("was this
/// leaked key ever tried?"). The request is audited (without the string).
#[utoipa::path(
    post,
    path = "/v1/audit/digest",
    tag = "audit",
    security(("bearer" = [])),
    request_body = DigestRequest,
    responses(
        (status = 200, description = "The digest", body = DigestAnswer),
        (status = 400, description = "Bad body (`invalid_body`)", body = ErrorBody),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an auditor token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 503, description = "Sealed, the audit log unavailable, overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn digest(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<DigestRequest>,
) -> Result<ApiJson<DigestAnswer>, ApiError> {
    let vault = state.vault().clone();
    let ctx = caller.context();
    // Commits the request's audit entry.
    let digests = blocking(move || vault.audit_digests(&ctx, request.text.expose_secret())).await?;
    let hex = |d: &[u8; 32]| hex::encode(d);
    let digests: Vec<GenerationDigest> = digests
        .iter()
        .map(|(generation, d)| GenerationDigest {
            generation: *generation,
            digest: hex(d),
        })
        .collect();
    Ok(ApiJson(DigestAnswer {
        digest: digests.last().map(|d| d.digest.clone()).unwrap_or_default(),
        digests,
    }))
}
