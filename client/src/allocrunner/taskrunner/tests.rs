//! Task runner scenarios, mostly with the mock driver (restart policy, kills, events)
//! and a few with raw_exec (environment, cgroups).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orch_common::mock::{restart_policy, task, AllocBuilder, JobBuilder, NodeBuilder, TaskBuilder};
use orch_common::model::{JobType, RestartMode, RestartPolicy, Task, TaskState, TaskStateKind};
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::driver::{MockDriver, RawExecDriver};

/// The node the runs are on (its id reaches the task's environment).
const NODE_ID: &str = "node-1-id";

struct Run {
    _dir: tempfile::TempDir,
    alloc_dir: AllocDir,
    handle: TaskRunnerHandle,
    rx: mpsc::UnboundedReceiver<TaskUpdate>,
    alloc: Arc<Allocation>,
}

fn deps(cgroups: Option<Arc<dyn CgroupManager>>) -> TaskRunnerDeps {
    let mut drivers = DriverSet::new();
    drivers.insert(Arc::new(MockDriver::new()));
    drivers.insert(Arc::new(RawExecDriver::with_shim(
        cgroups.clone(),
        crate::shim::supervisor::tests::test_shim(),
    )));
    TaskRunnerDeps {
        drivers: Arc::new(drivers),
        cgroups,
        handles: None,
        node: Arc::new(NodeBuilder::new().id(NODE_ID).build()),
        pids_limit: crate::cgroups::DEFAULT_PIDS_MAX,
        usage: Default::default(),
        recovered: Default::default(),
    }
}

fn start_with(t: Task, job_type: JobType, policy: RestartPolicy, d: TaskRunnerDeps) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let j = JobBuilder::new("job1")
        .job_type(job_type)
        .group_name("g")
        .tasks(vec![t.clone()])
        .restart(policy)
        .build();
    let alloc = Arc::new(AllocBuilder::new(&j).node_id(NODE_ID).build());
    let alloc_dir = AllocDir::new(dir.path(), &alloc.id);
    alloc_dir.prepare(std::slice::from_ref(&t.name)).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = spawn(alloc.clone(), t, alloc_dir.clone(), d, tx);
    Run {
        _dir: dir,
        alloc_dir,
        handle,
        rx,
        alloc,
    }
}

fn start(t: Task, job_type: JobType, policy: RestartPolicy) -> Run {
    start_with(t, job_type, policy, deps(None))
}

impl Run {
    /// Waits for the runner to finish and returns the last state it published.
    async fn finish(self) -> TaskState {
        self.finish_keeping_dir().await.0
    }

    /// Like `finish`, keeping the alloc dir for inspection.
    async fn finish_keeping_dir(mut self) -> (TaskState, tempfile::TempDir) {
        self.handle.wait().await;
        let mut last = None;
        while let Ok(u) = self.rx.try_recv() {
            last = Some(u.state);
        }
        (last.expect("no state published"), self._dir)
    }

    async fn wait_for_state(&mut self, kind: TaskStateKind) -> TaskState {
        loop {
            let u = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
                .await
                .expect("timed out waiting for a task state")
                .expect("runner gone");
            if u.state.state == kind {
                return u.state;
            }
        }
    }
}

fn kinds(s: &TaskState) -> Vec<&str> {
    s.events.iter().map(|e| e.kind.as_str()).collect()
}

/// Task "t" of the mock driver (configure it with `config`).
fn mock() -> TaskBuilder {
    TaskBuilder::new("t", "mock")
}

/// Task `name` running `/bin/sh -c script` under raw_exec.
fn sh(name: &str, script: &str) -> TaskBuilder {
    TaskBuilder::new(name, "raw_exec")
        .config("command", json!("/bin/sh"))
        .config("args", json!(["-c", script]))
}

/// `attempts` restarts in an hour, 10ms apart, then `mode`.
fn policy(attempts: u32, mode: RestartMode) -> RestartPolicy {
    restart_policy(
        attempts,
        Duration::from_millis(10),
        Duration::from_secs(3600),
        mode,
    )
}

#[tokio::test]
async fn batch_exit_zero_is_complete_without_restart() {
    let s = start(mock().build(), JobType::Batch, policy(3, RestartMode::Fail))
        .finish()
        .await;
    assert_eq!(s.state, TaskStateKind::Dead);
    assert!(!s.failed);
    assert_eq!(s.restarts, 0);
    assert_eq!(
        kinds(&s),
        ["Received", "Task Setup", "Started", "Terminated"]
    );
    assert_eq!(s.events[3].message, "Exit Code: 0");
}

#[tokio::test]
async fn batch_failure_restarts_the_allowed_attempts_then_fails() {
    let s = start(
        mock().config("exit_code", json!(1)).build(),
        JobType::Batch,
        policy(2, RestartMode::Fail),
    )
    .finish()
    .await;
    assert!(s.failed);
    assert_eq!(s.restarts, 2);
    let k = kinds(&s);
    assert_eq!(k.iter().filter(|k| **k == "Started").count(), 3);
    assert_eq!(k.iter().filter(|k| **k == "Restarting").count(), 2);
    assert_eq!(k.last(), Some(&"Not Restarting"));
    let restarting = s.events.iter().find(|e| e.kind == "Restarting").unwrap();
    assert_eq!(restarting.message, "Restarting in 10ms");
    let exited = s.events.iter().find(|e| e.kind == "Terminated").unwrap();
    assert_eq!(
        (exited.message.as_str(), exited.exit_code),
        ("Exit Code: 1", Some(1))
    );
    assert!(s
        .events
        .last()
        .unwrap()
        .message
        .contains("mode is \"fail\""));
}

#[tokio::test]
async fn a_service_that_exits_zero_is_still_restarted() {
    let s = start(
        mock().build(),
        JobType::Service,
        policy(1, RestartMode::Fail),
    )
    .finish()
    .await;
    assert_eq!(s.restarts, 1);
    assert!(s.failed);
}

#[tokio::test(start_paused = true)]
async fn the_restart_delay_is_waited() {
    let t = mock().config("exit_code", json!(2)).build();
    let before = tokio::time::Instant::now();
    let s = start(
        t,
        JobType::Batch,
        restart_policy(
            2,
            Duration::from_secs(5),
            Duration::from_secs(3600),
            RestartMode::Fail,
        ),
    )
    .finish()
    .await;
    assert_eq!(s.restarts, 2);
    assert!(before.elapsed() >= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn mode_delay_restarts_after_the_interval_instead_of_failing() {
    let t = mock().config("exit_code", json!(1)).build();
    let policy = restart_policy(
        1,
        Duration::from_millis(100),
        Duration::from_secs(60),
        RestartMode::Delay,
    );
    let mut run = start(t, JobType::Batch, policy);
    // attempt 1 fails -> restart; attempt 2 fails -> delayed restart (not failed).
    let mut restarting = Vec::new();
    while restarting.len() < 2 {
        let u = run.rx.recv().await.unwrap();
        assert!(
            !(u.state.state == TaskStateKind::Dead),
            "task died: {:?}",
            u.state.events
        );
        if let Some(e) = u.state.events.last() {
            if e.kind == "Restarting" && !restarting.contains(&e.message) {
                restarting.push(e.message.clone());
            }
        }
    }
    assert_eq!(restarting[0], "Restarting in 100ms");
    assert!(
        restarting[1]
            .starts_with("Exceeded allowed attempts 1 in interval 1m, delaying restart by"),
        "{}",
        restarting[1]
    );
    run.handle.kill("test over");
    let s = run.finish().await;
    assert!(!s.failed);
}

#[tokio::test]
async fn a_recoverable_start_error_goes_through_the_restart_policy() {
    let s = start(
        mock().config("start_error", json!("no luck")).build(),
        JobType::Service,
        policy(1, RestartMode::Fail),
    )
    .finish()
    .await;
    assert!(s.failed);
    assert_eq!(s.restarts, 1);
    let failures: Vec<_> = s
        .events
        .iter()
        .filter(|e| e.kind == "Driver Failure")
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(failures[0].message.contains("no luck"));
}

#[tokio::test]
async fn an_invalid_config_fails_at_once() {
    let s = start(
        mock().config("bogus", json!(1)).build(),
        JobType::Service,
        policy(5, RestartMode::Fail),
    )
    .finish()
    .await;
    assert!(s.failed);
    assert_eq!(s.restarts, 0);
    assert_eq!(kinds(&s).last(), Some(&"Setup Failure"));
}

#[tokio::test]
async fn an_unknown_driver_fails_with_a_setup_failure() {
    let s = start(
        task("t", "container"),
        JobType::Service,
        policy(5, RestartMode::Fail),
    )
    .finish()
    .await;
    assert!(s.failed);
    let last = s.events.last().unwrap();
    assert_eq!(last.kind, "Setup Failure");
    assert!(
        last.message.contains("\"container\" is not available"),
        "{}",
        last.message
    );
}

#[tokio::test]
async fn kill_stops_a_running_task_and_it_is_not_failed() {
    let mut run = start(
        mock()
            .config("run_for", json!("1h"))
            .kill_timeout(Duration::from_secs(5))
            .build(),
        JobType::Service,
        policy(2, RestartMode::Fail),
    );
    run.wait_for_state(TaskStateKind::Running).await;
    run.handle.kill("alloc stopped");
    let s = run.finish().await;
    assert_eq!(s.state, TaskStateKind::Dead);
    assert!(!s.failed);
    let killing = s.events.iter().find(|e| e.kind == "Killing").unwrap();
    assert_eq!(
        killing.message,
        "alloc stopped: Sent interrupt (SIGTERM), waiting 5s before kill"
    );
    let killed = s.events.last().unwrap();
    assert_eq!(killed.kind, "Killed");
    assert_eq!(killed.signal, Some(15));
}

#[tokio::test(start_paused = true)]
async fn kill_during_the_restart_delay_ends_the_task() {
    let t = mock().config("exit_code", json!(1)).build();
    let mut run = start(
        t,
        JobType::Service,
        restart_policy(
            3,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            RestartMode::Fail,
        ),
    );
    loop {
        let u = run.rx.recv().await.unwrap();
        if u.state.events.last().map(|e| e.kind.as_str()) == Some("Restarting") {
            break;
        }
    }
    run.handle.kill("stop");
    let s = run.finish().await;
    assert_eq!(s.state, TaskStateKind::Dead);
    assert!(!s.failed);
    assert_eq!(s.restarts, 1);
}

#[tokio::test]
async fn an_oom_kill_is_reported_with_the_limit() {
    let t = mock()
        .config("oom_killed", json!(true))
        .config("exit_signal", json!(9))
        .memory(32)
        .build();
    let s = start(t, JobType::Batch, policy(0, RestartMode::Fail))
        .finish()
        .await;
    assert!(s.failed);
    let oom = s.events.iter().find(|e| e.kind == "OOM Killed").unwrap();
    assert!(oom.oom_killed);
    assert_eq!(
        oom.message,
        "OOM killed (limit 32 MiB), Exit Code: 137, Signal: 9 (SIGKILL)"
    );
}

#[tokio::test]
async fn every_orch_variable_reaches_a_raw_exec_task() {
    let t = sh("printer", "env; echo index=${ORCH_ALLOC_INDEX}")
        .cpu(100)
        .memory(32)
        .build();
    let run = start(t, JobType::Batch, policy(0, RestartMode::Fail));
    let stdout = run.alloc_dir.log_file("printer", "stdout");
    let alloc = run.alloc.clone();
    let alloc_dir = run.alloc_dir.clone();
    let (s, _dir) = run.finish_keeping_dir().await;
    assert!(!s.failed, "{:?}", s.events);
    let out = std::fs::read_to_string(stdout).unwrap();
    let vars: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    for (k, v) in [
        ("ORCH_JOB_ID", "job1"),
        ("ORCH_GROUP_NAME", "g"),
        ("ORCH_TASK_NAME", "printer"),
        ("ORCH_ALLOC_ID", alloc.id.as_str()),
        ("ORCH_ALLOC_INDEX", "0"),
        ("ORCH_NODE_ID", NODE_ID),
        ("ORCH_CPU_LIMIT", "100"),
        ("ORCH_MEMORY_LIMIT", "32"),
    ] {
        assert_eq!(vars.get(k), Some(&v), "{k}");
    }
    assert_eq!(
        vars["ORCH_ALLOC_DIR"],
        alloc_dir.shared().display().to_string()
    );
    assert_eq!(
        vars["ORCH_TASK_DIR"],
        alloc_dir.task_local("printer").display().to_string()
    );
    assert_eq!(vars["index"], "0");
}

#[tokio::test]
async fn without_cgroups_the_task_says_limits_are_not_enforced() {
    let t = TaskBuilder::new("t", "raw_exec")
        .config("command", json!("/bin/true"))
        .build();
    let s = start(t, JobType::Batch, policy(0, RestartMode::Fail))
        .finish()
        .await;
    assert!(s
        .events
        .iter()
        .any(|e| e.message.contains("limits are NOT enforced")));
}

#[tokio::test]
async fn pids_above_the_client_limit_fail_the_task_at_setup() {
    let mut t = sh("many", "true").build();
    t.resources.pids = Some(5000);
    let s = start(t, JobType::Batch, policy(0, RestartMode::Fail))
        .finish()
        .await;
    assert!(s.failed);
    let e = s
        .events
        .iter()
        .find(|e| e.kind == "Setup Failure")
        .expect("no setup failure");
    assert!(e.message.contains("pids_limit (1024)"), "{}", e.message);
}

#[tokio::test]
async fn asked_for_limits_without_cgroups_fail_loudly() {
    let mut t = sh("pinned", "true").build();
    t.resources.cores = Some(1);
    t.resources.cpu_hard_limit = true;
    // deps(None): a client without cgroup access.
    let s = start(t, JobType::Batch, policy(0, RestartMode::Fail))
        .finish()
        .await;
    assert!(s.failed);
    let e = s
        .events
        .iter()
        .find(|e| e.kind == "Setup Failure")
        .expect("no setup failure");
    assert!(
        e.message
            .contains("resources.cores, resources.cpu_hard_limit cannot be enforced"),
        "{}",
        e.message
    );
}

mod as_root {
    use super::*;
    use crate::cgroups;
    use std::path::Path;

    fn cgroup_deps() -> Option<(Arc<dyn CgroupManager>, TaskRunnerDeps)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: cgroups need root");
            return None;
        }
        match cgroups::detect_manager(Path::new("/proc/mounts"), Path::new("/sys/fs/cgroup")) {
            Ok(m) => Some((m.clone(), deps(Some(m)))),
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    fn memory_dir(alloc: &Allocation, t: &str) -> std::path::PathBuf {
        Path::new("/sys/fs/cgroup/memory/orch").join(format!("{}-{t}", alloc.id))
    }

    #[tokio::test]
    async fn an_oom_task_is_classified_oom_and_its_cgroup_removed_as_root() {
        let Some((_m, d)) = cgroup_deps() else { return };
        let usage = d.usage.clone();
        let t = sh("hog", "tail /dev/zero").memory(16).build();
        let run = start_with(t, JobType::Batch, policy(0, RestartMode::Fail), d);
        let alloc = run.alloc.clone();
        let s = run.finish().await;
        assert!(s.failed);
        let oom = s
            .events
            .iter()
            .find(|e| e.kind == "OOM Killed")
            .expect("no OOM event");
        assert!(
            oom.message.starts_with("OOM killed (limit 16 MiB)"),
            "{}",
            oom.message
        );
        assert!(!memory_dir(&alloc, "hog").exists());
        // The last sample, taken before the cgroup went, shows the task at its limit.
        let u = usage.snapshot(&alloc.id, false);
        let hog = &u.tasks["hog"];
        assert!(!hog.running);
        assert!(hog.memory.unwrap().peak_bytes.unwrap() > 8 << 20, "{hog:?}");
        assert_eq!(hog.memory_limit_bytes, Some(16 << 20));
    }

    #[tokio::test]
    async fn a_double_forked_setsid_grandchild_dies_with_the_task_as_root() {
        let Some((_m, d)) = cgroup_deps() else { return };
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // The subshell forks the grandchild and exits at once: the grandchild is
        // reparented away from the task and leaves its process group and session.
        let script = format!(
            "(setsid sh -c 'echo $$ > {}; exec sleep 300' &); exec sleep 300",
            pidfile.display()
        );
        let t = sh("escape", &script)
            .kill_timeout(Duration::from_millis(300))
            .build();
        let mut run = start_with(t, JobType::Service, policy(0, RestartMode::Fail), d);
        run.wait_for_state(TaskStateKind::Running).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let grandchild: i32 = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild pid");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let gc = nix::unistd::Pid::from_raw(grandchild);
        assert_eq!(
            nix::unistd::getsid(Some(gc)).unwrap(),
            gc,
            "not its own session"
        );
        let cg = memory_dir(&run.alloc, "escape");
        run.handle.kill("job stopped");
        let s = run.finish().await;
        assert!(!s.failed);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while crate::driver::process_alive(grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {grandchild} survived the task"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }

    #[tokio::test]
    async fn a_fork_bomb_is_held_at_the_pids_limit_and_the_node_stays_healthy_as_root() {
        let Some((_m, d)) = cgroup_deps() else { return };
        let usage = d.usage.clone();
        // The bomb runs in a subshell: once the cgroup is full a fork fails, and the main
        // shell must not be the one to see it (it would exit on its own).
        let mut t = sh("bomb", "( b() { b | b & }; b ) 2>/dev/null; exec sleep 300")
            .kill_timeout(Duration::from_millis(200))
            .build();
        t.resources.pids = Some(24);
        let mut run = start_with(t, JobType::Service, policy(0, RestartMode::Fail), d);
        run.wait_for_state(TaskStateKind::Running).await;
        let pids_dir = Path::new("/sys/fs/cgroup/pids/orch").join(format!("{}-bomb", run.alloc.id));
        // Wait until the bomb has hit the limit at least once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = std::fs::read_to_string(pids_dir.join("pids.events")).unwrap_or_default();
            let hits: u64 = events
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if hits > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the bomb never hit pids.max"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let current: u64 = std::fs::read_to_string(pids_dir.join("pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(current <= 24, "{current} tasks in the cgroup");
        // The node can still start processes.
        assert!(std::process::Command::new("true")
            .status()
            .unwrap()
            .success());
        let alloc = run.alloc.id.clone();
        let sampled = usage.snapshot(&alloc, true);
        assert!(sampled.tasks["bomb"].pids <= 24);
        assert_eq!(sampled.tasks["bomb"].pids_limit, Some(24));
        run.handle.kill("job stopped");
        let s = run.finish().await;
        assert!(!s.failed, "{s:#?}");
        assert!(
            !pids_dir.exists(),
            "cgroup {} left behind",
            pids_dir.display()
        );
    }

    #[tokio::test]
    async fn killing_a_task_kills_its_tree_and_removes_the_cgroup_as_root() {
        let Some((_m, d)) = cgroup_deps() else { return };
        let t = sh(
            "tree",
            "setsid sleep 300 & trap '' TERM; while true; do sleep 0.1; done",
        )
        .kill_timeout(Duration::from_millis(300))
        .build();
        let mut run = start_with(t, JobType::Service, policy(0, RestartMode::Fail), d);
        run.wait_for_state(TaskStateKind::Running).await;
        let cg = memory_dir(&run.alloc, "tree");
        assert!(cg.exists());
        // Wait until both the shell and the setsid child are in the cgroup.
        let procs = cg.join("cgroup.procs");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .count()
            < 2
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run.handle.kill("job stopped");
        let s = run.finish().await;
        assert!(!s.failed);
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }
}
