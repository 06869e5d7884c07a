//! The store's in-memory mirror (`Mirror`): what the scheduler reads for every candidate
//! node (per-node sums of the allocations that hold resources, the decoded node list)
//! and the placements in flight between the plan applier's check and their commit.
//! SQLite stays the durable store and the source of truth: the sums are rebuilt from it
//! on open, and the mirror only saves decoding rows on the hot path.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use orch_common::ids::{AllocId, NodeId};
use orch_common::model::{Allocation, Node, NodeAllocated};

/// The mirror as the store shares it: `apply` changes it, snapshots copy it and give
/// back the node list they decoded.
pub(crate) type SharedMirror = Arc<RwLock<Mirror>>;

/// The in-memory part of the state: per-node allocation sums and the decoded node
/// list. `apply` changes it under the write lock around its commit and `snapshot`
/// copies it (a few `Arc`s) under the read lock with its read transaction, so a
/// snapshot's SQL and memory views are of the same index.
#[derive(Clone, Default)]
pub(crate) struct Mirror {
    /// Node id -> what its allocations that hold resources use.
    pub usage: Arc<HashMap<NodeId, Arc<NodeAllocated>>>,
    /// Every node sorted by id, as of `nodes_index`; `None` until read again after a
    /// node changed.
    pub nodes: Option<Arc<Vec<Node>>>,
    /// The nodes table's index.
    pub nodes_index: u64,
    /// Placements the plan applier accepted and sent to the log, not committed yet.
    pub in_flight: Arc<InFlight>,
}

impl Mirror {
    /// What the node's allocations use, counting placements in flight.
    pub fn node_allocated(&self, node_id: &str) -> NodeAllocated {
        let mut sum = self
            .usage
            .get(node_id)
            .map(|u| NodeAllocated::clone(u))
            .unwrap_or_default();
        if let Some((_, extra)) = self.in_flight.sums.get(node_id) {
            sum.add_part(extra);
        }
        sum
    }

    /// Keeps a node list a snapshot decoded, if the nodes did not change since.
    pub(crate) fn offer_nodes(&mut self, nodes_index: u64, nodes: &Arc<Vec<Node>>) {
        if self.nodes_index == nodes_index && self.nodes.is_none() {
            self.nodes = Some(nodes.clone());
        }
    }
}

/// Placements between the plan applier's check and their commit. Snapshots count them
/// as used, so the applier can check the next plan (and a worker compute one) while the
/// previous commits, without handing out the same room twice. `apply` drops each one
/// as it commits (under the mirror's lock: it is counted in exactly one place).
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    /// Allocation id -> its node and what it uses.
    allocs: HashMap<AllocId, (NodeId, NodeAllocated)>,
    /// Node id -> how many placements in flight it has, and their sum.
    sums: HashMap<NodeId, (u32, NodeAllocated)>,
}

impl InFlight {
    pub(crate) fn add(&mut self, alloc: &Allocation) {
        let part = NodeAllocated::of(alloc);
        let (count, sum) = self.sums.entry(alloc.node_id.clone()).or_default();
        *count += 1;
        sum.add_part(&part);
        self.allocs
            .insert(alloc.id.clone(), (alloc.node_id.clone(), part));
    }

    pub(crate) fn remove(&mut self, alloc_id: &str) {
        let Some((node_id, part)) = self.allocs.remove(alloc_id) else {
            return;
        };
        if let Some((count, sum)) = self.sums.get_mut(&node_id) {
            *count -= 1;
            sum.remove_part(&part);
            if *count == 0 {
                self.sums.remove(&node_id);
            }
        }
    }

    pub(crate) fn contains_any<'a>(&self, mut ids: impl Iterator<Item = &'a AllocId>) -> bool {
        !self.allocs.is_empty() && ids.any(|id| self.allocs.contains_key(id))
    }
}
