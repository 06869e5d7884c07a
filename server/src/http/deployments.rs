//! Deployment routes: the lists (all, per job), one deployment and its allocations,
//! and the users' actions on an active deployment (promote, fail, pause, resume,
//! allocation health). An action's change is built by `deployment::actions` (a failure
//! reverts exactly like the watcher's) and goes through the command log, serialised
//! with the watcher's: when the watcher ended the deployment first, the action is
//! answered with the 400 of an inactive deployment.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::{
    AllocListStub, DeploymentAllocHealthRequest, DeploymentPromoteRequest, DeploymentUpdateResponse,
};
use orch_common::model::{Allocation, Deployment, Job};

use super::{ApiError, HttpState, IdPath, Indexed, Params, RawBody};
use crate::deployment::actions::{self, ActionError};
use crate::deployment::eval_for;
use crate::state::command::DeploymentChange;
use crate::state::{Command, Table};

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        ApiError::bad_request(e.to_string())
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
async fn read_deployment(st: &HttpState, id: &str) -> Result<Deployment, ApiError> {
    let lookup = id.to_string();
    st.read(move |s| s.deployment(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id:?} not found")))
}

/// `GET /v1/deployment/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Deployment>, ApiError> {
    let id = st
        .resolve(Table::Deployments, "deployment", &prefix)
        .await?;
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
    let id = st
        .resolve(Table::Deployments, "deployment", &prefix)
        .await?;
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
        .filter(|a| a.deployment_id.as_deref() == Some(id.as_str()))
        .collect())
}

/// `GET /v1/job/{id}/deployments`: newest first.
pub async fn job_deployments(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<Deployment>>, ApiError> {
    let id = super::jobs::job_id_or_exact(&st, &prefix).await?;
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
    let id = super::jobs::job_id_or_exact(&st, &prefix).await?;
    let index = st.wait(Table::Deployments, &params).await?;
    let lookup = id.clone();
    let d = st
        .read(move |s| s.latest_deployment(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id:?} has no deployment")))?;
    Ok(Indexed(index, d))
}

/// Submits a user's change with its evaluation (when `eval`) and checks it took: the
/// store drops a change to a deployment that stopped being active meanwhile (the
/// watcher failed it, or it succeeded), which is answered like any action on an
/// inactive deployment.
async fn submit(
    st: &HttpState,
    d: &Deployment,
    change: DeploymentChange,
    revert_to: Option<Job>,
    eval: bool,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let evals = if eval {
        let job_id = d.job_id.clone();
        let job = st.read(move |s| s.job(&job_id)).await?;
        eval_for(job.as_ref())
    } else {
        Vec::new()
    };
    let eval_id = evals.first().map(|e| e.id.clone()).unwrap_or_default();
    let reverted_job_version = revert_to.as_ref().map(|j| j.version);
    let index = st
        .log
        .submit(Command::UpdateDeployment {
            change,
            revert_to,
            evals,
        })
        .await?;
    // Written at `index` when the change took; an older row means the store dropped
    // it (the deployment was no longer active).
    let after = read_deployment(st, &d.id).await?;
    if after.modify_index < index {
        return Err(ActionError::NotActive {
            id: d.id.clone(),
            status: after.status.as_str(),
        }
        .into());
    }
    tracing::info!(deployment_id = %d.id, status = after.status.as_str(), description = %after.status_description, "deployment changed by a user");
    Ok(Json(DeploymentUpdateResponse {
        deployment_id: d.id.clone(),
        eval_id,
        deployment_modify_index: index,
        reverted_job_version,
    }))
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
    let id = st
        .resolve(Table::Deployments, "deployment", &prefix)
        .await?;
    let d = read_deployment(&st, &id).await?;
    let allocs = deployment_allocs(&st, &d).await?;
    let change = actions::promote(&d, &req.groups, &allocs)?;
    submit(&st, &d, change, None, true).await
}

/// `POST /v1/deployment/{id}/fail`: fails it; with `auto_revert` the newest stable
/// older version is registered again (`reverted_job_version`).
pub async fn fail(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let id = st
        .resolve(Table::Deployments, "deployment", &prefix)
        .await?;
    // A revert registers a job version: ordered with registrations and their
    // enforce_index checks.
    let _guard = st.job_write.lock().await;
    let d = read_deployment(&st, &id).await?;
    let job_id = d.job_id.clone();
    let (job, versions) = st
        .read(move |s| Ok((s.job(&job_id)?, s.job_versions(&job_id)?)))
        .await?;
    let (change, revert_to) = actions::fail(&d, job.as_ref(), &versions)?;
    submit(&st, &d, change, revert_to, true).await
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
    let id = st.resolve(Table::Deployments, "deployment", prefix).await?;
    let d = read_deployment(st, &id).await?;
    let change = actions::pause(&d, paused)?;
    // Resuming evaluates the job at once: the next batch may go.
    submit(st, &d, change, None, !paused).await
}

/// `POST /v1/deployment/{id}/alloc-health` (`DeploymentAllocHealthRequest`): sets the
/// health of the deployment's allocations by hand (ids or unique prefixes among its
/// allocations). An unhealthy one then fails the deployment (the watcher's rule).
pub async fn alloc_health(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<Json<DeploymentUpdateResponse>, ApiError> {
    let req: DeploymentAllocHealthRequest = body.json()?;
    let id = st
        .resolve(Table::Deployments, "deployment", &prefix)
        .await?;
    let d = read_deployment(&st, &id).await?;
    let allocs = deployment_allocs(&st, &d).await?;
    let resolve = |ids: &[String]| -> Result<Vec<String>, ApiError> {
        ids.iter().map(|p| resolve_alloc(&d, &allocs, p)).collect()
    };
    let healthy = resolve(&req.healthy)?;
    let unhealthy = resolve(&req.unhealthy)?;
    let change = actions::alloc_health(&d, &healthy, &unhealthy, &allocs)?;
    submit(&st, &d, change, None, true).await
}

/// An allocation id of the deployment from a full id or a unique prefix.
fn resolve_alloc(d: &Deployment, allocs: &[Allocation], prefix: &str) -> Result<String, ApiError> {
    if prefix.is_empty() {
        return Err(ApiError::bad_request("an empty allocation id"));
    }
    if allocs.iter().any(|a| a.id == prefix) {
        return Ok(prefix.to_string());
    }
    let matches: Vec<String> = allocs
        .iter()
        .filter(|a| a.id.starts_with(prefix))
        .map(|a| a.id.clone())
        .collect();
    match matches.len() {
        0 => Err(ActionError::NotInDeployment {
            id: d.id.clone(),
            alloc_id: prefix.to_string(),
        }
        .into()),
        1 => Ok(matches.into_iter().next().unwrap_or_default()),
        _ => Err(ApiError::BadRequest {
            message: format!(
                "allocation id prefix {prefix:?} matches more than one allocation of deployment {}",
                d.id
            ),
            details: matches,
        }),
    }
}
