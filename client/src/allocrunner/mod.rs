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

pub mod allocdir;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use orch_common::api::AllocClientUpdate;
use orch_common::ids::now_ms;
use orch_common::structs::{
    Allocation, CheckStatus, ClientStatus, JobType, TaskEvent, TaskState, TaskStateKind,
};
use tokio::sync::{mpsc, watch};

use crate::batcher::{Motion, UpdateBatcher};
use crate::checks::{self, CheckContext, CheckDef, CheckReport};
use crate::once::set_once;
use crate::taskrunner::{
    self, events, RestartRequest, TaskRunnerDeps, TaskRunnerHandle, TaskUpdate,
};
use allocdir::AllocDir;

/// Controls a running allocation and shows its latest state.
pub struct AllocRunnerHandle {
    pub alloc_id: String,
    /// Task names, in the group's order.
    pub tasks: Vec<String>,
    pub alloc_dir: AllocDir,
    /// The group's `disconnect.lost_after`: how long the allocation may keep running
    /// while the client cannot reach any server.
    pub lost_after: Option<std::time::Duration>,
    stop: watch::Sender<Option<String>>,
    restarts: Arc<watch::Sender<RestartRequest>>,
    status: watch::Receiver<AllocClientUpdate>,
    checks: watch::Receiver<BTreeMap<String, CheckStatus>>,
    join: tokio::task::JoinHandle<()>,
}

impl AllocRunnerHandle {
    /// Kills every task (idempotent); `reason` goes into their Killing events.
    pub fn stop(&self, reason: &str) {
        set_once(&self.stop, reason.to_string());
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
        status_tx,
        stop_rx,
        states: BTreeMap::new(),
    };
    let join = tokio::spawn(runner.run());
    AllocRunnerHandle {
        alloc_id: alloc.id.clone(),
        tasks,
        alloc_dir,
        lost_after,
        stop,
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
    status_tx: watch::Sender<AllocClientUpdate>,
    stop_rx: watch::Receiver<Option<String>>,
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

        let mut stop_seen = false;
        let mut siblings_killed = false;
        loop {
            tokio::select! {
                update = rx.recv() => {
                    let Some(u) = update else { break };
                    let failed_now = u.state.state == TaskStateKind::Dead && u.state.failed;
                    self.states.insert(u.task.clone(), u.state);
                    self.sync_checks(&u.task);
                    if failed_now && !siblings_killed {
                        siblings_killed = true;
                        for (name, r) in &runners {
                            if name != &u.task {
                                r.kill(&format!("Sibling task {} failed", u.task));
                            }
                        }
                    }
                    self.publish();
                }
                changed = self.stop_rx.changed(), if !stop_seen => {
                    stop_seen = true;
                    if changed.is_ok() {
                        // On its way to its end: the status batcher keeps batching.
                        self.stopping = true;
                        self.batcher.expect(&self.alloc.id);
                        let reason = self.stop_rx.borrow().clone().unwrap_or_default();
                        self.stop_all_checks();
                        for r in runners.values() {
                            r.kill(&reason);
                        }
                    }
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
        if state.state != TaskStateKind::Running || self.stop_rx.borrow().is_some() {
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

    fn publish(&self) {
        let (client_status, client_description) = derive_status(&self.states);
        let update = AllocClientUpdate {
            deployment_health: None,
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
    use crate::driver::MockDriver;
    use crate::taskrunner::DriverSet;
    use crate::testutil::{alloc_of, job, node, restart, task};

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
    use orch_common::structs::{JobType, RestartMode};
    use serde_json::json;
    use std::time::Duration;

    fn deps() -> TaskRunnerDeps {
        let mut drivers: DriverSet = BTreeMap::new();
        drivers.insert("mock".into(), Arc::new(MockDriver::new()));
        TaskRunnerDeps {
            drivers: Arc::new(drivers),
            cgroups: None,
            handles: None,
            node: Arc::new(node()),
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
        let j = job(
            JobType::Batch,
            "g",
            vec![
                task("a", "mock", json!({})),
                task("b", "mock", json!({"run_for": "50ms"})),
            ],
            restart(0, 10, 60, RestartMode::Fail),
        );
        let alloc = alloc_of(&j, 0);
        let batcher = Arc::new(UpdateBatcher::new());
        let h = spawn(alloc.clone(), dir.path(), deps(), batcher.clone());
        assert_eq!(h.tasks, vec!["a".to_string(), "b".to_string()]);
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Complete);
        assert!(dir.path().join(&alloc.id).join("alloc/logs").is_dir());
        let pending = batcher.take();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].client_status, ClientStatus::Complete);
    }

    #[tokio::test]
    async fn a_failed_task_kills_its_sibling_and_fails_the_alloc() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(
            JobType::Service,
            "g",
            vec![
                task("bad", "mock", json!({"exit_code": 1, "run_for": "100ms"})),
                task("good", "mock", json!({"run_for": "1h"})),
            ],
            restart(0, 10, 60, RestartMode::Fail),
        );
        let h = spawn(
            alloc_of(&j, 0),
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
        let j = job(
            JobType::Service,
            "g",
            vec![
                task("a", "mock", json!({"run_for": "1h"})),
                task("b", "mock", json!({"run_for": "1h"})),
            ],
            restart(2, 10, 60, RestartMode::Fail),
        );
        let h = spawn(
            alloc_of(&j, 0),
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

    #[tokio::test]
    async fn an_alloc_without_its_job_fails_with_a_setup_failure() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(
            JobType::Batch,
            "g",
            vec![task("a", "mock", json!({}))],
            restart(0, 10, 60, RestartMode::Fail),
        );
        let mut alloc = alloc_of(&j, 0);
        alloc.job = None;
        let h = spawn(alloc, dir.path(), deps(), Arc::new(UpdateBatcher::new()));
        let s = run_until_done(h).await;
        assert_eq!(s.client_status, ClientStatus::Failed);
    }
}
