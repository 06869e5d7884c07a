//! Nodes: a client machine as it registered (`Node`), its status, eligibility and drain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

use super::allocation::Allocation;
use super::resources::{AllocatedResources, Resources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    #[default]
    Initializing,
    Ready,
    Down,
    Disconnected,
}

impl NodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Initializing => "initializing",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
            NodeStatus::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Eligibility {
    #[default]
    Eligible,
    Ineligible,
}

/// A driver as the client fingerprinted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    pub detected: bool,
    pub healthy: bool,
    #[serde(default)]
    pub description: String,
}

/// A client machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub datacenter: String,
    #[serde(default)]
    pub node_class: String,
    #[serde(default = "default_pool")]
    pub node_pool: String,
    #[serde(default)]
    pub status: NodeStatus,
    #[serde(default)]
    pub status_description: String,
    #[serde(default)]
    pub eligibility: Eligibility,
    /// Fingerprinted facts: `cpu.numcores`, `cpu.totalcompute`, `memory.totalbytes`,
    /// `unique.hostname`, `kernel.name`, `kernel.version`, `os.name`, `cpu.arch`,
    /// `cgroup.version`, `driver.raw_exec`, ...
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Total capacity (cpu MHz, memory MiB).
    pub resources: Resources,
    /// Held back for the OS and the agent.
    #[serde(default = "zero_resources")]
    pub reserved: Resources,
    #[serde(default)]
    pub drivers: BTreeMap<String, DriverInfo>,
    /// `host:port` of the client's HTTP API (logs, stats).
    #[serde(default)]
    pub http_addr: String,
    /// Dynamic port range for allocations on this node.
    #[serde(default = "default_min_dynamic_port")]
    pub min_dynamic_port: u16,
    #[serde(default = "default_max_dynamic_port")]
    pub max_dynamic_port: u16,
    #[serde(default)]
    pub reserved_ports: Vec<u16>,
    /// Hash of the attributes that decide feasibility; nodes with one class are alike.
    #[serde(default)]
    pub computed_class: String,
    #[serde(default)]
    pub status_updated_at: u64,
    /// Set while the node is being drained (`orch node drain --enable`); cleared when
    /// the drain completes or is canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStrategy>,
    /// How the last drain ended, once one has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drain: Option<LastDrain>,
    /// SHA-256 (hex) of the node's secret, set by the server at registration; every
    /// later call of the node's client must present the secret. Stored and replicated
    /// with the node, never answered by the API (`Node::without_secret`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_hash: String,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// A drain in progress: the node's allocations move elsewhere, each group at its
/// `migrate` pace, until the deadline; then whatever is left moves at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStrategy {
    /// When everything left is migrated at once (ms since the epoch); `None` = never
    /// (the drain waits for every group's pace, and for batch allocations to finish).
    #[serde(default)]
    pub deadline: Option<u64>,
    /// Leave `system` and `sysbatch` allocations running (the drain completes without them).
    #[serde(default)]
    pub ignore_system_jobs: bool,
    /// When the drain started (ms since the epoch).
    pub started_at: u64,
}

impl DrainStrategy {
    /// True once `now_ms` is at or past the deadline.
    pub fn deadline_reached(&self, now_ms: u64) -> bool {
        self.deadline.is_some_and(|d| now_ms >= d)
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainOutcome {
    /// Every allocation left the node (system ones too unless ignored).
    Complete,
    /// Turned off (`orch node drain --disable`) before it completed.
    Canceled,
}

impl DrainOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DrainOutcome::Complete => "complete",
            DrainOutcome::Canceled => "canceled",
        }
    }
}

/// `Node::last_drain`: the most recent drain that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDrain {
    pub outcome: DrainOutcome,
    pub started_at: u64,
    pub finished_at: u64,
}

fn default_pool() -> String {
    "default".to_string()
}

fn zero_resources() -> Resources {
    Resources::ZERO
}

pub fn default_min_dynamic_port() -> u16 {
    20000
}

pub fn default_max_dynamic_port() -> u16 {
    32000
}

impl Node {
    /// The node as the API answers it: without its secret's hash.
    pub fn without_secret(mut self) -> Node {
        self.secret_hash = String::new();
        self
    }

    /// True when the node is in one of `datacenters` (a job's; `*` matches any).
    pub fn in_datacenters(&self, datacenters: &[String]) -> bool {
        datacenters
            .iter()
            .any(|dc| dc == "*" || *dc == self.datacenter)
    }

    /// The address ports are given on: the fingerprinted IP address, else the host of
    /// the node's HTTP address.
    pub fn host_ip(&self) -> String {
        self.attributes
            .get("unique.network.ip-address")
            .cloned()
            .or_else(|| {
                self.http_addr
                    .rsplit_once(':')
                    .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "127.0.0.1".to_string())
    }

    /// Capacity left for allocations once the reservation is taken off.
    pub fn allocatable(&self) -> Resources {
        self.resources.saturating_sub(&self.reserved)
    }

    /// Ready and eligible: the scheduler may place new work here.
    pub fn is_schedulable(&self) -> bool {
        self.status == NodeStatus::Ready && self.eligibility == Eligibility::Eligible
    }

    /// True when the node has the driver and it is healthy.
    pub fn has_driver(&self, driver: &str) -> bool {
        self.drivers
            .get(driver)
            .map(|d| d.detected && d.healthy)
            .unwrap_or(false)
    }

    /// Computes `computed_class` from everything feasibility looks at.
    pub fn compute_class(&mut self) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.datacenter.hash(&mut h);
        self.node_class.hash(&mut h);
        self.node_pool.hash(&mut h);
        for (k, v) in &self.attributes {
            if !k.starts_with("unique.") {
                k.hash(&mut h);
                v.hash(&mut h);
            }
        }
        self.meta.hash(&mut h);
        let mut drivers: Vec<_> = self
            .drivers
            .iter()
            .filter(|(_, d)| d.detected && d.healthy)
            .map(|(n, _)| n)
            .collect();
        drivers.sort();
        drivers.hash(&mut h);
        self.computed_class = format!("v1:{:016x}", h.finish());
    }
}

/// The summed resources and ports of a node's allocations that hold resources.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAllocated {
    pub resources: Resources,
    /// Every port given to those allocations (a port appears once per allocation).
    pub ports: Vec<u16>,
}

impl Default for NodeAllocated {
    /// Nothing allocated (`Resources::default()` is a task's default ask, not zero).
    fn default() -> Self {
        NodeAllocated {
            resources: Resources::ZERO,
            ports: Vec::new(),
        }
    }
}

impl NodeAllocated {
    /// Counts `a` in (the caller decides whether it holds resources).
    pub fn add(&mut self, a: &Allocation) {
        self.add_part(&NodeAllocated::of(a));
    }

    /// Takes `a` out again (what `add` put in).
    pub fn remove(&mut self, a: &Allocation) {
        self.remove_part(&NodeAllocated::of(a));
    }

    /// What `a` alone uses.
    pub fn of(a: &Allocation) -> NodeAllocated {
        NodeAllocated::of_resources(&a.resources)
    }

    /// What an allocation given `resources` uses.
    pub fn of_resources(resources: &AllocatedResources) -> NodeAllocated {
        NodeAllocated {
            resources: resources.total(),
            ports: resources.ports.iter().map(|p| p.value).collect(),
        }
    }

    pub fn add_part(&mut self, part: &NodeAllocated) {
        self.resources = self.resources.add(&part.resources);
        self.ports.extend_from_slice(&part.ports);
    }

    pub fn remove_part(&mut self, part: &NodeAllocated) {
        self.resources = self.resources.saturating_sub(&part.resources);
        for p in &part.ports {
            if let Some(i) = self.ports.iter().position(|v| v == p) {
                self.ports.swap_remove(i);
            }
        }
    }
}
