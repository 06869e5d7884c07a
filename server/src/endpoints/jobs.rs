//! Job writes: register (a new version when the spec changed), scale one group,
//! deregister (stop or purge), revert to an earlier version. Each submits the job with
//! its evaluation in one command whose `enforce_index` guards the write.
//!
//! ```text
//!  attempt: read the job ──► build the new version (rules) ──► submit with
//!           enforce_index = user's, or the job_modify_index just read
//!  rejected ──► user's enforce_index: 409 | ours: the job changed meanwhile, attempt
//!               again (at most MAX_ATTEMPTS, then 409)
//! ```
//!
//! Purge: the job row is deleted at once; the deregister evaluation then stops its
//! allocations (the scheduler sees no job). Its allocations, evaluations and versions
//! stay readable by id, and a job later registered with the same id continues the
//! version numbers.
//!
//! A registration that adds a version prunes the oldest ones beyond the newest few
//! (`state::versions`); a revert to a pruned version is refused with a 400 that says so.

use orch_common::api::{JobDeregisterResponse, JobRegisterResponse};
use orch_common::ids::{now_ms, JobId};
use orch_common::jobspec::{self, SpecErrors};
use orch_common::model::{triggers, Evaluation, Job, JobStatus, JobType};

use super::context::{CountAboveLimit, Endpoints, ReadError};
use crate::state::command::{self, Rejection};
use crate::state::versions::JOB_TRACKED_VERSIONS;
use crate::state::{Command, LogError};

/// How many times a write whose own check-and-set failed (the job changed between its
/// read and its commit) is attempted before it gives up with a 409.
pub const MAX_ATTEMPTS: u32 = 5;

/// Register `job` (`POST /v1/jobs`).
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    pub job: Job,
    /// Register only while the job's `job_modify_index` is this (0: it must not exist).
    pub enforce_index: Option<u64>,
}

/// Set one group's count (`POST /v1/job/{id}/scale`).
#[derive(Debug, Clone)]
pub struct ScaleRequest {
    pub job_id: JobId,
    pub group: String,
    pub count: u32,
    pub enforce_index: Option<u64>,
}

/// Stop a job, or delete it with `purge` (`DELETE /v1/job/{id}`).
#[derive(Debug, Clone)]
pub struct DeregisterRequest {
    pub job_id: JobId,
    pub purge: bool,
}

/// Register an earlier version's spec again (`POST /v1/job/{id}/revert`).
#[derive(Debug, Clone)]
pub struct RevertRequest {
    pub job_id: JobId,
    pub version: u64,
    /// Revert only while the job's current version is this one.
    pub enforce_prior_version: Option<u64>,
}

/// Why a job write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {job_id:?} not found")]
    NotFound { job_id: JobId },
    #[error("invalid job spec: {0}")]
    InvalidSpec(SpecErrors),
    #[error(transparent)]
    CountAboveLimit(#[from] CountAboveLimit),
    /// A check-and-set did not match (the user's `enforce_index`).
    #[error("{}", index_mismatch(.job_id, *.enforce_index, *.job_modify_index))]
    IndexMismatch {
        job_id: JobId,
        enforce_index: u64,
        /// The job's, `None` when it does not exist.
        job_modify_index: Option<u64>,
    },
    /// The job changed between each read and its write, every attempt.
    #[error(
        "job {job_id:?} changed {attempts} times while this request was being applied; try again"
    )]
    Contended { job_id: JobId, attempts: u32 },
    #[error(
        "enforce_prior_version {prior} does not match job {job_id:?}'s current version {current}"
    )]
    PriorVersion {
        job_id: JobId,
        prior: u64,
        current: u64,
    },
    #[error("job {job_id:?} is stopped; run it again before scaling it")]
    Stopped { job_id: JobId },
    #[error("job {job_id:?} is a {job_type} job: it runs one instance per eligible node and has no count to scale")]
    NotScalable {
        job_id: JobId,
        job_type: &'static str,
    },
    #[error("job {job_id:?} has no group {group:?} (its groups: {groups})")]
    UnknownGroup {
        job_id: JobId,
        group: String,
        groups: String,
    },
    #[error("version {version} is job {job_id:?}'s current version; nothing to revert to")]
    CurrentVersion { job_id: JobId, version: u64 },
    #[error("job {job_id:?} has no version {version} (its current version is {current})")]
    UnknownVersion {
        job_id: JobId,
        version: u64,
        current: u64,
    },
    /// An older version no longer stored (`state::versions`).
    #[error(
        "version {version} of job {job_id:?} was pruned: a job keeps its newest {tracked} \
         versions, its newest stable one and those still running (kept: {kept})"
    )]
    PrunedVersion {
        job_id: JobId,
        version: u64,
        tracked: usize,
        /// The versions still stored, newest first, as text.
        kept: String,
    },
    /// The store answered a job command with a rejection of another kind.
    #[error("unexpected rejection of a job command: {0:?}")]
    Unexpected(Rejection),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Log(#[from] LogError),
}

fn index_mismatch(job_id: &str, want: u64, have: Option<u64>) -> String {
    match have {
        None => format!("enforce_index {want}: job {job_id:?} does not exist (use 0 to create it)"),
        Some(have) if want == 0 => {
            format!("enforce_index 0: job {job_id:?} already exists (job_modify_index {have})")
        }
        Some(have) => {
            format!("enforce_index {want} does not match job {job_id:?}'s job_modify_index {have}")
        }
    }
}

impl From<Rejection> for JobError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::JobModifyIndex {
                job_id,
                enforce_index,
                job_modify_index,
            } => JobError::IndexMismatch {
                job_id,
                enforce_index,
                job_modify_index,
            },
            other => JobError::Unexpected(other),
        }
    }
}

/// Registers a job from a user's spec: validated, its server-owned fields reset.
pub async fn register(
    ctx: &Endpoints,
    req: RegisterRequest,
) -> Result<JobRegisterResponse, JobError> {
    let mut job = req.job;
    jobspec::validate(&job).map_err(JobError::InvalidSpec)?;
    ctx.within_max_count(&job)?;
    // Server-owned fields are computed by the store, whatever the body said.
    job.stop = false;
    job.status = JobStatus::Pending;
    job.submit_time = now_ms();
    job.create_index = 0;
    job.modify_index = 0;
    job.job_modify_index = 0;
    job.stable = false;
    if job.name.is_empty() {
        job.name = job.id.to_string();
    }
    let mut attempts = Attempts::new(&job.id, req.enforce_index.is_some());
    loop {
        let attempt = async {
            let stored = read_job(ctx, &job.id).await?;
            submit_registration(ctx, job.clone(), stored.as_ref(), req.enforce_index).await
        };
        if let Some(answer) = attempts.answer(attempt.await) {
            return answer;
        }
    }
}

/// Registers the job again with one group's count changed: a new version and a
/// `job-register` evaluation, like `register`. Refused for a stopped job, a system job
/// (one instance per node, nothing to scale) and an unknown group.
pub async fn scale(ctx: &Endpoints, req: ScaleRequest) -> Result<JobRegisterResponse, JobError> {
    let mut attempts = Attempts::new(&req.job_id, req.enforce_index.is_some());
    loop {
        if let Some(answer) = attempts.answer(scale_once(ctx, &req).await) {
            return answer;
        }
    }
}

async fn scale_once(ctx: &Endpoints, req: &ScaleRequest) -> Result<JobRegisterResponse, JobError> {
    let id = &req.job_id;
    let stored = read_job(ctx, id)
        .await?
        .ok_or_else(|| JobError::NotFound { job_id: id.clone() })?;
    if stored.stop {
        return Err(JobError::Stopped { job_id: id.clone() });
    }
    if matches!(stored.job_type, JobType::System | JobType::Sysbatch) {
        return Err(JobError::NotScalable {
            job_id: id.clone(),
            job_type: stored.job_type.as_str(),
        });
    }
    let mut job = stored.clone();
    let Some(group) = job.groups.iter_mut().find(|g| g.name == req.group) else {
        return Err(JobError::UnknownGroup {
            job_id: id.clone(),
            group: req.group.clone(),
            groups: stored
                .groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    group.count = req.count;
    jobspec::validate(&job).map_err(JobError::InvalidSpec)?;
    ctx.within_max_count(&job)?;
    job.submit_time = now_ms();
    tracing::info!(job_id = %id, group = %req.group, count = req.count, "scaling job");
    submit_registration(ctx, job, Some(&stored), req.enforce_index).await
}

/// Registers an earlier version's spec again as a new version, with its `job-register`
/// evaluation. Refused for the current, an unknown or a pruned version, and (409) when
/// `enforce_prior_version` is not the current version.
pub async fn revert(ctx: &Endpoints, req: RevertRequest) -> Result<JobRegisterResponse, JobError> {
    let mut attempts = Attempts::new(&req.job_id, false);
    loop {
        if let Some(answer) = attempts.answer(revert_once(ctx, &req).await) {
            return answer;
        }
    }
}

async fn revert_once(
    ctx: &Endpoints,
    req: &RevertRequest,
) -> Result<JobRegisterResponse, JobError> {
    let id = &req.job_id;
    let (lookup, version) = (id.clone(), req.version);
    let (current, target) = ctx
        .read(move |s| Ok((s.job(&lookup)?, s.job_version(&lookup, version)?)))
        .await?;
    let current = current.ok_or_else(|| JobError::NotFound { job_id: id.clone() })?;
    if let Some(prior) = req.enforce_prior_version {
        if prior != current.version {
            return Err(JobError::PriorVersion {
                job_id: id.clone(),
                prior,
                current: current.version,
            });
        }
    }
    if req.version == current.version {
        return Err(JobError::CurrentVersion {
            job_id: id.clone(),
            version: req.version,
        });
    }
    let Some(target) = target else {
        if req.version > current.version {
            return Err(JobError::UnknownVersion {
                job_id: id.clone(),
                version: req.version,
                current: current.version,
            });
        }
        let lookup = id.clone();
        let kept = ctx.read(move |s| s.job_versions(&lookup)).await?;
        return Err(JobError::PrunedVersion {
            job_id: id.clone(),
            version: req.version,
            tracked: JOB_TRACKED_VERSIONS,
            kept: kept
                .iter()
                .map(|v| v.version.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let job = crate::deployment::decide::registration_of(&target);
    tracing::info!(job_id = %id, from = current.version, to = req.version, "reverting job");
    submit_registration(ctx, job, Some(&current), None).await
}

/// Stops the job (or deletes it with `purge`) with the `job-deregister` evaluation that
/// stops its allocations.
pub async fn deregister(
    ctx: &Endpoints,
    req: DeregisterRequest,
) -> Result<JobDeregisterResponse, JobError> {
    let mut attempts = Attempts::new(&req.job_id, false);
    loop {
        if let Some(answer) = attempts.answer(deregister_once(ctx, &req).await) {
            return answer;
        }
    }
}

async fn deregister_once(
    ctx: &Endpoints,
    req: &DeregisterRequest,
) -> Result<JobDeregisterResponse, JobError> {
    let id = &req.job_id;
    let stored = read_job(ctx, id)
        .await?
        .ok_or_else(|| JobError::NotFound { job_id: id.clone() })?;
    let eval = Evaluation::for_job(&stored, triggers::JOB_DEREGISTER);
    let eval_id = eval.id.clone();
    let outcome = ctx
        .log
        .submit(Command::DeregisterJob {
            job_id: id.clone(),
            purge: req.purge,
            eval: Some(eval),
            enforce_index: Some(stored.job_modify_index),
        })
        .await?;
    if let Some(rejection) = outcome.rejected {
        return Err(rejection.into());
    }
    tracing::info!(job_id = %id, purge = req.purge, eval_id = %eval_id, "job deregistered");
    // As the store left it (the check held, so it met the job as read): stopping
    // a running job, or purging it, takes the command's index.
    let job_modify_index = if stored.stop && !req.purge {
        stored.job_modify_index
    } else {
        outcome.index
    };
    Ok(JobDeregisterResponse {
        eval_id,
        job_modify_index,
    })
}

async fn read_job(ctx: &Endpoints, id: &JobId) -> Result<Option<Job>, JobError> {
    let lookup = id.clone();
    Ok(ctx.read(move |s| s.job(&lookup)).await?)
}

/// Counts a write's attempts: one that fails on a check-and-set the user did not ask
/// for (`user_enforce` false) met a job that changed between its read and its commit,
/// and is made again, at most `MAX_ATTEMPTS` times.
struct Attempts<'a> {
    job_id: &'a JobId,
    user_enforce: bool,
    made: u32,
}

impl<'a> Attempts<'a> {
    fn new(job_id: &'a JobId, user_enforce: bool) -> Self {
        Attempts {
            job_id,
            user_enforce,
            made: 0,
        }
    }

    /// The answer to an attempt's `result`, or `None` to attempt again.
    fn answer<T>(&mut self, result: Result<T, JobError>) -> Option<Result<T, JobError>> {
        self.made += 1;
        match result {
            Err(JobError::IndexMismatch { .. }) if !self.user_enforce => {
                if self.made >= MAX_ATTEMPTS {
                    return Some(Err(JobError::Contended {
                        job_id: self.job_id.clone(),
                        attempts: self.made,
                    }));
                }
                tracing::debug!(
                    job_id = %self.job_id,
                    attempt = self.made,
                    "the job changed since it was read; again"
                );
                None
            }
            other => Some(other),
        }
    }
}

/// Submits `job` (server-owned fields reset) as registered over `stored`, the job as
/// just read, with its `job-register` evaluation. The write's check-and-set is the
/// user's `enforce_index` (checked against `stored` first, so a stale one writes
/// nothing), else `stored`'s `job_modify_index`.
async fn submit_registration(
    ctx: &Endpoints,
    job: Job,
    stored: Option<&Job>,
    enforce_index: Option<u64>,
) -> Result<JobRegisterResponse, JobError> {
    if let Some(want) = enforce_index {
        command::check_job_modify_index(&job.id, want, stored)?;
    }
    let check = enforce_index.unwrap_or_else(|| stored.map_or(0, |s| s.job_modify_index));
    let unchanged = command::registration_unchanged(stored, &job);
    let mut warnings = Vec::new();
    if unchanged {
        warnings.push("the job spec is unchanged; it was evaluated again".to_string());
    }
    let eval = Evaluation::for_job(&job, triggers::JOB_REGISTER);
    let eval_id = eval.id.clone();
    let job_id = job.id.clone();
    let outcome = ctx
        .log
        .submit(Command::UpsertJob {
            job,
            eval: Some(eval),
            enforce_index: Some(check),
        })
        .await?;
    if let Some(rejection) = outcome.rejected {
        return Err(rejection.into());
    }
    // The check held, so the store met the job as read: an unchanged registration
    // keeps its job_modify_index, any other takes the command's index.
    let job_modify_index = match stored {
        Some(s) if unchanged => s.job_modify_index,
        _ => outcome.index,
    };
    tracing::info!(job_id = %job_id, job_modify_index, eval_id = %eval_id, "job registered");
    Ok(JobRegisterResponse {
        eval_id,
        job_modify_index,
        warnings,
    })
}
