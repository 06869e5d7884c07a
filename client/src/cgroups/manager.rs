//! The `CgroupManager` trait: one task's cgroup, whatever the hierarchy (the v1 and
//! v2 backends implement it).

use super::error::CgroupError;
use super::fs;
use super::limits::CgroupLimits;
use super::types::{CgroupPaths, CgroupStats, CgroupVersion, MemoryUsage};

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

/// Refuses cgroup names that could leave the parent directory or hide in it.
pub(crate) fn check_name(name: &str) -> Result<(), CgroupError> {
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

    #[test]
    fn names_with_slashes_are_refused() {
        assert!(check_name("a/b").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("abc-web").is_ok());
    }
}
