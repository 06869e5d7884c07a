//! Health checks of an allocation's services, run by the client: one tokio task per
//! check of each `[[group.G.service]]`, started when the check's task runs and stopped
//! when it stops (the alloc runner drives that, see `allocrunner`). Every `interval`
//! a check runs once (`probe`) within its `timeout`; its results become a health
//! (`threshold`), and `check_restart` asks the alloc runner to restart the task once
//! the check was critical `limit` times in a row after the task's `grace`.
//!
//! A check belongs to the group's first task: a script runs in it and `check_restart`
//! restarts it (the spec has no `task` field on checks yet). HTTP and TCP checks go to
//! the allocated port named by the check's `port`, else its service's, at the port's
//! host address.

mod context;
pub mod probe;
pub mod threshold;

use orch_common::ids::now_ms;
use orch_common::model::{Allocation, CheckHealth, CheckSpec, CheckStatus, CheckType, TaskGroup};
use tokio::sync::mpsc;

pub use context::CheckContext;
use probe::Outcome;
use threshold::{RestartCounter, Threshold};

/// One check of one service of an allocation, resolved against its ports and tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    /// `SERVICE/CHECK`: the key in `Allocation::checks`.
    pub key: String,
    pub service: String,
    pub name: String,
    pub spec: CheckSpec,
    /// The task it belongs to.
    pub task: String,
    pub target: Target,
}

/// Where a check goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP or TCP check's address.
    Addr { host: String, port: u16 },
    /// A script check: the task itself.
    Task,
    /// An address that cannot be found (the port label has no allocated port): every
    /// run fails with this.
    Unresolved(String),
}

/// The checks of `group`'s services for `alloc`, in the order the spec lists them.
pub fn resolve(alloc: &Allocation, group: &TaskGroup) -> Vec<CheckDef> {
    let Some(task) = group.tasks.first().map(|t| t.name.clone()) else {
        return Vec::new();
    };
    let mut defs: Vec<CheckDef> = Vec::new();
    for service in &group.services {
        for (i, spec) in service.checks.iter().enumerate() {
            let mut name = spec
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{i}", spec.check_type.as_str()));
            // Two checks of a service with the same name must not share a key.
            if defs
                .iter()
                .any(|d| d.key == format!("{}/{name}", service.name))
            {
                name = format!("{name}-{i}");
            }
            let target = match spec.check_type {
                CheckType::Script => Target::Task,
                CheckType::Http | CheckType::Tcp => {
                    let label = spec.port.as_ref().or(service.port.as_ref());
                    match label {
                        None => {
                            Target::Unresolved("the check and its service name no port".to_string())
                        }
                        Some(label) => {
                            match alloc.resources.ports.iter().find(|p| &p.label == label) {
                                Some(p) => Target::Addr {
                                    host: dial_host(&p.host_ip),
                                    port: p.value,
                                },
                                None => Target::Unresolved(format!(
                                    "port {label:?} is not allocated to allocation {}",
                                    alloc.id
                                )),
                            }
                        }
                    }
                }
            };
            defs.push(CheckDef {
                key: format!("{}/{name}", service.name),
                service: service.name.clone(),
                name,
                spec: spec.clone(),
                task: task.clone(),
                target,
            });
        }
    }
    defs
}

/// The address to dial for a port bound on `host_ip`: a wildcard (or no address)
/// means this host, reached on loopback.
fn dial_host(host_ip: &str) -> String {
    match host_ip {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "::1".to_string(),
        ip => ip.to_string(),
    }
}

impl CheckDef {
    /// The status before the first run.
    pub fn pending(&self) -> CheckStatus {
        CheckStatus {
            service: self.service.clone(),
            name: self.name.clone(),
            check_type: self.spec.check_type,
            task: self.task.clone(),
            status: CheckHealth::Pending,
            output: String::new(),
            last_run_ms: 0,
            status_since_ms: now_ms(),
        }
    }
}

/// A check loop's message to its alloc runner.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Which start of the task the loop belongs to (stale reports are dropped).
    pub generation: u64,
    pub key: String,
    pub status: CheckStatus,
    /// Set when `check_restart` wants the task restarted: the event's message.
    pub restart: Option<String>,
}

/// Runs `def` every `interval` until aborted (or until it asked for a restart, or
/// the receiver is gone). The first run is one interval after the start, so a task
/// gets that long to open its port before it is judged.
pub async fn run(
    def: CheckDef,
    ctx: CheckContext,
    generation: u64,
    reports: mpsc::UnboundedSender<CheckReport>,
) {
    let started = tokio::time::Instant::now();
    let mut threshold = Threshold::new(
        def.spec.success_before_passing,
        def.spec.failures_before_critical,
    );
    let mut restarts = def
        .spec
        .check_restart
        .as_ref()
        .and_then(RestartCounter::new);
    let mut status = def.pending();
    // The interval is the user's (bounded by the spec; capped here for older jobs) so
    // `started + interval` cannot overflow.
    let interval = def.spec.interval.min(orch_common::duration::MAX);
    let mut tick = tokio::time::interval_at(started + interval, interval);
    // A run that took long is not followed by a burst of catch-up runs.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = match tokio::time::timeout(def.spec.timeout, run_once(&def, &ctx)).await {
            Ok(o) => o,
            Err(_) => Outcome::timed_out(def.spec.timeout),
        };
        let health = threshold.record(outcome.success);
        let now = now_ms();
        if health != status.status {
            status.status_since_ms = now;
        }
        status.status = health;
        status.output = outcome.output;
        status.last_run_ms = now;
        let restart = restarts.as_mut().and_then(|c| {
            c.record(health, started.elapsed())
                .then(|| restart_reason(&def, c.count(), c.limit(), &status.output))
        });
        let asked = restart.is_some();
        if asked {
            tracing::warn!(alloc = %ctx.alloc_id, check = %def.key, task = %def.task, "check critical too long; restarting the task");
        }
        let report = CheckReport {
            generation,
            key: def.key.clone(),
            status: status.clone(),
            restart,
        };
        if reports.send(report).is_err() || asked {
            // The restart starts a new generation of checks; this one is done.
            return;
        }
    }
}

async fn run_once(def: &CheckDef, ctx: &CheckContext) -> Outcome {
    match (&def.target, def.spec.check_type) {
        (Target::Unresolved(why), _) => Outcome {
            success: false,
            output: why.clone(),
        },
        (Target::Task, _) | (_, CheckType::Script) => {
            probe::script(ctx, &def.spec, &def.task).await
        }
        (Target::Addr { host, port }, CheckType::Http) => {
            probe::http(&ctx.http, &def.spec, host, *port).await
        }
        (Target::Addr { host, port }, CheckType::Tcp) => probe::tcp(host, *port).await,
    }
}

/// The `Restart Signaled` event's message: which check, how often, what it said.
fn restart_reason(def: &CheckDef, times: u32, limit: u32, output: &str) -> String {
    let said: String = output
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let mut msg = format!(
        "health check {:?} was critical {times} time{} in a row (check_restart.limit = {limit})",
        def.key,
        if times == 1 { "" } else { "s" },
    );
    if !said.trim().is_empty() {
        msg.push_str(": ");
        msg.push_str(said.trim());
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::DriverSet;
    use orch_common::mock::{self, task, AllocBuilder, JobBuilder};
    use std::sync::Arc;
    use std::time::Duration;

    /// A check of type `t`, named `name`, on port `port` (`None`: its service's).
    fn check(t: CheckType, name: Option<&str>, port: Option<&str>) -> CheckSpec {
        let mut c = mock::check(t);
        c.name = name.map(str::to_string);
        c.port = port.map(str::to_string);
        c
    }

    #[test]
    fn checks_resolve_to_the_allocated_ports_and_the_first_task() {
        let mut web = mock::service("web", Some("http"));
        web.checks = vec![
            check(CheckType::Http, Some("alive"), None),
            check(CheckType::Tcp, None, Some("admin")),
            check(CheckType::Script, None, None),
            check(CheckType::Tcp, Some("alive"), None),
        ];
        let j = JobBuilder::new("job1")
            .group_name("g")
            .tasks(vec![task("main", "mock"), task("side", "mock")])
            .service(web)
            .build();
        let a = AllocBuilder::new(&j).port("http", 23456, "0.0.0.0").build();
        let defs = resolve(&a, &j.groups[0]);
        let keys: Vec<&str> = defs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            ["web/alive", "web/tcp-1", "web/script-2", "web/alive-3"]
        );
        assert!(defs.iter().all(|d| d.task == "main"));
        assert_eq!(
            defs[0].target,
            Target::Addr {
                host: "127.0.0.1".into(),
                port: 23456
            }
        );
        assert!(matches!(&defs[1].target, Target::Unresolved(why) if why.contains("\"admin\"")));
        assert_eq!(defs[2].target, Target::Task);
    }

    #[tokio::test]
    async fn an_unresolved_check_goes_critical_and_asks_for_a_restart() {
        let mut spec = check(CheckType::Tcp, Some("c"), None);
        spec.check_restart = Some(orch_common::model::CheckRestart {
            limit: 1,
            grace: Duration::ZERO,
        });
        let def = CheckDef {
            key: "web/c".into(),
            service: "web".into(),
            name: "c".into(),
            spec,
            task: "main".into(),
            target: Target::Unresolved("no port".into()),
        };
        let ctx = CheckContext::new(&"a1".into(), Arc::new(DriverSet::new()), None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::time::pause();
        let h = tokio::spawn(run(def, ctx, 7, tx));
        let r = rx.recv().await.unwrap();
        assert_eq!(r.generation, 7);
        assert_eq!(r.status.status, CheckHealth::Critical);
        assert_eq!(r.status.output, "no port");
        let why = r.restart.expect("a restart is asked");
        assert!(why.contains("\"web/c\" was critical 1 time"), "{why}");
        h.await.unwrap();
    }
}
