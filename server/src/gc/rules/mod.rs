//! Which objects a garbage collection deletes: a pure function of a state view
//! (`GcView`, which the store defines and fills in one read: `crate::state::views`), the
//! thresholds and `now` (no SQL, no clock), after Nomad's core scheduler.
//!
//! ```text
//!  jobs:   dead (stopped, or a finished batch/sysbatch job), idle for job_gc_threshold,
//!          every evaluation and allocation collectable under that threshold
//!          -> the job, its versions, its evaluations and allocations
//!  evals:  terminal, unchanged for eval_gc_threshold (batch_eval_gc_threshold for
//!          batch/sysbatch), every allocation it placed collectable
//!          -> the evaluation and its allocations
//!          (collectable allocations of an evaluation that must stay go anyway)
//!  allocs: terminal on the client, unchanged for the threshold, and not needed:
//!          a failed allocation of a live job with no replacement yet stays (the
//!          rescheduler reads it); a batch job's allocations stay while the job is
//!          live (a finished batch allocation must never run again)
//!  nodes:  down for node_gc_threshold with no allocation left pending or running
//!  history, per job, whatever the age (a crash loop or a batch job run over and over
//!  must not pile up until the thresholds pass):
//!          terminal evaluations beyond the newest evals_per_job -> deleted
//!          terminal allocations beyond the newest allocs_per_job -> deleted, unless
//!          needed: the newest allocation of each slot (group and index; group and node
//!          for system jobs) of a job still stored (a finished batch instance keeps its
//!          slot), a failed one waiting for its replacement (as above), and the chain of
//!          previous allocations of one that carries no reschedule tracker
//! ```
//!
//! Allocations have no threshold of their own: they go with their evaluation (or with
//! their job), as in Nomad. An allocation whose evaluation was collected by the
//! per-job cap goes by the rules of allocations whose evaluation is gone.

use std::collections::{BTreeSet, HashMap};

use orch_common::ids::{AllocId, EvalId, JobId, NodeId};
use orch_common::model::{ClientStatus, DesiredStatus, JobStatus, JobType, NodeStatus};

use crate::state::views::{GcAlloc, GcEval, GcJob, GcView};

/// How long (ms) an object must have been unchanged before it is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    pub job_ms: u64,
    pub eval_ms: u64,
    pub batch_eval_ms: u64,
    pub node_ms: u64,
}

impl Thresholds {
    /// Every threshold zero: `orch system gc` collects whatever the rules allow now.
    pub const FORCE: Thresholds = Thresholds {
        job_ms: 0,
        eval_ms: 0,
        batch_eval_ms: 0,
        node_ms: 0,
    };
}

/// How much terminal history each job keeps whatever its age: its newest terminal
/// allocations and evaluations (plus the allocations the scheduler still needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCaps {
    pub allocs_per_job: usize,
    pub evals_per_job: usize,
}

/// The ids to delete, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collection {
    pub jobs: Vec<JobId>,
    pub evals: Vec<EvalId>,
    pub allocs: Vec<AllocId>,
    pub nodes: Vec<NodeId>,
}

impl Collection {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.evals.is_empty()
            && self.allocs.is_empty()
            && self.nodes.is_empty()
    }

    /// Splits into parts of at most `max` ids each (at least 1), allocations first, then
    /// evaluations, jobs and nodes: applied in order, a job never goes before its
    /// allocations, and a pass cut short leaves nothing that points at a deleted row
    /// but what the next pass collects.
    pub fn batches(self, max: usize) -> Vec<Collection> {
        let mut parts = Batches {
            max: max.max(1),
            out: Vec::new(),
            current: Collection::default(),
            size: 0,
        };
        parts.add(self.allocs, |c| &mut c.allocs);
        parts.add(self.evals, |c| &mut c.evals);
        parts.add(self.jobs, |c| &mut c.jobs);
        parts.add(self.nodes, |c| &mut c.nodes);
        if parts.size > 0 {
            parts.out.push(parts.current);
        }
        parts.out
    }
}

/// `Collection::batches` under way: the parts filled, and the one being filled.
struct Batches {
    max: usize,
    out: Vec<Collection>,
    current: Collection,
    size: usize,
}

impl Batches {
    /// Adds one kind of ids, to the list of each part that `slot` picks.
    fn add<T>(&mut self, ids: Vec<T>, slot: fn(&mut Collection) -> &mut Vec<T>) {
        for id in ids {
            if self.size == self.max {
                self.out.push(std::mem::take(&mut self.current));
                self.size = 0;
            }
            slot(&mut self.current).push(id);
            self.size += 1;
        }
    }
}

/// The ids of a set, owned, in order.
fn owned<T: Clone>(ids: BTreeSet<&T>) -> Vec<T> {
    ids.into_iter().cloned().collect()
}

fn old_enough(time_ms: u64, threshold_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(time_ms) >= threshold_ms
}

fn runs_to_completion(t: JobType) -> bool {
    matches!(t, JobType::Batch | JobType::Sysbatch)
}

/// The indexes the passes share.
struct Lookup<'a> {
    jobs: HashMap<&'a JobId, &'a GcJob>,
    evals_by_job: HashMap<&'a JobId, Vec<&'a GcEval>>,
    allocs_by_eval: HashMap<&'a EvalId, Vec<&'a GcAlloc>>,
    allocs_by_job: HashMap<&'a JobId, Vec<&'a GcAlloc>>,
    now: u64,
}

impl<'a> Lookup<'a> {
    fn new(view: &'a GcView, now: u64) -> Lookup<'a> {
        let mut l = Lookup {
            jobs: view.jobs.iter().map(|j| (&j.id, j)).collect(),
            evals_by_job: HashMap::new(),
            allocs_by_eval: HashMap::new(),
            allocs_by_job: HashMap::new(),
            now,
        };
        for e in &view.evals {
            l.evals_by_job.entry(&e.job_id).or_default().push(e);
        }
        for a in &view.allocs {
            l.allocs_by_eval.entry(&a.eval_id).or_default().push(a);
            l.allocs_by_job.entry(&a.job_id).or_default().push(a);
        }
        l
    }

    /// May this allocation go (its job as stored, `None` when purged)?
    fn alloc_collectable(&self, a: &GcAlloc, job: Option<&GcJob>, threshold: u64) -> bool {
        if !a.client_status.is_terminal() || !old_enough(a.modify_time, threshold, self.now) {
            return false;
        }
        let job_done = job.is_none_or(|j| j.stop || j.status == JobStatus::Dead);
        // A failed allocation of a live job is what the rescheduler builds its
        // replacement from; it may go once replaced, or once it is not wanted anyway.
        job_done
            || a.desired_status != DesiredStatus::Run
            || a.client_status != ClientStatus::Failed
            || a.replaced
    }

    /// Whether the allocations of a batch evaluation must stay because its job is live;
    /// `allow_batch` (the job pass) lets a finished, not stopped batch job go.
    fn batch_job_keeps_allocs(job: Option<&GcJob>, allow_batch: bool) -> bool {
        match job {
            None => false,
            Some(j) if j.status != JobStatus::Dead => true,
            Some(j) => !(j.stop || allow_batch),
        }
    }

    /// An evaluation (or, for `None`, allocations whose evaluation is gone) and its
    /// allocations: whether the evaluation may go, and which allocations may.
    fn eval_collection(
        &self,
        eval: Option<&GcEval>,
        job_type: JobType,
        allocs: &[&'a GcAlloc],
        job: Option<&GcJob>,
        threshold: u64,
        allow_batch: bool,
    ) -> (bool, Vec<&'a GcAlloc>) {
        if let Some(e) = eval {
            if !e.status.is_terminal() || !old_enough(e.modify_time, threshold, self.now) {
                return (false, Vec::new());
            }
        }
        if runs_to_completion(job_type) && Self::batch_job_keeps_allocs(job, allow_batch) {
            // Only allocations of an earlier job with the same id (purged, then
            // registered again) may go: the live job never ran them.
            let earlier = job.map_or(0, |j| j.create_index);
            let old = allocs
                .iter()
                .copied()
                .filter(|a| a.create_index < earlier && self.alloc_collectable(a, None, threshold))
                .collect();
            return (false, old);
        }
        let mut all = true;
        let mut out = Vec::new();
        for a in allocs {
            if self.alloc_collectable(a, job, threshold) {
                out.push(*a);
            } else {
                all = false;
            }
        }
        (all, out)
    }

    /// The time of the job's last change: its submission, or any of its evaluations'
    /// or allocations' (a stop writes an evaluation).
    fn job_last_change(&self, job: &GcJob) -> u64 {
        let evals = self.evals_by_job.get(&job.id).into_iter().flatten();
        let allocs = self.allocs_by_job.get(&job.id).into_iter().flatten();
        evals
            .map(|e| e.modify_time)
            .chain(allocs.map(|a| a.modify_time))
            .fold(job.submit_time, u64::max)
    }

    /// Whether the job may go with everything it has.
    fn job_collectable(&self, job: &GcJob, threshold: u64) -> bool {
        let dead = job.status == JobStatus::Dead && (job.stop || runs_to_completion(job.job_type));
        if !dead || !old_enough(self.job_last_change(job), threshold, self.now) {
            return false;
        }
        let evals = self.evals_by_job.get(&job.id).into_iter().flatten();
        for e in evals {
            let allocs = self
                .allocs_by_eval
                .get(&e.id)
                .map_or(&[][..], Vec::as_slice);
            if !self
                .eval_collection(Some(e), e.job_type, allocs, Some(job), threshold, true)
                .0
            {
                return false;
            }
        }
        // Allocations whose evaluation is gone count too.
        self.allocs_by_job
            .get(&job.id)
            .into_iter()
            .flatten()
            .all(|a| self.alloc_collectable(a, Some(job), threshold))
    }
}

/// The allocations of one job (`job`: as stored, `None` when purged) that the
/// scheduler still reads, however old: the newest of each slot of a stored job, and
/// the chains it walks for allocations without a reschedule tracker.
fn needed_history<'a>(job: Option<&GcJob>, allocs: &[&'a GcAlloc]) -> BTreeSet<&'a AllocId> {
    let mut needed = BTreeSet::new();
    let Some(job) = job else { return needed };
    let per_node = matches!(job.job_type, JobType::System | JobType::Sysbatch);
    let mut heads: HashMap<(&str, &str, u32), &GcAlloc> = HashMap::new();
    for a in allocs.iter().filter(|a| job.groups.contains(&a.group)) {
        let slot = if per_node {
            (a.group.as_str(), a.node_id.as_str(), 0)
        } else {
            (a.group.as_str(), "", a.index)
        };
        let head = heads.entry(slot).or_insert(a);
        if (a.create_index, &a.id) > (head.create_index, &head.id) {
            *head = a;
        }
    }
    let by_id: HashMap<&AllocId, &GcAlloc> = allocs.iter().map(|a| (&a.id, *a)).collect();
    for head in heads.into_values() {
        needed.insert(&head.id);
        if per_node {
            continue; // system jobs are not rescheduled
        }
        let mut prev = head.untracked_previous.as_ref();
        while let Some(p) = prev.and_then(|id| by_id.get(id)) {
            if !needed.insert(&p.id) {
                break;
            }
            prev = p.untracked_previous.as_ref();
        }
    }
    needed
}

/// Of `items`, those `terminal` beyond the newest `cap` of them (by create index, then
/// id), oldest last.
fn beyond_newest<'a, T, Id: Ord + 'a>(
    items: &[&'a T],
    cap: usize,
    terminal: impl Fn(&T) -> bool,
    key: impl Fn(&'a T) -> (u64, &'a Id),
) -> Vec<&'a T> {
    let mut done: Vec<&'a T> = items.iter().copied().filter(|t| terminal(t)).collect();
    if done.len() <= cap {
        return Vec::new();
    }
    done.sort_by(|x, y| key(y).cmp(&key(x)));
    done.split_off(cap)
}

/// Each job's terminal allocations and evaluations beyond its newest `caps`, that may
/// go whatever their age (never a job's that `jobs` already deletes whole).
fn beyond_caps<'a>(
    l: &Lookup<'a>,
    caps: &HistoryCaps,
    jobs: &BTreeSet<&JobId>,
    evals: &mut BTreeSet<&'a EvalId>,
    allocs: &mut BTreeSet<&'a AllocId>,
) {
    for (job_id, job_allocs) in l.allocs_by_job.iter().filter(|(j, _)| !jobs.contains(*j)) {
        let old = beyond_newest(
            job_allocs,
            caps.allocs_per_job,
            |a| a.client_status.is_terminal(),
            |a| (a.create_index, &a.id),
        );
        if old.is_empty() {
            continue;
        }
        let job = l.jobs.get(job_id).copied();
        let needed = needed_history(job, job_allocs);
        for a in old {
            if !needed.contains(&a.id) && l.alloc_collectable(a, job, 0) {
                allocs.insert(&a.id);
            }
        }
    }
    for (_, job_evals) in l.evals_by_job.iter().filter(|(j, _)| !jobs.contains(*j)) {
        let old = beyond_newest(
            job_evals,
            caps.evals_per_job,
            |e| e.status.is_terminal(),
            |e| (e.create_index, &e.id),
        );
        evals.extend(old.into_iter().map(|e| &e.id));
    }
}

/// Everything a garbage collection at `now` (ms since the epoch) deletes.
pub fn collect(view: &GcView, th: &Thresholds, caps: &HistoryCaps, now: u64) -> Collection {
    let l = Lookup::new(view, now);
    let mut jobs = BTreeSet::new();
    let mut evals = BTreeSet::new();
    let mut allocs = BTreeSet::new();

    for job in &view.jobs {
        if l.job_collectable(job, th.job_ms) {
            jobs.insert(&job.id);
        }
    }
    for job_id in &jobs {
        for e in l.evals_by_job.get(job_id).into_iter().flatten() {
            evals.insert(&e.id);
        }
        for a in l.allocs_by_job.get(job_id).into_iter().flatten() {
            allocs.insert(&a.id);
        }
    }

    let threshold_for = |t: JobType| {
        if runs_to_completion(t) {
            th.batch_eval_ms
        } else {
            th.eval_ms
        }
    };
    let eval_ids: std::collections::HashSet<&EvalId> = view.evals.iter().map(|e| &e.id).collect();
    for e in &view.evals {
        if jobs.contains(&e.job_id) {
            continue;
        }
        let job = l.jobs.get(&e.job_id).copied();
        let placed = l.allocs_by_eval.get(&e.id).map_or(&[][..], Vec::as_slice);
        let (eval_goes, going) = l.eval_collection(
            Some(e),
            e.job_type,
            placed,
            job,
            threshold_for(e.job_type),
            false,
        );
        if eval_goes {
            evals.insert(&e.id);
        }
        allocs.extend(going.into_iter().map(|a| &a.id));
    }
    // Allocations whose evaluation was collected before (or never stored).
    for (eval_id, placed) in &l.allocs_by_eval {
        if eval_ids.contains(eval_id) {
            continue;
        }
        for a in placed {
            if jobs.contains(&a.job_id) {
                continue;
            }
            let job = l.jobs.get(&a.job_id).copied();
            let job_type = job.map_or(JobType::Service, |j| j.job_type);
            let (_, going) =
                l.eval_collection(None, job_type, &[*a], job, threshold_for(job_type), false);
            allocs.extend(going.into_iter().map(|a| &a.id));
        }
    }

    beyond_caps(&l, caps, &jobs, &mut evals, &mut allocs);

    let mut live_on: std::collections::HashSet<&NodeId> = std::collections::HashSet::new();
    for a in &view.allocs {
        if !a.client_status.is_terminal() {
            live_on.insert(&a.node_id);
        }
    }
    let nodes = view
        .nodes
        .iter()
        .filter(|n| {
            n.status == NodeStatus::Down
                && old_enough(n.status_updated_at, th.node_ms, now)
                && !live_on.contains(&n.id)
        })
        .map(|n| n.id.clone());

    let mut nodes: Vec<NodeId> = nodes.collect();
    nodes.sort();
    Collection {
        jobs: owned(jobs),
        evals: owned(evals),
        allocs: owned(allocs),
        nodes,
    }
}

#[cfg(test)]
mod tests;
