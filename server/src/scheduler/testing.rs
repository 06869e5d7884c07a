//! Test fixtures for the scheduler: `mock_node()`/`NodeBuilder`, `mock_job()`/
//! `JobBuilder`, an in-memory `MemState` and a recording `Harness` planner that commits
//! plans into it (optionally rejecting some nodes, like a busy plan applier would).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orch_common::ids;
use orch_common::model::{
    triggers, Affinity, AllocatedResources, Allocation, ClientStatus, Constraint, Deployment,
    DeploymentStatus, DesiredStatus, DriverInfo, Eligibility, EvalStatus, Evaluation, Job,
    JobStatus, JobType, Node, NodeStatus, Plan, PlanResult, PortSpec, ReschedulePolicy, Resources,
    RestartPolicy, SchedulerConfiguration, Spread, SpreadTarget, Task, TaskGroup, UpdatePolicy,
};

use super::{process, Planner, SchedulerError, State};
use crate::scheduler::PlannerError;

/// A fake time: 2024-01-01, in ms.
pub const NOW: u64 = 1_704_067_200_000;

pub fn mock_node() -> Node {
    NodeBuilder::new().build()
}

pub fn mock_job() -> Job {
    JobBuilder::new("mock-job").count(3).build()
}

/// Builds a ready, eligible node in dc1 with 4000 MHz, 8192 MiB and the `raw_exec`
/// and `mock` drivers.
pub struct NodeBuilder(Node);

impl Default for NodeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeBuilder {
    pub fn new() -> NodeBuilder {
        let id = ids::new_id();
        let healthy = DriverInfo {
            detected: true,
            healthy: true,
            description: String::new(),
        };
        NodeBuilder(Node {
            name: format!("node-{}", ids::short(&id)),
            id,
            datacenter: "dc1".into(),
            node_class: String::new(),
            node_pool: "default".into(),
            status: NodeStatus::Ready,
            status_description: String::new(),
            eligibility: Eligibility::Eligible,
            attributes: [
                ("kernel.name", "linux"),
                ("arch", "amd64"),
                ("os.name", "debian"),
                ("cpu.numcores", "4"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            meta: BTreeMap::new(),
            resources: Resources {
                cpu: 4000,
                memory: 8192,
                memory_max: None,
                ..Default::default()
            },
            reserved: Resources::ZERO,
            drivers: [("raw_exec", healthy.clone()), ("mock", healthy)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            http_addr: "127.0.0.1:4646".into(),
            min_dynamic_port: 20000,
            max_dynamic_port: 32000,
            reserved_ports: Vec::new(),
            computed_class: String::new(),
            status_updated_at: 0,
            drain: None,
            last_drain: None,
            create_index: 1,
            modify_index: 1,
        })
    }
    pub fn id(mut self, id: &str) -> Self {
        self.0.id = id.into();
        self
    }
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.into();
        self
    }
    pub fn datacenter(mut self, dc: &str) -> Self {
        self.0.datacenter = dc.into();
        self
    }
    pub fn class(mut self, class: &str) -> Self {
        self.0.node_class = class.into();
        self
    }
    pub fn cpu(mut self, mhz: u64) -> Self {
        self.0.resources.cpu = mhz;
        self
    }
    pub fn memory(mut self, mib: u64) -> Self {
        self.0.resources.memory = mib;
        self
    }
    pub fn reserved(mut self, cpu: u64, memory: u64) -> Self {
        self.0.reserved = Resources {
            cpu,
            memory,
            memory_max: None,
            ..Default::default()
        };
        self
    }
    pub fn attr(mut self, k: &str, v: &str) -> Self {
        self.0.attributes.insert(k.into(), v.into());
        self
    }
    pub fn meta(mut self, k: &str, v: &str) -> Self {
        self.0.meta.insert(k.into(), v.into());
        self
    }
    pub fn driver(mut self, name: &str) -> Self {
        self.0.drivers.insert(
            name.into(),
            DriverInfo {
                detected: true,
                healthy: true,
                description: String::new(),
            },
        );
        self
    }
    pub fn without_driver(mut self, name: &str) -> Self {
        self.0.drivers.remove(name);
        self
    }
    pub fn status(mut self, status: NodeStatus) -> Self {
        self.0.status = status;
        self
    }
    pub fn eligibility(mut self, e: Eligibility) -> Self {
        self.0.eligibility = e;
        self
    }
    pub fn port_range(mut self, min: u16, max: u16) -> Self {
        self.0.min_dynamic_port = min;
        self.0.max_dynamic_port = max;
        self
    }
    pub fn reserved_ports(mut self, ports: &[u16]) -> Self {
        self.0.reserved_ports = ports.to_vec();
        self
    }
    pub fn build(mut self) -> Node {
        self.0.compute_class();
        self.0
    }
}

/// Builds a job with one group `web` (count 1) of one `raw_exec` task `server` asking
/// for 500 MHz and 256 MiB.
pub struct JobBuilder {
    job: Job,
    reschedule: Option<ReschedulePolicy>,
}

impl JobBuilder {
    pub fn new(id: &str) -> JobBuilder {
        let task = Task {
            name: "server".into(),
            driver: "raw_exec".into(),
            config: BTreeMap::new(),
            resources: Resources {
                cpu: 500,
                memory: 256,
                memory_max: None,
                ..Default::default()
            },
            env: BTreeMap::new(),
            kill_timeout: orch_common::model::default_kill_timeout(),
            kill_signal: orch_common::model::default_kill_signal(),
            user: None,
            logs: Default::default(),
            meta: BTreeMap::new(),
        };
        let group = TaskGroup {
            shutdown_delay: Default::default(),
            name: "web".into(),
            count: 1,
            constraints: Vec::new(),
            affinities: Vec::new(),
            spreads: Vec::new(),
            restart: RestartPolicy::default_for(JobType::Service),
            reschedule: ReschedulePolicy::default_for(JobType::Service),
            network: Default::default(),
            services: Vec::new(),
            update: None,
            migrate: None,
            disconnect: None,
            meta: BTreeMap::new(),
            tasks: vec![task],
        };
        JobBuilder {
            job: Job {
                stable: false,
                id: id.into(),
                name: id.into(),
                job_type: JobType::Service,
                datacenters: vec!["dc1".into()],
                priority: 50,
                meta: BTreeMap::new(),
                constraints: Vec::new(),
                affinities: Vec::new(),
                spreads: Vec::new(),
                update: None,
                groups: vec![group],
                stop: false,
                status: JobStatus::Pending,
                version: 0,
                submit_time: 0,
                create_index: 1,
                modify_index: 1,
                job_modify_index: 1,
            },
            reschedule: None,
        }
    }
    fn group(&mut self) -> &mut TaskGroup {
        &mut self.job.groups[0]
    }
    pub fn job_type(mut self, t: JobType) -> Self {
        self.job.job_type = t;
        self
    }
    pub fn batch(self) -> Self {
        self.job_type(JobType::Batch)
    }
    pub fn count(mut self, n: u32) -> Self {
        self.group().count = n;
        self
    }
    pub fn cpu(mut self, mhz: u64) -> Self {
        self.group().tasks[0].resources.cpu = mhz;
        self
    }
    pub fn memory(mut self, mib: u64) -> Self {
        self.group().tasks[0].resources.memory = mib;
        self
    }
    pub fn driver(mut self, d: &str) -> Self {
        self.group().tasks[0].driver = d.into();
        self
    }
    pub fn datacenters(mut self, dcs: &[&str]) -> Self {
        self.job.datacenters = dcs.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn priority(mut self, p: u8) -> Self {
        self.job.priority = p;
        self
    }
    pub fn constraint(mut self, attribute: &str, operator: &str, value: &str) -> Self {
        self.job.constraints.push(Constraint {
            attribute: attribute.into(),
            operator: operator.into(),
            value: value.into(),
        });
        self
    }
    pub fn group_constraint(mut self, attribute: &str, operator: &str, value: &str) -> Self {
        self.group().constraints.push(Constraint {
            attribute: attribute.into(),
            operator: operator.into(),
            value: value.into(),
        });
        self
    }
    pub fn dynamic_port(mut self, label: &str) -> Self {
        self.group().network.ports.push(PortSpec {
            label: label.into(),
            static_port: None,
            to: None,
        });
        self
    }
    pub fn static_port(mut self, label: &str, port: u16) -> Self {
        self.group().network.ports.push(PortSpec {
            label: label.into(),
            static_port: Some(port),
            to: None,
        });
        self
    }
    /// A group-level affinity.
    pub fn affinity(mut self, attribute: &str, operator: &str, value: &str, weight: i8) -> Self {
        self.group().affinities.push(Affinity {
            attribute: attribute.into(),
            operator: operator.into(),
            value: value.into(),
            weight,
        });
        self
    }
    /// A job-level affinity.
    pub fn job_affinity(
        mut self,
        attribute: &str,
        operator: &str,
        value: &str,
        weight: i8,
    ) -> Self {
        self.job.affinities.push(Affinity {
            attribute: attribute.into(),
            operator: operator.into(),
            value: value.into(),
            weight,
        });
        self
    }
    /// A group-level spread; `targets` are (value, percent).
    pub fn spread(mut self, attribute: &str, weight: u8, targets: &[(&str, u8)]) -> Self {
        self.group().spreads.push(Spread {
            attribute: attribute.into(),
            weight,
            targets: targets
                .iter()
                .map(|(v, p)| SpreadTarget {
                    value: v.to_string(),
                    percent: *p,
                })
                .collect(),
        });
        self
    }
    pub fn reschedule(mut self, policy: ReschedulePolicy) -> Self {
        self.reschedule = Some(policy);
        self
    }
    /// `disconnect = { lost_after, replace }` on every group.
    pub fn disconnect(mut self, lost_after: std::time::Duration, replace: bool) -> Self {
        for g in &mut self.job.groups {
            g.disconnect = Some(orch_common::model::DisconnectPolicy {
                lost_after: Some(lost_after),
                replace,
            });
        }
        self
    }
    /// A rolling update policy on every group (and the job's, as the jobspec sets it).
    pub fn update(mut self, policy: UpdatePolicy) -> Self {
        for g in &mut self.job.groups {
            g.update = Some(policy.clone());
        }
        self.job.update = Some(policy);
        self
    }
    pub fn build(mut self) -> Job {
        let t = self.job.job_type;
        for g in &mut self.job.groups {
            g.restart = RestartPolicy::default_for(t);
            g.reschedule = self
                .reschedule
                .clone()
                .unwrap_or_else(|| ReschedulePolicy::default_for(t));
        }
        self.job
    }
}

/// A running allocation of `job.group[index]` on `node`.
pub fn alloc_for(job: &Job, group: &str, index: u32, node: &Node) -> Allocation {
    let g = job.group(group).unwrap_or(&job.groups[0]);
    Allocation {
        deployment_id: None,
        deployment_status: None,
        id: ids::new_id(),
        name: format!("{}.{}[{}]", job.id, group, index),
        index,
        namespace: "default".into(),
        eval_id: ids::new_id(),
        job_id: job.id.clone(),
        job_version: job.version,
        job: Some(Box::new(job.clone())),
        group: group.into(),
        node_id: node.id.clone(),
        node_name: node.name.clone(),
        resources: AllocatedResources {
            tasks: g
                .tasks
                .iter()
                .map(|t| (t.name.clone(), t.resources))
                .collect(),
            ports: Vec::new(),
        },
        desired_status: DesiredStatus::Run,
        desired_description: String::new(),
        client_status: ClientStatus::Running,
        client_description: String::new(),
        task_states: BTreeMap::new(),
        checks: Default::default(),
        previous_allocation: None,
        next_allocation: None,
        desired_transition: Default::default(),
        metrics: None,
        create_time: NOW,
        modify_time: NOW,
        create_index: 1,
        modify_index: 1,
    }
}

/// A pending `job-register` evaluation for `job`.
pub fn eval_for(job: &Job) -> Evaluation {
    let mut e = Evaluation::for_job(job, triggers::JOB_REGISTER);
    e.create_time = NOW;
    e.modify_time = NOW;
    e
}

/// An in-memory `State`.
#[derive(Debug, Clone, Default)]
pub struct MemState {
    pub index: u64,
    pub jobs: BTreeMap<String, Job>,
    pub nodes: BTreeMap<String, Node>,
    pub allocs: BTreeMap<String, Allocation>,
    /// Every registered job version, as the store keeps them.
    pub versions: BTreeMap<(String, u64), Job>,
    /// Store allocations without their job embedded (like the SQLite store does).
    pub strip_jobs: bool,
    pub evals: BTreeMap<String, Evaluation>,
    /// The cluster's scheduler configuration (algorithm, preemption).
    pub config: SchedulerConfiguration,
    /// The node list shared between snapshots, like the store's (rebuilt on change).
    pub shared: Option<Arc<Vec<Node>>>,
    /// Deployments by id (`upsert_deployment` seeds one; plans add theirs).
    pub deployments: BTreeMap<String, Deployment>,
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
    pub fn apply_plan(&mut self, plan: &Plan, reject: &BTreeSet<String>) -> PlanResult {
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
    fn job(&self, id: &str) -> Option<Job> {
        self.jobs.get(id).cloned()
    }
    fn nodes(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }
    fn node(&self, id: &str) -> Option<Node> {
        self.nodes.get(id).cloned()
    }
    fn allocs_by_job(&self, job_id: &str) -> Vec<Allocation> {
        self.allocs
            .values()
            .filter(|a| a.job_id == job_id)
            .cloned()
            .collect()
    }
    fn allocs_by_node(&self, node_id: &str) -> Vec<Allocation> {
        self.allocs
            .values()
            .filter(|a| a.node_id == node_id && !a.client_status.is_terminal())
            .cloned()
            .collect()
    }
    fn job_version(&self, id: &str, version: u64) -> Option<Job> {
        self.versions.get(&(id.to_string(), version)).cloned()
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
    fn latest_deployment(&self, job_id: &str) -> Option<Deployment> {
        self.deployments
            .values()
            .filter(|d| d.job_id == job_id)
            .max_by(|a, b| (a.create_index, &b.id).cmp(&(b.create_index, &a.id)))
            .cloned()
    }
    fn blocked_eval(&self, job_id: &str) -> Option<Evaluation> {
        self.evals
            .values()
            .filter(|e| e.job_id == job_id && e.status == EvalStatus::Blocked)
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
    pub reject_nodes: BTreeSet<String>,
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
        eval_for(&job)
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
