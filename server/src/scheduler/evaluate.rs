//! `process`: the scheduler's entry point for one evaluation. It dispatches by job type
//! to a scheduling pass (`generic` for service and batch jobs, `system` for system and
//! sysbatch jobs), submits the pass's plan, retries partial commits on a fresher
//! snapshot, and records the evaluation's outcome.
//!
//! ```text
//!  process(eval, snapshot, planner, now)
//!    loop (at most MAX_PLAN_ATTEMPTS):
//!      compute: service/batch -> generic::compute, system/sysbatch -> system::compute
//!      plan empty? ----------------------------------------------> done
//!      planner.submit_plan(plan) -- all committed ---------------> done
//!                                -- partial: retry on the fresher snapshot
//!    done: create follow-up eval (delayed reschedules), blocked eval (unplaced
//!          instances; reblock instead when the eval was a blocked one or the job
//!          already has one waiting: one blocked eval per job), update_eval
//!    attempts used up: eval failed + blocked eval `max-plan-attempts`
//! ```

use std::collections::BTreeMap;

use orch_common::ids::EvalId;
use orch_common::model::{
    deployment_desc, triggers, DeploymentStatus, DeploymentStatusUpdate, EvalStatus, Evaluation,
    JobType,
};

use super::deployment::Rollout;
use super::outcome::Outcome;
use super::planner::{Planner, PlannerError};
use super::state::State;
use super::{generic, system};

/// How many times a partially committed plan is recomputed before giving up.
pub const MAX_PLAN_ATTEMPTS: u32 = 5;

/// Why scheduling an evaluation failed (the broker will redeliver it).
#[derive(Debug)]
pub enum SchedulerError {
    /// The planner refused an operation (plan submission, eval update, ...).
    Planner {
        eval_id: EvalId,
        op: &'static str,
        source: PlannerError,
    },
}

impl std::fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedulerError::Planner {
                eval_id,
                op,
                source,
            } => {
                write!(f, "evaluation {eval_id}: {op} failed: {source}")
            }
        }
    }
}

impl std::error::Error for SchedulerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchedulerError::Planner { source, .. } => Some(source),
        }
    }
}

fn planner_err<'e>(
    eval: &'e Evaluation,
    op: &'static str,
) -> impl FnOnce(PlannerError) -> SchedulerError + 'e {
    move |source| SchedulerError::Planner {
        eval_id: eval.id.clone(),
        op,
        source,
    }
}

/// Schedules one evaluation: computes a plan from `state`, submits it through
/// `planner` (retrying partial commits), and records the evaluation's outcome.
pub fn process(
    eval: &Evaluation,
    state: &dyn State,
    planner: &mut dyn Planner,
    now_ms: u64,
) -> Result<(), SchedulerError> {
    let mut refreshed: Option<Box<dyn State>> = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut outcome, snapshot_index) = {
            let st: &dyn State = refreshed.as_deref().unwrap_or(state);
            (compute(eval, st, now_ms), st.index())
        };
        if outcome.plan.is_empty() {
            return finish(eval, outcome, snapshot_index, planner, now_ms);
        }
        // The plan moves to the planner (no copy of a thousand allocations); what the
        // full-commit check needs is counted first.
        let plan = std::mem::take(&mut outcome.plan);
        let wanted_nodes = plan.node_update.len() + plan.node_allocation.len();
        let (result, fresh) = planner
            .submit_plan(plan)
            .map_err(planner_err(eval, "submit plan"))?;
        if result.updated_nodes.len() + result.allocated_nodes.len() == wanted_nodes {
            return finish(eval, outcome, snapshot_index, planner, now_ms);
        }
        if attempt >= MAX_PLAN_ATTEMPTS {
            return give_up(eval, outcome, snapshot_index, planner, now_ms);
        }
        if let Some(fresh) = fresh {
            refreshed = Some(fresh);
        }
    }
}

fn compute(eval: &Evaluation, st: &dyn State, now_ms: u64) -> Outcome {
    let job = st.job(&eval.job_id);
    let job_type = job.as_ref().map(|j| j.job_type).unwrap_or(eval.job_type);
    let config = st.scheduler_config();
    let rollout = Rollout::new(job.as_ref(), st.latest_deployment(&eval.job_id));
    let mut out = match job_type {
        JobType::System | JobType::Sysbatch => {
            // System jobs have no deployments: one left from an earlier job type ends.
            let mut out = system::compute(eval, st, job, &config, now_ms);
            out.plan.deployment_updates = rollout.updates;
            if let Some(d) = rollout.current.filter(|d| d.status.is_active()) {
                out.plan.deployment_updates.push(DeploymentStatusUpdate {
                    deployment_id: d.id,
                    status: DeploymentStatus::Cancelled,
                    status_description: deployment_desc::CANCELLED_NEWER_JOB.to_string(),
                });
            }
            out
        }
        JobType::Service | JobType::Batch => {
            generic::compute(eval, st, job, &config, &rollout, now_ms)
        }
    };
    if !out.failed.is_empty() {
        out.existing_blocked = st.blocked_eval(&eval.job_id).filter(|b| b.id != eval.id);
    }
    out
}

/// A new evaluation following `eval` for the same job.
fn follow_up(eval: &Evaluation, triggered_by: &str, status: EvalStatus, now_ms: u64) -> Evaluation {
    Evaluation {
        id: EvalId::generate(),
        priority: eval.priority,
        job_type: eval.job_type,
        triggered_by: triggered_by.to_string(),
        job_id: eval.job_id.clone(),
        job_modify_index: eval.job_modify_index,
        node_id: None,
        status,
        status_description: String::new(),
        wait_until: None,
        previous_eval: Some(eval.id.clone()),
        next_eval: None,
        blocked_eval: None,
        failed_tg_allocs: BTreeMap::new(),
        queued_allocations: BTreeMap::new(),
        class_eligibility: BTreeMap::new(),
        snapshot_index: 0,
        create_time: now_ms,
        modify_time: now_ms,
        create_index: 0,
        modify_index: 0,
    }
}

fn blocked_eval(
    eval: &Evaluation,
    out: &Outcome,
    snapshot_index: u64,
    trigger: &str,
    now_ms: u64,
) -> Evaluation {
    let mut blocked = follow_up(eval, trigger, EvalStatus::Blocked, now_ms);
    blocked.status_description = "created to place remaining allocations".to_string();
    blocked.class_eligibility = out.class_eligibility.clone();
    blocked.failed_tg_allocs = out.failed.clone();
    blocked.queued_allocations = out.queued.clone();
    blocked.snapshot_index = snapshot_index;
    blocked
}

/// Records the evaluation's outcome (and its follow-up and blocked evaluations).
fn finish(
    eval: &Evaluation,
    out: Outcome,
    snapshot_index: u64,
    planner: &mut dyn Planner,
    now_ms: u64,
) -> Result<(), SchedulerError> {
    let mut done = eval.clone();
    done.status = EvalStatus::Complete;
    done.status_description = String::new();
    done.failed_tg_allocs = out.failed.clone();
    done.queued_allocations = out.queued.clone();
    done.snapshot_index = snapshot_index;
    done.modify_time = now_ms;
    if let Some((at, trigger)) = out.follow_up {
        let mut next = follow_up(eval, trigger, EvalStatus::Pending, now_ms);
        next.wait_until = Some(at);
        done.next_eval = Some(next.id.clone());
        planner
            .create_eval(next)
            .map_err(planner_err(eval, "create follow-up eval"))?;
    }
    if !out.failed.is_empty() {
        if eval.status == EvalStatus::Blocked {
            done.status = EvalStatus::Blocked;
            done.class_eligibility = out.class_eligibility;
            return planner
                .reblock_eval(done)
                .map_err(planner_err(eval, "reblock eval"));
        }
        if let Some(mut existing) = out.existing_blocked.clone() {
            // One blocked eval per job: refresh the one waiting rather than add another.
            existing.class_eligibility = out.class_eligibility.clone();
            existing.failed_tg_allocs = out.failed.clone();
            existing.queued_allocations = out.queued.clone();
            existing.snapshot_index = snapshot_index;
            existing.modify_time = now_ms;
            done.blocked_eval = Some(existing.id.clone());
            planner
                .reblock_eval(existing)
                .map_err(planner_err(eval, "reblock eval"))?;
        } else {
            let blocked = blocked_eval(eval, &out, snapshot_index, triggers::QUEUED_ALLOCS, now_ms);
            done.blocked_eval = Some(blocked.id.clone());
            planner
                .create_eval(blocked)
                .map_err(planner_err(eval, "create blocked eval"))?;
        }
    }
    planner
        .update_eval(done)
        .map_err(planner_err(eval, "update eval"))
}

/// Plans kept being rejected: fail the evaluation and leave a blocked one to retry
/// when the cluster changes.
fn give_up(
    eval: &Evaluation,
    out: Outcome,
    snapshot_index: u64,
    planner: &mut dyn Planner,
    now_ms: u64,
) -> Result<(), SchedulerError> {
    let blocked = blocked_eval(
        eval,
        &out,
        snapshot_index,
        triggers::MAX_PLAN_ATTEMPTS,
        now_ms,
    );
    let mut failed = eval.clone();
    failed.status = EvalStatus::Failed;
    failed.status_description = format!("maximum plan attempts ({MAX_PLAN_ATTEMPTS}) reached");
    failed.blocked_eval = Some(blocked.id.clone());
    failed.snapshot_index = snapshot_index;
    failed.modify_time = now_ms;
    planner
        .create_eval(blocked)
        .map_err(planner_err(eval, "create blocked eval"))?;
    planner
        .update_eval(failed)
        .map_err(planner_err(eval, "update eval"))
}
