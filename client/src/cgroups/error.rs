//! `CgroupError`: what went wrong with a cgroup, naming the file.

use std::path::PathBuf;

use super::types::CgroupVersion;

/// What went wrong with a cgroup; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup controller {controller:?} is not available: {path} (enable it, or run the client where it is mounted)")]
    ControllerMissing { controller: String, path: PathBuf },
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {data:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        data: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("limit did not take: wrote {wanted:?} to {path} but it reads {got:?}")]
    LimitNotApplied {
        path: PathBuf,
        wanted: String,
        got: String,
    },
    #[error("processes {pids:?} are still in cgroup {path} after SIGKILL")]
    KillTimeout { path: PathBuf, pids: Vec<i32> },
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cgroup name {name:?}: must be non-empty, without '/' and not start with '.'")]
    BadName { name: String },
    #[error("no cgroup file system is mounted at {root} (according to {mounts})")]
    NotMounted { root: PathBuf, mounts: PathBuf },
    #[error("resources.cores = {wanted}: only {free} of the host's cpus {host:?} are free (cpus given to other tasks' `cores` are not shared; from {path})")]
    NoFreeCores {
        wanted: u32,
        free: usize,
        host: String,
        path: PathBuf,
    },
    #[error("resources.pids = {asked} is above this client's pids_limit ({limit})")]
    PidsAboveClientLimit { asked: u64, limit: u64 },
    #[error("cgroup {name} belongs to cgroup {found:?}, not to this {expected:?} manager")]
    WrongVersion {
        name: String,
        found: CgroupVersion,
        expected: CgroupVersion,
    },
}
