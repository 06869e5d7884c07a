//! The users' deployment actions (promote, fail, pause, resume, allocation health) as
//! `DeploymentChange`s, checked against the deployment as read: pure, like `decide`,
//! whose failure (and auto-revert) `fail` shares.

use std::collections::BTreeSet;

use orch_common::ids::{AllocId, DeploymentId};
use orch_common::model::{deployment_desc, Allocation, Deployment, DeploymentStatus, Job};

use super::decide;
use crate::state::command::DeploymentChange;

/// Why an action is refused (an HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("deployment {id} is {status}")]
    NotActive {
        id: DeploymentId,
        status: &'static str,
    },
    #[error("deployment {id} has no group {group:?} (its groups: {groups})")]
    UnknownGroup {
        id: DeploymentId,
        group: String,
        groups: String,
    },
    #[error("deployment {id} has no canaries to promote{}", group_suffix(.group))]
    NoCanaries {
        id: DeploymentId,
        group: Option<String>,
    },
    #[error("deployment {id}: group {group:?} has {healthy} of {desired} canaries healthy; promote once they all are")]
    CanariesNotHealthy {
        id: DeploymentId,
        group: String,
        healthy: u32,
        desired: u32,
    },
    #[error("deployment {id} is already {status}")]
    AlreadyThere {
        id: DeploymentId,
        status: &'static str,
    },
    #[error("allocation-health lists no allocations")]
    NoAllocations,
    #[error("allocation {alloc_id} is not part of deployment {id}")]
    NotInDeployment { id: DeploymentId, alloc_id: AllocId },
    #[error("allocation {alloc_id} is listed as both healthy and unhealthy")]
    BothHealthyAndUnhealthy { alloc_id: AllocId },
}

fn group_suffix(group: &Option<String>) -> String {
    match group {
        Some(g) => format!(" in group {g:?}"),
        None => String::new(),
    }
}

fn require_active(d: &Deployment) -> Result<(), ActionError> {
    if d.status.is_active() {
        Ok(())
    } else {
        Err(ActionError::NotActive {
            id: d.id.clone(),
            status: d.status.as_str(),
        })
    }
}

/// Promotes the canaries of `groups` (every group waiting for promotion when empty);
/// each must have all its canaries healthy.
pub fn promote(
    d: &Deployment,
    groups: &[String],
    allocs: &[Allocation],
) -> Result<DeploymentChange, ActionError> {
    require_active(d)?;
    let names: Vec<String> = if groups.is_empty() {
        let awaiting: Vec<String> = d
            .task_groups
            .iter()
            .filter(|(_, g)| g.desired_canaries > 0 && !g.promoted)
            .map(|(n, _)| n.clone())
            .collect();
        if awaiting.is_empty() {
            return Err(ActionError::NoCanaries {
                id: d.id.clone(),
                group: None,
            });
        }
        awaiting
    } else {
        let mut seen = BTreeSet::new();
        groups
            .iter()
            .filter(|g| seen.insert((*g).clone()))
            .cloned()
            .collect()
    };
    for name in &names {
        let Some(g) = d.task_groups.get(name) else {
            return Err(ActionError::UnknownGroup {
                id: d.id.clone(),
                group: name.clone(),
                groups: d.task_groups.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        if g.desired_canaries == 0 || g.promoted {
            return Err(ActionError::NoCanaries {
                id: d.id.clone(),
                group: Some(name.clone()),
            });
        }
        if !decide::canaries_healthy(d, name, allocs) {
            let healthy = allocs
                .iter()
                .filter(|a| {
                    &a.group == name
                        && a.deployment_id.as_ref() == Some(&d.id)
                        && a.is_canary()
                        && a.deployment_health() == Some(true)
                })
                .count() as u32;
            return Err(ActionError::CanariesNotHealthy {
                id: d.id.clone(),
                group: name.clone(),
                healthy,
                desired: g.desired_canaries,
            });
        }
    }
    let still_awaiting = d
        .task_groups
        .iter()
        .any(|(n, g)| g.desired_canaries > 0 && !g.promoted && !names.contains(n));
    let description = if d.status == DeploymentStatus::Paused {
        deployment_desc::PAUSED
    } else if still_awaiting {
        deployment_desc::RUNNING_NEEDS_PROMOTION
    } else {
        deployment_desc::RUNNING
    };
    Ok(DeploymentChange {
        deployment_id: d.id.clone(),
        status: Some((d.status, description.to_string())),
        promote: names,
        ..Default::default()
    })
}

/// Fails the deployment by hand; with `auto_revert` on any group the newest stable
/// older version is registered again, exactly as when the watcher fails it.
pub fn fail(
    d: &Deployment,
    job: Option<&Job>,
    versions: &[Job],
) -> Result<(DeploymentChange, Option<Job>), ActionError> {
    require_active(d)?;
    Ok(decide::fail(
        d,
        deployment_desc::FAILED_BY_USER,
        &BTreeSet::new(),
        job,
        versions,
    ))
}

/// Pauses (`pause = true`) or resumes a deployment.
pub fn pause(d: &Deployment, pause: bool) -> Result<DeploymentChange, ActionError> {
    require_active(d)?;
    let (status, description) = if pause {
        (DeploymentStatus::Paused, deployment_desc::PAUSED)
    } else {
        (DeploymentStatus::Running, deployment_desc::RUNNING)
    };
    if d.status == status {
        return Err(ActionError::AlreadyThere {
            id: d.id.clone(),
            status: status.as_str(),
        });
    }
    Ok(DeploymentChange {
        deployment_id: d.id.clone(),
        status: Some((status, description.to_string())),
        ..Default::default()
    })
}

/// Sets allocations' health by hand. Every id must be an allocation of this deployment
/// (full ids, resolved by the caller).
pub fn alloc_health(
    d: &Deployment,
    healthy: &[AllocId],
    unhealthy: &[AllocId],
    allocs: &[Allocation],
) -> Result<DeploymentChange, ActionError> {
    require_active(d)?;
    if healthy.is_empty() && unhealthy.is_empty() {
        return Err(ActionError::NoAllocations);
    }
    if let Some(both) = healthy.iter().find(|id| unhealthy.contains(id)) {
        return Err(ActionError::BothHealthyAndUnhealthy {
            alloc_id: both.clone(),
        });
    }
    let mut out = Vec::new();
    for (ids, verdict) in [(healthy, true), (unhealthy, false)] {
        for id in ids {
            let ours = allocs
                .iter()
                .any(|a| &a.id == id && a.deployment_id.as_ref() == Some(&d.id));
            if !ours {
                return Err(ActionError::NotInDeployment {
                    id: d.id.clone(),
                    alloc_id: id.clone(),
                });
            }
            out.push((id.clone(), verdict));
        }
    }
    Ok(DeploymentChange {
        deployment_id: d.id.clone(),
        alloc_health: out,
        ..Default::default()
    })
}
