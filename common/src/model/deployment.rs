//! Deployments: the rollout of one job version, its groups' progress and its status.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, DeploymentId, EvalId, JobId};

use crate::duration::human;

/// Where a deployment stands.
///
/// ```text
///   running ──(pause)──> paused ──(resume)──> running
///   running|paused ──> successful   every group has its healthy instances (and is
///                                   promoted if it has canaries); the version is stable
///                 ──> failed        an unhealthy instance, the progress deadline, or
///                                   `orch deployment fail` (auto_revert registers the
///                                   last stable version again)
///                 ──> cancelled     a newer job version, or the job stopped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    #[default]
    Running,
    Paused,
    Failed,
    Successful,
    Cancelled,
}

impl DeploymentStatus {
    /// Running or paused: still rolling out (or waiting to).
    pub fn is_active(&self) -> bool {
        matches!(self, DeploymentStatus::Running | DeploymentStatus::Paused)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentStatus::Running => "running",
            DeploymentStatus::Paused => "paused",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Successful => "successful",
            DeploymentStatus::Cancelled => "cancelled",
        }
    }
}

/// The words deployments are described with (`status_description`).
pub mod deployment_desc {
    pub const RUNNING: &str = "Deployment is running";
    pub const RUNNING_NEEDS_PROMOTION: &str = "Deployment is running but requires manual promotion";
    pub const RUNNING_AUTO_PROMOTION: &str = "Deployment is running pending automatic promotion";
    pub const PAUSED: &str = "Deployment is paused";
    pub const SUCCESSFUL: &str = "Deployment completed successfully";
    pub const FAILED_ALLOCATIONS: &str = "Failed due to unhealthy allocations";
    pub const FAILED_DEADLINE: &str = "Failed due to progress deadline";
    pub const FAILED_BY_USER: &str = "Deployment marked as failed";
    pub const CANCELLED_NEWER_JOB: &str = "Cancelled due to newer version of job";
    pub const CANCELLED_JOB_STOPPED: &str = "Cancelled because job is stopped";

    /// A failure that registered `version` again.
    pub fn rolling_back(why: &str, version: u64) -> String {
        format!("{why} - rolling back to job version {version}")
    }

    /// A failure with `auto_revert` and no stable version to go back to.
    pub fn no_stable_version(why: &str) -> String {
        format!("{why} - no stable job version to auto revert to")
    }
}

/// The rollout of one job version: created by the scheduler when a service job with an
/// `[update]` policy gets a new version, driven by the deployment watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: DeploymentId,
    pub job_id: JobId,
    pub job_version: u64,
    /// The job's `job_modify_index` and `create_index` at that version.
    #[serde(default)]
    pub job_modify_index: u64,
    #[serde(default)]
    pub job_create_index: u64,
    #[serde(default)]
    pub status: DeploymentStatus,
    #[serde(default)]
    pub status_description: String,
    /// Group -> its part of the rollout.
    #[serde(default)]
    pub task_groups: BTreeMap<String, DeploymentGroup>,
    /// The evaluation whose plan created it.
    #[serde(default)]
    pub eval_id: EvalId,
    #[serde(default)]
    pub create_time: u64,
    #[serde(default)]
    pub modify_time: u64,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

impl Deployment {
    /// True when a group has canaries that still wait for promotion.
    pub fn requires_promotion(&self) -> bool {
        self.task_groups
            .values()
            .any(|g| g.desired_canaries > 0 && !g.promoted)
    }

    /// True when `group` has canaries still waiting for promotion.
    pub fn group_awaits_promotion(&self, group: &str) -> bool {
        self.task_groups
            .get(group)
            .is_some_and(|g| g.desired_canaries > 0 && !g.promoted)
    }
}

/// One group's part of a deployment. The counters are kept by the state store from
/// the allocations that carry the deployment's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeploymentGroup {
    #[serde(default)]
    pub auto_revert: bool,
    #[serde(default)]
    pub auto_promote: bool,
    /// Its canaries were promoted (always false without canaries).
    #[serde(default)]
    pub promoted: bool,
    #[serde(with = "human", default)]
    pub progress_deadline: Duration,
    /// The deployment fails unless an instance becomes healthy by then (ms since the
    /// epoch; reset by each healthy instance). None: no deadline.
    #[serde(default)]
    pub require_progress_by: Option<u64>,
    #[serde(default)]
    pub desired_canaries: u32,
    #[serde(default)]
    pub desired_total: u32,
    /// Ids of the canaries placed (kept after promotion).
    #[serde(default)]
    pub placed_canaries: Vec<AllocId>,
    #[serde(default)]
    pub placed_allocs: u32,
    #[serde(default)]
    pub healthy_allocs: u32,
    #[serde(default)]
    pub unhealthy_allocs: u32,
}

/// A status change of a deployment, as a plan or the watcher asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatusUpdate {
    pub deployment_id: DeploymentId,
    pub status: DeploymentStatus,
    pub status_description: String,
}
