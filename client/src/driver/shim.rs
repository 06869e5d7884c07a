//! The task supervisor that outlives the client: `orch task-shim`, and the client's
//! side of it (spawning it, reading its report and its exit file, finding it again
//! after a client restart).
//!
//! A task's exit status goes to its parent. If the client were the parent, a task that
//! ends while no client runs would be reaped by init and its status lost. So the
//! client re-executes its own binary as a tiny shim, in a new session (a signal to the
//! client's process group or a SIGKILL of the client leaves it alone) and in the task's
//! cgroup; the shim spawns the command (its own process group, the task's user), tells
//! the client the command's pid on fd 3, waits for it, writes the exit to
//! `<task_dir>/.exit.json` atomically and exits the same way. No tokio, no threads:
//! one fork, one exec, one wait.
//!
//! Output does not pass through the shim: stdout and stderr are FIFOs in the task dir
//! that the task holds open read-write (`logrotate::capture_fifo`), handed to the shim
//! on fds 4 and 5, so neither the shim's own prints (a test binary's banner) nor the
//! client's absence touch them.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::{proc_start_ticks, process_alive, ExitResult};
use orch_common::structs::LogConfig;

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

impl ExitRecord {
    pub fn result(&self) -> ExitResult {
        match self.signal {
            Some(s) => ExitResult::signaled(s),
            None => ExitResult::code(self.exit_code),
        }
    }
}

/// Handlers that do nothing: a stray SIGTERM/SIGINT/SIGHUP to the shim must not leave
/// the task unsupervised. (Unlike SIG_IGN, handlers reset to the default at exec, so
/// the command gets normal signal behaviour.)
extern "C" fn ignore(_: libc::c_int) {}

/// `orch task-shim`: returns the process's exit code.
pub fn main() -> i32 {
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
    let result = super::procs::classify(status);
    let record = ExitRecord {
        pid,
        exit_code: result.exit_code,
        signal: result.signal,
        finished_at: orch_common::ids::now_ms(),
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        let tmp = spec.exit_file.with_extension("tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &spec.exit_file);
        }
    }
    result.exit_code.clamp(0, 255)
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

/// How the client starts the shim: this very binary (`orch task-shim`) unless a test
/// points it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Default for ShimCommand {
    fn default() -> Self {
        ShimCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: vec!["task-shim".to_string()],
        }
    }
}

/// What a client needs to find a supervised task again: kept in the handle's
/// `driver_state` under `"supervisor"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    pub shim_pid: i32,
    pub shim_start_ticks: Option<u64>,
    pub exit_file: PathBuf,
    pub stdout_fifo: PathBuf,
    pub stderr_fifo: PathBuf,
    /// The first log file of each stream.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub logs: LogConfig,
    /// The cgroup's OOM-kill counter when the task started.
    pub oom_baseline: u64,
}

impl SupervisorState {
    /// Reads the `"supervisor"` entry of a handle's driver state.
    pub fn from_driver_state(state: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(state.get("supervisor")?.clone()).ok()
    }

    /// True while the shim recorded here still runs (the same process: start time
    /// matches) and has not yet exited.
    pub fn shim_alive(&self) -> bool {
        self.shim_start_ticks.is_some()
            && process_alive(self.shim_pid)
            && proc_start_ticks(self.shim_pid) == self.shim_start_ticks
    }
}

/// The FIFO paths and exit file of a task dir.
pub fn task_files(task_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        task_dir.join(".stdout.fifo"),
        task_dir.join(".stderr.fifo"),
        task_dir.join(EXIT_FILE),
    )
}

/// The exit the shim recorded, if it did.
pub fn read_exit_file(path: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A started shim: the child (the client's, until a restart) and the command's pid.
pub struct Spawned {
    pub shim: tokio::process::Child,
    pub shim_pid: i32,
    pub task_pid: i32,
}

/// Starts the shim for `spec` in `cwd`, its stdout/stderr FIFO ends on
/// fds 4/5, in a new session, in the cgroup(s) whose `cgroup.procs` files are
/// `procs`. Returns once the command runs (or why it could not start).
pub async fn spawn(
    shim: &ShimCommand,
    spec: &ShimSpec,
    cwd: &Path,
    stdout: OwnedFd,
    stderr: OwnedFd,
    procs: Vec<CString>,
) -> std::io::Result<Spawned> {
    let json = serde_json::to_string(spec).map_err(std::io::Error::other)?;
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Moved to fds 3-5 in the child from above fd 10, so no dup2 overwrites another.
    let high = |fd: &OwnedFd| -> std::io::Result<OwnedFd> {
        let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: fcntl just returned this new fd, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    let (rep_high, out_high, err_high) = (high(&report_w)?, high(&stdout)?, high(&stderr)?);
    drop((report_w, stdout, stderr));
    let fds = [
        (rep_high.as_raw_fd(), REPORT_FD),
        (out_high.as_raw_fd(), STDOUT_FD),
        (err_high.as_raw_fd(), STDERR_FD),
    ];
    let mut cmd = tokio::process::Command::new(&shim.program);
    cmd.args(&shim.args)
        .env(SPEC_ENV, json)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(false);
    // SAFETY: runs in the forked child before exec: only async-signal-safe syscalls
    // (setsid, open, write, close, dup2) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for path in &procs {
                super::procs::join_cgroup(path)?;
            }
            for (from, to) in fds {
                // dup2 clears close-on-exec on the new fd.
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop((rep_high, out_high, err_high));
    let shim_pid = child
        .id()
        .map(|p| p as i32)
        .ok_or_else(|| std::io::Error::other("the shim exited before its pid was read"))?;
    let mut receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(report_r)?;
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut receiver, &mut text).await?;
    let text = text.trim();
    match text
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok())
    {
        Some(task_pid) => Ok(Spawned {
            shim: child,
            shim_pid,
            task_pid,
        }),
        None => {
            let mut child = child;
            let _ = child.wait().await;
            let why = text.strip_prefix("error ").unwrap_or(text);
            Err(if why.is_empty() {
                std::io::Error::other("the task shim exited without starting the command")
            } else {
                std::io::Error::other(why.to_string())
            })
        }
    }
}

/// Resolves when process `pid` (verified by its start time) has exited; at once when
/// it is already gone. Works on processes that are not the caller's children.
pub async fn wait_pid_exit(pid: i32, start_ticks: Option<u64>) -> std::io::Result<()> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(()),
            _ => Err(e),
        };
    }
    // SAFETY: the syscall just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // Opened after the pid was recorded: make sure it is still the same process.
    if proc_start_ticks(pid) != start_ticks {
        return Ok(());
    }
    // SAFETY: an OwnedFd stays open and the same for as long as the AsyncFd owns it.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)?;
    let _ready = afd.readable().await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Not a test: the task shim when a driver under test runs this binary as its
    /// shim (a libtest binary has no other entry point).
    #[test]
    fn task_shim_entry() {
        if std::env::var_os(SPEC_ENV).is_some() {
            std::process::exit(main());
        }
    }

    /// This test binary as the shim.
    pub(crate) fn test_shim() -> ShimCommand {
        ShimCommand {
            program: std::env::current_exe().unwrap(),
            args: [
                "--exact",
                "driver::shim::tests::task_shim_entry",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }

    #[test]
    fn exit_records_round_trip_and_classify() {
        let r = ExitRecord {
            pid: 5,
            exit_code: 137,
            signal: Some(9),
            finished_at: 1,
        };
        let back: ExitRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.result(), ExitResult::signaled(9));
    }

    #[tokio::test]
    async fn waiting_on_a_non_child_pid_resolves_when_it_exits() {
        // A grandchild: `sh` starts `sleep` in the background and exits at once.
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 0.3 & echo $!"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ticks = proc_start_ticks(pid);
        assert!(ticks.is_some());
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            wait_pid_exit(pid, ticks),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!process_alive(pid) || proc_start_ticks(pid) != ticks);
    }
}
