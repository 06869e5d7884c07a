//! Jobs: `job()` (Nomad's `mock.Job()`), `JobBuilder` for the fields tests vary, and
//! `restart_policy()`. Every value passes `jobspec::validate` unless a test breaks it on
//! purpose.

use std::collections::BTreeMap;
use std::time::Duration;

use super::task::{default_config, task};
use crate::ids;
use crate::ids::JobId;
use crate::model::{
    Affinity, Constraint, DisconnectPolicy, Job, JobStatus, JobType, MigratePolicy, PortSpec,
    ReschedulePolicy, RestartMode, RestartPolicy, ServiceSpec, Spread, SpreadTarget, Task,
    TaskGroup, UpdatePolicy,
};

/// A service job with a random id: one group `web` of one `raw_exec` task `server`
/// (500 MHz, 256 MiB) in dc1.
pub fn job() -> Job {
    JobBuilder::new(format!("mock-job-{}", ids::short(&ids::new_id()))).build()
}

/// `job()` as a batch job.
pub fn batch_job() -> Job {
    JobBuilder::new(format!("mock-batch-{}", ids::short(&ids::new_id())))
        .batch()
        .build()
}

/// `job()` as a system job (one instance per node).
pub fn system_job() -> Job {
    JobBuilder::new(format!("mock-system-{}", ids::short(&ids::new_id())))
        .job_type(JobType::System)
        .build()
}

/// A restart policy: `attempts` restarts within `interval`, `delay` apart, then `mode`.
pub fn restart_policy(
    attempts: u32,
    delay: Duration,
    interval: Duration,
    mode: RestartMode,
) -> RestartPolicy {
    RestartPolicy {
        attempts,
        interval,
        delay,
        mode,
    }
}

/// Builds a job: by default what `job()` returns, with the id given. Setters that
/// concern a group or a task change the first group and its first task.
pub struct JobBuilder {
    job: Job,
    restart: Option<RestartPolicy>,
    reschedule: Option<ReschedulePolicy>,
}

impl JobBuilder {
    pub fn new(id: impl Into<JobId>) -> JobBuilder {
        let id = id.into();
        let job_type = JobType::Service;
        let group = TaskGroup {
            name: "web".to_string(),
            count: 1,
            constraints: Vec::new(),
            affinities: Vec::new(),
            spreads: Vec::new(),
            restart: RestartPolicy::default_for(job_type),
            reschedule: ReschedulePolicy::default_for(job_type),
            network: Default::default(),
            services: Vec::new(),
            update: None,
            migrate: None,
            disconnect: None,
            shutdown_delay: Duration::ZERO,
            meta: BTreeMap::new(),
            tasks: vec![task("server", "raw_exec")],
        };
        JobBuilder {
            job: Job {
                name: id.to_string(),
                id,
                job_type,
                datacenters: vec!["dc1".to_string()],
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
                create_index: 0,
                modify_index: 0,
                job_modify_index: 0,
                stable: false,
            },
            restart: None,
            reschedule: None,
        }
    }

    fn group(&mut self) -> &mut TaskGroup {
        &mut self.job.groups[0]
    }

    fn task(&mut self) -> &mut Task {
        &mut self.group().tasks[0]
    }

    /// The display name (`""`: none, as a job submitted without one).
    pub fn name(mut self, name: &str) -> Self {
        self.job.name = name.to_string();
        self
    }

    /// The job type; the groups get its restart and reschedule defaults at `build`.
    pub fn job_type(mut self, t: JobType) -> Self {
        self.job.job_type = t;
        self
    }

    pub fn batch(self) -> Self {
        self.job_type(JobType::Batch)
    }

    pub fn datacenters(mut self, dcs: &[&str]) -> Self {
        self.job.datacenters = dcs.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn priority(mut self, p: u8) -> Self {
        self.job.priority = p;
        self
    }

    /// The version, as the store numbers registrations of a changed spec.
    pub fn version(mut self, v: u64) -> Self {
        self.job.version = v;
        self
    }

    pub fn count(mut self, n: u32) -> Self {
        self.group().count = n;
        self
    }

    /// Renames the first group.
    pub fn group_name(mut self, name: &str) -> Self {
        self.group().name = name.to_string();
        self
    }

    /// Renames the first task.
    pub fn task_name(mut self, name: &str) -> Self {
        self.task().name = name.to_string();
        self
    }

    /// Adds group `name`, a copy of the first group as set so far (the setters after
    /// this still change the first group only).
    pub fn copy_group(mut self, name: &str) -> Self {
        let mut copy = self.group().clone();
        copy.name = name.to_string();
        self.job.groups.push(copy);
        self
    }

    /// Replaces the first group's tasks (build them with `task` or `TaskBuilder`).
    pub fn tasks(mut self, tasks: Vec<Task>) -> Self {
        self.group().tasks = tasks;
        self
    }

    pub fn cpu(mut self, mhz: u64) -> Self {
        self.task().resources.cpu = mhz;
        self
    }

    pub fn memory(mut self, mib: u64) -> Self {
        self.task().resources.memory = mib;
        self
    }

    /// The first task's driver, with that driver's default config (`raw_exec`: a
    /// command; others: empty); add to it with `task_config`.
    pub fn driver(mut self, driver: &str) -> Self {
        let task = self.task();
        task.driver = driver.to_string();
        task.config = default_config(driver);
        self
    }

    /// Sets one key of the first task's driver config.
    pub fn task_config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.task().config.insert(key.to_string(), value);
        self
    }

    /// A job-level constraint.
    pub fn constraint(mut self, attribute: &str, operator: &str, value: &str) -> Self {
        self.job
            .constraints
            .push(constraint(attribute, operator, value));
        self
    }

    /// A constraint on the first group.
    pub fn group_constraint(mut self, attribute: &str, operator: &str, value: &str) -> Self {
        self.group()
            .constraints
            .push(constraint(attribute, operator, value));
        self
    }

    /// A group-level affinity.
    pub fn affinity(mut self, attribute: &str, operator: &str, value: &str, weight: i8) -> Self {
        self.group()
            .affinities
            .push(affinity(attribute, operator, value, weight));
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
        self.job
            .affinities
            .push(affinity(attribute, operator, value, weight));
        self
    }

    /// A group-level spread; `targets` are (value, percent).
    pub fn spread(mut self, attribute: &str, weight: u8, targets: &[(&str, u8)]) -> Self {
        self.group().spreads.push(Spread {
            attribute: attribute.to_string(),
            weight,
            targets: targets
                .iter()
                .map(|(value, percent)| SpreadTarget {
                    value: value.to_string(),
                    percent: *percent,
                })
                .collect(),
        });
        self
    }

    /// A dynamic port `label` on the first group.
    pub fn dynamic_port(mut self, label: &str) -> Self {
        self.group().network.ports.push(PortSpec {
            label: label.to_string(),
            static_port: None,
            to: None,
        });
        self
    }

    /// A static port `label` = `port` on the first group.
    pub fn static_port(mut self, label: &str, port: u16) -> Self {
        self.group().network.ports.push(PortSpec {
            label: label.to_string(),
            static_port: Some(port),
            to: None,
        });
        self
    }

    /// A service of the first group (build it with `service` and `check`).
    pub fn service(mut self, service: ServiceSpec) -> Self {
        self.group().services.push(service);
        self
    }

    /// How long the first group's tasks are kept after a server stops them.
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.group().shutdown_delay = delay;
        self
    }

    /// Every group's restart policy (default: the job type's; see `restart_policy`).
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = Some(policy);
        self
    }

    /// Every group's reschedule policy (default: the job type's).
    pub fn reschedule(mut self, policy: ReschedulePolicy) -> Self {
        self.reschedule = Some(policy);
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

    /// The first group's migrate policy (how a drain moves it).
    pub fn migrate(mut self, policy: MigratePolicy) -> Self {
        self.group().migrate = Some(policy);
        self
    }

    /// `disconnect = { lost_after, replace }` on every group.
    pub fn disconnect(mut self, lost_after: Duration, replace: bool) -> Self {
        for g in &mut self.job.groups {
            g.disconnect = Some(DisconnectPolicy {
                lost_after: Some(lost_after),
                replace,
            });
        }
        self
    }

    pub fn build(mut self) -> Job {
        let t = self.job.job_type;
        for g in &mut self.job.groups {
            g.restart = self
                .restart
                .clone()
                .unwrap_or_else(|| RestartPolicy::default_for(t));
            g.reschedule = self
                .reschedule
                .clone()
                .unwrap_or_else(|| ReschedulePolicy::default_for(t));
        }
        self.job
    }
}

fn constraint(attribute: &str, operator: &str, value: &str) -> Constraint {
    Constraint {
        attribute: attribute.to_string(),
        operator: operator.to_string(),
        value: value.to_string(),
    }
}

fn affinity(attribute: &str, operator: &str, value: &str, weight: i8) -> Affinity {
    Affinity {
        attribute: attribute.to_string(),
        operator: operator.to_string(),
        value: value.to_string(),
        weight,
    }
}
