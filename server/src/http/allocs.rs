//! Allocation routes: the list (stubs) and one allocation with its job embedded.

use std::sync::Arc;

use axum::extract::State;
use orch_common::api::AllocListStub;
use orch_common::structs::Allocation;

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
