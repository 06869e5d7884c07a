//! Request and response bodies of the HTTP API (`/v1/...`), shared by the server, the
//! client agent and the CLI. Lists return stubs; single reads return the full structs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::diff::JobDiff;
use crate::ids::{AllocId, DeploymentId, EvalId, JobId, NodeId};
use crate::model::{
    AllocDeploymentStatus, AllocMetric, Allocation, CheckHealth, CheckStatus, ClientStatus,
    DesiredStatus, DesiredTransition, DrainStrategy, Eligibility, Evaluation, Job, JobStatus,
    JobType, Node, NodeStatus, PlanAnnotations, TaskState,
};

/// Header carrying the state index a blocking read answered at.
pub const INDEX_HEADER: &str = "X-Orch-Index";
/// The header a client presents its node secret in, on registration and every later
/// call for its node.
pub const NODE_SECRET_HEADER: &str = "X-Orch-Node-Secret";
/// The header an ACL token's secret travels in (`--token`, `ORCH_TOKEN`); the API also
/// takes `Authorization: Bearer <secret>`.
pub const TOKEN_HEADER: &str = "X-Orch-Token";

/// `POST /v1/node/{id}/acl/resolve`: a client with ACLs on asks what the token a request
/// presented grants (`None`: the anonymous policy); the answer is a `crate::acl::Grants`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenResolveRequest {
    #[serde(default)]
    pub secret: Option<String>,
}

/// Every 4xx/5xx answer: `{"error": "..."}`, with per-field details for bad specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `POST /v1/jobs` with a JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRegisterRequest {
    pub job: Job,
    /// Compare-and-set: register only while the job's `job_modify_index` is this
    /// (0 = the job must not exist).
    #[serde(default)]
    pub enforce_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRegisterResponse {
    pub eval_id: EvalId,
    pub job_modify_index: u64,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `DELETE /v1/job/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDeregisterResponse {
    pub eval_id: EvalId,
    pub job_modify_index: u64,
}

/// `POST /v1/job/{id}/plan` with a JSON body (a TOML body is the job alone, with
/// `?diff=true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobPlanRequest {
    pub job: Job,
    /// Include the structured diff against the running version.
    #[serde(default)]
    pub diff: bool,
}

/// What registering the job would do, computed by the real scheduler on a snapshot
/// without writing anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlanResponse {
    /// The running version's `job_modify_index` (0: the job does not exist); give it to
    /// `orch job run --check-index` to register only if nothing changed in between.
    pub job_modify_index: u64,
    /// The version the job would have once registered.
    pub next_version: u64,
    /// Present when the request asked for it.
    #[serde(default)]
    pub diff: Option<JobDiff>,
    /// Per group: placements, stops, in-place and destructive updates, preemptions.
    pub annotations: PlanAnnotations,
    /// Groups that could not be (fully) placed, and why.
    #[serde(default)]
    pub failed_tg_allocs: BTreeMap<String, AllocMetric>,
    /// `failed_tg_allocs` in words (`AllocMetric::describe`), per group.
    #[serde(default)]
    pub failure_reasons: BTreeMap<String, String>,
    /// Allocations of lower-priority jobs that would be evicted.
    #[serde(default)]
    pub preemptions: Vec<AllocListStub>,
    /// Evaluations the scheduler would create (blocked, delayed follow-ups).
    #[serde(default)]
    pub created_evals: Vec<Evaluation>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl JobPlanResponse {
    /// True when the plan creates or destroys allocations (`orch job plan` exits 1).
    pub fn changes_allocations(&self) -> bool {
        self.annotations.desired_tg_updates.values().any(|u| {
            u.place + u.stop + u.migrate + u.destructive_update + u.canary + u.preemptions > 0
        }) || !self.preemptions.is_empty()
    }
}

/// `POST /v1/job/{id}/scale`: set one group's count (a new job version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobScaleRequest {
    pub group: String,
    /// Signed so that a negative count is answered with a clear 400.
    pub count: i64,
    /// Compare-and-set on the job's `job_modify_index`, as for registration.
    #[serde(default)]
    pub enforce_index: Option<u64>,
}

/// `POST /v1/job/{id}/revert`: register an earlier version's spec again (a new version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRevertRequest {
    pub version: u64,
    /// Revert only if the job's current version is still this one.
    #[serde(default)]
    pub enforce_prior_version: Option<u64>,
}

/// `POST /v1/deployment/{id}/promote`: promote the canaries of `groups` (all groups
/// when empty).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DeploymentPromoteRequest {
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `POST /v1/deployment/{id}/alloc-health`: set allocations' health by hand (groups
/// with `health_check = "manual"`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DeploymentAllocHealthRequest {
    #[serde(default)]
    pub healthy: Vec<String>,
    #[serde(default)]
    pub unhealthy: Vec<String>,
}

/// The answer to a deployment action (promote, fail, pause, resume, alloc-health).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentUpdateResponse {
    pub deployment_id: DeploymentId,
    /// The evaluation created to act on the change ("" when none was needed).
    #[serde(default)]
    pub eval_id: EvalId,
    /// The index of the change.
    pub deployment_modify_index: u64,
    /// The job version registered again when the action reverted the job.
    #[serde(default)]
    pub reverted_job_version: Option<u64>,
}

/// `POST /v1/node/{id}/eligibility`: may the scheduler place new work on the node?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEligibilityRequest {
    pub eligibility: Eligibility,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEligibilityResponse {
    pub node_id: NodeId,
    pub eligibility: Eligibility,
    /// False when the node already had that eligibility (nothing was written).
    pub changed: bool,
}

/// `POST /v1/node/{id}/drain`: start (or change) a drain with `drain_spec`, or end one
/// with `drain_spec: null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDrainRequest {
    pub drain_spec: Option<DrainSpec>,
    /// With `drain_spec: null`: make the node eligible again (else it stays ineligible).
    #[serde(default)]
    pub mark_eligible: bool,
}

/// How to drain: `deadline` is a duration from now (`"1h"`); absent or `"0s"` means no
/// deadline; `force: true` means the deadline is now (everything moves at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DrainSpec {
    #[serde(default)]
    pub deadline: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub ignore_system_jobs: bool,
}

/// The answer to `POST /v1/node/{id}/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDrainResponse {
    pub node_id: NodeId,
    /// The node's modify index after the change.
    pub index: u64,
    pub drain: Option<DrainStrategy>,
    pub eligibility: Eligibility,
}

/// `PUT /v1/operator/scheduler/configuration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfigUpdateResponse {
    pub updated: bool,
    /// Index of the write.
    pub index: u64,
}

/// Instance counts of a group by client status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupSummary {
    pub queued: u32,
    pub starting: u32,
    pub running: u32,
    pub complete: u32,
    pub failed: u32,
    pub lost: u32,
}

/// One row of `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobListStub {
    pub id: JobId,
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub priority: u8,
    pub status: JobStatus,
    pub stop: bool,
    pub version: u64,
    pub summary: BTreeMap<String, GroupSummary>,
    pub submit_time: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub job_modify_index: u64,
}

/// One row of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeListStub {
    pub id: NodeId,
    pub name: String,
    pub datacenter: String,
    pub node_class: String,
    pub status: NodeStatus,
    pub eligibility: Eligibility,
    /// True while the node is being drained.
    #[serde(default)]
    pub drain: bool,
    pub http_addr: String,
    pub drivers: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<&Node> for NodeListStub {
    fn from(n: &Node) -> Self {
        NodeListStub {
            id: n.id.clone(),
            name: n.name.clone(),
            datacenter: n.datacenter.clone(),
            node_class: n.node_class.clone(),
            status: n.status,
            eligibility: n.eligibility,
            drain: n.drain.is_some(),
            http_addr: n.http_addr.clone(),
            drivers: n
                .drivers
                .iter()
                .filter(|(_, d)| d.detected && d.healthy)
                .map(|(k, _)| k.clone())
                .collect(),
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }
}

/// One row of `GET /v1/allocations`, `GET /v1/job/{id}/allocations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocListStub {
    pub id: AllocId,
    pub name: String,
    pub job_id: JobId,
    pub job_version: u64,
    pub group: String,
    pub node_id: NodeId,
    pub node_name: String,
    pub eval_id: EvalId,
    pub desired_status: DesiredStatus,
    pub desired_description: String,
    pub client_status: ClientStatus,
    pub client_description: String,
    pub task_states: BTreeMap<String, TaskState>,
    pub previous_allocation: Option<AllocId>,
    pub next_allocation: Option<AllocId>,
    /// Set when the server asked it to move (`orch alloc stop`, a node drain).
    #[serde(default, skip_serializing_if = "DesiredTransition::is_empty")]
    pub desired_transition: DesiredTransition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<DeploymentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_status: Option<AllocDeploymentStatus>,
    pub create_time: u64,
    pub modify_time: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<&Allocation> for AllocListStub {
    fn from(a: &Allocation) -> Self {
        AllocListStub {
            id: a.id.clone(),
            name: a.name.clone(),
            job_id: a.job_id.clone(),
            job_version: a.job_version,
            group: a.group.clone(),
            node_id: a.node_id.clone(),
            node_name: a.node_name.clone(),
            eval_id: a.eval_id.clone(),
            desired_status: a.desired_status,
            desired_description: a.desired_description.clone(),
            client_status: a.client_status,
            client_description: a.client_description.clone(),
            task_states: a.task_states.clone(),
            previous_allocation: a.previous_allocation.clone(),
            next_allocation: a.next_allocation.clone(),
            desired_transition: a.desired_transition,
            deployment_id: a.deployment_id.clone(),
            deployment_status: a.deployment_status.clone(),
            create_time: a.create_time,
            modify_time: a.modify_time,
            create_index: a.create_index,
            modify_index: a.modify_index,
        }
    }
}

/// One instance in the service catalog (`GET /v1/service/{name}`): a `[[group.G.service]]`
/// block of an allocation that runs, with where to reach it and its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInstance {
    pub service: String,
    pub alloc_id: AllocId,
    pub job_id: JobId,
    pub group: String,
    pub node_id: NodeId,
    pub node_name: String,
    /// The allocated port's host address when it is a concrete one, else the node's.
    pub address: String,
    /// The allocated port for the service's `port` label; `None` without a port.
    pub port: Option<u16>,
    /// `auto`, `host`, `driver` or `alloc`, as the service block says (default `auto`).
    pub address_mode: String,
    /// The tags it is registered with: `canary_tags` while the allocation is an
    /// unpromoted canary of a deployment (when the service has any), else `tags`.
    pub tags: Vec<String>,
    pub canary_tags: Vec<String>,
    /// The allocation is an unpromoted canary.
    #[serde(default)]
    pub canary: bool,
    pub meta: BTreeMap<String, String>,
    /// `passing` when every check of the service passes (or it has none), `critical`
    /// when one is critical, else `pending`.
    pub health: CheckHealth,
    /// The service's checks as the client last reported them, keyed by check name.
    pub checks: BTreeMap<String, CheckStatus>,
}

/// One row of `GET /v1/services`: a service name with its instances counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceListStub {
    pub name: String,
    /// Every tag of any of its instances, sorted, without duplicates.
    pub tags: Vec<String>,
    pub instances: u32,
    /// How many instances are `passing`.
    pub healthy: u32,
}

/// `GET /v1/evaluation/{id}` and `GET /v1/job/{id}/evaluations` return `Evaluation`s.
pub type EvaluationResponse = Evaluation;

// ----------------------------------------------------------------------------- client-facing

/// `POST /v1/node/register`: the client's fingerprinted node (status `initializing` or
/// `ready`); the server keeps `id` if given, so a restarted client keeps its identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRegisterRequest {
    pub node: Node,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegisterResponse {
    pub node_id: NodeId,
    /// The client must heartbeat within this many milliseconds.
    pub heartbeat_ttl_ms: u64,
    pub index: u64,
}

/// `POST /v1/node/{id}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Set when the client wants its status changed (e.g. back to `ready`).
    #[serde(default)]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub heartbeat_ttl_ms: u64,
    pub index: u64,
    /// The HTTP addresses (`host:port`) of the cluster's voting servers: the client
    /// adds them to the servers it fails over to.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// `GET /v1/node/{id}/allocations?index=N&wait=30s`: the node's allocations with their
/// jobs embedded, blocking until something changed after index N.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAllocationsResponse {
    pub allocs: Vec<Allocation>,
    pub index: u64,
    /// The index of the last garbage collection that deleted allocations (0: none
    /// yet). When it changes, the client asks which of its allocation directories
    /// the server still knows (`POST /v1/node/{id}/allocations/known`) and removes
    /// the others.
    #[serde(default)]
    pub gc_index: u64,
}

/// `POST /v1/node/{id}/allocations/known`: allocation ids a client holds directories
/// for; the answer keeps those the server still has (the rest were collected).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAllocsRequest {
    pub ids: Vec<AllocId>,
}

/// The answer to `POST /v1/node/{id}/allocations/known`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAllocsResponse {
    /// The requested ids the server still stores, in request order.
    pub known: Vec<AllocId>,
}

/// `PUT /v1/system/gc`: how many objects one garbage collection deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    pub jobs: u64,
    pub evals: u64,
    pub allocs: u64,
    pub nodes: u64,
    /// Command log entries dropped past the retention.
    #[serde(default)]
    pub log_entries: u64,
}

/// `PUT /v1/operator/snapshot`: what a restore replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRestoreResponse {
    /// The server's last applied index before the restore.
    pub previous_index: u64,
    /// The index the snapshot was saved at.
    pub snapshot_index: u64,
    /// The index the restored state was installed at: above both, so indexes never
    /// go back and every blocking query sees the change.
    pub index: u64,
    /// The snapshot's schema version (older ones are migrated on restore).
    pub schema_version: u32,
    /// The snapshot's size in bytes.
    pub size_bytes: u64,
}

/// One allocation's client-side state, batched in `POST /v1/node/{id}/allocations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocClientUpdate {
    pub id: AllocId,
    pub client_status: ClientStatus,
    #[serde(default)]
    pub client_description: String,
    #[serde(default)]
    pub task_states: BTreeMap<String, TaskState>,
    /// Health checks, keyed `SERVICE/CHECK`; sent when a status or output changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, CheckStatus>,
    /// The client's verdict on the allocation's health in its deployment, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_health: Option<DeploymentHealthReport>,
}

/// A client's health verdict for one allocation in one deployment (sent again with
/// every later update of the allocation; the server keeps the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentHealthReport {
    pub deployment_id: DeploymentId,
    pub healthy: bool,
    /// When it was decided (ms since the epoch).
    pub timestamp: u64,
    /// Why, in words (e.g. "task app failed", "healthy_deadline 1m passed").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocUpdateRequest {
    pub allocs: Vec<AllocClientUpdate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocUpdateResponse {
    pub index: u64,
}

/// `GET /v1/agent/self`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSelf {
    pub name: String,
    pub version: String,
    pub datacenter: String,
    pub server: bool,
    pub client: bool,
    pub node_id: Option<NodeId>,
    pub http_addr: String,
    pub data_dir: String,
}

/// `GET /v1/agent/health`: `ok` is false (and the status 503) when the state store
/// cannot be read or its last write failed, or a required background loop failed.
/// `server` and `client` say `"ok"` or why not; `loops` has every supervised loop of
/// this agent by name (`server.heartbeat`, `client.watch`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentHealth {
    pub ok: bool,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub loops: BTreeMap<String, LoopHealth>,
}

/// One supervised background loop, as `/v1/agent/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopHealth {
    pub state: LoopState,
    /// How often it was restarted after a panic (only loops that may be restarted).
    #[serde(default)]
    pub restarts: u32,
    /// The message of its last panic, if it ever panicked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_panic: Option<String>,
}

/// Where a supervised loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopState {
    Running,
    /// It panicked and waits (backoff) to be started again.
    Restarting,
    /// It panicked and will not run again: the agent is unhealthy and exits.
    Failed,
    /// It returned (the agent is shutting down).
    Stopped,
}

/// Memory of a task's cgroup, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryStats {
    pub current_bytes: u64,
    /// High-water mark; `None` where the kernel keeps none (cgroup v2 before 5.19).
    #[serde(default)]
    pub peak_bytes: Option<u64>,
}

/// Cpu time of a task's cgroup, in nanoseconds, and how often its quota throttled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuStats {
    pub usage_ns: u64,
    #[serde(default)]
    pub user_ns: Option<u64>,
    #[serde(default)]
    pub system_ns: Option<u64>,
    /// Enforcement periods that passed / in which the task was throttled (only with
    /// `cpu_hard_limit`, else 0), and the time it spent throttled.
    #[serde(default)]
    pub periods: u64,
    #[serde(default)]
    pub throttled_periods: u64,
    #[serde(default)]
    pub throttled_ns: u64,
}

/// One task's resource use, as last sampled from its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskResourceUsage {
    /// Milliseconds since the epoch.
    pub sampled_at: u64,
    /// False once the task's process is gone: the numbers are its last sample.
    pub running: bool,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    /// Processes (and threads) in the task's cgroup.
    #[serde(default)]
    pub pids: u64,
    /// The limits that applied, to read the numbers against.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// The cpus the task has to itself (`resources.cores`), e.g. "2-3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
}

/// `GET /v1/client/allocation/{id}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocResourceUsage {
    pub alloc_id: AllocId,
    /// Task name -> usage; tasks that never started are absent.
    pub tasks: BTreeMap<String, TaskResourceUsage>,
}

/// `POST /v1/acl/token`: a token to create. `ttl` is a duration (`24h`); none: until
/// deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclTokenCreateRequest {
    pub name: String,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A token just made (`POST /v1/acl/bootstrap`, `POST /v1/acl/token`): the token and
/// its secret, which is never shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclTokenCreated {
    #[serde(flatten)]
    pub token: crate::model::AclToken,
    pub secret: String,
}

/// `PUT /v1/acl/policy/{name}` with a JSON body (a TOML body is the rules document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicyRequest {
    #[serde(default)]
    pub description: String,
    pub rules: String,
}

/// `GET /v1/acl/token/self`: the caller's token and what it grants
/// (`["management"]` for a management token, else `area:verb` capabilities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclTokenSelf {
    #[serde(flatten)]
    pub token: crate::model::AclToken,
    pub capabilities: Vec<String>,
}
