//! The `Driver` trait and what goes in and out of it: `StartRequest` -> `TaskHandle`
//! (plain data that `state` persists), `ExitResult`, `TaskStats`, and an exec's
//! `ExecRequest` -> `ExecSession`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use orch_common::model::{AllocatedPort, DriverInfo, LogConfig, Resources};
use serde::{Deserialize, Serialize};

use super::error::DriverError;
use super::signals::signal_name;
use crate::cgroups::{CgroupPaths, MemoryUsage};
use orch_common::ids::AllocId;

/// Everything a driver needs to start one task.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// `<alloc_id>/<task>`: unique on the node.
    pub id: String,
    pub alloc_id: AllocId,
    pub task_name: String,
    /// The task's `config`, already interpolated.
    pub config: BTreeMap<String, serde_json::Value>,
    /// The full environment to add (ORCH_* plus the task's env).
    pub env: BTreeMap<String, String>,
    /// Unix user to run as; `None` is the agent's own user.
    pub user: Option<String>,
    /// Working directory: the task dir.
    pub task_dir: PathBuf,
    /// The first log file of each stream (`<task>.stdout.0`); rotation continues with
    /// `.1`, `.2`, ... (`logrotate`).
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub logs: LogConfig,
    /// The cgroup to start the process in, created by the task runner.
    pub cgroup: Option<CgroupPaths>,
    pub resources: Resources,
    /// The host ports the allocation reserved (labels and numbers): a container with
    /// any needs the host's network to be reached on them.
    pub ports: Vec<AllocatedPort>,
}

/// What a started task is: serializable, so a later client run can find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHandle {
    pub id: String,
    pub alloc_id: AllocId,
    pub task_name: String,
    pub driver: String,
    /// The main process (also its process group id), for drivers that run one.
    #[serde(default)]
    pub pid: Option<i32>,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22),
    /// to tell it from a later process that reused the pid.
    #[serde(default)]
    pub pid_start_ticks: Option<u64>,
    /// Milliseconds since the epoch.
    pub started_at: u64,
    #[serde(default)]
    pub cgroup: Option<CgroupPaths>,
    /// Anything else the driver needs to recover the task.
    #[serde(default)]
    pub driver_state: serde_json::Value,
}

/// How a task's main process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitResult {
    /// The exit code; 128 + signal when killed by a signal (as shells report it).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The cgroup's OOM-kill counter went up while the task ran.
    pub oom_killed: bool,
}

impl ExitResult {
    pub fn code(exit_code: i32) -> Self {
        ExitResult {
            exit_code,
            signal: None,
            oom_killed: false,
        }
    }

    pub fn signaled(signal: i32) -> Self {
        ExitResult {
            exit_code: 128 + signal,
            signal: Some(signal),
            oom_killed: false,
        }
    }

    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none() && !self.oom_killed
    }

    /// "Exit Code: 1", "Exit Code: 137, Signal: 9 (SIGKILL)".
    pub fn describe(&self) -> String {
        match self.signal {
            Some(s) => format!(
                "Exit Code: {}, Signal: {} ({})",
                self.exit_code,
                s,
                signal_name(s)
            ),
            None => format!("Exit Code: {}", self.exit_code),
        }
    }
}

/// Resource use of a running task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    pub memory: Option<MemoryUsage>,
    pub cpu_ns: Option<u64>,
    pub pids: usize,
}

/// One way of running tasks. Implementations must be safe to call concurrently for
/// different tasks.
pub trait Driver: Send + Sync {
    /// The name jobs use in `driver = "..."`.
    fn name(&self) -> &'static str;

    /// Whether the driver works on this host (becomes `driver.<name>` and
    /// `node.drivers`).
    fn fingerprint(&self) -> DriverInfo;

    /// Whether the task runner must give its tasks a cgroup (drivers that run no
    /// process say no).
    fn uses_cgroups(&self) -> bool {
        true
    }

    /// Starts the task; returns once the process exists (or failed to).
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<TaskHandle, DriverError>>;

    /// Resolves when the task's main process has exited.
    fn wait<'a>(&'a self, handle: &'a TaskHandle)
        -> BoxFuture<'a, Result<ExitResult, DriverError>>;

    /// Sends `signal` to the task's process group, waits up to `timeout` for it to exit,
    /// then kills everything left (through the cgroup when there is one).
    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Kills everything the task left (cgroup included), removes its cgroup and
    /// forgets the task. Safe to call on a task that already exited.
    fn destroy<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Re-attaches to a task started by an earlier client run (a handle it saved):
    /// afterwards `wait`, `stop`, `destroy` and `stats` work as if this run had
    /// started it. A task that ended meanwhile is recovered too, and `wait` returns
    /// its real exit; a task that cannot be found again is `Lost`.
    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        let _ = handle;
        Box::pin(async move {
            Err(DriverError::Unsupported {
                driver: self.name(),
                what: "re-attaching to a task of an earlier client run",
            })
        })
    }

    fn stats<'a>(&'a self, handle: &'a TaskHandle)
        -> BoxFuture<'a, Result<TaskStats, DriverError>>;

    /// Starts `req.command` inside the running task's isolation: its cgroup,
    /// environment, working directory and user (and a container's namespaces). Drivers
    /// that run no process do not support it.
    fn exec<'a>(
        &'a self,
        handle: &'a TaskHandle,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession, DriverError>> {
        let _ = (handle, req);
        Box::pin(async move {
            Err(DriverError::Unsupported {
                driver: self.name(),
                what: "exec",
            })
        })
    }
}

/// A command to run inside a running task (`orch alloc exec`).
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Program and arguments; the program is found on the task's `PATH`.
    pub command: Vec<String>,
    /// Give the command a terminal (stdin, stdout and stderr are then its pty).
    pub tty: bool,
}

/// A started exec: without a tty the child's stdin, stdout and stderr are pipes; with
/// one, `pty` is the terminal's controlling side and the child has no pipes.
pub struct ExecSession {
    pub child: tokio::process::Child,
    pub pty: Option<std::os::fd::OwnedFd>,
}

/// The exit result a driver publishes on `rx` for task `task`; an unknown task (no
/// receiver) or a publisher gone without a result is `UnknownTask`.
pub(crate) async fn wait_exit(
    rx: Option<tokio::sync::watch::Receiver<Option<ExitResult>>>,
    task: &str,
    driver: &'static str,
) -> Result<ExitResult, DriverError> {
    let unknown = || DriverError::UnknownTask {
        task: task.to_string(),
        driver,
    };
    crate::once::wait_set(rx.ok_or_else(unknown)?)
        .await
        .ok_or_else(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_results_describe_themselves() {
        assert_eq!(ExitResult::code(1).describe(), "Exit Code: 1");
        assert_eq!(
            ExitResult::signaled(9).describe(),
            "Exit Code: 137, Signal: 9 (SIGKILL)"
        );
        assert!(ExitResult::code(0).successful());
        assert!(!ExitResult::signaled(15).successful());
    }
}
