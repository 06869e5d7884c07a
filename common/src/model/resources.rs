//! Resources: what a task reserves (`Resources`, with `fits` and the arithmetic the
//! bin-packer scores with), the ports a group asks for and what an allocation was given.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a task reserves (and is limited to) on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// MHz, a reservation (turned into cpu weight).
    #[serde(default = "default_cpu")]
    pub cpu: u64,
    /// MiB, a hard limit (and the reservation).
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// MiB; when set, the hard cap while `memory` is the soft reservation.
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// Caps the task at its `cpu` reservation (a cfs quota) instead of letting it use
    /// idle cpu; enforced by the client only, the scheduler counts `cpu` either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu_hard_limit: bool,
    /// Whole cpus given to this task alone (a cpuset); the client picks which. The
    /// scheduler counts them against the node's `cores` (its cpu count) and still
    /// counts `cpu` (MHz), so jobs set `cpu` to cover the cores too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Most processes (and threads) the task may have; default: the client's
    /// `pids_limit`, which is also the most a task may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

pub fn default_cpu() -> u64 {
    100
}

pub fn default_memory() -> u64 {
    300
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: default_memory(),
            memory_max: None,
            cpu_hard_limit: false,
            cores: None,
            pids: None,
        }
    }
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu: 0,
        memory: 0,
        memory_max: None,
        cpu_hard_limit: false,
        cores: None,
        pids: None,
    };

    /// The sum, saturating: requests come from users, and a sum that wrapped would be
    /// a small number that fits anywhere (a saturated one fits nowhere).
    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_add(o.cpu),
            memory: self.memory.saturating_add(o.memory),
            cores: match (self.cores, o.cores) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            },
            ..Resources::ZERO
        }
    }

    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_sub(o.cpu),
            memory: self.memory.saturating_sub(o.memory),
            // A node without a core count (`None`) stays without one.
            cores: self.cores.map(|c| c.saturating_sub(o.cores.unwrap_or(0))),
            ..Resources::ZERO
        }
    }

    /// `Ok` when `self` (a request) fits in `available`; else the exhausted dimension.
    pub fn fits(&self, available: &Resources) -> Result<(), &'static str> {
        if self.cpu > available.cpu {
            return Err("cpu");
        }
        if self.memory > available.memory {
            return Err("memory");
        }
        // Only nodes that report their cores (`cores` in node resources) are checked.
        if let (Some(want), Some(free)) = (self.cores, available.cores) {
            if want > free {
                return Err("cores");
            }
        }
        Ok(())
    }
}

/// `[group.G.network]`: ports the group needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

/// One port label; `static_port` pins it, otherwise it is dynamic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub label: String,
    #[serde(rename = "static", default)]
    pub static_port: Option<u16>,
    #[serde(default)]
    pub to: Option<u16>,
}

/// A port given to an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedPort {
    pub label: String,
    pub value: u16,
    #[serde(default)]
    pub to: Option<u16>,
    pub host_ip: String,
}

/// Resources given to an allocation: per task, plus the group's ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllocatedResources {
    pub tasks: BTreeMap<String, Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<AllocatedPort>,
}

impl AllocatedResources {
    pub fn total(&self) -> Resources {
        self.tasks
            .values()
            .fold(Resources::ZERO, |acc, r| acc.add(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedicated_cores_are_counted_only_on_nodes_that_report_theirs() {
        let ask = |cores| Resources {
            cpu: 10,
            memory: 10,
            cores,
            ..Resources::ZERO
        };
        let node = Resources {
            cpu: 5000,
            memory: 4096,
            cores: Some(2),
            ..Resources::ZERO
        };
        let used = ask(Some(1)).add(&ask(None));
        assert_eq!(used.cores, Some(1));
        let free = node.saturating_sub(&used);
        assert_eq!(free.cores, Some(1));
        assert_eq!(ask(Some(1)).fits(&free), Ok(()));
        assert_eq!(ask(Some(2)).fits(&free), Err("cores"));
        assert_eq!(ask(None).fits(&free), Ok(()));
        // An older node without a core count never refuses on cores.
        let old = Resources {
            cores: None,
            ..node
        };
        assert_eq!(ask(Some(64)).fits(&old.saturating_sub(&used)), Ok(()));
        // Serialized only when set, so older readers are not surprised.
        let json = serde_json::to_value(ask(None)).unwrap();
        assert!(json.get("cores").is_none(), "{json}");
    }

    #[test]
    fn resources_fit_reports_the_exhausted_dimension() {
        let want = Resources {
            cpu: 100,
            memory: 64,
            memory_max: None,
            ..Default::default()
        };
        let small = Resources {
            cpu: 1000,
            memory: 32,
            memory_max: None,
            ..Default::default()
        };
        assert_eq!(want.fits(&small), Err("memory"));
        assert!(want.fits(&want).is_ok());
    }

    #[test]
    fn adding_huge_requests_saturates_instead_of_wrapping() {
        let huge = Resources {
            cpu: u64::MAX - 1,
            memory: u64::MAX / 2 + 10,
            cores: Some(u32::MAX),
            ..Resources::ZERO
        };
        let sum = huge.add(&huge);
        assert_eq!(sum.cpu, u64::MAX);
        assert_eq!(sum.memory, u64::MAX);
        assert_eq!(sum.cores, Some(u32::MAX));
        // A saturated sum never fits, so nothing is placed on a wrapped small number.
        let node = Resources {
            cpu: 4000,
            memory: 8192,
            ..Resources::ZERO
        };
        assert_eq!(sum.fits(&node), Err("cpu"));
    }
}
