//! What clients call: node registration and heartbeats (a node that becomes ready gets
//! `node-update` evaluations for its system jobs and for the jobs it holds allocations
//! of), the blocking watch of a node's allocations (with each allocation's job version
//! embedded), and batched allocation status updates (a newly failed allocation gets an
//! `alloc-failure` evaluation so the scheduler can reschedule it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use orch_common::api::{
    AllocUpdateRequest, AllocUpdateResponse, HeartbeatRequest, HeartbeatResponse,
    KnownAllocsRequest, KnownAllocsResponse, NodeAllocationsResponse, NodeRegisterRequest,
    NodeRegisterResponse,
};
use orch_common::ids::{new_id, now_ms};
use orch_common::model::{
    triggers, Allocation, ClientStatus, DesiredStatus, Evaluation, Job, NodeStatus,
};
use tokio::time::Instant;

use super::{ApiError, HttpState, IdPath, Indexed, Params, RawBody};
use crate::heartbeat;
use crate::state::{Command, StateError, StateStore, Table};

fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis() as u64
}

/// `POST /v1/node/register`: stores the node as `ready` (a new id when none is given;
/// a known id keeps its identity and eligibility) and starts its heartbeat timer.
pub async fn register(
    State(st): State<Arc<HttpState>>,
    body: RawBody,
) -> Result<Json<NodeRegisterResponse>, ApiError> {
    let NodeRegisterRequest { mut node } = body.json()?;
    let mut problems = Vec::new();
    if node.name.trim().is_empty() {
        problems.push("node.name: must not be empty".to_string());
    }
    if node.datacenter.trim().is_empty() {
        problems.push("node.datacenter: must not be empty".to_string());
    }
    if node.min_dynamic_port > node.max_dynamic_port {
        problems.push(format!(
            "node.min_dynamic_port: {} is above max_dynamic_port {}",
            node.min_dynamic_port, node.max_dynamic_port
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::BadRequest {
            message: "invalid node registration".to_string(),
            details: problems,
        });
    }
    if node.id.is_empty() {
        node.id = new_id();
    }
    node.status = NodeStatus::Ready;
    node.status_updated_at = now_ms();
    node.compute_class();
    let node_id = node.id.clone();
    let lookup = node_id.clone();
    let was_ready = st
        .read(move |s| s.node(&lookup))
        .await?
        .is_some_and(|n| n.status == NodeStatus::Ready);
    let mut index = st.log.submit(Command::UpsertNode { node }).await?;
    if !was_ready {
        // A node that joins (or comes back) gets its system jobs and a look at the jobs
        // it still holds allocations for.
        let lookup = node_id.clone();
        let evals = st
            .read(move |s| heartbeat::node_ready_evals(s, &lookup))
            .await?;
        if !evals.is_empty() {
            index = st.log.submit(Command::UpsertEvals { evals }).await?;
        }
    }
    let ttl = st.heartbeats.reset(&node_id);
    tracing::info!(node_id = %node_id, "node registered");
    Ok(Json(NodeRegisterResponse {
        node_id,
        heartbeat_ttl_ms: ttl_ms(ttl),
        index,
    }))
}

async fn require_node(st: &HttpState, node_id: &str) -> Result<NodeStatus, ApiError> {
    let id = node_id.to_string();
    st.read(move |s| s.node(&id))
        .await?
        .map(|n| n.status)
        .ok_or_else(|| ApiError::NotFound(format!("node {node_id:?} is not registered")))
}

/// `POST /v1/node/{id}/heartbeat`: restarts the node's TTL timer; a node that was down
/// (or asks for another status) has its status changed.
pub async fn heartbeat(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath,
    body: RawBody,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let req: HeartbeatRequest = if body.bytes.iter().all(u8::is_ascii_whitespace) {
        HeartbeatRequest::default()
    } else {
        body.json()?
    };
    let current = require_node(&st, &node_id).await?;
    let want = req.status.unwrap_or(NodeStatus::Ready);
    if want == NodeStatus::Down {
        st.heartbeats.remove(&node_id);
        heartbeat::mark_down(&st.log, &node_id)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(Json(HeartbeatResponse {
            heartbeat_ttl_ms: 0,
            index: st.store.table_index(Table::Nodes),
        }));
    }
    let ttl = st.heartbeats.reset(&node_id);
    let mut index = st.store.table_index(Table::Nodes);
    if current != want {
        let evals = if want == NodeStatus::Ready {
            let lookup = node_id.clone();
            st.read(move |s| heartbeat::node_ready_evals(s, &lookup))
                .await?
        } else {
            Vec::new()
        };
        index = st
            .log
            .submit(Command::UpdateNodeStatus {
                node_id: node_id.clone(),
                status: want,
                evals,
            })
            .await?;
        tracing::info!(node_id = %node_id, from = current.as_str(), to = want.as_str(), "node status changed by heartbeat");
    }
    Ok(Json(HeartbeatResponse {
        heartbeat_ttl_ms: ttl_ms(ttl),
        index,
    }))
}

/// Embeds each allocation's job (the version it runs), reading each version once.
fn with_jobs(store: &StateStore, allocs: Vec<Allocation>) -> Result<Vec<Allocation>, StateError> {
    let mut cache: BTreeMap<(String, u64), Option<Job>> = BTreeMap::new();
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
    IdPath(node_id): IdPath,
    params: Params,
) -> Result<Indexed<NodeAllocationsResponse>, ApiError> {
    require_node(&st, &node_id).await?;
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
    IdPath(node_id): IdPath,
    body: RawBody,
) -> Result<Json<KnownAllocsResponse>, ApiError> {
    let KnownAllocsRequest { ids } = body.json()?;
    require_node(&st, &node_id).await?;
    // Lookups in the in-memory allocation index: no SQL.
    let known = ids
        .into_iter()
        .filter(|id| st.store.alloc_known(id))
        .collect();
    Ok(Json(KnownAllocsResponse { known }))
}

/// `POST /v1/node/{id}/allocations`: the client's batched allocation states. Updates
/// for allocations of other nodes or unknown ids are ignored.
pub async fn update_allocs(
    State(st): State<Arc<HttpState>>,
    IdPath(node_id): IdPath,
    body: RawBody,
) -> Result<Json<AllocUpdateResponse>, ApiError> {
    let req: AllocUpdateRequest = body.json()?;
    require_node(&st, &node_id).await?;
    let nid = node_id.clone();
    let (updates, evals) = st
        .read(move |s| {
            let mut updates = Vec::new();
            let mut failed_jobs = BTreeSet::new();
            for update in req.allocs {
                let Some(existing) = s.alloc(&update.id)? else {
                    tracing::warn!(alloc_id = %update.id, node_id = %nid, "update for an unknown allocation");
                    continue;
                };
                if existing.node_id != nid {
                    tracing::warn!(alloc_id = %update.id, node_id = %nid, "update for another node's allocation");
                    continue;
                }
                if update.client_status == ClientStatus::Failed
                    && existing.client_status != ClientStatus::Failed
                    && existing.desired_status == DesiredStatus::Run
                {
                    failed_jobs.insert(existing.job_id.clone());
                }
                updates.push(update);
            }
            let mut evals = Vec::new();
            for job_id in failed_jobs {
                if let Some(job) = s.job(&job_id)? {
                    if !job.stop {
                        evals.push(Evaluation::for_job(&job, triggers::ALLOC_FAILURE));
                    }
                }
            }
            Ok((updates, evals))
        })
        .await?;
    if updates.is_empty() {
        return Ok(Json(AllocUpdateResponse {
            index: st.store.table_index(Table::Allocs),
        }));
    }
    let index = st
        .log
        .submit(Command::UpdateAllocsFromClient { updates, evals })
        .await?;
    Ok(Json(AllocUpdateResponse { index }))
}
