//! The scheduler for `system` and `sysbatch` jobs: one allocation of each group on every
//! feasible node (issue 3 grows this; for now it is the simple, complete version).
//!
//! ```text
//!  for each group, for each node (sorted by id):
//!    node down ------------------------------------> stop its allocs (lost)
//!    has an alloc -- node ready but now infeasible -> stop
//!                  -- older version ---------------> in-place, or stop + place here
//!                  -- finished (system) -----------> replace here
//!    no alloc ----- feasible and fits --------------> place here (index 0)
//!                  feasible, no room --------------> failed (queued, blocked eval)
//!  allocs on nodes that no longer exist ------------> stop (lost)
//! ```

use std::collections::BTreeMap;

use orch_common::structs::{
    AllocMetric, Allocation, ClientStatus, DesiredStatus, Evaluation, Job, JobType, Node,
    NodeStatus, TaskGroup,
};

use super::context::{allocs_with_jobs, PlanBuilder};
use super::feasible::{
    assign_ports, check_fit, datacenter_matches, merge_class_eligibility, FeasibilityChecker,
};
use super::generic::Outcome;
use super::rank::{record_exhausted, record_filtered};
use super::reconcile::{tasks_updated, DESC_JOB_STOPPED, DESC_LOST, DESC_NOT_NEEDED, DESC_UPDATED};
use super::rng::Rng;
use super::State;

fn running(a: &Allocation) -> bool {
    a.desired_status == DesiredStatus::Run && !a.client_status.is_terminal()
}

pub(crate) fn compute(eval: &Evaluation, st: &dyn State, job: Option<Job>, now_ms: u64) -> Outcome {
    let allocs = allocs_with_jobs(st, &eval.job_id);
    let mut b = PlanBuilder::new(eval, st, job.as_ref(), now_ms);
    let mut out = Outcome::default();
    let Some(job) = job.filter(|j| !j.stop) else {
        for a in allocs
            .iter()
            .filter(|a| running(a) && a.next_allocation.is_none())
        {
            b.stop(a, DESC_JOB_STOPPED, false, None);
        }
        out.plan = b.plan;
        return out;
    };
    let mut nodes = st.nodes();
    nodes.sort_by(|x, y| x.id.cmp(&y.id));
    let mut rng = Rng::from_str_seed(&eval.id);
    let mut eligibility: BTreeMap<String, bool> = BTreeMap::new();
    for a in allocs
        .iter()
        .filter(|a| job.group(&a.group).is_none() && running(a))
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
        };
        let mut by_node: BTreeMap<String, Vec<Allocation>> = BTreeMap::new();
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
        for node in &nodes {
            let here = by_node.remove(&node.id).unwrap_or_default();
            sys.node(&mut b, node, here, &mut rng);
        }
        for a in by_node.values().flatten().filter(|a| running(a)) {
            b.stop(a, DESC_LOST, true, None);
        }
        out.queued.insert(group.name.clone(), sys.failures);
        if sys.failures > 0 {
            sys.metric.coalesced_failures = sys.failures - 1;
            out.failed.insert(group.name.clone(), sys.metric.clone());
        }
        merge_class_eligibility(&mut eligibility, &sys.checker.class_eligibility);
    }
    out.class_eligibility = eligibility;
    out.plan = b.plan;
    out
}

/// One group's walk over the nodes.
struct GroupPass<'j> {
    job: &'j Job,
    group: &'j TaskGroup,
    checker: FeasibilityChecker,
    metric: AllocMetric,
    failures: u32,
}

impl GroupPass<'_> {
    fn node(&mut self, b: &mut PlanBuilder<'_>, node: &Node, here: Vec<Allocation>, rng: &mut Rng) {
        let batch = self.job.job_type == JobType::Sysbatch;
        if node.status == NodeStatus::Down {
            for a in here.iter().filter(|a| running(a)) {
                b.stop(a, DESC_LOST, true, None);
            }
            return;
        }
        let in_dc = datacenter_matches(&self.job.datacenters, &node.datacenter);
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
        let feasible = self.checker.check_node(node);
        let mut here = here.into_iter();
        if let Some(first) = here.next() {
            for extra in here.filter(running) {
                b.stop(&extra, DESC_NOT_NEEDED, false, None);
            }
            if !in_dc || (node.is_schedulable() && feasible.is_err()) {
                if running(&first) {
                    b.stop(&first, DESC_NOT_NEEDED, false, None);
                }
                return;
            }
            if running(&first) {
                if first.job_version != self.job.version {
                    self.update(b, node, first, rng);
                }
                return;
            }
            if batch || first.client_status == ClientStatus::Lost {
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
            let updated = b.inplace_alloc(&old, self.job);
            b.place(updated);
            return;
        }
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
        if let Some(prev) = previous.as_ref().filter(|p| running(p)) {
            usage.used = usage.used.saturating_sub(&prev.resources.total());
            for p in &prev.resources.ports {
                usage.ports.remove(&p.value);
            }
        }
        let ask = self.group.resources();
        let ports = check_fit(node, &usage, &ask, &self.group.network)
            .and_then(|()| assign_ports(node, &usage, &self.group.network, rng));
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
                b.place(alloc);
            }
            Err(dim) => {
                record_exhausted(&mut self.metric, node, dim);
                self.failures += 1;
            }
        }
    }
}
