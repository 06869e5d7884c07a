//! What to do with one active deployment, decided from its allocations, the job's
//! versions and the time (a pure function: no clock, no store). The watcher and the
//! deployment HTTP actions both build their `DeploymentChange`s here, so that a failure
//! reverts the same way whoever asked for it.

use std::collections::{BTreeMap, BTreeSet};

use orch_common::model::{
    deployment_desc, Allocation, Deployment, DeploymentGroup, DeploymentStatus, Job, JobStatus,
};

use crate::state::command::DeploymentChange;

/// The outcome of `decide`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// The change to submit (`None`: nothing to change).
    pub change: Option<DeploymentChange>,
    /// A stable version registered again with the change (auto-revert), ready to
    /// register (server-set fields cleared).
    pub revert_to: Option<Job>,
    /// The job needs an evaluation: instances became healthy (the next batch may go),
    /// canaries were promoted, or the deployment failed (its canaries are stopped, the
    /// reverted version is placed).
    pub eval: bool,
    /// Look again at this time (ms) even without a change: the earliest progress
    /// deadline still enforced.
    pub next_check: Option<u64>,
}

/// A group has everything it needs: its healthy instances and, with canaries, the
/// promotion.
pub fn group_done(g: &DeploymentGroup) -> bool {
    g.healthy_allocs >= g.desired_total && (g.desired_canaries == 0 || g.promoted)
}

/// The group waits for a promotion and every canary it asked for is healthy.
pub fn canaries_healthy(d: &Deployment, group: &str, allocs: &[Allocation]) -> bool {
    let Some(g) = d.task_groups.get(group) else {
        return false;
    };
    if g.desired_canaries == 0 || g.promoted {
        return false;
    }
    let healthy = allocs
        .iter()
        .filter(|a| {
            a.group == group
                && a.deployment_id.as_ref() == Some(&d.id)
                && a.is_canary()
                && a.deployment_health() == Some(true)
        })
        .count() as u32;
    healthy >= g.desired_canaries
}

/// The groups whose healthy count is above `seen` (a group not seen yet counts from 0).
pub fn healthy_grew(d: &Deployment, seen: &BTreeMap<String, u32>) -> bool {
    d.task_groups
        .iter()
        .any(|(name, g)| g.healthy_allocs > seen.get(name).copied().unwrap_or(0))
}

/// The healthy count per group, to compare the next look with (`healthy_grew`).
pub fn healthy_counts(d: &Deployment) -> BTreeMap<String, u32> {
    d.task_groups
        .iter()
        .map(|(name, g)| (name.clone(), g.healthy_allocs))
        .collect()
}

/// The version an auto-revert registers again: the newest version older than the
/// deployment's that is stable and whose spec differs from the current job (so a
/// stable version that fails again is not reverted to forever). `versions` are the
/// job's stored versions in any order. None also when the job moved on to another
/// version since the deployment (that newer version is what runs now, and reverting
/// would overwrite it).
pub fn revert_target(d: &Deployment, job: Option<&Job>, versions: &[Job]) -> Option<Job> {
    let job = job?;
    if job.version != d.job_version || job.stop {
        return None;
    }
    versions
        .iter()
        .filter(|v| v.version < d.job_version && v.stable && job.spec_changed(v))
        .max_by_key(|v| v.version)
        .map(registration_of)
}

/// `version`'s spec as a job to register again: the server-set fields cleared (the
/// store gives it the next version number and its indexes).
pub fn registration_of(version: &Job) -> Job {
    let mut job = version.clone();
    job.stop = false;
    job.stable = false;
    job.status = JobStatus::Pending;
    job.submit_time = 0;
    job.create_index = 0;
    job.modify_index = 0;
    job.job_modify_index = 0;
    job
}

/// The change that fails `d` because of `why`, and the version it reverts to when one
/// of `failed_groups` has `auto_revert` (every group when `failed_groups` is empty
/// counts as failed: a user's `fail`).
pub fn fail(
    d: &Deployment,
    why: &str,
    failed_groups: &BTreeSet<String>,
    job: Option<&Job>,
    versions: &[Job],
) -> (DeploymentChange, Option<Job>) {
    let auto_revert = d
        .task_groups
        .iter()
        .filter(|(name, _)| failed_groups.is_empty() || failed_groups.contains(*name))
        .any(|(_, g)| g.auto_revert);
    // A job that moved on (a newer version, or stopped) is not reverted: what runs now
    // is not this deployment's version.
    let moved_on = job.is_none_or(|j| j.version != d.job_version || j.stop);
    let (description, revert_to) = if auto_revert && !moved_on {
        match revert_target(d, job, versions) {
            Some(target) => (
                deployment_desc::rolling_back(why, target.version),
                Some(target),
            ),
            None => (deployment_desc::no_stable_version(why), None),
        }
    } else {
        (why.to_string(), None)
    };
    let change = DeploymentChange {
        deployment_id: d.id.clone(),
        status: Some((DeploymentStatus::Failed, description)),
        ..Default::default()
    };
    (change, revert_to)
}

/// Decides what to do with active deployment `d`. `allocs`: the job's allocations
/// (those of other deployments are ignored); `job`: the job as stored now; `versions`:
/// its stored versions; `seen_healthy`: the healthy counts the watcher saw last time
/// (`None` the first time: no evaluation for instances that were already healthy).
pub fn decide(
    d: &Deployment,
    allocs: &[Allocation],
    job: Option<&Job>,
    versions: &[Job],
    seen_healthy: Option<&BTreeMap<String, u32>>,
    now: u64,
) -> Decision {
    if !d.status.is_active() {
        return Decision::default();
    }
    let mine: Vec<Allocation> = allocs
        .iter()
        .filter(|a| a.deployment_id.as_ref() == Some(&d.id))
        .cloned()
        .collect();
    let grew = seen_healthy.is_some_and(|seen| healthy_grew(d, seen));

    // 1. An unhealthy instance fails the deployment (paused or not).
    let unhealthy: BTreeSet<String> = mine
        .iter()
        .filter(|a| a.deployment_health() == Some(false))
        .map(|a| a.group.clone())
        .collect();
    if !unhealthy.is_empty() {
        let (change, revert_to) = fail(
            d,
            deployment_desc::FAILED_ALLOCATIONS,
            &unhealthy,
            job,
            versions,
        );
        return Decision {
            change: Some(change),
            revert_to,
            eval: true,
            next_check: None,
        };
    }

    // 2. The progress deadline of a running group that is not done (not while it only
    //    waits for a manual promotion with every canary healthy).
    let mut late = BTreeSet::new();
    let mut next_check: Option<u64> = None;
    if d.status == DeploymentStatus::Running {
        for (name, g) in &d.task_groups {
            let Some(by) = g.require_progress_by else {
                continue;
            };
            if group_done(g) || canaries_healthy(d, name, &mine) {
                continue;
            }
            if now >= by {
                late.insert(name.clone());
            } else {
                next_check = Some(next_check.map_or(by, |t| t.min(by)));
            }
        }
    }
    if !late.is_empty() {
        let (change, revert_to) = fail(d, deployment_desc::FAILED_DEADLINE, &late, job, versions);
        return Decision {
            change: Some(change),
            revert_to,
            eval: true,
            next_check: None,
        };
    }

    // 3. Auto-promotion, as Nomad does it: once every group waiting for promotion has
    //    auto_promote and all of their canaries are healthy, they are promoted together
    //    (a group's canaries alone say nothing about how the versions work together).
    let awaiting: Vec<(&String, &DeploymentGroup)> = d
        .task_groups
        .iter()
        .filter(|(_, g)| g.desired_canaries > 0 && !g.promoted)
        .collect();
    let all_auto = !awaiting.is_empty() && awaiting.iter().all(|(_, g)| g.auto_promote);
    let all_healthy = awaiting
        .iter()
        .all(|(name, _)| canaries_healthy(d, name, &mine));
    if all_auto && all_healthy && d.status == DeploymentStatus::Running {
        return Decision {
            change: Some(DeploymentChange {
                deployment_id: d.id.clone(),
                status: Some((
                    DeploymentStatus::Running,
                    deployment_desc::RUNNING.to_string(),
                )),
                promote: awaiting.iter().map(|(name, _)| (*name).clone()).collect(),
                ..Default::default()
            }),
            revert_to: None,
            eval: true,
            next_check,
        };
    }

    // 4. Success: every group has its healthy instances and is promoted.
    if !d.task_groups.is_empty() && d.task_groups.values().all(group_done) {
        return Decision {
            change: Some(DeploymentChange {
                deployment_id: d.id.clone(),
                status: Some((
                    DeploymentStatus::Successful,
                    deployment_desc::SUCCESSFUL.to_string(),
                )),
                mark_stable: true,
                ..Default::default()
            }),
            revert_to: None,
            eval: grew,
            next_check: None,
        };
    }

    // 5. Still running: say what it waits for.
    let mut change = None;
    if d.status == DeploymentStatus::Running {
        let description = if all_auto {
            deployment_desc::RUNNING_AUTO_PROMOTION
        } else if awaiting
            .iter()
            .any(|(name, _)| canaries_healthy(d, name, &mine))
        {
            deployment_desc::RUNNING_NEEDS_PROMOTION
        } else {
            deployment_desc::RUNNING
        };
        if d.status_description != description {
            change = Some(DeploymentChange {
                deployment_id: d.id.clone(),
                status: Some((DeploymentStatus::Running, description.to_string())),
                ..Default::default()
            });
        }
    }
    Decision {
        change,
        revert_to: None,
        eval: grew,
        next_check,
    }
}

#[cfg(test)]
mod tests;
