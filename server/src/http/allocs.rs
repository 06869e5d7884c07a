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

/// How long the server waits for a client agent's stats answer.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /v1/client/allocation/{id}/stats`: the allocation's resource usage, fetched from
/// the client agent that runs it (its node's `http_addr`) and passed through as is. Only
/// on agents without a client of their own: there the client answers this route.
pub async fn stats(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<axum::response::Response, ApiError> {
    let id = st.resolve(Table::Allocs, "allocation", &prefix).await?;
    let lookup = id.clone();
    let node = st
        .read(move |s| match s.alloc(&lookup)? {
            Some(a) => s.node(&a.node_id),
            None => Ok(None),
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node of allocation {id:?} not found")))?;
    if node.http_addr.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "node {} does not advertise an HTTP address",
            node.name
        )));
    }
    let addr = if node.http_addr.contains("://") {
        node.http_addr.clone()
    } else {
        format!("http://{}", node.http_addr)
    };
    let url = format!("{addr}/v1/client/allocation/{id}/stats");
    let unreachable =
        |e: reqwest::Error| ApiError::Unavailable(format!("client of node {}: {e}", node.name));
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await
        .map_err(unreachable)?;
    let status = axum::http::StatusCode::from_u16(resp.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let body = resp.bytes().await.map_err(unreachable)?;
    use axum::response::IntoResponse;
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
