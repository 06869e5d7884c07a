//! The client's side of the task supervisor that outlives it: spawning the shim,
//! reading its report and its exit file, finding it again after a client restart. The
//! shim's own side is `orch_common::shim` (the `orch-task-shim` binary).
//!
//! A task's exit status goes to its parent. If the client were the parent, a task that
//! ends while no client runs would be reaped by init and its status lost. So the
//! client starts a small shim per task (`orch-task-shim` next to its own binary, else
//! itself as `orch task-shim`) with `posix_spawn` (no copy of the client's memory map),
//! in a new session (a signal to the client's process group or a SIGKILL of the client
//! leaves it alone); the shim moves itself into the task's cgroup, spawns the command
//! (its own process group, the task's user), tells the client the command's pid on
//! fd 3, waits for it, writes the exit to `<task_dir>/.exit.json` atomically and exits
//! the same way.
//!
//! Output does not pass through the shim: stdout and stderr are FIFOs in the task dir
//! that the task holds open read-write (`logrotate::capture_fifo`), handed to the shim
//! on fds 4 and 5, so neither the shim's own prints (a test binary's banner) nor the
//! client's absence touch them.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{proc_start_ticks, process_alive, ExitResult};
use orch_common::structs::LogConfig;

pub use orch_common::shim::{
    ExitRecord, ShimSpec, EXIT_FILE, REPORT_FD, SPEC_ENV, STDERR_FD, STDOUT_FD,
};

/// The exit an `ExitRecord` describes.
pub fn exit_result(record: &ExitRecord) -> ExitResult {
    match record.signal {
        Some(s) => ExitResult::signaled(s),
        None => ExitResult::code(record.exit_code),
    }
}

/// `orch task-shim` (the same as the `orch-task-shim` binary): returns the process's
/// exit code.
pub fn main() -> i32 {
    orch_common::shim::run()
}

/// How the client starts the shim: this very binary (`orch task-shim`) unless a test
/// points it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Default for ShimCommand {
    /// `orch-task-shim` next to this binary when it is there (a small binary: far
    /// cheaper to start once per task), else this very binary as `orch task-shim`.
    fn default() -> Self {
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join(SHIM_BINARY)))
            .filter(|p| p.is_file());
        match sibling {
            Some(program) => ShimCommand {
                program,
                args: Vec::new(),
            },
            None => ShimCommand {
                program: PathBuf::from("/proc/self/exe"),
                args: vec!["task-shim".to_string()],
            },
        }
    }
}

/// The task shim's own binary, installed next to `orch`.
pub const SHIM_BINARY: &str = "orch-task-shim";

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
    pub shim: ShimChild,
    pub shim_pid: i32,
    pub task_pid: i32,
}

/// The shim as this client's child process.
pub struct ShimChild {
    pid: i32,
    start_ticks: Option<u64>,
}

impl ShimChild {
    /// Waits until the shim exits (a pidfd: no SIGCHLD handling needed) and reaps it.
    pub async fn wait(self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        wait_pid_exit(self.pid, self.start_ticks).await?;
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child, which has exited (or is about to).
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Starts the shim for `spec`: its report pipe on fd 3 and the task's stdout/stderr
/// FIFO ends on fds 4/5, in a new session; the shim moves itself into the cgroups of
/// `spec.cgroup_procs` and runs the command in `spec.cwd`. Returns once the command
/// runs (or why it could not start).
///
/// `posix_spawn` rather than fork + exec: glibc spawns with `CLONE_VM | CLONE_VFORK`,
/// so the client's page tables are not copied for every task (a fork of the client
/// was the largest part of starting a task).
pub async fn spawn(
    shim: &ShimCommand,
    spec: &ShimSpec,
    stdout: OwnedFd,
    stderr: OwnedFd,
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
    let cstr = |s: &[u8]| CString::new(s).map_err(std::io::Error::other);
    let program = cstr(shim.program.as_os_str().as_bytes())?;
    let mut argv = vec![program.clone()];
    for a in &shim.args {
        argv.push(cstr(a.as_bytes())?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k != SPEC_ENV {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            envp.push(cstr(&kv)?);
        }
    }
    envp.push(cstr(format!("{SPEC_ENV}={json}").as_bytes())?);
    let fds = [
        (rep_high.as_raw_fd(), REPORT_FD),
        (out_high.as_raw_fd(), STDOUT_FD),
        (err_high.as_raw_fd(), STDERR_FD),
    ];
    let shim_pid = posix_spawn(&program, &argv, &envp, &fds)?;
    drop((rep_high, out_high, err_high));
    let child = ShimChild {
        pid: shim_pid,
        start_ticks: proc_start_ticks(shim_pid),
    };
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

/// `posix_spawn(3)` of `program` in a new session with default signal handling and
/// an empty signal mask, stdin/stdout/stderr on /dev/null and each `(from, to)` of
/// `fds` duplicated to `to`.
fn posix_spawn(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    fds: &[(i32, i32)],
) -> std::io::Result<i32> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(r))
        }
    };
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let dev_null = c"/dev/null";
    // SAFETY: the attribute and file-action objects are initialised before use and
    // destroyed on every path; every pointer passed outlives the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for (fd, flags) in [
                (0, libc::O_RDONLY),
                (1, libc::O_WRONLY),
                (2, libc::O_WRONLY),
            ] {
                check(libc::posix_spawn_file_actions_addopen(
                    &mut actions,
                    fd,
                    dev_null.as_ptr(),
                    flags,
                    0,
                ))?;
            }
            for &(from, to) in fds {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    from,
                    to,
                ))?;
            }
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &mask))?;
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut defaults);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                libc::POSIX_SPAWN_SETSID
                    | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                    | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result
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
    use std::process::Stdio;

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
        assert_eq!(exit_result(&back), ExitResult::signaled(9));
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
