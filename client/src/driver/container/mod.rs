//! The `container` driver: runs a task's command in new PID, mount, UTS, IPC and
//! network namespaces (the host's network only when asked for and allowed), on a
//! writable layer over a read-only root filesystem (a `rootfs` directory or `image`
//! tarball under the client's `container_rootfs`), with Docker's default capabilities
//! (`cap_add` within the client's `allow_caps`), Docker's default seccomp profile,
//! `no_new_privs`, as an unprivileged user by default, inside the task's cgroup like
//! `raw_exec`.
//!
//! The driver resolves everything (image, user, volumes, capabilities) into an
//! `InitSpec` and starts the `orch container-init` helper (`init`) with it; the helper
//! does the namespace work in a fresh single-threaded process. Layout: `spec` (what
//! the helper gets), `init` (the helper), `exec_helper` (the helper in `orch alloc
//! exec` mode: joins a running container's namespaces), `command` (the container's
//! command process, shared by both modes), `init_error` (`InitError`: why the helper
//! failed), `rootfs` (mounts and pivot_root), `image`
//! (tarball unpacking and the image cache), `caps` (capabilities), `seccomp` (the
//! system call filter), `policy` (what the client allows), `error` (`ContainerError`).

pub mod caps;
mod command;
mod error;
pub mod exec_helper;
pub mod image;
pub mod init;
mod init_error;
mod policy;
pub mod rootfs;
pub mod seccomp;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::Signal;
use orch_common::model::{AllocatedPort, DriverInfo};

use super::procs::{
    cgroup_procs, exec_stdio, give_task_dirs, join_cgroup, signal_group, Procs, StopTarget,
};
use super::{
    proc_start_ticks, Driver, DriverError, ExecRequest, ExecSession, ExitResult, StartRequest,
    TaskHandle, TaskStats,
};
use crate::cgroups::CgroupManager;
use crate::logrotate;
use crate::shim;
use crate::shim::supervisor::{self, SupervisorState};
pub use error::ContainerError;
pub use init_error::InitError;
pub use policy::ContainerPolicy;
use seccomp::Seccomp;
pub use spec::DEFAULT_PATH;
use spec::{BindMount, InitSpec, LayerMode, NetworkMode};

const NAME: &str = "container";
/// How long the helper may take to build the container (a rootfs copy included).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The user a container runs as when the task names none: `nobody`.
pub const DEFAULT_USER: &str = "nobody";

/// How the driver starts its helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the helper's own environment (not the container's).
    pub env: Vec<(String, String)>,
}

impl Default for HelperCommand {
    /// This very binary, `orch container-init`.
    fn default() -> Self {
        HelperCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: vec!["container-init".to_string()],
            env: Vec::new(),
        }
    }
}

/// The container driver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOptions {
    /// Where unpacked images are kept, one directory per tarball digest. The agent uses
    /// `<data_dir>/client/images`.
    pub image_cache: PathBuf,
    /// Host paths (and everything below them) that `volumes` may bind. Default: none.
    pub allowed_volumes: Vec<PathBuf>,
    pub helper: HelperCommand,
    /// Default: `Auto` (overlayfs, else a copy).
    pub layer: LayerMode,
    /// What tasks may ask for: root filesystems, capabilities, the host's network,
    /// no seccomp filter.
    pub policy: ContainerPolicy,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            image_cache: PathBuf::from("/var/lib/orch/client/images"),
            allowed_volumes: Vec::new(),
            helper: HelperCommand::default(),
            layer: LayerMode::Auto,
            policy: ContainerPolicy::default(),
        }
    }
}

/// Runs tasks in containers built from local root filesystems or image tarballs.
pub struct ContainerDriver {
    opts: ContainerOptions,
    /// The helper of each task (the task's main process).
    procs: Procs,
    /// Task id -> the spec it runs with, for `exec`. A std mutex: never held across
    /// an await.
    specs: Mutex<HashMap<String, Arc<InitSpec>>>,
}

impl ContainerDriver {
    pub fn new(cgroups: Option<Arc<dyn CgroupManager>>, opts: ContainerOptions) -> Self {
        ContainerDriver {
            opts,
            procs: Procs::new(NAME, cgroups),
            specs: Mutex::new(HashMap::new()),
        }
    }

    fn err(task: &str) -> impl Fn(ContainerError) -> DriverError {
        let task = task.to_string();
        move |source| DriverError::Container {
            task: task.clone(),
            source,
        }
    }

    async fn start_task(&self, req: StartRequest) -> Result<TaskHandle, DriverError> {
        let cfg = ContainerConfig::from_config(&req)?;
        let cerr = Self::err(&req.id);
        let policy = &self.opts.policy;
        policy
            .check_network(
                cfg.network(&req.ports),
                cfg.network_mode.is_some(),
                &req.ports,
            )
            .map_err(&cerr)?;
        policy.check_seccomp(cfg.seccomp).map_err(&cerr)?;
        let (source_rootfs, image_state, image_config) = match &cfg.root {
            Root::Dir(dir) => {
                if !dir.is_absolute() || !dir.is_dir() {
                    return Err(cerr(ContainerError::Rootfs {
                        path: dir.clone(),
                        reason: "not an absolute path to a directory".to_string(),
                    }));
                }
                let real = policy.check_root(dir, "rootfs").map_err(&cerr)?;
                (real, serde_json::Value::Null, None)
            }
            Root::Image(tarball) => {
                let tarball = policy.check_root(tarball, "image").map_err(&cerr)?;
                let cache = self.opts.image_cache.clone();
                let unpacked =
                    tokio::task::spawn_blocking(move || image::unpack_cached(&cache, &tarball))
                        .await
                        .map_err(|e| DriverError::Injected {
                            task: req.id.clone(),
                            message: format!("image unpacking panicked: {e}"),
                        })?
                        .map_err(|e| cerr(e.into()))?;
                (
                    unpacked.rootfs,
                    serde_json::json!({ "digest": unpacked.digest, "cached": unpacked.cached }),
                    Some(unpacked.config),
                )
            }
        };
        let mut spec = self.spec(&req, &cfg, source_rootfs, image_config.as_ref())?;
        // Output through FIFOs and the exit into a file, so both survive a client
        // restart (the helper runs in its own session; see `shim`).
        let log_err = |path: &std::path::Path| {
            let (task, path) = (req.id.clone(), path.to_path_buf());
            move |source| DriverError::LogFile { task, path, source }
        };
        let (stdout_fifo, stderr_fifo, exit_file) = supervisor::task_files(&req.task_dir)
            .map_err(log_err(&crate::allocdir::control_dir(&req.task_dir)))?;
        shim::reserve_exit_file(&exit_file).map_err(log_err(&exit_file))?;
        spec.exit_file = Some(exit_file.clone());
        let stdout = logrotate::capture_fifo(&stdout_fifo, &req.stdout_path, req.logs)
            .map_err(log_err(&stdout_fifo))?;
        let stderr = logrotate::capture_fifo(&stderr_fifo, &req.stderr_path, req.logs)
            .map_err(log_err(&stderr_fifo))?;
        let output = vec![stdout.done, stderr.done];

        let oom_baseline = self.procs.oom_kills(req.cgroup.as_ref());
        let (mut child, ready_r) =
            self.spawn_helper(&req, &spec, stdout.child_end, stderr.child_end)?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| DriverError::Start {
                task: req.id.clone(),
                command: spec.command.clone(),
                source: std::io::Error::other("the helper exited before its pid was read"),
            })?;
        let start_ticks = proc_start_ticks(pid);

        // EOF on the ready pipe without a message: the command was exec'd.
        let setup = tokio::time::timeout(
            SETUP_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let mut message = String::new();
                let mut f = std::fs::File::from(ready_r);
                f.read_to_string(&mut message).map(|_| message)
            }),
        )
        .await;
        let failure = match setup {
            Ok(Ok(Ok(message))) if message.is_empty() => None,
            Ok(Ok(Ok(message))) => Some(message),
            Ok(Ok(Err(e))) => Some(format!("reading the helper's ready pipe: {e}")),
            Ok(Err(e)) => Some(format!("ready pipe reader panicked: {e}")),
            Err(_) => Some(format!("not ready after {SETUP_TIMEOUT:?}")),
        };
        if let Some(message) = failure {
            let _ = signal_group(&req.id, pid, Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(cerr(ContainerError::Setup { message }));
        }

        // Kept for `exec`.
        self.specs
            .lock()
            .expect("container specs poisoned")
            .insert(req.id.clone(), Arc::new(spec.clone()));
        let supervisor = SupervisorState {
            shim_pid: pid,
            shim_start_ticks: start_ticks,
            exit_file: exit_file.clone(),
            stdout_fifo,
            stderr_fifo,
            stdout_path: req.stdout_path.clone(),
            stderr_path: req.stderr_path.clone(),
            logs: req.logs,
            oom_baseline,
        };
        let task_id = req.id.clone();
        let exit = async move {
            let status = child.wait().await;
            super::procs::supervised_exit(&task_id, &exit_file, status, "container helper")
        };
        self.procs.track_exit(
            &req.id,
            pid,
            Box::pin(exit),
            req.cgroup.clone(),
            oom_baseline,
            output,
        );

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
                "command": spec.command,
                "rootfs": spec.rootfs,
                "image": image_state,
                "supervisor": supervisor,
                "spec": spec,
            }),
        })
    }

    /// Resolves the user, capabilities, mounts and environment of the container.
    fn spec(
        &self,
        req: &StartRequest,
        cfg: &ContainerConfig,
        rootfs: PathBuf,
        image: Option<&image::ImageConfig>,
    ) -> Result<InitSpec, DriverError> {
        let cerr = Self::err(&req.id);
        let image = image.cloned().unwrap_or_default();
        // The task's user, else the image's, else an unprivileged default.
        let user = req
            .user
            .clone()
            .or_else(|| image.user.clone().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_USER.to_string());
        let ids = resolve_user(&rootfs, &user).map_err(&cerr)?;
        let keep_caps: Vec<u8> =
            caps::granted(&cfg.cap_add, &cfg.cap_drop, &self.opts.policy.allow_caps)
                .map_err(|e| cerr(e.into()))?
                .into_iter()
                .collect();

        // The alloc and task dirs at their host paths, so the ORCH_* paths hold inside.
        let mut mounts = Vec::new();
        if let Some(shared) = req.env.get("ORCH_ALLOC_DIR").map(PathBuf::from) {
            if shared.is_dir() && !req.task_dir.starts_with(&shared) {
                mounts.push(BindMount {
                    source: shared.clone(),
                    target: shared,
                    readonly: false,
                });
            }
        }
        mounts.push(BindMount {
            source: req.task_dir.clone(),
            target: req.task_dir.clone(),
            readonly: false,
        });
        for v in &cfg.volumes {
            mounts.push(self.volume(v).map_err(&cerr)?);
        }
        if ids.uid != 0 {
            give_task_dirs(&req.task_dir, ids.uid, ids.gid).map_err(|(path, source)| {
                cerr(ContainerError::Io {
                    op: "giving the task's user",
                    path,
                    source,
                })
            })?;
        }

        // The image's environment first, the task's over it.
        let mut env: BTreeMap<String, String> = image
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(req.env.clone());
        // The task's command, else the image's entrypoint with the task's args or the
        // image's Cmd.
        let (command, args) = match &cfg.command {
            Some(c) => (c.clone(), cfg.args.clone()),
            None => {
                let mut argv = image.entrypoint.clone().unwrap_or_default();
                if cfg.args.is_empty() {
                    argv.extend(image.cmd.clone().unwrap_or_default());
                } else {
                    argv.extend(cfg.args.clone());
                }
                if argv.is_empty() {
                    return Err(DriverError::InvalidConfig {
                        task: req.id.clone(),
                        reason: "\"command\" is required: the image names no Entrypoint or Cmd"
                            .to_string(),
                    });
                }
                let command = argv.remove(0);
                (command, argv)
            }
        };
        env.entry("PATH".to_string())
            .or_insert_with(|| DEFAULT_PATH.to_string());
        let hostname = cfg
            .hostname
            .clone()
            .unwrap_or_else(|| req.alloc_id.chars().take(8).collect());
        env.entry("HOSTNAME".to_string())
            .or_insert_with(|| hostname.clone());
        Ok(InitSpec {
            rootfs,
            layer_dir: req.task_dir.join(".container"),
            layer: self.opts.layer,
            command,
            args,
            env,
            cwd: cfg
                .work_dir
                .clone()
                .or_else(|| {
                    image
                        .working_dir
                        .as_ref()
                        .filter(|w| w.starts_with('/'))
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| req.task_dir.clone()),
            hostname,
            uid: ids.uid,
            gid: ids.gid,
            groups: ids.groups,
            mounts,
            keep_caps,
            network: cfg.network(&req.ports),
            seccomp: cfg.seccomp,
            readonly_rootfs: cfg.readonly_rootfs,
            // The helper's stdout and stderr are already the log pipes.
            stdout: None,
            stderr: None,
            exit_file: None,
        })
    }

    /// Starts the helper in the task's cgroup with the spec on its stdin and the
    /// ready pipe on fd 3; returns it and the pipe's read end.
    fn spawn_helper(
        &self,
        req: &StartRequest,
        spec: &InitSpec,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<(tokio::process::Child, OwnedFd), DriverError> {
        let start_err = |source| DriverError::Start {
            task: req.id.clone(),
            command: spec.command.clone(),
            source,
        };
        let procs = cgroup_procs(req.cgroup.as_ref()).map_err(|_| DriverError::InvalidConfig {
            task: req.id.clone(),
            reason: "cgroup path contains a NUL byte".to_string(),
        })?;
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| start_err(e.into()))?;
        let ready_fd = ready_w.as_raw_fd();
        // The output pipes go to the helper on fds 4 and 5, copied above fd 10 first so
        // that moving them there cannot overwrite one with another (or the ready pipe).
        let high = |fd: &OwnedFd| -> Result<OwnedFd, DriverError> {
            let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_DUPFD_CLOEXEC(10))
                .map_err(|e| start_err(e.into()))?;
            // SAFETY: fcntl just returned this new fd, owned by nobody else.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
        };
        let (out_high, err_high) = (high(&stdout)?, high(&stderr)?);
        let (out_fd, err_fd) = (out_high.as_raw_fd(), err_high.as_raw_fd());
        let h = &self.opts.helper;
        let mut cmd = tokio::process::Command::new(&h.program);
        cmd.args(&h.args)
            .envs(h.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // The helper's own messages (a setup failure) go to the task's stderr log.
            .stderr(Stdio::from(stderr))
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe syscalls (setsid, open, write, close, dup2, fcntl) on data
        // prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session (and process group): a client killed with its group
                // leaves the container running.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for path in &procs {
                    join_cgroup(path)?;
                }
                if ready_fd == spec::READY_FD {
                    if libc::fcntl(ready_fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(ready_fd, spec::READY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::dup2(out_fd, spec::STDOUT_FD) < 0
                    || libc::dup2(err_fd, spec::STDERR_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(start_err)?;
        drop(ready_w);
        drop((stdout, out_high, err_high));
        let json = serde_json::to_vec(spec).map_err(|e| start_err(std::io::Error::other(e)))?;
        if let Some(stdin) = child.stdin.take() {
            // A pipe's buffer holds a spec; write it whole, then close for EOF.
            let fd = stdin.into_owned_fd().map_err(start_err)?;
            // Tokio leaves its pipes non-blocking; this write wants to block.
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::F_SETFL(nix::fcntl::OFlag::empty()),
            )
            .map_err(|e| start_err(e.into()))?;
            let mut stdin = std::fs::File::from(fd);
            if let Err(e) = stdin.write_all(&json) {
                let _ = signal_group(&req.id, child.id().unwrap_or(0) as i32, Signal::SIGKILL);
                return Err(start_err(e));
            }
        }
        Ok((child, ready_r))
    }

    /// A `volumes` entry checked against the client's allowed host paths.
    fn volume(&self, v: &str) -> Result<BindMount, ContainerError> {
        let bad = |reason: &str| ContainerError::BadVolume {
            volume: v.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = v.split(':').collect();
        let (host, target, readonly) =
            match parts.as_slice() {
                [h, t] => (*h, *t, false),
                [h, t, "ro"] => (*h, *t, true),
                [h, t, "rw"] => (*h, *t, false),
                _ => return Err(bad(
                    "expected \"/host/path:/container/path\" with an optional \":ro\" or \":rw\"",
                )),
            };
        if !host.starts_with('/') || !target.starts_with('/') {
            return Err(bad("both paths must be absolute"));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(bad("the container path must not contain \"..\""));
        }
        let real = std::fs::canonicalize(host).map_err(|e| ContainerError::BadVolume {
            volume: v.to_string(),
            reason: format!("host path {host}: {e}"),
        })?;
        let allowed = self.opts.allowed_volumes.iter().any(|a| {
            std::fs::canonicalize(a)
                .map(|a| real.starts_with(a))
                .unwrap_or(false)
        });
        if !allowed {
            return Err(ContainerError::VolumeNotAllowed {
                volume: v.to_string(),
                host: real,
                allowed: if self.opts.allowed_volumes.is_empty() {
                    "none".to_string()
                } else {
                    self.opts
                        .allowed_volumes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        Ok(BindMount {
            source: real,
            target: PathBuf::from(target),
            readonly,
        })
    }
}

/// Whether this host can run containers: root, and the namespaces the driver uses.
fn host_supports_containers() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the agent does not run as root".to_string());
    }
    for ns in ["pid", "mnt", "uts", "ipc", "net"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            return Err(format!("the kernel has no {ns} namespaces"));
        }
    }
    Ok(())
}

impl Driver for ContainerDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fingerprint(&self) -> DriverInfo {
        match host_supports_containers() {
            Ok(()) => DriverInfo {
                detected: true,
                healthy: true,
                description: "native containers (PID, mount, UTS, IPC namespaces)".to_string(),
            },
            Err(why) => DriverInfo {
                detected: true,
                healthy: false,
                description: format!("unavailable: {why}"),
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

    /// The signal goes to the helper only: it forwards it to the init, which forwards
    /// it to the command (a signal to the whole group would reach the command twice).
    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        self.procs
            .stop(handle, signal, timeout, StopTarget::Main)
            .boxed()
    }

    fn destroy<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        self.specs
            .lock()
            .expect("container specs poisoned")
            .remove(&handle.id);
        self.procs.destroy(handle).boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            self.procs.recover_supervised(handle).await?;
            if let Some(spec) = handle
                .driver_state
                .get("spec")
                .and_then(|v| serde_json::from_value::<InitSpec>(v.clone()).ok())
            {
                self.specs
                    .lock()
                    .expect("container specs poisoned")
                    .insert(handle.id.clone(), Arc::new(spec));
            }
            Ok(())
        }
        .boxed()
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
        async move { self.exec_in(handle, req) }.boxed()
    }
}

impl ContainerDriver {
    /// Starts the helper in exec mode: in the task's cgroup, with the exec's stdio; it
    /// joins the container's namespaces and runs the command as the task's user.
    fn exec_in(&self, handle: &TaskHandle, req: ExecRequest) -> Result<ExecSession, DriverError> {
        let unknown = || DriverError::UnknownTask {
            task: handle.id.clone(),
            driver: NAME,
        };
        let task_spec = self
            .specs
            .lock()
            .expect("container specs poisoned")
            .get(&handle.id)
            .cloned()
            .ok_or_else(unknown)?;
        let Some((program, args)) = req.command.split_first() else {
            return Err(DriverError::InvalidConfig {
                task: handle.id.clone(),
                reason: "exec needs a command".to_string(),
            });
        };
        let start_err = |source| DriverError::Start {
            task: handle.id.clone(),
            command: program.clone(),
            source,
        };
        let target_pid = handle
            .pid
            .and_then(exec_helper::namespace_init)
            .ok_or_else(|| start_err(std::io::Error::other("the container is not running")))?;
        let mut spec = InitSpec::clone(&task_spec);
        spec.command = program.clone();
        spec.args = args.to_vec();
        let exec_spec = exec_helper::ExecSpec {
            target_pid,
            spec,
            tty: req.tty,
        };
        let json =
            serde_json::to_string(&exec_spec).map_err(|e| start_err(std::io::Error::other(e)))?;
        let procs = cgroup_procs(handle.cgroup.as_ref()).map_err(start_err)?;
        let h = &self.opts.helper;
        let mut cmd = tokio::process::Command::new(&h.program);
        cmd.args(&h.args)
            .envs(h.env.iter().map(|(k, v)| (k, v)))
            .env(exec_helper::ENV, json)
            // The session ends when its connection does.
            .kill_on_drop(true);
        let pty = exec_stdio(&mut cmd, req.tty).map_err(start_err)?;
        // SAFETY: the closure runs in the forked child before exec and only writes the
        // cgroup files (open, write, close) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for path in &procs {
                    join_cgroup(path)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(start_err)?;
        Ok(ExecSession { child, pty })
    }
}

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    Dir(PathBuf),
    Image(PathBuf),
}

/// A task's `config` for this driver, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerConfig {
    root: Root,
    /// `None`: the image's Entrypoint/Cmd.
    command: Option<String>,
    args: Vec<String>,
    volumes: Vec<String>,
    cap_add: Vec<String>,
    cap_drop: Vec<String>,
    /// `None`: not given (host with ports, else none; see `network`).
    network_mode: Option<NetworkMode>,
    seccomp: Seccomp,
    hostname: Option<String>,
    work_dir: Option<PathBuf>,
    readonly_rootfs: bool,
}

/// Keys the driver reads (the jobspec's `CONTAINER_CONFIG_KEYS`).
const KEYS: &[&str] = orch_common::jobspec::CONTAINER_CONFIG_KEYS;

impl ContainerConfig {
    fn from_config(req: &StartRequest) -> Result<Self, DriverError> {
        let bad = |reason: String| DriverError::InvalidConfig {
            task: req.id.clone(),
            reason,
        };
        let c = &req.config;
        if let Some(k) = c.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown key {k:?} (the container driver takes {})",
                KEYS.join(", ")
            )));
        }
        let string = |key: &str| -> Result<Option<String>, DriverError> {
            match c.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("{key:?} must be a non-empty string"))),
            }
        };
        let list = |key: &str| -> Result<Vec<String>, DriverError> {
            match c.get(key) {
                None => Ok(Vec::new()),
                // Numbers and booleans are passed as their text (`args = ["-p", 8080]`).
                Some(serde_json::Value::Array(items)) => Ok(items
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()),
                Some(_) => Err(bad(format!("{key:?} must be an array of strings"))),
            }
        };
        let root = match (string("rootfs")?, string("image")?) {
            (Some(r), None) => Root::Dir(PathBuf::from(r)),
            (None, Some(i)) => Root::Image(PathBuf::from(i)),
            (Some(_), Some(_)) => {
                return Err(bad("give either \"rootfs\" or \"image\", not both".into()))
            }
            (None, None) => {
                return Err(bad(
                    "\"rootfs\" (a directory) or \"image\" (a tarball) is required".into(),
                ))
            }
        };
        let command = string("command")?;
        if command.is_none() && matches!(root, Root::Dir(_)) {
            return Err(bad("\"command\" is required with a rootfs directory".into()));
        }
        let network_mode = match string("network_mode")?.as_deref() {
            None => None,
            Some("host") => Some(NetworkMode::Host),
            Some("none") => Some(NetworkMode::None),
            Some(other) => {
                return Err(bad(format!(
                    "network_mode {other:?}: expected \"host\" or \"none\""
                )))
            }
        };
        let seccomp = match string("seccomp")?.as_deref() {
            None | Some("default") => Seccomp::Default,
            Some("unconfined") => Seccomp::Unconfined,
            Some(other) => {
                return Err(bad(format!(
                    "seccomp {other:?}: expected \"default\" or \"unconfined\""
                )))
            }
        };
        let readonly_rootfs = match c.get("readonly_rootfs") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(bad("\"readonly_rootfs\" must be true or false".into())),
        };
        let work_dir = string("work_dir")?.map(PathBuf::from);
        if work_dir.as_ref().is_some_and(|w| !w.is_absolute()) {
            return Err(bad("\"work_dir\" must be an absolute path".into()));
        }
        Ok(ContainerConfig {
            root,
            command,
            args: list("args")?,
            volumes: list("volumes")?,
            cap_add: list("cap_add")?,
            cap_drop: list("cap_drop")?,
            network_mode,
            seccomp,
            hostname: string("hostname")?,
            work_dir,
            readonly_rootfs,
        })
    }
}

impl ContainerConfig {
    /// The network the container gets: as asked, else the host's when the group has
    /// ports (until bridge networking, the only way to reach them), else none.
    fn network(&self, ports: &[AllocatedPort]) -> NetworkMode {
        self.network_mode.unwrap_or(if ports.is_empty() {
            NetworkMode::None
        } else {
            NetworkMode::Host
        })
    }
}

/// Numeric ids of the container's user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserIds {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

/// `user` as the container knows it: "uid[:gid]", a name in the root filesystem's
/// `/etc/passwd`, or (for root filesystems without one) `root` and `nobody`.
fn resolve_user(rootfs: &Path, user: &str) -> Result<UserIds, ContainerError> {
    let err = |reason: String| ContainerError::User {
        user: user.to_string(),
        reason,
    };
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let from_passwd = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| (f[2].parse::<u32>(), f[3].parse::<u32>()))
    });
    let (uid, mut gid) = if let Ok(uid) = name.parse::<u32>() {
        (uid, uid)
    } else if let Some((Ok(uid), Ok(gid))) = from_passwd {
        (uid, gid)
    } else if name == "root" {
        (0, 0)
    } else if name == "nobody" {
        (65534, 65534)
    } else {
        return Err(err(format!(
            "not in {} and not numeric",
            rootfs.join("etc/passwd").display()
        )));
    };
    if let Some(g) = group {
        gid = g
            .parse()
            .map_err(|_| err(format!("group {g:?} is not a number")))?;
    }
    Ok(UserIds {
        uid,
        gid,
        groups: vec![gid],
    })
}

#[cfg(test)]
mod tests;
