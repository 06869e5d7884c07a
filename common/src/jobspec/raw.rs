//! The raw stage: reads the TOML document into structs that still say what was *not*
//! given (`Option`), because defaults depend on context (the job type, the job's
//! `[update]`). Parts whose defaults never depend on context (constraints, services,
//! tasks) are read straight into their final types.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{
    Affinity, CheckRestart, CheckSpec, CheckType, Constraint, DelayFunction, DisconnectPolicy,
    HealthCheckMode, JobType, LogConfig, MigratePolicy, NetworkSpec, PortSpec, Resources,
    RestartMode, ServiceSpec, Spread, SpreadTarget, Task,
};

use super::reader::Table;
use super::rules;

pub(crate) struct RawJob {
    pub id: Option<String>,
    pub name: Option<String>,
    pub job_type: Option<JobType>,
    pub datacenters: Option<Vec<String>>,
    pub priority: Option<u8>,
    pub meta: BTreeMap<String, String>,
    pub placement: Placement,
    pub update: Option<RawUpdate>,
    pub groups: Vec<RawGroup>,
}

pub(crate) struct RawGroup {
    pub name: String,
    pub count: Option<u32>,
    pub placement: Placement,
    pub restart: Option<RawRestart>,
    pub reschedule: Option<RawReschedule>,
    pub network: NetworkSpec,
    pub services: Vec<ServiceSpec>,
    pub update: Option<RawUpdate>,
    pub migrate: Option<MigratePolicy>,
    pub disconnect: Option<DisconnectPolicy>,
    pub shutdown_delay: Option<Duration>,
    pub meta: BTreeMap<String, String>,
    pub tasks: Vec<Task>,
}

#[derive(Default)]
pub(crate) struct RawRestart {
    pub attempts: Option<u32>,
    pub interval: Option<Duration>,
    pub delay: Option<Duration>,
    pub mode: Option<RestartMode>,
}

#[derive(Default)]
pub(crate) struct RawReschedule {
    pub attempts: Option<u32>,
    pub interval: Option<Duration>,
    pub delay: Option<Duration>,
    pub delay_function: Option<DelayFunction>,
    pub max_delay: Option<Duration>,
    pub unlimited: Option<bool>,
}

#[derive(Default, Clone)]
pub(crate) struct RawUpdate {
    pub max_parallel: Option<u32>,
    pub health_check: Option<HealthCheckMode>,
    pub min_healthy_time: Option<Duration>,
    pub healthy_deadline: Option<Duration>,
    pub progress_deadline: Option<Duration>,
    pub auto_revert: Option<bool>,
    pub auto_promote: Option<bool>,
    pub canary: Option<u32>,
    pub stagger: Option<Duration>,
}

const JOB_TYPES: &[(&str, JobType)] = &[
    ("service", JobType::Service),
    ("batch", JobType::Batch),
    ("system", JobType::System),
    ("sysbatch", JobType::Sysbatch),
];

const HEALTH_CHECKS: &[(&str, HealthCheckMode)] = &[
    ("checks", HealthCheckMode::Checks),
    ("task_states", HealthCheckMode::TaskStates),
    ("manual", HealthCheckMode::Manual),
];

const CHECK_TYPES: &[(&str, CheckType)] = &[
    ("http", CheckType::Http),
    ("tcp", CheckType::Tcp),
    ("script", CheckType::Script),
];

/// Reads the whole document.
pub(crate) fn read_job(mut t: Table<'_, '_>) -> RawJob {
    RawJob {
        id: t.string("id"),
        name: t.string("name"),
        job_type: t.choice("type", JOB_TYPES),
        datacenters: t.strings("datacenters"),
        priority: t.int("priority", rules::priority),
        meta: t.string_map("meta"),
        placement: read_placement(&mut t),
        update: t.table("update").map(read_update),
        groups: t
            .named_tables("group")
            .into_iter()
            .map(|(name, g)| read_group(name, g))
            .collect(),
    }
}

fn read_group(name: String, mut t: Table<'_, '_>) -> RawGroup {
    RawGroup {
        name,
        count: t.int("count", rules::count),
        placement: read_placement(&mut t),
        restart: t.table("restart").map(read_restart),
        reschedule: t.table("reschedule").map(read_reschedule),
        network: t.table("network").map(read_network).unwrap_or_default(),
        services: t.tables("service").into_iter().map(read_service).collect(),
        update: t.table("update").map(read_update),
        migrate: t.table("migrate").map(read_migrate),
        disconnect: t.table("disconnect").map(read_disconnect),
        shutdown_delay: t.duration("shutdown_delay"),
        meta: t.string_map("meta"),
        tasks: t
            .named_tables("task")
            .into_iter()
            .map(|(name, task)| read_task(name, task))
            .collect(),
    }
}

/// `[[constraint]]`, `[[affinity]]` and `[[spread]]` of a job or a group.
pub(crate) struct Placement {
    pub constraints: Vec<Constraint>,
    pub affinities: Vec<Affinity>,
    pub spreads: Vec<Spread>,
}

fn read_placement(t: &mut Table<'_, '_>) -> Placement {
    Placement {
        constraints: t
            .tables("constraint")
            .into_iter()
            .map(read_constraint)
            .collect(),
        affinities: t
            .tables("affinity")
            .into_iter()
            .map(read_affinity)
            .collect(),
        spreads: t.tables("spread").into_iter().map(read_spread).collect(),
    }
}

fn read_constraint(mut t: Table<'_, '_>) -> Constraint {
    Constraint {
        attribute: t.string("attribute").unwrap_or_default(),
        operator: t.string("operator").unwrap_or_else(|| "=".to_string()),
        value: t.scalar("value").unwrap_or_default(),
    }
}

fn read_affinity(mut t: Table<'_, '_>) -> Affinity {
    Affinity {
        attribute: t.string("attribute").unwrap_or_default(),
        operator: t.string("operator").unwrap_or_else(|| "=".to_string()),
        value: t.scalar("value").unwrap_or_default(),
        weight: t.int("weight", rules::affinity_weight).unwrap_or(50),
    }
}

fn read_spread(mut t: Table<'_, '_>) -> Spread {
    Spread {
        attribute: t.string("attribute").unwrap_or_default(),
        weight: t.int("weight", rules::percent).unwrap_or(50),
        targets: t
            .tables("target")
            .into_iter()
            .map(|mut target| SpreadTarget {
                value: target.scalar("value").unwrap_or_default(),
                percent: target.int("percent", rules::percent).unwrap_or(0),
            })
            .collect(),
    }
}

fn read_restart(mut t: Table<'_, '_>) -> RawRestart {
    RawRestart {
        attempts: t.int("attempts", rules::non_negative),
        interval: t.duration("interval"),
        delay: t.duration("delay"),
        mode: t.choice(
            "mode",
            &[("fail", RestartMode::Fail), ("delay", RestartMode::Delay)],
        ),
    }
}

fn read_reschedule(mut t: Table<'_, '_>) -> RawReschedule {
    RawReschedule {
        attempts: t.int("attempts", rules::reschedule_attempts),
        interval: t.duration("interval"),
        delay: t.duration("delay"),
        delay_function: t.choice(
            "delay_function",
            &[
                ("constant", DelayFunction::Constant),
                ("exponential", DelayFunction::Exponential),
                ("fibonacci", DelayFunction::Fibonacci),
            ],
        ),
        max_delay: t.duration("max_delay"),
        unlimited: t.bool("unlimited"),
    }
}

fn read_update(mut t: Table<'_, '_>) -> RawUpdate {
    RawUpdate {
        max_parallel: t.int("max_parallel", rules::max_parallel),
        health_check: t.choice("health_check", HEALTH_CHECKS),
        min_healthy_time: t.duration("min_healthy_time"),
        healthy_deadline: t.duration("healthy_deadline"),
        progress_deadline: t.duration("progress_deadline"),
        auto_revert: t.bool("auto_revert"),
        auto_promote: t.bool("auto_promote"),
        canary: t.int("canary", rules::count),
        stagger: t.duration("stagger"),
    }
}

fn read_migrate(mut t: Table<'_, '_>) -> MigratePolicy {
    // Nomad's defaults for the fields the table leaves out.
    let d = MigratePolicy::default();
    MigratePolicy {
        max_parallel: t
            .int("max_parallel", rules::max_parallel)
            .unwrap_or(d.max_parallel),
        health_check: t
            .choice("health_check", HEALTH_CHECKS)
            .unwrap_or(d.health_check),
        min_healthy_time: t.duration("min_healthy_time").unwrap_or(d.min_healthy_time),
        healthy_deadline: t.duration("healthy_deadline").unwrap_or(d.healthy_deadline),
    }
}

fn read_disconnect(mut t: Table<'_, '_>) -> DisconnectPolicy {
    DisconnectPolicy {
        lost_after: t.duration("lost_after"),
        replace: t.bool("replace").unwrap_or(false),
    }
}

fn read_network(mut t: Table<'_, '_>) -> NetworkSpec {
    NetworkSpec {
        mode: t.string("mode"),
        ports: t
            .named_tables("port")
            .into_iter()
            .map(|(label, mut p)| PortSpec {
                label,
                static_port: p.int("static", rules::port),
                to: p.int("to", rules::port),
            })
            .collect(),
    }
}

fn read_service(mut t: Table<'_, '_>) -> ServiceSpec {
    ServiceSpec {
        name: t.string("name").unwrap_or_default(),
        port: t.string("port"),
        tags: t.strings("tags").unwrap_or_default(),
        canary_tags: t.strings("canary_tags").unwrap_or_default(),
        meta: t.string_map("meta"),
        address_mode: t.string("address_mode"),
        checks: t.tables("check").into_iter().map(read_check).collect(),
    }
}

fn read_check(mut t: Table<'_, '_>) -> CheckSpec {
    let check_type = t.choice("type", CHECK_TYPES);
    if check_type.is_none() {
        t.guessed();
        if !t.has("type") {
            t.problem("type", "missing; one of http, tcp, script");
        }
    }
    let interval = t.duration("interval");
    if interval.is_none() && !t.has("interval") {
        t.problem(
            "interval",
            "missing; how often to run the check, e.g. \"10s\"",
        );
    }
    let timeout = t.duration("timeout");
    if timeout.is_none() && !t.has("timeout") {
        t.problem("timeout", "missing; how long one run may take, e.g. \"2s\"");
    }
    CheckSpec {
        // Placeholders for missing values only keep the rules running; the problem above
        // already fails the spec.
        check_type: check_type.unwrap_or(CheckType::Tcp),
        name: t.string("name"),
        path: t.string("path"),
        method: t.string("method"),
        headers: t.string_lists("headers"),
        command: t.string("command"),
        args: t.strings("args").unwrap_or_default(),
        port: t.string("port"),
        interval: interval.unwrap_or(Duration::from_secs(10)),
        timeout: timeout.unwrap_or(Duration::from_secs(2)),
        success_before_passing: t
            .int("success_before_passing", rules::non_negative)
            .unwrap_or(1),
        failures_before_critical: t
            .int("failures_before_critical", rules::non_negative)
            .unwrap_or(1),
        check_restart: t.table("check_restart").map(|mut r| CheckRestart {
            limit: r.int("limit", rules::non_negative).unwrap_or(0),
            grace: r.duration("grace").unwrap_or(Duration::from_secs(1)),
        }),
    }
}

fn read_task(name: String, mut t: Table<'_, '_>) -> Task {
    let defaults = Resources::default();
    let resources = match t.table("resources") {
        Some(mut r) => Resources {
            cpu: r.int("cpu", rules::cpu).unwrap_or(defaults.cpu),
            memory: r.int("memory", rules::memory).unwrap_or(defaults.memory),
            memory_max: r.int("memory_max", rules::memory),
            cpu_hard_limit: r.bool("cpu_hard_limit").unwrap_or(false),
            cores: r.int("cores", rules::cores),
            pids: r.int("pids", rules::pids),
        },
        None => defaults,
    };
    let log_defaults = LogConfig::default();
    let logs = match t.table("logs") {
        Some(mut l) => LogConfig {
            max_files: l
                .int("max_files", rules::log_files)
                .unwrap_or(log_defaults.max_files),
            max_file_size: l
                .int("max_file_size", rules::log_file_size)
                .unwrap_or(log_defaults.max_file_size),
        },
        None => log_defaults,
    };
    Task {
        name,
        driver: t.string("driver").unwrap_or_default(),
        config: t.json_map("config"),
        resources,
        env: t.string_map("env"),
        kill_timeout: t
            .duration("kill_timeout")
            .unwrap_or_else(crate::model::default_kill_timeout),
        kill_signal: t
            .string("kill_signal")
            .unwrap_or_else(crate::model::default_kill_signal),
        user: t.string("user"),
        logs,
        meta: t.string_map("meta"),
    }
}
