//! Job routes: register (JSON or TOML), list, read, deregister (stop or purge), scale,
//! and a job's allocations, evaluations and versions. (`plan` lives in `plan.rs`.)
//!
//! Purge: `DELETE /v1/job/{id}?purge=true` deletes the job row at once; the deregister
//! evaluation then stops its allocations (the scheduler sees no job). Its allocations,
//! evaluations and versions stay readable by id, and a job later registered with the
//! same id continues the version numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use orch_common::api::{
    AllocListStub, GroupSummary, JobDeregisterResponse, JobListStub, JobRegisterRequest,
    JobRegisterResponse, JobRevertRequest, JobScaleRequest,
};
use orch_common::ids::now_ms;
use orch_common::jobspec;
use orch_common::model::{triggers, ClientStatus, EvalStatus, Evaluation, Job, JobStatus, JobType};

use super::{ApiError, HttpState, IdPath, Indexed, Params, RawBody};
use crate::state::{Command, Table};

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
    let (mut job, enforce_index) = if body.is_toml() {
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
    jobspec::validate(&job).map_err(|e| ApiError::invalid_spec(&e))?;
    // Server-owned fields are computed by the store, whatever the body said.
    job.stop = false;
    job.status = JobStatus::Pending;
    job.submit_time = now_ms();
    job.create_index = 0;
    job.modify_index = 0;
    job.job_modify_index = 0;
    job.stable = false;

    let _guard = st.job_write.lock().await;
    register_locked(&st, job, enforce_index).await.map(Json)
}

/// Registers `job` (a new version when the spec changed) with its `job-register`
/// evaluation, after checking `enforce_index`. The caller holds `st.job_write`, so the
/// check and the write are atomic.
async fn register_locked(
    st: &HttpState,
    job: Job,
    enforce_index: Option<u64>,
) -> Result<JobRegisterResponse, ApiError> {
    let job_id = job.id.clone();
    let existing = st.read(move |s| s.job(&job_id)).await?;
    if let Some(want) = enforce_index {
        let have = existing.as_ref().map(|j| j.job_modify_index).unwrap_or(0);
        if have != want {
            return Err(ApiError::Conflict(match &existing {
                None => format!(
                    "enforce_index {want}: job {:?} does not exist (use 0 to create it)",
                    job.id
                ),
                Some(_) if want == 0 => {
                    format!(
                        "enforce_index 0: job {:?} already exists (job_modify_index {have})",
                        job.id
                    )
                }
                Some(_) => format!(
                    "enforce_index {want} does not match job {:?}'s job_modify_index {have}",
                    job.id
                ),
            }));
        }
    }
    let mut warnings = Vec::new();
    if let Some(existing) = &existing {
        if !existing.spec_changed(&job) && !existing.stop {
            warnings.push("the job spec is unchanged; it was evaluated again".to_string());
        }
    }
    let eval = Evaluation::for_job(&job, triggers::JOB_REGISTER);
    let eval_id = eval.id.clone();
    let job_id = job.id.clone();
    st.log
        .submit(Command::UpsertJob {
            job,
            eval: Some(eval),
        })
        .await?;
    let stored = st
        .read(move |s| s.job(&job_id))
        .await?
        .ok_or_else(|| ApiError::Internal("registered job not found after commit".to_string()))?;
    tracing::info!(job_id = %stored.id, version = stored.version, eval_id = %eval_id, "job registered");
    Ok(JobRegisterResponse {
        eval_id,
        job_modify_index: stored.job_modify_index,
        warnings,
    })
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
    let _guard = st.job_write.lock().await;
    let id = st.resolve(Table::Jobs, "job", &prefix).await?;
    let lookup = id.clone();
    let mut job = st
        .read(move |s| s.job(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id:?} not found")))?;
    if job.stop {
        return Err(ApiError::bad_request(format!(
            "job {id:?} is stopped; run it again before scaling it"
        )));
    }
    if matches!(job.job_type, JobType::System | JobType::Sysbatch) {
        return Err(ApiError::bad_request(format!(
            "job {id:?} is a {} job: it runs one instance per eligible node and has no count to scale",
            job.job_type.as_str()
        )));
    }
    let groups: Vec<String> = job.groups.iter().map(|g| g.name.clone()).collect();
    let Some(group) = job.groups.iter_mut().find(|g| g.name == req.group) else {
        return Err(ApiError::bad_request(format!(
            "job {id:?} has no group {:?} (its groups: {})",
            req.group,
            groups.join(", ")
        )));
    };
    group.count = count;
    jobspec::validate(&job).map_err(|e| ApiError::invalid_spec(&e))?;
    job.submit_time = now_ms();
    tracing::info!(job_id = %id, group = %req.group, count, "scaling job");
    register_locked(&st, job, req.enforce_index).await.map(Json)
}

/// `GET /v1/job/{id}`.
pub async fn get(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Job>, ApiError> {
    let id = st.resolve(Table::Jobs, "job", &prefix).await?;
    let index = st.wait(Table::Jobs, &params).await?;
    let lookup = id.clone();
    let job = st
        .read(move |s| s.job(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id:?} not found")))?;
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
    let _guard = st.job_write.lock().await;
    let id = st.resolve(Table::Jobs, "job", &prefix).await?;
    let lookup = id.clone();
    let job = st
        .read(move |s| s.job(&lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id:?} not found")))?;
    let eval = Evaluation::for_job(&job, triggers::JOB_DEREGISTER);
    let eval_id = eval.id.clone();
    let index = st
        .log
        .submit(Command::DeregisterJob {
            job_id: id.clone(),
            purge,
            eval: Some(eval),
        })
        .await?;
    tracing::info!(job_id = %id, purge, eval_id = %eval_id, "job deregistered");
    let lookup = id.clone();
    let job_modify_index = st
        .read(move |s| s.job(&lookup))
        .await?
        .map(|j| j.job_modify_index)
        .unwrap_or(index);
    Ok(Json(JobDeregisterResponse {
        eval_id,
        job_modify_index,
    }))
}

/// A job id from a path: a unique prefix of a live job, or (for a purged job's
/// history) the id exactly as given.
pub(crate) async fn job_id_or_exact(st: &HttpState, prefix: &str) -> Result<String, ApiError> {
    match st.resolve(Table::Jobs, "job", prefix).await {
        Ok(id) => Ok(id),
        Err(ApiError::NotFound(_)) => Ok(prefix.to_string()),
        Err(e) => Err(e),
    }
}

/// `GET /v1/job/{id}/allocations`.
pub async fn allocations(
    State(st): State<Arc<HttpState>>,
    IdPath(prefix): IdPath,
    params: Params,
) -> Result<Indexed<Vec<AllocListStub>>, ApiError> {
    let id = job_id_or_exact(&st, &prefix).await?;
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
    let id = job_id_or_exact(&st, &prefix).await?;
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
    let id = job_id_or_exact(&st, &prefix).await?;
    let index = st.wait(Table::Jobs, &params).await?;
    let lookup = id.clone();
    let versions = st.read(move |s| s.job_versions(&lookup)).await?;
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("job {id:?} not found")));
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
    let _guard = st.job_write.lock().await;
    let id = st.resolve(Table::Jobs, "job", &prefix).await?;
    let lookup = id.clone();
    let (current, target) = st
        .read(move |s| Ok((s.job(&lookup)?, s.job_version(&lookup, req.version)?)))
        .await?;
    let current = current.ok_or_else(|| ApiError::NotFound(format!("job {id:?} not found")))?;
    if let Some(prior) = req.enforce_prior_version {
        if prior != current.version {
            return Err(ApiError::Conflict(format!(
                "enforce_prior_version {prior} does not match job {id:?}'s current version {}",
                current.version
            )));
        }
    }
    if req.version == current.version {
        return Err(ApiError::bad_request(format!(
            "version {} is job {id:?}'s current version; nothing to revert to",
            req.version
        )));
    }
    let target = target.ok_or_else(|| {
        ApiError::bad_request(format!(
            "job {id:?} has no version {} (its current version is {})",
            req.version, current.version
        ))
    })?;
    let job = crate::deployment::decide::registration_of(&target);
    tracing::info!(job_id = %id, from = current.version, to = req.version, "reverting job");
    register_locked(&st, job, None).await.map(Json)
}
