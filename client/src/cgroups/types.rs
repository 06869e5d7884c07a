//! The plain data of a task's cgroup: which hierarchy, where its directories are, and
//! what is sampled from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use orch_common::api::{CpuStats, MemoryStats};
use serde::{Deserialize, Serialize};

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where one task's cgroup lives: serializable so a later run can find and clean it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPaths {
    pub version: CgroupVersion,
    /// `<alloc>-<task>`.
    pub name: String,
    /// Controller (`memory`, `cpu`, ... on v1; `unified` on v2) -> the cgroup directory.
    pub dirs: BTreeMap<String, PathBuf>,
    /// Controller -> a cgroup the task's processes join that holds other tasks too (on
    /// v1 the cpuset of the tasks without `cores`): never killed or removed with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub joined: BTreeMap<String, PathBuf>,
}

impl CgroupPaths {
    /// The task's own distinct directories (co-mounted v1 controllers share one).
    pub fn unique_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.dirs.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The `cgroup.procs` files a process writes `0` into to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut dirs = self.unique_dirs();
        dirs.extend(self.joined.values().cloned());
        dirs.into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The task's own directory for `controller`.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(|p| p.as_path())
    }

    /// The directory the task's processes are in for `controller`: its own, or one
    /// it shares.
    pub fn member_dir(&self, controller: &str) -> Option<&Path> {
        self.dir(controller)
            .or_else(|| self.joined.get(controller).map(|p| p.as_path()))
    }
}

/// Memory use of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryUsage {
    pub current_bytes: u64,
    /// High-water mark, when the kernel keeps one.
    pub peak_bytes: Option<u64>,
}

/// Everything sampled from a task's cgroup at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CgroupStats {
    pub memory: MemoryStats,
    pub cpu: CpuStats,
    /// `pids.current`: processes and threads.
    pub pids: u64,
}
