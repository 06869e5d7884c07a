//! The scheduler's test harness: an in-memory `MemState` and a recording `Harness`
//! planner that commits plans into it (optionally rejecting some nodes, like a busy plan
//! applier would). The jobs, nodes and allocations it holds come from `orch_common::mock`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orch_common::ids::{AllocId, DeploymentId, EvalId, JobId, NodeId};
use orch_common::mock::{self, NOW};
use orch_common::model::{
    Allocation, Deployment, DeploymentStatus, DesiredStatus, EvalStatus, Evaluation, Job, Node,
    Plan, PlanResult, SchedulerConfiguration,
};

use super::{process, Planner, SchedulerError, State};
use crate::scheduler::PlannerError;

/// An in-memory `State`.
#[derive(Debug, Clone, Default)]
pub struct MemState {
    pub index: u64,
    pub jobs: BTreeMap<JobId, Job>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub allocs: BTreeMap<AllocId, Allocation>,
    /// Every registered job version, as the store keeps them.
    pub versions: BTreeMap<(JobId, u64), Job>,
    /// Store allocations without their job embedded (like the SQLite store does).
    pub strip_jobs: bool,
    pub evals: BTreeMap<EvalId, Evaluation>,
    /// The cluster's scheduler configuration (algorithm, preemption).
    pub config: SchedulerConfiguration,
    /// The node list shared between snapshots, like the store's (rebuilt on change).
    pub shared: Option<Arc<Vec<Node>>>,
    /// Deployments by id (`upsert_deployment` seeds one; plans add theirs).
    pub deployments: BTreeMap<DeploymentId, Deployment>,
}

impl MemState {
    pub fn with_nodes(nodes: &[Node]) -> MemState {
        let mut s = MemState {
            index: 1,
            ..MemState::default()
        };
        for n in nodes {
            s.upsert_node(n.clone());
        }
        s
    }
    pub fn upsert_node(&mut self, node: Node) {
        self.index += 1;
        self.shared = None;
        self.nodes.insert(node.id.clone(), node);
    }
    pub fn upsert_job(&mut self, job: Job) {
        self.index += 1;
        self.versions
            .insert((job.id.clone(), job.version), job.clone());
        self.jobs.insert(job.id.clone(), job);
    }
    pub fn upsert_alloc(&mut self, mut alloc: Allocation) {
        self.index += 1;
        alloc.modify_index = self.index;
        if !self.allocs.contains_key(&alloc.id) {
            alloc.create_index = self.index;
        }
        self.allocs.insert(alloc.id.clone(), alloc);
    }
    /// Non-terminal allocations of the job (what the client would see).
    /// Shares the current node list between this state and its clones (what the
    /// store does), so evaluations do not copy every node.
    pub fn share_nodes(&mut self) {
        self.shared = Some(Arc::new(self.nodes.values().cloned().collect()));
    }
    pub fn live_allocs(&self, job_id: &str) -> Vec<Allocation> {
        self.allocs
            .values()
            .filter(|a| a.job_id == job_id && a.desired_status == DesiredStatus::Run)
            .cloned()
            .collect()
    }
    /// Stores a deployment as the store would (a new one gets the next index).
    pub fn upsert_deployment(&mut self, mut d: Deployment) {
        self.index += 1;
        if d.create_index == 0 {
            d.create_index = self.index;
        }
        d.modify_index = self.index;
        self.deployments.insert(d.id.clone(), d);
    }
    /// The deployment with this id (panics when unknown: tests only).
    pub fn deployment(&self, id: &str) -> &Deployment {
        &self.deployments[id]
    }
    /// Records an allocation's health in its deployment (the client's report).
    pub fn set_health(&mut self, alloc_id: &str, healthy: bool) {
        let mut a = self.allocs[alloc_id].clone();
        a.deployment_status
            .get_or_insert_with(Default::default)
            .healthy = Some(healthy);
        self.upsert_alloc(a);
    }
    /// Promotes a deployment's group: its canaries lose their flag (what the store's
    /// `UpdateDeployment` does).
    pub fn promote(&mut self, deployment_id: &str, group: &str) {
        if let Some(g) = self
            .deployments
            .get_mut(deployment_id)
            .and_then(|d| d.task_groups.get_mut(group))
        {
            g.promoted = true;
        }
        let canaries: Vec<Allocation> = self
            .allocs
            .values()
            .filter(|a| {
                a.group == group
                    && a.deployment_id.as_deref() == Some(deployment_id)
                    && a.is_canary()
            })
            .cloned()
            .collect();
        for mut a in canaries {
            if let Some(s) = a.deployment_status.as_mut() {
                s.canary = false;
            }
            self.upsert_alloc(a);
        }
    }
    /// Sets a deployment's status (what the watcher does).
    pub fn set_deployment_status(&mut self, deployment_id: &str, status: DeploymentStatus) {
        self.index += 1;
        if let Some(d) = self.deployments.get_mut(deployment_id) {
            d.status = status;
            d.modify_index = self.index;
        }
    }
    /// Commits the plan except for the nodes in `reject`.
    pub fn apply_plan(&mut self, plan: &Plan, reject: &BTreeSet<NodeId>) -> PlanResult {
        self.index += 1;
        let index = self.index;
        let mut result = PlanResult::default();
        if let Some(d) = &plan.deployment {
            if !self.deployments.contains_key(&d.id) {
                let mut d = d.clone();
                d.create_index = index;
                d.modify_index = index;
                self.deployments.insert(d.id.clone(), d);
            }
        }
        for u in &plan.deployment_updates {
            if let Some(d) = self
                .deployments
                .get_mut(&u.deployment_id)
                .filter(|d| d.status.is_active())
            {
                d.status = u.status;
                d.status_description = u.status_description.clone();
                d.modify_index = index;
            }
        }
        for (node, stops) in &plan.node_update {
            for a in stops {
                let mut a = a.clone();
                a.modify_index = index;
                self.allocs.insert(a.id.clone(), a);
            }
            result.updated_nodes.insert(node.clone());
        }
        for (node, allocs) in &plan.node_allocation {
            if reject.contains(node) {
                continue;
            }
            // Evictions go with the placements they make room for.
            for a in plan.node_preemptions.get(node).into_iter().flatten() {
                let mut a = a.clone();
                a.modify_index = index;
                if let Some(old) = self.allocs.get(&a.id) {
                    a.job = old.job.clone();
                }
                self.allocs.insert(a.id.clone(), a);
            }
            for a in allocs {
                let mut a = a.clone();
                if self.strip_jobs {
                    a.job = None;
                }
                a.create_index = self
                    .allocs
                    .get(&a.id)
                    .map(|x| x.create_index)
                    .unwrap_or(index);
                a.modify_index = index;
                self.allocs.insert(a.id.clone(), a);
            }
            result.allocated_nodes.insert(node.clone());
        }
        result.alloc_index = index;
        if !result.is_full_commit(plan) {
            result.refresh_index = index;
        }
        result
    }
}

impl State for MemState {
    fn index(&self) -> u64 {
        self.index
    }
    fn job(&self, id: &JobId) -> Option<Job> {
        self.jobs.get(id).cloned()
    }
    fn nodes(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }
    fn node(&self, id: &NodeId) -> Option<Node> {
        self.nodes.get(id).cloned()
    }
    fn allocs_by_job(&self, job_id: &JobId) -> Vec<Allocation> {
        self.allocs
            .values()
            .filter(|a| a.job_id == *job_id)
            .cloned()
            .collect()
    }
    fn allocs_by_node(&self, node_id: &NodeId) -> Vec<Allocation> {
        self.allocs
            .values()
            .filter(|a| a.node_id == *node_id && !a.client_status.is_terminal())
            .cloned()
            .collect()
    }
    fn job_version(&self, id: &JobId, version: u64) -> Option<Job> {
        self.versions.get(&(id.clone(), version)).cloned()
    }
    fn shared_nodes(&self) -> Arc<Vec<Node>> {
        match &self.shared {
            Some(list) => list.clone(),
            None => Arc::new(self.nodes()),
        }
    }
    fn scheduler_config(&self) -> SchedulerConfiguration {
        self.config.clone()
    }
    fn latest_deployment(&self, job_id: &JobId) -> Option<Deployment> {
        self.deployments
            .values()
            .filter(|d| d.job_id == *job_id)
            .max_by(|a, b| (a.create_index, &b.id).cmp(&(b.create_index, &a.id)))
            .cloned()
    }
    fn blocked_eval(&self, job_id: &JobId) -> Option<Evaluation> {
        self.evals
            .values()
            .filter(|e| e.job_id == *job_id && e.status == EvalStatus::Blocked)
            .max_by_key(|e| e.create_time)
            .cloned()
    }
}

/// A `Planner` that commits into its own `MemState` and records everything.
#[derive(Debug, Default)]
pub struct Harness {
    pub state: MemState,
    pub now: u64,
    pub plans: Vec<Plan>,
    pub results: Vec<PlanResult>,
    pub updated: Vec<Evaluation>,
    pub created: Vec<Evaluation>,
    pub reblocked: Vec<Evaluation>,
    /// Nodes whose placements the next `reject_times` submissions refuse.
    pub reject_nodes: BTreeSet<NodeId>,
    pub reject_times: u32,
}

impl Harness {
    pub fn new(nodes: &[Node]) -> Harness {
        Harness {
            state: MemState::with_nodes(nodes),
            now: NOW,
            ..Harness::default()
        }
    }
    /// Registers `job` (bumping its version if it existed) and returns its eval.
    pub fn register(&mut self, mut job: Job) -> Evaluation {
        if let Some(old) = self.state.jobs.get(&job.id) {
            job.version = old.version + 1;
        }
        job.job_modify_index = self.state.index + 1;
        self.state.upsert_job(job.clone());
        mock::eval(&job)
    }
    /// Runs the scheduler on a snapshot of the current state.
    pub fn process(&mut self, eval: &Evaluation) -> Result<(), SchedulerError> {
        let snapshot = self.state.clone();
        let now = self.now;
        process(eval, &snapshot, self, now)
    }
    /// Allocations placed (node_allocation) by the last plan.
    pub fn last_placed(&self) -> Vec<Allocation> {
        self.plans
            .last()
            .map(|p| p.node_allocation.values().flatten().cloned().collect())
            .unwrap_or_default()
    }
    /// Allocations stopped by the last plan.
    pub fn last_stopped(&self) -> Vec<Allocation> {
        self.plans
            .last()
            .map(|p| p.node_update.values().flatten().cloned().collect())
            .unwrap_or_default()
    }
    pub fn last_update(&self) -> &Evaluation {
        self.updated.last().expect("an eval update")
    }
}

impl Planner for Harness {
    fn submit_plan(
        &mut self,
        plan: Plan,
    ) -> Result<(PlanResult, Option<Box<dyn State>>), PlannerError> {
        let reject = if self.reject_times > 0 {
            self.reject_times -= 1;
            self.reject_nodes.clone()
        } else {
            BTreeSet::new()
        };
        let result = self.state.apply_plan(&plan, &reject);
        self.plans.push(plan);
        self.results.push(result.clone());
        let fresh: Option<Box<dyn State>> = if result.refresh_index > 0 {
            Some(Box::new(self.state.clone()))
        } else {
            None
        };
        Ok((result, fresh))
    }
    fn update_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.state.evals.insert(eval.id.clone(), eval.clone());
        self.updated.push(eval);
        Ok(())
    }
    fn create_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.state.evals.insert(eval.id.clone(), eval.clone());
        self.created.push(eval);
        Ok(())
    }
    fn reblock_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.state.evals.insert(eval.id.clone(), eval.clone());
        self.reblocked.push(eval);
        Ok(())
    }
}
