//! The cluster's data model: jobs (validated specs), nodes, allocations, evaluations and
//! plans, plus resource arithmetic (`Resources::fits`, bin-pack scoring inputs).
//!
//! These are the validated types; `jobspec` turns TOML into a `Job`, the server stores
//! them, the scheduler reads them and the client runs them. Serialized field names are
//! snake_case and part of the public API.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::duration::{human, human_opt};

// ----------------------------------------------------------------------------- jobs

/// What kind of work a job is; decides how the scheduler and client treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Long-running; replaced when it dies.
    #[default]
    Service,
    /// Runs to completion; a success is never rerun.
    Batch,
    /// One allocation on every eligible node.
    System,
    /// Runs once to completion on every eligible node.
    Sysbatch,
}

impl JobType {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobType::Service => "service",
            JobType::Batch => "batch",
            JobType::System => "system",
            JobType::Sysbatch => "sysbatch",
        }
    }
}

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
    pub id: String,
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
        self.groups.iter().map(|g| g.count).sum()
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

/// What a task reserves (and is limited to) on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// MHz, a reservation (turned into cpu weight).
    #[serde(default = "default_cpu")]
    pub cpu: u64,
    /// MiB, a hard limit (and the reservation).
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// MiB; when set, the hard cap while `memory` is the soft reservation.
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// Caps the task at its `cpu` reservation (a cfs quota) instead of letting it use
    /// idle cpu; enforced by the client only, the scheduler counts `cpu` either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu_hard_limit: bool,
    /// Whole cpus given to this task alone (a cpuset); the client picks which. The
    /// scheduler counts them against the node's `cores` (its cpu count) and still
    /// counts `cpu` (MHz), so jobs set `cpu` to cover the cores too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Most processes (and threads) the task may have; default: the client's
    /// `pids_limit`, which is also the most a task may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

pub fn default_cpu() -> u64 {
    100
}

pub fn default_memory() -> u64 {
    300
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: default_memory(),
            memory_max: None,
            cpu_hard_limit: false,
            cores: None,
            pids: None,
        }
    }
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu: 0,
        memory: 0,
        memory_max: None,
        cpu_hard_limit: false,
        cores: None,
        pids: None,
    };

    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu + o.cpu,
            memory: self.memory + o.memory,
            cores: match (self.cores, o.cores) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
            ..Resources::ZERO
        }
    }

    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_sub(o.cpu),
            memory: self.memory.saturating_sub(o.memory),
            // A node without a core count (`None`) stays without one.
            cores: self.cores.map(|c| c.saturating_sub(o.cores.unwrap_or(0))),
            ..Resources::ZERO
        }
    }

    /// `Ok` when `self` (a request) fits in `available`; else the exhausted dimension.
    pub fn fits(&self, available: &Resources) -> Result<(), &'static str> {
        if self.cpu > available.cpu {
            return Err("cpu");
        }
        if self.memory > available.memory {
            return Err("memory");
        }
        // Only nodes that report their cores (`cores` in node resources) are checked.
        if let (Some(want), Some(free)) = (self.cores, available.cores) {
            if want > free {
                return Err("cores");
            }
        }
        Ok(())
    }
}

/// `[group.G.network]`: ports the group needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

/// One port label; `static_port` pins it, otherwise it is dynamic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub label: String,
    #[serde(rename = "static", default)]
    pub static_port: Option<u16>,
    #[serde(default)]
    pub to: Option<u16>,
}

/// A port given to an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedPort {
    pub label: String,
    pub value: u16,
    #[serde(default)]
    pub to: Option<u16>,
    pub host_ip: String,
}

/// `[group.G.restart]`: what the client does when a task exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub attempts: u32,
    #[serde(with = "human")]
    pub interval: Duration,
    #[serde(with = "human")]
    pub delay: Duration,
    pub mode: RestartMode,
}

impl RestartPolicy {
    /// Nomad's defaults: service 2 in 30m with 15s delay; batch 3 in 24h.
    pub fn default_for(job_type: JobType) -> Self {
        match job_type {
            JobType::Batch | JobType::Sysbatch => RestartPolicy {
                attempts: 3,
                interval: Duration::from_secs(24 * 3600),
                delay: Duration::from_secs(15),
                mode: RestartMode::Fail,
            },
            JobType::Service | JobType::System => RestartPolicy {
                attempts: 2,
                interval: Duration::from_secs(30 * 60),
                delay: Duration::from_secs(15),
                mode: RestartMode::Fail,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// Attempts exhausted: the task fails.
    Fail,
    /// Attempts exhausted: wait out the interval, then try again.
    Delay,
}

/// `[group.G.reschedule]`: what the server does when an allocation fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReschedulePolicy {
    pub attempts: u32,
    #[serde(with = "human")]
    pub interval: Duration,
    #[serde(with = "human")]
    pub delay: Duration,
    pub delay_function: DelayFunction,
    #[serde(with = "human")]
    pub max_delay: Duration,
    pub unlimited: bool,
}

impl ReschedulePolicy {
    /// Nomad's defaults: service unlimited, exponential from 30s to 1h; batch 1 in 24h.
    pub fn default_for(job_type: JobType) -> Self {
        match job_type {
            JobType::Batch | JobType::Sysbatch => ReschedulePolicy {
                attempts: 1,
                interval: Duration::from_secs(24 * 3600),
                delay: Duration::from_secs(5),
                delay_function: DelayFunction::Constant,
                max_delay: Duration::ZERO,
                unlimited: false,
            },
            JobType::Service | JobType::System => ReschedulePolicy {
                attempts: 0,
                interval: Duration::ZERO,
                delay: Duration::from_secs(30),
                delay_function: DelayFunction::Exponential,
                max_delay: Duration::from_secs(3600),
                unlimited: true,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelayFunction {
    Constant,
    Exponential,
    Fibonacci,
}

/// `[update]` / `[group.G.update]`: rolling deployment settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    pub max_parallel: u32,
    pub health_check: HealthCheckMode,
    #[serde(with = "human")]
    pub min_healthy_time: Duration,
    #[serde(with = "human")]
    pub healthy_deadline: Duration,
    #[serde(with = "human")]
    pub progress_deadline: Duration,
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub canary: u32,
    #[serde(with = "human")]
    pub stagger: Duration,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            max_parallel: 1,
            health_check: HealthCheckMode::Checks,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
            progress_deadline: Duration::from_secs(600),
            auto_revert: false,
            auto_promote: false,
            canary: 0,
            stagger: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckMode {
    Checks,
    TaskStates,
    Manual,
}

/// `[group.G.migrate]`: how a drain moves allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratePolicy {
    pub max_parallel: u32,
    pub health_check: HealthCheckMode,
    #[serde(with = "human")]
    pub min_healthy_time: Duration,
    #[serde(with = "human")]
    pub healthy_deadline: Duration,
}

impl Default for MigratePolicy {
    /// Nomad's defaults, for a group without `[group.G.migrate]` or fields it leaves out.
    fn default() -> Self {
        MigratePolicy {
            max_parallel: 1,
            health_check: HealthCheckMode::Checks,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
        }
    }
}

/// `group.G.disconnect`: what happens when a node loses contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectPolicy {
    #[serde(with = "human_opt", default)]
    pub lost_after: Option<Duration>,
    #[serde(default)]
    pub replace: bool,
}

/// `[[group.G.service]]`: a name in the service catalog for each running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub canary_tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub address_mode: Option<String>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

/// A health check of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub check_type: CheckType,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(with = "human")]
    pub interval: Duration,
    #[serde(with = "human")]
    pub timeout: Duration,
    #[serde(default = "one")]
    pub success_before_passing: u32,
    #[serde(default = "one")]
    pub failures_before_critical: u32,
    #[serde(default)]
    pub check_restart: Option<CheckRestart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Http,
    Tcp,
    Script,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRestart {
    pub limit: u32,
    #[serde(with = "human")]
    pub grace: Duration,
}

impl CheckType {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckType::Http => "http",
            CheckType::Tcp => "tcp",
            CheckType::Script => "script",
        }
    }
}

/// A check's health: `pending` until `success_before_passing` consecutive successes
/// (or `failures_before_critical` consecutive failures) have been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckHealth {
    #[default]
    Pending,
    Passing,
    Critical,
}

impl CheckHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckHealth::Pending => "pending",
            CheckHealth::Passing => "passing",
            CheckHealth::Critical => "critical",
        }
    }
}

/// The latest result of one health check of an allocation, as its client reports it
/// (keyed `SERVICE/CHECK` in `Allocation::checks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub service: String,
    /// The check's `name`, or `TYPE-INDEX` (its position in the service) without one.
    pub name: String,
    #[serde(rename = "type")]
    pub check_type: CheckType,
    /// The task it belongs to: the one a script runs in and `check_restart` restarts.
    pub task: String,
    pub status: CheckHealth,
    /// What the last run said: the HTTP status line, the connect result, the script's
    /// stdout and stderr, or the error (at most 4 KiB).
    #[serde(default)]
    pub output: String,
    /// When the check last ran (ms since the epoch; 0: not yet).
    #[serde(default)]
    pub last_run_ms: u64,
    /// When `status` last changed (ms since the epoch).
    #[serde(default)]
    pub status_since_ms: u64,
}

/// `[[constraint]]`: a placement must satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// `${attr.x}`, `${node.class}`, `${meta.rack}`; empty for `distinct_hosts`.
    #[serde(default)]
    pub attribute: String,
    #[serde(default = "default_operator")]
    pub operator: String,
    #[serde(default)]
    pub value: String,
}

fn default_operator() -> String {
    "=".to_string()
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.attribute, self.operator, self.value)
    }
}

/// `[[affinity]]`: a soft preference, weight -100..=100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub attribute: String,
    #[serde(default = "default_operator")]
    pub operator: String,
    pub value: String,
    #[serde(default = "default_affinity_weight")]
    pub weight: i8,
}

fn default_affinity_weight() -> i8 {
    50
}

/// `[[spread]]`: spread instances over the values of an attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub attribute: String,
    #[serde(default = "default_spread_weight")]
    pub weight: u8,
    #[serde(default)]
    pub targets: Vec<SpreadTarget>,
}

fn default_spread_weight() -> u8 {
    50
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadTarget {
    pub value: String,
    pub percent: u8,
}

// ----------------------------------------------------------------------------- nodes

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    #[default]
    Initializing,
    Ready,
    Down,
    Disconnected,
}

impl NodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Initializing => "initializing",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
            NodeStatus::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Eligibility {
    #[default]
    Eligible,
    Ineligible,
}

/// A driver as the client fingerprinted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    pub detected: bool,
    pub healthy: bool,
    #[serde(default)]
    pub description: String,
}

/// A client machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub datacenter: String,
    #[serde(default)]
    pub node_class: String,
    #[serde(default = "default_pool")]
    pub node_pool: String,
    #[serde(default)]
    pub status: NodeStatus,
    #[serde(default)]
    pub status_description: String,
    #[serde(default)]
    pub eligibility: Eligibility,
    /// Fingerprinted facts: `cpu.numcores`, `cpu.totalcompute`, `memory.totalbytes`,
    /// `unique.hostname`, `kernel.name`, `kernel.version`, `os.name`, `cpu.arch`,
    /// `cgroup.version`, `driver.raw_exec`, ...
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Total capacity (cpu MHz, memory MiB).
    pub resources: Resources,
    /// Held back for the OS and the agent.
    #[serde(default = "zero_resources")]
    pub reserved: Resources,
    #[serde(default)]
    pub drivers: BTreeMap<String, DriverInfo>,
    /// `host:port` of the client's HTTP API (logs, stats).
    #[serde(default)]
    pub http_addr: String,
    /// Dynamic port range for allocations on this node.
    #[serde(default = "default_min_dynamic_port")]
    pub min_dynamic_port: u16,
    #[serde(default = "default_max_dynamic_port")]
    pub max_dynamic_port: u16,
    #[serde(default)]
    pub reserved_ports: Vec<u16>,
    /// Hash of the attributes that decide feasibility; nodes with one class are alike.
    #[serde(default)]
    pub computed_class: String,
    #[serde(default)]
    pub status_updated_at: u64,
    /// Set while the node is being drained (`orch node drain --enable`); cleared when
    /// the drain completes or is canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStrategy>,
    /// How the last drain ended, once one has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drain: Option<LastDrain>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// A drain in progress: the node's allocations move elsewhere, each group at its
/// `migrate` pace, until the deadline; then whatever is left moves at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStrategy {
    /// When everything left is migrated at once (ms since the epoch); `None` = never
    /// (the drain waits for every group's pace, and for batch allocations to finish).
    #[serde(default)]
    pub deadline: Option<u64>,
    /// Leave `system` and `sysbatch` allocations running (the drain completes without them).
    #[serde(default)]
    pub ignore_system_jobs: bool,
    /// When the drain started (ms since the epoch).
    pub started_at: u64,
}

impl DrainStrategy {
    /// True once `now_ms` is at or past the deadline.
    pub fn deadline_reached(&self, now_ms: u64) -> bool {
        self.deadline.is_some_and(|d| now_ms >= d)
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainOutcome {
    /// Every allocation left the node (system ones too unless ignored).
    Complete,
    /// Turned off (`orch node drain --disable`) before it completed.
    Canceled,
}

impl DrainOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DrainOutcome::Complete => "complete",
            DrainOutcome::Canceled => "canceled",
        }
    }
}

/// `Node::last_drain`: the most recent drain that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDrain {
    pub outcome: DrainOutcome,
    pub started_at: u64,
    pub finished_at: u64,
}

fn default_pool() -> String {
    "default".to_string()
}

fn zero_resources() -> Resources {
    Resources::ZERO
}

pub fn default_min_dynamic_port() -> u16 {
    20000
}

pub fn default_max_dynamic_port() -> u16 {
    32000
}

impl Node {
    /// Capacity left for allocations once the reservation is taken off.
    pub fn allocatable(&self) -> Resources {
        self.resources.saturating_sub(&self.reserved)
    }

    /// Ready and eligible: the scheduler may place new work here.
    pub fn is_schedulable(&self) -> bool {
        self.status == NodeStatus::Ready && self.eligibility == Eligibility::Eligible
    }

    /// True when the node has the driver and it is healthy.
    pub fn has_driver(&self, driver: &str) -> bool {
        self.drivers
            .get(driver)
            .map(|d| d.detected && d.healthy)
            .unwrap_or(false)
    }

    /// Computes `computed_class` from everything feasibility looks at.
    pub fn compute_class(&mut self) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.datacenter.hash(&mut h);
        self.node_class.hash(&mut h);
        self.node_pool.hash(&mut h);
        for (k, v) in &self.attributes {
            if !k.starts_with("unique.") {
                k.hash(&mut h);
                v.hash(&mut h);
            }
        }
        self.meta.hash(&mut h);
        let mut drivers: Vec<_> = self
            .drivers
            .iter()
            .filter(|(_, d)| d.detected && d.healthy)
            .map(|(n, _)| n)
            .collect();
        drivers.sort();
        drivers.hash(&mut h);
        self.computed_class = format!("v1:{:016x}", h.finish());
    }
}

// ----------------------------------------------------------------------------- allocations

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

/// Resources given to an allocation: per task, plus the group's ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllocatedResources {
    pub tasks: BTreeMap<String, Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<AllocatedPort>,
}

impl AllocatedResources {
    pub fn total(&self) -> Resources {
        self.tasks
            .values()
            .fold(Resources::ZERO, |acc, r| acc.add(r))
    }
}

/// One instance of a task group placed on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: String,
    /// `job.group[index]`.
    pub name: String,
    pub index: u32,
    pub namespace: String,
    pub eval_id: String,
    pub job_id: String,
    pub job_version: u64,
    /// The job as it was when placed; served to clients, omitted in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<Job>>,
    pub group: String,
    pub node_id: String,
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
    pub previous_allocation: Option<String>,
    #[serde(default)]
    pub next_allocation: Option<String>,
    /// What the server asked to happen to the allocation besides its desired status.
    #[serde(default, skip_serializing_if = "DesiredTransition::is_empty")]
    pub desired_transition: DesiredTransition,
    /// The deployment that placed (or updated in place) this allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
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
    pub scores: BTreeMap<String, f64>,
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

// ----------------------------------------------------------------------------- evaluations

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
    pub id: String,
    pub priority: u8,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub triggered_by: String,
    pub job_id: String,
    #[serde(default)]
    pub job_modify_index: u64,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub status: EvalStatus,
    #[serde(default)]
    pub status_description: String,
    /// Not before this time (ms since the epoch): delayed reschedules.
    #[serde(default)]
    pub wait_until: Option<u64>,
    #[serde(default)]
    pub previous_eval: Option<String>,
    #[serde(default)]
    pub next_eval: Option<String>,
    /// The blocked evaluation this one left behind for unplaced instances.
    #[serde(default)]
    pub blocked_eval: Option<String>,
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
            id: crate::ids::new_id(),
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

// ----------------------------------------------------------------------------- deployments

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
    pub id: String,
    pub job_id: String,
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
    pub eval_id: String,
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
    pub placed_canaries: Vec<String>,
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
    pub deployment_id: String,
    pub status: DeploymentStatus,
    pub status_description: String,
}

// ----------------------------------------------------------------------------- plans

/// What the scheduler wants changed, submitted to the plan applier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub eval_id: String,
    pub priority: u8,
    /// The job version the placements are for.
    pub job: Option<Job>,
    /// Node id -> allocations to stop/evict there (desired_status set).
    pub node_update: BTreeMap<String, Vec<Allocation>>,
    /// Node id -> allocations to place (new or updated in place).
    pub node_allocation: BTreeMap<String, Vec<Allocation>>,
    /// Commit only if everything fits.
    #[serde(default)]
    pub all_at_once: bool,
    /// Snapshot index the plan was computed on.
    pub snapshot_index: u64,
    /// Node id -> lower-priority allocations evicted to make room (desired `evict`).
    #[serde(default)]
    pub node_preemptions: BTreeMap<String, Vec<Allocation>>,
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

// ----------------------------------------------------------------------------- scheduler configuration

/// How the scheduler ranks feasible nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerAlgorithm {
    /// Favour the fullest node that fits (fewer nodes used).
    #[default]
    Binpack,
    /// Favour the emptiest node (load spread evenly).
    Spread,
}

/// Which job types may preempt lower-priority allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreemptionConfig {
    #[serde(default = "yes")]
    pub system_scheduler_enabled: bool,
    #[serde(default = "yes")]
    pub sysbatch_scheduler_enabled: bool,
    #[serde(default)]
    pub batch_scheduler_enabled: bool,
    #[serde(default)]
    pub service_scheduler_enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for PreemptionConfig {
    fn default() -> Self {
        PreemptionConfig {
            system_scheduler_enabled: true,
            sysbatch_scheduler_enabled: true,
            batch_scheduler_enabled: false,
            service_scheduler_enabled: false,
        }
    }
}

impl PreemptionConfig {
    pub fn enabled_for(&self, job_type: JobType) -> bool {
        match job_type {
            JobType::Service => self.service_scheduler_enabled,
            JobType::Batch => self.batch_scheduler_enabled,
            JobType::System => self.system_scheduler_enabled,
            JobType::Sysbatch => self.sysbatch_scheduler_enabled,
        }
    }
}

/// Cluster-wide scheduler settings: `GET/PUT /v1/operator/scheduler/configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfiguration {
    #[serde(default)]
    pub scheduler_algorithm: SchedulerAlgorithm,
    #[serde(default)]
    pub preemption_config: PreemptionConfig,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// What the plan applier committed of a plan: which nodes' parts of it. (The
/// allocations themselves go into the commit; the scheduler only needs to know
/// whether all of its plan made it.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlanResult {
    /// Nodes whose stops (`Plan::node_update`) committed.
    pub updated_nodes: BTreeSet<String>,
    /// Nodes whose placements (`Plan::node_allocation`, with their evictions)
    /// committed.
    pub allocated_nodes: BTreeSet<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedicated_cores_are_counted_only_on_nodes_that_report_theirs() {
        let ask = |cores| Resources {
            cpu: 10,
            memory: 10,
            cores,
            ..Resources::ZERO
        };
        let node = Resources {
            cpu: 5000,
            memory: 4096,
            cores: Some(2),
            ..Resources::ZERO
        };
        let used = ask(Some(1)).add(&ask(None));
        assert_eq!(used.cores, Some(1));
        let free = node.saturating_sub(&used);
        assert_eq!(free.cores, Some(1));
        assert_eq!(ask(Some(1)).fits(&free), Ok(()));
        assert_eq!(ask(Some(2)).fits(&free), Err("cores"));
        assert_eq!(ask(None).fits(&free), Ok(()));
        // An older node without a core count never refuses on cores.
        let old = Resources {
            cores: None,
            ..node
        };
        assert_eq!(ask(Some(64)).fits(&old.saturating_sub(&used)), Ok(()));
        // Serialized only when set, so older readers are not surprised.
        let json = serde_json::to_value(ask(None)).unwrap();
        assert!(json.get("cores").is_none(), "{json}");
    }

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
    fn resources_fit_reports_the_exhausted_dimension() {
        let want = Resources {
            cpu: 100,
            memory: 64,
            memory_max: None,
            ..Default::default()
        };
        let small = Resources {
            cpu: 1000,
            memory: 32,
            memory_max: None,
            ..Default::default()
        };
        assert_eq!(want.fits(&small), Err("memory"));
        assert!(want.fits(&want).is_ok());
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
