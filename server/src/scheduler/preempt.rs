//! Preemption: when no node has room for an allocation of a job with priority P (and
//! the cluster's scheduler configuration allows it for the job's type), find a node
//! where evicting allocations of jobs with priority <= P - 10 frees enough, choosing
//! the least disruption:
//!
//! ```text
//!  per feasible node (constraints, distinct_*, but short on cpu/memory/ports):
//!    candidates = allocs the plan leaves alone, other jobs, priority <= P - 10
//!    greedy, lowest priority first: take the smallest alloc that alone closes the
//!      gap, else the one that frees the most (a holder of a wanted static port first)
//!    prune: drop any chosen alloc (highest priority, then smallest first) not needed
//!  best node: fewest evictions, then lowest highest-priority evicted, then least freed
//! ```
//!
//! Only `limit` preemptible nodes are compared (the same bounded sample as ranking).

use std::collections::HashMap;

use orch_common::ids::JobId;
use orch_common::model::{Allocation, Job, Node};

use super::context::PlanBuilder;
use super::feasible::{check_fit, FeasibilityChecker, NodeUsage};
use super::rank::Ask;
use super::state::State;

/// The smallest priority gap that allows an eviction.
pub const PRIORITY_GAP: u8 = 10;

/// A node where the placement fits once `evict` are gone.
#[derive(Debug, Clone)]
pub struct Eviction {
    /// Index into the node slice searched.
    pub node_index: usize,
    /// The node's usage once the evictions are done.
    pub usage: NodeUsage,
    pub evict: Vec<Allocation>,
}

impl Eviction {
    /// Least disruption first: fewer allocs, lower priorities, less freed.
    fn cost(&self, priority_of: &dyn Fn(&Allocation) -> u8, node: &Node) -> (usize, u8, u64) {
        let top = self.evict.iter().map(priority_of).max().unwrap_or(0);
        let freed: u64 = self.evict.iter().map(|a| size(node, a)).sum();
        (self.evict.len(), top, freed)
    }
}

/// Resource size of an allocation relative to the node, in parts per million of its
/// allocatable cpu plus memory (so "smallest" means the same on every node).
fn size(node: &Node, a: &Allocation) -> u64 {
    let cap = node.allocatable();
    let r = a.resources.total();
    let part = |x: u64, c: u64| x.saturating_mul(1_000_000).checked_div(c).unwrap_or(0);
    part(r.cpu, cap.cpu).saturating_add(part(r.memory, cap.memory))
}

fn without(usage: &NodeUsage, a: &Allocation) -> NodeUsage {
    let mut u = usage.clone();
    u.used = u.used.saturating_sub(&a.resources.total());
    for p in &a.resources.ports {
        u.ports.remove(&p.value);
    }
    u
}

/// Job priorities, looked up once per job (allocations in the store do not embed it).
pub struct Priorities<'s> {
    state: &'s dyn State,
    known: HashMap<JobId, u8>,
}

impl<'s> Priorities<'s> {
    pub fn new(state: &'s dyn State) -> Priorities<'s> {
        Priorities {
            state,
            known: HashMap::new(),
        }
    }

    /// The priority of the alloc's job; a job that no longer exists counts as 0 (its
    /// allocations are on their way out anyway).
    pub fn of(&mut self, a: &Allocation) -> u8 {
        if let Some(job) = &a.job {
            return job.priority;
        }
        if let Some(p) = self.known.get(&a.job_id) {
            return *p;
        }
        let p = self.state.job(&a.job_id).map(|j| j.priority).unwrap_or(0);
        self.known.insert(a.job_id.clone(), p);
        p
    }
}

/// The allocations on `node` that the plan leaves alone and that `job_id` may evict:
/// other jobs' at priority `max_victim` or lower, each with its priority.
pub fn victims(
    b: &mut PlanBuilder<'_>,
    node: &Node,
    job_id: &JobId,
    max_victim: u8,
    priorities: &mut Priorities<'_>,
) -> Vec<(Allocation, u8)> {
    b.untouched_allocs(node)
        .into_iter()
        .filter(|a| a.job_id != *job_id)
        .map(|a| {
            let p = priorities.of(&a);
            (a, p)
        })
        .filter(|(_, p)| *p <= max_victim)
        .collect()
}

/// Chooses allocations on `node` whose eviction makes `ask` fit; None when evicting
/// every allowed candidate would not be enough.
pub fn evictions_on_node(
    node: &Node,
    usage: &NodeUsage,
    candidates: Vec<(Allocation, u8)>,
    ask: &Ask<'_>,
) -> Option<(NodeUsage, Vec<(Allocation, u8)>)> {
    let fits = |u: &NodeUsage| check_fit(node, u, ask.resources, ask.network).is_ok();
    // Everything allowed gone is still not enough: no point choosing.
    let all_gone = candidates
        .iter()
        .fold(usage.clone(), |u, (a, _)| without(&u, a));
    if !fits(&all_gone) {
        return None;
    }
    let wanted_static: Vec<u16> = ask
        .network
        .ports
        .iter()
        .filter_map(|p| p.static_port)
        .collect();
    let holds_wanted = |a: &Allocation| {
        a.resources
            .ports
            .iter()
            .any(|p| wanted_static.contains(&p.value))
    };
    let mut left = candidates;
    let mut chosen: Vec<(Allocation, u8)> = Vec::new();
    let mut u = usage.clone();
    while !fits(&u) {
        let lowest = left.iter().map(|(_, p)| *p).min()?;
        let tier = left.iter().enumerate().filter(|(_, (_, p))| *p == lowest);
        // The smallest allocation that alone closes the gap, if there is one.
        let closing = tier
            .clone()
            .filter(|(_, (a, _))| fits(&without(&u, a)))
            .min_by_key(|(_, (a, _))| size(node, a))
            .map(|(i, _)| i);
        let pick = closing.or_else(|| {
            tier.max_by_key(|(_, (a, _))| (holds_wanted(a), size(node, a)))
                .map(|(i, _)| i)
        })?;
        let (a, p) = left.swap_remove(pick);
        u = without(&u, &a);
        chosen.push((a, p));
    }
    // Prune what turned out unnecessary: highest priority first, then the smallest.
    chosen.sort_by_key(|(a, p)| (std::cmp::Reverse(*p), size(node, a)));
    let mut i = 0;
    while i < chosen.len() {
        let back = {
            let a = &chosen[i].0;
            let mut with_back = u.clone();
            with_back.used = with_back.used.add(&a.resources.total());
            with_back
                .ports
                .extend(a.resources.ports.iter().map(|p| p.value));
            with_back
        };
        if fits(&back) {
            u = back;
            chosen.remove(i);
        } else {
            i += 1;
        }
    }
    Some((u, chosen))
}

/// Looks for the least disruptive eviction over `nodes` for one allocation of `job`.
#[allow(clippy::too_many_arguments)]
pub fn find(
    nodes: &[&Node],
    limit: usize,
    checker: &mut FeasibilityChecker,
    job: &Job,
    ask: Ask<'_>,
    b: &mut PlanBuilder<'_>,
    priorities: &mut Priorities<'_>,
    group: &str,
) -> Option<Eviction> {
    let max_victim = job.priority.checked_sub(PRIORITY_GAP)?;
    let mut best: Option<Eviction> = None;
    let mut best_cost = (usize::MAX, u8::MAX, u64::MAX);
    let mut found = 0usize;
    for (idx, node) in nodes.iter().enumerate() {
        if checker.check_candidate(node).is_err() || checker.check_distinct_property(node).is_err()
        {
            continue;
        }
        let usage = b.usage(node, &job.id, group);
        if checker.check_distinct(&usage).is_err() {
            continue;
        }
        let candidates = victims(b, node, &job.id, max_victim, priorities);
        if candidates.is_empty() {
            continue;
        }
        let Some((after, chosen)) = evictions_on_node(node, &usage, candidates, &ask) else {
            continue;
        };
        let prio: HashMap<&str, u8> = chosen.iter().map(|(a, p)| (a.id.as_str(), *p)).collect();
        let option = Eviction {
            node_index: idx,
            usage: after,
            evict: chosen.iter().map(|(a, _)| a.clone()).collect(),
        };
        let cost = option.cost(&|a| prio.get(a.id.as_str()).copied().unwrap_or(0), node);
        if cost < best_cost {
            best_cost = cost;
            best = Some(option);
        }
        found += 1;
        if found >= limit {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::context::add_to_usage;
    use orch_common::mock::{running_alloc, JobBuilder, NodeBuilder};
    use orch_common::model::{AllocatedPort, Resources};

    fn victim(id: &str, cpu: u64, node: &Node, port: Option<u16>) -> Allocation {
        let job = JobBuilder::new(id).cpu(cpu).memory(10).build();
        let mut a = running_alloc(&job, "web", 0, node);
        if let Some(p) = port {
            a.resources.ports.push(AllocatedPort {
                label: "http".into(),
                value: p,
                to: None,
                host_ip: "127.0.0.1".into(),
            });
        }
        a
    }

    fn usage_of(allocs: &[Allocation]) -> NodeUsage {
        let mut u = NodeUsage::empty();
        for a in allocs {
            add_to_usage(&mut u, a, &"other".into(), "web");
        }
        u
    }

    #[test]
    fn the_holder_of_a_wanted_static_port_is_evicted_even_when_cpu_is_free() {
        let node = NodeBuilder::new().cpu(4000).build();
        let big = victim("big", 3000, &node, None);
        let holder = victim("holder", 100, &node, Some(8080));
        let usage = usage_of(&[big.clone(), holder.clone()]);
        let job = JobBuilder::new("vip")
            .cpu(500)
            .static_port("http", 8080)
            .build();
        let ask = job.groups[0].resources();
        let want = Ask {
            resources: &ask,
            network: &job.groups[0].network,
            desired_count: 1,
            avoid_node: None,
        };
        let (after, chosen) =
            evictions_on_node(&node, &usage, vec![(big, 20), (holder.clone(), 20)], &want)
                .expect("room");
        let ids: Vec<&str> = chosen.iter().map(|(a, _)| a.id.as_str()).collect();
        assert_eq!(ids, vec![holder.id.as_str()]);
        assert!(!after.ports.contains(&8080));
    }

    #[test]
    fn nothing_is_chosen_when_evicting_everything_allowed_is_not_enough() {
        let node = NodeBuilder::new().cpu(2000).build();
        let a = victim("a", 1000, &node, None);
        let b = victim("b", 1000, &node, None);
        let usage = usage_of(&[a.clone(), b]);
        let ask = Resources {
            cpu: 1500,
            memory: 10,
            memory_max: None,
            ..Default::default()
        };
        let job = JobBuilder::new("vip").build();
        let want = Ask {
            resources: &ask,
            network: &job.groups[0].network,
            desired_count: 1,
            avoid_node: None,
        };
        // Only `a` may go (the other is too important): 1000 freed < 1500 asked.
        assert!(evictions_on_node(&node, &usage, vec![(a, 20)], &want).is_none());
    }

    #[test]
    fn allocations_that_turn_out_unneeded_are_pruned() {
        let node = NodeBuilder::new().cpu(1800).build();
        let small_a = victim("small-a", 300, &node, None);
        let small_b = victim("small-b", 300, &node, None);
        let big = victim("big", 1200, &node, None);
        let usage = usage_of(&[small_a.clone(), small_b.clone(), big.clone()]);
        let ask = Resources {
            cpu: 1000,
            memory: 10,
            memory_max: None,
            ..Default::default()
        };
        let job = JobBuilder::new("vip").build();
        let want = Ask {
            resources: &ask,
            network: &job.groups[0].network,
            desired_count: 1,
            avoid_node: None,
        };
        // The lowest tier (the two small ones) goes first but is not enough; the big
        // one from the next tier alone is, so the small ones are spared again.
        let candidates = vec![(small_a, 10), (small_b, 10), (big.clone(), 20)];
        let (_, chosen) = evictions_on_node(&node, &usage, candidates, &want).expect("room");
        let ids: Vec<&str> = chosen.iter().map(|(a, _)| a.id.as_str()).collect();
        assert_eq!(ids, vec![big.id.as_str()]);
    }
}
