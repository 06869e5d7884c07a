//! Allocation routes: the list (stubs), one allocation with its job embedded, and a
//! user's stop (whose rules are `endpoints::allocations`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::AllocListStub;
use orch_common::ids::{AllocId, EvalId};
use orch_common::model::Allocation;

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, Params};
use crate::endpoints::allocations::{self, AllocError};
use crate::state::Table;

impl From<AllocError> for ApiError {
    fn from(e: AllocError) -> Self {
        match e {
            AllocError::NotFound { .. } | AllocError::JobNotFound { .. } => {
                ApiError::NotFound(e.to_string())
            }
            AllocError::AlreadyStopped { .. } => ApiError::Conflict(e.to_string()),
            AllocError::Node(e) => e.into(),
            AllocError::Read(e) => e.into(),
            AllocError::Log(e) => e.into(),
        }
    }
}

/// `GET /v1/allocations[?prefix=P&node_id=N]`.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<AllocListStub>>, ApiError> {
    let index = st.wait(Table::Allocs, &params).await?;
    let prefix = params.prefix().to_string();
    let node_id = params.get("node_id").map(str::to_string);
    let allocs = st
        .read(move |s| match &node_id {
            Some(n) => s.allocs_by_node(n),
            None => s.allocs(),
        })
        .await?;
    Ok(Indexed(
        index,
        allocs
            .iter()
            .filter(|a| a.id.starts_with(&prefix))
            .map(AllocListStub::from)
            .collect(),
    ))
}

/// `GET /v1/allocation/{id}`: the allocation with `job` = the job version it runs.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Allocation>, ApiError> {
    let id = st.resolve::<AllocId>(&prefix).await?;
    let index = st.wait(Table::Allocs, &params).await?;
    let lookup = id.clone();
    let alloc = st
        .read(move |s| {
            let Some(mut alloc) = s.alloc(&lookup)? else {
                return Ok(None);
            };
            alloc.job = s
                .job_version(&alloc.job_id, alloc.job_version)?
                .map(Box::new);
            Ok(Some(alloc))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("allocation {:?} not found", id.as_str())))?;
    Ok(Indexed(index, alloc))
}

/// The answer to `POST /v1/allocation/{id}/stop`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AllocStopResponse {
    pub eval_id: EvalId,
    pub index: u64,
}

/// `POST /v1/allocation/{id}/stop`: the allocation is replaced like a failed one (a new
/// allocation is placed, preferring no particular node, then this one is stopped), by an
/// `alloc-stop` evaluation of its job. A terminal allocation is a 409.
pub async fn stop(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<Json<AllocStopResponse>, ApiError> {
    let id = st.exact::<AllocId>(&prefix).await?;
    let stopped = allocations::stop(&st.endpoints, &id).await?;
    Ok(Json(AllocStopResponse {
        eval_id: stopped.eval_id,
        index: stopped.index,
    }))
}
