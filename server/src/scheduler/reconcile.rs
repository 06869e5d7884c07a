//! Reconciliation: the job as the user wants it vs. the allocations that exist, sorted
//! into buckets. Pure: `now` (ms since the epoch) is an argument.
//!
//! ```text
//!  allocs of the job ──┬─ replaced (next_allocation set) / stopped ──────> ignored
//!                      ├─ job stopped or gone, or group removed ──────────> stop
//!                      ├─ unpromoted canary ─┬─ of the current, active deployment
//!                      │                     │  ──> kept beside the old instances
//!                      │                     │      (not counted per index)
//!                      │                     └─ otherwise ──────────────────> stop
//!                      ├─ on a node that is down or gone ─────────────────> stop (lost)
//!                      │                                                    + place
//!                      ├─ marked to migrate ─┬─ place, stop it once placed
//!                      │                     └─ drain deadline passed: stop + place
//!                      ├─ on a disconnected node, within lost_after ──> kept (unknown);
//!                      │     replace = true, or none other at its index -> place
//!                      │     (past lost_after: stop (lost) + place)
//!                      ├─ failed ─┬─ reschedule now ──> place (stop old on success)
//!                      │          ├─ reschedule later ─> keep + delayed eval
//!                      │          └─ attempts used up ─> keep (stays failed)
//!                      └─ live ───┬─ beyond count (highest index first) ──> stop
//!                                 ├─ older version, tasks changed ──> destructive
//!                                 ├─ older version, tasks same ─────> in-place
//!                                 └─ current ───────────────────────> ignore
//!  missing indexes (0..count) ──────────────────────────────────────> place
//! ```
//!
//! Batch jobs: `complete` allocations keep their slot and are never rerun (unless the
//! job's version changed); service jobs replace `complete` and `lost` ones.
//!
//! Reschedule attempts and backoff count the failures of an allocation's chain of
//! replacements, which every replacement carries (`RescheduleTracker`, set when it is
//! placed): the failed allocations themselves may be garbage collected. Allocations
//! placed before trackers were carried have their chain walked instead.
//!
//! Two live allocations holding one index (a disconnected node came back after its
//! allocations were replaced): the one that scored best when placed stays, the earlier
//! one on a tie; the other is stopped. A running instance of the current version (a
//! promoted canary) always wins its index: the older instance there is stopped as
//! updated, linked to it.
//!
//! The rollout rules (how many destructive updates go now, where canaries go) are
//! applied afterwards by `deployment::plan`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use orch_common::duration::millis_saturating;
use orch_common::ids::{AllocId, NodeId};
use orch_common::jobspec::MAX_RESCHEDULE_ATTEMPTS;
use orch_common::model::{
    triggers, Allocation, ClientStatus, DelayFunction, Deployment, DesiredStatus, Job, JobType,
    Node, NodeStatus, RescheduleEvent, ReschedulePolicy, RescheduleTracker, TaskGroup,
};

pub const DESC_JOB_STOPPED: &str = "alloc not needed as job is stopped";
pub const DESC_NOT_NEEDED: &str = "alloc not needed due to job update";
pub const DESC_LOST: &str = "alloc is lost since its node is down";
pub const DESC_UPDATED: &str = "alloc is being updated due to job update";
pub const DESC_RESCHEDULED: &str = "alloc was rescheduled because it failed";
pub const DESC_MIGRATED: &str = "alloc is being migrated";
pub const DESC_DISCONNECT_LOST: &str =
    "alloc is lost since its node has been disconnected for longer than disconnect.lost_after";
pub const DESC_DRAIN_DEADLINE: &str = "alloc is being migrated: its node's drain deadline passed";
pub const DESC_DUPLICATE: &str =
    "alloc not needed: another allocation holds its index (node reconnected)";
pub const DESC_CANARY_NOT_NEEDED: &str =
    "alloc not needed: canary of a deployment that failed, was cancelled or was superseded";

/// The cluster's nodes by id, borrowed from the snapshot's list (no copies).
pub type NodesById<'n> = HashMap<&'n NodeId, &'n Node>;

/// Why a placement is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceReason {
    /// A missing instance (new job, count raised).
    New,
    /// Replaces an allocation lost with its node (already stopped unconditionally).
    Lost,
    /// Replaces a failed allocation per the reschedule policy.
    Reschedule,
    /// Replaces an allocation of an older version whose tasks changed.
    Destructive,
    /// Replaces an allocation asked to move (`orch alloc stop`); it is stopped once
    /// the replacement is placed, so the group never runs short for lack of room.
    Migrate,
    /// Replaces an allocation stopped unconditionally because its node's drain
    /// deadline passed.
    Evicted,
    /// Stands in for an allocation on a disconnected node (`disconnect.replace`). The
    /// original is kept: if its node comes back, the better placed of the two stays.
    Disconnected,
    /// A canary of the current deployment, placed beside the old instances at the
    /// index of one it may replace once promoted (nothing is stopped for it).
    Canary,
}

/// One instance to place.
#[derive(Debug, Clone)]
pub struct Placement {
    pub group: String,
    pub index: u32,
    pub reason: PlaceReason,
    /// The allocation it replaces (linked through `previous_allocation`). For
    /// `Reschedule` and `Destructive`, it is stopped only if the placement succeeds.
    pub previous: Option<Allocation>,
}

/// One allocation to stop unconditionally.
#[derive(Debug, Clone)]
pub struct Stop {
    pub alloc: Allocation,
    pub description: String,
    /// Also mark the client status `lost`.
    pub lost: bool,
    /// The allocation that took its place (`next_allocation`), when one already runs.
    pub next: Option<AllocId>,
}

/// The buckets.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    pub place: Vec<Placement>,
    pub stop: Vec<Stop>,
    /// Live allocations of an older version whose change can be applied in place.
    pub inplace: Vec<Allocation>,
    /// Allocations left as they are.
    pub ignore: Vec<Allocation>,
    /// Unpromoted canaries of the current deployment, kept beside the old instances
    /// (outside the one-instance-per-index count).
    pub canaries: Vec<Allocation>,
    /// Failed allocations to reschedule later: (alloc, not before ms).
    pub delayed: Vec<(Allocation, u64)>,
    /// When the first allocation on a disconnected node passes its `lost_after`.
    pub disconnect_expiry: Option<u64>,
}

impl Reconciled {
    /// The earliest delayed reschedule time, for the follow-up evaluation.
    pub fn next_reschedule_time(&self) -> Option<u64> {
        self.delayed.iter().map(|(_, t)| *t).min()
    }

    /// When the job needs another evaluation, and why: the earlier of a delayed
    /// reschedule and a disconnected allocation turning lost.
    pub fn follow_up(&self) -> Option<(u64, &'static str)> {
        let reschedule = self
            .next_reschedule_time()
            .map(|t| (t, triggers::RETRY_FAILED_ALLOC));
        let disconnect = self
            .disconnect_expiry
            .map(|t| (t, triggers::DISCONNECT_TIMEOUT));
        match (reschedule, disconnect) {
            (Some(r), Some(d)) => Some(if d.0 < r.0 { d } else { r }),
            (r, d) => r.or(d),
        }
    }
}

/// When a failed allocation may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescheduleDecision {
    Now,
    At(u64),
    Never,
}

/// When the allocation failed: its last task's finish time, else its last change.
fn failed_at(alloc: &Allocation) -> u64 {
    alloc
        .task_states
        .values()
        .filter_map(|t| t.finished_at)
        .max()
        .unwrap_or(alloc.modify_time)
}

/// Delay before reschedule number `n` (0-based) under `policy`.
pub fn reschedule_delay(policy: &ReschedulePolicy, n: u32) -> Duration {
    let base = policy.delay;
    let delay = match policy.delay_function {
        DelayFunction::Constant => base,
        DelayFunction::Exponential => base.saturating_mul(1u32 << n.min(20)),
        DelayFunction::Fibonacci => {
            let (mut a, mut b) = (base, base);
            for _ in 0..n.min(40) {
                let next = a.saturating_add(b);
                a = b;
                b = next;
            }
            a
        }
    };
    if policy.delay_function != DelayFunction::Constant && !policy.max_delay.is_zero() {
        delay.min(policy.max_delay)
    } else {
        delay
    }
}

/// How many failures a replacement carries the times of under an unlimited policy,
/// where none counts against attempts: enough to show what happened (Nomad keeps 5).
pub const RESCHEDULE_EVENTS_SHOWN: usize = 5;

fn failure_of(alloc: &Allocation) -> RescheduleEvent {
    RescheduleEvent {
        alloc_id: alloc.id.clone(),
        node_id: alloc.node_id.clone(),
        failed_at: failed_at(alloc),
    }
}

/// The failures before `alloc` in its chain of replacements: those it carries, or,
/// for an allocation placed before allocations carried them, those its chain of
/// `previous_allocation`s still shows (all of them, oldest first).
pub fn failures_before(
    alloc: &Allocation,
    by_id: &HashMap<&AllocId, &Allocation>,
) -> RescheduleTracker {
    if let Some(carried) = &alloc.reschedule_tracker {
        return carried.clone();
    }
    let mut found = RescheduleTracker::default();
    let mut seen = BTreeSet::new();
    let mut prev = alloc.previous_allocation.as_ref();
    while let Some(id) = prev {
        if !seen.insert(id) {
            break;
        }
        let Some(p) = by_id.get(id) else { break };
        if p.client_status == ClientStatus::Failed {
            found.failures = found.failures.saturating_add(1);
            found.events.push(failure_of(p));
        }
        prev = p.previous_allocation.as_ref();
    }
    found.events.reverse();
    found
}

/// What the replacement of `previous` carries: the failures before `previous`, and
/// `previous` itself when it failed. Of their times it keeps only what `policy` may
/// still count at `now_ms` (those inside a limited policy's `interval`, at most its
/// `attempts`), so a crash loop does not grow each new allocation.
pub fn tracker_for_replacement(
    previous: &Allocation,
    by_id: &HashMap<&AllocId, &Allocation>,
    policy: &ReschedulePolicy,
    now_ms: u64,
) -> RescheduleTracker {
    let mut tracker = failures_before(previous, by_id);
    if previous.client_status == ClientStatus::Failed {
        tracker.failures = tracker.failures.saturating_add(1);
        tracker.events.push(failure_of(previous));
    }
    let interval_ms = millis_saturating(policy.interval);
    let keep = if policy.unlimited {
        RESCHEDULE_EVENTS_SHOWN
    } else {
        if interval_ms > 0 {
            tracker
                .events
                .retain(|e| e.failed_at.saturating_add(interval_ms) >= now_ms);
        }
        policy.attempts.min(MAX_RESCHEDULE_ATTEMPTS) as usize
    };
    let excess = tracker.events.len().saturating_sub(keep);
    tracker.events.drain(..excess);
    tracker
}

/// Decides whether a failed allocation is replaced now, later or never: the failures
/// before it in its chain of replacements (`failures_before`) are the reschedules
/// already spent; those inside `interval` count against `attempts`, and all of them
/// grow the delay.
pub fn reschedule_decision(
    alloc: &Allocation,
    by_id: &HashMap<&AllocId, &Allocation>,
    policy: &ReschedulePolicy,
    now_ms: u64,
) -> RescheduleDecision {
    if !policy.unlimited && policy.attempts == 0 {
        return RescheduleDecision::Never;
    }
    let interval_ms = millis_saturating(policy.interval);
    let spent = failures_before(alloc, by_id);
    let spent_in_window = spent
        .events
        .iter()
        .filter(|e| interval_ms == 0 || e.failed_at.saturating_add(interval_ms) >= now_ms)
        .count() as u32;
    let chain = spent.failures;
    if !policy.unlimited && spent_in_window >= policy.attempts {
        return RescheduleDecision::Never;
    }
    let at = failed_at(alloc).saturating_add(millis_saturating(reschedule_delay(policy, chain)));
    if at <= now_ms {
        RescheduleDecision::Now
    } else {
        RescheduleDecision::At(at)
    }
}

/// True when going from `old` to `new` needs the group's allocations replaced; false
/// when the change (count, meta, update/reschedule/restart policies, services,
/// constraints) can be applied to running allocations in place.
pub fn tasks_updated(old: &TaskGroup, new: &TaskGroup) -> bool {
    old.network != new.network || old.tasks != new.tasks
}

fn is_batch(job: &Job) -> bool {
    matches!(job.job_type, JobType::Batch | JobType::Sysbatch)
}

/// Where a live allocation's node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Up,
    /// Disconnected, and the group tolerates it until this time (ms).
    Unknown {
        lost_at: u64,
    },
    /// Down, gone, or disconnected past (or without) the group's `lost_after`; why, in
    /// the stopped allocation's words.
    Lost(&'static str),
}

fn reach(alloc: &Allocation, group: &TaskGroup, nodes: &NodesById<'_>, now_ms: u64) -> Reach {
    let Some(node) = nodes.get(&alloc.node_id) else {
        return Reach::Lost(DESC_LOST);
    };
    match node.status {
        NodeStatus::Down => Reach::Lost(DESC_LOST),
        NodeStatus::Disconnected => match disconnect_lost_at(group, node) {
            Some(lost_at) if lost_at > now_ms => Reach::Unknown { lost_at },
            _ => Reach::Lost(DESC_DISCONNECT_LOST),
        },
        NodeStatus::Ready | NodeStatus::Initializing => Reach::Up,
    }
}

/// When a group's allocations on a disconnected `node` count as lost: its
/// `disconnect.lost_after` after the node was marked disconnected. None without one.
pub fn disconnect_lost_at(group: &TaskGroup, node: &Node) -> Option<u64> {
    let lost_after = group.disconnect.as_ref()?.lost_after?;
    Some(
        node.status_updated_at
            .saturating_add(millis_saturating(lost_after)),
    )
}

/// True when the allocation's node is draining and its deadline has passed.
fn drain_deadline_passed(a: &Allocation, nodes: &NodesById<'_>, now_ms: u64) -> bool {
    nodes
        .get(&a.node_id)
        .and_then(|n| n.drain.as_ref())
        .is_some_and(|d| d.deadline_reached(now_ms))
}

/// The score an allocation's node got when it was placed (higher is better).
fn placement_score(a: &Allocation) -> f64 {
    a.metrics
        .as_ref()
        .and_then(|m| m.scores.get(a.node_id.as_str()))
        .copied()
        .unwrap_or(f64::NEG_INFINITY)
}

fn still_wanted_by_server(a: &Allocation) -> bool {
    a.desired_status == DesiredStatus::Run && a.next_allocation.is_none()
}

/// Reconciles `job` (None when deregistered and purged) with `allocs` (all of the job's
/// allocations, terminal ones included), with no deployment in force: every unpromoted
/// canary is stopped.
pub fn reconcile(
    job: Option<&Job>,
    allocs: &[Allocation],
    nodes: &NodesById<'_>,
    now_ms: u64,
) -> Reconciled {
    reconcile_with(job, allocs, nodes, now_ms, None)
}

/// `reconcile`, given the current version's deployment (`deployment::Rollout`): its
/// unpromoted canaries are kept beside the instances they may replace and stay out of
/// the one-instance-per-index count; every other unpromoted canary is stopped.
pub fn reconcile_with(
    job: Option<&Job>,
    allocs: &[Allocation],
    nodes: &NodesById<'_>,
    now_ms: u64,
    deployment: Option<&Deployment>,
) -> Reconciled {
    let mut out = Reconciled::default();
    let Some(job) = job.filter(|j| !j.stop) else {
        for a in allocs {
            if still_wanted_by_server(a) && !a.client_status.is_terminal() {
                out.stop.push(Stop {
                    alloc: a.clone(),
                    description: DESC_JOB_STOPPED.to_string(),
                    lost: false,
                    next: None,
                });
            }
        }
        return out;
    };
    let by_id: HashMap<&AllocId, &Allocation> = allocs.iter().map(|a| (&a.id, a)).collect();
    let mut by_group: BTreeMap<&str, Vec<&Allocation>> = BTreeMap::new();
    for a in allocs {
        if job.group(&a.group).is_some() {
            by_group.entry(a.group.as_str()).or_default().push(a);
        } else if still_wanted_by_server(a) && !a.client_status.is_terminal() {
            out.stop.push(Stop {
                alloc: a.clone(),
                description: DESC_NOT_NEEDED.to_string(),
                lost: false,
                next: None,
            });
        }
    }
    let ctx = Ctx {
        job,
        by_id: &by_id,
        nodes,
        now_ms,
        deployment,
    };
    for group in &job.groups {
        let existing = by_group.remove(group.name.as_str()).unwrap_or_default();
        reconcile_group(&ctx, group, &existing, &mut out);
    }
    out
}

/// What every group's reconciliation reads.
struct Ctx<'a, 'n> {
    job: &'a Job,
    by_id: &'a HashMap<&'a AllocId, &'a Allocation>,
    nodes: &'a NodesById<'n>,
    now_ms: u64,
    /// The current version's deployment (whatever its status), if any.
    deployment: Option<&'a Deployment>,
}

/// An occupied index: a live allocation or a replacement about to be placed.
enum Slot {
    Live(Allocation),
    Replace(Placement),
}

impl Slot {
    fn index(&self) -> u32 {
        match self {
            Slot::Live(a) => a.index,
            Slot::Replace(p) => p.index,
        }
    }
}

fn reconcile_group(
    ctx: &Ctx<'_, '_>,
    group: &TaskGroup,
    existing: &[&Allocation],
    out: &mut Reconciled,
) {
    let Ctx {
        job,
        by_id,
        nodes,
        now_ms,
        ..
    } = *ctx;
    let batch = is_batch(job);
    let mut slots: Vec<Slot> = Vec::new();
    // Live allocations on disconnected nodes, still within `lost_after`.
    let mut unknown: Vec<&Allocation> = Vec::new();
    let mut sorted: Vec<&Allocation> = existing.to_vec();
    sorted.sort_by_key(|a| (a.index, a.create_index));
    for a in sorted {
        if a.next_allocation.is_some() {
            continue;
        }
        if a.is_canary() {
            // Beside the old instances until promotion: not part of the index count.
            canary(ctx, group, a, out);
            continue;
        }
        if a.desired_status != DesiredStatus::Run {
            // Stopped by the server earlier. A batch alloc that finished keeps its slot.
            if batch && a.client_status == ClientStatus::Complete && a.job_version == job.version {
                slots.push(Slot::Live(a.clone()));
            }
            continue;
        }
        if batch && a.client_status.is_terminal() && a.job_version < job.version {
            // A finished run of an older version: the new version runs again.
            continue;
        }
        match a.client_status {
            ClientStatus::Complete if batch => slots.push(Slot::Live(a.clone())),
            ClientStatus::Complete | ClientStatus::Lost => {}
            ClientStatus::Failed => {
                match reschedule_decision(a, by_id, &group.reschedule, now_ms) {
                    RescheduleDecision::Now => slots.push(Slot::Replace(Placement {
                        group: group.name.clone(),
                        index: a.index,
                        reason: PlaceReason::Reschedule,
                        previous: Some(a.clone()),
                    })),
                    RescheduleDecision::At(t) => {
                        out.delayed.push((a.clone(), t));
                        slots.push(Slot::Live(a.clone()));
                    }
                    RescheduleDecision::Never => slots.push(Slot::Live(a.clone())),
                }
            }
            ClientStatus::Pending | ClientStatus::Running => {
                let reach = reach(a, group, nodes, now_ms);
                if let Reach::Unknown { lost_at } = reach {
                    out.disconnect_expiry =
                        Some(out.disconnect_expiry.map_or(lost_at, |t| t.min(lost_at)));
                    unknown.push(a);
                } else if let Reach::Lost(why) = reach {
                    out.stop.push(Stop {
                        alloc: a.clone(),
                        description: why.to_string(),
                        lost: true,
                        next: None,
                    });
                    slots.push(Slot::Replace(Placement {
                        group: group.name.clone(),
                        index: a.index,
                        reason: PlaceReason::Lost,
                        previous: Some(a.clone()),
                    }));
                } else if a.desired_transition.migrate && drain_deadline_passed(a, nodes, now_ms) {
                    // Past the drain's deadline nothing waits for room elsewhere.
                    out.stop.push(Stop {
                        alloc: a.clone(),
                        description: DESC_DRAIN_DEADLINE.to_string(),
                        lost: false,
                        next: None,
                    });
                    slots.push(Slot::Replace(Placement {
                        group: group.name.clone(),
                        index: a.index,
                        reason: PlaceReason::Evicted,
                        previous: Some(a.clone()),
                    }));
                } else if a.desired_transition.migrate {
                    slots.push(Slot::Replace(Placement {
                        group: group.name.clone(),
                        index: a.index,
                        reason: PlaceReason::Migrate,
                        previous: Some(a.clone()),
                    }));
                } else {
                    slots.push(Slot::Live(a.clone()));
                }
            }
        }
    }

    // An allocation out of reach keeps its index unless something else holds it; with
    // `replace = true` a stand-in is placed at once.
    let held: BTreeSet<u32> = slots.iter().map(Slot::index).collect();
    let replace = group.disconnect.as_ref().is_some_and(|d| d.replace);
    for a in unknown {
        if held.contains(&a.index) {
            out.ignore.push(a.clone());
        } else if replace {
            out.ignore.push(a.clone());
            slots.push(Slot::Replace(Placement {
                group: group.name.clone(),
                index: a.index,
                reason: PlaceReason::Disconnected,
                previous: None,
            }));
        } else {
            slots.push(Slot::Live(a.clone()));
        }
    }

    let mut unique = one_slot_per_index(slots, job.version, out);

    // Too many: drop the highest indexes first.
    unique.sort_by_key(|s| std::cmp::Reverse(s.index()));
    let excess = unique.len().saturating_sub(group.count as usize);
    for slot in unique.drain(..excess) {
        match slot {
            Slot::Live(a) => stop_not_needed(a, out),
            // A lost alloc was stopped above; a failed one just stays failed.
            Slot::Replace(_) => {}
        }
    }

    // Too few: fill the lowest free indexes.
    let taken: BTreeSet<u32> = unique.iter().map(Slot::index).collect();
    let missing = (group.count as usize).saturating_sub(unique.len());
    let mut new_indexes = (0u32..).filter(|i| !taken.contains(i)).take(missing);
    for index in new_indexes.by_ref() {
        out.place.push(Placement {
            group: group.name.clone(),
            index,
            reason: PlaceReason::New,
            previous: None,
        });
    }

    unique.sort_by_key(Slot::index);
    for slot in unique {
        match slot {
            Slot::Replace(p) => out.place.push(p),
            Slot::Live(a) => classify_live(job, group, a, out),
        }
    }
    out.place
        .sort_by(|x, y| (&x.group, x.index).cmp(&(&y.group, y.index)));
}

/// Keeps one slot per index. A running instance of the current version wins over
/// older ones (a promoted canary over the instance it was placed beside: that one is
/// stopped as updated, linked to it). Otherwise the first holder wins, except between
/// live allocations only (a reconnected node's and its stand-in): the better placed
/// stays, the earlier on a tie.
fn one_slot_per_index(slots: Vec<Slot>, version: u64, out: &mut Reconciled) -> Vec<Slot> {
    let mut by_index: BTreeMap<u32, Vec<Slot>> = BTreeMap::new();
    for slot in slots {
        by_index.entry(slot.index()).or_default().push(slot);
    }
    let mut unique = Vec::with_capacity(by_index.len());
    for (_, mut holders) in by_index {
        if holders.len() == 1 {
            unique.extend(holders);
            continue;
        }
        let all_live = holders.iter().all(|s| matches!(s, Slot::Live(_)));
        let current: Vec<usize> = (0..holders.len())
            .filter(|&i| matches!(&holders[i], Slot::Live(a) if a.job_version == version && is_running(a)))
            .collect();
        let takes_over = !current.is_empty() && current.len() < holders.len();
        let keep = if takes_over {
            best_placed(&holders, &current)
        } else if all_live {
            best_placed(&holders, &(0..holders.len()).collect::<Vec<_>>())
        } else {
            0
        };
        let winner = holders.swap_remove(keep);
        let winner_id = match (&winner, takes_over) {
            (Slot::Live(a), true) => Some(a.id.clone()),
            _ => None,
        };
        for loser in holders {
            match (loser, &winner_id) {
                (Slot::Live(a), Some(next)) if a.job_version != version => {
                    stop_replaced(a, next, out)
                }
                (Slot::Replace(p), Some(next)) => {
                    // Its replacement is not needed; an instance still running (one
                    // asked to migrate) is replaced by the winner.
                    if let Some(a) = p.previous {
                        if is_running(&a) && !out.stop.iter().any(|s| s.alloc.id == a.id) {
                            stop_replaced(a, next, out);
                        }
                    }
                }
                (Slot::Live(a), _) if all_live || takes_over => stop_duplicate(a, out),
                (Slot::Live(a), _) => stop_not_needed(a, out),
                (Slot::Replace(_), None) => {}
            }
        }
        unique.push(winner);
    }
    unique
}

/// The holder among `candidates` that scored best when placed, the earlier on a tie.
fn best_placed(holders: &[Slot], candidates: &[usize]) -> usize {
    let mut best = candidates[0];
    for &i in candidates {
        if let (Slot::Live(a), Slot::Live(b)) = (&holders[i], &holders[best]) {
            let (sa, sb) = (placement_score(a), placement_score(b));
            if sa > sb || (sa == sb && a.create_index < b.create_index) {
                best = i;
            }
        }
    }
    best
}

fn is_running(a: &Allocation) -> bool {
    a.desired_status == DesiredStatus::Run && !a.client_status.is_terminal()
}

/// An older instance whose index a running instance of the current version holds.
fn stop_replaced(a: Allocation, next: &AllocId, out: &mut Reconciled) {
    if is_running(&a) {
        out.stop.push(Stop {
            alloc: a,
            description: DESC_UPDATED.to_string(),
            lost: false,
            next: Some(next.clone()),
        });
    } else {
        out.ignore.push(a);
    }
}

/// An unpromoted canary: kept while it belongs to the current version's deployment and
/// that deployment is active; stopped otherwise (the deployment failed, was cancelled,
/// or a newer version's replaced it). A finished canary is left alone.
fn canary(ctx: &Ctx<'_, '_>, group: &TaskGroup, a: &Allocation, out: &mut Reconciled) {
    if !is_running(a) {
        return;
    }
    let ours = ctx.deployment.is_some_and(|d| {
        d.status.is_active()
            && a.deployment_id.as_ref() == Some(&d.id)
            && a.job_version == ctx.job.version
    });
    if !ours {
        out.stop.push(Stop {
            alloc: a.clone(),
            description: DESC_CANARY_NOT_NEEDED.to_string(),
            lost: false,
            next: None,
        });
        return;
    }
    match reach(a, group, ctx.nodes, ctx.now_ms) {
        // Stopped; the rollout places another canary in its stead.
        Reach::Lost(why) => out.stop.push(Stop {
            alloc: a.clone(),
            description: why.to_string(),
            lost: true,
            next: None,
        }),
        Reach::Unknown { lost_at } => {
            out.disconnect_expiry = Some(out.disconnect_expiry.map_or(lost_at, |t| t.min(lost_at)));
            out.canaries.push(a.clone());
        }
        Reach::Up => out.canaries.push(a.clone()),
    }
}

fn stop_duplicate(a: Allocation, out: &mut Reconciled) {
    if a.desired_status == DesiredStatus::Run && !a.client_status.is_terminal() {
        out.stop.push(Stop {
            alloc: a,
            description: DESC_DUPLICATE.to_string(),
            lost: false,
            next: None,
        });
    } else {
        out.ignore.push(a);
    }
}

fn stop_not_needed(a: Allocation, out: &mut Reconciled) {
    if a.desired_status == DesiredStatus::Run && !a.client_status.is_terminal() {
        out.stop.push(Stop {
            alloc: a,
            description: DESC_NOT_NEEDED.to_string(),
            lost: false,
            next: None,
        });
    } else {
        out.ignore.push(a);
    }
}

/// A live allocation: current, updatable in place, or to be replaced.
fn classify_live(job: &Job, group: &TaskGroup, a: Allocation, out: &mut Reconciled) {
    let running = a.desired_status == DesiredStatus::Run && !a.client_status.is_terminal();
    if !running || a.job_version == job.version {
        out.ignore.push(a);
        return;
    }
    let destructive = match a.job.as_ref().and_then(|j| j.group(&group.name)) {
        Some(old) => tasks_updated(old, group),
        // Without the old spec there is nothing to compare: replace to be safe.
        None => true,
    };
    if destructive {
        out.place.push(Placement {
            group: group.name.clone(),
            index: a.index,
            reason: PlaceReason::Destructive,
            previous: Some(a),
        });
    } else {
        out.inplace.push(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::mock::{running_alloc, JobBuilder, NodeBuilder};
    use orch_common::model::AllocMetric;

    const MIN: u64 = 60_000;

    fn nodes(list: &[Node]) -> NodesById<'_> {
        list.iter().map(|n| (&n.id, n)).collect()
    }

    fn indexes(r: &Reconciled) -> Vec<u32> {
        r.place.iter().map(|p| p.index).collect()
    }

    #[test]
    fn new_job_places_every_index() {
        let job = JobBuilder::new("web").count(3).build();
        let r = reconcile(Some(&job), &[], &HashMap::new(), 0);
        assert_eq!(indexes(&r), vec![0, 1, 2]);
        assert!(r.place.iter().all(|p| p.reason == PlaceReason::New));
    }

    #[test]
    fn missing_indexes_are_filled_first() {
        let job = JobBuilder::new("web").count(3).build();
        let n = NodeBuilder::new().build();
        let allocs = vec![running_alloc(&job, "web", 1, &n)];
        let r = reconcile(Some(&job), &allocs, &nodes(&[n]), 0);
        assert_eq!(indexes(&r), vec![0, 2]);
        assert_eq!(r.ignore.len(), 1);
    }

    #[test]
    fn lower_count_stops_highest_indexes() {
        let job = JobBuilder::new("web").count(1).build();
        let n = NodeBuilder::new().build();
        let allocs: Vec<_> = (0..3).map(|i| running_alloc(&job, "web", i, &n)).collect();
        let r = reconcile(Some(&job), &allocs, &nodes(&[n]), 0);
        let stopped: Vec<u32> = r.stop.iter().map(|s| s.alloc.index).collect();
        assert_eq!(stopped, vec![2, 1]);
        assert!(r.place.is_empty());
    }

    #[test]
    fn stopped_job_stops_all_running_allocs() {
        let mut job = JobBuilder::new("web").count(2).build();
        let n = NodeBuilder::new().build();
        let allocs: Vec<_> = (0..2).map(|i| running_alloc(&job, "web", i, &n)).collect();
        job.stop = true;
        let r = reconcile(Some(&job), &allocs, &nodes(std::slice::from_ref(&n)), 0);
        assert_eq!(r.stop.len(), 2);
        assert!(r.stop.iter().all(|s| s.description == DESC_JOB_STOPPED));
        let gone = reconcile(None, &allocs, &nodes(&[n]), 0);
        assert_eq!(gone.stop.len(), 2);
    }

    #[test]
    fn an_alloc_asked_to_migrate_is_replaced_before_it_is_stopped() {
        let job = JobBuilder::new("web").count(2).build();
        let n = NodeBuilder::new().build();
        let mut allocs: Vec<_> = (0..2).map(|i| running_alloc(&job, "web", i, &n)).collect();
        allocs[1].client_status = ClientStatus::Running;
        allocs[1].desired_transition.migrate = true;
        let r = reconcile(Some(&job), &allocs, &nodes(std::slice::from_ref(&n)), 0);
        // No stop now: the scheduler stops it once its replacement is placed.
        assert!(r.stop.is_empty(), "{:?}", r.stop);
        assert_eq!(r.place.len(), 1);
        assert_eq!(r.place[0].reason, PlaceReason::Migrate);
        assert_eq!(r.place[0].index, 1);
        assert_eq!(
            r.place[0].previous.as_ref().map(|a| a.id.as_str()),
            Some(allocs[1].id.as_str())
        );
    }

    #[test]
    fn allocs_on_a_down_node_are_lost_and_replaced() {
        let job = JobBuilder::new("web").count(1).build();
        let n = NodeBuilder::new().status(NodeStatus::Down).build();
        let allocs = vec![running_alloc(&job, "web", 0, &n)];
        let r = reconcile(Some(&job), &allocs, &nodes(&[n]), 0);
        assert_eq!(r.stop.len(), 1);
        assert!(r.stop[0].lost);
        assert_eq!(r.place.len(), 1);
        assert_eq!(r.place[0].reason, PlaceReason::Lost);
        assert_eq!(
            r.place[0].previous.as_ref().map(|a| a.id.clone()),
            Some(allocs[0].id.clone())
        );
    }

    #[test]
    fn complete_batch_allocs_are_not_replaced() {
        let job = JobBuilder::new("b").batch().count(2).build();
        let n = NodeBuilder::new().build();
        let mut allocs: Vec<_> = (0..2).map(|i| running_alloc(&job, "web", i, &n)).collect();
        for a in &mut allocs {
            a.client_status = ClientStatus::Complete;
        }
        let r = reconcile(Some(&job), &allocs, &nodes(&[n]), 0);
        assert!(r.place.is_empty());
        assert!(r.stop.is_empty());
    }

    #[test]
    fn complete_service_allocs_are_replaced() {
        let job = JobBuilder::new("s").count(1).build();
        let n = NodeBuilder::new().build();
        let mut a = running_alloc(&job, "web", 0, &n);
        a.client_status = ClientStatus::Complete;
        let r = reconcile(Some(&job), &[a], &nodes(&[n]), 0);
        assert_eq!(indexes(&r), vec![0]);
    }

    #[test]
    fn failed_alloc_within_delay_is_rescheduled_later() {
        let job = JobBuilder::new("b").batch().count(1).build();
        let n = NodeBuilder::new().build();
        let mut a = running_alloc(&job, "web", 0, &n);
        a.client_status = ClientStatus::Failed;
        a.modify_time = 10 * MIN;
        let delay = job.groups[0].reschedule.delay.as_millis() as u64;
        let r = reconcile(
            Some(&job),
            std::slice::from_ref(&a),
            &nodes(std::slice::from_ref(&n)),
            10 * MIN,
        );
        assert!(r.place.is_empty());
        assert_eq!(r.next_reschedule_time(), Some(10 * MIN + delay));
        let later = reconcile(Some(&job), &[a], &nodes(&[n]), 10 * MIN + delay);
        assert_eq!(later.place.len(), 1);
        assert_eq!(later.place[0].reason, PlaceReason::Reschedule);
    }

    #[test]
    fn reschedule_attempts_are_counted_along_the_chain() {
        let job = JobBuilder::new("b").batch().count(1).build(); // 1 attempt in 24h
        let n = NodeBuilder::new().build();
        let mut first = running_alloc(&job, "web", 0, &n);
        first.client_status = ClientStatus::Failed;
        first.modify_time = MIN;
        let mut second = running_alloc(&job, "web", 0, &n);
        second.client_status = ClientStatus::Failed;
        second.modify_time = 2 * MIN;
        second.previous_allocation = Some(first.id.clone());
        first.next_allocation = Some(second.id.clone());
        let r = reconcile(Some(&job), &[first, second], &nodes(&[n]), 60 * MIN);
        assert!(r.place.is_empty(), "attempts are used up");
        assert!(r.delayed.is_empty());
    }

    #[test]
    fn exponential_delay_doubles_up_to_the_cap() {
        let policy = ReschedulePolicy {
            attempts: 0,
            interval: Duration::ZERO,
            delay: Duration::from_secs(30),
            delay_function: DelayFunction::Exponential,
            max_delay: Duration::from_secs(100),
            unlimited: true,
        };
        assert_eq!(reschedule_delay(&policy, 0), Duration::from_secs(30));
        assert_eq!(reschedule_delay(&policy, 1), Duration::from_secs(60));
        assert_eq!(reschedule_delay(&policy, 2), Duration::from_secs(100));
        let fib = ReschedulePolicy {
            delay_function: DelayFunction::Fibonacci,
            max_delay: Duration::ZERO,
            ..policy
        };
        let secs: Vec<u64> = (0..5)
            .map(|n| reschedule_delay(&fib, n).as_secs())
            .collect();
        assert_eq!(secs, vec![30, 30, 60, 90, 150]);
    }

    #[test]
    fn changed_tasks_are_destructive_and_count_changes_are_in_place() {
        let v0 = JobBuilder::new("web").count(1).build();
        let n = NodeBuilder::new().build();
        let a = running_alloc(&v0, "web", 0, &n);

        let mut more = v0.clone();
        more.version = 1;
        more.groups[0].count = 1;
        more.groups[0].meta.insert("owner".into(), "me".into());
        let r = reconcile(
            Some(&more),
            std::slice::from_ref(&a),
            &nodes(std::slice::from_ref(&n)),
            0,
        );
        assert_eq!(r.inplace.len(), 1);
        assert!(r.place.is_empty());

        let mut changed = v0.clone();
        changed.version = 1;
        changed.groups[0].tasks[0].resources.memory += 1;
        let r = reconcile(Some(&changed), &[a], &nodes(&[n]), 0);
        assert!(r.inplace.is_empty());
        assert_eq!(r.place.len(), 1);
        assert_eq!(r.place[0].reason, PlaceReason::Destructive);
    }

    #[test]
    fn new_batch_version_reruns_finished_allocs() {
        let v0 = JobBuilder::new("b").batch().count(1).build();
        let n = NodeBuilder::new().build();
        let mut a = running_alloc(&v0, "web", 0, &n);
        a.client_status = ClientStatus::Complete;
        let mut v1 = v0.clone();
        v1.version = 1;
        let r = reconcile(Some(&v1), &[a], &nodes(&[n]), 0);
        assert_eq!(indexes(&r), vec![0]);
    }

    #[test]
    fn removed_group_allocs_are_stopped() {
        let job = JobBuilder::new("web").count(1).build();
        let n = NodeBuilder::new().build();
        let mut a = running_alloc(&job, "web", 0, &n);
        a.group = "gone".into();
        let r = reconcile(Some(&job), &[a], &nodes(&[n]), 0);
        assert_eq!(r.stop.len(), 1);
        assert_eq!(indexes(&r), vec![0]);
    }

    fn disconnected(since_ms: u64) -> Node {
        let mut n = NodeBuilder::new().status(NodeStatus::Disconnected).build();
        n.status_updated_at = since_ms;
        n
    }

    #[test]
    fn allocs_on_a_disconnected_node_are_kept_until_lost_after() {
        let job = JobBuilder::new("web")
            .count(2)
            .disconnect(Duration::from_secs(60), false)
            .build();
        let away = disconnected(10 * MIN);
        let allocs: Vec<_> = (0..2)
            .map(|i| running_alloc(&job, "web", i, &away))
            .collect();
        let list = [away];
        let r = reconcile(Some(&job), &allocs, &nodes(&list), 10 * MIN + 1_000);
        assert!(r.place.is_empty() && r.stop.is_empty(), "{r:?}");
        assert_eq!(r.ignore.len(), 2);
        assert_eq!(
            r.follow_up(),
            Some((11 * MIN, triggers::DISCONNECT_TIMEOUT))
        );

        // Past lost_after: lost and replaced, like a down node.
        let r = reconcile(Some(&job), &allocs, &nodes(&list), 11 * MIN);
        assert_eq!(r.stop.len(), 2);
        assert!(r
            .stop
            .iter()
            .all(|s| s.lost && s.description == DESC_DISCONNECT_LOST));
        assert_eq!(indexes(&r), vec![0, 1]);
        assert!(r.place.iter().all(|p| p.reason == PlaceReason::Lost));
        assert_eq!(r.follow_up(), None);
    }

    #[test]
    fn replace_places_stand_ins_at_once_and_keeps_the_originals() {
        let job = JobBuilder::new("web")
            .count(2)
            .disconnect(Duration::from_secs(60), true)
            .build();
        let away = disconnected(10 * MIN);
        let here = NodeBuilder::new().build();
        let mut allocs: Vec<_> = (0..2)
            .map(|i| running_alloc(&job, "web", i, &away))
            .collect();
        let list = [away, here.clone()];
        let r = reconcile(Some(&job), &allocs, &nodes(&list), 10 * MIN + 1_000);
        assert_eq!(indexes(&r), vec![0, 1]);
        assert!(r
            .place
            .iter()
            .all(|p| p.reason == PlaceReason::Disconnected && p.previous.is_none()));
        assert!(r.stop.is_empty());

        // Once the stand-ins run, nothing more is placed and the originals wait.
        allocs.extend((0..2).map(|i| running_alloc(&job, "web", i, &here)));
        let r = reconcile(Some(&job), &allocs, &nodes(&list), 10 * MIN + 2_000);
        assert!(r.place.is_empty() && r.stop.is_empty(), "{r:?}");
        assert_eq!(r.ignore.len(), 4);
    }

    #[test]
    fn without_a_disconnect_policy_a_disconnected_node_loses_its_allocs() {
        let job = JobBuilder::new("web").count(1).build();
        let away = disconnected(10 * MIN);
        let allocs = vec![running_alloc(&job, "web", 0, &away)];
        let list = [away];
        let r = reconcile(Some(&job), &allocs, &nodes(&list), 10 * MIN + 1);
        assert_eq!(r.stop.len(), 1);
        assert!(r.stop[0].lost);
        assert_eq!(indexes(&r), vec![0]);
    }

    #[test]
    fn a_reconnected_node_leaves_exactly_count_keeping_the_better_placed() {
        let job = JobBuilder::new("web")
            .count(2)
            .disconnect(Duration::from_secs(60), true)
            .build();
        let back = NodeBuilder::new().build();
        let other = NodeBuilder::new().build();
        let scored = |mut a: Allocation, score: f64, create_index: u64| {
            let mut m = AllocMetric::default();
            m.scores.insert(a.node_id.clone(), score);
            a.metrics = Some(m);
            a.create_index = create_index;
            a
        };
        let allocs = vec![
            // Index 0: the original scored better; index 1: the stand-in did.
            scored(running_alloc(&job, "web", 0, &back), 0.9, 1),
            scored(running_alloc(&job, "web", 1, &back), 0.2, 2),
            scored(running_alloc(&job, "web", 0, &other), 0.5, 10),
            scored(running_alloc(&job, "web", 1, &other), 0.5, 11),
        ];
        let list = [back.clone(), other.clone()];
        let r = reconcile(Some(&job), &allocs, &nodes(&list), 20 * MIN);
        assert!(r.place.is_empty());
        let stopped: Vec<(u32, &str)> = r
            .stop
            .iter()
            .map(|s| (s.alloc.index, s.alloc.node_id.as_str()))
            .collect();
        assert_eq!(stopped, vec![(0, other.id.as_str()), (1, back.id.as_str())]);
        assert!(r
            .stop
            .iter()
            .all(|s| !s.lost && s.description == DESC_DUPLICATE));

        // A tie keeps the earlier one.
        let tie = vec![
            scored(running_alloc(&job, "web", 0, &back), 0.5, 1),
            scored(running_alloc(&job, "web", 0, &other), 0.5, 10),
        ];
        let r = reconcile(Some(&job), &tie, &nodes(&list), 20 * MIN);
        assert_eq!(r.stop.len(), 1);
        assert_eq!(r.stop[0].alloc.create_index, 10);
    }

    #[test]
    fn past_the_drain_deadline_a_migrating_alloc_is_stopped_without_waiting() {
        let job = JobBuilder::new("web").count(1).build();
        let mut n = NodeBuilder::new().build();
        n.drain = Some(orch_common::model::DrainStrategy {
            deadline: Some(5 * MIN),
            ignore_system_jobs: false,
            started_at: 0,
        });
        let mut allocs = vec![running_alloc(&job, "web", 0, &n)];
        allocs[0].desired_transition.migrate = true;
        let list = [n];
        let before = reconcile(Some(&job), &allocs, &nodes(&list), 5 * MIN - 1);
        assert!(before.stop.is_empty());
        assert_eq!(before.place[0].reason, PlaceReason::Migrate);
        let after = reconcile(Some(&job), &allocs, &nodes(&list), 5 * MIN);
        assert_eq!(after.stop.len(), 1);
        assert_eq!(after.stop[0].description, DESC_DRAIN_DEADLINE);
        assert_eq!(after.place[0].reason, PlaceReason::Evicted);
    }
}
