//! Ranking: among feasible nodes, which one should take the next allocation.
//!
//! ```text
//!   shuffled nodes (seeded) --cursor--> feasibility chain --> fit --> score --> max
//!                                         (filtered)    (exhausted)   |
//!                                                    stop after `limit` scored nodes
//! ```
//!
//! Score = Nomad's BestFit v3 bin-pack score, normalized to 0..=1 (fuller is better),
//! averaged with a job anti-affinity penalty when the node already runs instances of the
//! group and a reschedule penalty (-1) on the node where the replaced allocation failed. Only a bounded sample is scored (`sample_limit`): the walk resumes where the
//! previous placement stopped, so successive placements look at different nodes.

use orch_common::structs::{AllocMetric, NetworkSpec, Node, Resources};

use super::feasible::{check_fit, FeasibilityChecker, NodeUsage};

/// The highest raw bin-pack score (a perfectly full node).
const BINPACK_MAX_SCORE: f64 = 18.0;

/// Nomad's BestFit v3: `20 - (10^freeCpu + 10^freeMem)`, where `free*` are the fractions
/// of the node's allocatable capacity left free after the placement; normalized to 0..=1.
pub fn binpack_score(node: &Node, used_after: &Resources) -> f64 {
    let cap = node.allocatable();
    let free = |used: u64, cap: u64| {
        if cap == 0 {
            0.0
        } else {
            (1.0 - used as f64 / cap as f64).clamp(0.0, 1.0)
        }
    };
    let total =
        10f64.powf(free(used_after.cpu, cap.cpu)) + 10f64.powf(free(used_after.memory, cap.memory));
    (20.0 - total).clamp(0.0, BINPACK_MAX_SCORE) / BINPACK_MAX_SCORE
}

/// Job anti-affinity: `-(collisions + 1) / desired_count` when the node already has
/// instances of the group (0 otherwise), as in Nomad.
pub fn anti_affinity_penalty(collisions: u32, desired_count: u32) -> Option<f64> {
    if collisions == 0 {
        return None;
    }
    Some(-(f64::from(collisions) + 1.0) / f64::from(desired_count.max(1)))
}

/// How many feasible nodes to score per placement: `max(2, ceil(log2(n)))`.
pub fn sample_limit(nodes: usize) -> usize {
    if nodes <= 2 {
        return 2;
    }
    let log2 = usize::BITS - (nodes - 1).leading_zeros();
    (log2 as usize).max(2)
}

/// Records a node dropped by a feasibility check.
pub fn record_filtered(metric: &mut AllocMetric, node: &Node, reason: &str) {
    metric.nodes_filtered += 1;
    if !node.node_class.is_empty() {
        *metric
            .class_filtered
            .entry(node.node_class.clone())
            .or_default() += 1;
    }
    *metric
        .constraint_filtered
        .entry(reason.to_string())
        .or_default() += 1;
}

/// Records a node that was feasible but had no room in `dimension`.
pub fn record_exhausted(metric: &mut AllocMetric, node: &Node, dimension: &str) {
    metric.nodes_exhausted += 1;
    if !node.node_class.is_empty() {
        *metric
            .class_exhausted
            .entry(node.node_class.clone())
            .or_default() += 1;
    }
    *metric
        .dimension_exhausted
        .entry(dimension.to_string())
        .or_default() += 1;
}

/// What one placement asks for.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub resources: &'a Resources,
    pub network: &'a NetworkSpec,
    /// The group's count (scales the anti-affinity penalty).
    pub desired_count: u32,
    /// The node a rescheduled allocation failed on (scored down, not excluded).
    pub avoid_node: Option<&'a str>,
}

/// The final score: the mean of the bin-pack score and the penalties that apply.
pub fn combined_score(binpack: f64, penalties: &[f64]) -> f64 {
    (binpack + penalties.iter().sum::<f64>()) / (1 + penalties.len()) as f64
}

/// The winner of one selection.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Index into the node slice given to `select`.
    pub node_index: usize,
    pub score: f64,
    /// The node's usage before this placement.
    pub usage: NodeUsage,
}

/// Walks `nodes` from `*cursor`, runs the feasibility chain and fit on each, scores
/// feasible ones until `limit` are scored, and returns the best. Every node looked at
/// is recorded into `metric`. `usage_of` gives a node's usage under the plan so far.
pub fn select(
    nodes: &[Node],
    cursor: &mut usize,
    limit: usize,
    checker: &mut FeasibilityChecker,
    ask: Ask<'_>,
    usage_of: &mut dyn FnMut(&Node) -> NodeUsage,
    metric: &mut AllocMetric,
) -> Option<Choice> {
    let n = nodes.len();
    if n == 0 {
        return None;
    }
    let mut best: Option<Choice> = None;
    let mut scored = 0usize;
    let start = *cursor % n;
    for step in 0..n {
        let idx = (start + step) % n;
        let node = &nodes[idx];
        metric.nodes_evaluated += 1;
        if let Err(reason) = checker.check_node(node) {
            record_filtered(metric, node, &reason);
            continue;
        }
        let usage = usage_of(node);
        if let Err(reason) = checker.check_distinct(&usage) {
            record_filtered(metric, node, &reason);
            continue;
        }
        if let Err(dim) = check_fit(node, &usage, ask.resources, ask.network) {
            record_exhausted(metric, node, dim);
            continue;
        }
        let binpack = binpack_score(node, &usage.used.add(ask.resources));
        let mut penalties = Vec::new();
        if let Some(p) = anti_affinity_penalty(usage.group_allocs, ask.desired_count) {
            penalties.push(p);
        }
        if ask.avoid_node == Some(node.id.as_str()) {
            penalties.push(-1.0);
        }
        let score = combined_score(binpack, &penalties);
        metric.scores.insert(node.id.clone(), score);
        if best.as_ref().is_none_or(|b| score > b.score) {
            best = Some(Choice {
                node_index: idx,
                score,
                usage,
            });
        }
        scored += 1;
        if scored >= limit {
            *cursor = (idx + 1) % n;
            return best;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{JobBuilder, NodeBuilder};

    fn res(cpu: u64, memory: u64) -> Resources {
        Resources {
            cpu,
            memory,
            memory_max: None,
        }
    }

    #[test]
    fn binpack_prefers_the_fuller_node() {
        let node = NodeBuilder::new().cpu(4000).memory(4096).build();
        let empty = binpack_score(&node, &res(0, 0));
        let half = binpack_score(&node, &res(2000, 2048));
        let full = binpack_score(&node, &res(4000, 4096));
        assert!(empty < half && half < full);
        assert!(empty.abs() < 1e-9);
        assert!((full - 1.0).abs() < 1e-9);
    }

    #[test]
    fn anti_affinity_penalizes_collisions() {
        assert_eq!(anti_affinity_penalty(0, 3), None);
        assert_eq!(anti_affinity_penalty(1, 4), Some(-0.5));
    }

    #[test]
    fn penalties_are_averaged_with_the_binpack_score() {
        assert_eq!(combined_score(0.8, &[]), 0.8);
        assert!((combined_score(0.8, &[-1.0]) - (-0.1)).abs() < 1e-9);
        assert!((combined_score(0.9, &[-0.5, -1.0]) - (-0.2)).abs() < 1e-9);
    }

    #[test]
    fn sample_limit_is_log2_with_a_floor_of_two() {
        assert_eq!(sample_limit(1), 2);
        assert_eq!(sample_limit(2), 2);
        assert_eq!(sample_limit(4), 2);
        assert_eq!(sample_limit(5), 3);
        assert_eq!(sample_limit(1024), 10);
        assert_eq!(sample_limit(10_000), 14);
    }

    #[test]
    fn select_scores_at_most_the_limit_and_moves_the_cursor() {
        let nodes: Vec<Node> = (0..8).map(|_| NodeBuilder::new().build()).collect();
        let job = JobBuilder::new("web").build();
        let mut checker = FeasibilityChecker::new(&job, &job.groups[0]);
        let ask = job.groups[0].resources();
        let mut metric = AllocMetric::default();
        let mut cursor = 0;
        let choice = select(
            &nodes,
            &mut cursor,
            3,
            &mut checker,
            Ask {
                resources: &ask,
                network: &job.groups[0].network,
                desired_count: 1,
                avoid_node: None,
            },
            &mut |_| NodeUsage::empty(),
            &mut metric,
        )
        .expect("a node");
        assert_eq!(metric.nodes_evaluated, 3);
        assert_eq!(metric.scores.len(), 3);
        assert_eq!(cursor, 3);
        assert!(choice.node_index < 3);
    }
}
