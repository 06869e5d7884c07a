//! The scheduler's part of a service job's rollout: which deployment governs the job's
//! current version, which older one is cancelled, when a new one is created, where
//! canaries go and how many old instances may be replaced in this evaluation. Pure,
//! like the rest of the scheduler: the deployment watcher drives deployments in time,
//! this only reads them.
//!
//! ```text
//!  latest deployment of the job
//!    job stopped or purged, deployment active ───────────> cancel (job stopped)
//!    of an older registration (version, create or modify
//!    index), active ─────────────────────────────────────> cancel (newer job);
//!                                                            governs nothing
//!    of the current registration ───────────────────────> governs (even terminal)
//!  per group with an [update] policy (service jobs only):
//!    no current deployment and work to do (destructive or in-place updates, or
//!    placements when no instance of this version runs) ──> create one (all groups)
//!    canaries wanted (a new deployment: `canary` when old instances are replaced
//!    destructively), not promoted ──> place the missing ones at old instances'
//!                                      indexes; hold destructive updates and new
//!                                      instances until promotion
//!    destructive updates ──> at most max_parallel - undecided instances of the
//!                            deployment (0 when paused, failed or any unhealthy);
//!                            the rest keep running (ignore), lowest index first
//! ```

use std::collections::BTreeMap;

use orch_common::ids::{DeploymentId, EvalId};
use orch_common::model::{
    deployment_desc, Allocation, Deployment, DeploymentGroup, DeploymentStatus,
    DeploymentStatusUpdate, DesiredStatus, Job, JobType,
};

use super::reconcile::{PlaceReason, Placement};

/// The job's deployments as this evaluation sees them.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// The deployment of the job's current registration, whatever its status: it
    /// governs the rollout while active; a terminal one means none is created again
    /// for this registration (a failed one blocks further destructive updates).
    pub current: Option<Deployment>,
    /// Status changes for the plan: an active deployment cancelled because the job
    /// stopped or a newer version replaced it.
    pub updates: Vec<DeploymentStatusUpdate>,
}

impl Rollout {
    /// Sorts the job's newest deployment (`State::latest_deployment`) into governing
    /// or cancelled. `job` is None when the job was purged.
    pub fn new(job: Option<&Job>, latest: Option<Deployment>) -> Rollout {
        let mut r = Rollout::default();
        let Some(d) = latest else {
            return r;
        };
        match job.filter(|j| !j.stop) {
            None => {
                if d.status.is_active() {
                    r.updates
                        .push(cancel(&d, deployment_desc::CANCELLED_JOB_STOPPED));
                }
            }
            Some(job) if belongs_to(&d, job) => r.current = Some(d),
            Some(_) => {
                if d.status.is_active() {
                    r.updates
                        .push(cancel(&d, deployment_desc::CANCELLED_NEWER_JOB));
                }
            }
        }
        r
    }
}

/// True when `d` rolls out `job`'s current registration: its version, of this job
/// (not of an earlier one purged under the same id), registered at this index (a
/// stopped job started again with the same spec keeps its version but is a new
/// registration, whose rollout is new too).
fn belongs_to(d: &Deployment, job: &Job) -> bool {
    d.job_version == job.version
        && d.job_create_index == job.create_index
        && d.job_modify_index == job.job_modify_index
}

fn cancel(d: &Deployment, why: &str) -> DeploymentStatusUpdate {
    DeploymentStatusUpdate {
        deployment_id: d.id.clone(),
        status: DeploymentStatus::Cancelled,
        status_description: why.to_string(),
    }
}

/// One group's rollout in this evaluation.
#[derive(Debug, Clone, Default)]
pub struct GroupRollout {
    /// The deployment new (and in-place updated) allocations of the group carry; None
    /// when no active deployment governs the group.
    pub deployment_id: Option<DeploymentId>,
    /// Indexes at which canaries are placed (lowest old instances first).
    pub canaries: Vec<u32>,
    /// Destructive updates beyond the rolling limit: their allocations keep running.
    pub held: Vec<Placement>,
    /// New instances held back until the group's canaries are promoted.
    pub deferred: u32,
}

/// What the rollout changes in the plan.
#[derive(Debug, Clone, Default)]
pub struct RolloutPlan {
    /// A deployment this plan creates.
    pub deployment: Option<Deployment>,
    /// Groups with an update policy (others are absent: all at once, no deployment).
    pub groups: BTreeMap<String, GroupRollout>,
}

impl RolloutPlan {
    pub fn deployment_id(&self, group: &str) -> Option<&DeploymentId> {
        self.groups
            .get(group)
            .and_then(|g| g.deployment_id.as_ref())
    }
}

fn is_running(a: &Allocation) -> bool {
    a.desired_status == DesiredStatus::Run && !a.client_status.is_terminal()
}

/// Applies the rollout rules to one evaluation's work: takes out of `placements` the
/// destructive updates beyond each group's limit and the new instances held for
/// promotion, says where canaries go, and creates the deployment when the current
/// registration has none and a group with a policy has work.
///
/// `allocs` are all of the job's allocations; `inplace` the allocations updated in
/// place by this plan; `canaries` the unpromoted canaries kept (`Reconciled::canaries`).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    job: &Job,
    rollout: &Rollout,
    allocs: &[Allocation],
    placements: &mut Vec<Placement>,
    inplace: &[Allocation],
    canaries: &[Allocation],
    eval_id: &EvalId,
    now_ms: u64,
) -> RolloutPlan {
    let mut out = RolloutPlan::default();
    if job.job_type != JobType::Service {
        return out;
    }
    let mut new_groups: BTreeMap<String, DeploymentGroup> = BTreeMap::new();
    let mut work = false;
    for group in &job.groups {
        let Some(policy) = &group.update else {
            continue;
        };
        let in_group = |p: &Placement| p.group == group.name;
        let mut destructive: Vec<u32> = placements
            .iter()
            .filter(|p| in_group(p) && p.reason == PlaceReason::Destructive)
            .map(|p| p.index)
            .collect();
        destructive.sort_unstable();
        let kept: Vec<u32> = canaries
            .iter()
            .filter(|a| a.group == group.name)
            .map(|a| a.index)
            .collect();
        // (limit, canaries wanted, governed by an active deployment, canaries to have)
        let (limit, desired_canaries, governs, canary_target) = match &rollout.current {
            Some(d) => {
                let Some(dg) = d.task_groups.get(&group.name) else {
                    // Not part of this deployment (no policy when it was created): as
                    // without a policy.
                    continue;
                };
                let awaiting = d.status.is_active() && dg.desired_canaries > 0 && !dg.promoted;
                let blocked = matches!(
                    d.status,
                    DeploymentStatus::Paused | DeploymentStatus::Failed
                ) || awaiting
                    || any_unhealthy(d, allocs);
                let limit = if blocked {
                    0
                } else {
                    policy
                        .max_parallel
                        .saturating_sub(undecided(d, &group.name, allocs))
                };
                let wanted = if awaiting { dg.desired_canaries } else { 0 };
                // Paused: no canary is added either; what waits stays held.
                let target = if d.status == DeploymentStatus::Paused {
                    kept.len() as u32
                } else {
                    wanted
                };
                (limit, wanted, d.status.is_active(), target)
            }
            None => {
                // Canaries only test a version against the one they would replace.
                let wanted = if destructive.is_empty() {
                    0
                } else {
                    policy.canary
                };
                let this_version_runs = allocs.iter().any(|a| {
                    a.group == group.name && a.job_version == job.version && is_running(a)
                });
                let placing = placements.iter().any(in_group);
                work |= !destructive.is_empty()
                    || inplace.iter().any(|a| a.group == group.name)
                    || (placing && !this_version_runs);
                new_groups.insert(
                    group.name.clone(),
                    DeploymentGroup {
                        auto_revert: policy.auto_revert,
                        auto_promote: policy.auto_promote,
                        progress_deadline: policy.progress_deadline,
                        desired_canaries: wanted,
                        desired_total: group.count,
                        ..DeploymentGroup::default()
                    },
                );
                let limit = if wanted > 0 { 0 } else { policy.max_parallel };
                (limit, wanted, true, wanted)
            }
        };
        let mut g = GroupRollout {
            deployment_id: governs
                .then(|| rollout.current.as_ref().map(|d| d.id.clone()))
                .flatten(),
            ..GroupRollout::default()
        };
        // Canaries: the missing ones, at the indexes of old instances they stand
        // beside (not one a kept canary has), lowest first.
        let missing = canary_target.saturating_sub(kept.len() as u32) as usize;
        let free = destructive.iter().copied().filter(|i| !kept.contains(i));
        let fallback = destructive.iter().copied().chain(0..group.count);
        g.canaries = free.chain(fallback).take(missing).collect();
        // Destructive updates beyond the limit keep running; the lowest indexes go first.
        let allowed: Vec<u32> = destructive.iter().copied().take(limit as usize).collect();
        let awaiting = desired_canaries > 0;
        let mut kept_placements = Vec::with_capacity(placements.len());
        for p in placements.drain(..) {
            if !in_group(&p) {
                kept_placements.push(p);
            } else if p.reason == PlaceReason::Destructive && !allowed.contains(&p.index) {
                g.held.push(p);
            } else if p.reason == PlaceReason::New && awaiting {
                g.deferred += 1;
            } else {
                kept_placements.push(p);
            }
        }
        *placements = kept_placements;
        out.groups.insert(group.name.clone(), g);
    }
    if rollout.current.is_none() && work {
        let d = Deployment {
            id: DeploymentId::generate(),
            job_id: job.id.clone(),
            job_version: job.version,
            job_modify_index: job.job_modify_index,
            job_create_index: job.create_index,
            status: DeploymentStatus::Running,
            status_description: deployment_desc::RUNNING.to_string(),
            task_groups: new_groups,
            eval_id: eval_id.clone(),
            create_time: now_ms,
            modify_time: now_ms,
            create_index: 0,
            modify_index: 0,
        };
        for g in out.groups.values_mut() {
            g.deployment_id = Some(d.id.clone());
        }
        out.deployment = Some(d);
    }
    out
}

/// Instances of `d` in `group` still running whose health is not decided yet: each
/// takes one of the group's `max_parallel` slots.
fn undecided(d: &Deployment, group: &str, allocs: &[Allocation]) -> u32 {
    allocs
        .iter()
        .filter(|a| {
            a.group == group
                && a.deployment_id.as_ref() == Some(&d.id)
                && a.next_allocation.is_none()
                && is_running(a)
                && a.deployment_health().is_none()
        })
        .count() as u32
}

/// True when an instance of `d` the server still wants was found unhealthy: nothing
/// more rolls until the watcher decides (it fails the deployment).
fn any_unhealthy(d: &Deployment, allocs: &[Allocation]) -> bool {
    allocs.iter().any(|a| {
        a.deployment_id.as_ref() == Some(&d.id)
            && a.desired_status == DesiredStatus::Run
            && a.next_allocation.is_none()
            && a.deployment_health() == Some(false)
    })
}
