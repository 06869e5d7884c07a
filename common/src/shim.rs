//! The task shim's own side: what `orch-task-shim` (or `orch task-shim`) does between
//! the client and a task. It is its own small binary because it starts once per task:
//! exec of the full `orch` binary cost about 2 ms of relocations and page faults.
//!
//! The client spawns it in a new session with the task's FIFOs on fds 4/5 and a report
//! pipe on fd 3, and the `ShimSpec` as JSON in `ORCH_TASK_SHIM_SPEC`. The shim moves
//! itself into the task's cgroup, starts the command (own process group, the task's
//! user and environment), reports "pid N" (or "error WHY") on fd 3, waits, and writes
//! the `ExitRecord` to the exit file atomically: a client that was away when the task
//! ended still learns its real exit. No threads, no runtime.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Stdio;

use serde::{Deserialize, Serialize};

/// The environment variable carrying the shim's `ShimSpec` (JSON); removed before the
/// command runs.
pub const SPEC_ENV: &str = "ORCH_TASK_SHIM_SPEC";
/// The fd the shim reports on: "pid <n>" once the command runs, or "error <why>".
pub const REPORT_FD: i32 = 3;
/// The fds the task's stdout and stderr FIFOs arrive on.
pub const STDOUT_FD: i32 = 4;
pub const STDERR_FD: i32 = 5;
/// The exit file's name in the task dir.
pub const EXIT_FILE: &str = ".exit.json";

/// What the shim runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub command: String,
    pub args: Vec<String>,
    pub exit_file: PathBuf,
    /// Added to the command's environment (and not the shim's own, so tools that find
    /// a task's processes by `ORCH_ALLOC_ID` see the command only).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// uid, gid and supplementary groups to switch to before exec (resolved by the
    /// client).
    #[serde(default)]
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The command's working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// `cgroup.procs` files the shim moves itself into before starting the command
    /// (the client spawns it without a fork-time hook, see `spawn`).
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
}

/// What the shim leaves in the exit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: i32,
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// Milliseconds since the epoch.
    pub finished_at: u64,
}

/// Handlers that do nothing: a stray SIGTERM/SIGINT/SIGHUP to the shim must not leave
/// the task unsupervised. (Unlike SIG_IGN, handlers reset to the default at exec, so
/// the command gets normal signal behaviour.)
extern "C" fn ignore(_: libc::c_int) {}

/// The shim process: runs the spec in `ORCH_TASK_SHIM_SPEC`; returns the exit code.
pub fn run() -> i32 {
    // SAFETY: sigaction with a valid handler that does nothing.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        // The command must not inherit the report pipe.
        libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let spec: ShimSpec = match std::env::var(SPEC_ENV)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            fail(&format!("reading {SPEC_ENV}: {e}"));
            return 127;
        }
    };
    // Into the task's cgroup first, so the command and everything it starts are
    // accounted and limited there.
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(procs, &me) {
            fail(&format!("error joining cgroup {}: {e}", procs.display()));
            return 127;
        }
    }
    // SAFETY: fds 4 and 5 were placed there by the client for this process alone.
    let (out, err) = unsafe {
        (
            OwnedFd::from_raw_fd(STDOUT_FD),
            OwnedFd::from_raw_fd(STDERR_FD),
        )
    };
    let mut cmd = std::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .env_remove(SPEC_ENV)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    if let Some((uid, gid, groups)) = spec.user.clone() {
        // SAFETY: setgroups/setgid/setuid on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            fail(&format!("error {e}"));
            return 127;
        }
    };
    let pid = child.id() as i32;
    report(&format!("pid {pid}\n"));
    // SAFETY: closing our end of the report pipe: the client reads to EOF.
    unsafe {
        libc::close(REPORT_FD);
    }
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return 127,
        }
    };
    let (exit_code, signal) = match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    };
    let record = ExitRecord {
        pid,
        exit_code,
        signal,
        finished_at: crate::ids::now_ms(),
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        let tmp = spec.exit_file.with_extension("tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &spec.exit_file);
        }
    }
    exit_code.clamp(0, 255)
}

fn report(message: &str) {
    // SAFETY: a write to the report fd (a failed write only means nobody listens).
    unsafe {
        libc::write(REPORT_FD, message.as_ptr().cast(), message.len());
    }
}

/// Tells the client (report pipe) and the task's stderr log why the command did not
/// start.
fn fail(message: &str) {
    report(message);
    let line = format!("orch task-shim: {message}\n");
    // SAFETY: a write to the task's stderr FIFO.
    unsafe {
        libc::write(STDERR_FD, line.as_ptr().cast(), line.len());
    }
}
