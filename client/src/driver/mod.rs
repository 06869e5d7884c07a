//! Task drivers: the `Driver` trait (fingerprint, start -> `TaskHandle`, wait, stop,
//! destroy, recover, stats) and its implementations: `raw_exec` (a host process in its
//! own process group and cgroup), `container` (the command in its own namespaces on
//! its own root filesystem) and `mock` (runs nothing; for tests).
//!
//! Drivers are async and object-safe (`Arc<dyn Driver>`), so their futures are boxed.
//! A driver keeps the live child of each task it started, keyed by `TaskHandle::id`;
//! the handle itself is plain data that `state` persists.

pub mod container;
pub mod mock;
mod procs;
pub mod raw_exec;
#[cfg(test)]
mod suite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use orch_common::model::{DriverInfo, LogConfig, Resources};
use serde::{Deserialize, Serialize};

use crate::cgroups::{CgroupError, CgroupPaths, MemoryUsage};

pub use container::ContainerDriver;
pub use mock::MockDriver;
pub use raw_exec::RawExecDriver;

/// Why a driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("task {task}: invalid driver config: {reason}")]
    InvalidConfig { task: String, reason: String },
    #[error("task {task}: starting {command:?}: {source}")]
    Start {
        task: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: opening log file {path}: {source}")]
    LogFile {
        task: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: user {user:?}: {reason}")]
    User {
        task: String,
        user: String,
        reason: String,
    },
    #[error("task {task}: {source}")]
    Cgroup {
        task: String,
        #[source]
        source: CgroupError,
    },
    #[error("task {task} is not known to driver {driver}")]
    UnknownTask { task: String, driver: &'static str },
    #[error("driver {driver} does not support {what} yet")]
    Unsupported {
        driver: &'static str,
        what: &'static str,
    },
    #[error("task {task}: {message}")]
    Injected { task: String, message: String },
    #[error("task {task}: sending {signal} to process group {pgid}: {source}")]
    Signal {
        task: String,
        signal: Signal,
        pgid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("task {task} was lost while no client ran: {reason}")]
    Lost { task: String, reason: String },
    #[error("unknown signal {name:?}")]
    BadSignal { name: String },
    #[error("task {task}: {source}")]
    Container {
        task: String,
        #[source]
        source: container::ContainerError,
    },
}

impl DriverError {
    /// False for mistakes that another attempt cannot fix (bad config, unknown user).
    pub fn is_recoverable(&self) -> bool {
        if let DriverError::Container { source, .. } = self {
            return source.is_recoverable();
        }
        !matches!(
            self,
            DriverError::InvalidConfig { .. }
                | DriverError::User { .. }
                | DriverError::BadSignal { .. }
                | DriverError::Unsupported { .. }
        )
    }
}

/// Everything a driver needs to start one task.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// `<alloc_id>/<task>`: unique on the node.
    pub id: String,
    pub alloc_id: String,
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
}

/// What a started task is: serializable, so a later client run can find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHandle {
    pub id: String,
    pub alloc_id: String,
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

/// Reads "SIGTERM", "TERM", "sigint", "9".
pub fn parse_signal(name: &str) -> Result<Signal, DriverError> {
    let bad = || DriverError::BadSignal {
        name: name.to_string(),
    };
    let trimmed = name.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = trimmed.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().map_err(|_| bad())
}

/// "SIGKILL" for 9; "signal 77" for numbers the OS does not name.
pub fn signal_name(n: i32) -> String {
    Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}

/// True while `pid` exists and is not a zombie (a dead process nobody reaped yet).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// A process's start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_with_or_without_the_sig_prefix() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("int").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").is_err());
    }

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

    #[test]
    fn start_ticks_of_this_process_are_known() {
        let me = std::process::id() as i32;
        assert!(proc_start_ticks(me).is_some());
        assert_eq!(proc_start_ticks(me), proc_start_ticks(me));
    }
}
