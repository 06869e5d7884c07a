//! The client's side: starting shims through the launcher (`ShimLauncher`, `spawn`),
//! reading their reports and exit files, and finding them again after a client
//! restart (`SupervisorState`, `wait_pid_exit`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use orch_common::model::LogConfig;

use super::protocol::{
    recv_with_fds, send_with_fds, ExitRecord, ShimSpec, EXIT_FILE, LAUNCHER_ENV, LAUNCHER_FD,
    MAX_REPORT_BYTES, MAX_SPEC_BYTES,
};
use crate::driver::{proc_start_ticks, process_alive, ExitResult};

/// The exit an `ExitRecord` describes.
pub fn exit_result(record: &ExitRecord) -> ExitResult {
    match record.signal {
        Some(s) => ExitResult::signaled(s),
        None => ExitResult::code(record.exit_code),
    }
}

/// How the client starts the shim launcher: `orch-task-shim`, else this very binary
/// (`orch task-shim`), unless a test points it elsewhere.
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

/// The FIFO paths and exit file of the task of `task_dir`, in its control directory
/// (`crate::allocdir::control_dir`, made here: root's, 0700). Never in the task dir,
/// which the task owns: there it could put a symlink in their place, and the client
/// (root) would write through it.
pub fn task_files(task_dir: &Path) -> std::io::Result<(PathBuf, PathBuf, PathBuf)> {
    let dir = crate::allocdir::control_dir(task_dir);
    crate::allocdir::make_private_dir(&dir)?;
    Ok((
        dir.join("stdout.fifo"),
        dir.join("stderr.fifo"),
        dir.join(EXIT_FILE),
    ))
}

/// The exit the shim recorded, if it did (a reserved file still blank has none).
pub fn read_exit_file(path: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The task's exit once its shim has ended (`waited`): the exit the shim recorded. A
/// shim leaves none only when it was killed itself, which in practice is with its
/// task's cgroup (a stop that had to SIGKILL, the OOM killer), so the task is
/// reported killed.
pub fn recorded_exit(task_id: &str, exit_file: &Path, waited: std::io::Result<()>) -> ExitResult {
    if let Err(e) = waited {
        tracing::error!(task = %task_id, error = %e, "watching the task shim");
    }
    match read_exit_file(exit_file) {
        Some(record) => exit_result(&record),
        None => {
            tracing::warn!(task = %task_id, "the task shim ended without recording the exit; reporting the task killed");
            ExitResult::signaled(libc::SIGKILL)
        }
    }
}

/// A started shim and the command's pid.
pub struct Spawned {
    pub shim: ShimChild,
    pub shim_pid: i32,
    pub task_pid: i32,
}

/// A running shim, held by its pidfd (the launcher is its parent, not the client).
pub struct ShimChild {
    pidfd: OwnedFd,
}

impl ShimChild {
    /// Waits until the shim exits.
    pub async fn wait(self) -> std::io::Result<()> {
        let _ready = watch_readable(self.pidfd)?.readable().await?;
        Ok(())
    }
}

/// The client's shim launcher: started on first use, and again when it has gone.
pub struct ShimLauncher {
    command: ShimCommand,
    /// A std mutex: held for one short send, never across an await.
    conn: Mutex<Option<LauncherConn>>,
}

struct LauncherConn {
    sock: UnixStream,
    pid: i32,
}

impl ShimLauncher {
    pub fn new(command: ShimCommand) -> Self {
        ShimLauncher {
            command,
            conn: Mutex::new(None),
        }
    }

    /// Sends one request (the spec's JSON, length first, with `fds`); starts the
    /// launcher when none runs, and once more when the one running has gone. Returns
    /// the pid of the launcher that took it.
    fn request(&self, spec_json: &[u8], fds: &[RawFd]) -> std::io::Result<i32> {
        let len = u32::try_from(spec_json.len())
            .ok()
            .filter(|n| (*n as usize) <= MAX_SPEC_BYTES)
            .ok_or_else(|| std::io::Error::other("the task spec is too large for the task shim"))?;
        let mut msg = Vec::with_capacity(4 + spec_json.len());
        msg.extend_from_slice(&len.to_le_bytes());
        msg.extend_from_slice(spec_json);
        let mut conn = self.conn.lock().expect("shim launcher poisoned");
        for attempt in 0..2 {
            let c = match conn.take() {
                Some(c) => c,
                None => self.start()?,
            };
            match send_with_fds(c.sock.as_raw_fd(), &msg, fds) {
                Ok(()) => {
                    let pid = c.pid;
                    *conn = Some(c);
                    return Ok(pid);
                }
                Err(e) if attempt == 0 && gone(&e) => {
                    tracing::warn!(pid = c.pid, error = %e, "the task shim launcher has gone; starting it again");
                    reap(c.pid);
                }
                Err(e) => {
                    reap(c.pid);
                    return Err(e);
                }
            }
        }
        Err(std::io::Error::other(
            "the task shim launcher went away twice",
        ))
    }

    /// Whether launcher `pid` has died (it is then forgotten, and collected). A
    /// launcher that dies with requests unread closes their report sockets; its exit
    /// can trail that close by a moment, hence the short wait.
    async fn died(&self, pid: i32) -> bool {
        for _ in 0..20 {
            if reap(pid) {
                let mut conn = self.conn.lock().expect("shim launcher poisoned");
                if conn.as_ref().is_some_and(|c| c.pid == pid) {
                    *conn = None;
                }
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        false
    }

    /// The running launcher's pid, if one runs.
    #[cfg(test)]
    pub(crate) fn pid(&self) -> Option<i32> {
        self.conn
            .lock()
            .expect("shim launcher poisoned")
            .as_ref()
            .map(|c| c.pid)
    }

    /// Starts a launcher with its end of a new socket on fd 3, in a new session.
    fn start(&self) -> std::io::Result<LauncherConn> {
        let (mine, theirs) = UnixStream::pair()?;
        // Moved to fd 3 in the child from above fd 10, so no dup2 overwrites another.
        let raw = nix::fcntl::fcntl(theirs.as_raw_fd(), nix::fcntl::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: fcntl just returned this new fd, owned by nobody else.
        let theirs = unsafe { OwnedFd::from_raw_fd(raw) };
        let cstr = |s: &[u8]| CString::new(s).map_err(std::io::Error::other);
        let program = cstr(self.command.program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for a in &self.command.args {
            argv.push(cstr(a.as_bytes())?);
        }
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k != LAUNCHER_ENV {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                envp.push(cstr(&kv)?);
            }
        }
        envp.push(cstr(format!("{LAUNCHER_ENV}=1").as_bytes())?);
        let pid = posix_spawn(&program, &argv, &envp, &[(theirs.as_raw_fd(), LAUNCHER_FD)])?;
        tracing::debug!(pid, program = %self.command.program.display(), "started the task shim launcher");
        Ok(LauncherConn { sock: mine, pid })
    }
}

/// Whether a send failed because the launcher is gone.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN)
    )
}

/// Collects an ended launcher (the client's child) without waiting for a live one;
/// true when it has ended (collected now or before).
fn reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on our own child, without blocking.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == pid || (r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Starts a shim for `spec` through `launcher`, with the task's stdout/stderr FIFO
/// ends; the shim moves itself into the cgroups of `spec.cgroup_procs` and runs the
/// command in `spec.cwd`. Returns once the command runs (or why it could not start).
pub async fn spawn(
    launcher: &ShimLauncher,
    spec: &ShimSpec,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> std::io::Result<Spawned> {
    let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    let mut attempt = 0;
    let (text, pidfd) = loop {
        attempt += 1;
        let (mine, theirs) = seqpacket_pair()?;
        let took = launcher.request(
            &json,
            &[theirs.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
        )?;
        drop(theirs);
        let (text, mut fds) = read_report(mine).await?;
        // No word at all: the launcher died with the request unread (nothing ran), or
        // the shim died before it could report.
        if text.is_empty() && attempt == 1 && launcher.died(took).await {
            tracing::warn!(
                pid = took,
                "the task shim launcher died before taking a task; starting it again"
            );
            continue;
        }
        break (text, fds.pop());
    };
    drop((stdout, stderr));
    let mut words = text.split_whitespace();
    let parsed = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("pid"), Some(task), Some("shim"), Some(shim)) => {
            task.parse().ok().zip(shim.parse().ok())
        }
        _ => None,
    };
    match (parsed, pidfd) {
        (Some((task_pid, shim_pid)), Some(pidfd)) => Ok(Spawned {
            shim: ShimChild { pidfd },
            shim_pid,
            task_pid,
        }),
        _ => {
            let why = text.strip_prefix("error ").unwrap_or(&text);
            Err(if why.is_empty() {
                std::io::Error::other("the task shim exited without starting the command")
            } else {
                std::io::Error::other(why.to_string())
            })
        }
    }
}

/// The shim's one report message (trimmed; empty when the socket closed without one)
/// and the fds that came with it.
async fn read_report(sock: OwnedFd) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let report = watch_readable(sock)?;
    let mut buf = vec![0u8; MAX_REPORT_BYTES];
    let (n, fds) = loop {
        let mut guard = report.readable().await?;
        match guard.try_io(|fd| recv_with_fds(fd.as_raw_fd(), &mut buf, 1)) {
            Ok(result) => break result?,
            Err(_would_block) => continue,
        }
    };
    Ok((String::from_utf8_lossy(&buf[..n]).trim().to_string(), fds))
}

/// A connected pair of non-blocking, close-on-exec unix seqpacket sockets: the shim's
/// report is one message.
fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new fds into `fds` or fails.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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
    let _ready = watch_readable(fd)?.readable().await?;
    Ok(())
}

/// `fd` registered with the runtime for readability (a pidfd: the process exited).
fn watch_readable(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and the same for as long as the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Stdio;

    /// Not a test: the task shim when a driver under test runs this binary as its
    /// shim (a libtest binary has no other entry point).
    #[test]
    fn task_shim_entry() {
        if std::env::var_os(LAUNCHER_ENV).is_some() {
            std::process::exit(crate::shim::launcher::launch_loop());
        }
    }

    /// This test binary as the shim.
    pub(crate) fn test_shim() -> ShimCommand {
        ShimCommand {
            program: std::env::current_exe().unwrap(),
            args: [
                "--exact",
                "shim::supervisor::tests::task_shim_entry",
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
