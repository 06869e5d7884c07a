//! What the process-running drivers (`raw_exec`, `container`) share: the table of
//! their tasks' main processes with each one's exit watch, and wait, stop, destroy and
//! stats over a task's process group and cgroup.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::watch;

use super::{
    proc_start_ticks, wait_exit, DriverError, ExitResult, StartRequest, TaskHandle, TaskStats,
};
use crate::cgroups::janitor::Janitor;
use crate::cgroups::{CgroupError, CgroupManager, CgroupPaths};
use crate::logrotate;
use crate::shim::supervisor::{self, ShimLauncher, SupervisorState};
use crate::shim::{self, ShimSpec};

/// How long to wait for the main process to go after SIGKILL before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long an exit waits for the task's last output to reach the log files.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// A running (or exited, not yet destroyed) task's main process.
pub(crate) struct Running {
    /// Also its process group id.
    pub pid: i32,
    pub exit: watch::Receiver<Option<ExitResult>>,
}

impl Running {
    fn alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Waits for the main process to exit, up to `limit`. True when it did.
    async fn exited_within(&self, limit: Duration) -> bool {
        let mut rx = self.exit.clone();
        let outcome = tokio::time::timeout(limit, rx.wait_for(|v| v.is_some())).await;
        matches!(outcome, Ok(Ok(_)))
    }
}

/// Where `stop` sends the task's kill signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopTarget {
    /// The main process's whole process group (`raw_exec`).
    Group,
    /// The main process only, which passes it on (the container helper).
    Main,
}

/// One driver's task processes.
pub(crate) struct Procs {
    driver: &'static str,
    cgroups: Option<Arc<dyn CgroupManager>>,
    /// Removes destroyed tasks' cgroups behind more urgent work.
    janitor: Janitor,
    /// Task id -> its process. A std mutex: never held across an await.
    tasks: Mutex<HashMap<String, Arc<Running>>>,
}

impl Procs {
    pub fn new(driver: &'static str, cgroups: Option<Arc<dyn CgroupManager>>) -> Self {
        Procs {
            driver,
            cgroups,
            janitor: Janitor::new(),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    fn running(&self, id: &str) -> Option<Arc<Running>> {
        self.tasks
            .lock()
            .expect("task table poisoned")
            .get(id)
            .cloned()
    }

    /// The cgroup's OOM-kill counter now (0 without cgroups).
    pub fn oom_kills(&self, cg: Option<&CgroupPaths>) -> u64 {
        match (&self.cgroups, cg) {
            (Some(m), Some(cg)) => m.oom_kills(cg).unwrap_or(0),
            _ => 0,
        }
    }

    /// Records task `id` whose main process (also its process group) is `pid` and
    /// publishes the result of `exit` (with the OOM verdict) once `output` is done.
    pub fn track_exit(
        &self,
        id: &str,
        pid: i32,
        exit: futures::future::BoxFuture<'static, ExitResult>,
        cgroup: Option<CgroupPaths>,
        oom_baseline: u64,
        output: Vec<tokio::task::JoinHandle<()>>,
    ) {
        let (tx, rx) = watch::channel(None);
        let cgroups = self.cgroups.clone();
        tokio::spawn(async move {
            let result = exit.await;
            let result = with_oom(result, cgroups.as_deref(), cgroup.as_ref(), oom_baseline);
            // The exit is reported once its last output is in the log files (readers stop
            // following at the exit), unless a process left in the background still
            // holds the pipes open.
            for done in output {
                let _ = tokio::time::timeout(OUTPUT_DRAIN, done).await;
            }
            // No receiver left only means nobody waits any more.
            let _ = tx.send(Some(result));
        });
        self.tasks
            .lock()
            .expect("task table poisoned")
            .insert(id.to_string(), Arc::new(Running { pid, exit: rx }));
    }

    /// Starts `spec` through the task shim with its output in FIFOs copied into the
    /// task's logs, tracks it, and returns the command's pid and the state a later
    /// client needs to find it again.
    pub async fn start_supervised(
        &self,
        launcher: &ShimLauncher,
        req: &StartRequest,
        mut spec: ShimSpec,
    ) -> Result<(i32, SupervisorState), DriverError> {
        let log_err = |path: &std::path::Path| {
            let (task, path) = (req.id.clone(), path.to_path_buf());
            move |source| DriverError::LogFile { task, path, source }
        };
        let (stdout_fifo, stderr_fifo, exit_file) = supervisor::task_files(&req.task_dir)
            .map_err(log_err(&crate::allocdir::control_dir(&req.task_dir)))?;
        shim::reserve_exit_file(&exit_file).map_err(log_err(&exit_file))?;
        let stdout = logrotate::capture_fifo(&stdout_fifo, &req.stdout_path, req.logs)
            .map_err(log_err(&stdout_fifo))?;
        let stderr = logrotate::capture_fifo(&stderr_fifo, &req.stderr_path, req.logs)
            .map_err(log_err(&stderr_fifo))?;
        let oom_baseline = self.oom_kills(req.cgroup.as_ref());
        spec.exit_file = exit_file.clone();
        let spawned = supervisor::spawn(launcher, &spec, stdout.child_end, stderr.child_end)
            .await
            .map_err(|source| DriverError::Start {
                task: req.id.clone(),
                command: spec.command.clone(),
                source,
            })?;
        let state = SupervisorState {
            shim_pid: spawned.shim_pid,
            shim_start_ticks: proc_start_ticks(spawned.shim_pid),
            exit_file: exit_file.clone(),
            stdout_fifo,
            stderr_fifo,
            stdout_path: req.stdout_path.clone(),
            stderr_path: req.stderr_path.clone(),
            logs: req.logs,
            oom_baseline,
        };
        let child = spawned.shim;
        let task_id = req.id.clone();
        let exit = async move {
            let waited = child.wait().await;
            supervisor::recorded_exit(&task_id, &exit_file, waited)
        };
        self.track_exit(
            &req.id,
            spawned.task_pid,
            Box::pin(exit),
            req.cgroup.clone(),
            oom_baseline,
            vec![stdout.done, stderr.done],
        );
        Ok((spawned.task_pid, state))
    }

    /// Finds a supervised task of an earlier client run again: copies its output
    /// again and watches its shim when it still runs; publishes the exit its shim
    /// recorded when it ended meanwhile; `Lost` when neither (say the host rebooted).
    pub async fn recover_supervised(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        let lost = |reason: String| DriverError::Lost {
            task: handle.id.clone(),
            reason,
        };
        let sup = SupervisorState::from_driver_state(&handle.driver_state)
            .ok_or_else(|| lost("its handle records no task shim".to_string()))?;
        let pid = handle
            .pid
            .ok_or_else(|| lost("its handle records no pid".to_string()))?;
        let output = |sup: &SupervisorState| -> Vec<tokio::task::JoinHandle<()>> {
            let mut out = Vec::new();
            for (fifo, first) in [
                (&sup.stdout_fifo, &sup.stdout_path),
                (&sup.stderr_fifo, &sup.stderr_path),
            ] {
                match logrotate::reattach_fifo(fifo, first, sup.logs) {
                    Ok(j) => out.push(j),
                    Err(e) => {
                        tracing::warn!(task = %handle.id, fifo = %fifo.display(), error = %e, "re-opening task output")
                    }
                }
            }
            out
        };
        if sup.shim_alive() {
            let out = output(&sup);
            let (task_id, exit_file) = (handle.id.clone(), sup.exit_file.clone());
            let (shim_pid, ticks) = (sup.shim_pid, sup.shim_start_ticks);
            let exit = async move {
                let waited = supervisor::wait_pid_exit(shim_pid, ticks).await;
                supervisor::recorded_exit(&task_id, &exit_file, waited)
            };
            self.track_exit(
                &handle.id,
                pid,
                Box::pin(exit),
                handle.cgroup.clone(),
                sup.oom_baseline,
                out,
            );
            return Ok(());
        }
        if let Some(record) = supervisor::read_exit_file(&sup.exit_file) {
            let result = supervisor::exit_result(&record);
            self.track_exit(
                &handle.id,
                pid,
                Box::pin(async move { result }),
                handle.cgroup.clone(),
                sup.oom_baseline,
                Vec::new(),
            );
            return Ok(());
        }
        // An orphan without its shim is unsupervised: it goes.
        if handle.pid_start_ticks.is_some() && proc_start_ticks(pid) == handle.pid_start_ticks {
            let _ = signal_group(&handle.id, pid, Signal::SIGKILL);
        }
        Err(lost(
            "neither its task shim nor an exit record is left (the host restarted?)".to_string(),
        ))
    }

    pub async fn wait(&self, handle: &TaskHandle) -> Result<ExitResult, DriverError> {
        let rx = self.running(&handle.id).map(|r| r.exit.clone());
        wait_exit(rx, &handle.id, self.driver).await
    }

    /// Sends `signal`, waits up to `timeout`, then kills whatever is left.
    pub async fn stop(
        &self,
        handle: &TaskHandle,
        signal: Signal,
        timeout: Duration,
        target: StopTarget,
    ) -> Result<(), DriverError> {
        let Some(running) = self.running(&handle.id) else {
            return Ok(());
        };
        if running.alive() {
            match target {
                StopTarget::Group => signal_group(&handle.id, running.pid, signal)?,
                StopTarget::Main => signal_process(&handle.id, running.pid, signal)?,
            }
            if !running.exited_within(timeout).await {
                tracing::info!(task = %handle.id, ?timeout, "task ignored {signal}; killing it");
            }
        }
        // Whatever the main process left behind goes too.
        self.kill_everything(handle, Some(&running)).await?;
        running.exited_within(KILL_WAIT).await;
        Ok(())
    }

    /// Kills everything of the task, removes its cgroup and forgets it.
    pub async fn destroy(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        let running = self.running(&handle.id);
        self.kill_everything(handle, running.as_deref()).await?;
        if let Some(r) = &running {
            r.exited_within(KILL_WAIT).await;
        }
        if let (Some(m), Some(cg)) = (&self.cgroups, &handle.cgroup) {
            self.janitor
                .remove(m.clone(), cg.clone())
                .await
                .map_err(|source| DriverError::Cgroup {
                    task: handle.id.clone(),
                    source,
                })?;
        }
        self.tasks
            .lock()
            .expect("task table poisoned")
            .remove(&handle.id);
        Ok(())
    }

    /// SIGKILLs the process group while its leader is alive (after that the pid may
    /// be reused) and the whole cgroup when there is one (which also catches processes
    /// that left the group with `setsid`).
    async fn kill_everything(
        &self,
        handle: &TaskHandle,
        running: Option<&Running>,
    ) -> Result<(), DriverError> {
        if let Some(r) = running.filter(|r| r.alive()) {
            signal_group(&handle.id, r.pid, Signal::SIGKILL)?;
        }
        if let (Some(m), Some(cg)) = (&self.cgroups, &handle.cgroup) {
            let (m, cg) = (m.clone(), cg.clone());
            blocking(&handle.id, "cgroup kill", move || m.kill_all(&cg)).await?;
        }
        Ok(())
    }

    pub async fn stats(&self, handle: &TaskHandle) -> Result<TaskStats, DriverError> {
        let cg_err = |source| DriverError::Cgroup {
            task: handle.id.clone(),
            source,
        };
        match (&self.cgroups, &handle.cgroup) {
            (Some(m), Some(cg)) => Ok(TaskStats {
                memory: Some(m.memory_usage(cg).map_err(cg_err)?),
                cpu_ns: m.cpu_usage_ns(cg).ok(),
                pids: m.pids(cg).map_err(cg_err)?.len(),
            }),
            _ => Ok(TaskStats {
                memory: None,
                cpu_ns: None,
                pids: usize::from(self.running(&handle.id).map(|r| r.alive()).unwrap_or(false)),
            }),
        }
    }
}

/// Runs a blocking cgroup operation off the runtime.
async fn blocking(
    task: &str,
    what: &str,
    f: impl FnOnce() -> Result<(), CgroupError> + Send + 'static,
) -> Result<(), DriverError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DriverError::Injected {
            task: task.to_string(),
            message: format!("{what} task panicked: {e}"),
        })?
        .map_err(|source| DriverError::Cgroup {
            task: task.to_string(),
            source,
        })
}

/// A supervised task's exit once its supervisor (`what`) ended: the exit it recorded,
/// else (the supervisor itself was killed, with the cgroup say) the supervisor's own.
pub(crate) fn supervised_exit(
    task_id: &str,
    exit_file: &std::path::Path,
    status: std::io::Result<std::process::ExitStatus>,
    what: &str,
) -> ExitResult {
    match supervisor::read_exit_file(exit_file) {
        Some(record) => supervisor::exit_result(&record),
        None => match status {
            Ok(status) => classify(status),
            Err(e) => {
                tracing::error!(task = %task_id, error = %e, "waiting for the {what}");
                ExitResult::code(-1)
            }
        },
    }
}

pub(crate) fn classify(status: std::process::ExitStatus) -> ExitResult {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitResult::code(code),
        (None, Some(sig)) => ExitResult::signaled(sig),
        (None, None) => ExitResult::code(-1),
    }
}

fn with_oom(
    mut result: ExitResult,
    cgroups: Option<&dyn CgroupManager>,
    cg: Option<&CgroupPaths>,
    baseline: u64,
) -> ExitResult {
    if let (Some(m), Some(cg)) = (cgroups, cg) {
        match m.oom_kills(cg) {
            Ok(n) => result.oom_killed = n > baseline,
            Err(e) => tracing::warn!(cgroup = %cg.name, error = %e, "reading the OOM counter"),
        }
    }
    result
}

pub(crate) fn signal_group(task: &str, pgid: i32, signal: Signal) -> Result<(), DriverError> {
    match nix::sys::signal::killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(DriverError::Signal {
            task: task.to_string(),
            signal,
            pgid,
            source,
        }),
    }
}

fn signal_process(task: &str, pid: i32, signal: Signal) -> Result<(), DriverError> {
    match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(DriverError::Signal {
            task: task.to_string(),
            signal,
            pgid: pid,
            source,
        }),
    }
}

/// The `cgroup.procs` files of a task's cgroup, as C strings for a forked child.
pub(crate) fn cgroup_procs(
    cg: Option<&crate::cgroups::CgroupPaths>,
) -> std::io::Result<Vec<CString>> {
    match cg {
        Some(cg) => cg
            .procs_files()
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| std::io::Error::other("cgroup path contains a NUL byte")),
        None => Ok(Vec::new()),
    }
}

/// Gives an exec's command its stdio: with `tty` a new terminal on all three (the
/// controlling side returned), else three pipes.
pub(crate) fn exec_stdio(
    cmd: &mut tokio::process::Command,
    tty: bool,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::process::Stdio;
    if !tty {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        return Ok(None);
    }
    let pair = nix::pty::openpty(None, None)?;
    cmd.stdin(Stdio::from(pair.slave.try_clone()?))
        .stdout(Stdio::from(pair.slave.try_clone()?))
        .stderr(Stdio::from(pair.slave));
    Ok(Some(pair.master))
}

/// Runs in the child: moves the calling process into a cgroup by writing "0" to its
/// `cgroup.procs` (the kernel reads 0 as "the writer").
pub(crate) fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path prepared before the fork.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// Gives the task dir (and its `local/` and `tmp/`) to the task's user, as its files
/// will be; the directory that could not be changed, with why. The task owns its dir,
/// so on a restart `local` or `tmp` may be a symlink it left (to `/root`, say): each
/// is opened without following symlinks and changed through its descriptor, and a
/// symlink in its place is replaced by a fresh directory. The task dir's own parent is
/// the client's, so the task cannot swap the dir itself.
pub(crate) fn give_task_dirs(
    task_dir: &std::path::Path,
    uid: u32,
    gid: u32,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let open_dir = |d: &std::path::Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(d)
    };
    let dir = open_dir(task_dir).map_err(|e| (task_dir.to_path_buf(), e))?;
    std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
        .map_err(|e| (task_dir.to_path_buf(), e))?;
    for name in ["local", "tmp"] {
        let d = task_dir.join(name);
        let opened = match open_dir(&d) {
            Ok(f) => Ok(f),
            // ELOOP: a symlink; ENOTDIR: something else the task put there.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                tracing::warn!(path = %d.display(), "replacing what the task left in place of its directory");
                std::fs::remove_file(&d)
                    .and_then(|()| std::fs::DirBuilder::new().mode(0o755).create(&d))
                    .and_then(|()| open_dir(&d))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&d)
                .and_then(|()| open_dir(&d)),
            Err(e) => Err(e),
        };
        let f = opened.map_err(|e| (d.clone(), e))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| (d, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_the_task_left_for_its_dirs_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("t");
        std::fs::create_dir(&task).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, task.join("local")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), task.join("tmp")).unwrap();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        give_task_dirs(&task, uid, gid).unwrap();
        for name in ["local", "tmp"] {
            let m = std::fs::symlink_metadata(task.join(name)).unwrap();
            assert!(m.is_dir() && !m.file_type().is_symlink(), "{name}");
        }
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "x");
        assert!(std::fs::read_dir(task.join("local"))
            .unwrap()
            .next()
            .is_none());
    }
}
