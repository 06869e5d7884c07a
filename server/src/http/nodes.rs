//! Node routes for users: the list (stubs), one node, and its scheduling eligibility.

use std::sync::Arc;

use axum::extract::State;
use orch_common::api::{NodeEligibilityRequest, NodeEligibilityResponse, NodeListStub};
use orch_common::structs::Node;

use super::{ApiError, HttpState, IdPath, Indexed, Params, RawBody};
use crate::heartbeat;
use crate::state::Table;

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
