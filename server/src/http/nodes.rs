//! Node routes for users: the list (stubs), one node, its scheduling eligibility and
//! its drain (whose rules are `endpoints::nodes`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::{
    NodeDrainRequest, NodeDrainResponse, NodeEligibilityRequest, NodeEligibilityResponse,
    NodeListStub,
};
use orch_common::ids::NodeId;
use orch_common::model::Node;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, Params, RawBody};
use crate::endpoints::nodes::{self, DrainChange, DrainRequest, NodeError};
use crate::state::Table;

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::InvalidRegistration(problems) => ApiError::BadRequest {
                message: "invalid node registration".to_string(),
                details: problems,
            },
            NodeError::NotRegistered { .. } | NodeError::NotFound { .. } => {
                ApiError::NotFound(e.to_string())
            }
            NodeError::MissingSecret { .. } | NodeError::WrongSecret { .. } => {
                ApiError::Forbidden(e.to_string())
            }
            NodeError::InvalidSecret => ApiError::bad_request(e.to_string()),
            NodeError::Heartbeat(e) => ApiError::Internal(e.to_string()),
            NodeError::Read(e) => e.into(),
            NodeError::Log(e) => e.into(),
        }
    }
}

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
    let id = st.resolve::<NodeId>(&prefix).await?;
    let index = st.wait(Table::Nodes, &params).await?;
    let lookup = id.clone();
    let node = st
        .read(move |s| s.node(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {:?} not found", id.as_str())))?;
    Ok(Indexed(index, node.without_secret()))
}

/// `POST /v1/node/{id}/eligibility` (`NodeEligibilityRequest`). An ineligible node keeps
/// what it runs but gets nothing new; one that turns eligible again gets evaluations for
/// its system jobs (and blocked evaluations are retried).
pub async fn set_eligibility(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<Json<NodeEligibilityResponse>, ApiError> {
    let req: NodeEligibilityRequest = body.json()?;
    let id = st.exact::<NodeId>(&prefix).await?;
    Ok(Json(
        nodes::set_eligibility(&st.endpoints, &id, req.eligibility).await?,
    ))
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
) -> Result<Json<NodeDrainResponse>, ApiError> {
    let req: NodeDrainRequest = body.json()?;
    let change = match req.drain_spec {
        Some(spec) => {
            let deadline = match (spec.force, spec.deadline.as_deref()) {
                (false, Some(text)) => Some(
                    orch_common::duration::parse(text)
                        .map_err(|e| ApiError::bad_request(format!("drain_spec.deadline: {e}")))?,
                ),
                _ => None,
            };
            if req.mark_eligible {
                return Err(ApiError::bad_request(
                    "mark_eligible goes with drain_spec: null (ending a drain); a draining node is ineligible",
                ));
            }
            DrainChange::Start {
                deadline,
                force: spec.force,
                ignore_system_jobs: spec.ignore_system_jobs,
            }
        }
        None => DrainChange::Cancel {
            mark_eligible: req.mark_eligible,
        },
    };
    let node_id = st.exact::<NodeId>(&prefix).await?;
    let req = DrainRequest { node_id, change };
    Ok(Json(nodes::drain(&st.endpoints, req).await?))
}
