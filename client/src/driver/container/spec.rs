//! `InitSpec`: everything the `container-init` helper needs to build and start one
//! container, resolved by the driver (paths, ids, capabilities) and sent to the helper
//! as JSON on its stdin, so the helper reads no client state of its own; and the fds
//! the driver hands the helper along with it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::seccomp::Seccomp;

/// The fd the driver passes the write end of the ready pipe on.
pub const READY_FD: i32 = 3;
/// The fds the driver passes the task's output pipes on (into the rotated logs). Not
/// the helper's own stdout/stderr: what the helper itself prints stays out of the logs.
pub const STDOUT_FD: i32 = 4;
pub const STDERR_FD: i32 = 5;

/// `PATH` inside the container when the task sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One container to build and run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    /// The read-only source root filesystem: a `rootfs` directory or an unpacked image.
    pub rootfs: PathBuf,
    /// Per-task directory for the writable layer (overlay upper/work, or the copy).
    pub layer_dir: PathBuf,
    pub layer: LayerMode,
    pub command: String,
    pub args: Vec<String>,
    /// The container process's whole environment.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Bind mounts, in order: the alloc and task dirs first, then volumes.
    pub mounts: Vec<BindMount>,
    /// Capability numbers the container keeps in its bounding set; all others drop.
    pub keep_caps: Vec<u8>,
    pub network: NetworkMode,
    /// The system call filter of the command (and of `orch alloc exec` commands).
    /// Absent in handles written before it existed: those get the default profile.
    #[serde(default)]
    pub seccomp: Seccomp,
    pub readonly_rootfs: bool,
    /// Log files the helper appends the container's stdout and stderr to; `None`
    /// keeps what the helper was given (the driver's pipes into the rotated logs).
    #[serde(default)]
    pub stdout: Option<PathBuf>,
    #[serde(default)]
    pub stderr: Option<PathBuf>,
    /// Where the helper records the command's exit (`shim::ExitRecord`) before it
    /// exits, so a client that was not running then still learns it.
    #[serde(default)]
    pub exit_file: Option<PathBuf>,
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub readonly: bool,
}

/// `network_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The host's network namespace: asked for by the task (or implied by its group's
    /// ports), and only where the client allows it.
    Host,
    /// A new network namespace with only loopback, up (the default).
    None,
}

/// How the writable layer over the source rootfs is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerMode {
    /// overlayfs when the kernel and the task dir's file system allow it, else a copy.
    Auto,
    /// Always a copy of the source into the task dir (slower; for tests and hosts
    /// where overlayfs misbehaves).
    Copy,
}
