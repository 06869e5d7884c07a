//! The drainer's decision, pure: given the draining nodes, the jobs with allocations on
//! them, every allocation of those jobs and `now`, which allocations to mark for
//! migration, which drains are complete, and when to look again.
//!
//! ```text
//!  per job and group with allocations on a draining node (live, not yet marked):
//!    node past its deadline ─────────────────────────────> mark all (any job type)
//!    service ── healthy = live, unmarked allocs of the group (anywhere) that have run
//!               for min_healthy_time; mark the lowest indexes, at most
//!               healthy - (count - max_parallel) of them
//!    batch ──── left to finish (marked only at the deadline)
//!    system ─── marked once the node runs nothing but system allocs
//!               (never with ignore_system_jobs)
//!  a draining node with no live allocations (system ones aside when ignored) ──> complete
//! ```
//!
//! A marked allocation counts as neither healthy nor drainable, and its replacement
//! counts only once healthy, so a group is never marked below `count - max_parallel`
//! healthy instances by the drainer (failures elsewhere can still take it lower).

use std::collections::{BTreeMap, HashMap};

use orch_common::duration::millis_saturating;
use orch_common::ids::{AllocId, JobId, NodeId};
use orch_common::model::{
    Allocation, ClientStatus, DesiredStatus, DrainStrategy, Job, JobType, MigratePolicy, Node,
    TaskStateKind,
};

/// What the drainer does next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainDecision {
    /// Allocations to mark for migration, by job id (ids sorted by group, then index).
    pub migrate: BTreeMap<JobId, Vec<AllocId>>,
    /// Draining nodes with nothing left to move: their drain is complete.
    pub complete: Vec<NodeId>,
    /// Jobs with allocations marked earlier that still run on a node past its
    /// deadline (their replacement found no room), with that deadline: one more
    /// evaluation makes the scheduler stop them without waiting.
    pub force: BTreeMap<JobId, u64>,
    /// When the decision may change without any state change (ms since the epoch): a
    /// replacement reaching its `min_healthy_time`, or a deadline.
    pub next_check: Option<u64>,
}

impl DrainDecision {
    fn wake_at(&mut self, at: u64) {
        self.next_check = Some(self.next_check.map_or(at, |t| t.min(at)));
    }
}

/// How an allocation stands for `migrate.health_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Running, every task for at least `min_healthy_time`.
    Healthy,
    /// Not yet; healthy at the given time if nothing changes (`None`: not running yet).
    NotYet(Option<u64>),
    /// Not healthy within `healthy_deadline` of its creation: it never counts (until a
    /// restart makes it healthy after all; the drain then goes on).
    Unhealthy,
}

/// Health as the drain sees it. `health_check = "checks"` is judged on task states as
/// well until health checks exist: every task running, since `min_healthy_time`.
pub fn health(a: &Allocation, policy: &MigratePolicy, now_ms: u64) -> Health {
    let min = millis_saturating(policy.min_healthy_time);
    let deadline = a
        .create_time
        .saturating_add(millis_saturating(policy.healthy_deadline));
    let all_running = a.client_status == ClientStatus::Running
        && !a.task_states.is_empty()
        && a.task_states
            .values()
            .all(|t| t.state == TaskStateKind::Running && t.started_at.is_some());
    if !all_running {
        return if now_ms >= deadline {
            Health::Unhealthy
        } else {
            Health::NotYet(None)
        };
    }
    let since = a
        .task_states
        .values()
        .filter_map(|t| t.started_at)
        .max()
        .unwrap_or(0);
    let healthy_at = since.saturating_add(min);
    if now_ms >= healthy_at {
        Health::Healthy
    } else if healthy_at > deadline && now_ms >= deadline {
        Health::Unhealthy
    } else {
        Health::NotYet(Some(healthy_at))
    }
}

/// Runs (or may still run) and the server has not asked it to move: what is drainable
/// on a draining node, and what may count as healthy anywhere.
fn live_unmarked(a: &Allocation) -> bool {
    a.desired_status == DesiredStatus::Run
        && !a.client_status.is_terminal()
        && !a.desired_transition.migrate
}

fn is_system(t: JobType) -> bool {
    matches!(t, JobType::System | JobType::Sysbatch)
}

/// The decision for every draining node at once (a group's `max_parallel` is shared by
/// all the draining nodes its allocations are on).
pub fn decide(
    nodes: &[Node],
    jobs: &HashMap<JobId, Job>,
    allocs: &[Allocation],
    now_ms: u64,
) -> DrainDecision {
    let mut out = DrainDecision::default();
    let draining: HashMap<&NodeId, &DrainStrategy> = nodes
        .iter()
        .filter_map(|n| n.drain.as_ref().map(|d| (&n.id, d)))
        .collect();
    for d in draining.values() {
        if let Some(deadline) = d.deadline.filter(|t| *t > now_ms) {
            out.wake_at(deadline);
        }
    }
    let job_type = |a: &Allocation| {
        jobs.get(&a.job_id)
            .map(|j| j.job_type)
            .or_else(|| a.job.as_ref().map(|j| j.job_type))
            .unwrap_or_default()
    };

    // What each draining node still runs: counted for completion, and apart from system.
    let mut left: HashMap<&NodeId, usize> = HashMap::new();
    let mut non_system_left: HashMap<&NodeId, usize> = HashMap::new();
    for a in allocs.iter().filter(|a| !a.is_terminal()) {
        let Some(drain) = draining.get(&a.node_id) else {
            continue;
        };
        let system = is_system(job_type(a));
        if !(system && drain.ignore_system_jobs) {
            *left.entry(&a.node_id).or_default() += 1;
        }
        if !system {
            *non_system_left.entry(&a.node_id).or_default() += 1;
        }
    }
    let mut complete: Vec<NodeId> = draining
        .keys()
        .filter(|id| left.get(*id).copied().unwrap_or(0) == 0)
        .map(|id| (*id).clone())
        .collect();
    complete.sort();
    out.complete = complete;

    // Every allocation of the jobs involved, by job and group.
    let mut groups: BTreeMap<(&JobId, &str), Vec<&Allocation>> = BTreeMap::new();
    for a in allocs {
        groups
            .entry((&a.job_id, a.group.as_str()))
            .or_default()
            .push(a);
    }
    for ((job_id, group_name), mut group_allocs) in groups {
        group_allocs.sort_by_key(|a| (a.index, a.create_index));
        let job = jobs.get(job_id);
        if job.is_some_and(|j| j.stop) {
            // The scheduler stops them all anyway.
            continue;
        }
        let job_type = job.map(|j| j.job_type).unwrap_or_else(|| {
            group_allocs
                .first()
                .map(|a| job_type(a))
                .unwrap_or_default()
        });
        let mut marked: Vec<&Allocation> = Vec::new();
        let mut drainable: Vec<&Allocation> = Vec::new();
        for a in group_allocs.iter().copied().filter(|a| {
            a.desired_transition.migrate
                && a.desired_status == DesiredStatus::Run
                && !a.client_status.is_terminal()
        }) {
            if let Some(deadline) = draining
                .get(&a.node_id)
                .filter(|d| d.deadline_reached(now_ms))
                .and_then(|d| d.deadline)
            {
                out.force.insert(job_id.clone(), deadline);
            }
        }
        for a in group_allocs.iter().copied().filter(|a| live_unmarked(a)) {
            let Some(drain) = draining.get(&a.node_id) else {
                continue;
            };
            let system = is_system(job_type);
            if system && drain.ignore_system_jobs {
                continue;
            }
            if drain.deadline_reached(now_ms) {
                marked.push(a);
                continue;
            }
            match job_type {
                JobType::Service => drainable.push(a),
                // Batch work may finish before the deadline; Nomad lets it.
                JobType::Batch => {}
                JobType::System | JobType::Sysbatch => {
                    if non_system_left.get(&a.node_id).copied().unwrap_or(0) == 0 {
                        marked.push(a);
                    }
                }
            }
        }
        if !drainable.is_empty() {
            let group = job.and_then(|j| j.group(group_name));
            let policy = group.and_then(|g| g.migrate.clone()).unwrap_or_default();
            let count = group.map_or(0, |g| g.count);
            let mut healthy = 0usize;
            for a in group_allocs.iter().filter(|a| live_unmarked(a)) {
                match health(a, &policy, now_ms) {
                    Health::Healthy => healthy += 1,
                    Health::NotYet(Some(at)) => out.wake_at(at),
                    Health::NotYet(None) | Health::Unhealthy => {}
                }
            }
            let keep = count.saturating_sub(policy.max_parallel) as usize;
            let n = healthy.saturating_sub(keep).min(drainable.len());
            marked.extend(drainable.into_iter().take(n));
        }
        if !marked.is_empty() {
            out.migrate
                .entry(job_id.clone())
                .or_default()
                .extend(marked.into_iter().map(|a| a.id.clone()));
        }
    }
    out
}
