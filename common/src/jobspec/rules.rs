//! The semantic rules of a job spec, run on a `Job` (parsed from TOML or received as
//! JSON): every rule that fails adds a problem at the field's path, using the TOML
//! names (`group.web.service[0].check[0].interval`). The per-field number rules are also
//! used by the reader, so a value too large or negative for its type gets the same words.

use std::collections::{BTreeSet, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;

use crate::model::{
    Affinity, CheckType, Constraint, DelayFunction, Job, JobType, MigratePolicy, NetworkSpec,
    ReschedulePolicy, RestartPolicy, ServiceSpec, Spread, Task, TaskGroup, UpdatePolicy,
};

use super::error::Problem;

/// Task drivers a spec may name.
pub const DRIVERS: &[&str] = &["raw_exec", "container", "mock"];

/// Keys the `raw_exec` driver's `config` accepts.
pub const RAW_EXEC_CONFIG_KEYS: &[&str] = &["args", "command"];

/// Keys the `mock` driver's `config` accepts (what the fake task does).
pub const MOCK_CONFIG_KEYS: &[&str] = &[
    "exit_code",
    "exit_signal",
    "ignore_stop_signal",
    "oom_killed",
    "run_for",
    "start_error",
];

/// Keys the `container` driver's `config` accepts.
pub const CONTAINER_CONFIG_KEYS: &[&str] = &[
    "args",
    "cap_add",
    "cap_drop",
    "command",
    "hostname",
    "image",
    "network_mode",
    "readonly_rootfs",
    "rootfs",
    "seccomp",
    "volumes",
    "work_dir",
];

/// Constraint operators.
pub const CONSTRAINT_OPERATORS: &[&str] = &[
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "regexp",
    "version",
    "semver",
    "set_contains",
    "set_contains_any",
    "is_set",
    "is_not_set",
    "distinct_hosts",
    "distinct_property",
];

/// Affinity operators: the constraint operators that compare one node's value (the
/// first twelve, before `is_set`).
const AFFINITY_OPERATORS: &[&str] = CONSTRAINT_OPERATORS.split_at(12).0;

/// Signal names `kill_signal` accepts.
pub const SIGNALS: &[&str] = &[
    "SIGABRT",
    "SIGALRM",
    "SIGCONT",
    "SIGHUP",
    "SIGINT",
    "SIGIO",
    "SIGKILL",
    "SIGPIPE",
    "SIGPROF",
    "SIGPWR",
    "SIGQUIT",
    "SIGSTOP",
    "SIGSYS",
    "SIGTERM",
    "SIGTRAP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGUSR1",
    "SIGUSR2",
    "SIGVTALRM",
    "SIGWINCH",
    "SIGXCPU",
    "SIGXFSZ",
];

const NETWORK_MODES: &[&str] = &["host", "bridge", "none"];
const ADDRESS_MODES: &[&str] = &["auto", "host", "driver", "alloc"];
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
const MAX_ID_LEN: usize = 128;

// The bounds of every number a user gives (docs/jobspec.md, "Limits"): far above any
// real need, and low enough that sums over a whole cluster, conversions to bytes and
// additions to a clock cannot overflow (`count` x tasks x `memory` MiB x 2^20 stays
// within a u64 once saturating sums take the rest).

/// Most instances of one group. A server may lower it (`[server] max_count`).
pub const MAX_COUNT: u32 = 10_000;
/// Most MHz one task may reserve.
pub const MAX_CPU_MHZ: u64 = 10_000_000;
/// Most MiB one task may reserve or be capped at (`memory`, `memory_max`): 2^40 MiB
/// (1 EiB), so the byte count (x 2^20) still fits a u64.
pub const MAX_MEMORY_MIB: u64 = 1 << 40;
/// Most whole cores one task may ask for.
pub const MAX_CORES: u32 = 4096;
/// Most reschedules a limited `reschedule` policy may allow within its `interval`:
/// every allocation carries the times of the failures that still count against them
/// (`RescheduleTracker`), so this bounds what a crash loop adds to each replacement.
pub const MAX_RESCHEDULE_ATTEMPTS: u32 = 100;
/// Most processes one task may ask for: Linux's own ceiling (`PID_MAX_LIMIT`).
pub const MAX_PIDS: u64 = 4_194_304;
/// Most rotated log files a task keeps.
pub const MAX_LOG_FILES: u32 = 10_000;
/// Largest rotated log file (MiB): 1 TiB.
pub const MAX_LOG_FILE_SIZE_MIB: u64 = 1 << 20;
/// Longest duration any field may give: restart, reschedule, update, migrate,
/// `disconnect.lost_after`, `shutdown_delay`, `kill_timeout`, checks (10 years).
pub const MAX_DURATION: Duration = crate::duration::MAX;

// ---------------------------------------------------------------------- number rules

fn between(n: i64, lo: i64, hi: i64) -> Result<(), String> {
    if (lo..=hi).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be between {lo} and {hi}"))
    }
}

fn at_most(n: i64, max: i64) -> Result<(), String> {
    if n > max {
        Err(format!("must be at most {max}"))
    } else {
        Ok(())
    }
}

fn at_least(n: i64, min: i64, message: &str) -> Result<(), String> {
    if n < min {
        Err(message.to_string())
    } else {
        Ok(())
    }
}

/// Counts, attempts, limits: anything that cannot be negative.
pub(crate) fn non_negative(n: i64) -> Result<(), String> {
    at_least(n, 0, "must be >= 0")
}

/// A `reschedule.attempts`.
pub(crate) fn reschedule_attempts(n: i64) -> Result<(), String> {
    non_negative(n)?;
    at_most(n, MAX_RESCHEDULE_ATTEMPTS.into())
}

pub(crate) fn at_least_one(n: i64) -> Result<(), String> {
    at_least(n, 1, "must be at least 1")
}

/// A group's `count`, and `canary` (more canaries than a group's most instances
/// means nothing).
pub(crate) fn count(n: i64) -> Result<(), String> {
    non_negative(n)?;
    at_most(n, MAX_COUNT.into())
}

pub(crate) fn cpu(n: i64) -> Result<(), String> {
    at_least(n, 1, "must be at least 1 (MHz)")?;
    at_most(n, MAX_CPU_MHZ as i64).map_err(|m| format!("{m} (MHz)"))
}

pub(crate) fn memory(n: i64) -> Result<(), String> {
    at_least(n, 4, "must be at least 4 (MiB)")?;
    at_most(n, MAX_MEMORY_MIB as i64).map_err(|m| format!("{m} (MiB)"))
}

/// `memory_max`: its lower bound is `memory` (checked with the task).
fn memory_max(n: i64) -> Result<(), String> {
    at_most(n, MAX_MEMORY_MIB as i64).map_err(|m| format!("{m} (MiB)"))
}

pub(crate) fn cores(n: i64) -> Result<(), String> {
    at_least_one(n)?;
    at_most(n, MAX_CORES.into())
}

pub(crate) fn pids(n: i64) -> Result<(), String> {
    at_least_one(n)?;
    at_most(n, MAX_PIDS as i64)
}

pub(crate) fn log_files(n: i64) -> Result<(), String> {
    at_least_one(n)?;
    at_most(n, MAX_LOG_FILES.into())
}

pub(crate) fn log_file_size(n: i64) -> Result<(), String> {
    at_least_one(n)?;
    at_most(n, MAX_LOG_FILE_SIZE_MIB as i64).map_err(|m| format!("{m} (MiB)"))
}

/// `max_parallel` of updates and migrations: at least one, at most `MAX_COUNT`.
pub(crate) fn max_parallel(n: i64) -> Result<(), String> {
    at_least_one(n)?;
    at_most(n, MAX_COUNT.into())
}

pub(crate) fn priority(n: i64) -> Result<(), String> {
    between(n, 1, 100)
}

pub(crate) fn port(n: i64) -> Result<(), String> {
    between(n, 1, 65535)
}

/// Spread target percents and spread weights.
pub(crate) fn percent(n: i64) -> Result<(), String> {
    between(n, 0, 100)
}

pub(crate) fn affinity_weight(n: i64) -> Result<(), String> {
    if n == 0 {
        return Err("must not be 0 (between -100 and 100)".to_string());
    }
    between(n, -100, 100)
}

// ---------------------------------------------------------------------- collector

/// Problems found so far, with the helpers the rules share.
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn int(&mut self, path: String, value: i64, rule: fn(i64) -> Result<(), String>) {
        if let Err(message) = rule(value) {
            self.add(path, message);
        }
    }

    /// A duration at most `MAX_DURATION`.
    fn duration(&mut self, path: impl Into<String>, d: Duration) {
        if d > MAX_DURATION {
            self.add(
                path,
                format!(
                    "must be at most {} ({} days)",
                    crate::duration::format(MAX_DURATION),
                    MAX_DURATION.as_secs() / 86_400
                ),
            );
        }
    }
}

fn name_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_-]+$").expect("constant pattern compiles"))
}

fn id_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_.-]+$").expect("constant pattern compiles"))
}

fn label_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_]+$").expect("constant pattern compiles"))
}

fn service_name_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9-]+$").expect("constant pattern compiles"))
}

fn one_of(words: &[&str]) -> String {
    words.join(", ")
}

/// Every problem of `job`, in a stable order.
pub(crate) fn check_job(job: &Job) -> Vec<Problem> {
    let mut c = Check {
        problems: Vec::new(),
    };
    job_fields(&mut c, job);
    c.problems
}

fn job_fields(c: &mut Check, job: &Job) {
    if job.id.is_empty() {
        c.add("id", "missing; every job needs an id");
    } else if job.id.len() > MAX_ID_LEN {
        c.add("id", format!("must be at most {MAX_ID_LEN} characters"));
    } else if !id_pattern().is_match(&job.id) || job.id == "." || job.id == ".." {
        c.add(
            "id",
            "may only contain letters, digits, `_`, `.` and `-` (and not be `.` or `..`)",
        );
    }
    if job.name != job.id && job.name.len() > MAX_ID_LEN {
        c.add("name", format!("must be at most {MAX_ID_LEN} characters"));
    }
    c.int("priority".into(), job.priority.into(), priority);
    if job.datacenters.is_empty() {
        c.add("datacenters", "must list at least one datacenter");
    }
    for (i, dc) in job.datacenters.iter().enumerate() {
        if dc.trim().is_empty() {
            c.add(format!("datacenters[{i}]"), "must not be empty");
        }
    }
    meta(c, "meta", job.meta.keys());
    placement(
        c,
        "",
        job.job_type,
        &job.constraints,
        &job.affinities,
        &job.spreads,
    );
    if let Some(update) = &job.update {
        update_policy(c, "update", update);
    }

    if job.groups.is_empty() {
        c.add("group", "at least one group is required ([group.NAME])");
    }
    let mut seen = HashSet::new();
    for group in &job.groups {
        if !seen.insert(group.name.as_str()) {
            c.add(format!("group.{}", group.name), "defined more than once");
        }
        group_fields(c, job, group);
    }
}

fn meta<'a>(c: &mut Check, path: &str, keys: impl Iterator<Item = &'a String>) {
    for key in keys {
        if key.is_empty() {
            c.add(path, "keys must not be empty");
        }
    }
}

/// A group or task name: it becomes part of directory names and allocation names.
fn object_name(c: &mut Check, path: &str, name: &str) {
    if name.is_empty() {
        c.add(path, "the name must not be empty");
    } else if name.len() > MAX_ID_LEN {
        c.add(
            path,
            format!("the name must be at most {MAX_ID_LEN} characters"),
        );
    } else if !name_pattern().is_match(name) {
        c.add(
            path,
            format!("the name {name:?} may only contain letters, digits, `_` and `-`"),
        );
    }
}

fn group_fields(c: &mut Check, job: &Job, group: &TaskGroup) {
    let path = format!("group.{}", group.name);
    object_name(c, &path, &group.name);
    c.int(format!("{path}.count"), group.count.into(), count);
    c.duration(format!("{path}.shutdown_delay"), group.shutdown_delay);
    if matches!(job.job_type, JobType::System | JobType::Sysbatch) && group.count > 1 {
        c.add(
            format!("{path}.count"),
            format!(
                "{} jobs run one instance per node; count must be 0 or 1",
                job.job_type.as_str()
            ),
        );
    }
    placement(
        c,
        &path,
        job.job_type,
        &group.constraints,
        &group.affinities,
        &group.spreads,
    );
    restart_policy(c, &format!("{path}.restart"), &group.restart);
    reschedule_policy(c, &format!("{path}.reschedule"), &group.reschedule);
    let labels = network(c, &format!("{path}.network"), &group.network);
    for (i, service) in group.services.iter().enumerate() {
        service_fields(c, &format!("{path}.service[{i}]"), service, &labels);
    }
    // An update inherited unchanged from the job was already checked there.
    if let Some(update) = group
        .update
        .as_ref()
        .filter(|u| Some(*u) != job.update.as_ref())
    {
        update_policy(c, &format!("{path}.update"), update);
    }
    if let Some(migrate) = &group.migrate {
        migrate_policy(c, &format!("{path}.migrate"), migrate);
    }
    if let Some(disconnect) = &group.disconnect {
        let at = format!("{path}.disconnect.lost_after");
        match disconnect.lost_after {
            Some(Duration::ZERO) => c.add(at, "must be greater than 0"),
            Some(d) => c.duration(at, d),
            None => {}
        }
    }
    meta(c, &format!("{path}.meta"), group.meta.keys());

    if group.tasks.is_empty() {
        c.add(
            path.clone(),
            format!("must have at least one task ([{path}.task.NAME])"),
        );
    }
    let mut seen = HashSet::new();
    for task in &group.tasks {
        let task_path = format!("{path}.task.{}", task.name);
        if !seen.insert(task.name.as_str()) {
            c.add(task_path.clone(), "defined more than once");
        }
        task_fields(c, &task_path, task);
    }
}

fn restart_policy(c: &mut Check, path: &str, p: &RestartPolicy) {
    c.duration(format!("{path}.interval"), p.interval);
    c.duration(format!("{path}.delay"), p.delay);
    let needed = p.delay.saturating_mul(p.attempts);
    if needed > p.interval {
        c.add(
            path,
            format!(
                "{} attempts with a delay of {} cannot fit in an interval of {}",
                p.attempts,
                crate::duration::format(p.delay),
                crate::duration::format(p.interval)
            ),
        );
    }
}

fn reschedule_policy(c: &mut Check, path: &str, p: &ReschedulePolicy) {
    c.int(
        format!("{path}.attempts"),
        p.attempts.into(),
        reschedule_attempts,
    );
    c.duration(format!("{path}.interval"), p.interval);
    c.duration(format!("{path}.delay"), p.delay);
    c.duration(format!("{path}.max_delay"), p.max_delay);
    if p.unlimited && p.delay.is_zero() {
        c.add(
            format!("{path}.delay"),
            "must be greater than 0 when rescheduling is unlimited",
        );
    }
    if !p.unlimited && p.attempts > 0 && p.interval.is_zero() {
        c.add(
            format!("{path}.interval"),
            "must be greater than 0 when attempts is set",
        );
    }
    if p.delay_function != DelayFunction::Constant && p.max_delay < p.delay {
        c.add(
            format!("{path}.max_delay"),
            format!(
                "must be at least delay ({}) with the {} delay function",
                crate::duration::format(p.delay),
                match p.delay_function {
                    DelayFunction::Exponential => "exponential",
                    _ => "fibonacci",
                }
            ),
        );
    }
}

/// What update and migrate policies share: how many at once, and how long to be healthy.
fn rollout(
    c: &mut Check,
    path: &str,
    max_parallel: u32,
    min_healthy: Duration,
    deadline: Duration,
) {
    c.int(
        format!("{path}.max_parallel"),
        max_parallel.into(),
        self::max_parallel,
    );
    c.duration(format!("{path}.min_healthy_time"), min_healthy);
    c.duration(format!("{path}.healthy_deadline"), deadline);
    if min_healthy >= deadline {
        c.add(
            format!("{path}.min_healthy_time"),
            format!(
                "must be less than healthy_deadline ({})",
                crate::duration::format(deadline)
            ),
        );
    }
}

fn update_policy(c: &mut Check, path: &str, p: &UpdatePolicy) {
    rollout(
        c,
        path,
        p.max_parallel,
        p.min_healthy_time,
        p.healthy_deadline,
    );
    c.duration(format!("{path}.progress_deadline"), p.progress_deadline);
    c.duration(format!("{path}.stagger"), p.stagger);
    c.int(format!("{path}.canary"), p.canary.into(), count);
    if !p.progress_deadline.is_zero() && p.healthy_deadline >= p.progress_deadline {
        c.add(
            format!("{path}.healthy_deadline"),
            format!(
                "must be less than progress_deadline ({})",
                crate::duration::format(p.progress_deadline)
            ),
        );
    }
}

fn migrate_policy(c: &mut Check, path: &str, p: &MigratePolicy) {
    rollout(
        c,
        path,
        p.max_parallel,
        p.min_healthy_time,
        p.healthy_deadline,
    );
}

/// Checks the ports and returns the labels defined.
fn network(c: &mut Check, path: &str, net: &NetworkSpec) -> BTreeSet<String> {
    if let Some(mode) = &net.mode {
        if !NETWORK_MODES.contains(&mode.as_str()) {
            c.add(
                format!("{path}.mode"),
                format!(
                    "unknown mode {mode:?}; expected one of {}",
                    one_of(NETWORK_MODES)
                ),
            );
        }
    }
    let mut labels = BTreeSet::new();
    let mut statics = HashSet::new();
    for port_spec in &net.ports {
        let port_path = format!("{path}.port.{}", port_spec.label);
        if !label_pattern().is_match(&port_spec.label) {
            c.add(
                port_path.clone(),
                format!(
                    "the port label {:?} may only contain letters, digits and `_`",
                    port_spec.label
                ),
            );
        }
        if !labels.insert(port_spec.label.clone()) {
            c.add(port_path.clone(), "defined more than once");
        }
        if let Some(p) = port_spec.static_port {
            c.int(format!("{port_path}.static"), p.into(), port);
            if p != 0 && !statics.insert(p) {
                c.add(
                    format!("{port_path}.static"),
                    format!("static port {p} is used by another label of the group"),
                );
            }
        }
        if let Some(to) = port_spec.to {
            c.int(format!("{port_path}.to"), to.into(), port);
        }
    }
    labels
}

fn service_fields(c: &mut Check, path: &str, s: &ServiceSpec, labels: &BTreeSet<String>) {
    if s.name.is_empty() {
        c.add(
            format!("{path}.name"),
            "missing; every service needs a name",
        );
    } else if s.name.len() > 63 || !service_name_pattern().is_match(&s.name) {
        c.add(
            format!("{path}.name"),
            "may only contain letters, digits and `-`, at most 63 characters",
        );
    }
    if let Some(label) = &s.port {
        port_label(c, &format!("{path}.port"), label, labels);
    }
    if let Some(mode) = &s.address_mode {
        if !ADDRESS_MODES.contains(&mode.as_str()) {
            c.add(
                format!("{path}.address_mode"),
                format!(
                    "unknown address mode {mode:?}; expected one of {}",
                    one_of(ADDRESS_MODES)
                ),
            );
        }
    }
    for (i, check) in s.checks.iter().enumerate() {
        let check_path = format!("{path}.check[{i}]");
        match check.check_type {
            CheckType::Http => {
                if check.path.as_deref().unwrap_or("").is_empty() {
                    c.add(
                        format!("{check_path}.path"),
                        "missing; http checks need a path such as \"/health\"",
                    );
                }
            }
            CheckType::Script => {
                if check.command.as_deref().unwrap_or("").is_empty() {
                    c.add(
                        format!("{check_path}.command"),
                        "missing; script checks need a command",
                    );
                }
            }
            CheckType::Tcp => {}
        }
        if check.check_type != CheckType::Script && check.port.is_none() && s.port.is_none() {
            c.add(
                check_path.clone(),
                "http and tcp checks need a port: set `port` on the check or its service",
            );
        }
        if let Some(label) = &check.port {
            port_label(c, &format!("{check_path}.port"), label, labels);
        }
        if let Some(method) = &check.method {
            if !HTTP_METHODS.contains(&method.as_str()) {
                c.add(
                    format!("{check_path}.method"),
                    format!(
                        "unknown method {method:?}; expected one of {}",
                        one_of(HTTP_METHODS)
                    ),
                );
            }
        }
        if check.interval < Duration::from_secs(1) {
            c.add(format!("{check_path}.interval"), "must be at least 1s");
        }
        c.duration(format!("{check_path}.interval"), check.interval);
        if check.timeout.is_zero() {
            c.add(format!("{check_path}.timeout"), "must be greater than 0");
        }
        c.duration(format!("{check_path}.timeout"), check.timeout);
        if let Some(restart) = &check.check_restart {
            c.duration(format!("{check_path}.check_restart.grace"), restart.grace);
        }
    }
}

fn port_label(c: &mut Check, path: &str, label: &str, labels: &BTreeSet<String>) {
    if !labels.contains(label) {
        let defined = if labels.is_empty() {
            "the group defines no ports ([group.G.network.port.LABEL])".to_string()
        } else {
            format!(
                "defined: {}",
                labels.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        c.add(path, format!("unknown port label {label:?}; {defined}"));
    }
}

fn task_fields(c: &mut Check, path: &str, task: &Task) {
    object_name(c, path, &task.name);
    let driver_path = format!("{path}.driver");
    if task.driver.is_empty() {
        c.add(driver_path, format!("missing; one of {}", one_of(DRIVERS)));
    } else if !DRIVERS.contains(&task.driver.as_str()) {
        c.add(
            driver_path,
            format!(
                "unknown driver {:?}; one of {}",
                task.driver,
                one_of(DRIVERS)
            ),
        );
    }
    driver_config(c, &format!("{path}.config"), task);

    let res = &task.resources;
    c.int(format!("{path}.resources.cpu"), clamp(res.cpu), cpu);
    c.int(
        format!("{path}.resources.memory"),
        clamp(res.memory),
        memory,
    );
    if let Some(n) = res.cores {
        c.int(format!("{path}.resources.cores"), n.into(), cores);
    }
    if let Some(n) = res.pids {
        c.int(format!("{path}.resources.pids"), clamp(n), pids);
    }
    if let Some(max) = res.memory_max {
        c.int(
            format!("{path}.resources.memory_max"),
            clamp(max),
            memory_max,
        );
        if max < res.memory {
            c.add(
                format!("{path}.resources.memory_max"),
                format!("must be at least memory ({} MiB)", res.memory),
            );
        }
    }
    for (key, value) in &task.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            c.add(
                format!("{path}.env"),
                format!("{key:?} is not a valid variable name (empty, or has `=` or NUL)"),
            );
        }
        if value.contains('\0') {
            c.add(format!("{path}.env.{key}"), "must not contain NUL");
        }
    }
    if !SIGNALS.contains(&task.kill_signal.as_str()) {
        c.add(
            format!("{path}.kill_signal"),
            format!(
                "unknown signal {:?}; expected a name such as SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 or SIGKILL",
                task.kill_signal
            ),
        );
    }
    if let Some(user) = &task.user {
        if user.trim().is_empty() {
            c.add(format!("{path}.user"), "must not be empty when given");
        }
    }
    c.duration(format!("{path}.kill_timeout"), task.kill_timeout);
    c.int(
        format!("{path}.logs.max_files"),
        task.logs.max_files.into(),
        log_files,
    );
    c.int(
        format!("{path}.logs.max_file_size"),
        clamp(task.logs.max_file_size),
        log_file_size,
    );
    meta(c, &format!("{path}.meta"), task.meta.keys());
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn driver_config(c: &mut Check, path: &str, task: &Task) {
    let allowed = match task.driver.as_str() {
        "raw_exec" => RAW_EXEC_CONFIG_KEYS,
        "container" => CONTAINER_CONFIG_KEYS,
        "mock" => MOCK_CONFIG_KEYS,
        // An unknown driver is reported already; its config cannot be judged.
        _ => return,
    };
    for key in task.config.keys() {
        if !allowed.contains(&key.as_str()) {
            c.add(
                format!("{path}.{key}"),
                format!(
                    "unknown field `{key}` for the {} driver; expected one of {}",
                    task.driver,
                    one_of(allowed)
                ),
            );
        }
    }
    let string_at = |c: &mut Check, key: &str, required: bool| match task.config.get(key) {
        Some(serde_json::Value::String(s)) if s.is_empty() => {
            c.add(format!("{path}.{key}"), "must not be empty")
        }
        Some(serde_json::Value::String(_)) => {}
        Some(_) => c.add(format!("{path}.{key}"), "expected a string"),
        None if required => c.add(
            format!("{path}.{key}"),
            format!("missing; the {} driver needs a {key}", task.driver),
        ),
        None => {}
    };
    match task.driver.as_str() {
        "raw_exec" => string_at(c, "command", true),
        "container" => {
            let has_rootfs = task.config.contains_key("rootfs");
            let has_image = task.config.contains_key("image");
            if !has_rootfs && !has_image {
                c.add(
                    path,
                    "the container driver needs `rootfs` (a directory) or `image` (a tarball)",
                );
            }
            if has_rootfs && has_image {
                c.add(path, "give either `rootfs` or `image`, not both");
            }
            string_at(c, "rootfs", false);
            string_at(c, "image", false);
            // An image may name its own command (Entrypoint/Cmd); a directory does not.
            string_at(c, "command", has_rootfs);
            string_at(c, "work_dir", false);
            string_at(c, "hostname", false);
            for key in ["volumes", "cap_add", "cap_drop"] {
                match task.config.get(key) {
                    None => {}
                    Some(serde_json::Value::Array(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            if !item.is_string() {
                                c.add(format!("{path}.{key}[{i}]"), "expected a string");
                            }
                        }
                    }
                    Some(_) => c.add(format!("{path}.{key}"), "expected an array of strings"),
                }
            }
            if let Some(serde_json::Value::Array(items)) = task.config.get("volumes") {
                for (i, v) in items.iter().enumerate() {
                    let Some(v) = v.as_str() else { continue };
                    let parts: Vec<&str> = v.split(':').collect();
                    let shape_ok = matches!(parts.as_slice(), [h, t] | [h, t, "ro" | "rw"]
                        if h.starts_with('/') && t.starts_with('/'));
                    if !shape_ok {
                        c.add(
                            format!("{path}.volumes[{i}]"),
                            "expected \"/host/path:/container/path\" with an optional \":ro\" or \":rw\"",
                        );
                    }
                }
            }
            match task.config.get("network_mode") {
                None => {}
                Some(serde_json::Value::String(m)) if m == "host" || m == "none" => {}
                Some(_) => c.add(
                    format!("{path}.network_mode"),
                    "expected \"host\" or \"none\"",
                ),
            }
            match task.config.get("seccomp") {
                None => {}
                Some(serde_json::Value::String(m)) if m == "default" || m == "unconfined" => {}
                Some(_) => c.add(
                    format!("{path}.seccomp"),
                    "expected \"default\" or \"unconfined\"",
                ),
            }
            if task
                .config
                .get("readonly_rootfs")
                .is_some_and(|v| !v.is_boolean())
            {
                c.add(format!("{path}.readonly_rootfs"), "expected true or false");
            }
        }
        _ => {
            mock_config(c, path, task);
            return;
        }
    }
    match task.config.get("args") {
        None => {}
        Some(serde_json::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    c.add(format!("{path}.args[{i}]"), "expected a string");
                }
            }
        }
        Some(_) => c.add(format!("{path}.args"), "expected an array of strings"),
    }
}

/// The mock driver's knobs, typed as the driver reads them.
fn mock_config(c: &mut Check, path: &str, task: &Task) {
    use serde_json::Value;
    for (key, value) in &task.config {
        let fits = match key.as_str() {
            "run_for" => matches!(value, Value::String(s)
                if crate::duration::parse(s).is_ok_and(|d| d <= MAX_DURATION)),
            "exit_code" | "exit_signal" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "oom_killed" | "ignore_stop_signal" => value.is_boolean(),
            "start_error" => value.is_string(),
            _ => true,
        };
        if !fits {
            let expected = match key.as_str() {
                "run_for" => "a duration string such as \"2s\"",
                "exit_code" | "exit_signal" => "a whole number",
                "oom_killed" | "ignore_stop_signal" => "true or false",
                _ => "a string",
            };
            c.add(format!("{path}.{key}"), format!("expected {expected}"));
        }
    }
}

// ---------------------------------------------------------------------- placement

fn placement(
    c: &mut Check,
    base: &str,
    job_type: JobType,
    constraints: &[Constraint],
    affinities: &[Affinity],
    spreads: &[Spread],
) {
    let at = |name: &str, i: usize| super::source::join(base, &format!("{name}[{i}]"));
    for (i, k) in constraints.iter().enumerate() {
        constraint(c, &at("constraint", i), k);
    }
    let system = matches!(job_type, JobType::System | JobType::Sysbatch);
    for (i, a) in affinities.iter().enumerate() {
        let path = at("affinity", i);
        if system {
            c.add(
                path.clone(),
                format!("{} jobs cannot have affinities", job_type.as_str()),
            );
        }
        affinity(c, &path, a);
    }
    for (i, s) in spreads.iter().enumerate() {
        let path = at("spread", i);
        if system {
            c.add(
                path.clone(),
                format!("{} jobs cannot have spreads", job_type.as_str()),
            );
        }
        spread(c, &path, s);
    }
}

/// `${attr.x}`, `${node.class}`, `${meta.rack}`.
fn target(c: &mut Check, path: String, attribute: &str) {
    if attribute.is_empty() {
        c.add(
            path,
            "missing; e.g. \"${attr.kernel.name}\" or \"${node.class}\"",
        );
        return;
    }
    let inner = attribute
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'));
    match inner {
        Some(name)
            if ["attr.", "node.", "meta."]
                .iter()
                .any(|p| name.len() > p.len() && name.starts_with(p)) => {}
        _ => c.add(
            path,
            format!(
                "{attribute:?} is not a node attribute; expected \"${{attr.NAME}}\", \"${{node.NAME}}\" or \"${{meta.NAME}}\""
            ),
        ),
    }
}

fn regexp(c: &mut Check, path: String, pattern: &str) {
    if let Err(e) = Regex::new(pattern) {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or("").trim().to_string();
        c.add(
            path,
            format!("invalid regular expression {pattern:?}: {last}"),
        );
    }
}

fn constraint(c: &mut Check, path: &str, k: &Constraint) {
    let op = k.operator.as_str();
    if !CONSTRAINT_OPERATORS.contains(&op) {
        c.add(
            format!("{path}.operator"),
            format!(
                "unknown operator {op:?}; expected one of {}",
                one_of(CONSTRAINT_OPERATORS)
            ),
        );
        return;
    }
    if op != "distinct_hosts" {
        target(c, format!("{path}.attribute"), &k.attribute);
    }
    match op {
        "is_set" | "is_not_set" => {}
        "distinct_hosts" => {
            if !matches!(k.value.as_str(), "" | "true" | "false") {
                c.add(
                    format!("{path}.value"),
                    "must be \"true\" or \"false\" (or left out)",
                );
            }
        }
        "distinct_property" => {
            if !k.value.is_empty() && k.value.parse::<u32>().map_or(true, |n| n == 0) {
                c.add(
                    format!("{path}.value"),
                    "must be a positive number: how many allocations may share one value",
                );
            }
        }
        "regexp" => regexp(c, format!("{path}.value"), &k.value),
        _ => {
            if k.value.is_empty() {
                c.add(
                    format!("{path}.value"),
                    format!("missing; operator {op:?} needs a value"),
                );
            }
        }
    }
}

fn affinity(c: &mut Check, path: &str, a: &Affinity) {
    target(c, format!("{path}.attribute"), &a.attribute);
    let op = a.operator.as_str();
    if !AFFINITY_OPERATORS.contains(&op) {
        c.add(
            format!("{path}.operator"),
            format!(
                "unknown operator {op:?}; expected one of {}",
                one_of(AFFINITY_OPERATORS)
            ),
        );
    } else if op == "regexp" {
        regexp(c, format!("{path}.value"), &a.value);
    } else if a.value.is_empty() {
        c.add(
            format!("{path}.value"),
            "missing; an affinity needs a value",
        );
    }
    c.int(format!("{path}.weight"), a.weight.into(), affinity_weight);
}

fn spread(c: &mut Check, path: &str, s: &Spread) {
    target(c, format!("{path}.attribute"), &s.attribute);
    c.int(format!("{path}.weight"), s.weight.into(), percent);
    let mut sum = 0u32;
    let mut seen = HashSet::new();
    for (i, t) in s.targets.iter().enumerate() {
        let target_path = format!("{path}.target[{i}]");
        if t.value.is_empty() {
            c.add(
                format!("{target_path}.value"),
                "missing; a target needs a value",
            );
        } else if !seen.insert(t.value.as_str()) {
            c.add(
                format!("{target_path}.value"),
                format!("target {:?} is listed more than once", t.value),
            );
        }
        c.int(format!("{target_path}.percent"), t.percent.into(), percent);
        sum += u32::from(t.percent);
    }
    if sum > 100 {
        c.add(
            format!("{path}.target"),
            format!("the target percents add up to {sum}; they must not exceed 100"),
        );
    }
}
