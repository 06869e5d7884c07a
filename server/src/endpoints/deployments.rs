//! The users' actions on an active deployment: promote, fail, pause, resume,
//! allocation health. Each change is built by `deployment::actions` (a failure reverts
//! exactly like the watcher's) from the deployment as read, and goes through the log
//! ordered with the watcher's: when the deployment stopped being active in between (the
//! watcher failed it, or it succeeded), the store rejects the change and the action is
//! answered like any action on an inactive deployment.

use orch_common::api::DeploymentUpdateResponse;
use orch_common::ids::{AllocId, DeploymentId};
use orch_common::model::{Allocation, Deployment, Job};

use super::context::{Endpoints, ReadError};
use crate::deployment::actions::{self, ActionError};
use crate::deployment::eval_for;
use crate::state::command::{DeploymentChange, Rejection};
use crate::state::{Command, LogError};

/// Promote the canaries of `groups` (every group waiting for promotion when empty).
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    pub deployment_id: DeploymentId,
    pub groups: Vec<String>,
}

/// Set the health of the deployment's allocations by hand; each given by its full id
/// (a write resolves no prefix).
#[derive(Debug, Clone)]
pub struct AllocHealthRequest {
    pub deployment_id: DeploymentId,
    pub healthy: Vec<String>,
    pub unhealthy: Vec<String>,
}

/// Why a deployment action was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("deployment {deployment_id:?} not found")]
    NotFound { deployment_id: DeploymentId },
    /// The action does not fit the deployment (inactive, no canaries, ...).
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error("an empty allocation id")]
    EmptyAllocId,
    /// The store answered a deployment change with a rejection of another kind.
    #[error("unexpected rejection of a deployment change: {0:?}")]
    Unexpected(Rejection),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Promotes canaries: refused without canaries waiting, with unhealthy canaries, or for
/// an unknown group.
pub async fn promote(
    ctx: &Endpoints,
    req: PromoteRequest,
) -> Result<DeploymentUpdateResponse, DeploymentError> {
    let d = read_deployment(ctx, &req.deployment_id).await?;
    let allocs = deployment_allocs(ctx, &d).await?;
    let change = actions::promote(&d, &req.groups, &allocs)?;
    submit(ctx, &d, change, None, true).await
}

/// Fails the deployment; with `auto_revert` the newest stable older version is
/// registered again (`reverted_job_version`).
pub async fn fail(
    ctx: &Endpoints,
    deployment_id: &DeploymentId,
) -> Result<DeploymentUpdateResponse, DeploymentError> {
    let d = read_deployment(ctx, deployment_id).await?;
    let job_id = d.job_id.clone();
    let (job, versions) = ctx
        .read(move |s| Ok((s.job(&job_id)?, s.job_versions(&job_id)?)))
        .await?;
    // The store reverts only while the job is still at the deployment's version, so a
    // registration that lands first is kept.
    let (change, revert_to) = actions::fail(&d, job.as_ref(), &versions)?;
    submit(ctx, &d, change, revert_to, true).await
}

/// Pauses (`paused`) or resumes the deployment; resuming evaluates the job at once, so
/// the next batch may go.
pub async fn set_paused(
    ctx: &Endpoints,
    deployment_id: &DeploymentId,
    paused: bool,
) -> Result<DeploymentUpdateResponse, DeploymentError> {
    let d = read_deployment(ctx, deployment_id).await?;
    let change = actions::pause(&d, paused)?;
    submit(ctx, &d, change, None, !paused).await
}

/// Sets allocations' health by hand. An unhealthy one then fails the deployment (the
/// watcher's rule).
pub async fn alloc_health(
    ctx: &Endpoints,
    req: AllocHealthRequest,
) -> Result<DeploymentUpdateResponse, DeploymentError> {
    let d = read_deployment(ctx, &req.deployment_id).await?;
    let allocs = deployment_allocs(ctx, &d).await?;
    let resolve = |ids: &[String]| -> Result<Vec<AllocId>, DeploymentError> {
        ids.iter().map(|id| alloc_of(&d, &allocs, id)).collect()
    };
    let healthy = resolve(&req.healthy)?;
    let unhealthy = resolve(&req.unhealthy)?;
    let change = actions::alloc_health(&d, &healthy, &unhealthy, &allocs)?;
    submit(ctx, &d, change, None, true).await
}

async fn read_deployment(
    ctx: &Endpoints,
    id: &DeploymentId,
) -> Result<Deployment, DeploymentError> {
    let lookup = id.clone();
    ctx.read(move |s| s.deployment(&lookup))
        .await?
        .ok_or_else(|| DeploymentError::NotFound {
            deployment_id: id.clone(),
        })
}

/// The allocations that carry the deployment's id.
async fn deployment_allocs(
    ctx: &Endpoints,
    d: &Deployment,
) -> Result<Vec<Allocation>, DeploymentError> {
    let (job_id, id) = (d.job_id.clone(), d.id.clone());
    let allocs = ctx.read(move |s| s.allocs_by_job(&job_id)).await?;
    Ok(allocs
        .into_iter()
        .filter(|a| a.deployment_id.as_ref() == Some(&id))
        .collect())
}

/// The deployment's allocation with exactly this id.
fn alloc_of(d: &Deployment, allocs: &[Allocation], id: &str) -> Result<AllocId, DeploymentError> {
    if id.is_empty() {
        return Err(DeploymentError::EmptyAllocId);
    }
    match allocs.iter().find(|a| a.id == id) {
        Some(a) => Ok(a.id.clone()),
        None => Err(ActionError::NotInDeployment {
            id: d.id.clone(),
            alloc_id: AllocId::from(id),
        }
        .into()),
    }
}

/// Submits a user's change with its evaluation (when `eval`). The store refuses a
/// change to a deployment that stopped being active since `d` was read: that is
/// answered like any action on an inactive deployment.
async fn submit(
    ctx: &Endpoints,
    d: &Deployment,
    change: DeploymentChange,
    revert_to: Option<Job>,
    eval: bool,
) -> Result<DeploymentUpdateResponse, DeploymentError> {
    let evals = if eval {
        let job_id = d.job_id.clone();
        let job = ctx.read(move |s| s.job(&job_id)).await?;
        eval_for(job.as_ref())
    } else {
        Vec::new()
    };
    let eval_id = evals.first().map(|e| e.id.clone()).unwrap_or_default();
    let reverted_job_version = revert_to.as_ref().map(|j| j.version);
    let status = change.status.clone();
    let outcome = ctx
        .log
        .submit(Command::UpdateDeployment {
            change,
            revert_to,
            evals,
        })
        .await?;
    match outcome.rejected {
        None => {}
        Some(Rejection::DeploymentNotActive { status, .. }) => {
            return Err(ActionError::NotActive {
                id: d.id.clone(),
                status: status.as_str(),
            }
            .into())
        }
        Some(Rejection::DeploymentNotFound { deployment_id }) => {
            return Err(DeploymentError::NotFound { deployment_id })
        }
        Some(other) => return Err(DeploymentError::Unexpected(other)),
    }
    let (status, description) = status.unwrap_or((d.status, d.status_description.clone()));
    tracing::info!(deployment_id = %d.id, status = status.as_str(), description = %description, "deployment changed by a user");
    Ok(DeploymentUpdateResponse {
        deployment_id: d.id.clone(),
        eval_id,
        deployment_modify_index: outcome.index,
        reverted_job_version,
    })
}
