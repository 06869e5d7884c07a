//! The scheduling pass for `service` and `batch` jobs: reconcile the job with its
//! allocations, plan its rollout, and place each instance (`Placer`). `process` calls
//! it (and `system::compute` for the other job types).
//!
//! ```text
//!  compute(eval, snapshot, job, config, rollout, now)
//!    reconcile(job, allocs, current deployment) -> stop / place / in-place / delayed
//!    deployment::plan -> create or cancel deployments, canaries, rolling limit
//!      (destructive updates beyond it are left running: `ignore`)
//!    for each placement: feasibility chain -> rank (fit, anti-affinity, reschedule
//!      penalty, affinity, spread) -> best node; none has room and preemption is on
//!      for the job type -> evict lower-priority allocs (preempt.rs)
//!    -> Outcome (plan, failed and queued groups, follow-up)
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use orch_common::ids::{AllocId, NodeId};
use orch_common::model::{
    AllocDeploymentStatus, AllocMetric, AllocatedPort, Allocation, DesiredUpdates, Evaluation, Job,
    Node, PlanAnnotations, SchedulerAlgorithm, SchedulerConfiguration, TaskGroup,
};

use super::context::{allocs_with_jobs, PlanBuilder};
use super::deployment::{self, Rollout};
use super::feasible::{assign_ports, merge_class_eligibility, FeasibilityChecker, NodeUsage};
use super::fxhash::FxHashMap;
use super::outcome::Outcome;
use super::preempt::{self, Priorities};
use super::rank::{
    add_metric, record_exhausted, sample_limit, select, Ask, GroupRanker, Pool,
    MIN_SAMPLE_WITH_PREFERENCES,
};
use super::reconcile::{
    reconcile_with, tracker_for_replacement, NodesById, PlaceReason, Placement, DESC_MIGRATED,
    DESC_RESCHEDULED, DESC_UPDATED,
};
use super::rng::Rng;
use super::state::State;

/// Computes the plan of one service or batch job evaluation.
pub(crate) fn compute(
    eval: &Evaluation,
    st: &dyn State,
    job: Option<Job>,
    config: &SchedulerConfiguration,
    rollout: &Rollout,
    now_ms: u64,
) -> Outcome {
    let allocs = allocs_with_jobs(st, &eval.job_id);
    let nodes = st.shared_nodes();
    let node_map: NodesById<'_> = nodes.iter().map(|n| (&n.id, n)).collect();
    let rec = reconcile_with(
        job.as_ref(),
        &allocs,
        &node_map,
        now_ms,
        rollout.current.as_ref(),
    );
    let mut b = PlanBuilder::new(eval, st, job.as_ref(), now_ms);
    b.plan.deployment_updates = rollout.updates.clone();
    let mut updates: BTreeMap<String, DesiredUpdates> = BTreeMap::new();
    for s in &rec.stop {
        b.stop(&s.alloc, &s.description, s.lost, s.next.clone());
        if job
            .as_ref()
            .is_some_and(|j| j.group(&s.alloc.group).is_some())
        {
            updates.entry(s.alloc.group.clone()).or_default().stop += 1;
        }
    }
    let mut out = Outcome {
        follow_up: rec.follow_up(),
        ..Outcome::default()
    };
    let Some(job) = job.filter(|j| !j.stop) else {
        out.plan = b.plan;
        return out;
    };
    for g in &job.groups {
        updates.entry(g.name.clone()).or_default();
    }
    for a in &rec.ignore {
        updates.entry(a.group.clone()).or_default().ignore += 1;
    }
    for (a, _) in &rec.delayed {
        updates.entry(a.group.clone()).or_default().reschedule_later += 1;
    }
    for a in &rec.canaries {
        updates.entry(a.group.clone()).or_default().canary += 1;
    }
    let mut placer = Placer::new(eval, &job, &nodes, config).with_preemption_state(st);
    {
        // What the job already has where, minus what this plan stops or replaces: the
        // starting counts of distinct_property and spread.
        let leaving: HashSet<&AllocId> = rec
            .stop
            .iter()
            .map(|s| &s.alloc.id)
            .chain(
                rec.place
                    .iter()
                    .filter_map(|p| p.previous.as_ref().map(|a| &a.id)),
            )
            .collect();
        placer.seed(
            allocs
                .iter()
                .filter(|a| a.holds_resources() && !leaving.contains(&a.id))
                .filter_map(|a| node_map.get(&a.node_id).map(|n| (a.group.as_str(), *n))),
        );
    }
    let mut placements = rec.place;
    let mut inplace = Vec::new();
    for a in rec.inplace {
        let Some(group) = job.group(&a.group) else {
            continue;
        };
        let still_fits = node_map
            .get(&a.node_id)
            .is_some_and(|n| placer.checker(&job, group).check_node(n).is_ok());
        if still_fits {
            inplace.push(a);
        } else {
            if let Some(n) = node_map.get(&a.node_id) {
                placer.count(&a.group, n, false);
            }
            placements.push(Placement {
                group: a.group.clone(),
                index: a.index,
                reason: PlaceReason::Destructive,
                previous: Some(a),
            });
        }
    }
    let rollout_plan = deployment::plan(
        &job,
        rollout,
        &allocs,
        &mut placements,
        &inplace,
        &rec.canaries,
        &eval.id,
        now_ms,
    );
    for (name, g) in &rollout_plan.groups {
        for held in &g.held {
            // Left running: back in the distinct_property and spread tallies.
            if let Some(n) = held
                .previous
                .as_ref()
                .and_then(|a| node_map.get(&a.node_id))
            {
                placer.count(name, n, true);
            }
        }
        updates.entry(name.clone()).or_default().ignore += g.held.len() as u32;
        placements.extend(g.canaries.iter().map(|&index| Placement {
            group: name.clone(),
            index,
            reason: PlaceReason::Canary,
            previous: None,
        }));
    }
    for a in inplace {
        updates.entry(a.group.clone()).or_default().in_place_update += 1;
        let mut updated = b.inplace_alloc(&a, &job);
        if let Some(id) = rollout_plan.deployment_id(&a.group) {
            if updated.deployment_id.as_ref() != Some(id) {
                // Its health is tracked again, in the new deployment.
                updated.deployment_id = Some(id.clone());
                updated.deployment_status = None;
            }
        }
        b.place(updated);
    }
    for p in &placements {
        let u = updates.entry(p.group.clone()).or_default();
        match p.reason {
            PlaceReason::New | PlaceReason::Lost | PlaceReason::Disconnected => u.place += 1,
            PlaceReason::Evicted => u.migrate += 1,
            PlaceReason::Reschedule => u.reschedule_now += 1,
            PlaceReason::Destructive => u.destructive_update += 1,
            PlaceReason::Migrate => u.migrate += 1,
            PlaceReason::Canary => u.canary += 1,
        }
    }
    for g in &job.groups {
        out.queued.insert(g.name.clone(), 0);
    }
    // What replacements read of the chains they continue (only when there are some).
    let by_id: HashMap<&AllocId, &Allocation> = if placements.iter().any(|p| p.previous.is_some()) {
        allocs.iter().map(|a| (&a.id, a)).collect()
    } else {
        HashMap::new()
    };
    for p in placements {
        let Some(group) = job.group(&p.group) else {
            continue;
        };
        if let Some(m) = out.failed.get_mut(&p.group) {
            // The plan only gets fuller: the rest of the group fails the same way.
            m.coalesced_failures += 1;
            *out.queued.entry(p.group.clone()).or_default() += 1;
            continue;
        }
        let avoid = match p.reason {
            PlaceReason::Reschedule => p.previous.as_ref().map(|a| a.node_id.clone()),
            _ => None,
        };
        match placer.place_one(&mut b, &job, group, avoid.as_ref()) {
            Ok(Placed {
                node_index,
                ports,
                metric,
                evict,
            }) => {
                let node = placer.node(node_index);
                let mut alloc = b.new_alloc(
                    &job,
                    group,
                    p.index,
                    node,
                    ports,
                    metric,
                    p.previous.as_ref(),
                );
                if let Some(prev) = &p.previous {
                    // The failures of the chain go with it, whatever becomes of the
                    // earlier allocations (garbage collection).
                    alloc.reschedule_tracker = Some(tracker_for_replacement(
                        prev,
                        &by_id,
                        &group.reschedule,
                        now_ms,
                    ));
                }
                alloc.deployment_id = rollout_plan.deployment_id(&p.group).cloned();
                if p.reason == PlaceReason::Canary {
                    alloc.deployment_status = Some(AllocDeploymentStatus {
                        canary: true,
                        ..AllocDeploymentStatus::default()
                    });
                }
                if let Some(prev) = &p.previous {
                    match p.reason {
                        PlaceReason::Reschedule => {
                            b.stop(prev, DESC_RESCHEDULED, false, Some(alloc.id.clone()))
                        }
                        PlaceReason::Destructive => {
                            b.stop(prev, DESC_UPDATED, false, Some(alloc.id.clone()))
                        }
                        PlaceReason::Migrate => {
                            b.stop(prev, DESC_MIGRATED, false, Some(alloc.id.clone()))
                        }
                        // Already stopped unconditionally: only linked.
                        PlaceReason::Lost | PlaceReason::Evicted => {
                            b.link_replacement(prev, &alloc.id)
                        }
                        PlaceReason::New | PlaceReason::Disconnected | PlaceReason::Canary => {}
                    }
                }
                if !evict.is_empty() {
                    updates.entry(p.group.clone()).or_default().preemptions += evict.len() as u32;
                    for victim in &evict {
                        b.preempt(victim, &alloc);
                    }
                }
                b.place(alloc);
            }
            Err(metric) => {
                out.failed.insert(p.group.clone(), *metric);
                *out.queued.entry(p.group.clone()).or_default() += 1;
            }
        }
    }
    out.class_eligibility = placer.class_eligibility();
    out.plan = b.plan;
    out.plan.deployment = rollout_plan.deployment;
    out.plan.annotations = PlanAnnotations {
        desired_tg_updates: updates,
    };
    out
}

/// Where one instance goes.
pub(crate) struct Placed {
    /// Index of the chosen node among the placer's candidates (`Placer::node`).
    pub node_index: usize,
    pub ports: Vec<AllocatedPort>,
    pub metric: AllocMetric,
    /// Lower-priority allocations to evict first (preemption), usually none.
    pub evict: Vec<Allocation>,
}

/// Picks nodes for one job's placements over a seeded shuffle of the ready nodes.
pub(crate) struct Placer<'s, 'n> {
    /// Borrowed from the snapshot's node list: no per-eval copies of 10,000 nodes.
    candidates: Vec<&'n Node>,
    /// Group -> its feasible candidates (built on the group's first placement).
    pools: HashMap<String, Pool>,
    /// Usage per candidate index for `memo_group`, dropped for the nodes the plan
    /// changes: a placement walk visits the same nodes again and again (1,000
    /// placements over a few thousand nodes).
    usage_memo: Vec<Option<NodeUsage>>,
    memo_group: String,
    /// The candidate the last placement went to (the node usually changed next).
    last_chosen: Option<usize>,
    /// Node id -> candidate index, built the first time another node changes.
    index_of: Option<FxHashMap<&'n NodeId, usize>>,
    limit: usize,
    rng: Rng,
    checkers: HashMap<String, FeasibilityChecker>,
    rankers: HashMap<String, GroupRanker>,
    base_metric: AllocMetric,
    preemption: bool,
    priorities: Option<Priorities<'s>>,
}

impl<'s, 'n> Placer<'s, 'n> {
    pub fn new(
        eval: &Evaluation,
        job: &Job,
        nodes: &'n [Node],
        config: &SchedulerConfiguration,
    ) -> Placer<'s, 'n> {
        let mut base_metric = AllocMetric::default();
        let mut candidates = Vec::new();
        for n in nodes.iter().filter(|n| n.in_datacenters(&job.datacenters)) {
            base_metric.nodes_in_pool += 1;
            if n.is_schedulable() {
                // `get_mut` first: `entry` would copy the name for each of 10,000 nodes.
                match base_metric.nodes_available.get_mut(&n.datacenter) {
                    Some(count) => *count += 1,
                    None => {
                        base_metric.nodes_available.insert(n.datacenter.clone(), 1);
                    }
                }
                candidates.push(n);
            }
        }
        // A stable order first, so the seeded shuffle is reproducible (the store
        // lists nodes by id already; sorting 10,000 ids per evaluation is not free).
        if !candidates.is_sorted_by(|a, b| a.id <= b.id) {
            candidates.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let mut rng = Rng::from_str_seed(&eval.id);
        rng.shuffle(&mut candidates);
        let limit = sample_limit(candidates.len());
        let mut checkers = HashMap::new();
        let mut rankers = HashMap::new();
        for g in &job.groups {
            checkers.insert(g.name.clone(), FeasibilityChecker::new(job, g));
            let mut ranker = GroupRanker::new(config.scheduler_algorithm, job, g);
            if ranker.has_spreads() {
                for n in &candidates {
                    ranker.observe_node(n);
                }
            }
            rankers.insert(g.name.clone(), ranker);
        }
        Placer {
            usage_memo: vec![None; candidates.len()],
            memo_group: String::new(),
            last_chosen: None,
            index_of: None,
            candidates,
            pools: HashMap::new(),
            limit,
            rng,
            checkers,
            rankers,
            base_metric,
            preemption: config.preemption_config.enabled_for(job.job_type),
            priorities: None,
        }
    }

    /// Lets placements evict lower-priority allocations read job priorities from
    /// `state` (without it, preemption is off).
    pub fn with_preemption_state(mut self, state: &'s dyn State) -> Placer<'s, 'n> {
        if self.preemption {
            self.priorities = Some(Priorities::new(state));
        }
        self
    }

    /// The candidate node at `index`.
    pub fn node(&self, index: usize) -> &'n Node {
        self.candidates[index]
    }

    /// Counts the job's existing allocations (group, node) into the distinct_property
    /// and spread tallies.
    pub fn seed<'a>(&mut self, allocs: impl Iterator<Item = (&'a str, &'a Node)>) {
        let tracked = self.checkers.values().any(|c| c.has_distinct_properties())
            || self.rankers.values().any(|r| r.has_spreads());
        if !tracked {
            return;
        }
        for (group, node) in allocs {
            self.count(group, node, true);
        }
    }

    /// Counts one allocation of `group` on `node` in or out of the tallies.
    pub fn count(&mut self, group: &str, node: &Node, added: bool) {
        count_into(&mut self.checkers, &mut self.rankers, group, node, added);
    }

    pub fn checker(&mut self, job: &Job, group: &TaskGroup) -> &mut FeasibilityChecker {
        self.checkers
            .entry(group.name.clone())
            .or_insert_with(|| FeasibilityChecker::new(job, group))
    }

    /// Chooses a node for one instance of `group`, or returns the metric explaining why
    /// no node would do. When none has room and preemption is on, evicting
    /// lower-priority allocations is the last resort.
    pub fn place_one(
        &mut self,
        b: &mut PlanBuilder<'_>,
        job: &Job,
        group: &TaskGroup,
        avoid_node: Option<&NodeId>,
    ) -> Result<Placed, Box<AllocMetric>> {
        let ask = group.resources();
        self.forget_changed_usage(b, &group.name);
        // Every group's checker and ranker exist from `new` (looked up without
        // allocating a key per placement); a group added since is set up here.
        if !self.checkers.contains_key(&group.name) {
            self.checkers
                .insert(group.name.clone(), FeasibilityChecker::new(job, group));
        }
        if !self.rankers.contains_key(&group.name) {
            self.rankers.insert(
                group.name.clone(),
                GroupRanker::new(SchedulerAlgorithm::default(), job, group),
            );
        }
        let (Some(checker), Some(ranker)) = (
            self.checkers.get_mut(&group.name),
            self.rankers.get_mut(&group.name),
        ) else {
            return Err(Box::new(self.base_metric.clone()));
        };
        if !self.pools.contains_key(&group.name) {
            let pool = Pool::build(&self.candidates, checker);
            self.pools.insert(group.name.clone(), pool);
        }
        let Some(pool) = self.pools.get_mut(&group.name) else {
            return Err(Box::new(self.base_metric.clone()));
        };
        let mut metric = self.base_metric.clone();
        add_metric(&mut metric, &pool.seen);
        let want = Ask {
            resources: &ask,
            network: &group.network,
            desired_count: group.count,
            avoid_node,
        };
        let limit = if ranker.has_preferences() {
            self.limit.max(MIN_SAMPLE_WITH_PREFERENCES)
        } else {
            self.limit
        };
        let usage_memo = &mut self.usage_memo;
        let choice = select(
            &self.candidates,
            pool,
            limit,
            checker,
            ranker,
            want,
            &mut |idx, node| {
                usage_memo[idx]
                    .get_or_insert_with(|| b.usage(node, &job.id, &group.name))
                    .clone()
            },
            &mut metric,
        );
        let (node_index, usage, evict) = match choice {
            Some(choice) => (choice.node_index, choice.usage, Vec::new()),
            None => {
                let Some(priorities) = self.priorities.as_mut() else {
                    return Err(Box::new(metric));
                };
                let found = preempt::find(
                    &self.candidates,
                    limit,
                    checker,
                    job,
                    want,
                    b,
                    priorities,
                    &group.name,
                );
                let Some(ev) = found else {
                    return Err(Box::new(metric));
                };
                (ev.node_index, ev.usage, ev.evict)
            }
        };
        let node = self.candidates[node_index];
        self.last_chosen = Some(node_index);
        match assign_ports(node, &usage, &group.network, &mut self.rng) {
            Ok(ports) => {
                count_into(
                    &mut self.checkers,
                    &mut self.rankers,
                    &group.name,
                    node,
                    true,
                );
                Ok(Placed {
                    node_index,
                    ports,
                    metric,
                    evict,
                })
            }
            Err(dim) => {
                record_exhausted(&mut metric, node, dim);
                Err(Box::new(metric))
            }
        }
    }

    /// Drops the memoized usage of the nodes the plan changed since the last
    /// placement (all of it when the group changes: the counts are per group).
    fn forget_changed_usage(&mut self, b: &mut PlanBuilder<'_>, group: &str) {
        let changed = b.take_changed_nodes();
        if self.memo_group != group {
            self.memo_group = group.to_string();
            self.usage_memo.iter_mut().for_each(|u| *u = None);
            return;
        }
        if changed.is_empty() {
            return;
        }
        let candidates = &self.candidates;
        let last = self.last_chosen.map(|i| (i, &candidates[i].id));
        if let ([id], Some((i, last_id))) = (changed.as_slice(), last) {
            if id == last_id {
                self.usage_memo[i] = None;
                return;
            }
        }
        let index_of = self.index_of.get_or_insert_with(|| {
            candidates
                .iter()
                .enumerate()
                .map(|(i, n)| (&n.id, i))
                .collect()
        });
        for id in &changed {
            if let Some(&i) = index_of.get(id) {
                self.usage_memo[i] = None;
            }
        }
    }

    /// Class -> eligible for at least one group of the job.
    pub fn class_eligibility(&self) -> BTreeMap<String, bool> {
        let mut merged = BTreeMap::new();
        for checker in self.checkers.values() {
            merge_class_eligibility(&mut merged, &checker.class_eligibility);
        }
        merged
    }
}

/// Counts one allocation of `group` on `node` into the distinct_property tallies of
/// every group and the spread tallies of its own group (a free function so the caller
/// can keep borrowing its candidate node).
fn count_into(
    checkers: &mut HashMap<String, FeasibilityChecker>,
    rankers: &mut HashMap<String, GroupRanker>,
    group: &str,
    node: &Node,
    added: bool,
) {
    for c in checkers.values_mut() {
        if c.has_distinct_properties() {
            c.count_alloc(group, node, added);
        }
    }
    if let Some(r) = rankers.get_mut(group) {
        if r.has_spreads() {
            r.count_alloc(node, added);
        }
    }
}
