//! Deployment routes: the lists (all, per job), one deployment and its allocations,
//! and the users' actions on an active deployment (promote, fail, pause, resume,
//! allocation health), whose rules are `endpoints::deployments`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::{
    AllocListStub, DeploymentAllocHealthRequest, DeploymentPromoteRequest, DeploymentUpdateResponse,
};
use orch_common::ids::DeploymentId;
use orch_common::model::{Allocation, Deployment};

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, Params, RawBody};
use crate::endpoints::deployments::{self, AllocHealthRequest, DeploymentError, PromoteRequest};
use crate::state::Table;

impl From<DeploymentError> for ApiError {
    fn from(e: DeploymentError) -> Self {
        match e {
            DeploymentError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            DeploymentError::Action(_) | DeploymentError::EmptyAllocId => {
                ApiError::bad_request(e.to_string())
            }
            DeploymentError::Unexpected(_) => ApiError::Internal(e.to_string()),
            DeploymentError::Read(e) => e.into(),
            DeploymentError::Log(e) => e.into(),
        }
    }
}

/// `GET /v1/deployments[?job_id=J&prefix=P]`: newest first.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<Deployment>>, ApiError> {
    let index = st.wait(Table::Deployments, &params).await?;
    let prefix = params.prefix().to_string();
    let job_id = params.get("job_id").map(str::to_string);
    let deployments = st
        .read(move |s| match &job_id {
            Some(j) => s.deployments_by_job(j),
            None => s.deployments(),
        })
        .await?;
    Ok(Indexed(
        index,
        deployments
            .into_iter()
            .filter(|d| d.id.starts_with(&prefix))
            .collect(),
    ))
}

/// Reads deployment `id` (a full id), 404 when gone.
async fn read_deployment(st: &HttpState, id: &DeploymentId) -> Result<Deployment, ApiError> {
    let lookup = id.clone();
    st.read(move |s| s.deployment(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {:?} not found", id.as_str())))
}

/// `GET /v1/deployment/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Deployment>, ApiError> {
    let id = st.resolve::<DeploymentId>(&prefix).await?;
    let index = st.wait(Table::Deployments, &params).await?;
    Ok(Indexed(index, read_deployment(&st, &id).await?))
}

/// `GET /v1/deployment/{id}/allocations`: the allocations that carry its id (blocking
/// on allocations and deployments).
pub async fn allocations(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<AllocListStub>>, ApiError> {
    let id = st.resolve::<DeploymentId>(&prefix).await?;
    let index = st
        .wait_any(&[Table::Allocs, Table::Deployments], &params)
        .await?;
    let d = read_deployment(&st, &id).await?;
    let allocs = deployment_allocs(&st, &d).await?;
    Ok(Indexed(
        index,
        allocs.iter().map(AllocListStub::from).collect(),
    ))
}

async fn deployment_allocs(st: &HttpState, d: &Deployment) -> Result<Vec<Allocation>, ApiError> {
    let (job_id, id) = (d.job_id.clone(), d.id.clone());
    let allocs = st.read(move |s| s.allocs_by_job(&job_id)).await?;
    Ok(allocs
        .into_iter()
        .filter(|a| a.deployment_id.as_ref() == Some(&id))
        .collect())
}

/// `GET /v1/job/{id}/deployments`: newest first.
pub async fn job_deployments(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<Deployment>>, ApiError> {
    let id = st.job_id_or_exact(&prefix).await?;
    let index = st.wait(Table::Deployments, &params).await?;
    let deployments = st.read(move |s| s.deployments_by_job(&id)).await?;
    Ok(Indexed(index, deployments))
}

/// `GET /v1/job/{id}/deployment`: the job's newest deployment, 404 when it has none.
pub async fn job_latest(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Deployment>, ApiError> {
    let id = st.job_id_or_exact(&prefix).await?;
    let index = st.wait(Table::Deployments, &params).await?;
    let lookup = id.clone();
    let d = st
        .read(move |s| s.latest_deployment(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {:?} has no deployment", id.as_str())))?;
    Ok(Indexed(index, d))
}

/// `POST /v1/deployment/{id}/promote` (`DeploymentPromoteRequest`, no body = every
/// group): 400 without canaries waiting, with unhealthy canaries, or an unknown group.
pub async fn promote(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let req: DeploymentPromoteRequest = if body.bytes.is_empty() {
        DeploymentPromoteRequest::default()
    } else {
        body.json()?
    };
    let deployment_id = st.exact::<DeploymentId>(&prefix).await?;
    let req = PromoteRequest {
        deployment_id,
        groups: req.groups,
    };
    Ok(Json(deployments::promote(&st.endpoints, req).await?))
}

/// `POST /v1/deployment/{id}/fail`: fails it; with `auto_revert` the newest stable
/// older version is registered again (`reverted_job_version`).
pub async fn fail(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let id = st.exact::<DeploymentId>(&prefix).await?;
    Ok(Json(deployments::fail(&st.endpoints, &id).await?))
}

/// `POST /v1/deployment/{id}/pause`.
pub async fn pause(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    set_paused(&st, &prefix, true).await
}

/// `POST /v1/deployment/{id}/resume`: with an evaluation, so the next batch goes.
pub async fn resume(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    set_paused(&st, &prefix, false).await
}

async fn set_paused(
    st: &HttpState,
    prefix: &str,
    paused: bool,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let id = st.exact::<DeploymentId>(prefix).await?;
    Ok(Json(
        deployments::set_paused(&st.endpoints, &id, paused).await?,
    ))
}

/// `POST /v1/deployment/{id}/alloc-health` (`DeploymentAllocHealthRequest`): sets the
/// health of the deployment's allocations by hand (their full ids). An unhealthy one then fails the deployment (the watcher's rule).
pub async fn alloc_health(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let req: DeploymentAllocHealthRequest = body.json()?;
    let deployment_id = st.exact::<DeploymentId>(&prefix).await?;
    let req = AllocHealthRequest {
        deployment_id,
        healthy: req.healthy,
        unhealthy: req.unhealthy,
    };
    Ok(Json(deployments::alloc_health(&st.endpoints, req).await?))
}
