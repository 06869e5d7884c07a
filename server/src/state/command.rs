//! Every change to the cluster state, as a serializable command, and why a command can
//! be rejected. `StateStore::apply` is the one function that turns a command into SQL,
//! in one transaction; endpoints and background loops only ever build commands.
//!
//! Check-and-set rules (a job's `enforce_index`, a deployment still active) are part of
//! the command, checked by `apply` against the state the command meets, so they hold
//! however commands are ordered or replicated. A command whose check fails is still
//! committed at its index (the log stays gapless and a replay meets the same check),
//! changes no table (but the evaluations of an `UpdateDeployment` and of an
//! `ApplyPlan` of a pruned job version, see there), and its `ApplyOutcome` names the
//! `Rejection`.

use orch_common::api::AllocClientUpdate;
use orch_common::ids::{AllocId, DeploymentId, EvalId, JobId, NodeId};
use orch_common::model::{
    AclPolicy, AclToken, Allocation, Deployment, DeploymentStatus, DeploymentStatusUpdate,
    DrainStrategy, Eligibility, Evaluation, Job, LastDrain, Node, NodeStatus,
    SchedulerConfiguration,
};
use serde::{Deserialize, Serialize};

/// Why `StateStore::apply` refused a command's change: deterministic (a function of the
/// command and the state it met), so every replay of the log, and every server of a
/// replicated one, refuses it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rejection {
    /// An `enforce_index` did not match the job's `job_modify_index` (`None`: no such
    /// job).
    JobModifyIndex {
        job_id: JobId,
        enforce_index: u64,
        job_modify_index: Option<u64>,
    },
    /// An `UpdateDeployment` of a deployment that is no longer active.
    DeploymentNotActive {
        deployment_id: DeploymentId,
        status: DeploymentStatus,
    },
    /// An `UpdateDeployment` of a deployment that is not stored (collected).
    DeploymentNotFound { deployment_id: DeploymentId },
    /// An `UpsertNode` of a node stored with another secret: a second registration of
    /// a known node id that does not hold its secret.
    NodeSecret { node_id: NodeId },
    /// A `BootstrapAcl` after the first: ACLs were bootstrapped at `index`.
    AclBootstrapped { index: u64 },
    /// An `ApplyPlan` whose placements run a job version pruned since the plan was
    /// computed: more than `versions::JOB_TRACKED_VERSIONS` registrations came in
    /// between, and the newest one's evaluation plans again. Only the plan's
    /// evaluations are stored (its allocations would read a job version that is gone).
    PlanOfPrunedVersion { job_id: JobId, version: u64 },
}

/// The check-and-set of `UpsertNode`: a node stored with a secret is replaced only by
/// a registration that presents the same one (a node stored without one, from before
/// node secrets, takes the first it is given).
pub fn check_node_secret(stored: &Node, submitted: &Node) -> Result<(), Rejection> {
    if stored.secret_hash.is_empty() || stored.secret_hash == submitted.secret_hash {
        Ok(())
    } else {
        Err(Rejection::NodeSecret {
            node_id: stored.id.clone(),
        })
    }
}

/// The check-and-set of `UpsertJob` and `DeregisterJob`: `stored` (the job as the
/// command meets it) must have `job_modify_index` `enforce_index`, and must not exist
/// when that is 0.
pub fn check_job_modify_index(
    job_id: &JobId,
    enforce_index: u64,
    stored: Option<&Job>,
) -> Result<(), Rejection> {
    let have = stored.map(|j| j.job_modify_index);
    if have.unwrap_or(0) == enforce_index {
        return Ok(());
    }
    Err(Rejection::JobModifyIndex {
        job_id: job_id.clone(),
        enforce_index,
        job_modify_index: have,
    })
}

/// True when registering `job` over `stored` changes nothing that counts: the same
/// spec of a job that is not stopped. It then keeps its version and
/// `job_modify_index`; otherwise the registration's index becomes its
/// `job_modify_index`. `job.name` must be set (the store sets an empty one to the id).
pub fn registration_unchanged(stored: Option<&Job>, job: &Job) -> bool {
    stored.is_some_and(|s| !s.stop && !s.spec_changed(job))
}

/// What an `UpdateDeployment` changes; every part is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeploymentChange {
    pub deployment_id: DeploymentId,
    /// The new status, with its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<(DeploymentStatus, String)>,
    /// Groups whose canaries are promoted: they stop being canaries and the rest of
    /// the group is rolled out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promote: Vec<String>,
    /// Health set by hand (`health_check = "manual"`): (allocation id, healthy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alloc_health: Vec<(AllocId, bool)>,
    /// The deployment succeeded: its job version becomes stable.
    #[serde(default)]
    pub mark_stable: bool,
}

// Commands are built once and moved through the log; boxing the job would only make
// every constructor noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Register or update a job (a new version if the spec changed) and its evaluation.
    UpsertJob {
        job: Job,
        eval: Option<Evaluation>,
        /// Check-and-set: the stored job's `job_modify_index` must be this (0: the job
        /// must not exist), else the command is rejected (`Rejection::JobModifyIndex`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enforce_index: Option<u64>,
    },
    /// Stop a job (or delete it with `purge`) and queue the evaluation that stops its allocs.
    DeregisterJob {
        job_id: JobId,
        purge: bool,
        eval: Option<Evaluation>,
        /// Check-and-set, as `UpsertJob`'s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enforce_index: Option<u64>,
    },
    /// Create or update evaluations (status changes, blocked and follow-up evals).
    UpsertEvals { evals: Vec<Evaluation> },
    /// Commit the part of a plan the applier accepted: new/updated allocations and stops,
    /// plus the evaluation update that goes with it.
    ApplyPlan {
        allocs: Vec<Allocation>,
        stopped: Vec<Allocation>,
        evals: Vec<Evaluation>,
        /// The deployment the plan creates (the new version's rollout).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<Deployment>,
        /// Status changes of the job's older deployments (cancelled).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deployment_updates: Vec<DeploymentStatusUpdate>,
    },
    /// A change to a running or paused deployment: by the deployment watcher (health,
    /// deadlines, auto-promotion, success, failure) or by a user (promote, fail, pause,
    /// resume, allocation health). A deployment that is no longer active (or gone) is
    /// left as it is, and then so is everything else in the command but its
    /// evaluations, which are stored all the same: the watcher and users decide on a
    /// snapshot, and the first change to end a deployment wins. The others are
    /// rejected (`Rejection::DeploymentNotActive`, `DeploymentNotFound`).
    UpdateDeployment {
        change: DeploymentChange,
        /// A job spec registered as a new version with the change (an auto-revert).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revert_to: Option<Job>,
        #[serde(default)]
        evals: Vec<Evaluation>,
    },
    /// Register a node or update its fingerprint.
    UpsertNode { node: Node },
    /// Create or replace an ACL policy.
    UpsertAclPolicy { policy: AclPolicy },
    /// Delete ACL policies by name (absent ones are skipped).
    DeleteAclPolicies { names: Vec<String> },
    /// Create or replace an ACL token.
    UpsertAclToken { token: AclToken },
    /// Delete ACL tokens by accessor id (absent ones are skipped).
    DeleteAclTokens { accessor_ids: Vec<String> },
    /// The one-time ACL bootstrap: stores the management token, unless the cluster
    /// was bootstrapped before (`Rejection::AclBootstrapped`).
    BootstrapAcl { token: AclToken },
    /// Heartbeat-driven status change, with evaluations for the node's jobs.
    UpdateNodeStatus {
        node_id: NodeId,
        status: NodeStatus,
        evals: Vec<Evaluation>,
    },
    UpdateNodeEligibility {
        node_id: NodeId,
        eligibility: Eligibility,
        evals: Vec<Evaluation>,
    },
    /// Set the cluster-wide scheduler configuration (algorithm, preemption).
    SetSchedulerConfig { config: SchedulerConfiguration },
    /// Marks allocations for migration (`orch alloc stop`): the scheduler places a
    /// replacement, then stops each; with the evaluations that make it do so.
    MigrateAllocs {
        alloc_ids: Vec<AllocId>,
        evals: Vec<Evaluation>,
    },
    /// Client-reported allocation states (batched), with evaluations they trigger.
    UpdateAllocsFromClient {
        updates: Vec<AllocClientUpdate>,
        evals: Vec<Evaluation>,
    },
    /// Starts, changes or ends a node's drain (`orch node drain`, and the drainer when
    /// the node is empty). `drain: None` ends it; `eligibility` is set with it when
    /// given (ineligible when a drain starts); `last_drain` records how one ended; the
    /// evaluations go with a node made eligible again (its system jobs).
    UpdateNodeDrain {
        node_id: NodeId,
        drain: Option<DrainStrategy>,
        eligibility: Option<Eligibility>,
        last_drain: Option<LastDrain>,
        evals: Vec<Evaluation>,
    },
    /// Garbage collection: deletes the listed terminal allocations, terminal
    /// evaluations, dead jobs (with their versions) and down nodes, and the command
    /// log's entries before `log_before` (0: none). Apply checks each object again and
    /// skips one that is gone or no longer collectable, so replaying it is harmless.
    Reap {
        #[serde(default)]
        jobs: Vec<JobId>,
        #[serde(default)]
        evals: Vec<EvalId>,
        #[serde(default)]
        allocs: Vec<AllocId>,
        #[serde(default)]
        nodes: Vec<NodeId>,
        #[serde(default)]
        log_before: u64,
    },
}
