//! The `raw_exec` driver: runs `config.command` with `config.args` as a host process,
//! in its own process group, inside the task's cgroup from before `exec` (the child
//! writes itself into the cgroup's `cgroup.procs` files in `pre_exec`), with stdout and
//! stderr appended to the task's log files, as the task's `user` when set (else the
//! agent's own user, like Nomad).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use orch_common::structs::DriverInfo;
use tokio::sync::watch;

use super::{
    proc_start_ticks, wait_exit, Driver, DriverError, ExitResult, StartRequest, TaskHandle,
    TaskStats,
};
use crate::cgroups::{CgroupManager, CgroupPaths};

const NAME: &str = "raw_exec";
/// How long to wait for the main process to go after SIGKILL before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A running (or exited, not yet destroyed) task.
struct Running {
    pid: i32,
    exit: watch::Receiver<Option<ExitResult>>,
}

/// Runs tasks as plain host processes.
pub struct RawExecDriver {
    cgroups: Option<Arc<dyn CgroupManager>>,
    /// Task id -> its process. A std mutex: never held across an await.
    tasks: Mutex<HashMap<String, Arc<Running>>>,
}

impl RawExecDriver {
    /// `cgroups` reads OOM counters and kills task cgroups; `None` only on hosts where
    /// the client has no cgroup access (limits are then not enforced, and said so).
    pub fn new(cgroups: Option<Arc<dyn CgroupManager>>) -> Self {
        RawExecDriver {
            cgroups,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self, id: &str) -> Option<Arc<Running>> {
        self.tasks
            .lock()
            .expect("raw_exec task table poisoned")
            .get(id)
            .cloned()
    }

    async fn start_task(&self, req: StartRequest) -> Result<TaskHandle, DriverError> {
        let cmd_cfg = CommandConfig::from_config(&req)?;
        let ids = match &req.user {
            Some(user) => Some(resolve_user(&req.id, user)?),
            None => None,
        };
        if let Some(ids) = &ids {
            // The task's own directories belong to its user, as its files will.
            for d in [
                req.task_dir.clone(),
                req.task_dir.join("local"),
                req.task_dir.join("tmp"),
            ] {
                match std::os::unix::fs::chown(&d, Some(ids.uid), Some(ids.gid)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(DriverError::User {
                            task: req.id.clone(),
                            user: req.user.clone().unwrap_or_default(),
                            reason: format!("giving it {}: {source}", d.display()),
                        })
                    }
                }
            }
        }
        let stdout = open_log(&req, &req.stdout_path)?;
        let stderr = open_log(&req, &req.stderr_path)?;

        let procs: Vec<CString> = match &req.cgroup {
            Some(cg) => cg
                .procs_files()
                .iter()
                .map(|p| CString::new(p.as_os_str().as_bytes()))
                .collect::<Result<_, _>>()
                .map_err(|_| DriverError::InvalidConfig {
                    task: req.id.clone(),
                    reason: "cgroup path contains a NUL byte".to_string(),
                })?,
            None => Vec::new(),
        };
        let oom_baseline = self.oom_kills(req.cgroup.as_ref());

        let mut cmd = tokio::process::Command::new(&cmd_cfg.command);
        cmd.args(&cmd_cfg.args)
            .envs(&req.env)
            .current_dir(&req.task_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe syscalls (open, write, close, setgroups, setgid, setuid) on
        // data prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for path in &procs {
                    join_cgroup(path)?;
                }
                if let Some(ids) = &ids {
                    ids.switch()?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| DriverError::Start {
            task: req.id.clone(),
            command: cmd_cfg.command.clone(),
            source,
        })?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| DriverError::Start {
                task: req.id.clone(),
                command: cmd_cfg.command.clone(),
                source: std::io::Error::other("process exited before its pid was read"),
            })?;
        let start_ticks = proc_start_ticks(pid);

        let (tx, rx) = watch::channel(None);
        let cgroups = self.cgroups.clone();
        let cgroup = req.cgroup.clone();
        let task_id = req.id.clone();
        tokio::spawn(async move {
            let result = match child.wait().await {
                Ok(status) => classify(status),
                Err(e) => {
                    tracing::error!(task = %task_id, error = %e, "waiting for task process");
                    ExitResult::code(-1)
                }
            };
            let result = with_oom(result, cgroups.as_deref(), cgroup.as_ref(), oom_baseline);
            // No receiver left only means nobody waits any more.
            let _ = tx.send(Some(result));
        });
        self.tasks
            .lock()
            .expect("raw_exec task table poisoned")
            .insert(req.id.clone(), Arc::new(Running { pid, exit: rx }));

        Ok(TaskHandle {
            id: req.id,
            alloc_id: req.alloc_id,
            task_name: req.task_name,
            driver: NAME.to_string(),
            pid: Some(pid),
            pid_start_ticks: start_ticks,
            started_at: orch_common::ids::now_ms(),
            cgroup: req.cgroup,
            driver_state: serde_json::json!({ "command": cmd_cfg.command }),
        })
    }

    fn oom_kills(&self, cg: Option<&CgroupPaths>) -> u64 {
        match (&self.cgroups, cg) {
            (Some(m), Some(cg)) => m.oom_kills(cg).unwrap_or(0),
            _ => 0,
        }
    }

    /// Waits for the main process to exit, up to `limit`. True when it did.
    async fn wait_exit(running: &Running, limit: Duration) -> bool {
        let mut rx = running.exit.clone();
        let outcome = tokio::time::timeout(limit, rx.wait_for(|v| v.is_some())).await;
        matches!(outcome, Ok(Ok(_)))
    }

    /// SIGKILLs everything of the task: the whole cgroup, or the process group when
    /// there is no cgroup.
    async fn kill_everything(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        match (&self.cgroups, &handle.cgroup) {
            (Some(m), Some(cg)) => {
                let (m, cg) = (m.clone(), cg.clone());
                let task = handle.id.clone();
                tokio::task::spawn_blocking(move || m.kill_all(&cg))
                    .await
                    .map_err(|e| DriverError::Injected {
                        task: task.clone(),
                        message: format!("cgroup kill task panicked: {e}"),
                    })?
                    .map_err(|source| DriverError::Cgroup { task, source })
            }
            _ => {
                if let Some(pid) = handle.pid {
                    signal_group(&handle.id, pid, Signal::SIGKILL)?;
                }
                Ok(())
            }
        }
    }
}

impl Driver for RawExecDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fingerprint(&self) -> DriverInfo {
        DriverInfo {
            detected: true,
            healthy: true,
            description: if self.cgroups.is_some() {
                "host processes in their own cgroup".to_string()
            } else {
                "host processes (no cgroup access: limits not enforced)".to_string()
            },
        }
    }

    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<TaskHandle, DriverError>> {
        self.start_task(req).boxed()
    }

    fn wait<'a>(
        &'a self,
        handle: &'a TaskHandle,
    ) -> BoxFuture<'a, Result<ExitResult, DriverError>> {
        async move {
            let rx = self.running(&handle.id).map(|r| r.exit.clone());
            wait_exit(rx, &handle.id, NAME).await
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let Some(running) = self.running(&handle.id) else {
                return Ok(());
            };
            if running.exit.borrow().is_none() {
                signal_group(&handle.id, running.pid, signal)?;
                if !Self::wait_exit(&running, timeout).await {
                    tracing::info!(task = %handle.id, ?timeout, "task ignored {signal}; killing it");
                }
            }
            // Whatever the main process left behind goes too.
            self.kill_everything(handle).await?;
            Self::wait_exit(&running, KILL_WAIT).await;
            Ok(())
        }
        .boxed()
    }

    fn destroy<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let running = self.running(&handle.id);
            let alive = running
                .as_ref()
                .map(|r| r.exit.borrow().is_none())
                .unwrap_or(false);
            if alive || handle.cgroup.is_some() {
                self.kill_everything(handle).await?;
            }
            if let Some(r) = &running {
                Self::wait_exit(r, KILL_WAIT).await;
            }
            if let (Some(m), Some(cg)) = (&self.cgroups, &handle.cgroup) {
                let (m, cg) = (m.clone(), cg.clone());
                let task = handle.id.clone();
                tokio::task::spawn_blocking(move || m.remove(&cg))
                    .await
                    .map_err(|e| DriverError::Injected {
                        task: task.clone(),
                        message: format!("cgroup remove task panicked: {e}"),
                    })?
                    .map_err(|source| DriverError::Cgroup { task, source })?;
            }
            self.tasks
                .lock()
                .expect("raw_exec task table poisoned")
                .remove(&handle.id);
            Ok(())
        }
        .boxed()
    }

    fn recover<'a>(&'a self, _handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            Err(DriverError::Unsupported {
                driver: NAME,
                what: "re-attaching to a task of an earlier client run",
            })
        }
        .boxed()
    }

    fn stats<'a>(
        &'a self,
        handle: &'a TaskHandle,
    ) -> BoxFuture<'a, Result<TaskStats, DriverError>> {
        async move {
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
                    pids: usize::from(
                        self.running(&handle.id)
                            .map(|r| r.exit.borrow().is_none())
                            .unwrap_or(false),
                    ),
                }),
            }
        }
        .boxed()
    }
}

/// `config = { command = "...", args = [...] }`.
struct CommandConfig {
    command: String,
    args: Vec<String>,
}

impl CommandConfig {
    fn from_config(req: &StartRequest) -> Result<Self, DriverError> {
        let bad = |reason: String| DriverError::InvalidConfig {
            task: req.id.clone(),
            reason,
        };
        if let Some(k) = req
            .config
            .keys()
            .find(|k| !["command", "args"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown key {k:?} (raw_exec takes \"command\" and \"args\")"
            )));
        }
        let command = match req.config.get("command") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(bad("\"command\" must be a non-empty string".to_string())),
            None => return Err(bad("\"command\" is required".to_string())),
        };
        let args = match req.config.get("args") {
            None => Vec::new(),
            // Numbers and booleans are passed as their text (`args = ["-p", 8080]`).
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(_) => return Err(bad("\"args\" must be an array of strings".to_string())),
        };
        Ok(CommandConfig { command, args })
    }
}

fn open_log(req: &StartRequest, path: &std::path::Path) -> Result<std::fs::File, DriverError> {
    let err = |source| DriverError::LogFile {
        task: req.id.clone(),
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)
}

/// The ids to switch to before exec, resolved in the parent (the lookup allocates and
/// reads files, which the forked child must not do).
struct UserIds {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl UserIds {
    /// Runs in the child: async-signal-safe syscalls only.
    fn switch(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on owned, initialised data.
        unsafe {
            if libc::setgroups(self.groups.len() as _, self.groups.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgid(self.gid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setuid(self.uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn resolve_user(task: &str, name: &str) -> Result<UserIds, DriverError> {
    let err = |reason: String| DriverError::User {
        task: task.to_string(),
        user: name.to_string(),
        reason,
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| err(format!("looking it up: {e}")))?
        .ok_or_else(|| err("no such user".to_string()))?;
    let cname = CString::new(name).map_err(|_| err("contains a NUL byte".to_string()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(|e| err(format!("reading its groups: {e}")))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(UserIds {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    })
}

/// Runs in the child: moves the calling process into a cgroup by writing "0" to its
/// `cgroup.procs` (the kernel reads 0 as "the writer").
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
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

fn classify(status: std::process::ExitStatus) -> ExitResult {
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

fn signal_group(task: &str, pgid: i32, signal: Signal) -> Result<(), DriverError> {
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

#[cfg(test)]
mod tests {
    use super::super::suite::{self, Harness};
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    pub(crate) struct RawExecHarness;

    fn sh(script: &str) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("command".to_string(), json!("/bin/sh")),
            ("args".to_string(), json!(["-c", script])),
        ])
    }

    impl Harness for RawExecHarness {
        fn driver(&self) -> Arc<dyn Driver> {
            Arc::new(RawExecDriver::new(None))
        }
        fn exits_with(&self, code: i32) -> BTreeMap<String, serde_json::Value> {
            sh(&format!("exit {code}"))
        }
        fn runs_until_stopped(&self) -> BTreeMap<String, serde_json::Value> {
            sh("exec sleep 300")
        }
        fn ignores_stop_signal(&self) -> BTreeMap<String, serde_json::Value> {
            sh("trap '' TERM; while true; do sleep 0.1; done")
        }
    }

    suite::driver_suite!(RawExecHarness);

    #[tokio::test]
    async fn echo_hi_writes_hi_to_the_stdout_file() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let h = d.start(t.request("echo", sh("echo hi"))).await.unwrap();
        assert!(d.wait(&h).await.unwrap().successful());
        assert_eq!(std::fs::read_to_string(&t.stdout).unwrap(), "hi\n");
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn stderr_goes_to_the_stderr_file_and_env_and_cwd_are_set() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let mut req = t.request("env", sh("echo $GREETING >&2; pwd"));
        req.env.insert("GREETING".into(), "hello".into());
        let h = d.start(req).await.unwrap();
        d.wait(&h).await.unwrap();
        assert_eq!(std::fs::read_to_string(&t.stderr).unwrap(), "hello\n");
        let cwd = std::fs::canonicalize(&t.task_dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(&t.stdout).unwrap().trim(),
            cwd.display().to_string()
        );
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn sigkill_is_classified_as_signal_9() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let h = d.start(t.request("kill", sh("kill -9 $$"))).await.unwrap();
        let r = d.wait(&h).await.unwrap();
        assert_eq!(r.signal, Some(9));
        assert!(!r.oom_killed);
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn the_task_runs_in_its_own_process_group() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let h = d
            .start(t.request("pg", sh("ps -o pgid= -p $$")))
            .await
            .unwrap();
        d.wait(&h).await.unwrap();
        let pgid: i32 = std::fs::read_to_string(&t.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(Some(pgid), h.pid);
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_command_is_an_invalid_config() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let err = d
            .start(t.request("bad", BTreeMap::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, DriverError::InvalidConfig { .. }), "{err}");
        assert!(!err.is_recoverable());
        let err = d
            .start(t.request(
                "typo",
                BTreeMap::from([
                    ("command".to_string(), json!("/bin/true")),
                    ("argz".to_string(), json!([])),
                ]),
            ))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("argz"), "{err}");
    }

    #[tokio::test]
    async fn a_command_that_does_not_exist_is_a_start_error() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let cfg = BTreeMap::from([("command".to_string(), json!("/no/such/binary"))]);
        let err = d.start(t.request("nobin", cfg)).await.unwrap_err();
        assert!(matches!(err, DriverError::Start { .. }), "{err}");
    }

    #[tokio::test]
    async fn runs_as_the_configured_user_as_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let mut req = t.request("user", sh("id -un; touch owned-by-me"));
        req.user = Some("nobody".into());
        // The task dir must be reachable by nobody: put it under a world-readable parent.
        let parent = tempfile::tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(
            parent.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        req.task_dir = parent.path().join("task");
        std::fs::create_dir(&req.task_dir).unwrap();
        let h = d.start(req).await.unwrap();
        assert!(d.wait(&h).await.unwrap().successful());
        assert_eq!(std::fs::read_to_string(&t.stdout).unwrap().trim(), "nobody");
        assert!(parent.path().join("task/owned-by-me").exists());
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_user_is_not_recoverable() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::new(None);
        let mut req = t.request("nouser", sh("true"));
        req.user = Some("no-such-user-orch".into());
        let err = d.start(req).await.unwrap_err();
        assert!(matches!(err, DriverError::User { .. }), "{err}");
        assert!(!err.is_recoverable());
    }

    /// Real cgroups (v1 on this machine) through the whole driver.
    mod cgroup {
        use super::*;
        use crate::cgroups::{self, CgroupLimits};
        use std::path::Path;

        struct CgGuard {
            m: Arc<dyn CgroupManager>,
            cg: CgroupPaths,
        }

        impl Drop for CgGuard {
            fn drop(&mut self) {
                let _ = self.m.kill_all(&self.cg);
                let _ = self.m.remove(&self.cg);
            }
        }

        fn setup(memory_mib: u64) -> Option<(Arc<dyn CgroupManager>, CgGuard)> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: cgroups need root");
                return None;
            }
            let m = match cgroups::detect_manager(
                Path::new("/proc/mounts"),
                Path::new("/sys/fs/cgroup"),
            ) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("skipped: {e}");
                    return None;
                }
            };
            let limits = CgroupLimits::basic(memory_mib, 100, 64);
            let name = format!("test-{}-task", uuid::Uuid::new_v4());
            let cg = m.create(&name, &limits).unwrap();
            Some((m.clone(), CgGuard { m, cg }))
        }

        #[tokio::test]
        async fn memory_hog_is_classified_oom_as_root() {
            let Some((m, g)) = setup(16) else { return };
            let t = suite::TaskDirs::new();
            let d = RawExecDriver::new(Some(m));
            let mut req = t.request("oom", sh("tail /dev/zero"));
            req.cgroup = Some(g.cg.clone());
            let h = d.start(req).await.unwrap();
            let r = d.wait(&h).await.unwrap();
            assert!(r.oom_killed, "{r:?}");
            assert!(!r.successful());
            d.destroy(&h).await.unwrap();
            assert!(!g.cg.dir("memory").unwrap().exists());
        }

        #[tokio::test]
        async fn the_process_is_in_the_cgroup_from_before_exec_as_root() {
            let Some((m, g)) = setup(32) else { return };
            let t = suite::TaskDirs::new();
            let d = RawExecDriver::new(Some(m.clone()));
            let mut req = t.request("incg", sh("cat /proc/self/cgroup"));
            req.cgroup = Some(g.cg.clone());
            let h = d.start(req).await.unwrap();
            assert!(d.wait(&h).await.unwrap().successful());
            let out = std::fs::read_to_string(&t.stdout).unwrap();
            let memory_line = out.lines().find(|l| l.contains(":memory:")).unwrap();
            assert!(
                memory_line.ends_with(&format!("/orch/{}", g.cg.name)),
                "{out}"
            );
            d.destroy(&h).await.unwrap();
        }

        #[tokio::test]
        async fn stop_kills_children_left_in_the_cgroup_as_root() {
            let Some((m, g)) = setup(32) else { return };
            let t = suite::TaskDirs::new();
            let d = RawExecDriver::new(Some(m.clone()));
            let mut req = t.request("tree", sh("setsid sleep 300 & exec sleep 300"));
            req.cgroup = Some(g.cg.clone());
            let h = d.start(req).await.unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while m.pids(&g.cg).unwrap().len() < 2 {
                assert!(std::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            d.stop(&h, Signal::SIGTERM, Duration::from_secs(2))
                .await
                .unwrap();
            assert!(m.pids(&g.cg).unwrap().is_empty());
            let stats = d.stats(&h).await.unwrap();
            assert_eq!(stats.pids, 0);
            d.destroy(&h).await.unwrap();
        }
    }
}
