//! The alloc runner: one per allocation on this client. Prepares the allocation
//! directory, runs a task runner per task, derives the allocation's client status from
//! the task states and hands every change to the status batcher.
//!
//! Client status: any task running -> running; else any pending -> pending; all dead ->
//! failed if any failed, else complete. When one task fails for good, its siblings are
//! killed. A stop (desired status stop/evict) kills every task.
//!
//! Health checks (`checks`) run while their task runs: started (again) whenever the
//! task starts with a new `started_at`, stopped when it leaves `running` or the
//! allocation stops. A check's status or output change is published like a task state
//! change; every run's result is kept in the live view (`AllocRunnerHandle::checks`).
//! A `check_restart` goes through the same in-place restart as `orch alloc restart`,
//! but counted by the restart policy like a failure.
//!
//! Deployments: an allocation placed (or updated in place) by a deployment has its
//! health tracked (`health`) from its task states and checks; the verdict goes with
//! every later status update (`deployment_health`). An in-place update
//! (`AllocRunnerHandle::update`: a new job version or deployment) is taken without
//! restarting tasks: a new deployment starts health tracking again, changed checks
//! restart the check loops. A stop asked by the servers waits the group's
//! `shutdown_delay` before killing running tasks (checks keep running, health
//! tracking stops), so that clients which resolved the allocation before it left the
//! catalog stop using it; a client shutdown or a failed sibling kills at once.

pub mod checks;
pub mod health;
pub mod taskrunner;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use orch_common::api::{AllocClientUpdate, DeploymentHealthReport};
use orch_common::duration::format as human;
use orch_common::ids::{now_ms, AllocId};
use orch_common::model::{
    Allocation, CheckStatus, ClientStatus, JobType, TaskEvent, TaskState, TaskStateKind,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::allocdir::AllocDir;
use crate::batcher::{Motion, UpdateBatcher};
use checks::{CheckContext, CheckDef, CheckReport};
use health::HealthTracker;
use taskrunner::{events, RestartRequest, TaskRunnerDeps, TaskRunnerHandle, TaskUpdate};

/// A stop asked of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StopRequest {
    /// Goes into the tasks' Killing events.
    reason: String,
    /// Asked by the servers: running tasks get the group's `shutdown_delay` first.
    delayed: bool,
}

/// Controls a running allocation and shows its latest state.
pub struct AllocRunnerHandle {
    pub alloc_id: AllocId,
    /// Task names, in the group's order.
    pub tasks: Vec<String>,
    pub alloc_dir: AllocDir,
    /// The group's `disconnect.lost_after`: how long the allocation may keep running
    /// while the client cannot reach any server.
    pub lost_after: Option<std::time::Duration>,
    stop: watch::Sender<Option<StopRequest>>,
    /// The allocation as the runner last took it (in-place updates go through here).
    alloc: watch::Sender<Arc<Allocation>>,
    restarts: Arc<watch::Sender<RestartRequest>>,
    status: watch::Receiver<AllocClientUpdate>,
    checks: watch::Receiver<BTreeMap<String, CheckStatus>>,
    join: tokio::task::JoinHandle<()>,
}

impl AllocRunnerHandle {
    /// Kills every task at once (idempotent; cuts a running shutdown delay short);
    /// `reason` goes into their Killing events.
    pub fn stop(&self, reason: &str) {
        self.ask_stop(reason, false);
    }

    /// Stops the allocation as the servers asked (desired status stop or evict):
    /// running tasks are killed after the group's `shutdown_delay`.
    pub fn stop_after_shutdown_delay(&self, reason: &str) {
        self.ask_stop(reason, true);
    }

    fn ask_stop(&self, reason: &str, delayed: bool) {
        let req = StopRequest {
            reason: reason.to_string(),
            delayed,
        };
        self.stop.send_if_modified(|cur| match cur {
            // An immediate stop overrides a delayed one; nothing else changes a stop.
            Some(c) if c.delayed && !delayed => {
                *cur = Some(req);
                true
            }
            Some(_) => false,
            None => {
                *cur = Some(req);
                true
            }
        });
    }

    /// Takes the servers' newer copy of the allocation when it was updated in place
    /// (another job version or deployment; its tasks are unchanged, so they keep
    /// running). False when there is nothing new to take.
    pub fn update(&self, alloc: Allocation) -> bool {
        if alloc.job.is_none() {
            return false;
        }
        self.alloc.send_if_modified(|cur| {
            if cur.job_version == alloc.job_version && cur.deployment_id == alloc.deployment_id {
                return false;
            }
            *cur = Arc::new(alloc);
            true
        })
    }

    /// The job version of the allocation the runner runs.
    pub fn job_version(&self) -> u64 {
        self.alloc.borrow().job_version
    }

    /// Restarts `task` (every task with `None`) in place; false when there is no
    /// such task.
    pub fn restart(&self, task: Option<&str>) -> bool {
        if task.is_some_and(|t| !self.tasks.iter().any(|n| n == t)) {
            return false;
        }
        request_restart(&self.restarts, task, None, false);
        true
    }

    /// Every health check's latest result (each run, not only the changes the
    /// servers hear of).
    pub fn checks(&self) -> BTreeMap<String, CheckStatus> {
        self.checks.borrow().clone()
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// The latest status (what was last handed to the batcher).
    pub fn status(&self) -> AllocClientUpdate {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<AllocClientUpdate> {
        self.status.clone()
    }

    /// True once every task is dead and the runner has finished.
    pub fn is_done(&self) -> bool {
        self.join.is_finished()
    }

    /// Whether `task` is dead (or unknown here).
    pub fn task_dead(&self, task: &str) -> bool {
        self.is_done()
            || self
                .status
                .borrow()
                .task_states
                .get(task)
                .map(|s| s.state == TaskStateKind::Dead)
                .unwrap_or(false)
    }

    /// Stops supervising without touching the tasks (their processes keep running):
    /// for a client that shuts down without stopping its tasks.
    pub fn abandon(self) {
        self.join.abort();
    }

    /// Waits for the runner to finish.
    pub async fn wait(self) {
        if let Err(e) = self.join.await {
            tracing::error!(alloc = %self.alloc_id, error = %e, "alloc runner panicked");
        }
    }
}

/// Starts running `alloc` (which must embed its job).
pub fn spawn(
    alloc: Allocation,
    alloc_root: &Path,
    deps: TaskRunnerDeps,
    batcher: Arc<UpdateBatcher>,
) -> AllocRunnerHandle {
    let alloc = Arc::new(alloc);
    let alloc_dir = AllocDir::new(alloc_root, &alloc.id);
    let group = alloc.job.as_ref().and_then(|j| j.group(&alloc.group));
    let tasks: Vec<String> = group
        .map(|g| g.tasks.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default();
    let lost_after = group.and_then(|g| g.disconnect.as_ref()?.lost_after);
    let initial = AllocClientUpdate {
        deployment_health: None,
        id: alloc.id.clone(),
        client_status: ClientStatus::Pending,
        client_description: "No tasks have started".to_string(),
        task_states: BTreeMap::new(),
        checks: Default::default(),
    };
    batcher.expect(&alloc.id);
    let check_ctx = CheckContext::new(&alloc.id, deps.drivers.clone(), deps.handles.clone());
    let runs_to_completion = alloc
        .job
        .as_ref()
        .is_some_and(|j| matches!(j.job_type, JobType::Batch | JobType::Sysbatch));
    let (status_tx, status) = watch::channel(initial);
    let (stop, stop_rx) = watch::channel(None);
    let (alloc_tx, update_rx) = watch::channel(alloc.clone());
    let (restarts, restarts_rx) = watch::channel(RestartRequest::default());
    let restarts = Arc::new(restarts);
    let (live_checks, checks) = watch::channel(BTreeMap::new());
    let (check_tx, check_rx) = mpsc::unbounded_channel();
    let runner = AllocRunner {
        restarts_rx,
        restarts_tx: restarts.clone(),
        check_defs: Vec::new(),
        check_ctx,
        check_tx,
        check_rx: Some(check_rx),
        running_checks: BTreeMap::new(),
        generation: 0,
        checks: BTreeMap::new(),
        live_checks,
        alloc: alloc.clone(),
        alloc_dir: alloc_dir.clone(),
        deps,
        batcher,
        runs_to_completion,
        stopping: false,
        killing: false,
        delay_until: None,
        stop_reason: String::new(),
        health: None,
        health_report: None,
        health_wake: None,
        status_tx,
        stop_rx,
        update_rx,
        states: BTreeMap::new(),
    };
    let join = tokio::spawn(runner.run());
    AllocRunnerHandle {
        alloc_id: alloc.id.clone(),
        tasks,
        alloc_dir,
        lost_after,
        stop,
        alloc: alloc_tx,
        restarts,
        status,
        checks,
        join,
    }
}

/// Asks the task runners to restart `task` (every task with `None`) in place; one that
/// `counts` goes through the restart policy.
fn request_restart(
    tx: &watch::Sender<RestartRequest>,
    task: Option<&str>,
    reason: Option<String>,
    counts: bool,
) {
    tx.send_modify(|r| {
        r.seq += 1;
        r.task = task.map(str::to_string);
        r.reason = reason;
        r.counts = counts;
    });
}

/// The check loops of one run of a task.
struct RunningChecks {
    /// Tells this run's reports from those of an earlier one still in the channel.
    generation: u64,
    /// The run (its `started_at`) the loops were started for.
    started_at: Option<u64>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningChecks {
    fn halt(&mut self) {
        for l in self.loops.drain(..) {
            l.abort();
        }
    }
}

/// A runner that goes away (also one abandoned at a client shutdown) takes its check
/// loops with it: a dropped `JoinHandle` alone would leave them running.
impl Drop for RunningChecks {
    fn drop(&mut self) {
        self.halt();
    }
}

struct AllocRunner {
    alloc: Arc<Allocation>,
    alloc_dir: AllocDir,
    deps: TaskRunnerDeps,
    batcher: Arc<UpdateBatcher>,
    /// A batch or sysbatch allocation: running is on the way to its end.
    runs_to_completion: bool,
    /// Asked to stop: every state until the end is on the way to it.
    stopping: bool,
    /// The tasks were told to die (after the shutdown delay, if any).
    killing: bool,
    /// When the shutdown delay of a stop ends (None: no delay under way).
    delay_until: Option<Instant>,
    /// The reason of the stop whose delay is under way.
    stop_reason: String,
    /// The health tracker of the allocation's deployment (None: not tracked).
    health: Option<HealthTracker>,
    /// Its verdict, sent with every status update from then on.
    health_report: Option<DeploymentHealthReport>,
    /// When the tracker wants to look again without a change.
    health_wake: Option<Instant>,
    status_tx: watch::Sender<AllocClientUpdate>,
    stop_rx: watch::Receiver<Option<StopRequest>>,
    /// In-place updates of the allocation.
    update_rx: watch::Receiver<Arc<Allocation>>,
    restarts_rx: watch::Receiver<RestartRequest>,
    restarts_tx: Arc<watch::Sender<RestartRequest>>,
    states: BTreeMap<String, TaskState>,
    /// The group's health checks.
    check_defs: Vec<CheckDef>,
    check_ctx: CheckContext,
    check_tx: mpsc::UnboundedSender<CheckReport>,
    /// Taken by `run`.
    check_rx: Option<mpsc::UnboundedReceiver<CheckReport>>,
    /// Task name -> the check loops of its current run.
    running_checks: BTreeMap<String, RunningChecks>,
    generation: u64,
    /// What the servers are told: a check's latest status and output (changes only).
    checks: BTreeMap<String, CheckStatus>,
    /// Every run's result, for the client's own API.
    live_checks: watch::Sender<BTreeMap<String, CheckStatus>>,
}

impl AllocRunner {
    async fn run(mut self) {
        let group = self
            .alloc
            .job
            .as_ref()
            .and_then(|j| j.group(&self.alloc.group))
            .cloned();
        let Some(group) = group else {
            return self.fail_setup(
                &[],
                format!(
                    "allocation {} has no job or group {:?} to run",
                    self.alloc.id, self.alloc.group
                ),
            );
        };
        let names: Vec<String> = group.tasks.iter().map(|t| t.name.clone()).collect();
        self.check_defs = checks::resolve(&self.alloc, &group);
        for def in &self.check_defs {
            self.checks.insert(def.key.clone(), def.pending());
        }
        self.live_checks.send_replace(self.checks.clone());
        let Some(mut check_rx) = self.check_rx.take() else {
            return;
        };
        if let Err(e) = self.alloc_dir.prepare(&names) {
            return self.fail_setup(&names, e.to_string());
        }
        for n in &names {
            // A task re-attached after a client restart starts from the state the
            // server last heard of, not from pending.
            let recovered = self
                .deps
                .recovered
                .contains(&format!("{}/{n}", self.alloc.id));
            let state = match self.alloc.task_states.get(n) {
                Some(s) if recovered => s.clone(),
                _ => TaskState::default(),
            };
            self.states.insert(n.clone(), state);
        }
        // Also for an allocation re-attached after a client restart: the servers keep
        // the first verdict, so one sent before the restart is not overridden.
        self.health = HealthTracker::for_alloc(&self.alloc, Instant::now());
        self.publish();

        let (tx, mut rx) = mpsc::unbounded_channel::<TaskUpdate>();
        let runners: BTreeMap<String, TaskRunnerHandle> = group
            .tasks
            .iter()
            .map(|t| {
                let h = taskrunner::spawn_with_restarts(
                    self.alloc.clone(),
                    t.clone(),
                    self.alloc_dir.clone(),
                    self.deps.clone(),
                    tx.clone(),
                    self.restarts_rx.clone(),
                );
                (t.name.clone(), h)
            })
            .collect();
        // Only the task runners hold senders now: `recv` ends when they all finished.
        drop(tx);

        let mut stop_closed = false;
        let mut updates_closed = false;
        let mut siblings_killed = false;
        loop {
            // A far instant for the timers that are off (their branches are disabled).
            let far = Instant::now() + std::time::Duration::from_secs(86400 * 365);
            let delay_end = self.delay_until;
            let health_wake = self.health_wake;
            tokio::select! {
                update = rx.recv() => {
                    let Some(u) = update else { break };
                    let failed_now = u.state.state == TaskStateKind::Dead && u.state.failed;
                    self.states.insert(u.task.clone(), u.state);
                    self.sync_checks(&u.task);
                    if failed_now && !siblings_killed {
                        siblings_killed = true;
                        // A stop asked later has nothing to delay: every task goes.
                        self.killing = true;
                        self.delay_until = None;
                        for (name, r) in &runners {
                            if name != &u.task {
                                r.kill(&format!("Sibling task {} failed", u.task));
                            }
                        }
                    }
                    self.publish();
                }
                changed = self.stop_rx.changed(), if !stop_closed => {
                    if changed.is_err() {
                        stop_closed = true;
                        continue;
                    }
                    let req = self.stop_rx.borrow_and_update().clone();
                    if let Some(req) = req {
                        self.stop_asked(req, &runners);
                    }
                }
                changed = self.update_rx.changed(), if !updates_closed => {
                    if changed.is_err() {
                        updates_closed = true;
                        continue;
                    }
                    let alloc = self.update_rx.borrow_and_update().clone();
                    self.take_update(alloc, &runners);
                }
                _ = tokio::time::sleep_until(delay_end.unwrap_or(far)), if delay_end.is_some() => {
                    let reason = std::mem::take(&mut self.stop_reason);
                    self.kill_all(&reason, &runners);
                }
                _ = tokio::time::sleep_until(health_wake.unwrap_or(far)), if health_wake.is_some() => {
                    // The tracker decides on time alone (min_healthy_time, the deadline).
                    self.health_wake = None;
                    self.publish();
                }
                Some(report) = check_rx.recv() => self.check_reported(report),
            }
        }
        self.stop_all_checks();
        for (_, r) in runners {
            r.wait().await;
        }
        self.publish();
    }

    /// Starts the checks of `task` when it runs a new attempt (stopping those of the
    /// previous one); stops them when it does not run.
    fn sync_checks(&mut self, task: &str) {
        let Some(state) = self.states.get(task) else {
            return;
        };
        let started_at = state.started_at;
        if state.state != TaskStateKind::Running || self.killing {
            if let Some(mut c) = self.running_checks.remove(task) {
                c.halt();
            }
            return;
        }
        if self
            .running_checks
            .get(task)
            .is_some_and(|c| c.started_at == started_at)
        {
            return;
        }
        if let Some(mut c) = self.running_checks.remove(task) {
            c.halt();
        }
        let defs: Vec<CheckDef> = self
            .check_defs
            .iter()
            .filter(|d| d.task == task)
            .cloned()
            .collect();
        if defs.is_empty() {
            return;
        }
        self.generation += 1;
        let mut loops = Vec::with_capacity(defs.len());
        for def in defs {
            // A new run is judged afresh.
            self.checks.insert(def.key.clone(), def.pending());
            loops.push(tokio::spawn(checks::run(
                def,
                self.check_ctx.clone(),
                self.generation,
                self.check_tx.clone(),
            )));
        }
        self.live_checks.send_replace(self.checks.clone());
        self.running_checks.insert(
            task.to_string(),
            RunningChecks {
                generation: self.generation,
                started_at,
                loops,
            },
        );
    }

    /// A stop was asked: with a delay, running tasks go on for the group's
    /// `shutdown_delay` (an event says so); else every task is killed now.
    fn stop_asked(&mut self, req: StopRequest, runners: &BTreeMap<String, TaskRunnerHandle>) {
        if self.killing {
            return;
        }
        if !self.stopping {
            // On its way to its end: the status batcher keeps batching.
            self.stopping = true;
            self.batcher.expect(&self.alloc.id);
            // Its health no longer matters to its deployment.
            self.health = None;
            self.health_wake = None;
            let delay = self
                .alloc
                .job
                .as_ref()
                .and_then(|j| j.group(&self.alloc.group))
                .map(|g| g.shutdown_delay)
                .unwrap_or_default();
            let running: Vec<&String> = self
                .states
                .iter()
                .filter(|(_, s)| s.state == TaskStateKind::Running)
                .map(|(n, _)| n)
                .collect();
            if req.delayed && !delay.is_zero() && !running.is_empty() {
                tracing::info!(alloc = %self.alloc.id, delay = %human(delay), "waiting for the shutdown delay before killing the tasks");
                for name in running {
                    if let Some(r) = runners.get(name) {
                        r.event(
                            events::WAITING_FOR_SHUTDOWN_DELAY,
                            format!(
                                "Waiting for shutdown_delay of {} before killing the task",
                                human(delay)
                            ),
                        );
                    }
                }
                // The group's `shutdown_delay` is the user's: capped, never an overflow.
                self.delay_until = Some(Instant::now() + delay.min(orch_common::duration::MAX));
                self.stop_reason = req.reason;
                return;
            }
        } else if self.delay_until.is_some() && req.delayed {
            // The delay under way already answers this stop.
            return;
        }
        self.kill_all(&req.reason, runners);
    }

    /// Kills every task now.
    fn kill_all(&mut self, reason: &str, runners: &BTreeMap<String, TaskRunnerHandle>) {
        self.killing = true;
        self.delay_until = None;
        self.stop_all_checks();
        for r in runners.values() {
            r.kill(reason);
        }
    }

    /// Takes an in-place update of the allocation: the task runners get it for their
    /// next attempts, changed checks are restarted with their new definitions, and a
    /// new deployment starts health tracking again.
    fn take_update(
        &mut self,
        alloc: Arc<Allocation>,
        runners: &BTreeMap<String, TaskRunnerHandle>,
    ) {
        let Some(group) = alloc
            .job
            .as_ref()
            .and_then(|j| j.group(&alloc.group))
            .cloned()
        else {
            tracing::warn!(alloc = %alloc.id, group = %alloc.group, "ignoring an in-place update without the allocation's job or group");
            return;
        };
        tracing::info!(
            alloc = %alloc.id,
            job_version = alloc.job_version,
            deployment = alloc.deployment_id.as_deref().unwrap_or(""),
            "allocation updated in place"
        );
        let old = std::mem::replace(&mut self.alloc, alloc.clone());
        for r in runners.values() {
            r.update_alloc(alloc.clone());
        }
        let defs = checks::resolve(&alloc, &group);
        if defs != self.check_defs {
            self.replace_checks(defs);
        }
        if alloc.deployment_id != old.deployment_id && !self.stopping {
            self.health = HealthTracker::for_alloc(&alloc, Instant::now());
            self.health_report = None;
            self.health_wake = None;
        }
        self.publish();
    }

    /// Runs `defs` from now on: the old check loops stop, every check starts pending,
    /// and the loops of running tasks start again with the new definitions.
    fn replace_checks(&mut self, defs: Vec<CheckDef>) {
        self.stop_all_checks();
        self.checks = defs.iter().map(|d| (d.key.clone(), d.pending())).collect();
        self.check_defs = defs;
        self.live_checks.send_replace(self.checks.clone());
        let tasks: Vec<String> = self.states.keys().cloned().collect();
        for t in tasks {
            self.sync_checks(&t);
        }
    }

    fn stop_all_checks(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.running_checks) {
            c.halt();
        }
    }

    /// A check ran: kept in the live view, published when its status or output
    /// changed, and a restart asked for is passed to the task runners.
    fn check_reported(&mut self, r: CheckReport) {
        let task = r.status.task.clone();
        let current = self
            .running_checks
            .get(&task)
            .is_some_and(|c| c.generation == r.generation);
        if !current {
            return;
        }
        self.live_checks.send_modify(|m| {
            m.insert(r.key.clone(), r.status.clone());
        });
        let changed = self
            .checks
            .get(&r.key)
            .is_none_or(|c| c.status != r.status.status || c.output != r.status.output);
        if changed {
            self.checks.insert(r.key.clone(), r.status);
            self.publish();
        }
        if let Some(reason) = r.restart {
            // This run's checks are done; the next run (a new `started_at`) starts
            // them again. The entry stays so that updates of this run do not.
            if let Some(c) = self.running_checks.get_mut(&task) {
                c.halt();
            }
            tracing::info!(alloc = %self.alloc.id, task = %task, "{reason}");
            request_restart(&self.restarts_tx, Some(&task), Some(reason), true);
        }
    }

    /// Marks every task dead and failed with a setup failure.
    fn fail_setup(&mut self, names: &[String], message: String) {
        tracing::error!(alloc = %self.alloc.id, "{message}");
        let now = now_ms();
        let names: Vec<String> = if names.is_empty() {
            vec!["(setup)".to_string()]
        } else {
            names.to_vec()
        };
        for n in names {
            self.states.insert(
                n,
                TaskState {
                    state: TaskStateKind::Dead,
                    failed: true,
                    restarts: 0,
                    started_at: None,
                    finished_at: Some(now),
                    events: vec![TaskEvent {
                        time: now,
                        kind: events::SETUP_FAILURE.to_string(),
                        message: message.clone(),
                        exit_code: None,
                        signal: None,
                        oom_killed: false,
                    }],
                },
            );
        }
        self.publish();
    }

    /// Feeds the health tracker the current states and keeps its verdict.
    fn observe_health(&mut self) {
        let Some(h) = self.health.as_mut() else {
            self.health_wake = None;
            return;
        };
        let now = Instant::now();
        self.health_wake = h.observe(&self.states, &self.checks, now);
        if self.health_report.is_some() {
            return;
        }
        if let Some(v) = h.verdict() {
            let ago = now.saturating_duration_since(v.at).as_millis() as u64;
            tracing::info!(
                alloc = %self.alloc.id,
                deployment = %h.deployment_id(),
                healthy = v.healthy,
                "deployment health: {}",
                v.description
            );
            self.health_report = Some(DeploymentHealthReport {
                deployment_id: h.deployment_id().clone(),
                healthy: v.healthy,
                timestamp: now_ms().saturating_sub(ago),
                description: v.description.clone(),
            });
        }
    }

    fn publish(&mut self) {
        self.observe_health();
        let (client_status, client_description) = derive_status(&self.states);
        let update = AllocClientUpdate {
            deployment_health: self.health_report.clone(),
            id: self.alloc.id.clone(),
            client_status,
            client_description: client_description.to_string(),
            task_states: self.states.clone(),
            checks: self.checks.clone(),
        };
        let changed = self.status_tx.send_if_modified(|cur| {
            if *cur != update {
                *cur = update.clone();
                true
            } else {
                false
            }
        });
        if changed {
            let motion = motion_of(client_status, self.runs_to_completion, self.stopping);
            self.batcher.push(update, motion);
        }
    }
}

/// Whether an allocation in `status` will change on its own soon: while it starts,
/// while it is being stopped, and while a batch allocation runs; not once it runs a
/// service or has ended.
fn motion_of(status: ClientStatus, runs_to_completion: bool, stopping: bool) -> Motion {
    match status {
        s if s.is_terminal() => Motion::Settled,
        _ if stopping => Motion::Moving,
        ClientStatus::Pending => Motion::Moving,
        ClientStatus::Running if runs_to_completion => Motion::Moving,
        _ => Motion::Settled,
    }
}

/// The allocation's client status from its task states.
pub fn derive_status(states: &BTreeMap<String, TaskState>) -> (ClientStatus, &'static str) {
    let any = |f: &dyn Fn(&TaskState) -> bool| states.values().any(f);
    if states.is_empty() {
        return (ClientStatus::Pending, "No tasks have started");
    }
    if any(&|s| s.state == TaskStateKind::Running) {
        return (ClientStatus::Running, "Tasks are running");
    }
    if any(&|s| s.state == TaskStateKind::Pending) {
        return (ClientStatus::Pending, "No tasks are running");
    }
    if any(&|s| s.failed) {
        return (ClientStatus::Failed, "Failed tasks");
    }
    (ClientStatus::Complete, "All tasks have completed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::DriverSet;
    use crate::driver::MockDriver;
    use orch_common::mock::{self, restart_policy, AllocBuilder, JobBuilder, TaskBuilder};
    use orch_common::model::{CheckHealth, Task};

    #[test]
    fn an_allocation_moves_while_it_starts_stops_or_runs_a_batch_task() {
        use ClientStatus::*;
        assert_eq!(motion_of(Pending, false, false), Motion::Moving);
        assert_eq!(motion_of(Running, false, false), Motion::Settled);
        assert_eq!(motion_of(Running, true, false), Motion::Moving);
        assert_eq!(motion_of(Running, false, true), Motion::Moving);
        for ended in [Complete, Failed] {
            assert_eq!(motion_of(ended, true, true), Motion::Settled);
        }
    }
    use orch_common::model::RestartMode;
    use serde_json::json;
    use std::time::Duration;

    /// Mock-driver task `name` that runs for `run_for`, then exits 0.
    fn runs_for(name: &str, run_for: &str) -> TaskBuilder {
        TaskBuilder::new(name, "mock").config("run_for", json!(run_for))
    }

    /// Job "job1" of `job_type` whose group "g" runs `tasks`, a task restarted
    /// `attempts` times 10ms apart before it fails.
    fn job_of(job_type: JobType, tasks: Vec<Task>, attempts: u32) -> JobBuilder {
        JobBuilder::new("job1")
            .job_type(job_type)
            .group_name("g")
            .tasks(tasks)
            .restart(restart_policy(
                attempts,
                Duration::from_millis(10),
                Duration::from_secs(60),
                RestartMode::Fail,
            ))
    }

    fn deps() -> TaskRunnerDeps {
        let mut drivers = DriverSet::new();
        drivers.insert(Arc::new(MockDriver::new()));
        TaskRunnerDeps {
            drivers: Arc::new(drivers),
            cgroups: None,
            handles: None,
            node: Arc::new(mock::node()),
            pids_limit: crate::cgroups::DEFAULT_PIDS_MAX,
            usage: Default::default(),
            recovered: Default::default(),
        }
    }

    fn state(kind: TaskStateKind, failed: bool) -> TaskState {
        TaskState {
            state: kind,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn status_is_derived_from_task_states() {
        use TaskStateKind::*;
        let cases = [
            (
                vec![state(Running, false), state(Dead, true)],
                ClientStatus::Running,
            ),
            (
                vec![state(Pending, false), state(Dead, false)],
                ClientStatus::Pending,
            ),
            (
                vec![state(Dead, false), state(Dead, false)],
                ClientStatus::Complete,
            ),
            (
                vec![state(Dead, false), state(Dead, true)],
                ClientStatus::Failed,
            ),
        ];
        for (states, want) in cases {
            let m: BTreeMap<String, TaskState> = states
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("t{i}"), s))
                .collect();
            assert_eq!(derive_status(&m).0, want, "{m:?}");
        }
    }

    async fn run_until_done(h: AllocRunnerHandle) -> AllocClientUpdate {
        let mut w = h.watch();
        tokio::time::timeout(Duration::from_secs(20), async {
            while !h.is_done() {
                let _ = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
            }
        })
        .await
        .expect("alloc runner did not finish");
        let s = h.status();
        h.wait().await;
        s
    }

    #[tokio::test]
    async fn a_batch_alloc_completes_and_the_batcher_gets_the_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let j = job_of(
            JobType::Batch,
            vec![mock::task("a", "mock"), runs_for("b", "50ms").build()],
            0,
        )
        .build();
        let alloc = AllocBuilder::new(&j).build();
        let batcher = Arc::new(UpdateBatcher::new());
        let h = spawn(alloc.clone(), dir.path(), deps(), batcher.clone());
        assert_eq!(h.tasks, vec!["a".to_string(), "b".to_string()]);
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Complete);
        assert!(dir
            .path()
            .join(alloc.id.as_str())
            .join("alloc/logs")
            .is_dir());
        let pending = batcher.take();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].client_status, ClientStatus::Complete);
    }

    #[tokio::test]
    async fn a_failed_task_kills_its_sibling_and_fails_the_alloc() {
        let dir = tempfile::tempdir().unwrap();
        let j = job_of(
            JobType::Service,
            vec![
                runs_for("bad", "100ms")
                    .config("exit_code", json!(1))
                    .build(),
                runs_for("good", "1h").build(),
            ],
            0,
        )
        .build();
        let h = spawn(
            AllocBuilder::new(&j).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Failed);
        let good = &s.task_states["good"];
        assert!(!good.failed);
        assert!(good
            .events
            .iter()
            .any(|e| e.kind == "Killing" && e.message.starts_with("Sibling task bad failed")));
    }

    #[tokio::test]
    async fn stop_kills_every_task_and_the_alloc_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let j = job_of(
            JobType::Service,
            vec![runs_for("a", "1h").build(), runs_for("b", "1h").build()],
            2,
        )
        .build();
        let h = spawn(
            AllocBuilder::new(&j).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        let mut w = h.watch();
        w.wait_for(|s| s.client_status == ClientStatus::Running)
            .await
            .unwrap();
        h.stop("alloc stopped by the server");
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Complete);
        assert!(s
            .task_states
            .values()
            .all(|t| t.state == TaskStateKind::Dead));
    }

    // ------------------------------------------------------------------ deployments

    use orch_common::model::{CheckType, HealthCheckMode, ServiceSpec, UpdatePolicy};

    /// A service job of `tasks` whose group has an update policy.
    fn deployment_job(tasks: Vec<Task>, mode: HealthCheckMode) -> JobBuilder {
        job_of(JobType::Service, tasks, 0).update(UpdatePolicy {
            health_check: mode,
            min_healthy_time: Duration::from_millis(100),
            healthy_deadline: Duration::from_secs(3600),
            ..Default::default()
        })
    }

    /// An allocation of `j` placed by deployment `deployment`.
    fn deployment_alloc(j: &Job, deployment: &str) -> AllocBuilder {
        AllocBuilder::new(j).deployment(deployment)
    }

    /// Waits (20s at most) until the runner publishes a health verdict that `ok`.
    async fn health_becomes(
        h: &AllocRunnerHandle,
        ok: impl Fn(&DeploymentHealthReport) -> bool,
    ) -> DeploymentHealthReport {
        let mut w = h.watch();
        let s = tokio::time::timeout(
            Duration::from_secs(20),
            w.wait_for(|s| s.deployment_health.as_ref().is_some_and(&ok)),
        )
        .await
        .expect("no such health verdict")
        .expect("runner gone");
        s.deployment_health.clone().unwrap()
    }

    async fn running(h: &AllocRunnerHandle) {
        let mut w = h.watch();
        tokio::time::timeout(
            Duration::from_secs(20),
            w.wait_for(|s| s.client_status == ClientStatus::Running),
        )
        .await
        .expect("alloc did not run")
        .unwrap();
    }

    use orch_common::model::Job;

    #[tokio::test]
    async fn a_deployment_alloc_whose_tasks_run_for_min_healthy_time_is_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let j = deployment_job(
            vec![runs_for("a", "1h").build()],
            HealthCheckMode::TaskStates,
        )
        .build();
        let batcher = Arc::new(UpdateBatcher::new());
        let h = spawn(
            deployment_alloc(&j, "dep-1").build(),
            dir.path(),
            deps(),
            batcher.clone(),
        );
        let v = health_becomes(&h, |_| true).await;
        assert!(v.healthy, "{v:?}");
        assert_eq!(v.deployment_id, "dep-1");
        assert_eq!(v.description, "tasks running for 100ms");
        assert!(v.timestamp > 0);
        // The batcher has it for the servers, and later updates keep sending it.
        assert!(batcher
            .take()
            .iter()
            .any(|u| u.deployment_health.as_ref() == Some(&v)));
        h.stop("test over");
        let s = run_until_done(h).await;
        assert_eq!(s.deployment_health, Some(v));
    }

    #[tokio::test]
    async fn a_failing_task_makes_the_deployment_alloc_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let j = deployment_job(
            vec![runs_for("bad", "20ms")
                .config("exit_code", json!(1))
                .build()],
            HealthCheckMode::TaskStates,
        )
        .build();
        let h = spawn(
            deployment_alloc(&j, "dep-1").build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        let v = health_becomes(&h, |_| true).await;
        assert!(!v.healthy);
        assert_eq!(v.description, "task bad failed");
        run_until_done(h).await;
    }

    #[tokio::test]
    async fn an_alloc_outside_a_deployment_reports_no_health() {
        let dir = tempfile::tempdir().unwrap();
        let j = deployment_job(
            vec![runs_for("a", "300ms").build()],
            HealthCheckMode::TaskStates,
        )
        .build();
        let h = spawn(
            AllocBuilder::new(&j).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        let s = run_until_done(h).await;
        assert_eq!(s.deployment_health, None);
    }

    #[tokio::test]
    async fn an_in_place_update_to_a_new_deployment_gets_a_new_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let j = deployment_job(
            vec![runs_for("a", "1h").build()],
            HealthCheckMode::TaskStates,
        )
        .build();
        let a = deployment_alloc(&j, "dep-1").build();
        let h = spawn(
            a.clone(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        health_becomes(&h, |v| v.deployment_id == "dep-1" && v.healthy).await;
        let started = h.status().task_states["a"].started_at;

        let mut updated = a.clone();
        updated.job_version = 1;
        updated.job.as_mut().unwrap().version = 1;
        updated.deployment_id = Some("dep-2".into());
        assert!(h.update(updated.clone()));
        assert!(!h.update(updated), "the same version and deployment twice");
        assert_eq!(h.job_version(), 1);
        let v = health_becomes(&h, |v| v.deployment_id == "dep-2").await;
        assert!(v.healthy);
        let s = h.status();
        assert_eq!(
            s.task_states["a"].started_at, started,
            "the task was restarted"
        );
        assert_eq!(s.task_states["a"].restarts, 0);
        h.stop("test over");
        run_until_done(h).await;
    }

    /// Service "api" on port `port` with one tcp check `name`, every 100ms.
    fn tcp_check(name: &str, port: &str) -> ServiceSpec {
        let mut check = mock::check(CheckType::Tcp);
        check.name = Some(name.into());
        check.interval = Duration::from_millis(100);
        check.timeout = Duration::from_secs(2);
        let mut api = mock::service("api", Some(port));
        api.checks = vec![check];
        api
    }

    #[tokio::test]
    async fn changed_checks_run_with_their_new_definition_after_an_in_place_update() {
        let dir = tempfile::tempdir().unwrap();
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let j = deployment_job(vec![runs_for("a", "1h").build()], HealthCheckMode::Checks)
            .service(tcp_check("old", "closed"))
            .build();
        let a = deployment_alloc(&j, "dep-1")
            .port("open", open.local_addr().unwrap().port(), "127.0.0.1")
            .port("closed", closed_port, "127.0.0.1")
            .build();
        let h = spawn(
            a.clone(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        let mut w = h.watch();
        tokio::time::timeout(
            Duration::from_secs(20),
            w.wait_for(|s| {
                s.checks
                    .get("api/old")
                    .is_some_and(|c| c.status == CheckHealth::Critical)
            }),
        )
        .await
        .expect("the old check never ran")
        .unwrap();
        assert_eq!(
            h.status().deployment_health,
            None,
            "critical check: not healthy"
        );

        let mut updated = a.clone();
        updated.job_version = 1;
        updated.deployment_id = Some("dep-2".into());
        let g = &mut updated.job.as_mut().unwrap().groups[0];
        g.services = vec![tcp_check("new", "open")];
        assert!(h.update(updated));
        let v = health_becomes(&h, |v| v.deployment_id == "dep-2").await;
        assert!(v.healthy, "{v:?}");
        assert_eq!(v.description, "tasks running and checks passing for 100ms");
        let s = h.status();
        assert_eq!(s.checks.keys().collect::<Vec<_>>(), vec!["api/new"]);
        assert_eq!(s.checks["api/new"].status, CheckHealth::Passing);
        assert_eq!(s.task_states["a"].restarts, 0);
        h.stop("test over");
        run_until_done(h).await;
    }

    fn event_time(s: &AllocClientUpdate, task: &str, kind: &str) -> Option<u64> {
        s.task_states[task]
            .events
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.time)
    }

    #[tokio::test]
    async fn a_server_stop_waits_for_the_shutdown_delay_before_killing() {
        let dir = tempfile::tempdir().unwrap();
        let delay = Duration::from_millis(400);
        let tasks = vec![runs_for("a", "1h").build(), runs_for("b", "1h").build()];
        let j = job_of(JobType::Service, tasks, 0)
            .shutdown_delay(delay)
            .build();
        let h = spawn(
            AllocBuilder::new(&j).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        running(&h).await;
        let asked = now_ms();
        h.stop_after_shutdown_delay("alloc stopped by the server");
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Complete);
        for t in ["a", "b"] {
            let waiting = event_time(&s, t, events::WAITING_FOR_SHUTDOWN_DELAY)
                .unwrap_or_else(|| panic!("no shutdown delay event: {:?}", s.task_states[t]));
            let killing = event_time(&s, t, events::KILLING).unwrap();
            assert!(waiting <= killing);
            assert!(
                killing >= asked + delay.as_millis() as u64,
                "killed {}ms after the stop",
                killing - asked
            );
            let ev = s.task_states[t]
                .events
                .iter()
                .find(|e| e.kind == events::WAITING_FOR_SHUTDOWN_DELAY)
                .unwrap();
            assert_eq!(
                ev.message,
                "Waiting for shutdown_delay of 400ms before killing the task"
            );
        }
    }

    #[tokio::test]
    async fn a_client_stop_cuts_the_shutdown_delay_short_and_skips_it_when_first() {
        let dir = tempfile::tempdir().unwrap();
        let j = job_of(JobType::Service, vec![runs_for("a", "1h").build()], 0)
            .shutdown_delay(Duration::from_secs(3600))
            .build();
        // A delay under way, then the client shuts down: the tasks go now.
        let h = spawn(
            AllocBuilder::new(&j).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        running(&h).await;
        h.stop_after_shutdown_delay("alloc stopped by the server");
        let mut w = h.watch();
        tokio::time::timeout(
            Duration::from_secs(20),
            w.wait_for(|s| event_time(s, "a", events::WAITING_FOR_SHUTDOWN_DELAY).is_some()),
        )
        .await
        .expect("no shutdown delay event")
        .unwrap();
        h.stop("client shutting down");
        let s = run_until_done(h).await;
        assert!(s.task_states["a"]
            .events
            .iter()
            .any(|e| e.kind == events::KILLING && e.message.starts_with("client shutting down")));

        // The client's own stop has no delay at all.
        let h = spawn(
            AllocBuilder::new(&j).index(1).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        running(&h).await;
        h.stop("client shutting down");
        let s = run_until_done(h).await;
        assert_eq!(
            event_time(&s, "a", events::WAITING_FOR_SHUTDOWN_DELAY),
            None
        );
    }

    #[tokio::test]
    async fn a_stop_after_a_sibling_failed_has_no_shutdown_delay() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = vec![
            runs_for("bad", "50ms")
                .config("exit_code", json!(1))
                .build(),
            // Ignores its kill signal, so it is still running when the stop comes.
            runs_for("good", "1h")
                .config("ignore_stop_signal", json!(true))
                .kill_timeout(Duration::from_millis(500))
                .build(),
        ];
        let j = job_of(JobType::Service, tasks, 0)
            .shutdown_delay(Duration::from_secs(3600))
            .build();
        let h = spawn(
            AllocBuilder::new(&j).build(),
            dir.path(),
            deps(),
            Arc::new(UpdateBatcher::new()),
        );
        let mut w = h.watch();
        tokio::time::timeout(
            Duration::from_secs(20),
            w.wait_for(|s| s.task_states.get("bad").is_some_and(|t| t.failed)),
        )
        .await
        .expect("bad never failed")
        .unwrap();
        h.stop_after_shutdown_delay("alloc stopped by the server");
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Failed);
        assert_eq!(
            event_time(&s, "good", events::WAITING_FOR_SHUTDOWN_DELAY),
            None
        );
    }

    #[tokio::test]
    async fn an_alloc_without_its_job_fails_with_a_setup_failure() {
        let dir = tempfile::tempdir().unwrap();
        let j = job_of(JobType::Batch, vec![mock::task("a", "mock")], 0).build();
        let alloc = AllocBuilder::new(&j).without_job().build();
        let h = spawn(alloc, dir.path(), deps(), Arc::new(UpdateBatcher::new()));
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Failed);
    }
}
