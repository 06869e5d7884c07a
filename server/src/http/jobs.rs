//! Job routes: register (JSON or TOML), list, read, deregister (stop or purge), scale,
//! revert, and a job's allocations, evaluations and versions. (`plan` lives in
//! `plan.rs`.) The writes' rules are `endpoints::jobs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::{
    AllocListStub, GroupSummary, JobDeregisterResponse, JobListStub, JobRegisterRequest,
    JobRegisterResponse, JobRevertRequest, JobScaleRequest,
};
use orch_common::ids::JobId;
use orch_common::jobspec;
use orch_common::model::{ClientStatus, EvalStatus, Evaluation, Job};

use super::context::HttpState;
use super::error::ApiError;
use super::extract::{IdPath, Indexed, Params, RawBody};
use crate::endpoints::jobs::{
    self, DeregisterRequest, JobError, RegisterRequest, RevertRequest, ScaleRequest,
};
use crate::state::Table;

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            JobError::InvalidSpec(errors) => ApiError::invalid_spec(&errors),
            JobError::IndexMismatch { .. }
            | JobError::Contended { .. }
            | JobError::PriorVersion { .. } => ApiError::Conflict(e.to_string()),
            JobError::Stopped { .. }
            | JobError::CountAboveLimit(_)
            | JobError::NotScalable { .. }
            | JobError::UnknownGroup { .. }
            | JobError::CurrentVersion { .. }
            | JobError::UnknownVersion { .. }
            | JobError::PrunedVersion { .. } => ApiError::bad_request(e.to_string()),
            JobError::Unexpected(_) => ApiError::Internal(e.to_string()),
            JobError::Read(e) => e.into(),
            JobError::Log(e) => e.into(),
        }
    }
}

/// `GET /v1/jobs[?prefix=P]`: every job as a list stub with per-group counts.
pub async fn list(
    State(st): State<Arc<HttpState>>,
    params: Params,
) -> Result<Indexed<Vec<JobListStub>>, ApiError> {
    let index = st.wait(Table::Jobs, &params).await?;
    let prefix = params.prefix().to_string();
    let stubs = st
        .read(move |s| {
            let jobs = s.jobs()?;
            let counts = s.alloc_status_counts()?;
            let open_evals = s.evals_non_terminal()?;
            Ok(jobs
                .iter()
                .filter(|j| j.id.starts_with(&prefix))
                .map(|j| stub(j, &counts, &open_evals))
                .collect())
        })
        .await?;
    Ok(Indexed(index, stubs))
}

fn stub(
    job: &Job,
    counts: &[crate::state::GroupStatusCount],
    open_evals: &[Evaluation],
) -> JobListStub {
    let mut summary: BTreeMap<String, GroupSummary> = job
        .groups
        .iter()
        .map(|g| (g.name.clone(), GroupSummary::default()))
        .collect();
    for c in counts.iter().filter(|c| c.job_id == job.id) {
        let s = summary.entry(c.group.clone()).or_default();
        match c.client_status {
            ClientStatus::Pending => s.starting += c.count,
            ClientStatus::Running => s.running += c.count,
            ClientStatus::Complete => s.complete += c.count,
            ClientStatus::Failed => s.failed += c.count,
            ClientStatus::Lost => s.lost += c.count,
        }
    }
    // Queued: what the job's blocked evaluation still waits to place.
    if let Some(blocked) = open_evals
        .iter()
        .rev()
        .find(|e| e.job_id == job.id && e.status == EvalStatus::Blocked)
    {
        for (group, n) in &blocked.queued_allocations {
            summary.entry(group.clone()).or_default().queued = *n;
        }
    }
    JobListStub {
        id: job.id.clone(),
        name: job.name.clone(),
        job_type: job.job_type,
        priority: job.priority,
        status: job.status,
        stop: job.stop,
        version: job.version,
        summary,
        submit_time: job.submit_time,
        create_index: job.create_index,
        modify_index: job.modify_index,
        job_modify_index: job.job_modify_index,
    }
}

/// `POST /v1/jobs`: registers a job from JSON (`JobRegisterRequest`) or, with
/// `Content-Type: application/toml`, from a TOML spec (`?enforce_index=N` for CAS).
/// Answers only after the job and its evaluation are committed.
pub async fn register(
    State(st): State<Arc<HttpState>>,
    params: Params,
    body: RawBody,
) -> Result<Json<JobRegisterResponse>, ApiError> {
    let (job, enforce_index) = if body.is_toml() {
        let text = std::str::from_utf8(&body.bytes)
            .map_err(|_| ApiError::bad_request("the TOML body is not valid UTF-8"))?;
        let job = jobspec::parse(text).map_err(|e| ApiError::invalid_spec(&e))?;
        (job, params.u64("enforce_index")?)
    } else {
        let req: JobRegisterRequest = body.json()?;
        let enforce = match req.enforce_index {
            Some(i) => Some(i),
            None => params.u64("enforce_index")?,
        };
        (req.job, enforce)
    };
    let req = RegisterRequest { job, enforce_index };
    Ok(Json(jobs::register(&st.endpoints, req).await?))
}

/// `POST /v1/job/{id}/scale` (`JobScaleRequest`): registers the job again with one
/// group's count changed — a new version and a `job-register` evaluation, like
/// `POST /v1/jobs`. 400 for an unknown group, a negative count, a stopped job or a
/// system job (one instance per node, nothing to scale).
pub async fn scale(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<Json<JobRegisterResponse>, ApiError> {
    let req: JobScaleRequest = body.json()?;
    if req.count < 0 {
        return Err(ApiError::bad_request(format!(
            "count must not be negative, got {}",
            req.count
        )));
    }
    let count = u32::try_from(req.count)
        .map_err(|_| ApiError::bad_request(format!("count {} is too large", req.count)))?;
    let job_id = st.exact::<JobId>(&prefix).await?;
    let req = ScaleRequest {
        job_id,
        group: req.group,
        count,
        enforce_index: req.enforce_index,
    };
    Ok(Json(jobs::scale(&st.endpoints, req).await?))
}

/// `GET /v1/job/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Job>, ApiError> {
    let id = st.resolve::<JobId>(&prefix).await?;
    let index = st.wait(Table::Jobs, &params).await?;
    let lookup = id.clone();
    let job = st
        .read(move |s| s.job(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {:?} not found", id.as_str())))?;
    Ok(Indexed(index, job))
}

/// `DELETE /v1/job/{id}[?purge=true]`: stops the job (or deletes it) and creates the
/// `job-deregister` evaluation that stops its allocations.
pub async fn deregister(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Json<JobDeregisterResponse>, ApiError> {
    let purge = params.flag("purge")?;
    let job_id = st.exact::<JobId>(&prefix).await?;
    let req = DeregisterRequest { job_id, purge };
    Ok(Json(jobs::deregister(&st.endpoints, req).await?))
}

/// `GET /v1/job/{id}/allocations`.
pub async fn allocations(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<AllocListStub>>, ApiError> {
    let id = st.job_id_or_exact(&prefix).await?;
    let index = st.wait(Table::Allocs, &params).await?;
    let allocs = st.read(move |s| s.allocs_by_job(&id)).await?;
    Ok(Indexed(
        index,
        allocs.iter().map(AllocListStub::from).collect(),
    ))
}

/// `GET /v1/job/{id}/evaluations`.
pub async fn evaluations(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<Evaluation>>, ApiError> {
    let id = st.job_id_or_exact(&prefix).await?;
    let index = st.wait(Table::Evals, &params).await?;
    let evals = st.read(move |s| s.evals_by_job(&id)).await?;
    Ok(Indexed(index, evals))
}

/// `GET /v1/job/{id}/versions`: every stored version, newest first.
pub async fn versions(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<Job>>, ApiError> {
    let id = st.job_id_or_exact(&prefix).await?;
    let index = st.wait(Table::Jobs, &params).await?;
    let lookup = id.clone();
    let versions = st.read(move |s| s.job_versions(&lookup)).await?;
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!(
            "job {:?} not found",
            id.as_str()
        )));
    }
    Ok(Indexed(index, versions))
}

/// `POST /v1/job/{id}/revert` (`JobRevertRequest`): registers an earlier version's spec
/// again as a new version, with its `job-register` evaluation. 400 for the current or
/// an unknown version; 409 when `enforce_prior_version` is not the current version.
pub async fn revert(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    body: RawBody,
) -> Result<Json<JobRegisterResponse>, ApiError> {
    let req: JobRevertRequest = body.json()?;
    let job_id = st.exact::<JobId>(&prefix).await?;
    let req = RevertRequest {
        job_id,
        version: req.version,
        enforce_prior_version: req.enforce_prior_version,
    };
    Ok(Json(jobs::revert(&st.endpoints, req).await?))
}
