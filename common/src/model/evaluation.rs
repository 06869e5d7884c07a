//! Evaluations: a request to reconcile one job with the cluster, and why it was made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{EvalId, JobId, NodeId};

use super::allocation::AllocMetric;
use super::job::Job;
use super::job_type::JobType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EvalStatus {
    #[default]
    Pending,
    Blocked,
    Complete,
    Failed,
    Canceled,
}

impl EvalStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EvalStatus::Complete | EvalStatus::Failed | EvalStatus::Canceled
        )
    }
}

/// Why an evaluation was created.
pub mod triggers {
    pub const JOB_REGISTER: &str = "job-register";
    pub const JOB_DEREGISTER: &str = "job-deregister";
    pub const NODE_UPDATE: &str = "node-update";
    pub const ALLOC_STOP: &str = "alloc-stop";
    pub const NODE_DRAIN: &str = "node-drain";
    pub const ALLOC_FAILURE: &str = "alloc-failure";
    pub const QUEUED_ALLOCS: &str = "queued-allocs";
    pub const RETRY_FAILED_ALLOC: &str = "alloc-failure-retry";
    /// Allocations on a disconnected node reach their `disconnect.lost_after`.
    pub const DISCONNECT_TIMEOUT: &str = "disconnect-timeout";
    pub const MAX_PLAN_ATTEMPTS: &str = "max-plan-attempts";
    /// A job lost allocations to a higher-priority one and places them again.
    pub const PREEMPTION: &str = "preemption";
    /// The deployment watcher: instances became healthy (the next batch may go),
    /// canaries were promoted, or a deployment failed or was acted on by a user.
    pub const DEPLOYMENT_WATCHER: &str = "deployment-watcher";
    /// A system job's rolling update goes on with its next `max_parallel` nodes,
    /// `stagger` after the last batch.
    pub const ROLLING_UPDATE: &str = "rolling-update";
}

/// A request to reconcile one job with the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub id: EvalId,
    pub priority: u8,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub triggered_by: String,
    pub job_id: JobId,
    #[serde(default)]
    pub job_modify_index: u64,
    #[serde(default)]
    pub node_id: Option<NodeId>,
    #[serde(default)]
    pub status: EvalStatus,
    #[serde(default)]
    pub status_description: String,
    /// Not before this time (ms since the epoch): delayed reschedules.
    #[serde(default)]
    pub wait_until: Option<u64>,
    #[serde(default)]
    pub previous_eval: Option<EvalId>,
    #[serde(default)]
    pub next_eval: Option<EvalId>,
    /// The blocked evaluation this one left behind for unplaced instances.
    #[serde(default)]
    pub blocked_eval: Option<EvalId>,
    /// Group -> why it could not be placed.
    #[serde(default)]
    pub failed_tg_allocs: BTreeMap<String, AllocMetric>,
    /// Group -> instances still waiting for room.
    #[serde(default)]
    pub queued_allocations: BTreeMap<String, u32>,
    /// Node classes proven infeasible for the job (skipped when unblocking).
    #[serde(default)]
    pub class_eligibility: BTreeMap<String, bool>,
    /// Snapshot index the scheduler worked from.
    #[serde(default)]
    pub snapshot_index: u64,
    #[serde(default)]
    pub create_time: u64,
    #[serde(default)]
    pub modify_time: u64,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

impl Evaluation {
    pub fn for_job(job: &Job, triggered_by: &str) -> Evaluation {
        let now = crate::ids::now_ms();
        Evaluation {
            id: EvalId::generate(),
            priority: job.priority,
            job_type: job.job_type,
            triggered_by: triggered_by.to_string(),
            job_id: job.id.clone(),
            job_modify_index: job.job_modify_index,
            node_id: None,
            status: EvalStatus::Pending,
            status_description: String::new(),
            wait_until: None,
            previous_eval: None,
            next_eval: None,
            blocked_eval: None,
            failed_tg_allocs: BTreeMap::new(),
            queued_allocations: BTreeMap::new(),
            class_eligibility: BTreeMap::new(),
            snapshot_index: 0,
            create_time: now,
            modify_time: now,
            create_index: 0,
            modify_index: 0,
        }
    }
}
