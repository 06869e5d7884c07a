//! Allocations: one instance of a task group placed on a node, with the states of its
//! tasks as the client reports them and the metrics of its placement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, DeploymentId, EvalId, JobId, NodeId};

use super::job::Job;
use super::resources::AllocatedResources;
use super::service::CheckStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DesiredStatus {
    #[default]
    Run,
    Stop,
    Evict,
}

impl DesiredStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DesiredStatus::Run => "run",
            DesiredStatus::Stop => "stop",
            DesiredStatus::Evict => "evict",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    #[default]
    Pending,
    Running,
    Complete,
    Failed,
    Lost,
}

impl ClientStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ClientStatus::Complete | ClientStatus::Failed | ClientStatus::Lost
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ClientStatus::Pending => "pending",
            ClientStatus::Running => "running",
            ClientStatus::Complete => "complete",
            ClientStatus::Failed => "failed",
            ClientStatus::Lost => "lost",
        }
    }
}

/// What an allocation carries of the failures before it in its chain of
/// replacements (`previous_allocation`), as Nomad's `RescheduleTracker`: so that the
/// reschedule policy's attempts and backoff still count failures whose allocations
/// were garbage collected.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RescheduleTracker {
    /// How many allocations before this one failed (saturating): what the backoff
    /// (`delay_function`) grows with.
    pub failures: u32,
    /// The newest of those failures, oldest first: only those that may still count
    /// against a limited policy's `attempts` within its `interval`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<RescheduleEvent>,
}

/// One failed allocation of a chain of replacements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescheduleEvent {
    pub alloc_id: AllocId,
    pub node_id: NodeId,
    /// When it failed (ms since the epoch).
    pub failed_at: u64,
}

/// One instance of a task group placed on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: AllocId,
    /// `job.group[index]`.
    pub name: String,
    pub index: u32,
    pub namespace: String,
    pub eval_id: EvalId,
    pub job_id: JobId,
    pub job_version: u64,
    /// The job as it was when placed; served to clients, omitted in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<Job>>,
    pub group: String,
    pub node_id: NodeId,
    #[serde(default)]
    pub node_name: String,
    pub resources: AllocatedResources,
    #[serde(default)]
    pub desired_status: DesiredStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub desired_description: String,
    #[serde(default)]
    pub client_status: ClientStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_description: String,
    #[serde(default)]
    pub task_states: BTreeMap<String, TaskState>,
    /// Health checks of the group's services, keyed `SERVICE/CHECK` (reported by the
    /// client).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, CheckStatus>,
    #[serde(default)]
    pub previous_allocation: Option<AllocId>,
    #[serde(default)]
    pub next_allocation: Option<AllocId>,
    /// The failures before this allocation in its chain of replacements, carried from
    /// the allocation it replaces; `None` for a first placement (and for allocations
    /// placed before trackers were carried, whose chain is read instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_tracker: Option<RescheduleTracker>,
    /// What the server asked to happen to the allocation besides its desired status.
    #[serde(default, skip_serializing_if = "DesiredTransition::is_empty")]
    pub desired_transition: DesiredTransition,
    /// The deployment that placed (or updated in place) this allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<DeploymentId>,
    /// Its health within that deployment, and whether it is an unpromoted canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// Placement scores and how many nodes were looked at.
    #[serde(default)]
    pub metrics: Option<AllocMetric>,
    #[serde(default)]
    pub create_time: u64,
    #[serde(default)]
    pub modify_time: u64,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

impl Allocation {
    /// True when the allocation holds node resources for scheduling purposes: the
    /// server still wants it and the client has not finished it (Nomad's
    /// "non-terminal"). The scheduler and the plan applier both count by this rule, so
    /// they agree on what fits.
    pub fn holds_resources(&self) -> bool {
        self.desired_status == DesiredStatus::Run && !self.client_status.is_terminal()
    }

    /// Neither the server wants it nor the client runs it any more.
    pub fn is_terminal(&self) -> bool {
        self.client_status.is_terminal()
            || (self.desired_status != DesiredStatus::Run
                && self.client_status != ClientStatus::Running)
    }

    /// Uses node resources: not yet terminal on the client and not stopped and pending.
    pub fn uses_resources(&self) -> bool {
        !self.client_status.is_terminal()
    }

    /// True when this allocation is a canary of its deployment not yet promoted.
    pub fn is_canary(&self) -> bool {
        self.deployment_status.as_ref().is_some_and(|d| d.canary)
    }

    /// Its health in its deployment: `Some(true)` healthy, `Some(false)` unhealthy,
    /// `None` not decided yet (or not part of a deployment).
    pub fn deployment_health(&self) -> Option<bool> {
        self.deployment_status.as_ref().and_then(|d| d.healthy)
    }
}

/// An allocation's standing in the deployment that placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllocDeploymentStatus {
    /// Set once by the client's health tracker (or by hand with `health_check =
    /// "manual"`): healthy for `min_healthy_time` within `healthy_deadline`, or not.
    #[serde(default)]
    pub healthy: Option<bool>,
    /// When the health was decided (ms since the epoch).
    #[serde(default)]
    pub timestamp: u64,
    /// Placed beside the old version as a canary; cleared when the deployment is
    /// promoted (the canary then counts as a regular instance).
    #[serde(default)]
    pub canary: bool,
}

/// A change asked of a running allocation that the scheduler carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DesiredTransition {
    /// Replace it with a new allocation elsewhere, then stop it (`orch alloc stop`).
    #[serde(default)]
    pub migrate: bool,
}

impl DesiredTransition {
    pub fn is_empty(&self) -> bool {
        !self.migrate
    }
}

/// A task's lifecycle, as the client reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskStateKind {
    #[default]
    Pending,
    Running,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskState {
    pub state: TaskStateKind,
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub events: Vec<TaskEvent>,
}

/// Something that happened to a task: received, started, exited, restarting, killed, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Milliseconds since the epoch.
    pub time: u64,
    /// `Received`, `Task Setup`, `Started`, `Terminated`, `Restarting`, `Killing`,
    /// `Killed`, `OOM Killed`, `Not Restarting`, `Driver Failure`, ...
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
}

/// How one placement went: nodes looked at, why nodes were dropped, scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AllocMetric {
    pub nodes_evaluated: u32,
    pub nodes_filtered: u32,
    pub nodes_in_pool: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes_available: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_filtered: BTreeMap<String, u32>,
    /// Reason (e.g. `missing driver "container"`, `${attr.kernel.name} = linux`) -> nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraint_filtered: BTreeMap<String, u32>,
    pub nodes_exhausted: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_exhausted: BTreeMap<String, u32>,
    /// Dimension (`cpu`, `memory`, `ports`) -> nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimension_exhausted: BTreeMap<String, u32>,
    /// Further instances of the group that failed the same way.
    pub coalesced_failures: u32,
    /// Node id -> final score, for the nodes scored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<NodeId, f64>,
}

impl AllocMetric {
    /// One line of words, e.g. "3 nodes evaluated: 2 exhausted on memory, 1 filtered by
    /// missing driver \"container\"".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.nodes_evaluated == 0 && self.nodes_in_pool == 0 {
            return "no nodes are registered in the job's datacenters".to_string();
        }
        if self.nodes_evaluated == 0 {
            return "no node in the job's datacenters is ready and eligible".to_string();
        }
        for (dim, n) in &self.dimension_exhausted {
            parts.push(format!("{n} exhausted on {dim}"));
        }
        for (reason, n) in &self.constraint_filtered {
            parts.push(format!("{n} filtered by {reason}"));
        }
        let noun = if self.nodes_evaluated == 1 {
            "node"
        } else {
            "nodes"
        };
        if parts.is_empty() {
            format!("{} {noun} evaluated, none feasible", self.nodes_evaluated)
        } else {
            format!(
                "{} {noun} evaluated: {}",
                self.nodes_evaluated,
                parts.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_their_json_names() {
        let json = |v: serde_json::Value| v.as_str().map(str::to_string);
        for s in [
            DesiredStatus::Run,
            DesiredStatus::Stop,
            DesiredStatus::Evict,
        ] {
            assert_eq!(
                json(serde_json::to_value(s).unwrap()).as_deref(),
                Some(s.as_str())
            );
        }
        for s in [
            ClientStatus::Pending,
            ClientStatus::Running,
            ClientStatus::Complete,
            ClientStatus::Failed,
            ClientStatus::Lost,
        ] {
            assert_eq!(
                json(serde_json::to_value(s).unwrap()).as_deref(),
                Some(s.as_str())
            );
        }
    }

    #[test]
    fn an_allocation_omits_empty_details_and_reads_back_the_same() {
        let stored = serde_json::json!({
            "id": "a1", "name": "web.web[0]", "index": 0, "namespace": "default",
            "eval_id": "e1", "job_id": "web", "job_version": 0, "group": "web",
            "node_id": "n1", "resources": {"tasks": {"t": {"cpu": 100, "memory": 64}}},
            "metrics": {"nodes_evaluated": 1, "nodes_filtered": 0, "nodes_in_pool": 1,
                        "nodes_exhausted": 0, "coalesced_failures": 0}
        });
        let alloc: Allocation = serde_json::from_value(stored).expect("minimal allocation");
        let json = serde_json::to_value(&alloc).expect("encode");
        for gone in ["desired_description", "client_description"] {
            assert!(json.get(gone).is_none(), "{gone} in {json}");
        }
        assert!(json["resources"].get("ports").is_none(), "{json}");
        assert_eq!(
            json["metrics"].as_object().map(|m| m.len()),
            Some(5),
            "{json}"
        );
        // Named in the interface: always present, even when empty.
        for kept in ["task_states", "previous_allocation", "next_allocation"] {
            assert!(json.get(kept).is_some(), "{kept} missing from {json}");
        }
        let back: Allocation = serde_json::from_value(json).expect("decode");
        assert_eq!(back, alloc);
    }

    #[test]
    fn alloc_metric_describes_failures_in_words() {
        let mut m = AllocMetric {
            nodes_evaluated: 3,
            nodes_in_pool: 3,
            ..Default::default()
        };
        m.dimension_exhausted.insert("memory".into(), 2);
        m.constraint_filtered
            .insert("missing driver \"container\"".into(), 1);
        assert_eq!(
            m.describe(),
            "3 nodes evaluated: 2 exhausted on memory, 1 filtered by missing driver \"container\""
        );
    }
}
