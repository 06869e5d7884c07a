//! Plans: what the scheduler asks the plan applier to commit, and what was committed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{EvalId, NodeId};

use super::allocation::Allocation;
use super::deployment::{Deployment, DeploymentStatusUpdate};
use super::job::Job;

/// What the scheduler wants changed, submitted to the plan applier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub eval_id: EvalId,
    pub priority: u8,
    /// The job version the placements are for.
    pub job: Option<Job>,
    /// Node id -> allocations to stop/evict there (desired_status set).
    pub node_update: BTreeMap<NodeId, Vec<Allocation>>,
    /// Node id -> allocations to place (new or updated in place).
    pub node_allocation: BTreeMap<NodeId, Vec<Allocation>>,
    /// Commit only if everything fits.
    #[serde(default)]
    pub all_at_once: bool,
    /// Snapshot index the plan was computed on.
    pub snapshot_index: u64,
    /// Node id -> lower-priority allocations evicted to make room (desired `evict`).
    #[serde(default)]
    pub node_preemptions: BTreeMap<NodeId, Vec<Allocation>>,
    /// What the scheduler decided per group, for `orch job plan` and the eval.
    #[serde(default)]
    pub annotations: PlanAnnotations,
    /// A deployment this plan creates (the new version's rollout), stored with it.
    #[serde(default)]
    pub deployment: Option<Deployment>,
    /// Status changes of existing deployments (an older version's, cancelled).
    #[serde(default)]
    pub deployment_updates: Vec<DeploymentStatusUpdate>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.node_update.values().all(|v| v.is_empty())
            && self.node_allocation.values().all(|v| v.is_empty())
            && self.node_preemptions.values().all(|v| v.is_empty())
            && self.deployment.is_none()
            && self.deployment_updates.is_empty()
    }
}

/// The scheduler's decisions, by group, as shown by `orch job plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlanAnnotations {
    pub desired_tg_updates: BTreeMap<String, DesiredUpdates>,
}

/// How many instances of a group the plan places, stops, updates, ... .
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DesiredUpdates {
    pub place: u32,
    pub stop: u32,
    pub ignore: u32,
    pub migrate: u32,
    pub in_place_update: u32,
    pub destructive_update: u32,
    pub canary: u32,
    pub preemptions: u32,
    pub reschedule_now: u32,
    pub reschedule_later: u32,
}

/// What the plan applier committed of a plan: which nodes' parts of it. (The
/// allocations themselves go into the commit; the scheduler only needs to know
/// whether all of its plan made it.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlanResult {
    /// Nodes whose stops (`Plan::node_update`) committed.
    pub updated_nodes: BTreeSet<NodeId>,
    /// Nodes whose placements (`Plan::node_allocation`, with their evictions)
    /// committed.
    pub allocated_nodes: BTreeSet<NodeId>,
    /// Non-zero when some nodes were rejected: refresh the snapshot to at least this.
    pub refresh_index: u64,
    /// Index of the commit (0 when nothing was committed).
    pub alloc_index: u64,
}

impl PlanResult {
    /// True when every node of the plan was committed.
    pub fn is_full_commit(&self, plan: &Plan) -> bool {
        let want: usize = plan.node_update.len() + plan.node_allocation.len();
        let got: usize = self.updated_nodes.len() + self.allocated_nodes.len();
        want == got
    }
}
