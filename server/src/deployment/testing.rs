//! Command helpers of the deployment tests (watcher, state and HTTP): the plan that
//! stores a deployment with its allocations, and the client report that makes one
//! healthy or not. The deployments and allocations come from `orch_common::mock`.

use std::collections::BTreeMap;

use orch_common::api::{AllocClientUpdate, DeploymentHealthReport};
use orch_common::mock::{deployment_group, AllocBuilder, DeploymentBuilder};
use orch_common::model::{Allocation, ClientStatus, Deployment, DeploymentGroup, Job};

use crate::state::Command;

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

// The HTTP tests' shorthands, kept until those tests (rewritten with the HTTP layer)
// use `orch_common::mock` themselves.

/// `mock::deployment_group`.
pub fn group(total: u32, canaries: u32) -> DeploymentGroup {
    deployment_group(total, canaries)
}

/// Deployment `id` of `job`'s current version, with only group "web", as given.
pub fn deployment(id: &str, job: &Job, web: DeploymentGroup) -> Deployment {
    DeploymentBuilder::new(job)
        .id(id)
        .groups([("web", web)])
        .build()
}

/// Allocation `id` (instance `index` of group "web") of `job` on node "n1", made by
/// evaluation "eval" and placed by deployment `deployment_id` (a canary when `canary`).
pub fn placed(id: &str, job: &Job, index: u32, deployment_id: &str, canary: bool) -> Allocation {
    let a = AllocBuilder::new(job)
        .id(id)
        .group("web")
        .node_id("n1")
        .index(index)
        .eval_id("eval")
        .deployment(deployment_id);
    if canary {
        a.canary().build()
    } else {
        a.build()
    }
}
