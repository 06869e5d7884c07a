//! Scenario tests for the placement features (one scenario per test): every constraint
//! operator at job and group level, distinct_*, affinities, spreads, the spread
//! algorithm, ports and reserved resources, system jobs on joining nodes, preemption
//! and plan annotations; then property tests over random clusters.

use std::collections::{BTreeMap, BTreeSet};

use orch_common::ids::JobId;
use orch_common::mock::{self, running_alloc, JobBuilder, NodeBuilder};
use orch_common::model::{
    triggers, DesiredStatus, Eligibility, EvalStatus, JobType, Node, SchedulerAlgorithm,
};

use super::feasible::FeasibilityChecker;
use super::testing::Harness;
use crate::scheduler::PlannerError;

/// Two nodes that differ in every attribute the operator tests look at.
fn old_and_new() -> Vec<Node> {
    vec![
        NodeBuilder::new()
            .name("old")
            .class("slow")
            .attr("kernel.version", "5.4.0-150-generic")
            .attr("app.version", "1.2.0-beta.1")
            .attr("cpu.numcores", "4")
            .attr("tags", "ssd")
            .meta("rack", "r1")
            .build(),
        NodeBuilder::new()
            .name("new")
            .class("fast")
            .attr("kernel.version", "6.1")
            .attr("app.version", "1.2.0")
            .attr("cpu.numcores", "16")
            .attr("tags", "ssd,gpu")
            .attr("gpu.model", "a100")
            .meta("rack", "r2")
            .build(),
    ]
}

/// Where one instance constrained by (attribute, operator, value) lands, at job level
/// and at group level: the names of the nodes used (empty when it failed).
fn lands_on(attribute: &str, operator: &str, value: &str) -> (Vec<String>, Vec<String>) {
    let run = |job| {
        let mut h = Harness::new(&old_and_new());
        let eval = h.register(job);
        h.process(&eval).expect("process");
        let mut names: Vec<String> = h.last_placed().into_iter().map(|a| a.node_name).collect();
        names.sort();
        names
    };
    let job_level = run(JobBuilder::new("j")
        .count(2)
        .constraint(attribute, operator, value)
        .build());
    let group_level = run(JobBuilder::new("j")
        .count(2)
        .group_constraint(attribute, operator, value)
        .build());
    (job_level, group_level)
}

fn both(names: &[&str]) -> (Vec<String>, Vec<String>) {
    let v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    (v.clone(), v)
}

fn placed_names(h: &Harness) -> Vec<String> {
    let mut v: Vec<String> = h.last_placed().into_iter().map(|a| a.node_name).collect();
    v.sort();
    v
}

// ------------------------------------------------------------------ constraint operators

#[test]
fn equality_operator_at_job_and_group_level() {
    assert_eq!(
        lands_on("${node.class}", "=", "fast"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${node.class}", "==", "slow"),
        both(&["old", "old"])
    );
}

#[test]
fn inequality_operator_at_job_and_group_level() {
    assert_eq!(lands_on("${meta.rack}", "!=", "r2"), both(&["old", "old"]));
}

#[test]
fn numeric_order_operators_at_job_and_group_level() {
    // Numerically 16 > 8 although "16" < "8" as text.
    assert_eq!(
        lands_on("${attr.cpu.numcores}", ">", "8"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.cpu.numcores}", ">=", "16"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.cpu.numcores}", "<", "8"),
        both(&["old", "old"])
    );
    assert_eq!(
        lands_on("${attr.cpu.numcores}", "<=", "4"),
        both(&["old", "old"])
    );
}

#[test]
fn lexical_order_when_either_side_is_not_a_number() {
    assert_eq!(lands_on("${meta.rack}", ">", "r1"), both(&["new", "new"]));
    assert_eq!(lands_on("${meta.rack}", "<", "r2"), both(&["old", "old"]));
}

#[test]
fn regexp_operator_at_job_and_group_level() {
    assert_eq!(
        lands_on("${attr.tags}", "regexp", "gpu$"),
        both(&["new", "new"])
    );
}

#[test]
fn version_operator_takes_ranges_and_loose_versions() {
    assert_eq!(
        lands_on("${attr.kernel.version}", "version", ">= 6.0, < 7"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.kernel.version}", "version", "~> 5.4"),
        both(&["old", "old"])
    );
}

#[test]
fn semver_operator_orders_pre_releases_before_releases() {
    assert_eq!(
        lands_on("${attr.app.version}", "semver", ">= 1.2.0"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.app.version}", "semver", "< 1.2.0"),
        both(&["old", "old"])
    );
}

#[test]
fn set_contains_needs_every_value() {
    assert_eq!(
        lands_on("${attr.tags}", "set_contains", "gpu,ssd"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.tags}", "set_contains", "ssd"),
        both(&["new", "old"])
    );
}

#[test]
fn set_contains_any_needs_one_value() {
    assert_eq!(
        lands_on("${attr.tags}", "set_contains_any", "tpu,gpu"),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.tags}", "set_contains_any", "tpu"),
        both(&[])
    );
}

#[test]
fn is_set_and_is_not_set_at_job_and_group_level() {
    assert_eq!(
        lands_on("${attr.gpu.model}", "is_set", ""),
        both(&["new", "new"])
    );
    assert_eq!(
        lands_on("${attr.gpu.model}", "is_not_set", ""),
        both(&["old", "old"])
    );
}

#[test]
fn node_targets_resolve_for_constraints() {
    assert_eq!(lands_on("${node.name}", "=", "old"), both(&["old", "old"]));
    assert_eq!(
        lands_on("${node.datacenter}", "=", "dc1"),
        both(&["new", "old"])
    );
    assert_eq!(
        lands_on("${node.pool}", "=", "default"),
        both(&["new", "old"])
    );
}

#[test]
fn distinct_hosts_at_job_level_spreads_instances_one_per_node() {
    assert_eq!(
        lands_on("", "distinct_hosts", "true"),
        both(&["new", "old"])
    );
}

#[test]
fn distinct_property_allows_one_allocation_per_value_by_default() {
    let nodes: Vec<Node> = ["r1", "r1", "r2"]
        .iter()
        .enumerate()
        .map(|(i, rack)| {
            NodeBuilder::new()
                .name(&format!("n{i}"))
                .meta("rack", rack)
                .build()
        })
        .collect();
    let mut h = Harness::new(&nodes);
    let job = JobBuilder::new("web")
        .count(3)
        .group_constraint("${meta.rack}", "distinct_property", "")
        .build();
    let eval = h.register(job);
    h.process(&eval).expect("process");
    let racks: BTreeSet<String> = h
        .last_placed()
        .iter()
        .map(|a| nodes.iter().find(|n| n.id == a.node_id).expect("node").meta["rack"].clone())
        .collect();
    assert_eq!(h.last_placed().len(), 2);
    assert_eq!(racks.len(), 2);
    let failed = &h.last_update().failed_tg_allocs["web"];
    assert!(
        failed
            .describe()
            .contains("filtered by distinct_property ${meta.rack}"),
        "{}",
        failed.describe()
    );
}

#[test]
fn distinct_property_limit_counts_existing_allocations() {
    let a = NodeBuilder::new().name("a").meta("rack", "r1").build();
    let b = NodeBuilder::new().name("b").meta("rack", "r1").build();
    let c = NodeBuilder::new().name("c").meta("rack", "r2").build();
    let mut h = Harness::new(&[a.clone(), b, c]);
    let job = JobBuilder::new("web")
        .count(3)
        .constraint("${meta.rack}", "distinct_property", "2")
        .build();
    h.state.upsert_job(job.clone());
    h.state.upsert_alloc(running_alloc(&job, "web", 0, &a));
    h.state.upsert_alloc(running_alloc(&job, "web", 1, &a));
    let eval = mock::eval(&job);
    h.process(&eval).expect("process");
    // r1 already holds two: the third instance has to go to r2.
    assert_eq!(placed_names(&h), vec!["c"]);
}

#[test]
fn distinct_property_rejects_nodes_without_the_property() {
    let with = NodeBuilder::new().name("with").meta("rack", "r1").build();
    let without = NodeBuilder::new().name("without").build();
    let mut h = Harness::new(&[with, without]);
    let job = JobBuilder::new("web")
        .count(2)
        .group_constraint("${meta.rack}", "distinct_property", "5")
        .build();
    let eval = h.register(job);
    h.process(&eval).expect("process");
    assert_eq!(placed_names(&h), vec!["with", "with"]);
}

#[test]
fn class_level_checks_run_once_per_class_over_ten_thousand_nodes() {
    let nodes: Vec<Node> = (0..10_000)
        .map(|i| {
            NodeBuilder::new()
                .id(format!("node-{i:05}"))
                .class(["a", "b", "c"][i % 3])
                .build()
        })
        .collect();
    let job = JobBuilder::new("web")
        .constraint("${attr.kernel.name}", "=", "linux")
        .group_constraint("${node.class}", "!=", "c")
        .build();
    let mut checker = FeasibilityChecker::new(&job, &job.groups[0]);
    let feasible = nodes
        .iter()
        .filter(|n| checker.check_node(n).is_ok())
        .count();
    assert_eq!(feasible, 6_667);
    assert_eq!(checker.class_checks, 3);
    assert_eq!(
        checker.class_eligibility.values().filter(|ok| **ok).count(),
        2
    );
}

#[test]
fn rejections_name_the_constraint_driver_and_distinct_hosts() {
    let plain = NodeBuilder::new()
        .name("plain")
        .attr("kernel.name", "darwin")
        .build();
    let mut h = Harness::new(&[plain]);
    let job = JobBuilder::new("web")
        .constraint("${attr.kernel.name}", "=", "linux")
        .build();
    let eval = h.register(job);
    h.process(&eval).expect("process");
    assert_eq!(
        h.last_update().failed_tg_allocs["web"].describe(),
        "1 node evaluated: 1 filtered by constraint ${attr.kernel.name} = linux"
    );
}

// ------------------------------------------------------------------ ranking

#[test]
fn affinity_pulls_toward_matching_nodes() {
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            NodeBuilder::new()
                .name(&format!("slow{i}"))
                .class("slow")
                .build()
        })
        .collect();
    nodes.push(NodeBuilder::new().name("fast").class("fast").build());
    let mut h = Harness::new(&nodes);
    let eval = h.register(
        JobBuilder::new("web")
            .affinity("${node.class}", "=", "fast", 100)
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(placed_names(&h), vec!["fast"]);
}

#[test]
fn job_level_affinity_pulls_too() {
    let mut h = Harness::new(&old_and_new());
    let eval = h.register(
        JobBuilder::new("web")
            .job_affinity("${meta.rack}", "=", "r1", 80)
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(placed_names(&h), vec!["old"]);
}

#[test]
fn negative_affinity_pushes_away_from_matching_nodes() {
    let mut h = Harness::new(&old_and_new());
    let eval = h.register(
        JobBuilder::new("web")
            .count(2)
            .affinity("${attr.tags}", "set_contains", "gpu", -100)
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(placed_names(&h), vec!["old", "old"]);
}

fn racks(per_rack: &[(&str, usize)]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (rack, n) in per_rack {
        for i in 0..*n {
            nodes.push(
                NodeBuilder::new()
                    .name(&format!("{rack}-{i}"))
                    .meta("rack", rack)
                    .cpu(20_000)
                    .memory(65_536)
                    .build(),
            );
        }
    }
    nodes
}

fn per_rack(h: &Harness) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in h.last_placed() {
        let rack = a.node_name.split('-').next().unwrap_or("").to_string();
        *m.entry(rack).or_default() += 1;
    }
    m
}

#[test]
fn spread_without_targets_evens_out_over_the_values_seen() {
    let mut h = Harness::new(&racks(&[("r1", 3), ("r2", 3), ("r3", 3)]));
    let eval = h.register(
        JobBuilder::new("web")
            .count(9)
            .spread("${meta.rack}", 100, &[])
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(
        per_rack(&h),
        BTreeMap::from([("r1".into(), 3), ("r2".into(), 3), ("r3".into(), 3)])
    );
}

#[test]
fn spread_evens_out_at_scale_with_the_bounded_sample() {
    let nodes: Vec<Node> = (0..2_000)
        .map(|i| {
            NodeBuilder::new()
                .id(format!("node-{i:05}"))
                .meta("rack", &format!("r{}", i % 20))
                .build()
        })
        .collect();
    let mut h = Harness::new(&nodes);
    h.state.share_nodes();
    let eval = h.register(
        JobBuilder::new("web")
            .count(200)
            .spread("${meta.rack}", 50, &[])
            .build(),
    );
    h.process(&eval).expect("process");
    let rack_of: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.meta["rack"].as_str()))
        .collect();
    let mut racks: BTreeMap<&str, usize> = BTreeMap::new();
    for a in h.last_placed() {
        *racks.entry(rack_of[a.node_id.as_str()]).or_default() += 1;
    }
    assert_eq!(racks.len(), 20);
    let (min, max) = (racks.values().min(), racks.values().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= 2),
        "{racks:?}"
    );
}

#[test]
fn spread_honours_target_percentages() {
    // Enough nodes per rack that anti-affinity never outweighs the spread.
    let mut h = Harness::new(&racks(&[("r1", 8), ("r2", 8)]));
    let eval = h.register(
        JobBuilder::new("web")
            .count(8)
            .spread("${meta.rack}", 100, &[("r1", 75), ("r2", 25)])
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(
        per_rack(&h),
        BTreeMap::from([("r1".into(), 6), ("r2".into(), 2)])
    );
}

#[test]
fn spread_algorithm_prefers_the_emptiest_node() {
    let busy = NodeBuilder::new().name("busy").build();
    let idle = NodeBuilder::new().name("idle").build();
    let mut h = Harness::new(&[busy.clone(), idle]);
    h.state.config.scheduler_algorithm = SchedulerAlgorithm::Spread;
    let other = JobBuilder::new("other").cpu(2000).memory(4096).build();
    h.state.upsert_job(other.clone());
    h.state.upsert_alloc(running_alloc(&other, "web", 0, &busy));
    let eval = h.register(JobBuilder::new("web").build());
    h.process(&eval).expect("process");
    assert_eq!(placed_names(&h), vec!["idle"]);
}

#[test]
fn only_the_best_few_scores_are_kept_in_the_metric() {
    let nodes: Vec<Node> = (0..40).map(|_| mock::node()).collect();
    let mut h = Harness::new(&nodes);
    let eval = h.register(
        JobBuilder::new("web")
            .affinity("${node.class}", "=", "x", 10)
            .build(),
    );
    h.process(&eval).expect("process");
    let placed = h.last_placed();
    let metric = placed[0].metrics.as_ref().expect("metric");
    assert!(metric.nodes_evaluated >= super::rank::MIN_SAMPLE_WITH_PREFERENCES as u32);
    assert_eq!(metric.scores.len(), super::rank::SCORES_KEPT);
    let best = metric.scores.values().cloned().fold(f64::MIN, f64::max);
    assert_eq!(metric.scores.get(placed[0].node_id.as_str()), Some(&best));
}

// ------------------------------------------------------------------ ports and reservations

#[test]
fn static_port_in_use_sends_the_allocation_elsewhere() {
    let taken = NodeBuilder::new().name("taken").build();
    let free = NodeBuilder::new().name("free").build();
    let mut h = Harness::new(&[taken.clone(), free]);
    let other = JobBuilder::new("other").static_port("http", 8080).build();
    h.state.upsert_job(other.clone());
    let mut holder = running_alloc(&other, "web", 0, &taken);
    holder.resources.ports = vec![orch_common::model::AllocatedPort {
        label: "http".into(),
        value: 8080,
        to: None,
        host_ip: "127.0.0.1".into(),
    }];
    h.state.upsert_alloc(holder);
    let eval = h.register(JobBuilder::new("web").static_port("http", 8080).build());
    h.process(&eval).expect("process");
    assert_eq!(placed_names(&h), vec!["free"]);
}

#[test]
fn static_port_conflict_on_the_only_node_is_exhausted_on_ports() {
    let mut h = Harness::new(&[NodeBuilder::new().reserved_ports(&[8080]).build()]);
    let eval = h.register(JobBuilder::new("web").static_port("http", 8080).build());
    h.process(&eval).expect("process");
    assert!(h.last_placed().is_empty());
    assert_eq!(
        h.last_update().failed_tg_allocs["web"].describe(),
        "1 node evaluated: 1 exhausted on ports"
    );
}

#[test]
fn dynamic_ports_stay_unique_within_one_plan_on_a_small_range() {
    let node = NodeBuilder::new()
        .port_range(30000, 30005)
        .reserved_ports(&[30002])
        .build();
    let mut h = Harness::new(&[node]);
    let eval = h.register(
        JobBuilder::new("web")
            .count(3)
            .cpu(10)
            .memory(10)
            .dynamic_port("a")
            .build(),
    );
    h.process(&eval).expect("process");
    let ports: Vec<u16> = h
        .last_placed()
        .iter()
        .flat_map(|a| a.resources.ports.iter().map(|p| p.value))
        .collect();
    let unique: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(ports.len(), 3);
    assert_eq!(unique.len(), 3);
    assert!(!unique.contains(&30002));
    assert!(unique.iter().all(|p| (30000..=30005).contains(p)));
}

#[test]
fn reserved_cpu_and_memory_are_not_given_out() {
    let mut h = Harness::new(&[NodeBuilder::new().cpu(1000).reserved(600, 0).build()]);
    let eval = h.register(JobBuilder::new("web").count(2).cpu(300).build());
    h.process(&eval).expect("process");
    assert_eq!(h.last_placed().len(), 1);
    assert!(h.last_update().failed_tg_allocs["web"]
        .describe()
        .contains("exhausted on cpu"));
}

// ------------------------------------------------------------------ system jobs

#[test]
fn system_job_reaches_a_node_that_becomes_eligible_again() {
    let a = mock::node();
    let b = NodeBuilder::new()
        .eligibility(Eligibility::Ineligible)
        .build();
    let mut h = Harness::new(&[a.clone(), b.clone()]);
    let eval = h.register(JobBuilder::new("sys").job_type(JobType::System).build());
    h.process(&eval).expect("place");
    assert_eq!(h.last_placed().len(), 1);
    let mut back = b.clone();
    back.eligibility = Eligibility::Eligible;
    h.state.upsert_node(back);
    let mut update = mock::eval(&h.state.jobs["sys"].clone());
    update.triggered_by = triggers::NODE_UPDATE.into();
    update.node_id = Some(b.id.clone());
    h.process(&update).expect("again");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].node_id, b.id);
}

#[test]
fn system_job_short_on_room_everywhere_leaves_one_blocked_eval() {
    let nodes: Vec<Node> = (0..5)
        .map(|_| NodeBuilder::new().memory(100).build())
        .collect();
    let mut h = Harness::new(&nodes);
    let eval = h.register(JobBuilder::new("sys").job_type(JobType::System).build());
    h.process(&eval).expect("process");
    let blocked: Vec<_> = h
        .created
        .iter()
        .filter(|e| e.status == EvalStatus::Blocked)
        .collect();
    assert_eq!(blocked.len(), 1);
    assert_eq!(h.last_update().queued_allocations["web"], 5);
}

#[test]
fn sysbatch_runs_on_a_joining_node_but_never_again_where_it_finished() {
    let a = mock::node();
    let mut h = Harness::new(std::slice::from_ref(&a));
    let eval = h.register(JobBuilder::new("sb").job_type(JobType::Sysbatch).build());
    h.process(&eval).expect("place");
    for alloc in h.state.allocs.values_mut() {
        alloc.client_status = orch_common::model::ClientStatus::Complete;
    }
    let late = mock::node();
    h.state.upsert_node(late.clone());
    h.process(&mock::eval(&h.state.jobs["sb"].clone()))
        .expect("again");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].node_id, late.id);
}

// ------------------------------------------------------------------ preemption

/// A node full of `victims` (job id, priority, cpu) and a job of priority 70 that
/// needs `cpu`, under a configuration with preemption on for services.
fn crowded(victims: &[(&str, u8, u64)], cpu: u64, service_preemption: bool) -> Harness {
    let node = NodeBuilder::new().name("only").cpu(4000).build();
    let mut h = Harness::new(std::slice::from_ref(&node));
    h.state.config.preemption_config.service_scheduler_enabled = service_preemption;
    for (id, priority, vcpu) in victims {
        let job = JobBuilder::new(*id)
            .priority(*priority)
            .cpu(*vcpu)
            .memory(10)
            .build();
        h.state.upsert_job(job.clone());
        let mut a = running_alloc(&job, "web", 0, &node);
        a.job = None; // as the store keeps them: the priority comes from the job
        h.state.upsert_alloc(a);
    }
    let eval = h.register(
        JobBuilder::new("vip")
            .priority(70)
            .cpu(cpu)
            .memory(10)
            .build(),
    );
    h.process(&eval).expect("process");
    h
}

fn evicted_jobs(h: &Harness) -> Vec<JobId> {
    let mut v: Vec<JobId> = h
        .plans
        .last()
        .map(|p| {
            p.node_preemptions
                .values()
                .flatten()
                .map(|a| a.job_id.clone())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn preemption_evicts_the_single_allocation_that_frees_enough() {
    let h = crowded(
        &[
            ("small-a", 20, 1000),
            ("small-b", 20, 1000),
            ("big", 20, 2000),
        ],
        1500,
        true,
    );
    assert_eq!(evicted_jobs(&h), vec!["big"]);
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    let victim = &h.plans[0]
        .node_preemptions
        .values()
        .flatten()
        .next()
        .expect("victim");
    assert_eq!(victim.desired_status, DesiredStatus::Evict);
    assert!(victim.desired_description.contains(placed[0].id.as_str()));
    assert!(victim.desired_description.contains("vip"));
    assert_eq!(
        h.state.allocs[&victim.id].desired_status,
        DesiredStatus::Evict
    );
    assert_eq!(
        h.plans[0].annotations.desired_tg_updates["web"].preemptions,
        1
    );
}

#[test]
fn preemption_takes_the_lowest_priority_first() {
    let h = crowded(&[("p30", 30, 2000), ("p20", 20, 2000)], 1000, true);
    assert_eq!(evicted_jobs(&h), vec!["p20"]);
}

#[test]
fn preemption_takes_the_smallest_allocation_that_closes_the_gap() {
    let h = crowded(
        &[("tiny", 20, 500), ("mid", 20, 1000), ("huge", 20, 2500)],
        900,
        true,
    );
    assert_eq!(evicted_jobs(&h), vec!["mid"]);
}

#[test]
fn preemption_respects_the_priority_gap() {
    let h = crowded(&[("near", 61, 4000)], 1000, true);
    assert!(evicted_jobs(&h).is_empty());
    assert!(h.last_placed().is_empty());
    assert!(!h.last_update().failed_tg_allocs.is_empty());
    let h = crowded(&[("far", 60, 4000)], 1000, true);
    assert_eq!(evicted_jobs(&h), vec!["far"]);
}

#[test]
fn preemption_is_off_for_services_by_default() {
    let h = crowded(&[("low", 10, 4000)], 1000, false);
    assert!(evicted_jobs(&h).is_empty());
    assert!(h.last_placed().is_empty());
}

#[test]
fn preemption_prefers_the_node_with_fewer_evictions() {
    let one = NodeBuilder::new().name("one").cpu(2000).build();
    let two = NodeBuilder::new().name("two").cpu(2000).build();
    let mut h = Harness::new(&[one.clone(), two.clone()]);
    h.state.config.preemption_config.service_scheduler_enabled = true;
    let low = JobBuilder::new("low")
        .priority(10)
        .cpu(1000)
        .memory(10)
        .build();
    let big = JobBuilder::new("big")
        .priority(10)
        .cpu(2000)
        .memory(10)
        .build();
    h.state.upsert_job(low.clone());
    h.state.upsert_job(big.clone());
    h.state.upsert_alloc(running_alloc(&low, "web", 0, &one));
    h.state.upsert_alloc(running_alloc(&low, "web", 1, &one));
    h.state.upsert_alloc(running_alloc(&big, "web", 0, &two));
    let eval = h.register(
        JobBuilder::new("vip")
            .priority(80)
            .cpu(1500)
            .memory(10)
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(evicted_jobs(&h), vec!["big"]);
    assert_eq!(placed_names(&h), vec!["two"]);
}

#[test]
fn system_jobs_preempt_by_default() {
    let node = NodeBuilder::new().cpu(1000).build();
    let mut h = Harness::new(std::slice::from_ref(&node));
    let low = JobBuilder::new("low")
        .priority(20)
        .cpu(1000)
        .memory(10)
        .build();
    h.state.upsert_job(low.clone());
    h.state.upsert_alloc(running_alloc(&low, "web", 0, &node));
    let eval = h.register(
        JobBuilder::new("agent")
            .job_type(JobType::System)
            .priority(70)
            .cpu(100)
            .memory(10)
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(evicted_jobs(&h), vec!["low"]);
    assert_eq!(h.last_placed().len(), 1);
    assert_eq!(
        h.plans[0].annotations.desired_tg_updates["web"].preemptions,
        1
    );
}

// ------------------------------------------------------------------ annotations

#[test]
fn annotations_count_places_stops_and_updates_per_group() {
    let nodes: Vec<Node> = (0..3).map(|_| mock::node()).collect();
    let mut h = Harness::new(&nodes);
    let eval = h.register(JobBuilder::new("web").count(3).build());
    h.process(&eval).expect("first");
    let first = &h.plans[0].annotations.desired_tg_updates["web"];
    assert_eq!(first.place, 3);
    // Fewer instances and a new task config: 1 stop, 2 destructive updates.
    let mut job = JobBuilder::new("web").count(2).build();
    job.groups[0].tasks[0]
        .env
        .insert("MODE".into(), "new".into());
    let eval = h.register(job);
    h.process(&eval).expect("second");
    let second = &h.plans[1].annotations.desired_tg_updates["web"];
    assert_eq!(
        (second.stop, second.destructive_update, second.place),
        (1, 2, 0)
    );
    // Only the count changes: in place.
    let mut job = h.state.jobs["web"].clone();
    job.groups[0].count = 2;
    job.meta.insert("touch".into(), "1".into());
    let eval = h.register(job);
    h.process(&eval).expect("third");
    let third = &h.plans[2].annotations.desired_tg_updates["web"];
    assert_eq!((third.in_place_update, third.place, third.stop), (2, 0, 0));
}

#[test]
fn system_annotations_count_places_and_ignores() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let eval = h.register(JobBuilder::new("sys").job_type(JobType::System).build());
    h.process(&eval).expect("place");
    assert_eq!(h.plans[0].annotations.desired_tg_updates["web"].place, 2);
    h.state.upsert_node(mock::node());
    h.process(&mock::eval(&h.state.jobs["sys"].clone()))
        .expect("again");
    let u = &h.plans[1].annotations.desired_tg_updates["web"];
    assert_eq!((u.place, u.ignore), (1, 2));
}

#[test]
fn distinct_hosts_rejections_are_named() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(
        JobBuilder::new("web")
            .count(2)
            .constraint("", "distinct_hosts", "true")
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(h.last_placed().len(), 1);
    assert!(h.last_update().failed_tg_allocs["web"]
        .describe()
        .contains("filtered by distinct_hosts"));
}

// ------------------------------------------------------------------ speed (not a timed test)

/// A planner that only counts (so the measurement is the scheduler's own time).
#[derive(Default)]
struct CountingPlanner {
    placed: usize,
}

impl super::Planner for CountingPlanner {
    fn submit_plan(
        &mut self,
        plan: orch_common::model::Plan,
    ) -> Result<
        (
            orch_common::model::PlanResult,
            Option<Box<dyn super::State>>,
        ),
        PlannerError,
    > {
        self.placed += plan.node_allocation.values().map(Vec::len).sum::<usize>();
        let mut result = orch_common::model::PlanResult::default();
        for node in plan.node_update.keys() {
            result.updated_nodes.insert(node.clone());
        }
        for node in plan.node_allocation.keys() {
            result.allocated_nodes.insert(node.clone());
        }
        Ok((result, None))
    }
    fn update_eval(&mut self, _: orch_common::model::Evaluation) -> Result<(), PlannerError> {
        Ok(())
    }
    fn create_eval(&mut self, _: orch_common::model::Evaluation) -> Result<(), PlannerError> {
        Ok(())
    }
    fn reblock_eval(&mut self, _: orch_common::model::Evaluation) -> Result<(), PlannerError> {
        Ok(())
    }
}

/// Prints how long one evaluation of the benchmark's shape takes. Run with
/// `cargo test -p orch-server --release placement_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: run it in release with --ignored --nocapture"]
fn placement_speed_of_a_thousand_instances_over_ten_thousand_nodes() {
    let nodes: Vec<Node> = (0..10_000)
        .map(|i| {
            NodeBuilder::new()
                .id(format!("node-{i:05}"))
                .class(["small", "medium", "large", "xl"][i % 4])
                .cpu([4_000, 8_000, 16_000, 32_000][i % 4])
                .memory([8_192, 16_384, 32_768, 65_536][i % 4])
                .meta("rack", &format!("r{}", i % 20))
                .build()
        })
        .collect();
    for (name, job) in [
        ("plain", JobBuilder::new("plain").count(1000).build()),
        (
            "constraint+spread",
            JobBuilder::new("spread")
                .count(1000)
                .constraint("${attr.kernel.name}", "=", "linux")
                .spread("${meta.rack}", 50, &[])
                .build(),
        ),
    ] {
        let mut h = Harness::new(&nodes);
        let eval = h.register(job);
        // Like the store: one shared node list, no copy per evaluation.
        h.state.share_nodes();
        let snapshot = h.state.clone();
        let mut planner = CountingPlanner::default();
        let started = std::time::Instant::now();
        super::process(&eval, &snapshot, &mut planner, mock::NOW).expect("process");
        let took = started.elapsed();
        let placed = planner.placed;
        println!(
            "sched.{name}.eval_ms {:.1} ms ({placed} placed, {:.0} placements/s)",
            took.as_secs_f64() * 1000.0,
            placed as f64 / took.as_secs_f64()
        );
        assert_eq!(placed, 1000);
    }
}

/// Prints how tightly long-tailed jobs pack (nodes used over the lower bound), the
/// shape of the benchmark's `packing` part. Run like the speed measurement.
#[test]
#[ignore = "a measurement, not a check: run it in release with --ignored --nocapture"]
fn packing_ratio_of_long_tailed_jobs() {
    let (cap_cpu, cap_mem) = (16_000u64, 32_768u64);
    let mut rng = super::rng::Rng::new(2);
    let mut unit = || (rng.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
    let mut tail = |min: f64, max: f64, step: u64| {
        let v = (min / unit().powf(1.0 / 1.5)).min(max);
        ((v as u64).div_ceil(step) * step).max(step)
    };
    let mut jobs = Vec::new();
    let (mut sum_cpu, mut sum_mem) = (0u64, 0u64);
    for j in 0..100 {
        let (cpu, mem) = (tail(100.0, 8_000.0, 50), tail(128.0, 16_384.0, 64));
        sum_cpu += cpu * 40;
        sum_mem += mem * 40;
        jobs.push(
            JobBuilder::new(format!("pack-{j:03}"))
                .count(40)
                .cpu(cpu)
                .memory(mem)
                .build(),
        );
    }
    let lb = sum_cpu.div_ceil(cap_cpu).max(sum_mem.div_ceil(cap_mem)) as usize;
    let nodes: Vec<Node> = (0..lb + lb / 4 + 10)
        .map(|i| {
            NodeBuilder::new()
                .id(format!("node-{i:05}"))
                .cpu(cap_cpu)
                .memory(cap_mem)
                .build()
        })
        .collect();
    let mut h = Harness::new(&nodes);
    for job in jobs {
        let eval = h.register(job);
        h.process(&eval).expect("process");
    }
    let used: BTreeSet<&str> = h
        .state
        .allocs
        .values()
        .map(|a| a.node_id.as_str())
        .collect();
    let placed = h.state.allocs.len();
    println!(
        "packing.ratio {:.3} x ({placed} allocs on {} nodes, lower bound {lb})",
        used.len() as f64 / lb as f64,
        used.len()
    );
}
