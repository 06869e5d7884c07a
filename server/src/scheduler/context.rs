//! The plan under construction and the node usage it implies: existing allocations,
//! minus the ones the plan stops or replaces, plus the ones it places. Placements made
//! earlier in the same plan count against a node's capacity and ports.

use std::collections::HashMap;

use orch_common::ids::{AllocId, JobId, NodeId};
use orch_common::model::{
    AllocMetric, AllocatedPort, AllocatedResources, Allocation, ClientStatus, DesiredStatus,
    Evaluation, Job, Node, NodeAllocated, Plan, TaskGroup,
};

use super::feasible::NodeUsage;
use super::fxhash::{FxHashMap, FxHashSet};
use super::state::State;

/// Adds one allocation to a usage tally.
pub fn add_to_usage(usage: &mut NodeUsage, a: &Allocation, job_id: &JobId, group: &str) {
    usage.used = usage.used.add(&a.resources.total());
    usage
        .ports
        .extend(a.resources.ports.iter().map(|p| p.value));
    if a.job_id == *job_id {
        usage.job_allocs += 1;
        if a.group == group {
            usage.group_allocs += 1;
        }
    }
}

/// The job's allocations, with the job version each live one runs filled in from the
/// state when the allocation does not embed it (the store keeps jobs per version).
pub fn allocs_with_jobs(state: &dyn State, job_id: &JobId) -> Vec<Allocation> {
    let mut versions: HashMap<u64, Option<Job>> = HashMap::new();
    let mut allocs = state.allocs_by_job(job_id);
    for a in allocs
        .iter_mut()
        .filter(|a| a.job.is_none() && a.holds_resources())
    {
        let job = versions
            .entry(a.job_version)
            .or_insert_with(|| state.job_version(job_id, a.job_version));
        a.job = job.clone().map(Box::new);
    }
    allocs
}

/// A plan being built from one snapshot.
pub struct PlanBuilder<'s> {
    state: &'s dyn State,
    pub plan: Plan,
    node_allocs: FxHashMap<NodeId, Vec<Allocation>>,
    /// `State::node_allocated` per node, read once per plan.
    node_sums: FxHashMap<NodeId, NodeAllocated>,
    /// The job whose allocations `own_allocs` holds, by node.
    own_job: Option<JobId>,
    own_allocs: FxHashMap<NodeId, Vec<Allocation>>,
    /// Nodes the plan stops, places or evicts on: only their usage needs the plan's
    /// lists; every other node's is the state's sum (the fast path).
    touched: FxHashSet<NodeId>,
    /// Nodes touched since the last `take_changed_nodes` (callers that memoize usage
    /// drop those entries).
    changed: Vec<NodeId>,
    now_ms: u64,
}

impl<'s> PlanBuilder<'s> {
    pub fn new(eval: &Evaluation, state: &'s dyn State, job: Option<&Job>, now_ms: u64) -> Self {
        PlanBuilder {
            state,
            plan: Plan {
                eval_id: eval.id.clone(),
                priority: eval.priority,
                job: job.cloned(),
                snapshot_index: state.index(),
                ..Plan::default()
            },
            node_allocs: FxHashMap::default(),
            node_sums: FxHashMap::default(),
            own_job: None,
            own_allocs: FxHashMap::default(),
            touched: FxHashSet::default(),
            changed: Vec::new(),
            now_ms,
        }
    }

    /// Adds a stop (desired `stop`), optionally marking it lost and linking its
    /// replacement.
    pub fn stop(
        &mut self,
        alloc: &Allocation,
        description: &str,
        lost: bool,
        next: Option<AllocId>,
    ) {
        let mut a = alloc.clone();
        a.desired_status = DesiredStatus::Stop;
        a.desired_description = description.to_string();
        if lost {
            a.client_status = ClientStatus::Lost;
            a.client_description = description.to_string();
        }
        if next.is_some() {
            a.next_allocation = next;
        }
        a.modify_time = self.now_ms;
        self.touch(&a.node_id);
        self.plan
            .node_update
            .entry(a.node_id.clone())
            .or_default()
            .push(a);
    }

    /// Links an already planned stop to its replacement.
    pub fn link_replacement(&mut self, old: &Allocation, new_id: &AllocId) {
        if let Some(stop) = self
            .plan
            .node_update
            .get_mut(&old.node_id)
            .and_then(|v| v.iter_mut().find(|a| a.id == old.id))
        {
            stop.next_allocation = Some(new_id.clone());
        }
    }

    /// Adds a new allocation, or a new version of an existing one (same id).
    pub fn place(&mut self, alloc: Allocation) {
        self.touch(&alloc.node_id);
        self.plan
            .node_allocation
            .entry(alloc.node_id.clone())
            .or_default()
            .push(alloc);
    }

    /// The node's usage if the plan so far were committed.
    ///
    /// Fast path: the state's per-node sum (`State::node_allocated`), minus the job's
    /// own allocations there, plus those the plan leaves alone and the plan's
    /// placements, minus its evictions — no read of the node's allocations. When the
    /// plan stops another job's allocation on the node, the node's allocations are read.
    pub fn usage(&mut self, node: &Node, job_id: &JobId, group: &str) -> NodeUsage {
        self.load_own_allocs(job_id);
        if !self.touched.contains(&node.id) && !self.own_allocs.contains_key(&node.id) {
            // Neither the plan nor the job has anything on the node.
            let base = self.state.node_allocated(&node.id);
            return NodeUsage {
                used: base.resources,
                ports: base.ports.into_iter().collect(),
                job_allocs: 0,
                group_allocs: 0,
            };
        }
        self.compute_usage(node, job_id, group)
    }

    /// The nodes the plan touched since the last call (a usage memo drops them).
    pub fn take_changed_nodes(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.changed)
    }

    fn touch(&mut self, node_id: &NodeId) {
        if !self.touched.contains(node_id) {
            self.touched.insert(node_id.clone());
        }
        self.changed.push(node_id.clone());
    }

    fn load_own_allocs(&mut self, job_id: &JobId) {
        if self.own_job.as_ref() != Some(job_id) {
            self.own_allocs = FxHashMap::default();
            for a in self.state.allocs_by_job(job_id) {
                self.own_allocs
                    .entry(a.node_id.clone())
                    .or_default()
                    .push(a);
            }
            self.own_job = Some(job_id.clone());
        }
    }

    fn compute_usage(&mut self, node: &Node, job_id: &JobId, group: &str) -> NodeUsage {
        let state = self.state;
        let stops = self.plan.node_update.get(&node.id);
        let placed = self.plan.node_allocation.get(&node.id);
        let evicted = self.plan.node_preemptions.get(&node.id);
        let in_plan = |id: &AllocId| {
            stops.is_some_and(|v| v.iter().any(|a| a.id == *id))
                || placed.is_some_and(|v| v.iter().any(|a| a.id == *id))
                || evicted.is_some_and(|v| v.iter().any(|a| a.id == *id))
        };
        let own = self
            .own_allocs
            .get(&node.id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let foreign_stop = stops
            .into_iter()
            .flatten()
            .any(|s| !own.iter().any(|a| a.id == s.id));
        let mut usage = NodeUsage::empty();
        if foreign_stop {
            let existing = self
                .node_allocs
                .entry(node.id.clone())
                .or_insert_with(|| state.allocs_by_node(&node.id));
            for a in existing.iter() {
                if a.holds_resources() && !in_plan(&a.id) {
                    add_to_usage(&mut usage, a, job_id, group);
                }
            }
        } else {
            // `get` first: `entry` would clone the id on every candidate visit.
            let mut base = match self.node_sums.get(&node.id) {
                Some(sum) => sum.clone(),
                None => {
                    let sum = state.node_allocated(&node.id);
                    self.node_sums.insert(node.id.clone(), sum.clone());
                    sum
                }
            };
            for a in own.iter().filter(|a| a.holds_resources()) {
                base.remove(a);
            }
            // Evictions are other jobs' allocations that held resources.
            for a in evicted.into_iter().flatten() {
                base.remove(a);
            }
            usage.used = base.resources;
            usage.ports.extend(base.ports);
            for a in own {
                if a.holds_resources() && !in_plan(&a.id) {
                    add_to_usage(&mut usage, a, job_id, group);
                }
            }
        }
        for a in placed.into_iter().flatten() {
            add_to_usage(&mut usage, a, job_id, group);
        }
        usage
    }

    /// The node's allocations that hold resources and that the plan leaves alone (the
    /// ones a preemption may choose from).
    pub fn untouched_allocs(&mut self, node: &Node) -> Vec<Allocation> {
        let state = self.state;
        let existing = self
            .node_allocs
            .entry(node.id.clone())
            .or_insert_with(|| state.allocs_by_node(&node.id));
        let touched = |id: &AllocId| {
            [
                self.plan.node_update.get(&node.id),
                self.plan.node_allocation.get(&node.id),
                self.plan.node_preemptions.get(&node.id),
            ]
            .into_iter()
            .flatten()
            .any(|v| v.iter().any(|a| a.id == *id))
        };
        existing
            .iter()
            .filter(|a| a.holds_resources() && !touched(&a.id))
            .cloned()
            .collect()
    }

    /// Evicts a lower-priority allocation to make room for `by` (desired `evict`).
    pub fn preempt(&mut self, alloc: &Allocation, by: &Allocation) {
        let mut a = alloc.clone();
        a.desired_status = DesiredStatus::Evict;
        a.desired_description = format!("Preempted by alloc ID {} (job {})", by.id, by.job_id);
        a.modify_time = self.now_ms;
        a.job = None;
        self.touch(&a.node_id);
        self.plan
            .node_preemptions
            .entry(a.node_id.clone())
            .or_default()
            .push(a);
    }

    /// A fresh allocation of `group[index]` on `node`.
    #[allow(clippy::too_many_arguments)]
    pub fn new_alloc(
        &self,
        job: &Job,
        group: &TaskGroup,
        index: u32,
        node: &Node,
        ports: Vec<AllocatedPort>,
        metric: AllocMetric,
        previous: Option<&Allocation>,
    ) -> Allocation {
        Allocation {
            id: AllocId::generate(),
            name: format!("{}.{}[{}]", job.id, group.name, index),
            index,
            namespace: "default".to_string(),
            eval_id: self.plan.eval_id.clone(),
            job_id: job.id.clone(),
            job_version: job.version,
            // The plan carries the job once; the store serves each allocation's job
            // from its stored versions, so a copy per allocation would only be
            // serialized into the command log and thrown away.
            job: None,
            group: group.name.clone(),
            node_id: node.id.clone(),
            node_name: node.name.clone(),
            resources: AllocatedResources {
                tasks: group
                    .tasks
                    .iter()
                    .map(|t| (t.name.clone(), t.resources))
                    .collect(),
                ports,
            },
            desired_status: DesiredStatus::Run,
            desired_description: String::new(),
            client_status: ClientStatus::Pending,
            client_description: String::new(),
            task_states: Default::default(),
            checks: Default::default(),
            previous_allocation: previous.map(|p| p.id.clone()),
            next_allocation: None,
            // Set by the service and batch scheduler, which knows the group's policy.
            reschedule_tracker: None,
            desired_transition: Default::default(),
            deployment_id: None,
            deployment_status: None,
            metrics: Some(metric),
            create_time: self.now_ms,
            modify_time: self.now_ms,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The next version of a running allocation, updated in place to `job` (which the
    /// plan carries; the allocation records only the version).
    pub fn inplace_alloc(&self, alloc: &Allocation, job: &Job) -> Allocation {
        let mut a = alloc.clone();
        a.job_version = job.version;
        a.job = None;
        a.eval_id = self.plan.eval_id.clone();
        a.modify_time = self.now_ms;
        a
    }
}
