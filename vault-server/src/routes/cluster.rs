//! `GET /v1/sys/cluster` (operator or auditor): a cluster vault's nodes (DESIGN section 10),
//! each with the etcd revision its view has applied and its health; 501 on a one-host vault.
//!
//! What a node says of itself is its report (`vault_core::storage::etcd::report`), written
//! every second on its lease, so the answer is at most about a second old and a node that died
//! shows as `down` once its lease expires (5 s). Reading the registry is an etcd round trip,
//! so it runs on the blocking pool. A build without the `etcd` feature serves no cluster and
//! answers 501 too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vault_core::tokens::Role;

use crate::AppState;
use crate::auth::require_one_of;
use crate::error::{ApiError, ErrorBody};
use crate::json::ApiJson;

/// The roles that read the cluster's state.
const READERS: &[Role] = &[Role::Operator, Role::Auditor];

/// The cluster route, behind the operator-or-auditor check.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .route_layer(from_fn(|req, next| require_one_of(READERS, req, next)))
}

/// Answer of `GET /v1/sys/cluster`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterAnswer {
    /// The id of the node that answered.
    pub node_id: String,
    /// The vault's id (hex): its audit logs' origins are `keyvault/<vault id>/<node id>`.
    pub vault_id: String,
    /// Every node the cluster has ever registered, live or not, by id.
    pub nodes: Vec<ClusterNode>,
}

/// One node of the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    /// The node's id (`storage.node_id`).
    pub id: String,
    /// `ok` (live, unsealed, its view current), `sealed`, `fenced` (its view of etcd is more
    /// than a second old: it answers verifies 503 `cluster_unavailable`), `starting` (live, no
    /// report yet) or `down` (no live registration).
    pub health: NodeHealth,
    /// Whether the node holds a live registration (its lease is kept alive).
    pub live: bool,
    /// The etcd revision up to which the node's view has applied every change, as it last
    /// reported (about a second old at most); absent for a node that is not live.
    pub applied_revision: Option<i64>,
    /// The address the node's API serves on (`http://127.0.0.1:8731`, as the node bound it),
    /// from its report; absent for a node that is not live or has not reported it yet.
    /// `keyvault audit export --node` and `--cluster` fetch each node's log from it.
    pub address: Option<String>,
    /// When the node first registered (Unix seconds).
    pub first_registered: u64,
    /// When the node was last known live (Unix seconds; refreshed every 10 s while it runs).
    pub last_seen: u64,
}

/// A node's health, as `GET /v1/sys/cluster` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    /// Live, unsealed, and its view current: it answers verifies.
    Ok,
    /// Live and sealed.
    Sealed,
    /// Live, unsealed, but its view is more than a second old.
    Fenced,
    /// Live, not reported yet (it registered less than a second ago).
    Starting,
    /// Not live: stopped, or out of reach of etcd for longer than its lease.
    Down,
}

/// `GET /v1/sys/cluster`: the cluster's nodes, the revision each has applied, their health.
#[utoipa::path(
    get,
    path = "/v1/sys/cluster",
    tag = "sys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster's nodes", body = ClusterAnswer),
        (status = 401, description = "No or an invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator or auditor token", body = ErrorBody),
        (status = 501, description = "A one-host vault: it has no cluster (`not_clustered`)", body = ErrorBody),
        (status = 503, description = "Sealed; etcd out of reach (`storage_unavailable`); overloaded or timed out", body = ErrorBody),
    ),
)]
pub(crate) async fn cluster(
    State(state): State<AppState>,
) -> Result<ApiJson<ClusterAnswer>, ApiError> {
    answer(state.vault().clone()).await.map(ApiJson)
}

fn not_clustered() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_clustered",
        "this vault runs on one host: it has no cluster (storage.backend is not \"etcd\")",
    )
}

#[cfg(not(feature = "etcd"))]
async fn answer(_vault: vault_core::Vault) -> Result<ClusterAnswer, ApiError> {
    Err(not_clustered())
}

#[cfg(feature = "etcd")]
async fn answer(vault: vault_core::Vault) -> Result<ClusterAnswer, ApiError> {
    let Ok(node_id) = vault.cluster_node_id().map(str::to_owned) else {
        return Err(not_clustered());
    };
    let vault_id = hex::encode(vault.vault_id());
    let nodes = crate::error::blocking(move || vault.cluster_nodes()).await?;
    let nodes = nodes
        .into_iter()
        .map(|n| {
            let report = n.report.filter(|_| n.live);
            let health = match &report {
                _ if !n.live => NodeHealth::Down,
                None => NodeHealth::Starting,
                Some(r) if r.sealed => NodeHealth::Sealed,
                Some(r) if !r.view_current => NodeHealth::Fenced,
                Some(_) => NodeHealth::Ok,
            };
            ClusterNode {
                id: n.id,
                health,
                live: n.live,
                applied_revision: report.as_ref().map(|r| r.applied_revision),
                address: report.and_then(|r| r.address),
                first_registered: n.first_registered_ms / 1000,
                last_seen: n.last_seen_ms / 1000,
            }
        })
        .collect();
    Ok(ClusterAnswer {
        node_id,
        vault_id,
        nodes,
    })
}
