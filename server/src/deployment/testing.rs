//! Test fixtures for deployments, shared by the watcher, state and HTTP tests: a
//! deployment of a job version, its allocations, the plan that stores them and the
//! client reports that make them healthy or not.

use std::collections::BTreeMap;
use std::time::Duration;

use orch_common::api::{AllocClientUpdate, DeploymentHealthReport};
use orch_common::model::{
    AllocDeploymentStatus, Allocation, ClientStatus, Deployment, DeploymentGroup, DeploymentStatus,
    Job,
};

use crate::state::tests::mock_alloc;
use crate::state::Command;

/// A group of `total` instances with `canaries` canaries and a 10-minute progress
/// deadline.
pub fn group(total: u32, canaries: u32) -> DeploymentGroup {
    DeploymentGroup {
        desired_total: total,
        desired_canaries: canaries,
        progress_deadline: Duration::from_secs(600),
        ..Default::default()
    }
}

/// Deployment `id` of `job`'s current version, group "web" as given.
pub fn deployment(id: &str, job: &Job, web: DeploymentGroup) -> Deployment {
    Deployment {
        id: id.to_string(),
        job_id: job.id.clone(),
        job_version: job.version,
        job_modify_index: job.job_modify_index,
        job_create_index: job.create_index,
        status: DeploymentStatus::Running,
        status_description: orch_common::model::deployment_desc::RUNNING.to_string(),
        task_groups: BTreeMap::from([("web".to_string(), web)]),
        eval_id: String::new(),
        create_time: 0,
        modify_time: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// Allocation `id` (instance `index`) of `job` on node "n1", placed by deployment
/// `deployment_id` (a canary when `canary`).
pub fn placed(id: &str, job: &Job, index: u32, deployment_id: &str, canary: bool) -> Allocation {
    let mut a = mock_alloc(id, job, "n1", index);
    a.deployment_id = Some(deployment_id.to_string());
    if canary {
        a.deployment_status = Some(AllocDeploymentStatus {
            healthy: None,
            timestamp: 0,
            canary: true,
        });
    }
    a
}

/// The plan that stores `deployment` with `allocs`.
pub fn plan(deployment: Option<Deployment>, allocs: Vec<Allocation>) -> Command {
    Command::ApplyPlan {
        allocs,
        stopped: vec![],
        evals: vec![],
        deployment,
        deployment_updates: vec![],
    }
}

/// A client report: `alloc_id` running, with its health verdict in `deployment_id`.
pub fn health(alloc_id: &str, deployment_id: &str, healthy: bool, timestamp: u64) -> Command {
    Command::UpdateAllocsFromClient {
        updates: vec![AllocClientUpdate {
            id: alloc_id.to_string(),
            client_status: ClientStatus::Running,
            client_description: String::new(),
            task_states: BTreeMap::new(),
            checks: Default::default(),
            deployment_health: Some(DeploymentHealthReport {
                deployment_id: deployment_id.to_string(),
                healthy,
                timestamp,
                description: String::new(),
            }),
        }],
        evals: vec![],
    }
}
