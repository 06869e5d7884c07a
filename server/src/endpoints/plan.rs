//! The dry run of registering a job (`orch job plan`): the same scheduler code the
//! workers run, on a snapshot in which the job reads as submitted, through a planner
//! that writes nothing.
//!
//! ```text
//!  snapshot ──► Overlay (job(id) = the submitted job, with the version and
//!               job_modify_index it would get) ──► scheduler::process(eval, overlay,
//!               DryRunPlanner, now)
//!  DryRunPlanner: submit_plan answers "all committed" without writing; update_eval /
//!                 create_eval / reblock_eval are only recorded
//!  answer: diff vs the running version, per-group annotations, preemptions, failures
//! ```

use std::collections::{BTreeMap, BTreeSet};

use orch_common::api::{AllocListStub, JobPlanResponse};
use orch_common::diff::{job_diff, DiffError};
use orch_common::ids::{now_ms, AllocId, JobId, NodeId};
use orch_common::jobspec::{self, SpecErrors};
use orch_common::model::{
    triggers, AllocMetric, Allocation, Deployment, Evaluation, Job, JobStatus, Node, Plan,
    PlanAnnotations, PlanResult, SchedulerConfiguration,
};

use super::context::{CountAboveLimit, Endpoints};
use crate::scheduler::{self, Planner, PlannerError, SchedulerError, State};
use crate::state::{StateError, StateStore};

/// Plan the registration of `job`.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The job the request is about (the route's id); the submitted job must be it.
    pub job_id: JobId,
    pub job: Job,
    /// Answer with the diff against the running version.
    pub diff: bool,
}

/// Why a dry run was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid job spec: {0}")]
    InvalidSpec(SpecErrors),
    #[error(transparent)]
    CountAboveLimit(#[from] CountAboveLimit),
    #[error("the job in the body is {body:?} but the path names {path:?}")]
    IdMismatch { body: JobId, path: JobId },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("dry-run scheduling failed: {0}")]
    Scheduler(#[source] SchedulerError),
    #[error("{0}")]
    Diff(#[from] DiffError),
    /// The dry run's task panicked or was cancelled.
    #[error("plan task: {0}")]
    Task(String),
}

/// Validates the job and runs the dry run on the blocking pool.
pub async fn plan(ctx: &Endpoints, req: PlanRequest) -> Result<JobPlanResponse, PlanError> {
    jobspec::validate(&req.job).map_err(PlanError::InvalidSpec)?;
    // What `job run` would be refused, the dry run refuses too.
    ctx.within_max_count(&req.job)?;
    if req.job.id != req.job_id {
        return Err(PlanError::IdMismatch {
            body: req.job.id,
            path: req.job_id,
        });
    }
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || dry_run(&store, req.job, req.diff, now_ms()))
        .await
        .map_err(|e| PlanError::Task(e.to_string()))?
}

/// Runs the scheduler on a snapshot as if `submitted` had just been registered.
pub fn dry_run(
    store: &StateStore,
    submitted: Job,
    want_diff: bool,
    now: u64,
) -> Result<JobPlanResponse, PlanError> {
    let snapshot = store.snapshot()?;
    let existing = snapshot.try_job(&submitted.id)?;
    let index = snapshot.index();
    // What the registration would be committed at.
    let next = index + 1;
    let mut job = submitted;
    if job.name.is_empty() {
        job.name = job.id.to_string();
    }
    job.stop = false;
    job.submit_time = now;
    job.modify_index = next;
    let mut warnings = Vec::new();
    match &existing {
        Some(e) => {
            job.create_index = e.create_index;
            job.status = e.status;
            if e.spec_changed(&job) {
                job.version = e.version + 1;
                job.job_modify_index = next;
            } else {
                job.version = e.version;
                job.job_modify_index = if e.stop { next } else { e.job_modify_index };
                if !e.stop {
                    warnings.push("the job spec is unchanged".to_string());
                }
            }
        }
        None => {
            job.create_index = next;
            job.job_modify_index = next;
            job.status = JobStatus::Pending;
            // Versions of a purged job with this id are kept: registration continues them.
            job.version = store
                .job_versions(&job.id)?
                .iter()
                .map(|v| v.version + 1)
                .max()
                .unwrap_or(0);
        }
    }

    let mut eval = Evaluation::for_job(&job, triggers::JOB_REGISTER);
    eval.create_index = next;
    eval.modify_index = next;
    let overlay = Overlay {
        inner: &snapshot,
        job: job.clone(),
    };
    let mut planner = DryRunPlanner::new(index);
    scheduler::process(&eval, &overlay, &mut planner, now).map_err(PlanError::Scheduler)?;

    let before = snapshot.allocs_by_job(&job.id);
    let failed_tg_allocs = planner
        .updated
        .last()
        .map(|e| e.failed_tg_allocs.clone())
        .unwrap_or_default();
    let annotations = planner
        .plans
        .iter()
        .rev()
        .map(|p| p.annotations.clone())
        .find(|a| !a.desired_tg_updates.is_empty())
        .unwrap_or_else(|| derive_annotations(&planner.plans, &before, &failed_tg_allocs));
    let preemptions: Vec<AllocListStub> = planner
        .plans
        .iter()
        .flat_map(|p| p.node_preemptions.values().flatten())
        .map(AllocListStub::from)
        .collect();
    let failure_reasons: BTreeMap<String, String> = failed_tg_allocs
        .iter()
        .map(|(g, m)| (g.clone(), m.describe()))
        .collect();
    let diff = if want_diff {
        let running = existing.as_ref().filter(|e| !e.stop);
        Some(job_diff(running, Some(&job))?)
    } else {
        None
    };
    Ok(JobPlanResponse {
        job_modify_index: existing.as_ref().map(|e| e.job_modify_index).unwrap_or(0),
        next_version: job.version,
        diff,
        annotations,
        failed_tg_allocs,
        failure_reasons,
        preemptions,
        created_evals: planner.created,
        warnings,
    })
}

/// The snapshot, except that the planned job reads as the submitted one.
struct Overlay<'a> {
    inner: &'a dyn State,
    job: Job,
}

impl State for Overlay<'_> {
    fn index(&self) -> u64 {
        self.inner.index()
    }

    fn job(&self, id: &JobId) -> Option<Job> {
        if *id == self.job.id {
            return Some(self.job.clone());
        }
        self.inner.job(id)
    }

    fn nodes(&self) -> Vec<Node> {
        self.inner.nodes()
    }

    fn node(&self, id: &NodeId) -> Option<Node> {
        self.inner.node(id)
    }

    fn allocs_by_job(&self, job_id: &JobId) -> Vec<Allocation> {
        self.inner.allocs_by_job(job_id)
    }

    fn allocs_by_node(&self, node_id: &NodeId) -> Vec<Allocation> {
        self.inner.allocs_by_node(node_id)
    }

    fn job_version(&self, id: &JobId, version: u64) -> Option<Job> {
        if *id == self.job.id && version == self.job.version {
            return Some(self.job.clone());
        }
        self.inner.job_version(id, version)
    }

    fn blocked_eval(&self, job_id: &JobId) -> Option<Evaluation> {
        self.inner.blocked_eval(job_id)
    }

    fn latest_deployment(&self, job_id: &JobId) -> Option<Deployment> {
        self.inner.latest_deployment(job_id)
    }

    fn scheduler_config(&self) -> SchedulerConfiguration {
        self.inner.scheduler_config()
    }

    // The store's fast paths (shared node list, per-node sums), not the defaults.
    fn shared_nodes(&self) -> std::sync::Arc<Vec<Node>> {
        self.inner.shared_nodes()
    }

    fn node_allocated(&self, node_id: &NodeId) -> orch_common::model::NodeAllocated {
        self.inner.node_allocated(node_id)
    }
}

/// A `Planner` that commits nothing: every plan is answered as fully committed, and
/// evaluation writes are kept for the answer.
struct DryRunPlanner {
    index: u64,
    plans: Vec<Plan>,
    updated: Vec<Evaluation>,
    created: Vec<Evaluation>,
}

impl DryRunPlanner {
    fn new(index: u64) -> Self {
        DryRunPlanner {
            index,
            plans: Vec::new(),
            updated: Vec::new(),
            created: Vec::new(),
        }
    }
}

impl Planner for DryRunPlanner {
    fn submit_plan(
        &mut self,
        plan: Plan,
    ) -> Result<(PlanResult, Option<Box<dyn State>>), PlannerError> {
        let result = PlanResult {
            updated_nodes: plan.node_update.keys().cloned().collect(),
            allocated_nodes: plan.node_allocation.keys().cloned().collect(),
            refresh_index: 0,
            alloc_index: self.index,
        };
        self.plans.push(plan);
        Ok((result, None))
    }

    fn update_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.updated.push(eval);
        Ok(())
    }

    fn create_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.created.push(eval);
        Ok(())
    }

    fn reblock_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.created.push(eval);
        Ok(())
    }
}

/// Per-group counts read off the plans themselves, for when the scheduler left its
/// annotations empty (or submitted no plan): an allocation that already exists is
/// updated in place; a new one replacing a stopped one is a destructive update; other
/// new ones are placements; other stops are stops; live allocations left alone are
/// ignored. Instances that could not be placed are still counted as placements, as
/// the scheduler's own annotations count what it wanted to do.
fn derive_annotations(
    plans: &[Plan],
    before: &[Allocation],
    failed: &BTreeMap<String, AllocMetric>,
) -> PlanAnnotations {
    let mut out = PlanAnnotations::default();
    for (group, metric) in failed {
        out.desired_tg_updates
            .entry(group.clone())
            .or_default()
            .place += metric.coalesced_failures + 1;
    }
    let existing: BTreeSet<&AllocId> = before.iter().map(|a| &a.id).collect();
    let mut touched: BTreeSet<AllocId> = BTreeSet::new();
    for plan in plans {
        let stopped: BTreeSet<&AllocId> =
            plan.node_update.values().flatten().map(|a| &a.id).collect();
        let mut replaced: BTreeSet<AllocId> = BTreeSet::new();
        for a in plan.node_allocation.values().flatten() {
            let u = out.desired_tg_updates.entry(a.group.clone()).or_default();
            touched.insert(a.id.clone());
            if existing.contains(&a.id) {
                u.in_place_update += 1;
            } else if let Some(prev) = a
                .previous_allocation
                .as_ref()
                .filter(|p| stopped.contains(p))
            {
                u.destructive_update += 1;
                replaced.insert(prev.clone());
            } else {
                u.place += 1;
            }
        }
        for a in plan.node_update.values().flatten() {
            touched.insert(a.id.clone());
            if !replaced.contains(&a.id) {
                out.desired_tg_updates
                    .entry(a.group.clone())
                    .or_default()
                    .stop += 1;
            }
        }
    }
    for a in before
        .iter()
        .filter(|a| !a.is_terminal() && !touched.contains(&a.id))
    {
        out.desired_tg_updates
            .entry(a.group.clone())
            .or_default()
            .ignore += 1;
    }
    out
}
