//! The `raw_exec` driver: runs `config.command` with `config.args` as a host process,
//! in its own process group, inside the task's cgroup from before `exec` (the task shim
//! joins it before starting the command), with stdout and stderr appended to the
//! task's log files, as the task's `user` when set (else the client's `default_user`,
//! else the agent's own user). The driver is a privilege (`RawExecPolicy`): a client
//! offers it only when configured to, and runs no task as root unless allowed to. The
//! process is started and waited for by its task shim (`shim`), so it outlives a client
//! restart and a later client finds it again.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::Signal;
use orch_common::model::DriverInfo;

use super::procs::{cgroup_procs, exec_stdio, give_task_dirs, join_cgroup, Procs, StopTarget};
use super::{
    proc_start_ticks, Driver, DriverError, ExecRequest, ExecSession, ExitResult, StartRequest,
    TaskHandle, TaskStats,
};
use crate::cgroups::CgroupManager;
use crate::shim::{ShimCommand, ShimLauncher, ShimSpec};

const NAME: &str = "raw_exec";
/// Why a client without `raw_exec = true` neither offers nor runs the driver.
const DISABLED: &str = "disabled on this client ([client] raw_exec = true enables it)";

/// What a command run inside the task (`exec`) inherits from it.
struct ExecContext {
    env: std::collections::BTreeMap<String, String>,
    cwd: std::path::PathBuf,
    ids: Option<UserIds>,
    /// The task's `cgroup.procs` files.
    procs: Vec<CString>,
}

/// What a client lets `raw_exec` do (`[client] raw_exec`, `allow_root_tasks`,
/// `default_user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExecPolicy {
    /// Offered at all; a disabled driver fingerprints as unhealthy, so nothing is
    /// placed for it, and refuses to start tasks.
    pub enabled: bool,
    /// Tasks may run as root (uid 0).
    pub allow_root: bool,
    /// The user of a task that names none (`None`: the agent's own user).
    pub default_user: Option<String>,
}

impl RawExecPolicy {
    /// Everything allowed, as the agent's user: a dev agent's, and the driver tests'.
    pub fn trusted() -> Self {
        RawExecPolicy {
            enabled: true,
            allow_root: true,
            default_user: None,
        }
    }
}

/// Runs tasks as plain host processes.
pub struct RawExecDriver {
    policy: RawExecPolicy,
    procs: Procs,
    /// Task id -> how it was started, for `exec`. A std mutex: never held across an
    /// await.
    contexts: Mutex<HashMap<String, Arc<ExecContext>>>,
    shims: ShimLauncher,
}

impl RawExecDriver {
    /// `cgroups` reads OOM counters and kills task cgroups; `None` only on hosts where
    /// the client has no cgroup access (limits are then not enforced, and said so).
    pub fn new(cgroups: Option<Arc<dyn CgroupManager>>) -> Self {
        Self::with_shim(cgroups, ShimCommand::default())
    }

    /// With the task shim launcher started by `shim` (tests use their own binary).
    pub fn with_shim(cgroups: Option<Arc<dyn CgroupManager>>, shim: ShimCommand) -> Self {
        RawExecDriver {
            policy: RawExecPolicy::trusted(),
            procs: Procs::new(NAME, cgroups),
            contexts: Mutex::new(HashMap::new()),
            shims: ShimLauncher::new(shim),
        }
    }

    /// Under `policy` instead of the trusted one.
    pub fn with_policy(mut self, policy: RawExecPolicy) -> Self {
        self.policy = policy;
        self
    }

    async fn start_task(&self, req: StartRequest) -> Result<TaskHandle, DriverError> {
        if !self.policy.enabled {
            return Err(DriverError::InvalidConfig {
                task: req.id.clone(),
                reason: DISABLED.to_string(),
            });
        }
        let cmd_cfg = CommandConfig::from_config(&req)?;
        let user = req
            .user
            .clone()
            .or_else(|| self.policy.default_user.clone());
        let ids = match &user {
            Some(user) => Some(resolve_user(&req.id, user)?),
            None => None,
        };
        let uid = ids
            .as_ref()
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |i| i.uid);
        if uid == 0 && !self.policy.allow_root {
            return Err(DriverError::User {
                task: req.id.clone(),
                user: user.unwrap_or_else(|| "the agent's user".to_string()),
                reason: "this client runs no task as root (allow_root_tasks = false); set the \
                         task's user"
                    .to_string(),
            });
        }
        if let Some(ids) = &ids {
            give_task_dirs(&req.task_dir, ids.uid, ids.gid).map_err(|(d, source)| {
                DriverError::User {
                    task: req.id.clone(),
                    user: user.clone().unwrap_or_default(),
                    reason: format!("giving it {}: {source}", d.display()),
                }
            })?;
        }
        let procs = cgroup_procs(req.cgroup.as_ref()).map_err(|_| DriverError::InvalidConfig {
            task: req.id.clone(),
            reason: "cgroup path contains a NUL byte".to_string(),
        })?;
        let context = ExecContext {
            env: req.env.clone(),
            cwd: req.task_dir.clone(),
            ids: ids.clone(),
            procs: procs.clone(),
        };
        let spec = ShimSpec {
            command: cmd_cfg.command.clone(),
            args: cmd_cfg.args.clone(),
            exit_file: Default::default(),
            env: req.env.clone(),
            user: ids.map(|i| (i.uid, i.gid, i.groups)),
            cwd: Some(req.task_dir.clone()),
            cgroup_procs: req
                .cgroup
                .as_ref()
                .map(|cg| cg.procs_files())
                .unwrap_or_default(),
        };
        let (pid, supervisor) = self.procs.start_supervised(&self.shims, &req, spec).await?;
        let start_ticks = proc_start_ticks(pid);
        self.contexts
            .lock()
            .expect("raw_exec exec contexts poisoned")
            .insert(req.id.clone(), Arc::new(context));

        Ok(TaskHandle {
            id: req.id,
            alloc_id: req.alloc_id,
            task_name: req.task_name,
            driver: NAME.to_string(),
            pid: Some(pid),
            pid_start_ticks: start_ticks,
            started_at: orch_common::ids::now_ms(),
            cgroup: req.cgroup,
            driver_state: serde_json::json!({
                "command": cmd_cfg.command,
                "supervisor": supervisor,
                "env": req.env,
                "cwd": req.task_dir,
                "user": req.user,
            }),
        })
    }

    /// `recover`: the task again, and what `exec` needs to run commands in it.
    async fn recover_task(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        self.procs.recover_supervised(handle).await?;
        let st = &handle.driver_state;
        let env = st
            .get("env")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let cwd = st
            .get("cwd")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let ids = match st.get("user").and_then(|u| u.as_str()) {
            Some(user) => match resolve_user(&handle.id, user) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    tracing::warn!(task = %handle.id, error = %e, "exec into the recovered task will not work");
                    return Ok(());
                }
            },
            None => None,
        };
        let procs = cgroup_procs(handle.cgroup.as_ref()).unwrap_or_default();
        self.contexts
            .lock()
            .expect("raw_exec exec contexts poisoned")
            .insert(
                handle.id.clone(),
                Arc::new(ExecContext {
                    env,
                    cwd,
                    ids,
                    procs,
                }),
            );
        Ok(())
    }
}

impl Driver for RawExecDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fingerprint(&self) -> DriverInfo {
        if !self.policy.enabled {
            return DriverInfo {
                detected: true,
                healthy: false,
                description: DISABLED.to_string(),
            };
        }
        DriverInfo {
            detected: true,
            healthy: true,
            description: if self.procs.has_cgroups() {
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
        self.procs.wait(handle).boxed()
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        self.procs
            .stop(handle, signal, timeout, StopTarget::Group)
            .boxed()
    }

    fn destroy<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        self.contexts
            .lock()
            .expect("raw_exec exec contexts poisoned")
            .remove(&handle.id);
        self.procs.destroy(handle).boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        self.recover_task(handle).boxed()
    }

    fn stats<'a>(
        &'a self,
        handle: &'a TaskHandle,
    ) -> BoxFuture<'a, Result<TaskStats, DriverError>> {
        self.procs.stats(handle).boxed()
    }

    fn exec<'a>(
        &'a self,
        handle: &'a TaskHandle,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession, DriverError>> {
        async move {
            let context = self
                .contexts
                .lock()
                .expect("raw_exec exec contexts poisoned")
                .get(&handle.id)
                .cloned()
                .ok_or_else(|| DriverError::UnknownTask {
                    task: handle.id.clone(),
                    driver: NAME,
                })?;
            exec_in(&handle.id, &context, req)
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

/// The ids to switch to before exec, resolved in the parent (the lookup allocates and
/// reads files, which the forked child must not do).
#[derive(Clone)]
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

/// Starts `req.command` in the task's cgroup, environment, directory and user; with a
/// tty, as the leader of a new session whose controlling terminal is a fresh pty.
fn exec_in(task: &str, ctx: &ExecContext, req: ExecRequest) -> Result<ExecSession, DriverError> {
    let Some((program, args)) = req.command.split_first() else {
        return Err(DriverError::InvalidConfig {
            task: task.to_string(),
            reason: "exec needs a command".to_string(),
        });
    };
    let start_err = |source| DriverError::Start {
        task: task.to_string(),
        command: program.clone(),
        source,
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(&ctx.env)
        .current_dir(&ctx.cwd)
        // The session ends when its connection does.
        .kill_on_drop(true);
    let pty = exec_stdio(&mut cmd, req.tty).map_err(start_err)?;
    let procs = ctx.procs.clone();
    let ids = ctx.ids.clone();
    let tty = req.tty;
    // SAFETY: as in `start_task`: async-signal-safe syscalls on data prepared before
    // the fork (setsid and ioctl added for the terminal).
    unsafe {
        cmd.pre_exec(move || {
            if tty {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for path in &procs {
                join_cgroup(path)?;
            }
            if let Some(ids) = &ids {
                ids.switch()?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(start_err)?;
    Ok(ExecSession { child, pty })
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

#[cfg(test)]
mod tests {
    use super::super::suite::{self, Harness};
    use super::*;
    use crate::shim::supervisor::tests::test_shim;
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
            Arc::new(RawExecDriver::with_shim(None, test_shim()))
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
        let d = RawExecDriver::with_shim(None, test_shim());
        let h = d.start(t.request("echo", sh("echo hi"))).await.unwrap();
        assert!(d.wait(&h).await.unwrap().successful());
        assert_eq!(std::fs::read_to_string(&t.stdout).unwrap(), "hi\n");
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn stderr_goes_to_the_stderr_file_and_env_and_cwd_are_set() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::with_shim(None, test_shim());
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
    async fn a_launcher_that_died_is_started_again_and_its_shims_live_on() {
        let (first, second) = (suite::TaskDirs::new(), suite::TaskDirs::new());
        let d = RawExecDriver::with_shim(None, test_shim());
        let h1 = d
            .start(first.request(
                "first",
                sh("sleep 0.5; echo ${ORCH_TASK_SHIM_LAUNCHER:-unset}"),
            ))
            .await
            .unwrap();
        let launcher = d.shims.pid().expect("a launcher runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(launcher), Signal::SIGKILL).unwrap();
        let h2 = d
            .start(second.request("second", sh("echo again")))
            .await
            .unwrap();
        assert_ne!(
            d.shims.pid(),
            Some(launcher),
            "the dead launcher was used again"
        );
        assert!(d.wait(&h2).await.unwrap().successful());
        assert_eq!(std::fs::read_to_string(&second.stdout).unwrap(), "again\n");
        // The first task's shim outlived its launcher and still recorded the exit.
        assert!(d.wait(&h1).await.unwrap().successful());
        assert_eq!(
            std::fs::read_to_string(&first.stdout).unwrap(),
            "unset\n",
            "the launcher's marker leaked into the task's environment"
        );
        d.destroy(&h1).await.unwrap();
        d.destroy(&h2).await.unwrap();
    }

    #[tokio::test]
    async fn sigkill_is_classified_as_signal_9() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::with_shim(None, test_shim());
        let h = d.start(t.request("kill", sh("kill -9 $$"))).await.unwrap();
        let r = d.wait(&h).await.unwrap();
        assert_eq!(r.signal, Some(9));
        assert!(!r.oom_killed);
        d.destroy(&h).await.unwrap();
    }

    #[tokio::test]
    async fn the_task_runs_in_its_own_process_group() {
        let t = suite::TaskDirs::new();
        let d = RawExecDriver::with_shim(None, test_shim());
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
        let d = RawExecDriver::with_shim(None, test_shim());
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
        let d = RawExecDriver::with_shim(None, test_shim());
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
        let d = RawExecDriver::with_shim(None, test_shim());
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
        let d = RawExecDriver::with_shim(None, test_shim());
        let mut req = t.request("nouser", sh("true"));
        req.user = Some("no-such-user-orch".into());
        let err = d.start(req).await.unwrap_err();
        assert!(matches!(err, DriverError::User { .. }), "{err}");
        assert!(!err.is_recoverable());
    }

    /// Real cgroups (v1 on this machine) through the whole driver.
    mod cgroup {
        use super::*;
        use crate::driver::suite::TestCgroup;

        fn setup(memory_mib: u64) -> Option<(Arc<dyn CgroupManager>, TestCgroup)> {
            let g = TestCgroup::new(memory_mib)?;
            Some((g.m.clone(), g))
        }

        #[tokio::test]
        async fn memory_hog_is_classified_oom_as_root() {
            let Some((m, g)) = setup(16) else { return };
            let t = suite::TaskDirs::new();
            let d = RawExecDriver::with_shim(Some(m), test_shim());
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
            let d = RawExecDriver::with_shim(Some(m.clone()), test_shim());
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
            let d = RawExecDriver::with_shim(Some(m.clone()), test_shim());
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
