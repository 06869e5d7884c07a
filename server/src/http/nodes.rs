//! Node routes for users: the list (stubs), one node, its scheduling eligibility and
//! its drain.

use std::sync::Arc;

use axum::extract::State;
use orch_common::api::{
    DrainSpec, NodeDrainRequest, NodeDrainResponse, NodeEligibilityRequest,
    NodeEligibilityResponse, NodeListStub,
};
use orch_common::ids::now_ms;
use orch_common::model::{DrainOutcome, DrainStrategy, Eligibility, LastDrain, Node, NodeStatus};

use super::{ApiError, HttpState, IdPath, Indexed, Params, RawBody};
use crate::heartbeat;
use crate::state::{Command, Table};

/// `GET /v1/nodes[?prefix=P]`.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<NodeListStub>>, ApiError> {
    let index = st.wait(Table::Nodes, &params).await?;
    let prefix = params.prefix().to_string();
    let nodes = st.read(|s| s.nodes()).await?;
    Ok(Indexed(
        index,
        nodes
            .iter()
            .filter(|n| n.id.starts_with(&prefix))
            .map(NodeListStub::from)
            .collect(),
    ))
}

/// `GET /v1/node/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Node>, ApiError> {
    let id = st.resolve(Table::Nodes, "node", &prefix).await?;
    let index = st.wait(Table::Nodes, &params).await?;
    let lookup = id.clone();
    let node = st
        .read(move |s| s.node(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {id:?} not found")))?;
    Ok(Indexed(index, node))
}

/// `POST /v1/node/{id}/eligibility` (`NodeEligibilityRequest`). An ineligible node keeps
/// what it runs but gets nothing new; one that turns eligible again gets evaluations for
/// its system jobs (and blocked evaluations are retried).
pub async fn set_eligibility(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<axum::Json<NodeEligibilityResponse>, ApiError> {
    let req: NodeEligibilityRequest = body.json()?;
    let id = st.resolve(Table::Nodes, "node", &prefix).await?;
    let changed = heartbeat::set_eligibility(&st.log, &id, req.eligibility)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(axum::Json(NodeEligibilityResponse {
        node_id: id,
        eligibility: req.eligibility,
        changed,
    }))
}

/// The absolute deadline (ms) a drain spec asks for: `force` = now; no `deadline` or a
/// zero one = none.
fn drain_deadline(spec: &DrainSpec, now: u64) -> Result<Option<u64>, ApiError> {
    if spec.force {
        return Ok(Some(now));
    }
    let Some(text) = spec.deadline.as_deref() else {
        return Ok(None);
    };
    let d = orch_common::duration::parse(text)
        .map_err(|e| ApiError::bad_request(format!("drain_spec.deadline: {e}")))?;
    if d.is_zero() {
        return Ok(None);
    }
    Ok(Some(now.saturating_add(d.as_millis() as u64)))
}

/// `POST /v1/node/{id}/drain` (`NodeDrainRequest`). With a `drain_spec` the node turns
/// ineligible and the drainer moves its allocations off (a drain already running keeps
/// its start time and takes the new deadline); with `drain_spec: null` the drain is
/// canceled (recorded in `last_drain`) and the node stays ineligible unless
/// `mark_eligible`. Allocations already marked to migrate still move.
pub async fn drain(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<axum::Json<NodeDrainResponse>, ApiError> {
    let req: NodeDrainRequest = body.json()?;
    let now = now_ms();
    let deadline = match &req.drain_spec {
        Some(spec) => drain_deadline(spec, now)?,
        None => None,
    };
    if req.drain_spec.is_some() && req.mark_eligible {
        return Err(ApiError::bad_request(
            "mark_eligible goes with drain_spec: null (ending a drain); a draining node is ineligible",
        ));
    }
    let id = st.resolve(Table::Nodes, "node", &prefix).await?;
    let lookup = id.clone();
    let want_eligible = req.drain_spec.is_none() && req.mark_eligible;
    let (node, ready_evals) = st
        .read(move |s| {
            let Some(node) = s.node(&lookup)? else {
                return Ok(None);
            };
            // Made eligible again: its system jobs get evaluations, as with
            // `orch node eligibility --enable`.
            let evals = if want_eligible
                && node.eligibility != Eligibility::Eligible
                && node.status == NodeStatus::Ready
            {
                heartbeat::node_ready_evals(s, &lookup)?
            } else {
                Vec::new()
            };
            Ok(Some((node, evals)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {id:?} not found")))?;
    let cmd = match &req.drain_spec {
        Some(spec) => Command::UpdateNodeDrain {
            node_id: id.clone(),
            drain: Some(DrainStrategy {
                deadline,
                ignore_system_jobs: spec.ignore_system_jobs,
                started_at: node.drain.as_ref().map_or(now, |d| d.started_at),
            }),
            eligibility: Some(Eligibility::Ineligible),
            last_drain: None,
            evals: Vec::new(),
        },
        None => Command::UpdateNodeDrain {
            node_id: id.clone(),
            drain: None,
            eligibility: req.mark_eligible.then_some(Eligibility::Eligible),
            last_drain: node.drain.as_ref().map(|d| LastDrain {
                outcome: DrainOutcome::Canceled,
                started_at: d.started_at,
                finished_at: now,
            }),
            evals: ready_evals,
        },
    };
    let index = st.log.submit(cmd).await?;
    let lookup = id.clone();
    let node = st
        .read(move |s| s.node(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {id:?} not found")))?;
    tracing::info!(node_id = %id, draining = node.drain.is_some(), index, "node drain updated");
    Ok(axum::Json(NodeDrainResponse {
        node_id: id,
        index: node.modify_index,
        drain: node.drain,
        eligibility: node.eligibility,
    }))
}
