//! Jobs: the validated spec a user registers (`Job`), its task groups and tasks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::JobId;

use super::constraint::{Affinity, Constraint, Spread};
use super::job_type::JobType;
use super::policy::{
    DisconnectPolicy, MigratePolicy, ReschedulePolicy, RestartPolicy, UpdatePolicy,
};
use super::resources::{NetworkSpec, Resources};
use super::service::ServiceSpec;
use crate::duration::human;

/// A job's lifecycle as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Registered, nothing placed yet.
    #[default]
    Pending,
    /// Has non-terminal allocations.
    Running,
    /// Stopped by the user, or a batch job whose allocations all finished.
    Dead,
}

/// A validated job: what the user asked to run. Registered through `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: JobId,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub job_type: JobType,
    #[serde(default = "default_datacenters")]
    pub datacenters: Vec<String>,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default)]
    pub affinities: Vec<Affinity>,
    #[serde(default)]
    pub spreads: Vec<Spread>,
    /// Job-level update policy; groups without their own inherit it.
    #[serde(default)]
    pub update: Option<UpdatePolicy>,
    /// Task groups in spec order (sorted by name, as TOML tables are).
    pub groups: Vec<TaskGroup>,

    // --- set by the server ---
    /// True once the user stopped the job (`orch job stop`).
    #[serde(default)]
    pub stop: bool,
    #[serde(default)]
    pub status: JobStatus,
    /// Bumped each time a changed spec is registered.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub submit_time: u64,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
    /// Index of the last change to the spec itself (not to status).
    #[serde(default)]
    pub job_modify_index: u64,
    /// True once a deployment of this version succeeded: auto-revert goes back to the
    /// newest stable version. Left out when false, so that clients of the previous
    /// release, which refuse unknown job fields, still read the jobs they are sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stable: bool,
}

pub fn default_datacenters() -> Vec<String> {
    vec!["dc1".to_string()]
}

pub fn default_priority() -> u8 {
    50
}

impl Job {
    pub fn group(&self, name: &str) -> Option<&TaskGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Total instances the job asks for across groups.
    pub fn total_count(&self) -> u32 {
        // Saturating: counts are bounded per group, not the number of groups.
        self.groups
            .iter()
            .fold(0u32, |sum, g| sum.saturating_add(g.count))
    }

    /// True when the user-visible spec differs (ignores server-set fields).
    pub fn spec_changed(&self, other: &Job) -> bool {
        let strip = |j: &Job| {
            let mut j = j.clone();
            j.stop = false;
            j.status = JobStatus::Pending;
            j.version = 0;
            j.submit_time = 0;
            j.create_index = 0;
            j.modify_index = 0;
            j.job_modify_index = 0;
            j.stable = false;
            j
        };
        strip(self) != strip(other)
    }
}

/// A set of tasks placed together on one node, `count` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskGroup {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default)]
    pub affinities: Vec<Affinity>,
    #[serde(default)]
    pub spreads: Vec<Spread>,
    pub restart: RestartPolicy,
    pub reschedule: ReschedulePolicy,
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub update: Option<UpdatePolicy>,
    #[serde(default)]
    pub migrate: Option<MigratePolicy>,
    #[serde(default)]
    pub disconnect: Option<DisconnectPolicy>,
    /// How long a stopped allocation keeps running after it left the service catalog
    /// (and DNS), so that clients stop sending it requests before its tasks are killed.
    /// Left out when zero (clients of the previous release refuse unknown job fields).
    #[serde(with = "human", default, skip_serializing_if = "Duration::is_zero")]
    pub shutdown_delay: Duration,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    pub tasks: Vec<Task>,
}

fn one() -> u32 {
    1
}

impl TaskGroup {
    /// The group's reservation summed over its tasks.
    pub fn resources(&self) -> Resources {
        self.tasks
            .iter()
            .fold(Resources::ZERO, |acc, t| acc.add(&t.resources))
    }
}

/// One process (or container) in a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub name: String,
    /// `raw_exec`, `container`, `mock`.
    pub driver: String,
    /// Driver-specific settings (`command`, `args`, `rootfs`, ...), checked by the driver.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(with = "human", default = "default_kill_timeout")]
    pub kill_timeout: Duration,
    #[serde(default = "default_kill_signal")]
    pub kill_signal: String,
    /// Unix user to run as; drivers pick their default when unset.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub logs: LogConfig,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

pub fn default_kill_timeout() -> Duration {
    Duration::from_secs(5)
}

pub fn default_kill_signal() -> String {
    "SIGTERM".to_string()
}

/// Log rotation per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub max_files: u32,
    /// MiB per file.
    pub max_file_size: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_files: 10,
            max_file_size: 10,
        }
    }
}
