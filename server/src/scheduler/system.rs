//! The scheduler for `system` and `sysbatch` jobs: one allocation of each group on every
//! feasible node, including nodes that join (or become ready or eligible) later: those
//! get a `node-update` evaluation per system job (`heartbeat::node_ready_evals`).
//!
//! ```text
//!  for each group, for each node (sorted by id):
//!    node down (or disconnected, group intolerant) -> stop its allocs (lost)
//!    node disconnected, group has lost_after -------> keep its allocs as they are
//!    has an alloc -- marked to migrate (a drain) ----> stop (not replaced)
//!                  -- node ready but now infeasible -> stop
//!                  -- older version ---------------> in-place, or stop + place here
//!                                                    (job `[update]`: at most
//!                                                    max_parallel per evaluation, the
//!                                                    rest after `stagger`: a
//!                                                    `rolling-update` follow-up)
//!                  -- finished (system) -----------> replace here
//!                  -- finished (sysbatch) ---------> never again (runs once per node)
//!    no alloc ----- feasible and fits --------------> place here (index 0)
//!                  feasible, no room --------------> evict lower-priority allocs when
//!                                                    preemption is on (default for
//!                                                    system jobs), else failed
//!                                                    (queued; one blocked eval per job)
//!  allocs on nodes that no longer exist ------------> stop (lost)
//! ```

use std::collections::BTreeMap;

use orch_common::ids::NodeId;
use orch_common::model::{
    triggers, AllocMetric, Allocation, ClientStatus, DesiredStatus, DesiredUpdates, Evaluation,
    Job, JobType, Node, NodeStatus, PlanAnnotations, Resources, SchedulerConfiguration, TaskGroup,
};

use super::context::{allocs_with_jobs, PlanBuilder};
use super::feasible::NodeUsage;
use super::feasible::{assign_ports, check_fit, merge_class_eligibility, FeasibilityChecker};
use super::outcome::Outcome;
use super::preempt::{evictions_on_node, victims, Priorities, PRIORITY_GAP};
use super::rank::{record_exhausted, record_filtered, Ask};
use super::reconcile::{
    tasks_updated, DESC_JOB_STOPPED, DESC_LOST, DESC_MIGRATED, DESC_NOT_NEEDED, DESC_UPDATED,
};
use super::rng::Rng;
use super::state::State;

pub(crate) fn compute(
    eval: &Evaluation,
    st: &dyn State,
    job: Option<Job>,
    config: &SchedulerConfiguration,
    now_ms: u64,
) -> Outcome {
    let allocs = allocs_with_jobs(st, &eval.job_id);
    let mut b = PlanBuilder::new(eval, st, job.as_ref(), now_ms);
    let mut out = Outcome::default();
    let Some(job) = job.filter(|j| !j.stop) else {
        for a in allocs
            .iter()
            .filter(|a| a.holds_resources() && a.next_allocation.is_none())
        {
            b.stop(a, DESC_JOB_STOPPED, false, None);
        }
        out.plan = b.plan;
        return out;
    };
    // The snapshot's shared list, borrowed (no copy of every node per evaluation).
    let shared = st.shared_nodes();
    let mut nodes: Vec<&Node> = shared.iter().collect();
    nodes.sort_by(|x, y| x.id.cmp(&y.id));
    let mut rng = Rng::from_str_seed(&eval.id);
    let mut eligibility: BTreeMap<String, bool> = BTreeMap::new();
    let mut updates: BTreeMap<String, DesiredUpdates> = BTreeMap::new();
    let mut priorities = config
        .preemption_config
        .enabled_for(job.job_type)
        .then(|| Priorities::new(st));
    let mut rolling = job
        .update
        .as_ref()
        .filter(|_| job.job_type == JobType::System)
        .map(|u| Rolling {
            left: u.max_parallel,
            held: 0,
        });
    for a in allocs
        .iter()
        .filter(|a| job.group(&a.group).is_none() && a.holds_resources())
    {
        b.stop(a, DESC_NOT_NEEDED, false, None);
    }
    for group in &job.groups {
        let mut sys = GroupPass {
            job: &job,
            group,
            checker: FeasibilityChecker::new(&job, group),
            metric: AllocMetric::default(),
            failures: 0,
            updates: DesiredUpdates::default(),
            priorities: priorities.as_mut(),
            rolling: rolling.as_mut(),
        };
        let mut by_node: BTreeMap<NodeId, Vec<Allocation>> = BTreeMap::new();
        for a in allocs.iter().filter(|a| {
            a.group == group.name
                && a.next_allocation.is_none()
                && a.desired_status == DesiredStatus::Run
        }) {
            by_node
                .entry(a.node_id.clone())
                .or_default()
                .push(a.clone());
        }
        for node in nodes.iter().copied() {
            let here = by_node.remove(&node.id).unwrap_or_default();
            sys.node(&mut b, node, here, &mut rng);
        }
        for a in by_node.values().flatten().filter(|a| a.holds_resources()) {
            b.stop(a, DESC_LOST, true, None);
            sys.updates.stop += 1;
        }
        updates.insert(group.name.clone(), sys.updates.clone());
        out.queued.insert(group.name.clone(), sys.failures);
        if sys.failures > 0 {
            sys.metric.coalesced_failures = sys.failures - 1;
            out.failed.insert(group.name.clone(), sys.metric.clone());
        }
        merge_class_eligibility(&mut eligibility, &sys.checker.class_eligibility);
    }
    if let (Some(r), Some(u)) = (&rolling, &job.update) {
        if r.held > 0 {
            let stagger = orch_common::duration::millis_saturating(u.stagger);
            out.follow_up = Some((now_ms.saturating_add(stagger), triggers::ROLLING_UPDATE));
        }
    }
    out.class_eligibility = eligibility;
    out.plan = b.plan;
    out.plan.annotations = PlanAnnotations {
        desired_tg_updates: updates,
    };
    out
}

/// One group's walk over the nodes.
struct GroupPass<'j, 'p, 's> {
    job: &'j Job,
    group: &'j TaskGroup,
    checker: FeasibilityChecker,
    metric: AllocMetric,
    failures: u32,
    updates: DesiredUpdates,
    /// Set when the job's type may preempt lower-priority allocations.
    priorities: Option<&'p mut Priorities<'s>>,
    /// Set when a system job has an `[update]`: its destructive updates left in this
    /// evaluation (shared by the groups).
    rolling: Option<&'p mut Rolling>,
}

/// A system job's rolling update within one evaluation: at most `max_parallel`
/// destructive updates; the rest wait for the follow-up evaluation `stagger` later.
struct Rolling {
    left: u32,
    /// Destructive updates left for a later evaluation.
    held: u32,
}

impl GroupPass<'_, '_, '_> {
    fn node(&mut self, b: &mut PlanBuilder<'_>, node: &Node, here: Vec<Allocation>, rng: &mut Rng) {
        let batch = self.job.job_type == JobType::Sysbatch;
        // A disconnected node keeps the allocations of a group that tolerates it: they
        // are not replaced elsewhere anyway, and turn lost when the node is marked down
        // (at the longest `lost_after` of what it runs).
        let tolerated = self
            .group
            .disconnect
            .as_ref()
            .is_some_and(|d| d.lost_after.is_some());
        if node.status == NodeStatus::Disconnected && tolerated {
            self.updates.ignore += here.iter().filter(|a| a.holds_resources()).count() as u32;
            return;
        }
        if matches!(node.status, NodeStatus::Down | NodeStatus::Disconnected) {
            for a in here.iter().filter(|a| a.holds_resources()) {
                b.stop(a, DESC_LOST, true, None);
                self.updates.stop += 1;
            }
            return;
        }
        let in_dc = node.in_datacenters(&self.job.datacenters);
        if in_dc {
            self.metric.nodes_in_pool += 1;
            if node.is_schedulable() {
                *self
                    .metric
                    .nodes_available
                    .entry(node.datacenter.clone())
                    .or_default() += 1;
            }
        }
        let feasible = self.checker.check_node(node).map_err(|r| r.into_owned());
        let mut here = here.into_iter();
        if let Some(first) = here.next() {
            for extra in here.filter(|a| a.holds_resources()) {
                b.stop(&extra, DESC_NOT_NEEDED, false, None);
                self.updates.stop += 1;
            }
            if first.desired_transition.migrate && first.holds_resources() {
                // Drained off this node (`orch node drain`): a system allocation has
                // nowhere else to go, so it is only stopped.
                b.stop(&first, DESC_MIGRATED, false, None);
                self.updates.migrate += 1;
                return;
            }
            if !in_dc || (node.is_schedulable() && feasible.is_err()) {
                if first.holds_resources() {
                    b.stop(&first, DESC_NOT_NEEDED, false, None);
                    self.updates.stop += 1;
                }
                return;
            }
            if first.holds_resources() {
                if first.job_version != self.job.version {
                    self.update(b, node, first, rng);
                } else {
                    self.updates.ignore += 1;
                }
                return;
            }
            if batch || first.client_status == ClientStatus::Lost {
                // Sysbatch runs once per node: a finished run is never repeated.
                self.updates.ignore += 1;
                return;
            }
            // A finished or failed system alloc on a node that still wants one.
            self.place(b, node, Some(first), rng);
            return;
        }
        if !in_dc || !node.is_schedulable() {
            return;
        }
        self.metric.nodes_evaluated += 1;
        if let Err(reason) = feasible {
            record_filtered(&mut self.metric, node, &reason);
            return;
        }
        self.place(b, node, None, rng);
    }

    fn update(&mut self, b: &mut PlanBuilder<'_>, node: &Node, old: Allocation, rng: &mut Rng) {
        let destructive = match old.job.as_ref().and_then(|j| j.group(&self.group.name)) {
            Some(prev) => tasks_updated(prev, self.group),
            None => true,
        };
        if !destructive {
            self.updates.in_place_update += 1;
            let updated = b.inplace_alloc(&old, self.job);
            b.place(updated);
            return;
        }
        if let Some(r) = self.rolling.as_deref_mut() {
            if r.left == 0 {
                // Keeps running the old version until a later evaluation.
                r.held += 1;
                self.updates.ignore += 1;
                return;
            }
            r.left -= 1;
        }
        self.updates.destructive_update += 1;
        self.place(b, node, Some(old), rng);
    }

    /// Places index 0 of the group on `node`, replacing `previous` when given (which is
    /// stopped only if the new one fits).
    fn place(
        &mut self,
        b: &mut PlanBuilder<'_>,
        node: &Node,
        previous: Option<Allocation>,
        rng: &mut Rng,
    ) {
        let mut usage = b.usage(node, &self.job.id, &self.group.name);
        if let Some(prev) = previous.as_ref().filter(|p| p.holds_resources()) {
            usage.used = usage.used.saturating_sub(&prev.resources.total());
            for p in &prev.resources.ports {
                usage.ports.remove(&p.value);
            }
        }
        if previous.as_ref().is_none_or(|p| !p.holds_resources()) {
            self.updates.place += 1;
        }
        let ask = self.group.resources();
        let mut evict = Vec::new();
        let mut fit = check_fit(node, &usage, &ask, &self.group.network);
        if fit.is_err() {
            if let Some(found) = self.preempt(b, node, &usage, &ask) {
                (usage, evict) = found;
                fit = Ok(());
            }
        }
        let ports = fit.and_then(|()| assign_ports(node, &usage, &self.group.network, rng));
        match ports {
            Ok(ports) => {
                let alloc = b.new_alloc(
                    self.job,
                    self.group,
                    0,
                    node,
                    ports,
                    self.metric.clone(),
                    previous.as_ref(),
                );
                if let Some(prev) = &previous {
                    b.stop(prev, DESC_UPDATED, false, Some(alloc.id.clone()));
                }
                self.updates.preemptions += evict.len() as u32;
                for victim in &evict {
                    b.preempt(victim, &alloc);
                }
                b.place(alloc);
            }
            Err(dim) => {
                record_exhausted(&mut self.metric, node, dim);
                self.failures += 1;
            }
        }
    }
}

impl GroupPass<'_, '_, '_> {
    /// Evictions of lower-priority allocations on `node` that make room for one
    /// allocation of the group: the usage afterwards and the victims.
    fn preempt(
        &mut self,
        b: &mut PlanBuilder<'_>,
        node: &Node,
        usage: &NodeUsage,
        ask: &Resources,
    ) -> Option<(NodeUsage, Vec<Allocation>)> {
        let priorities = self.priorities.as_deref_mut()?;
        let max_victim = self.job.priority.checked_sub(PRIORITY_GAP)?;
        let candidates = victims(b, node, &self.job.id, max_victim, priorities);
        if candidates.is_empty() {
            return None;
        }
        let want = Ask {
            resources: ask,
            network: &self.group.network,
            desired_count: 1,
            avoid_node: None,
        };
        let (after, chosen) = evictions_on_node(node, usage, candidates, &want)?;
        Some((after, chosen.into_iter().map(|(a, _)| a).collect()))
    }
}
