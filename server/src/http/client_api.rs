//! What clients call: node registration and heartbeats, the blocking watch of a node's
//! allocations (with each allocation's job version embedded), and batched allocation
//! status updates, and the token lookups of clients that check ACLs themselves. The
//! writes' rules are `endpoints::nodes` and `endpoints::allocations`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::acl::Grants;
use orch_common::api::{
    AllocUpdateRequest, AllocUpdateResponse, HeartbeatRequest, HeartbeatResponse,
    KnownAllocsRequest, KnownAllocsResponse, NodeAllocationsResponse, NodeRegisterRequest,
    NodeRegisterResponse, TokenResolveRequest,
};
use orch_common::ids::{JobId, NodeId};
use orch_common::model::{Allocation, Job};
use tokio::time::Instant;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, NodeSecret, Params, RawBody};
use crate::endpoints::{acl, allocations, nodes};
use crate::state::{StateError, StateStore, Table};

/// `POST /v1/node/register`: stores the node as `ready` (a new id when none is given;
/// a known id keeps its identity and eligibility) and starts its heartbeat timer.
pub async fn register(
    State(st): State<Arc<HttpState>>,
    NodeSecret(secret): NodeSecret,
    body: RawBody,
) -> Result<Json<NodeRegisterResponse>, ApiError> {
    let NodeRegisterRequest { node } = body.json()?;
    Ok(Json(
        nodes::register(&st.endpoints, node, secret.as_deref()).await?,
    ))
}

/// `POST /v1/node/{id}/heartbeat`: restarts the node's TTL timer; a node that was down
/// (or asks for another status) has its status changed.
pub async fn heartbeat(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath<NodeId>,
    NodeSecret(secret): NodeSecret,
    body: RawBody,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let req: HeartbeatRequest = if body.bytes.iter().all(u8::is_ascii_whitespace) {
        HeartbeatRequest::default()
    } else {
        body.json()?
    };
    let req = nodes::HeartbeatRequest {
        node_id,
        secret,
        status: req.status,
    };
    let mut answer = nodes::heartbeat(&st.endpoints, req).await?;
    if let Some(cluster) = &st.cluster {
        answer.servers = cluster
            .members()
            .into_iter()
            .filter(|m| m.voter && !m.http_addr.is_empty())
            .map(|m| m.http_addr)
            .collect();
    }
    Ok(Json(answer))
}

/// Embeds each allocation's job (the version it runs), reading each version once.
fn with_jobs(store: &StateStore, allocs: Vec<Allocation>) -> Result<Vec<Allocation>, StateError> {
    let mut cache: BTreeMap<(JobId, u64), Option<Job>> = BTreeMap::new();
    let mut out = Vec::with_capacity(allocs.len());
    for mut alloc in allocs {
        let key = (alloc.job_id.clone(), alloc.job_version);
        if !cache.contains_key(&key) {
            let job = store.job_version(&key.0, key.1)?;
            cache.insert(key.clone(), job);
        }
        alloc.job = cache.get(&key).cloned().flatten().map(Box::new);
        out.push(alloc);
    }
    Ok(out)
}

/// `GET /v1/node/{id}/allocations?index=N&wait=D`: the node's allocations that are not
/// terminal on the client, plus those the server changed after N. Blocks until the
/// server changes one of the node's allocations after N: neither other nodes' changes
/// nor the statuses this client reported wake it up (like Nomad's AllocModifyIndex).
pub async fn allocations(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath<NodeId>,
    NodeSecret(secret): NodeSecret,
    params: Params,
) -> Result<Indexed<NodeAllocationsResponse>, ApiError> {
    nodes::authenticate(&st.endpoints, &node_id, secret.as_deref()).await?;
    let min = params.index()?;
    if min > 0 {
        let deadline = Instant::now() + params.wait()?;
        loop {
            // Read the table index first: a change landing after it wakes the wait.
            let seen = st.store.table_index(Table::Allocs);
            let id = node_id.clone();
            let node_max = st.read(move |s| s.node_allocs_server_index(&id)).await?;
            // A collection that deleted allocations wakes every watch once, so its
            // client removes the directories of what was collected.
            let node_max = node_max.max(st.store.alloc_gc_index());
            let remaining = deadline.saturating_duration_since(Instant::now());
            if node_max > min || remaining.is_zero() || st.store.is_closing() {
                break;
            }
            st.store
                .wait_for_index(Table::Allocs, seen, remaining)
                .await;
        }
    }
    let index = st.store.table_index(Table::Allocs).max(1);
    let id = node_id.clone();
    let allocs = st
        .read(move |s| {
            let allocs = s.allocs_for_client(&id, min)?;
            with_jobs(s, allocs)
        })
        .await?;
    let gc_index = st.store.alloc_gc_index();
    Ok(Indexed(
        index,
        NodeAllocationsResponse {
            allocs,
            index,
            gc_index,
        },
    ))
}

/// `POST /v1/node/{id}/allocations/known`: which of the given allocation ids the
/// server still stores. A client asks for those it holds directories of once a
/// garbage collection deleted allocations, and removes the directories of the rest.
pub async fn known_allocs(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath<NodeId>,
    NodeSecret(secret): NodeSecret,
    body: RawBody,
) -> Result<Json<KnownAllocsResponse>, ApiError> {
    let KnownAllocsRequest { ids } = body.json()?;
    nodes::authenticate(&st.endpoints, &node_id, secret.as_deref()).await?;
    // Lookups in the in-memory allocation index: no SQL.
    let known = ids
        .into_iter()
        .filter(|id| st.store.alloc_known(id))
        .collect();
    Ok(Json(KnownAllocsResponse { known }))
}

/// `POST /v1/node/{id}/acl/resolve`: what a token grants, for a client (with its node
/// secret) that checks the requests it serves; 403 for an unknown or expired token.
pub async fn resolve_token(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath<NodeId>,
    NodeSecret(secret): NodeSecret,
    body: RawBody,
) -> Result<Json<Grants>, ApiError> {
    let TokenResolveRequest { secret: token } = body.json()?;
    nodes::authenticate(&st.endpoints, &node_id, secret.as_deref()).await?;
    Ok(Json(acl::resolve(&st.endpoints, token.as_deref()).await?))
}

/// `POST /v1/node/{id}/allocations`: the client's batched allocation states. Updates
/// for allocations of other nodes or unknown ids are ignored.
pub async fn update_allocs(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath<NodeId>,
    NodeSecret(secret): NodeSecret,
    body: RawBody,
) -> Result<Json<AllocUpdateResponse>, ApiError> {
    let req: AllocUpdateRequest = body.json()?;
    Ok(Json(
        allocations::update_from_client(&st.endpoints, &node_id, secret.as_deref(), req.allocs)
            .await?,
    ))
}
