//! `CgroupLimits`: the limits of one task's cgroup, computed from its `resources`
//! against what the node allows (`NodeLimits`).

use orch_common::model::Resources;

use super::error::CgroupError;

/// Processes a task may have unless configured otherwise.
pub const DEFAULT_PIDS_MAX: u64 = 1024;

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
            // Saturating: `cpu` is a user's number (the spec bounds it; older jobs may not).
            quota_us: (r.cpu.saturating_mul(CPU_PERIOD_US) / node.mhz_per_core.max(1)).max(1000),
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

    /// Saturating, as every conversion of a user's MiB: a product that wrapped would
    /// write a small, bogus limit into the cgroup.
    pub fn memory_hard_bytes(&self) -> u64 {
        self.memory_hard_mib.saturating_mul(1024 * 1024)
    }

    pub fn memory_soft_bytes(&self) -> Option<u64> {
        self.memory_soft_mib.map(|m| m.saturating_mul(1024 * 1024))
    }

    /// v1 `cpu.shares`: 1024 per 1000 MHz, at least 2 (the kernel minimum).
    pub fn cpu_shares(&self) -> u64 {
        (self.cpu_mhz.saturating_mul(1024) / 1000).clamp(2, 262_144)
    }

    /// v2 `cpu.weight` (1..=10000), mapped from the shares the way runc does.
    pub fn cpu_weight(&self) -> u64 {
        (1 + ((self.cpu_shares() - 2) * 9999) / 262_142).clamp(1, 10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
