//! Task cgroups: the project's own `CgroupManager` trait with file-level v1 and v2
//! backends, limit verification (a limit that did not take is an error), OOM counters
//! and kill-everything.
//!
//! Why not youki's `libcgroups` (0.7): its v1 manager finds mount points through
//! `/proc/self/mountinfo` and cannot be given a root path (so no fixture tests), joins
//! every mounted controller (cpuset, devices, blkio, ...) and takes `oci-spec` resources;
//! its v2 manager enables controllers "best effort" (a warning, then carries on), which is
//! exactly the silent missing limit we must not have. Our needs are a handful of files,
//! so both backends write and read them directly, and every limit is read back.
//!
//! Layout: v1 `<root>/<controller>/orch/<alloc>-<task>` for memory, cpu, cpuacct, pids,
//! freezer (and cpuset for tasks with `cores`; the others share `cpuset/orch/shared`);
//! v2 `<root>/orch.slice/<alloc>-<task>` with the controllers enabled in each parent's
//! `cgroup.subtree_control`.

pub mod cpuset;
mod fs;
pub mod janitor;
pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use orch_common::api::{CpuStats, MemoryStats};
use orch_common::model::Resources;
use serde::{Deserialize, Serialize};

pub use v1::V1Manager;
pub use v2::V2Manager;

/// Processes a task may have unless configured otherwise.
pub const DEFAULT_PIDS_MAX: u64 = 1024;

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

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

/// What a task's resources are measured against on this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// MHz of one core (the `cpu.frequency` attribute), to turn MHz into a cpu quota.
    pub mhz_per_core: u64,
    /// The client's `pids_limit`: every task's default and the most it may ask for.
    pub pids_limit: u64,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            mhz_per_core: 1000,
            pids_limit: DEFAULT_PIDS_MAX,
        }
    }
}

/// A hard cpu cap: `quota_us` of cpu time per `period_us` (cfs bandwidth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// The cfs period: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The limits of one task's cgroup, from its `resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard memory limit in MiB (`memory_max` when set, else `memory`).
    pub memory_hard_mib: u64,
    /// Soft limit / reservation in MiB, only when a separate hard cap is set.
    pub memory_soft_mib: Option<u64>,
    /// The cpu reservation in MHz, turned into a relative weight.
    pub cpu_mhz: u64,
    /// With `cpu_hard_limit`: the reservation as a hard cap.
    pub cpu_quota: Option<CpuQuota>,
    /// Dedicated cpus (`resources.cores`); the manager picks which.
    pub cores: Option<u32>,
    pub pids_max: u64,
}

impl CgroupLimits {
    /// The limits for a task's `resources` on a node. A task asking for more processes
    /// than the client allows is an error, not a silently lowered limit.
    pub fn for_task(r: &Resources, node: &NodeLimits) -> Result<Self, CgroupError> {
        let pids_max = match r.pids {
            Some(asked) if asked > node.pids_limit => {
                return Err(CgroupError::PidsAboveClientLimit {
                    asked,
                    limit: node.pids_limit,
                })
            }
            Some(asked) => asked,
            None => node.pids_limit,
        };
        let (memory_hard_mib, memory_soft_mib) = match r.memory_max {
            Some(max) if max > r.memory => (max, Some(r.memory)),
            _ => (r.memory, None),
        };
        let cpu_quota = r.cpu_hard_limit.then(|| CpuQuota {
            // The kernel refuses quotas under 1 ms.
            quota_us: (r.cpu * CPU_PERIOD_US / node.mhz_per_core.max(1)).max(1000),
            period_us: CPU_PERIOD_US,
        });
        Ok(CgroupLimits {
            memory_hard_mib,
            memory_soft_mib,
            cpu_mhz: r.cpu,
            cpu_quota,
            cores: r.cores,
            pids_max,
        })
    }

    /// Plain limits (memory, cpu weight, pids) for tests and tools.
    pub fn basic(memory_mib: u64, cpu_mhz: u64, pids_max: u64) -> Self {
        CgroupLimits {
            memory_hard_mib: memory_mib,
            memory_soft_mib: None,
            cpu_mhz,
            cpu_quota: None,
            cores: None,
            pids_max,
        }
    }

    pub fn memory_hard_bytes(&self) -> u64 {
        self.memory_hard_mib * 1024 * 1024
    }

    pub fn memory_soft_bytes(&self) -> Option<u64> {
        self.memory_soft_mib.map(|m| m * 1024 * 1024)
    }

    /// v1 `cpu.shares`: 1024 per 1000 MHz, at least 2 (the kernel minimum).
    pub fn cpu_shares(&self) -> u64 {
        (self.cpu_mhz * 1024 / 1000).clamp(2, 262_144)
    }

    /// v2 `cpu.weight` (1..=10000), mapped from the shares the way runc does.
    pub fn cpu_weight(&self) -> u64 {
        (1 + ((self.cpu_shares() - 2) * 9999) / 262_142).clamp(1, 10_000)
    }
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

/// One task's cgroup, whatever the hierarchy. Methods do small blocking file I/O;
/// `kill_all` and `remove` may sleep briefly, so async callers use `spawn_blocking`.
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    fn version(&self) -> CgroupVersion;

    /// Creates the cgroup `name` (idempotent) and applies + verifies `limits`.
    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<CgroupPaths, CgroupError>;

    /// Writes every limit and reads it back; a value that did not take is an error.
    fn apply(&self, cg: &CgroupPaths, limits: &CgroupLimits) -> Result<(), CgroupError>;

    /// Moves a process into the cgroup.
    fn add_pid(&self, cg: &CgroupPaths, pid: i32) -> Result<(), CgroupError> {
        for f in cg.procs_files() {
            fs::write(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in the cgroup.
    fn pids(&self, cg: &CgroupPaths) -> Result<Vec<i32>, CgroupError>;

    /// How many processes the kernel's OOM killer killed in this cgroup so far.
    fn oom_kills(&self, cg: &CgroupPaths) -> Result<u64, CgroupError>;

    fn memory_usage(&self, cg: &CgroupPaths) -> Result<MemoryUsage, CgroupError>;

    /// Cpu time used by the cgroup's processes, in nanoseconds.
    fn cpu_usage_ns(&self, cg: &CgroupPaths) -> Result<u64, CgroupError>;

    /// Memory (current, peak), cpu time (user/system where known, throttling) and the
    /// number of tasks, read in one go.
    fn stats(&self, cg: &CgroupPaths) -> Result<CgroupStats, CgroupError>;

    /// The cpus the cgroup has to itself (`resources.cores`), in the kernel's list form.
    fn cpuset(&self, _cg: &CgroupPaths) -> Option<String> {
        None
    }

    /// Takes over a task cgroup an earlier client run created (a re-attached task):
    /// the core pool, which lives in memory, learns the cpus it holds again (its
    /// dedicated ones when `cores` is set, else it is one of the shared tasks).
    fn adopt(&self, cg: &CgroupPaths, cores: Option<u32>) {
        let _ = (cg, cores);
    }

    /// SIGKILLs every process in the cgroup (freezing it first so nothing forks away)
    /// and waits until it is empty.
    fn kill_all(&self, cg: &CgroupPaths) -> Result<(), CgroupError>;

    /// Removes the (empty) cgroup and frees its cores; a cgroup already gone is fine.
    fn remove(&self, cg: &CgroupPaths) -> Result<(), CgroupError>;
}

/// Reads the cgroup version of the host from a mounts table (`/proc/mounts`): cgroup2 at
/// `/sys/fs/cgroup` is v2; a tmpfs there with cgroup (v1) mounts below is v1 (a hybrid
/// host counts as v1).
pub fn detect_version(mounts: &Path) -> Option<CgroupVersion> {
    detect_version_at(mounts, Path::new("/sys/fs/cgroup"))
}

/// Like `detect_version`, for cgroups mounted at `root`.
pub fn detect_version_at(mounts: &Path, root: &Path) -> Option<CgroupVersion> {
    let text = std::fs::read_to_string(mounts).ok()?;
    let mut at_root = None;
    let mut v1_below = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_dev), Some(point), Some(fstype)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = Path::new(point);
        if point == root {
            at_root = Some(fstype.to_string());
        } else if fstype == "cgroup" && point.starts_with(root) {
            v1_below = true;
        }
    }
    match at_root.as_deref() {
        Some("cgroup2") => Some(CgroupVersion::V2),
        _ if v1_below => Some(CgroupVersion::V1),
        _ => None,
    }
}

/// The manager for the host's hierarchy at `root` (usually `/sys/fs/cgroup`), as told
/// by the mounts table `mounts` (usually `/proc/mounts`).
pub fn detect_manager(mounts: &Path, root: &Path) -> Result<Arc<dyn CgroupManager>, CgroupError> {
    match detect_version_at(mounts, root) {
        Some(CgroupVersion::V1) => Ok(Arc::new(V1Manager::new(root))),
        Some(CgroupVersion::V2) => Ok(Arc::new(V2Manager::new(root))),
        None => Err(CgroupError::NotMounted {
            root: root.to_path_buf(),
            mounts: mounts.to_path_buf(),
        }),
    }
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(CgroupError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn cgroup2_at_the_root_is_v2() {
        let m = mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n");
        assert_eq!(detect_version(m.path()), Some(CgroupVersion::V2));
    }

    #[test]
    fn tmpfs_with_controller_mounts_is_v1_even_when_hybrid() {
        let m = mounts(
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
             cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
        );
        assert_eq!(detect_version(m.path()), Some(CgroupVersion::V1));
    }

    #[test]
    fn no_cgroup_mounts_is_none() {
        let m = mounts("proc /proc proc rw 0 0\ntmpfs /sys/fs/cgroup tmpfs rw 0 0\n");
        assert_eq!(detect_version(m.path()), None);
        let err = detect_manager(m.path(), Path::new("/sys/fs/cgroup")).unwrap_err();
        assert!(matches!(err, CgroupError::NotMounted { .. }));
    }

    fn res(cpu: u64, memory: u64, memory_max: Option<u64>) -> Resources {
        Resources {
            cpu,
            memory,
            memory_max,
            ..Resources::ZERO
        }
    }

    #[test]
    fn limits_map_memory_max_to_the_hard_limit_and_memory_to_the_soft_one() {
        let node = NodeLimits::default();
        let l = CgroupLimits::for_task(&res(500, 64, Some(128)), &node).unwrap();
        assert_eq!(l.memory_hard_bytes(), 128 << 20);
        assert_eq!(l.memory_soft_bytes(), Some(64 << 20));
        assert_eq!(l.cpu_shares(), 512);
        assert_eq!(l.cpu_quota, None);
        assert_eq!(l.pids_max, DEFAULT_PIDS_MAX);
        let plain = CgroupLimits::for_task(&res(1, 16, None), &node).unwrap();
        assert_eq!(plain.memory_hard_bytes(), 16 << 20);
        assert_eq!(plain.memory_soft_bytes(), None);
        assert_eq!(plain.cpu_shares(), 2);
        assert_eq!(plain.cpu_weight(), 1);
    }

    #[test]
    fn a_hard_cpu_limit_is_the_reservation_over_the_mhz_of_one_core() {
        let node = NodeLimits {
            mhz_per_core: 2500,
            pids_limit: 100,
        };
        let mut r = res(1250, 64, None);
        r.cpu_hard_limit = true;
        let l = CgroupLimits::for_task(&r, &node).unwrap();
        // Half a core: 50 ms per 100 ms.
        assert_eq!(
            l.cpu_quota,
            Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        r.cpu = 5000;
        let two = CgroupLimits::for_task(&r, &node).unwrap();
        assert_eq!(two.cpu_quota.unwrap().quota_us, 200_000);
        r.cpu = 1;
        let tiny = CgroupLimits::for_task(&r, &node).unwrap();
        assert_eq!(tiny.cpu_quota.unwrap().quota_us, 1000, "the kernel minimum");
    }

    #[test]
    fn pids_default_to_the_client_limit_and_may_not_exceed_it() {
        let node = NodeLimits {
            mhz_per_core: 1000,
            pids_limit: 200,
        };
        let mut r = res(100, 64, None);
        assert_eq!(CgroupLimits::for_task(&r, &node).unwrap().pids_max, 200);
        r.pids = Some(50);
        assert_eq!(CgroupLimits::for_task(&r, &node).unwrap().pids_max, 50);
        r.pids = Some(201);
        let err = CgroupLimits::for_task(&r, &node).unwrap_err();
        assert!(err.to_string().contains("pids_limit (200)"), "{err}");
    }

    #[test]
    fn cpu_weight_stays_in_range() {
        for mhz in [0, 1, 100, 1000, 100_000, 10_000_000] {
            let l = CgroupLimits::basic(1, mhz, 1);
            assert!((1..=10_000).contains(&l.cpu_weight()), "{mhz}");
            assert!((2..=262_144).contains(&l.cpu_shares()), "{mhz}");
        }
    }

    #[test]
    fn names_with_slashes_are_refused() {
        assert!(check_name("a/b").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("abc-web").is_ok());
    }
}
