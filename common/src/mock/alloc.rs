//! Allocations: `alloc()` (Nomad's `mock.Alloc()`), `running_alloc()` (an instance the
//! scheduler placed earlier and the client runs), and `AllocBuilder`.

use std::collections::BTreeMap;

use super::time::NOW;
use crate::ids::{AllocId, DeploymentId, EvalId, NodeId};
use crate::model::{
    AllocDeploymentStatus, AllocatedPort, AllocatedResources, Allocation, ClientStatus,
    DesiredStatus, Job, Node, RescheduleTracker,
};

/// Instance 0 of `job`'s first group on `node`: desired to run, pending on the client,
/// not stored yet (no indexes, no times).
pub fn alloc(job: &Job, node: &Node) -> Allocation {
    AllocBuilder::new(job).node(node).build()
}

/// Allocation `id`, instance `index` of `job`'s first group, as a plan places it on the
/// node with id `node_id`: desired to run, pending, not stored yet (the store fills in
/// the node's name, the times and the indexes).
pub fn alloc_on(
    id: impl Into<AllocId>,
    job: &Job,
    node_id: impl Into<NodeId>,
    index: u32,
) -> Allocation {
    AllocBuilder::new(job)
        .id(id)
        .node_id(node_id)
        .index(index)
        .build()
}

/// Instance `index` of `job`'s `group` running on `node`, placed and stored at `NOW`
/// (index 1), with random ids.
pub fn running_alloc(job: &Job, group: &str, index: u32, node: &Node) -> Allocation {
    AllocBuilder::new(job)
        .group(group)
        .index(index)
        .node(node)
        .running()
        .at(NOW)
        .indexes(1, 1)
        .build()
}

/// Builds an allocation of a job: by default what `alloc()` returns, on no node (set
/// one with `node` or `node_id`). The name (`JOB.GROUP[INDEX]`) and the resources (the
/// group's tasks') follow the job, group and index at `build`.
pub struct AllocBuilder {
    job: Job,
    embed_job: bool,
    alloc: Allocation,
}

impl AllocBuilder {
    pub fn new(job: &Job) -> AllocBuilder {
        let group = job
            .groups
            .first()
            .map(|g| g.name.clone())
            .unwrap_or_default();
        AllocBuilder {
            job: job.clone(),
            embed_job: true,
            alloc: Allocation {
                id: AllocId::generate(),
                name: String::new(),
                index: 0,
                namespace: "default".to_string(),
                eval_id: EvalId::generate(),
                job_id: job.id.clone(),
                job_version: job.version,
                job: None,
                group,
                node_id: NodeId::default(),
                node_name: String::new(),
                resources: AllocatedResources::default(),
                desired_status: DesiredStatus::Run,
                desired_description: String::new(),
                client_status: ClientStatus::Pending,
                client_description: String::new(),
                task_states: BTreeMap::new(),
                checks: BTreeMap::new(),
                previous_allocation: None,
                next_allocation: None,
                reschedule_tracker: None,
                desired_transition: Default::default(),
                deployment_id: None,
                deployment_status: None,
                metrics: None,
                create_time: 0,
                modify_time: 0,
                create_index: 0,
                modify_index: 0,
            },
        }
    }

    pub fn id(mut self, id: impl Into<AllocId>) -> Self {
        self.alloc.id = id.into();
        self
    }

    /// The group it is an instance of (its tasks give the resources; a group the job
    /// does not have gets the first group's).
    pub fn group(mut self, group: &str) -> Self {
        self.alloc.group = group.to_string();
        self
    }

    pub fn index(mut self, index: u32) -> Self {
        self.alloc.index = index;
        self
    }

    /// Placed on `node` (its id and name).
    pub fn node(mut self, node: &Node) -> Self {
        self.alloc.node_id = node.id.clone();
        self.alloc.node_name = node.name.clone();
        self
    }

    /// Placed on the node with this id; the name is left for the store to fill in.
    pub fn node_id(mut self, node_id: impl Into<NodeId>) -> Self {
        self.alloc.node_id = node_id.into();
        self
    }

    pub fn eval_id(mut self, eval_id: impl Into<EvalId>) -> Self {
        self.alloc.eval_id = eval_id.into();
        self
    }

    pub fn desired_status(mut self, status: DesiredStatus) -> Self {
        self.alloc.desired_status = status;
        self
    }

    pub fn client_status(mut self, status: ClientStatus) -> Self {
        self.alloc.client_status = status;
        self
    }

    /// Running on its client.
    pub fn running(self) -> Self {
        self.client_status(ClientStatus::Running)
    }

    /// Placed by deployment `deployment_id`.
    pub fn deployment(mut self, deployment_id: impl Into<DeploymentId>) -> Self {
        self.alloc.deployment_id = Some(deployment_id.into());
        self
    }

    /// An unpromoted canary of its deployment.
    pub fn canary(mut self) -> Self {
        self.alloc
            .deployment_status
            .get_or_insert_with(AllocDeploymentStatus::default)
            .canary = true;
        self
    }

    /// Its health in its deployment (`None`: not decided), decided at `timestamp`.
    pub fn health(mut self, healthy: Option<bool>, timestamp: u64) -> Self {
        let status = self
            .alloc
            .deployment_status
            .get_or_insert_with(AllocDeploymentStatus::default);
        status.healthy = healthy;
        status.timestamp = timestamp;
        self
    }

    /// The allocation it replaces.
    pub fn previous(mut self, alloc_id: impl Into<AllocId>) -> Self {
        self.alloc.previous_allocation = Some(alloc_id.into());
        self
    }

    /// Carrying `tracker`: the failures before it in its chain of replacements.
    pub fn reschedule_tracker(mut self, tracker: RescheduleTracker) -> Self {
        self.alloc.reschedule_tracker = Some(tracker);
        self
    }

    /// Given host port `value` on `host_ip` for the group's port `label`.
    pub fn port(mut self, label: &str, value: u16, host_ip: &str) -> Self {
        self.alloc.resources.ports.push(AllocatedPort {
            label: label.to_string(),
            value,
            to: None,
            host_ip: host_ip.to_string(),
        });
        self
    }

    /// Created and last modified at `ms`.
    pub fn at(mut self, ms: u64) -> Self {
        self.alloc.create_time = ms;
        self.alloc.modify_time = ms;
        self
    }

    /// The store's indexes, as if stored already.
    pub fn indexes(mut self, create: u64, modify: u64) -> Self {
        self.alloc.create_index = create;
        self.alloc.modify_index = modify;
        self
    }

    /// Without the job embedded (as the store keeps allocations, and as lists serve
    /// them).
    pub fn without_job(mut self) -> Self {
        self.embed_job = false;
        self
    }

    pub fn build(self) -> Allocation {
        let AllocBuilder {
            job,
            embed_job,
            mut alloc,
        } = self;
        alloc.name = format!("{}.{}[{}]", job.id, alloc.group, alloc.index);
        if let Some(g) = job.group(&alloc.group).or(job.groups.first()) {
            alloc.resources.tasks = g
                .tasks
                .iter()
                .map(|t| (t.name.clone(), t.resources))
                .collect();
        }
        if embed_job {
            alloc.job = Some(Box::new(job));
        }
        alloc
    }
}
