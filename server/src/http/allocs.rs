//! Allocation routes: the list (stubs) and one allocation with its job embedded.

use std::sync::Arc;

use axum::extract::State;
use orch_common::api::AllocListStub;
use orch_common::model::Allocation;

use super::{ApiError, HttpState, IdPath, Indexed, Params};
use crate::state::Table;

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
    let id = st.resolve(Table::Allocs, "allocation", &prefix).await?;
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
        .ok_or_else(|| ApiError::NotFound(format!("allocation {id:?} not found")))?;
    Ok(Indexed(index, alloc))
}

/// The answer to `POST /v1/allocation/{id}/stop`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AllocStopResponse {
    pub eval_id: String,
    pub index: u64,
}

/// `POST /v1/allocation/{id}/stop`: the allocation is replaced like a failed one (a new
/// allocation is placed, preferring no particular node, then this one is stopped), by an
/// `alloc-stop` evaluation of its job. A terminal allocation is a 409.
pub async fn stop(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<axum::Json<AllocStopResponse>, ApiError> {
    let id = st.resolve(Table::Allocs, "allocation", &prefix).await?;
    let lookup = id.clone();
    let (alloc, job) = st
        .read(move |s| {
            let Some(a) = s.alloc(&lookup)? else {
                return Ok(None);
            };
            let job = s.job(&a.job_id)?;
            Ok(Some((a, job)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("allocation {id:?} not found")))?;
    if alloc.desired_status != orch_common::model::DesiredStatus::Run
        || alloc.client_status.is_terminal()
    {
        return Err(ApiError::Conflict(format!(
            "allocation {id} is already {} (desired {}); nothing to stop",
            alloc.client_status.as_str(),
            alloc.desired_status.as_str()
        )));
    }
    let job = job.ok_or_else(|| {
        ApiError::NotFound(format!(
            "job {:?} of allocation {id} not found",
            alloc.job_id
        ))
    })?;
    let eval =
        orch_common::model::Evaluation::for_job(&job, orch_common::model::triggers::ALLOC_STOP);
    let eval_id = eval.id.clone();
    let index = st
        .log
        .submit(crate::state::Command::MigrateAllocs {
            alloc_ids: vec![id.clone()],
            evals: vec![eval],
        })
        .await?;
    tracing::info!(alloc_id = %id, eval_id = %eval_id, "allocation stop requested");
    Ok(axum::Json(AllocStopResponse { eval_id, index }))
}
