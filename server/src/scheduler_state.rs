//! The store's `Snapshot` as the pure scheduler's read-only `State`: the one place the
//! two meet, so that neither `state/` nor `scheduler/` imports the other.

use std::sync::Arc;

use orch_common::ids::{JobId, NodeId};
use orch_common::model::{
    Allocation, Deployment, Evaluation, Job, Node, NodeAllocated, SchedulerConfiguration,
};

use crate::scheduler::State;
use crate::state::Snapshot;

impl State for Snapshot {
    fn index(&self) -> u64 {
        Snapshot::index(self)
    }
    fn job(&self, id: &JobId) -> Option<Job> {
        Snapshot::job(self, id)
    }
    fn nodes(&self) -> Vec<Node> {
        Snapshot::nodes(self)
    }
    fn node(&self, id: &NodeId) -> Option<Node> {
        Snapshot::node(self, id)
    }
    fn shared_nodes(&self) -> Arc<Vec<Node>> {
        Snapshot::shared_nodes(self)
    }
    fn node_allocated(&self, node_id: &NodeId) -> NodeAllocated {
        Snapshot::node_allocated(self, node_id)
    }
    fn allocs_by_job(&self, job_id: &JobId) -> Vec<Allocation> {
        Snapshot::allocs_by_job(self, job_id)
    }
    fn allocs_by_node(&self, node_id: &NodeId) -> Vec<Allocation> {
        Snapshot::allocs_by_node(self, node_id)
    }
    fn job_version(&self, id: &JobId, version: u64) -> Option<Job> {
        Snapshot::job_version(self, id, version)
    }
    fn blocked_eval(&self, job_id: &JobId) -> Option<Evaluation> {
        Snapshot::blocked_eval(self, job_id)
    }
    fn scheduler_config(&self) -> SchedulerConfiguration {
        Snapshot::scheduler_config(self)
    }
    fn latest_deployment(&self, job_id: &JobId) -> Option<Deployment> {
        Snapshot::latest_deployment(self, job_id)
    }
}
