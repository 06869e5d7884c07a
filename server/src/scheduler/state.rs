//! `State`: the read-only, point-in-time view of the cluster the scheduler works on.
//! The server's store snapshot implements it (`crate::scheduler_state`), as do the
//! tests' harness and `orch job plan`'s dry run.

use std::sync::Arc;

use orch_common::ids::{JobId, NodeId};
use orch_common::model::{
    Allocation, Deployment, Evaluation, Job, Node, NodeAllocated, SchedulerConfiguration,
};

/// A read-only, point-in-time view of the cluster.
pub trait State {
    /// The state index this snapshot was taken at.
    fn index(&self) -> u64;
    fn job(&self, id: &JobId) -> Option<Job>;
    /// Every node (the scheduler filters by datacenter, status, eligibility).
    fn nodes(&self) -> Vec<Node>;
    fn node(&self, id: &NodeId) -> Option<Node>;
    /// `nodes()` without copying them: the store shares one decoded list between
    /// snapshots, so an evaluation over 10,000 nodes clones none. (Additive; the
    /// default wraps `nodes()`.)
    fn shared_nodes(&self) -> Arc<Vec<Node>> {
        Arc::new(self.nodes())
    }
    /// All allocations of a job, terminal ones included.
    fn allocs_by_job(&self, job_id: &JobId) -> Vec<Allocation>;
    /// Allocations on a node that still use its resources (client status not terminal).
    fn allocs_by_node(&self, node_id: &NodeId) -> Vec<Allocation>;
    /// A stored version of a job: what allocations placed at that version run. Used to
    /// tell in-place updates from destructive ones when allocations do not embed their
    /// job. (Additive; the default knows no versions, which makes updates destructive.)
    fn job_version(&self, _id: &JobId, _version: u64) -> Option<Job> {
        None
    }
    /// The job's newest evaluation with status `blocked`, if any, so the scheduler keeps
    /// one blocked evaluation per job. (Additive; the default finds none, and the
    /// broker's dedup then cancels the older one.)
    fn blocked_eval(&self, _job_id: &JobId) -> Option<Evaluation> {
        None
    }
    /// The job's newest deployment, whatever its status. (Additive; the default knows
    /// none, which rolls every update out at once.)
    fn latest_deployment(&self, _job_id: &JobId) -> Option<Deployment> {
        None
    }
    /// The cluster-wide scheduler configuration in force at this snapshot.
    fn scheduler_config(&self) -> SchedulerConfiguration {
        SchedulerConfiguration::default()
    }
    /// What a node's allocations that hold resources (`Allocation::holds_resources`) use,
    /// summed. The store keeps this per node as it applies commands, so scoring a node
    /// costs no allocation reads. (Additive; the default sums `allocs_by_node`.)
    fn node_allocated(&self, node_id: &NodeId) -> NodeAllocated {
        let mut sum = NodeAllocated::default();
        for a in self.allocs_by_node(node_id) {
            if a.holds_resources() {
                sum.add(&a);
            }
        }
        sum
    }
}
