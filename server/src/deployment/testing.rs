//! Command helpers of the deployment tests (watcher, state and HTTP): the plan that
//! stores a deployment with its allocations, and the client report that makes one
//! healthy or not. The deployments and allocations come from `orch_common::mock`.

use std::collections::BTreeMap;

use orch_common::api::{AllocClientUpdate, DeploymentHealthReport};
use orch_common::model::{Allocation, ClientStatus, Deployment};

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
            id: alloc_id.into(),
            client_status: ClientStatus::Running,
            client_description: String::new(),
            task_states: BTreeMap::new(),
            checks: Default::default(),
            deployment_health: Some(DeploymentHealthReport {
                deployment_id: deployment_id.into(),
                healthy,
                timestamp,
                description: String::new(),
            }),
        }],
        evals: vec![],
    }
}
