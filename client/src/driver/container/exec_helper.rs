//! `orch alloc exec` in a container: the helper, started by the driver in the task's
//! cgroup with the exec's stdio, joins the running container's namespaces (IPC, UTS,
//! network, PID, mount: the mount namespace's root is the container's root after its
//! `pivot_root`), then forks the command, which takes the container's capabilities,
//! `no_new_privs` and user like the task's own command did (`init::ExecPlan`), and
//! exits the way the command did. The spec comes in the `ORCH_CONTAINER_EXEC`
//! environment variable, since stdin is the command's.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

use super::command::{exit_like, wait_for, ExecPlan};
use super::init_error::InitError;
use super::spec::InitSpec;

/// The environment variable that carries an `ExecSpec` (and selects exec mode).
pub const ENV: &str = "ORCH_CONTAINER_EXEC";

/// A command to run in a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// A process inside the container's namespaces (its namespace init).
    pub target_pid: i32,
    /// The task's spec with `command` and `args` replaced.
    pub spec: InitSpec,
    /// The command gets the terminal on its stdin as its controlling terminal.
    pub tty: bool,
}

/// The namespaces joined, in order (the mount namespace last: the others are opened
/// through the host's `/proc`).
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs the exec helper from `spec_json`; returns the exit code for the process.
pub fn main(spec_json: &str) -> i32 {
    let spec: ExecSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(source) => {
            let e = InitError::BadExecSpec { var: ENV, source };
            eprintln!("orch container exec: {e}");
            return 127;
        }
    };
    match run(&spec) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orch container exec: {e}");
            127
        }
    }
}

fn run(spec: &ExecSpec) -> Result<i32, InitError> {
    // Open every namespace first: once in the new mount namespace, /proc is the
    // container's and the target pid means something else.
    let mut files = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = PathBuf::from(format!("/proc/{}/ns/{name}", spec.target_pid));
        let f = std::fs::File::open(&path).map_err(|source| InitError::Open { path, source })?;
        files.push((name, *flag, f));
    }
    // The container's root as its processes see it (after its pivot_root).
    let root_path = PathBuf::from(format!("/proc/{}/root", spec.target_pid));
    let root = std::fs::File::open(&root_path).map_err(|source| InitError::Open {
        path: root_path,
        source,
    })?;
    for (name, flag, f) in &files {
        setns(f, *flag).map_err(|source| InitError::JoinNamespace {
            namespace: name,
            source,
        })?;
    }
    drop(files);
    // SAFETY: fchdir to an open directory, then chroot to it.
    unsafe {
        if libc::fchdir(root.as_raw_fd()) != 0 || libc::chroot(c".".as_ptr()) != 0 {
            return Err(InitError::EnterRoot(std::io::Error::last_os_error()));
        }
    }
    drop(root);
    let plan = ExecPlan::new(&spec.spec)?;
    // The PID namespace applies to children: the command is forked.
    // SAFETY: this process is single-threaded (the helper runs before any runtime).
    match unsafe { libc::fork() } {
        -1 => Err(InitError::ForkExec(std::io::Error::last_os_error())),
        0 => {
            if spec.tty {
                // SAFETY: session and controlling terminal syscalls in the child.
                unsafe {
                    libc::setsid();
                    libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCSCTTY as _, 0);
                }
            }
            let why = plan.run();
            eprintln!("orch container exec: {why}");
            // SAFETY: leave the forked child without running the parent's exit code.
            unsafe { libc::_exit(127) }
        }
        child => Ok(exit_like(wait_for(child))),
    }
}

/// The container's namespace init: the helper's child (PID 1 inside).
pub fn namespace_init(helper_pid: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{helper_pid}/task/{helper_pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}
