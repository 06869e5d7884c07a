//! The task runner: drives one task of an allocation through its life and reports every
//! transition as a `TaskEvent` in the task's `TaskState`.
//!
//! ```text
//!                 ┌──────────────────────── restart after delay ◄──────────────┐
//!                 ▼                                                            │
//!   ┌─────────┐ prestart: cgroup,  ┌──────────┐ driver.start ok ┌─────────┐    │
//!   │ pending │──env, config ─────►│ starting │────────────────►│ running │    │
//!   └─────────┘                    └──────────┘                 └─────────┘    │
//!        │ setup error                  │ start error                │ exited  │
//!        ▼                              ▼                            ▼         │
//!   dead(failed)              ┌──────────────────────────────────────────────┐ │
//!                             │ restart policy (attempts within interval):   │ │
//!                             │   batch + exit 0       -> dead(complete)     │ │
//!                             │   attempts left        -> Restart ───────────┼─┘
//!                             │   exhausted, mode fail -> dead(failed)       │
//!                             │   exhausted, mode delay-> Restart after the  │
//!                             │                           interval           │
//!                             │   not recoverable      -> dead(failed)       │
//!                             └──────────────────────────────────────────────┘
//!
//!   kill (desired stop) in any state: running -> kill_signal, wait kill_timeout,
//!   SIGKILL the cgroup, remove it -> dead (not failed); otherwise -> dead at once.
//! ```
//!
//! Each run attempt gets a fresh cgroup, destroyed (everything left in it killed) when
//! the attempt ends: before the next attempt, and, for a task that exited on its own
//! and is done, just after its end is published (so the report does not wait for it).

pub mod env;
pub mod restart;

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use orch_common::duration::format as human;
use orch_common::ids::now_ms;
use orch_common::model::{
    Allocation, JobType, Node, RestartPolicy, Task, TaskEvent, TaskState, TaskStateKind,
};
use tokio::sync::{mpsc, watch};

use crate::allocdir::AllocDir;
use crate::cgroups::{CgroupLimits, CgroupManager, CgroupPaths, NodeLimits};
use crate::driver::{
    parse_signal, signal_name, Driver, DriverSet, ExitResult, StartRequest, TaskHandle,
};
use crate::once::{set_once, wait_set};
use crate::state::HandleStore;
use crate::usage::{UsageBoard, SAMPLE_INTERVAL};
use env::{EnvInputs, TaskEnv};
use restart::{RestartDecision, RestartTracker};

/// Events kept per task (the oldest are dropped), as Nomad does.
const MAX_EVENTS: usize = 20;

/// Resolves, with the request, when a restart of `task` (or of every task) is asked
/// after this point.
async fn restart_asked(rx: &mut watch::Receiver<RestartRequest>, task: &str) -> RestartRequest {
    loop {
        if rx.changed().await.is_err() {
            // No one can ask any more.
            return std::future::pending().await;
        }
        let req = rx.borrow_and_update().clone();
        if req.task.as_deref().is_none_or(|t| t == task) {
            return req;
        }
    }
}

/// Event kinds (the `kind` of a `TaskEvent`).
pub mod events {
    pub const RECEIVED: &str = "Received";
    pub const TASK_SETUP: &str = "Task Setup";
    pub const SETUP_FAILURE: &str = "Setup Failure";
    pub const DRIVER_FAILURE: &str = "Driver Failure";
    pub const STARTED: &str = "Started";
    pub const TERMINATED: &str = "Terminated";
    pub const OOM_KILLED: &str = "OOM Killed";
    pub const RESTARTING: &str = "Restarting";
    pub const NOT_RESTARTING: &str = "Not Restarting";
    pub const KILLING: &str = "Killing";
    pub const RESTART_SIGNALED: &str = "Restart Signaled";
    pub const KILLED: &str = "Killed";
    /// A stopped allocation keeps its tasks running for the group's `shutdown_delay`.
    pub const WAITING_FOR_SHUTDOWN_DELAY: &str = "Waiting for shutdown delay";
}

/// What every task runner of a client shares.
#[derive(Clone)]
pub struct TaskRunnerDeps {
    pub drivers: Arc<DriverSet>,
    /// `None` when the client has no cgroup access (limits are then not enforced, and
    /// each task says so in an event).
    pub cgroups: Option<Arc<dyn CgroupManager>>,
    pub handles: Option<HandleStore>,
    pub node: Arc<Node>,
    /// The client's `pids_limit`: each task's default and ceiling.
    pub pids_limit: u64,
    /// Where task runners leave their tasks' resource usage.
    pub usage: UsageBoard,
    /// Handles of tasks an earlier client run started, by task id, for their runners
    /// to re-attach to instead of starting them again.
    pub recovered: RecoveredHandles,
}

/// Task handles found on disk at start, by task id (`<alloc>/<task>`); each is taken
/// by its task runner (or killed by the client when no allocation claims it).
#[derive(Clone, Default)]
pub struct RecoveredHandles(Arc<std::sync::Mutex<std::collections::HashMap<String, TaskHandle>>>);

impl RecoveredHandles {
    pub fn new(handles: impl IntoIterator<Item = TaskHandle>) -> Self {
        let map = handles.into_iter().map(|h| (h.id.clone(), h)).collect();
        RecoveredHandles(Arc::new(std::sync::Mutex::new(map)))
    }

    /// Takes the handle of task `id`, if an earlier run left one.
    pub fn take(&self, id: &str) -> Option<TaskHandle> {
        // A std mutex: never held across an await.
        self.0
            .lock()
            .expect("recovered handles poisoned")
            .remove(id)
    }

    /// Whether task `id` was left by an earlier run (and not yet taken).
    pub fn contains(&self, id: &str) -> bool {
        self.0
            .lock()
            .expect("recovered handles poisoned")
            .contains_key(id)
    }

    /// Takes every handle whose allocation `keep` does not claim.
    pub fn take_unclaimed(&self, keep: impl Fn(&str) -> bool) -> Vec<TaskHandle> {
        let mut map = self.0.lock().expect("recovered handles poisoned");
        let ids: Vec<String> = map
            .values()
            .filter(|h| !keep(&h.alloc_id))
            .map(|h| h.id.clone())
            .collect();
        ids.iter().filter_map(|id| map.remove(id)).collect()
    }
}

/// One task's new state, sent to its alloc runner.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub task: String,
    pub state: TaskState,
}

/// Controls a spawned task runner.
pub struct TaskRunnerHandle {
    kill: watch::Sender<Option<String>>,
    /// Events of the alloc runner's recorded in the task's state.
    events: mpsc::UnboundedSender<TaskEvent>,
    /// The allocation as updated in place, used from the task's next attempt on.
    alloc: watch::Sender<Arc<Allocation>>,
    /// Taken by `wait`; a handle dropped without waiting aborts the runner.
    join: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TaskRunnerHandle {
    fn drop(&mut self) {
        if let Some(j) = self.join.take() {
            j.abort();
        }
    }
}

impl TaskRunnerHandle {
    /// Asks the task to stop (idempotent); `reason` goes into the Killing event.
    pub fn kill(&self, reason: &str) {
        set_once(&self.kill, reason.to_string());
    }

    /// Records `kind`/`message` among the task's events (from the alloc runner: the
    /// task state is the task runner's to publish).
    pub fn event(&self, kind: &str, message: String) {
        let _ = self.events.send(TaskEvent {
            time: now_ms(),
            kind: kind.to_string(),
            message,
            exit_code: None,
            signal: None,
            oom_killed: false,
        });
    }

    /// Hands the runner the allocation updated in place (same task, new job version):
    /// the running attempt goes on; later attempts see the new one (its environment).
    pub fn update_alloc(&self, alloc: Arc<Allocation>) {
        self.alloc.send_replace(alloc);
    }

    /// Waits until the runner is done (the task is dead).
    pub async fn wait(mut self) {
        if let Some(j) = self.join.take() {
            if let Err(e) = j.await {
                tracing::error!(error = %e, "task runner panicked");
            }
        }
    }
}

/// Starts a runner for `task` of `alloc`; its states go to `updates`.
pub fn spawn(
    alloc: Arc<Allocation>,
    task: Task,
    alloc_dir: AllocDir,
    deps: TaskRunnerDeps,
    updates: mpsc::UnboundedSender<TaskUpdate>,
) -> TaskRunnerHandle {
    spawn_with_restarts(
        alloc,
        task,
        alloc_dir,
        deps,
        updates,
        watch::channel(RestartRequest::default()).1,
    )
}

/// A request to restart tasks in place (`orch alloc restart`, or a `check_restart`):
/// `seq` grows with every request; `task` is the one to restart, or every task when
/// `None`; `reason` becomes the `Restart Signaled` event's message (a user's request
/// when `None`). A restart that `counts` is a failure the restart policy judges like
/// an exit (its delay, its attempts; as Nomad does for `check_restart`); a user's
/// restart does not count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartRequest {
    pub seq: u64,
    pub task: Option<String>,
    pub reason: Option<String>,
    pub counts: bool,
}

/// `spawn`, restarting the task in place whenever `restarts` asks for it.
pub fn spawn_with_restarts(
    alloc: Arc<Allocation>,
    task: Task,
    alloc_dir: AllocDir,
    deps: TaskRunnerDeps,
    updates: mpsc::UnboundedSender<TaskUpdate>,
    restarts: watch::Receiver<RestartRequest>,
) -> TaskRunnerHandle {
    let recovered = deps.recovered.take(&format!("{}/{}", alloc.id, task.name));
    // A task found running again keeps the state the server last heard of (its
    // restarts and events), so nothing is reported that did not happen.
    let state = match &recovered {
        Some(_) => alloc
            .task_states
            .get(&task.name)
            .cloned()
            .unwrap_or_default(),
        None => TaskState::default(),
    };
    let (kill, kill_rx) = watch::channel(None);
    let (events, events_rx) = mpsc::unbounded_channel();
    let (alloc_tx, alloc_rx) = watch::channel(alloc.clone());
    let job_type = alloc
        .job
        .as_ref()
        .map(|j| j.job_type)
        .unwrap_or(JobType::Service);
    let policy = alloc
        .job
        .as_ref()
        .and_then(|j| j.group(&alloc.group))
        .map(|g| g.restart.clone())
        .unwrap_or_else(|| RestartPolicy::default_for(job_type));
    let runner = TaskRunner {
        id: format!("{}/{}", alloc.id, task.name),
        alloc,
        task,
        job_type,
        alloc_dir,
        deps,
        updates,
        kill_rx,
        events_rx,
        alloc_rx,
        restart_rx: restarts,
        tracker: RestartTracker::new(policy),
        state,
        warned_no_cgroups: false,
        recovered,
        exited: None,
    };
    let join = tokio::spawn(runner.run());
    TaskRunnerHandle {
        kill,
        events,
        alloc: alloc_tx,
        join: Some(join),
    }
}

/// Why an attempt did not run.
enum SetupError {
    /// Will fail the same way again: the task fails now.
    Fatal(String),
    /// May work next time: goes through the restart policy.
    Retry(String),
}

struct TaskRunner {
    /// `<alloc_id>/<task>`.
    id: String,
    alloc: Arc<Allocation>,
    task: Task,
    job_type: JobType,
    alloc_dir: AllocDir,
    deps: TaskRunnerDeps,
    updates: mpsc::UnboundedSender<TaskUpdate>,
    kill_rx: watch::Receiver<Option<String>>,
    /// Events the alloc runner asks to record.
    events_rx: mpsc::UnboundedReceiver<TaskEvent>,
    /// The allocation updated in place.
    alloc_rx: watch::Receiver<Arc<Allocation>>,
    restart_rx: watch::Receiver<RestartRequest>,
    tracker: RestartTracker,
    state: TaskState,
    warned_no_cgroups: bool,
    /// The handle of this task left by an earlier client run, re-attached to instead
    /// of the first start.
    recovered: Option<TaskHandle>,
    /// The attempt that just exited on its own, destroyed (cgroup, handle) once its
    /// outcome is published: a finished task is reported without waiting for that.
    exited: Option<(Arc<dyn Driver>, TaskHandle)>,
}

impl TaskRunner {
    async fn run(mut self) {
        if self.recovered.is_none() {
            self.event(events::RECEIVED, "Task received by client".to_string());
            self.event(events::TASK_SETUP, "Building task directory".to_string());
        }
        loop {
            if let Some(reason) = self.kill_requested() {
                return self.dead_without_running(&reason);
            }
            let outcome = self.attempt().await;
            let exit = match outcome {
                Attempt::Killed => return,
                Attempt::Restarted { counts: false } => {
                    // Asked for: not a failure, so the restart policy does not count it.
                    self.state.state = TaskStateKind::Pending;
                    self.state.restarts += 1;
                    continue;
                }
                // A failing health check: the policy decides, as after an exit.
                Attempt::Restarted { counts: true } => None,
                Attempt::Exited(exit) => Some(exit),
                Attempt::SetupFailed(SetupError::Fatal(msg)) => {
                    self.event(events::SETUP_FAILURE, msg);
                    return self.dead(true);
                }
                Attempt::SetupFailed(SetupError::Retry(msg)) => {
                    self.event(events::DRIVER_FAILURE, msg);
                    None
                }
            };
            if let Some(exit) = &exit {
                if exit.successful() && matches!(self.job_type, JobType::Batch | JobType::Sysbatch)
                {
                    self.dead(false);
                    return self.destroy_exited().await;
                }
            }
            match self.tracker.next(tokio::time::Instant::now()) {
                RestartDecision::Fail { message } => {
                    self.event(events::NOT_RESTARTING, message);
                    self.dead(true);
                    return self.destroy_exited().await;
                }
                RestartDecision::Restart { delay, message } => {
                    // The next attempt's cgroup has the same name: this one goes first.
                    self.destroy_exited().await;
                    self.state.state = TaskStateKind::Pending;
                    self.state.restarts += 1;
                    self.event(events::RESTARTING, message);
                    if let Some(reason) = self.sleep_unless_killed(delay).await {
                        return self.dead_without_running(&reason);
                    }
                }
            }
        }
    }

    /// One run: prestart, start, wait for the exit or a kill.
    async fn attempt(&mut self) -> Attempt {
        let driver = match self.deps.drivers.get(&self.task.driver) {
            Some(d) => d.clone(),
            None => {
                return Attempt::SetupFailed(SetupError::Fatal(format!(
                    "driver {:?} is not available on this node",
                    self.task.driver
                )))
            }
        };
        if let Some(handle) = self.recovered.take() {
            return self.reattach(driver, handle).await;
        }
        if self.alloc_rx.has_changed().unwrap_or(false) {
            self.alloc = self.alloc_rx.borrow_and_update().clone();
        }
        let (cgroup, limits) = match self.prestart_cgroup(driver.as_ref()).await {
            Ok(Some((cg, limits))) => (Some(cg), Some(limits)),
            Ok(None) => (None, None),
            Err(e) => return Attempt::SetupFailed(e),
        };
        let req = self.start_request(cgroup.clone());
        let handle = match driver.start(req).await {
            Ok(h) => h,
            Err(e) => {
                self.remove_cgroup(cgroup).await;
                let msg = format!("failed to start task: {e}");
                return Attempt::SetupFailed(if e.is_recoverable() {
                    SetupError::Retry(msg)
                } else {
                    SetupError::Fatal(msg)
                });
            }
        };
        if let Some(store) = &self.deps.handles {
            if let Err(e) = store.save(&handle) {
                tracing::warn!(task = %self.id, error = %e, "persisting the task handle");
            }
        }
        self.state.state = TaskStateKind::Running;
        self.state.started_at = Some(now_ms());
        self.state.finished_at = None;
        self.event(events::STARTED, "Task started by client".to_string());
        let sampler = self.start_sampling(cgroup, limits.as_ref());
        self.supervise(driver, handle, sampler).await
    }

    /// The first attempt of a task an earlier client run started: re-attach to it
    /// (it keeps running, or its real exit is reported), or report it lost.
    async fn reattach(&mut self, driver: Arc<dyn Driver>, handle: TaskHandle) -> Attempt {
        if let Err(e) = driver.recover(&handle).await {
            tracing::warn!(task = %self.id, error = %e, "re-attaching after a client restart");
            // Whatever is left of it goes, with its cgroup and handle.
            if let Some(cg) = handle.cgroup.clone() {
                self.remove_cgroup(Some(cg)).await;
            }
            if let Some(store) = &self.deps.handles {
                let _ = store.remove(&self.alloc.id, &self.task.name);
            }
            return Attempt::SetupFailed(SetupError::Retry(format!(
                "could not re-attach to the task after a client restart: {e}"
            )));
        }
        tracing::info!(task = %self.id, pid = ?handle.pid, "re-attached to a task started by an earlier client run");
        if let Some(cg) = &handle.cgroup {
            if let Some(m) = &self.deps.cgroups {
                m.adopt(cg, self.resources().cores);
            }
        }
        self.state.state = TaskStateKind::Running;
        if self.state.started_at.is_none() {
            self.state.started_at = Some(handle.started_at);
        }
        self.state.finished_at = None;
        self.publish();
        let limits = self.limits().ok();
        let sampler = self.start_sampling(handle.cgroup.clone(), limits.as_ref());
        self.supervise(driver, handle, sampler).await
    }

    /// Waits for the started (or re-attached) task to exit, be killed or restarted.
    async fn supervise(
        &mut self,
        driver: Arc<dyn Driver>,
        handle: TaskHandle,
        sampler: Sampler,
    ) -> Attempt {
        // Pinned once: an event recorded in between must not restart the wait.
        let exit = {
            let wait = driver.wait(&handle);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    r = &mut wait => break r,
                    reason = kill_reason(self.kill_rx.clone()) => {
                        self.kill_running(driver.as_ref(), &handle, &reason, sampler).await;
                        return Attempt::Killed;
                    }
                    req = restart_asked(&mut self.restart_rx, &self.task.name) => {
                        let why = req.reason.unwrap_or_else(|| "User requested the task to restart".to_string());
                        self.event(events::RESTART_SIGNALED, why);
                        self.stop_attempt(driver.as_ref(), &handle, "Restarting", sampler).await;
                        return Attempt::Restarted { counts: req.counts };
                    }
                    Some(ev) = self.events_rx.recv() => self.push_event(ev),
                }
            }
        };
        self.finish_sampling(sampler).await;
        let exit = exit.unwrap_or_else(|e| {
            tracing::error!(task = %self.id, error = %e, "waiting for the task");
            ExitResult::code(-1)
        });
        self.exited = Some((driver, handle));
        let (kind, message) = self.describe_exit(&exit);
        let mut ev = self.new_event(kind, message);
        ev.exit_code = Some(exit.exit_code);
        ev.signal = exit.signal;
        ev.oom_killed = exit.oom_killed;
        self.push_event(ev);
        Attempt::Exited(exit)
    }

    /// Records the task on the usage board and samples its cgroup every
    /// `SAMPLE_INTERVAL` until `finish_sampling`.
    fn start_sampling(
        &self,
        cgroup: Option<CgroupPaths>,
        limits: Option<&CgroupLimits>,
    ) -> Sampler {
        let source = match (&self.deps.cgroups, cgroup) {
            (Some(m), Some(cg)) => Some((m.clone(), cg)),
            _ => None,
        };
        let sampled = source.is_some();
        self.deps
            .usage
            .track(&self.alloc.id, &self.task.name, source, limits);
        if !sampled {
            return Sampler(None);
        }
        let (board, alloc, task) = (
            self.deps.usage.clone(),
            self.alloc.id.clone(),
            self.task.name.clone(),
        );
        Sampler(Some(tokio::spawn(async move {
            // The first sample after one interval: at the start there is nothing to
            // see yet, and the stats endpoint samples afresh anyway.
            let first = tokio::time::Instant::now() + SAMPLE_INTERVAL;
            let mut tick = tokio::time::interval_at(first, SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                let (b, a, t) = (board.clone(), alloc.clone(), task.clone());
                let _ = tokio::task::spawn_blocking(move || b.sample(&a, &t)).await;
            }
        })))
    }

    /// Stops the periodic sampling and takes the last sample while the cgroup (with its
    /// peak memory and cpu time) still exists.
    async fn finish_sampling(&self, sampler: Sampler) {
        if let Some(j) = sampler.0 {
            j.abort();
        }
        let (board, alloc, task) = (
            self.deps.usage.clone(),
            self.alloc.id.clone(),
            self.task.name.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || board.finish(&alloc, &task)).await;
    }

    /// Creates the attempt's cgroup with the task's limits (verified).
    async fn prestart_cgroup(
        &mut self,
        driver: &dyn Driver,
    ) -> Result<Option<(CgroupPaths, CgroupLimits)>, SetupError> {
        if !driver.uses_cgroups() {
            return Ok(None);
        }
        // Asking for more than the client allows fails even where nothing is enforced.
        let limits = self
            .limits()
            .map_err(|e| SetupError::Fatal(format!("task resources: {e}")))?;
        let Some(m) = self.deps.cgroups.clone() else {
            // Limits a job asked for by name cannot be quietly dropped; only the
            // defaults every task has (memory, cpu weight) run unenforced, with a warning.
            let r = self.resources();
            let asked: Vec<&str> = [
                ("cores", r.cores.is_some()),
                ("cpu_hard_limit", r.cpu_hard_limit),
                ("pids", r.pids.is_some()),
            ]
            .into_iter()
            .filter_map(|(k, on)| on.then_some(k))
            .collect();
            if !asked.is_empty() {
                return Err(SetupError::Fatal(format!(
                    "resources.{} cannot be enforced: this client has no cgroup access (run it as root on a host with cgroups)",
                    asked.join(", resources.")
                )));
            }
            if !self.warned_no_cgroups {
                self.warned_no_cgroups = true;
                self.event(
                    events::TASK_SETUP,
                    "No cgroup access on this client: memory and cpu limits are NOT enforced"
                        .to_string(),
                );
            }
            return Ok(None);
        };
        let name = format!("{}-{}", self.alloc.id, self.task.name);
        match tokio::task::spawn_blocking(move || m.create(&name, &limits)).await {
            Ok(Ok(cg)) => Ok(Some((cg, limits))),
            Ok(Err(e)) => Err(SetupError::Fatal(format!(
                "creating the task's cgroup: {e}"
            ))),
            Err(e) => Err(SetupError::Retry(format!(
                "creating the task's cgroup: {e}"
            ))),
        }
    }

    /// The cgroup limits of the task's resources on this node.
    fn limits(&self) -> Result<CgroupLimits, crate::cgroups::CgroupError> {
        let node = NodeLimits {
            mhz_per_core: self
                .deps
                .node
                .attributes
                .get("cpu.frequency")
                .and_then(|f| f.parse().ok())
                .unwrap_or(1000),
            pids_limit: self.deps.pids_limit,
        };
        CgroupLimits::for_task(&self.resources(), &node)
    }

    fn resources(&self) -> orch_common::model::Resources {
        self.alloc
            .resources
            .tasks
            .get(&self.task.name)
            .copied()
            .unwrap_or(self.task.resources)
    }

    fn start_request(&self, cgroup: Option<CgroupPaths>) -> StartRequest {
        let env = TaskEnv::build(&EnvInputs {
            alloc: &self.alloc,
            task: &self.task,
            node: &self.deps.node,
            alloc_dir: self.alloc_dir.root(),
        });
        StartRequest {
            id: self.id.clone(),
            alloc_id: self.alloc.id.clone(),
            task_name: self.task.name.clone(),
            config: env.interpolate_config(&self.task.config),
            env: env.vars,
            user: self.task.user.clone(),
            task_dir: self.alloc_dir.task(&self.task.name),
            stdout_path: self.alloc_dir.log_file(&self.task.name, "stdout"),
            stderr_path: self.alloc_dir.log_file(&self.task.name, "stderr"),
            logs: self.task.logs,
            cgroup,
            resources: self.resources(),
            ports: self.alloc.resources.ports.clone(),
        }
    }

    /// kill_signal, wait kill_timeout, SIGKILL everything in the cgroup, remove it.
    async fn kill_running(
        &mut self,
        driver: &dyn Driver,
        handle: &TaskHandle,
        reason: &str,
        sampler: Sampler,
    ) {
        self.stop_attempt(driver, handle, reason, sampler).await;
        self.dead(false);
    }

    /// kill_signal, wait kill_timeout, SIGKILL everything in the cgroup, remove it; the
    /// task itself lives on (a restart) unless the caller says it is dead.
    async fn stop_attempt(
        &mut self,
        driver: &dyn Driver,
        handle: &TaskHandle,
        reason: &str,
        sampler: Sampler,
    ) {
        let signal = parse_signal(&self.task.kill_signal).unwrap_or_else(|e| {
            tracing::warn!(task = %self.id, error = %e, "bad kill_signal; using SIGTERM");
            Signal::SIGTERM
        });
        let timeout = self.task.kill_timeout;
        let mut msg = format!(
            "Sent interrupt ({}), waiting {} before kill",
            signal_name(signal as i32),
            human(timeout)
        );
        if !reason.is_empty() {
            msg = format!("{reason}: {msg}");
        }
        self.event(events::KILLING, msg);
        if let Err(e) = driver.stop(handle, signal, timeout).await {
            tracing::warn!(task = %self.id, error = %e, "stopping the task");
        }
        // The process is gone (or stop failed); wait briefly for its exit status.
        let exit = tokio::time::timeout(Duration::from_secs(5), driver.wait(handle)).await;
        self.finish_sampling(sampler).await;
        self.destroy(driver, handle).await;
        let mut ev = self.new_event(events::KILLED, "Task successfully killed".to_string());
        if let Ok(Ok(exit)) = exit {
            ev.exit_code = Some(exit.exit_code);
            ev.signal = exit.signal;
            ev.oom_killed = exit.oom_killed;
        }
        self.push_event(ev);
    }

    /// Destroys the attempt that exited on its own, if not done yet.
    async fn destroy_exited(&mut self) {
        if let Some((driver, handle)) = self.exited.take() {
            self.destroy(driver.as_ref(), &handle).await;
        }
    }

    /// Kills whatever the attempt left, removes its cgroup and forgets the handle.
    async fn destroy(&self, driver: &dyn Driver, handle: &TaskHandle) {
        if let Err(e) = driver.destroy(handle).await {
            tracing::warn!(task = %self.id, error = %e, "destroying the task");
        }
        if let Some(store) = &self.deps.handles {
            if let Err(e) = store.remove(&self.alloc.id, &self.task.name) {
                tracing::warn!(task = %self.id, error = %e, "forgetting the task handle");
            }
        }
    }

    async fn remove_cgroup(&self, cgroup: Option<CgroupPaths>) {
        if let (Some(m), Some(cg)) = (self.deps.cgroups.clone(), cgroup) {
            let id = self.id.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = m.kill_all(&cg).and_then(|()| m.remove(&cg)) {
                    tracing::warn!(task = %id, error = %e, "removing the task's cgroup");
                }
            })
            .await;
        }
    }

    fn describe_exit(&self, exit: &ExitResult) -> (&'static str, String) {
        if exit.oom_killed {
            let r = self.resources();
            let limit = r.memory_max.filter(|m| *m > r.memory).unwrap_or(r.memory);
            (
                events::OOM_KILLED,
                format!("OOM killed (limit {limit} MiB), {}", exit.describe()),
            )
        } else {
            (events::TERMINATED, exit.describe())
        }
    }

    fn kill_requested(&self) -> Option<String> {
        self.kill_rx.borrow().clone()
    }

    /// Sleeps `d`; returns the kill reason when a kill came first.
    async fn sleep_unless_killed(&mut self, d: Duration) -> Option<String> {
        tokio::select! {
            _ = tokio::time::sleep(d) => None,
            r = kill_reason(self.kill_rx.clone()) => Some(r),
        }
    }

    fn dead_without_running(&mut self, reason: &str) {
        let msg = if reason.is_empty() {
            "Task killed before it ran".to_string()
        } else {
            format!("{reason}: task killed before it ran")
        };
        self.event(events::KILLED, msg);
        self.dead(false);
    }

    fn dead(&mut self, failed: bool) {
        self.take_injected_events();
        self.state.state = TaskStateKind::Dead;
        self.state.failed = failed;
        self.state.finished_at = Some(now_ms());
        self.publish();
    }

    fn new_event(&self, kind: &str, message: String) -> TaskEvent {
        TaskEvent {
            time: now_ms(),
            kind: kind.to_string(),
            message,
            exit_code: None,
            signal: None,
            oom_killed: false,
        }
    }

    fn event(&mut self, kind: &str, message: String) {
        let ev = self.new_event(kind, message);
        self.push_event(ev);
    }

    fn push_event(&mut self, ev: TaskEvent) {
        self.take_injected_events();
        self.record_event(ev);
        self.publish();
    }

    /// Records the alloc runner's events not seen yet, before anything newer.
    fn take_injected_events(&mut self) {
        while let Ok(ev) = self.events_rx.try_recv() {
            self.record_event(ev);
        }
    }

    fn record_event(&mut self, ev: TaskEvent) {
        tracing::info!(task = %self.id, kind = %ev.kind, "{}", ev.message);
        self.state.events.push(ev);
        if self.state.events.len() > MAX_EVENTS {
            let extra = self.state.events.len() - MAX_EVENTS;
            self.state.events.drain(..extra);
        }
    }

    fn publish(&self) {
        // The alloc runner outlives its task runners; a closed channel means shutdown.
        let _ = self.updates.send(TaskUpdate {
            task: self.task.name.clone(),
            state: self.state.clone(),
        });
    }
}

/// Resolves with the reason once a kill is requested (never, if the handle is gone
/// without one).
async fn kill_reason(rx: watch::Receiver<Option<String>>) -> String {
    match wait_set(rx).await {
        Some(r) => r,
        None => std::future::pending().await,
    }
}

/// The periodic sampling of one attempt's cgroup (`None`: nothing to sample).
struct Sampler(Option<tokio::task::JoinHandle<()>>);

enum Attempt {
    /// Stopped on request; the runner already recorded the task dead.
    Killed,
    /// Stopped to start again: at once (`orch alloc restart`), or as the restart policy
    /// says when the restart `counts` (a `check_restart`).
    Restarted {
        counts: bool,
    },
    /// Ran and exited; the exit is recorded.
    Exited(ExitResult),
    SetupFailed(SetupError),
}

#[cfg(test)]
mod tests;
