//! Nodes: `node()` (Nomad's `mock.Node()`) and `NodeBuilder`.

use std::collections::BTreeMap;

use crate::ids;
use crate::ids::NodeId;
use crate::model::{DrainStrategy, DriverInfo, Eligibility, Node, NodeStatus, Resources};

/// A ready, eligible linux node in dc1 with a random id: 4000 MHz, 8192 MiB, and the
/// `raw_exec` and `mock` drivers.
pub fn node() -> Node {
    NodeBuilder::new().build()
}

fn healthy_driver() -> DriverInfo {
    DriverInfo {
        detected: true,
        healthy: true,
        description: String::new(),
    }
}

/// Builds a node: by default what `node()` returns. `build` computes its class.
pub struct NodeBuilder(Node);

impl Default for NodeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeBuilder {
    pub fn new() -> NodeBuilder {
        let id = ids::new_id();
        NodeBuilder(Node {
            name: format!("node-{}", ids::short(&id)),
            id: id.into(),
            datacenter: "dc1".to_string(),
            node_class: String::new(),
            node_pool: "default".to_string(),
            status: NodeStatus::Ready,
            status_description: String::new(),
            eligibility: Eligibility::Eligible,
            attributes: [
                ("kernel.name", "linux"),
                ("arch", "amd64"),
                ("os.name", "debian"),
                ("cpu.numcores", "4"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            meta: BTreeMap::new(),
            resources: Resources {
                cpu: 4000,
                memory: 8192,
                ..Resources::ZERO
            },
            reserved: Resources::ZERO,
            secret_hash: String::new(),
            drivers: [("raw_exec", healthy_driver()), ("mock", healthy_driver())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            http_addr: "127.0.0.1:4646".to_string(),
            min_dynamic_port: 20000,
            max_dynamic_port: 32000,
            reserved_ports: Vec::new(),
            computed_class: String::new(),
            status_updated_at: 0,
            drain: None,
            last_drain: None,
            create_index: 0,
            modify_index: 0,
        })
    }

    /// The id, and the name `node-ID` that goes with it (`name` after this to differ).
    pub fn id(mut self, id: impl Into<NodeId>) -> Self {
        self.0.id = id.into();
        self.0.name = format!("node-{}", self.0.id);
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.to_string();
        self
    }

    pub fn datacenter(mut self, dc: &str) -> Self {
        self.0.datacenter = dc.to_string();
        self
    }

    pub fn class(mut self, class: &str) -> Self {
        self.0.node_class = class.to_string();
        self
    }

    pub fn cpu(mut self, mhz: u64) -> Self {
        self.0.resources.cpu = mhz;
        self
    }

    pub fn memory(mut self, mib: u64) -> Self {
        self.0.resources.memory = mib;
        self
    }

    /// Held back for the OS and the agent.
    pub fn reserved(mut self, cpu: u64, memory: u64) -> Self {
        self.0.reserved = Resources {
            cpu,
            memory,
            ..Resources::ZERO
        };
        self
    }

    /// Adds (or replaces) one attribute.
    pub fn attr(mut self, k: &str, v: &str) -> Self {
        self.0.attributes.insert(k.to_string(), v.to_string());
        self
    }

    /// Replaces all the attributes with these.
    pub fn attrs(mut self, attrs: &[(&str, &str)]) -> Self {
        self.0.attributes = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    pub fn meta(mut self, k: &str, v: &str) -> Self {
        self.0.meta.insert(k.to_string(), v.to_string());
        self
    }

    /// Adds a detected, healthy driver.
    pub fn driver(mut self, name: &str) -> Self {
        self.0.drivers.insert(name.to_string(), healthy_driver());
        self
    }

    pub fn without_driver(mut self, name: &str) -> Self {
        self.0.drivers.remove(name);
        self
    }

    pub fn status(mut self, status: NodeStatus) -> Self {
        self.0.status = status;
        self
    }

    pub fn eligibility(mut self, e: Eligibility) -> Self {
        self.0.eligibility = e;
        self
    }

    /// A drain in progress.
    pub fn drain(mut self, strategy: DrainStrategy) -> Self {
        self.0.drain = Some(strategy);
        self
    }

    /// The client's HTTP address (`host:port`).
    pub fn http_addr(mut self, addr: &str) -> Self {
        self.0.http_addr = addr.to_string();
        self
    }

    pub fn port_range(mut self, min: u16, max: u16) -> Self {
        self.0.min_dynamic_port = min;
        self.0.max_dynamic_port = max;
        self
    }

    pub fn reserved_ports(mut self, ports: &[u16]) -> Self {
        self.0.reserved_ports = ports.to_vec();
        self
    }

    pub fn build(mut self) -> Node {
        self.0.compute_class();
        self.0
    }
}
