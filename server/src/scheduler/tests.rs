//! Scheduler scenario tests (one scenario per test) against the in-memory harness, and
//! the property that no node is ever over-committed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orch_common::ids::{AllocId, NodeId};
use orch_common::mock::{self, running_alloc, JobBuilder, NodeBuilder};
use orch_common::model::{
    triggers, ClientStatus, DelayFunction, DesiredStatus, Eligibility, EvalStatus, JobType, Node,
    NodeStatus, ReschedulePolicy,
};

use super::feasible::{check_constraint, RegexCache};
use super::testing::Harness;
use super::MAX_PLAN_ATTEMPTS;

fn placed_nodes(h: &Harness) -> Vec<NodeId> {
    h.last_placed().into_iter().map(|a| a.node_id).collect()
}

#[test]
fn places_count_instances_with_names_and_complete_eval() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let job = JobBuilder::new("mock-job").count(3).build();
    let eval = h.register(job.clone());
    h.process(&eval).expect("process");
    let mut names: Vec<String> = h.last_placed().into_iter().map(|a| a.name).collect();
    names.sort();
    assert_eq!(
        names,
        vec!["mock-job.web[0]", "mock-job.web[1]", "mock-job.web[2]"]
    );
    let done = h.last_update();
    assert_eq!(done.status, EvalStatus::Complete);
    assert!(done.failed_tg_allocs.is_empty());
    assert_eq!(done.queued_allocations.get("web"), Some(&0));
    assert!(h.created.is_empty());
    let a = &h.last_placed()[0];
    assert_eq!((a.job_id.as_str(), a.job_version), ("mock-job", 0));
    assert!(
        a.job.is_none(),
        "the plan carries the job, not each allocation"
    );
    assert_eq!(a.resources.total().memory, 256);
    assert!(a.metrics.as_ref().is_some_and(|m| m.nodes_evaluated > 0));
}

#[test]
fn running_again_with_nothing_to_do_submits_no_plan() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("mock-job").count(3).build());
    h.process(&eval).expect("first");
    let plans = h.plans.len();
    let again = mock::eval(&h.state.jobs["mock-job"]);
    h.process(&again).expect("second");
    assert_eq!(h.plans.len(), plans);
    assert_eq!(h.last_update().status, EvalStatus::Complete);
}

#[test]
fn bin_packs_onto_the_fuller_node() {
    let busy = NodeBuilder::new().name("busy").build();
    let idle = NodeBuilder::new().name("idle").build();
    let mut h = Harness::new(&[busy.clone(), idle]);
    let other = JobBuilder::new("other").cpu(2000).memory(4096).build();
    h.state.upsert_job(other.clone());
    h.state.upsert_alloc(running_alloc(&other, "web", 0, &busy));
    let eval = h.register(JobBuilder::new("web").build());
    h.process(&eval).expect("process");
    assert_eq!(placed_nodes(&h), vec![busy.id]);
}

#[test]
fn too_much_memory_fails_with_exhausted_on_memory_and_a_blocked_eval() {
    let mut h = Harness::new(&[NodeBuilder::new().memory(1024).build()]);
    let eval = h.register(JobBuilder::new("big").memory(4096).count(2).build());
    h.process(&eval).expect("process");
    assert!(h.plans.is_empty(), "nothing to commit");
    let done = h.last_update();
    assert_eq!(done.status, EvalStatus::Complete);
    let metric = &done.failed_tg_allocs["web"];
    assert!(
        metric.describe().contains("exhausted on memory"),
        "{}",
        metric.describe()
    );
    assert_eq!(metric.coalesced_failures, 1);
    assert_eq!(done.queued_allocations["web"], 2);
    assert_eq!(h.created.len(), 1);
    let blocked = &h.created[0];
    assert_eq!(blocked.status, EvalStatus::Blocked);
    assert_eq!(blocked.triggered_by, triggers::QUEUED_ALLOCS);
    assert_eq!(done.blocked_eval.as_deref(), Some(blocked.id.as_str()));
    assert_eq!(
        blocked.class_eligibility.values().collect::<Vec<_>>(),
        vec![&true]
    );
}

#[test]
fn blocked_eval_is_reblocked_while_there_is_still_no_room() {
    let mut h = Harness::new(&[NodeBuilder::new().memory(1024).build()]);
    let eval = h.register(JobBuilder::new("big").memory(4096).build());
    h.process(&eval).expect("process");
    let blocked = h.created[0].clone();
    h.process(&blocked).expect("reprocess");
    assert_eq!(h.reblocked.len(), 1);
    assert_eq!(h.reblocked[0].id, blocked.id);
    assert_eq!(h.reblocked[0].status, EvalStatus::Blocked);
    assert_eq!(h.created.len(), 1, "no second blocked eval");
}

#[test]
fn a_second_failing_eval_refreshes_the_jobs_blocked_eval_instead_of_adding_one() {
    let mut h = Harness::new(&[NodeBuilder::new().memory(1024).build()]);
    let eval = h.register(JobBuilder::new("big").memory(4096).build());
    h.process(&eval).expect("first");
    let blocked = h.created[0].clone();
    let again = mock::eval(&h.state.jobs["big"].clone());
    h.process(&again).expect("second");
    assert_eq!(h.created.len(), 1, "no second blocked eval");
    assert_eq!(h.reblocked.len(), 1);
    assert_eq!(h.reblocked[0].id, blocked.id);
    assert_eq!(h.last_update().id, again.id);
    assert_eq!(
        h.last_update().blocked_eval.as_deref(),
        Some(blocked.id.as_str())
    );
}

#[test]
fn blocked_eval_places_once_a_big_node_joins() {
    let mut h = Harness::new(&[NodeBuilder::new().memory(1024).build()]);
    let eval = h.register(JobBuilder::new("big").memory(4096).build());
    h.process(&eval).expect("process");
    let blocked = h.created[0].clone();
    let big = NodeBuilder::new().memory(16384).build();
    h.state.upsert_node(big.clone());
    h.process(&blocked).expect("reprocess");
    assert_eq!(placed_nodes(&h), vec![big.id]);
    assert_eq!(h.last_update().id, blocked.id);
    assert_eq!(h.last_update().status, EvalStatus::Complete);
}

#[test]
fn nodes_without_the_driver_are_filtered_with_the_reason() {
    let plain = NodeBuilder::new().build();
    let with = NodeBuilder::new().driver("container").build();
    let mut h = Harness::new(&[plain, with.clone()]);
    let eval = h.register(JobBuilder::new("c").driver("container").count(2).build());
    h.process(&eval).expect("process");
    assert_eq!(placed_nodes(&h), vec![with.id.clone(), with.id]);
    let metric = h.last_placed()[0].metrics.clone().expect("metrics");
    let filtered: u32 = metric.constraint_filtered.values().sum();
    assert!(filtered <= 1);

    let mut none = Harness::new(&[mock::node()]);
    let eval = none.register(JobBuilder::new("c").driver("container").build());
    none.process(&eval).expect("process");
    let m = &none.last_update().failed_tg_allocs["web"];
    assert_eq!(
        m.constraint_filtered.get("missing driver \"container\""),
        Some(&1)
    );
    assert_eq!(
        none.created[0]
            .class_eligibility
            .values()
            .collect::<Vec<_>>(),
        vec![&false]
    );
}

#[test]
fn only_nodes_in_the_job_datacenters_are_used() {
    let dc1 = NodeBuilder::new().datacenter("dc1").build();
    let dc2 = NodeBuilder::new().datacenter("dc2").build();
    let mut h = Harness::new(&[dc1, dc2.clone()]);
    let eval = h.register(JobBuilder::new("w").datacenters(&["dc2"]).count(3).build());
    h.process(&eval).expect("process");
    assert!(placed_nodes(&h).iter().all(|n| *n == dc2.id));

    let mut nowhere = Harness::new(&[mock::node()]);
    let eval = nowhere.register(JobBuilder::new("w").datacenters(&["dc9"]).build());
    nowhere.process(&eval).expect("process");
    assert_eq!(
        nowhere.last_update().failed_tg_allocs["web"].describe(),
        "no nodes are registered in the job's datacenters"
    );
}

#[test]
fn down_and_ineligible_nodes_get_nothing() {
    let down = NodeBuilder::new().status(NodeStatus::Down).build();
    let drained = NodeBuilder::new()
        .eligibility(Eligibility::Ineligible)
        .build();
    let ok = mock::node();
    let mut h = Harness::new(&[down, drained, ok.clone()]);
    let eval = h.register(JobBuilder::new("w").count(3).build());
    h.process(&eval).expect("process");
    assert!(placed_nodes(&h).iter().all(|n| *n == ok.id));
}

#[test]
fn constraints_pick_matching_nodes_and_explain_the_rest() {
    let linux = NodeBuilder::new().meta("rack", "r1").build();
    let other = NodeBuilder::new().meta("rack", "r2").build();
    let mut h = Harness::new(&[linux.clone(), other]);
    let eval = h.register(
        JobBuilder::new("w")
            .constraint("${attr.kernel.name}", "=", "linux")
            .group_constraint("${meta.rack}", "=", "r1")
            .count(2)
            .build(),
    );
    h.process(&eval).expect("process");
    assert_eq!(placed_nodes(&h), vec![linux.id.clone(), linux.id]);

    let mut none = Harness::new(&[mock::node()]);
    let eval = none.register(
        JobBuilder::new("w")
            .constraint("${attr.kernel.name}", "=", "plan9")
            .build(),
    );
    none.process(&eval).expect("process");
    let m = &none.last_update().failed_tg_allocs["web"];
    assert_eq!(
        m.describe(),
        "1 node evaluated: 1 filtered by constraint ${attr.kernel.name} = plan9"
    );
}

#[test]
fn distinct_hosts_puts_each_instance_on_its_own_node() {
    let nodes: Vec<Node> = (0..3).map(|_| mock::node()).collect();
    let mut h = Harness::new(&nodes);
    let eval = h.register(
        JobBuilder::new("d")
            .constraint("", "distinct_hosts", "true")
            .count(4)
            .build(),
    );
    h.process(&eval).expect("process");
    let used: BTreeSet<NodeId> = placed_nodes(&h).into_iter().collect();
    assert_eq!(used.len(), 3);
    assert_eq!(h.last_update().queued_allocations["web"], 1);
    assert!(h.last_update().failed_tg_allocs["web"]
        .constraint_filtered
        .contains_key("distinct_hosts"));
}

#[test]
fn dynamic_ports_are_unique_per_node_and_static_ports_spread() {
    let node = NodeBuilder::new().port_range(30000, 30009).build();
    let mut h = Harness::new(&[node]);
    let eval = h.register(
        JobBuilder::new("p")
            .cpu(10)
            .memory(10)
            .dynamic_port("http")
            .count(10)
            .build(),
    );
    h.process(&eval).expect("process");
    let ports: BTreeSet<u16> = h
        .last_placed()
        .iter()
        .flat_map(|a| a.resources.ports.iter().map(|p| p.value))
        .collect();
    assert_eq!(ports, (30000..=30009).collect());

    let nodes = vec![mock::node(), mock::node()];
    let mut s = Harness::new(&nodes);
    let eval = s.register(
        JobBuilder::new("s")
            .static_port("http", 8080)
            .count(3)
            .build(),
    );
    s.process(&eval).expect("process");
    let used: BTreeSet<NodeId> = placed_nodes(&s).into_iter().collect();
    assert_eq!(used.len(), 2, "one static 8080 per node");
    let m = &s.last_update().failed_tg_allocs["web"];
    assert_eq!(m.dimension_exhausted.get("ports"), Some(&2));
}

#[test]
fn scaling_down_stops_the_highest_indexes() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("w").count(4).build());
    h.process(&eval).expect("place");
    let eval = h.register(JobBuilder::new("w").count(2).build());
    h.process(&eval).expect("scale");
    let mut stopped: Vec<u32> = h.last_stopped().iter().map(|a| a.index).collect();
    stopped.sort();
    assert_eq!(stopped, vec![2, 3]);
    assert!(h
        .last_stopped()
        .iter()
        .all(|a| a.desired_status == DesiredStatus::Stop));
    // Only count changed: the two kept are updated in place, not replaced.
    let placed = h.last_placed();
    assert_eq!(placed.len(), 2);
    assert!(placed.iter().all(|a| a.job_version == 1 && a.index < 2));
}

#[test]
fn stopping_a_job_stops_all_its_allocations() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("mock-job").count(3).build());
    h.process(&eval).expect("place");
    let mut job = h.state.jobs["mock-job"].clone();
    job.stop = true;
    h.state.upsert_job(job.clone());
    h.process(&mock::eval(&job)).expect("stop");
    assert_eq!(h.last_stopped().len(), 3);
    assert!(h.last_placed().is_empty());
    assert!(h.state.live_allocs("mock-job").is_empty());
    assert!(h.created.is_empty());
}

#[test]
fn purged_job_allocations_are_stopped() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("mock-job").count(3).build());
    h.process(&eval).expect("place");
    h.state.jobs.clear();
    h.process(&eval).expect("purge");
    assert_eq!(h.last_stopped().len(), 3);
}

#[test]
fn complete_batch_allocations_are_not_replaced() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("b").batch().count(2).build());
    h.process(&eval).expect("place");
    for a in h.state.allocs.values_mut() {
        a.client_status = ClientStatus::Complete;
    }
    let plans = h.plans.len();
    h.process(&mock::eval(&h.state.jobs["b"].clone()))
        .expect("again");
    assert_eq!(h.plans.len(), plans);
}

#[test]
fn failed_batch_allocation_is_replaced_with_links_both_ways() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("b").batch().build());
    h.process(&eval).expect("place");
    let failed_id = h.last_placed()[0].id.clone();
    let delay = h.state.jobs["b"].groups[0].reschedule.delay.as_millis() as u64;
    if let Some(a) = h.state.allocs.get_mut(&failed_id) {
        a.client_status = ClientStatus::Failed;
        a.modify_time = h.now;
    }
    h.now += delay;
    h.process(&mock::eval(&h.state.jobs["b"].clone()))
        .expect("reschedule");
    let new = &h.last_placed()[0];
    assert_eq!(new.previous_allocation.as_deref(), Some(failed_id.as_str()));
    assert_eq!(new.index, 0);
    let old = &h.last_stopped()[0];
    assert_eq!(old.id, failed_id);
    assert_eq!(old.next_allocation.as_deref(), Some(new.id.as_str()));
    assert_eq!(old.client_status, ClientStatus::Failed);
}

/// Marks the job's one live allocation failed now, and forgets every other allocation
/// of the job, as the garbage collector may once they are replaced. Returns its id.
fn fail_and_collect_the_rest(h: &mut Harness, job_id: &str) -> AllocId {
    let live = h
        .state
        .allocs
        .values()
        .find(|a| a.job_id == job_id && a.next_allocation.is_none())
        .expect("a live allocation")
        .id
        .clone();
    let now = h.now;
    h.state.allocs.retain(|id, _| *id == live);
    if let Some(a) = h.state.allocs.get_mut(&live) {
        a.client_status = ClientStatus::Failed;
        a.modify_time = now;
    }
    live
}

#[test]
fn reschedule_attempts_still_count_once_the_failed_allocations_are_collected() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let two_an_hour = ReschedulePolicy {
        attempts: 2,
        interval: Duration::from_secs(3600),
        delay: Duration::from_secs(1),
        delay_function: DelayFunction::Constant,
        max_delay: Duration::ZERO,
        unlimited: false,
    };
    let eval = h.register(JobBuilder::new("s").reschedule(two_an_hour).build());
    h.process(&eval).expect("place");
    for spent in 1..=2u32 {
        let failed = fail_and_collect_the_rest(&mut h, "s");
        h.now += 1_000;
        h.process(&mock::eval(&h.state.jobs["s"].clone()))
            .expect("reschedule");
        let new = &h.last_placed()[0];
        assert_eq!(new.previous_allocation.as_ref(), Some(&failed));
        let tracker = new.reschedule_tracker.as_ref().expect("a tracker");
        assert_eq!(tracker.failures, spent);
        assert_eq!(tracker.events.len(), spent as usize);
        assert_eq!(tracker.events.last().map(|e| &e.alloc_id), Some(&failed));
    }
    fail_and_collect_the_rest(&mut h, "s");
    h.now += 1_000;
    let plans = h.plans.len();
    h.process(&mock::eval(&h.state.jobs["s"].clone()))
        .expect("evaluate");
    assert_eq!(
        h.plans.len(),
        plans,
        "both attempts of the hour are spent, though their allocations are gone"
    );
}

#[test]
fn the_reschedule_backoff_keeps_growing_once_the_failed_allocations_are_collected() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let eval = h.register(JobBuilder::new("s").build()); // unlimited, 30s doubling
    h.process(&eval).expect("place");
    let base = h.state.jobs["s"].groups[0].reschedule.delay.as_millis() as u64;
    for failures in 0..3u32 {
        fail_and_collect_the_rest(&mut h, "s");
        let failed_at = h.now;
        h.process(&mock::eval(&h.state.jobs["s"].clone()))
            .expect("evaluate");
        let wait = base << failures;
        assert_eq!(
            h.created.last().and_then(|e| e.wait_until),
            Some(failed_at + wait),
            "failure {failures}: the delay doubles"
        );
        h.now += wait;
        h.process(&mock::eval(&h.state.jobs["s"].clone()))
            .expect("reschedule");
        let tracker = h.last_placed()[0]
            .reschedule_tracker
            .clone()
            .expect("tracker");
        assert_eq!(tracker.failures, failures + 1);
        assert!(
            tracker.events.len() <= super::reconcile::RESCHEDULE_EVENTS_SHOWN,
            "an unlimited policy counts no times"
        );
    }
}

#[test]
fn a_rescheduled_allocation_prefers_another_node() {
    let a = NodeBuilder::new().name("a").build();
    let b = NodeBuilder::new().name("b").build();
    let mut h = Harness::new(&[a.clone(), b.clone()]);
    let eval = h.register(JobBuilder::new("b").batch().build());
    h.process(&eval).expect("place");
    let failed = h.last_placed()[0].clone();
    if let Some(x) = h.state.allocs.get_mut(&failed.id) {
        x.client_status = ClientStatus::Failed;
        x.modify_time = h.now;
    }
    h.now += 60_000;
    h.process(&mock::eval(&h.state.jobs["b"].clone()))
        .expect("reschedule");
    assert_ne!(h.last_placed()[0].node_id, failed.node_id);
}

#[test]
fn failed_allocation_inside_its_delay_gets_a_delayed_follow_up_eval() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("s").build());
    h.process(&eval).expect("place");
    let id = h.last_placed()[0].id.clone();
    if let Some(a) = h.state.allocs.get_mut(&id) {
        a.client_status = ClientStatus::Failed;
        a.modify_time = h.now;
    }
    let plans = h.plans.len();
    h.process(&mock::eval(&h.state.jobs["s"].clone()))
        .expect("evaluate");
    assert_eq!(h.plans.len(), plans, "not yet");
    let follow = h.created.last().expect("follow-up");
    assert_eq!(follow.triggered_by, triggers::RETRY_FAILED_ALLOC);
    assert_eq!(follow.status, EvalStatus::Pending);
    assert_eq!(follow.wait_until, Some(h.now + 30_000));
    assert_eq!(
        h.last_update().next_eval.as_deref(),
        Some(follow.id.as_str())
    );
}

#[test]
fn allocations_on_a_down_node_are_lost_and_replaced_elsewhere() {
    let a = NodeBuilder::new().name("a").build();
    let mut h = Harness::new(std::slice::from_ref(&a));
    let eval = h.register(JobBuilder::new("w").count(2).build());
    h.process(&eval).expect("place");
    let b = NodeBuilder::new().name("b").build();
    h.state.upsert_node(b.clone());
    let mut down = a.clone();
    down.status = NodeStatus::Down;
    h.state.upsert_node(down);
    h.process(&mock::eval(&h.state.jobs["w"].clone()))
        .expect("replace");
    let stopped = h.last_stopped();
    assert_eq!(stopped.len(), 2);
    assert!(stopped
        .iter()
        .all(|s| s.client_status == ClientStatus::Lost));
    let placed = h.last_placed();
    assert_eq!(placed.len(), 2);
    assert!(placed
        .iter()
        .all(|p| p.node_id == b.id && p.previous_allocation.is_some()));
    for s in &stopped {
        let next = s.next_allocation.clone().expect("linked");
        assert!(placed.iter().any(|p| p.id == next));
    }
}

#[test]
fn task_change_replaces_and_count_change_updates_in_place() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(JobBuilder::new("w").count(2).build());
    h.process(&eval).expect("place");
    let first: BTreeSet<AllocId> = h.last_placed().into_iter().map(|a| a.id).collect();

    let eval = h.register(JobBuilder::new("w").count(3).build());
    h.process(&eval).expect("scale up");
    let placed = h.last_placed();
    let kept: BTreeSet<AllocId> = placed
        .iter()
        .filter(|a| first.contains(&a.id))
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(kept, first, "same ids, new version in place");
    assert!(placed.iter().all(|a| a.job_version == 1));
    assert!(h.last_stopped().is_empty());

    let eval = h.register(JobBuilder::new("w").count(3).memory(512).build());
    h.process(&eval).expect("change tasks");
    assert_eq!(h.last_stopped().len(), 3);
    let placed = h.last_placed();
    assert_eq!(placed.len(), 3);
    assert!(placed
        .iter()
        .all(|a| !first.contains(&a.id) && a.previous_allocation.is_some()));
    assert!(placed.iter().all(|a| a.resources.total().memory == 512));
}

#[test]
fn in_place_updates_use_stored_job_versions_when_allocs_do_not_embed_their_job() {
    let mut h = Harness::new(&[mock::node()]);
    h.state.strip_jobs = true;
    let eval = h.register(JobBuilder::new("w").count(2).build());
    h.process(&eval).expect("place");
    assert!(h.state.allocs.values().all(|a| a.job.is_none()));
    let first: BTreeSet<AllocId> = h.state.allocs.keys().cloned().collect();
    let eval = h.register(JobBuilder::new("w").count(3).build());
    h.process(&eval).expect("scale");
    assert!(h.last_stopped().is_empty(), "nothing replaced");
    let kept = h
        .last_placed()
        .into_iter()
        .filter(|a| first.contains(&a.id))
        .count();
    assert_eq!(kept, 2);
}

#[test]
fn a_partially_committed_plan_is_retried_on_fresh_state() {
    let a = NodeBuilder::new().name("a").build();
    let b = NodeBuilder::new().name("b").memory(300).build();
    let mut h = Harness::new(&[a.clone(), b.clone()]);
    h.reject_nodes.insert(b.id.clone());
    h.reject_times = 1;
    // One instance per node would be best-fit; b refuses the first time.
    let eval = h.register(JobBuilder::new("w").count(2).memory(256).build());
    h.process(&eval).expect("process");
    assert!(h.plans.len() >= 2, "retried");
    assert_eq!(h.state.live_allocs("w").len(), 2);
    assert_eq!(h.last_update().status, EvalStatus::Complete);
}

#[test]
fn giving_up_after_max_plan_attempts_fails_the_eval_and_blocks() {
    let a = mock::node();
    let mut h = Harness::new(std::slice::from_ref(&a));
    h.reject_nodes.insert(a.id.clone());
    h.reject_times = u32::MAX;
    let eval = h.register(JobBuilder::new("mock-job").count(3).build());
    h.process(&eval).expect("process");
    assert_eq!(h.plans.len(), MAX_PLAN_ATTEMPTS as usize);
    assert_eq!(h.last_update().status, EvalStatus::Failed);
    let blocked = h.created.last().expect("blocked");
    assert_eq!(blocked.triggered_by, triggers::MAX_PLAN_ATTEMPTS);
    assert_eq!(blocked.status, EvalStatus::Blocked);
}

#[test]
fn system_job_runs_once_on_every_feasible_node() {
    let nodes = vec![
        mock::node(),
        mock::node(),
        NodeBuilder::new().datacenter("dc2").build(),
    ];
    let mut h = Harness::new(&nodes);
    let eval = h.register(JobBuilder::new("sys").job_type(JobType::System).build());
    h.process(&eval).expect("process");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 2);
    assert!(placed.iter().all(|a| a.name == "sys.web[0]"));
    let used: BTreeSet<NodeId> = placed.iter().map(|a| a.node_id.clone()).collect();
    assert_eq!(used.len(), 2);
    // A new node gets one too; the existing ones are left alone.
    let late = mock::node();
    h.state.upsert_node(late.clone());
    h.process(&mock::eval(&h.state.jobs["sys"].clone()))
        .expect("again");
    assert_eq!(placed_nodes(&h), vec![late.id]);
}

#[test]
fn system_allocs_on_a_down_node_are_lost_and_not_moved() {
    let a = mock::node();
    let b = mock::node();
    let mut h = Harness::new(&[a.clone(), b.clone()]);
    let eval = h.register(JobBuilder::new("sys").job_type(JobType::System).build());
    h.process(&eval).expect("place");
    let mut down = a.clone();
    down.status = NodeStatus::Down;
    h.state.upsert_node(down);
    h.process(&mock::eval(&h.state.jobs["sys"].clone()))
        .expect("again");
    let stopped = h.last_stopped();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].node_id, a.id);
    assert_eq!(stopped[0].client_status, ClientStatus::Lost);
    assert!(h.last_placed().is_empty());
}

#[test]
fn finished_sysbatch_allocs_are_not_rerun() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let eval = h.register(JobBuilder::new("sb").job_type(JobType::Sysbatch).build());
    h.process(&eval).expect("place");
    assert_eq!(h.last_placed().len(), 2);
    for a in h.state.allocs.values_mut() {
        a.client_status = ClientStatus::Complete;
    }
    let plans = h.plans.len();
    h.process(&mock::eval(&h.state.jobs["sb"].clone()))
        .expect("again");
    assert_eq!(h.plans.len(), plans);
}

#[test]
fn system_job_without_room_on_a_node_reports_it() {
    let small = NodeBuilder::new().memory(100).build();
    let mut h = Harness::new(&[small, mock::node()]);
    let eval = h.register(JobBuilder::new("sys").job_type(JobType::System).build());
    h.process(&eval).expect("place");
    assert_eq!(h.last_placed().len(), 1);
    let done = h.last_update();
    assert_eq!(done.queued_allocations["web"], 1);
    assert!(done.failed_tg_allocs["web"]
        .describe()
        .contains("exhausted on memory"));
}

#[test]
fn placements_are_deterministic_for_one_eval() {
    let nodes: Vec<Node> = (0..20).map(|_| mock::node()).collect();
    let job = JobBuilder::new("w").count(5).build();
    let mut one = Harness::new(&nodes);
    let mut two = Harness::new(&nodes);
    let eval = one.register(job.clone());
    two.register(job);
    one.process(&eval).expect("one");
    two.process(&eval).expect("two");
    let pick = |h: &Harness| -> BTreeMap<u32, NodeId> {
        h.last_placed()
            .into_iter()
            .map(|a| (a.index, a.node_id))
            .collect()
    };
    assert_eq!(pick(&one), pick(&two));
}

mod property {
    use super::*;
    use orch_common::model::{Job, Resources};
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            500u64..4000,
            256u64..4096,
            prop_oneof![Just("dc1"), Just("dc2")],
            prop_oneof![Just("r1"), Just("r2")],
            any::<bool>(),
            0u16..6,
        )
            .prop_map(|(cpu, mem, dc, rack, container, ports)| {
                let mut b = NodeBuilder::new()
                    .cpu(cpu)
                    .memory(mem)
                    .datacenter(dc)
                    .meta("rack", rack)
                    .port_range(31000, 31000 + ports);
                if container {
                    b = b.driver("container");
                }
                b.build()
            })
    }

    /// Optional preferences and limits a random job may carry.
    #[derive(Debug, Clone, Copy)]
    struct Extras {
        priority: u8,
        distinct_rack: Option<u8>,
        affinity: bool,
        spread: bool,
    }

    fn arb_extras() -> impl Strategy<Value = Extras> {
        (
            prop_oneof![Just(20u8), Just(50u8), Just(80u8)],
            prop_oneof![Just(None), Just(Some(1u8)), Just(Some(3u8))],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(priority, distinct_rack, affinity, spread)| Extras {
                priority,
                distinct_rack,
                affinity,
                spread,
            })
    }

    fn arb_job(i: usize) -> impl Strategy<Value = Job> {
        (
            1u32..8,
            100u64..1500,
            64u64..1500,
            prop_oneof![Just(None), Just(Some("r1")), Just(Some("r2"))],
            any::<bool>(),
            0u8..3,
            any::<bool>(),
            arb_extras(),
        )
            .prop_map(move |(count, cpu, mem, rack, container, ports, stat, x)| {
                let mut b = JobBuilder::new(format!("job{i}"))
                    .count(count)
                    .cpu(cpu)
                    .memory(mem)
                    .priority(x.priority)
                    .datacenters(&["dc1", "dc2"]);
                if let Some(r) = rack {
                    b = b.group_constraint("${meta.rack}", "=", r);
                }
                if container {
                    b = b.driver("container");
                }
                for p in 0..ports {
                    b = b.dynamic_port(&format!("p{p}"));
                }
                if stat {
                    b = b.static_port("admin", 9000);
                }
                if let Some(limit) = x.distinct_rack {
                    b = b.constraint("${meta.rack}", "distinct_property", &limit.to_string());
                }
                if x.affinity {
                    b = b.affinity("${node.datacenter}", "=", "dc2", 60);
                }
                if x.spread {
                    b = b.spread("${meta.rack}", 50, &[]);
                }
                b.build()
            })
    }

    /// The running (desired `run`) allocations in the harness.
    fn running(h: &Harness) -> Vec<&orch_common::model::Allocation> {
        h.state
            .allocs
            .values()
            .filter(|a| a.desired_status == DesiredStatus::Run)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_node_is_ever_over_committed_and_constraints_hold(
            nodes in prop::collection::vec(arb_node(), 1..8),
            jobs in (0usize..4).prop_flat_map(|n| (0..n).map(arb_job).collect::<Vec<_>>()),
            preempt_services in any::<bool>(),
        ) {
            let mut h = Harness::new(&nodes);
            h.state.config.preemption_config.service_scheduler_enabled = preempt_services;
            for job in &jobs {
                let eval = h.register(job.clone());
                h.process(&eval).expect("process");
            }
            let live = running(&h);
            for node in &nodes {
                let allocs: Vec<_> = live.iter().filter(|a| a.node_id == node.id).collect();
                let used = allocs
                    .iter()
                    .fold(Resources::ZERO, |acc, a| acc.add(&a.resources.total()));
                prop_assert!(used.cpu <= node.allocatable().cpu);
                prop_assert!(used.memory <= node.allocatable().memory);
                let mut ports = BTreeSet::new();
                for a in &allocs {
                    for p in &a.resources.ports {
                        prop_assert!(ports.insert(p.value), "port {} used twice", p.value);
                        prop_assert!(!node.reserved_ports.contains(&p.value));
                    }
                    let job = &h.state.versions[&(a.job_id.clone(), a.job_version)];
                    let group = job.group(&a.group).expect("group");
                    for c in job.constraints.iter().chain(group.constraints.iter()) {
                        prop_assert!(check_constraint(c, node, &mut RegexCache::default()));
                    }
                    for t in &group.tasks {
                        prop_assert!(node.has_driver(&t.driver));
                    }
                }
            }
            // distinct_property: at most `limit` running allocations of a job per rack.
            for job in &jobs {
                let Some(limit) = job
                    .constraints
                    .iter()
                    .find(|c| c.operator == "distinct_property")
                    .map(|c| c.value.parse::<usize>().expect("limit"))
                else {
                    continue;
                };
                let mut per_rack: BTreeMap<String, usize> = BTreeMap::new();
                for a in live.iter().filter(|a| a.job_id == job.id) {
                    let node = nodes.iter().find(|n| n.id == a.node_id).expect("node");
                    *per_rack.entry(node.meta["rack"].clone()).or_default() += 1;
                }
                prop_assert!(per_rack.values().all(|n| *n <= limit), "{per_rack:?} > {limit}");
            }
            // Every eviction made room for a job at least 10 priorities above.
            for plan in &h.plans {
                let Some(by) = plan.job.as_ref() else { continue };
                for victim in plan.node_preemptions.values().flatten() {
                    let victim_job = &h.state.jobs[&victim.job_id];
                    prop_assert!(victim_job.priority + 10 <= by.priority);
                    prop_assert!(preempt_services);
                }
            }
        }

        #[test]
        fn system_jobs_land_on_exactly_the_eligible_nodes(
            nodes in prop::collection::vec(arb_system_node(), 0..10),
            late in prop::collection::vec(arb_system_node(), 0..3),
            rack in prop_oneof![Just(None), Just(Some("r1"))],
        ) {
            let mut h = Harness::new(&nodes);
            let mut b = JobBuilder::new("sys")
                .job_type(JobType::System)
                .driver("container")
                .cpu(100)
                .memory(64)
                .datacenters(&["dc1"]);
            if let Some(r) = rack {
                b = b.group_constraint("${meta.rack}", "=", r);
            }
            let eval = h.register(b.build());
            h.process(&eval).expect("process");
            for n in &late {
                h.state.upsert_node(n.clone());
            }
            h.process(&mock::eval(&h.state.jobs["sys"].clone())).expect("again");
            let eligible: BTreeSet<NodeId> = nodes
                .iter()
                .chain(late.iter())
                .filter(|n| {
                    n.is_schedulable()
                        && n.datacenter == "dc1"
                        && n.has_driver("container")
                        && rack.is_none_or(|r| n.meta["rack"] == r)
                })
                .map(|n| n.id.clone())
                .collect();
            let live = running(&h);
            let placed: Vec<NodeId> = live.iter().map(|a| a.node_id.clone()).collect();
            let unique: BTreeSet<NodeId> = placed.iter().cloned().collect();
            prop_assert_eq!(placed.len(), unique.len(), "two allocations on one node");
            prop_assert_eq!(unique, eligible);
        }
    }

    fn arb_system_node() -> impl Strategy<Value = Node> {
        (
            prop_oneof![Just("dc1"), Just("dc2")],
            prop_oneof![Just("r1"), Just("r2")],
            any::<bool>(),
            prop_oneof![
                Just(NodeStatus::Ready),
                Just(NodeStatus::Down),
                Just(NodeStatus::Initializing)
            ],
            any::<bool>(),
        )
            .prop_map(|(dc, rack, container, status, eligible)| {
                let mut b = NodeBuilder::new()
                    .datacenter(dc)
                    .meta("rack", rack)
                    .status(status)
                    .eligibility(if eligible {
                        Eligibility::Eligible
                    } else {
                        Eligibility::Ineligible
                    });
                if container {
                    b = b.driver("container");
                }
                b.build()
            })
    }
}
