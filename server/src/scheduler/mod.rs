//! The scheduler: a pure function from (evaluation, state snapshot, now) to a plan.
//! It depends on `orch_common` and `std` only: no tokio, no SQL, no clock, no unseeded
//! randomness. The worker, the tests and `orch job plan` each provide a `Planner`.

//!
//! Layout (Nomad-style, one concern per file):
//! - `reconcile`: desired job vs. existing allocations -> place/stop/update buckets.
//! - `feasible`: the feasibility chain (datacenter, status, drivers, every constraint
//!   operator, distinct_hosts, distinct_property, resources and ports), class-level
//!   checks cached per computed node class; `version`: `version`/`semver` matching;
//!   `property`: allocations per property value (distinct_property, spread).
//! - `rank`: one normalized score per node (bin-pack or spread fit, job anti-affinity,
//!   reschedule penalty, affinities, spreads) over a bounded, seeded sample.
//! - `preempt`: the least disruptive set of lower-priority allocations to evict when
//!   nothing fits (priority gap 10, per the cluster's preemption configuration).
//! - `context`: the plan under construction and the node usage it implies.
//! - `deployment`: a service job's rollout: the deployment that governs it, the one a
//!   plan creates or cancels, canaries and the rolling limit of destructive updates.
//! - `generic`: `process` for service and batch jobs (and the dispatch);
//!   `system`: system and sysbatch jobs. Every plan carries per-group annotations.
//! - `rng`: the seeded SplitMix64 used for shuffling and port picking; `fxhash`: the
//!   fast hasher of the hot maps keyed by node classes and property values.

use std::sync::Arc;

use orch_common::model::{
    Allocation, Deployment, Evaluation, Job, Node, NodeAllocated, Plan, PlanResult,
    SchedulerConfiguration,
};

pub mod context;
pub mod deployment;
#[cfg(test)]
mod deployment_tests;
pub mod feasible;
pub mod fxhash;
pub mod generic;
#[cfg(test)]
mod placement_tests;
pub mod preempt;
pub mod property;
pub mod rank;
pub mod reconcile;
pub mod rng;
mod system;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod version;

pub use generic::{process, SchedulerError, MAX_PLAN_ATTEMPTS};

/// A read-only, point-in-time view of the cluster.
pub trait State {
    /// The state index this snapshot was taken at.
    fn index(&self) -> u64;
    fn job(&self, id: &str) -> Option<Job>;
    /// Every node (the scheduler filters by datacenter, status, eligibility).
    fn nodes(&self) -> Vec<Node>;
    fn node(&self, id: &str) -> Option<Node>;
    /// `nodes()` without copying them: the store shares one decoded list between
    /// snapshots, so an evaluation over 10,000 nodes clones none. (Additive; the
    /// default wraps `nodes()`.)
    fn shared_nodes(&self) -> Arc<Vec<Node>> {
        Arc::new(self.nodes())
    }
    /// All allocations of a job, terminal ones included.
    fn allocs_by_job(&self, job_id: &str) -> Vec<Allocation>;
    /// Allocations on a node that still use its resources (client status not terminal).
    fn allocs_by_node(&self, node_id: &str) -> Vec<Allocation>;
    /// A stored version of a job: what allocations placed at that version run. Used to
    /// tell in-place updates from destructive ones when allocations do not embed their
    /// job. (Additive; the default knows no versions, which makes updates destructive.)
    fn job_version(&self, _id: &str, _version: u64) -> Option<Job> {
        None
    }
    /// The job's newest evaluation with status `blocked`, if any, so the scheduler keeps
    /// one blocked evaluation per job. (Additive; the default finds none, and the
    /// broker's dedup then cancels the older one.)
    fn blocked_eval(&self, _job_id: &str) -> Option<Evaluation> {
        None
    }
    /// The job's newest deployment, whatever its status. (Additive; the default knows
    /// none, which rolls every update out at once.)
    fn latest_deployment(&self, _job_id: &str) -> Option<Deployment> {
        None
    }
    /// The cluster-wide scheduler configuration in force at this snapshot.
    fn scheduler_config(&self) -> SchedulerConfiguration {
        SchedulerConfiguration::default()
    }
    /// What a node's allocations that hold resources (`Allocation::holds_resources`) use,
    /// summed. The store keeps this per node as it applies commands, so scoring a node
    /// costs no allocation reads. (Additive; the default sums `allocs_by_node`.)
    fn node_allocated(&self, node_id: &str) -> NodeAllocated {
        let mut sum = NodeAllocated::default();
        for a in self.allocs_by_node(node_id) {
            if a.holds_resources() {
                sum.add(&a);
            }
        }
        sum
    }
}

/// Where the scheduler sends its results.
pub trait Planner {
    /// Submits a plan; the answer says what was committed and, when only part was,
    /// gives a fresher snapshot to retry on.
    fn submit_plan(&mut self, plan: Plan) -> Result<(PlanResult, Option<Box<dyn State>>), String>;
    /// Records the evaluation's outcome (status, failed groups, queued counts).
    fn update_eval(&mut self, eval: Evaluation) -> Result<(), String>;
    /// Creates a follow-up evaluation (a blocked one for unplaced instances).
    fn create_eval(&mut self, eval: Evaluation) -> Result<(), String>;
    /// Puts a blocked evaluation back into the blocked set with updated eligibility.
    fn reblock_eval(&mut self, eval: Evaluation) -> Result<(), String>;
}
