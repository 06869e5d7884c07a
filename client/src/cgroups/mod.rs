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
mod detect;
mod error;
mod fs;
pub mod janitor;
mod limits;
mod manager;
mod types;
pub mod v1;
pub mod v2;

pub use detect::{detect_manager, detect_version, detect_version_at};
pub use error::CgroupError;
pub use limits::{CgroupLimits, CpuQuota, NodeLimits, CPU_PERIOD_US, DEFAULT_PIDS_MAX};
pub use manager::CgroupManager;
pub use types::{CgroupPaths, CgroupStats, CgroupVersion, CpuStats, MemoryStats, MemoryUsage};
pub use v1::V1Manager;
pub use v2::V2Manager;
