//! Fixture builders for the client's unit tests: a node, a task, a job and an
//! allocation of it.

use std::collections::BTreeMap;
use std::time::Duration;

use orch_common::model::{
    AllocatedResources, Allocation, ClientStatus, DesiredStatus, Job, JobType, Node, NodeStatus,
    ReschedulePolicy, Resources, RestartMode, RestartPolicy, Task, TaskGroup,
};

pub fn node() -> Node {
    Node {
        id: "node-1-id".into(),
        name: "node-1".into(),
        datacenter: "dc1".into(),
        node_class: "fast".into(),
        node_pool: "default".into(),
        status: NodeStatus::Ready,
        status_description: String::new(),
        eligibility: Default::default(),
        attributes: BTreeMap::from([("kernel.name".to_string(), "linux".to_string())]),
        meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
        resources: Resources {
            cpu: 4000,
            memory: 4096,
            memory_max: None,
            ..Default::default()
        },
        reserved: Resources::ZERO,
        drivers: BTreeMap::new(),
        http_addr: "127.0.0.1:4747".into(),
        min_dynamic_port: 20000,
        max_dynamic_port: 32000,
        reserved_ports: vec![],
        computed_class: String::new(),
        status_updated_at: 0,
        drain: None,
        last_drain: None,
        create_index: 0,
        modify_index: 0,
    }
}

/// A task with `config` given as a JSON object.
pub fn task(name: &str, driver: &str, config: serde_json::Value) -> Task {
    let config = match config {
        serde_json::Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    Task {
        name: name.into(),
        driver: driver.into(),
        config,
        resources: Resources {
            cpu: 100,
            memory: 32,
            memory_max: None,
            ..Default::default()
        },
        env: BTreeMap::new(),
        kill_timeout: Duration::from_secs(5),
        kill_signal: "SIGTERM".into(),
        user: None,
        logs: Default::default(),
        meta: BTreeMap::new(),
    }
}

pub fn restart(attempts: u32, delay_ms: u64, interval_s: u64, mode: RestartMode) -> RestartPolicy {
    RestartPolicy {
        attempts,
        interval: Duration::from_secs(interval_s),
        delay: Duration::from_millis(delay_ms),
        mode,
    }
}

pub fn job(job_type: JobType, group: &str, tasks: Vec<Task>, restart: RestartPolicy) -> Job {
    Job {
        stable: false,
        id: "job1".into(),
        name: "job1".into(),
        job_type,
        datacenters: vec!["dc1".into()],
        priority: 50,
        meta: BTreeMap::new(),
        constraints: vec![],
        affinities: vec![],
        spreads: vec![],
        update: None,
        groups: vec![TaskGroup {
            shutdown_delay: Default::default(),
            name: group.into(),
            count: 1,
            constraints: vec![],
            affinities: vec![],
            spreads: vec![],
            restart,
            reschedule: ReschedulePolicy::default_for(job_type),
            network: Default::default(),
            services: vec![],
            update: None,
            migrate: None,
            disconnect: None,
            meta: BTreeMap::new(),
            tasks,
        }],
        stop: false,
        status: Default::default(),
        version: 0,
        submit_time: 0,
        create_index: 1,
        modify_index: 1,
        job_modify_index: 1,
    }
}

pub fn alloc_of(job: &Job, index: u32) -> Allocation {
    let g = &job.groups[0];
    Allocation {
        deployment_id: None,
        deployment_status: None,
        id: orch_common::ids::new_id(),
        name: format!("{}.{}[{index}]", job.id, g.name),
        index,
        namespace: "default".into(),
        eval_id: orch_common::ids::new_id(),
        job_id: job.id.clone(),
        job_version: job.version,
        job: Some(Box::new(job.clone())),
        group: g.name.clone(),
        node_id: node().id,
        node_name: node().name,
        resources: AllocatedResources {
            tasks: g
                .tasks
                .iter()
                .map(|t| (t.name.clone(), t.resources))
                .collect(),
            ports: vec![],
        },
        desired_status: DesiredStatus::Run,
        desired_description: String::new(),
        client_status: ClientStatus::Pending,
        client_description: String::new(),
        task_states: BTreeMap::new(),
        checks: Default::default(),
        previous_allocation: None,
        next_allocation: None,
        desired_transition: Default::default(),
        metrics: None,
        create_time: 0,
        modify_time: 0,
        create_index: 10,
        modify_index: 10,
    }
}

/// A service allocation of a one-task job.
pub fn alloc_for(t: &Task, group: &str, index: u32) -> Allocation {
    let j = job(
        JobType::Service,
        group,
        vec![t.clone()],
        RestartPolicy::default_for(JobType::Service),
    );
    alloc_of(&j, index)
}
