//! Rollout scenarios (one each) against the in-memory harness: deployments created and
//! cancelled, the rolling limit, canaries before and after promotion, in-place updates
//! in a new deployment, and a system job's staggered update.

use std::time::Duration;

use orch_common::ids::{AllocId, DeploymentId};
use orch_common::mock::{self, JobBuilder, NOW};
use orch_common::model::{
    deployment_desc, triggers, Allocation, Deployment, DeploymentStatus, DesiredStatus,
    DesiredUpdates, EvalStatus, Job, JobType, UpdatePolicy,
};

use super::reconcile::{DESC_CANARY_NOT_NEEDED, DESC_JOB_STOPPED, DESC_UPDATED};
use super::testing::Harness;

fn policy(max_parallel: u32, canary: u32) -> UpdatePolicy {
    UpdatePolicy {
        max_parallel,
        canary,
        auto_revert: true,
        progress_deadline: Duration::from_secs(300),
        ..UpdatePolicy::default()
    }
}

/// A service job `web` of `count` instances with a rolling update policy; `memory`
/// tells versions apart destructively.
fn web(count: u32, update: Option<UpdatePolicy>, memory: u64) -> Job {
    let b = JobBuilder::new("web").count(count).memory(memory);
    match update {
        Some(p) => b.update(p).build(),
        None => b.build(),
    }
}

/// A harness over two nodes with `job` registered and placed (its deployment, if any,
/// marked successful with every instance healthy, like a finished rollout).
fn running(job: Job) -> Harness {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let eval = h.register(job);
    h.process(&eval).expect("first version");
    let ids: Vec<AllocId> = h.state.allocs.keys().cloned().collect();
    for id in ids {
        if h.state.allocs[&id].deployment_id.is_some() {
            h.state.set_health(&id, true);
        }
    }
    let done: Vec<DeploymentId> = h.state.deployments.keys().cloned().collect();
    for id in done {
        h.state
            .set_deployment_status(&id, DeploymentStatus::Successful);
    }
    h
}

/// Schedules the job again (what the deployment watcher's evaluation does).
fn again(h: &mut Harness) {
    let eval = mock::eval(&h.state.jobs["web"].clone());
    h.process(&eval).expect("process");
}

fn live(h: &Harness) -> Vec<Allocation> {
    let mut v: Vec<Allocation> = h
        .state
        .allocs
        .values()
        .filter(|a| a.desired_status == DesiredStatus::Run)
        .cloned()
        .collect();
    v.sort_by_key(|a| (a.index, a.job_version));
    v
}

fn live_at(h: &Harness, version: u64) -> Vec<Allocation> {
    live(h)
        .into_iter()
        .filter(|a| a.job_version == version)
        .collect()
}

fn last_updates(h: &Harness) -> DesiredUpdates {
    h.plans
        .last()
        .expect("a plan")
        .annotations
        .desired_tg_updates["web"]
        .clone()
}

fn newest_deployment(h: &Harness) -> Deployment {
    h.state
        .deployments
        .values()
        .max_by_key(|d| d.create_index)
        .cloned()
        .expect("a deployment")
}

#[test]
fn the_first_version_creates_a_deployment_without_canaries() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let eval = h.register(web(3, Some(policy(1, 2)), 256));
    h.process(&eval).expect("process");
    let plan = h.plans.last().expect("plan");
    let d = plan.deployment.clone().expect("a deployment");
    assert_eq!(d.status, DeploymentStatus::Running);
    assert_eq!(d.status_description, deployment_desc::RUNNING);
    assert_eq!((d.job_id.as_str(), d.job_version), ("web", 0));
    assert_eq!(d.eval_id, eval.id);
    let g = &d.task_groups["web"];
    assert_eq!(
        (g.desired_total, g.desired_canaries),
        (3, 0),
        "nothing to compare with"
    );
    assert!(g.auto_revert && !g.auto_promote && !g.promoted);
    assert_eq!(g.progress_deadline, Duration::from_secs(300));
    // All three at once: nothing old to replace, so no limit applies.
    let placed = h.last_placed();
    assert_eq!(placed.len(), 3);
    assert!(placed
        .iter()
        .all(|a| a.deployment_id.as_ref() == Some(&d.id) && !a.is_canary()));
    assert_eq!(h.last_update().status, EvalStatus::Complete);
}

#[test]
fn without_an_update_policy_there_is_no_deployment_and_all_change_at_once() {
    let mut h = running(web(3, None, 256));
    assert!(h.state.deployments.is_empty());
    let eval = h.register(web(3, None, 512));
    h.process(&eval).expect("process");
    let plan = h.plans.last().expect("plan");
    assert!(plan.deployment.is_none() && plan.deployment_updates.is_empty());
    assert_eq!(h.last_stopped().len(), 3);
    assert_eq!(h.last_placed().len(), 3);
    assert!(h.last_placed().iter().all(|a| a.deployment_id.is_none()));
}

#[test]
fn a_destructive_update_goes_max_parallel_at_a_time_lowest_index_first() {
    let mut h = running(web(3, Some(policy(1, 0)), 256));
    let old = live_at(&h, 0);
    let eval = h.register(web(3, Some(policy(1, 0)), 512));
    h.process(&eval).expect("process");
    let d = h
        .plans
        .last()
        .and_then(|p| p.deployment.clone())
        .expect("new deployment");
    assert_eq!(d.job_version, 1);
    assert_eq!(d.task_groups["web"].desired_canaries, 0);
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].index, 0);
    assert_eq!(placed[0].deployment_id.as_deref(), Some(d.id.as_str()));
    assert_eq!(
        placed[0].previous_allocation.as_deref(),
        Some(old[0].id.as_str())
    );
    let stopped = h.last_stopped();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].id, old[0].id);
    assert_eq!(stopped[0].desired_description, DESC_UPDATED);
    let u = last_updates(&h);
    assert_eq!((u.destructive_update, u.ignore), (1, 2));
}

#[test]
fn once_the_new_instance_is_healthy_the_next_one_is_replaced() {
    let mut h = running(web(3, Some(policy(1, 0)), 256));
    let old = live_at(&h, 0);
    let eval = h.register(web(3, Some(policy(1, 0)), 512));
    h.process(&eval).expect("first batch");
    let first = h.last_placed()[0].clone();

    // Undecided: the slot is taken, nothing more goes.
    let plans = h.plans.len();
    again(&mut h);
    assert_eq!(
        h.plans.len(),
        plans,
        "nothing to do while the new one is undecided"
    );

    h.state.set_health(&first.id, true);
    again(&mut h);
    let plan = h.plans.last().expect("plan");
    assert!(plan.deployment.is_none(), "the same deployment goes on");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].index, 1);
    assert_eq!(placed[0].deployment_id, first.deployment_id);
    assert_eq!(h.last_stopped()[0].id, old[1].id);
    assert_eq!(live_at(&h, 0).len(), 1);
}

#[test]
fn an_unhealthy_instance_stops_the_rollout() {
    let mut h = running(web(3, Some(policy(2, 0)), 256));
    let eval = h.register(web(3, Some(policy(2, 0)), 512));
    h.process(&eval).expect("first batch");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 2);
    h.state.set_health(&placed[0].id, true);
    h.state.set_health(&placed[1].id, false);
    let plans = h.plans.len();
    again(&mut h);
    assert_eq!(h.plans.len(), plans, "nothing placed or stopped");
    assert_eq!(live_at(&h, 0).len(), 1);
    assert_eq!(h.last_update().status, EvalStatus::Complete);
}

#[test]
fn a_paused_deployment_replaces_nothing() {
    let mut h = running(web(3, Some(policy(1, 0)), 256));
    let eval = h.register(web(3, Some(policy(1, 0)), 512));
    h.process(&eval).expect("first batch");
    let first = h.last_placed()[0].clone();
    h.state.set_health(&first.id, true);
    let d = first.deployment_id.clone().expect("deployment");
    h.state.set_deployment_status(&d, DeploymentStatus::Paused);
    let plans = h.plans.len();
    again(&mut h);
    assert_eq!(h.plans.len(), plans);
    assert_eq!(live_at(&h, 0).len(), 2);

    // Resumed: the rollout goes on.
    h.state.set_deployment_status(&d, DeploymentStatus::Running);
    again(&mut h);
    assert_eq!(h.last_placed().len(), 1);
}

#[test]
fn a_canary_is_placed_beside_the_old_instances_and_only_once() {
    let mut h = running(web(3, Some(policy(1, 1)), 256));
    let eval = h.register(web(3, Some(policy(1, 1)), 512));
    h.process(&eval).expect("canary");
    let d = h
        .plans
        .last()
        .and_then(|p| p.deployment.clone())
        .expect("deployment");
    assert_eq!(d.task_groups["web"].desired_canaries, 1);
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    let canary = &placed[0];
    assert!(canary.is_canary());
    assert_eq!(canary.index, 0, "the index of the lowest old instance");
    assert!(canary.previous_allocation.is_none());
    assert_eq!(canary.deployment_id.as_deref(), Some(d.id.as_str()));
    assert!(
        h.last_stopped().is_empty(),
        "no old instance stops for a canary"
    );
    let u = last_updates(&h);
    assert_eq!((u.canary, u.destructive_update, u.ignore), (1, 0, 3));

    // Evaluated again (healthy or not): not placed twice, nothing else moves.
    h.state.set_health(&canary.id, true);
    let plans = h.plans.len();
    again(&mut h);
    assert_eq!(h.plans.len(), plans);
    assert_eq!(live(&h).len(), 4);
    assert_eq!(live_at(&h, 0).len(), 3);
}

#[test]
fn after_promotion_the_canary_takes_its_index_and_the_rest_roll() {
    let mut h = running(web(3, Some(policy(1, 1)), 256));
    let old = live_at(&h, 0);
    let eval = h.register(web(3, Some(policy(1, 1)), 512));
    h.process(&eval).expect("canary");
    let canary = h.last_placed()[0].clone();
    let d = canary.deployment_id.clone().expect("deployment");
    h.state.set_health(&canary.id, true);
    h.state.promote(&d, "web");

    again(&mut h);
    let stopped = h.last_stopped();
    let at0 = stopped
        .iter()
        .find(|a| a.id == old[0].id)
        .expect("old [0] stopped");
    assert_eq!(at0.desired_description, DESC_UPDATED);
    assert_eq!(at0.next_allocation.as_deref(), Some(canary.id.as_str()));
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1, "max_parallel 1 after the canary");
    assert_eq!(placed[0].index, 1);
    assert!(!placed[0].is_canary());
    assert_eq!(placed[0].deployment_id.as_deref(), Some(d.as_str()));
    assert_eq!(stopped.len(), 2);
    assert!(stopped.iter().any(|a| a.id == old[1].id));
    let u = last_updates(&h);
    assert_eq!((u.stop, u.destructive_update, u.ignore), (1, 1, 2));
    assert_eq!(live_at(&h, 0).len(), 1, "old [2] waits");
}

#[test]
fn the_canaries_of_a_failed_deployment_are_stopped() {
    let mut h = running(web(3, Some(policy(1, 2)), 256));
    let eval = h.register(web(3, Some(policy(1, 2)), 512));
    h.process(&eval).expect("canaries");
    let canaries = h.last_placed();
    assert_eq!(canaries.len(), 2);
    let mut indexes: Vec<u32> = canaries.iter().map(|a| a.index).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1]);
    let d = canaries[0].deployment_id.clone().expect("deployment");
    h.state.set_deployment_status(&d, DeploymentStatus::Failed);

    again(&mut h);
    assert!(
        h.last_placed().is_empty(),
        "a failed version is not rolled further"
    );
    let stopped = h.last_stopped();
    assert_eq!(stopped.len(), 2);
    assert!(stopped
        .iter()
        .all(|a| a.is_canary() && a.desired_description == DESC_CANARY_NOT_NEEDED));
    assert_eq!(live_at(&h, 0).len(), 3, "the old version keeps running");
    assert!(h.plans.last().and_then(|p| p.deployment.clone()).is_none());
}

#[test]
fn a_new_version_cancels_the_older_active_deployment() {
    let mut h = Harness::new(&[mock::node(), mock::node()]);
    let eval = h.register(web(3, Some(policy(1, 0)), 256));
    h.process(&eval).expect("v0");
    let d0 = newest_deployment(&h);
    assert!(d0.status.is_active(), "its instances are not healthy yet");

    let eval = h.register(web(3, Some(policy(1, 0)), 512));
    h.process(&eval).expect("v1");
    let plan = h.plans.last().expect("plan");
    assert_eq!(plan.deployment_updates.len(), 1);
    let cancel = &plan.deployment_updates[0];
    assert_eq!(cancel.deployment_id, d0.id);
    assert_eq!(cancel.status, DeploymentStatus::Cancelled);
    assert_eq!(
        cancel.status_description,
        deployment_desc::CANCELLED_NEWER_JOB
    );
    let d1 = plan.deployment.clone().expect("v1's deployment");
    assert_eq!(d1.job_version, 1);
    // v0's undecided instances do not hold v1's slots.
    assert_eq!(h.last_placed().len(), 1);
    assert_eq!(
        h.state.deployment(&d0.id).status,
        DeploymentStatus::Cancelled
    );
}

#[test]
fn stopping_the_job_cancels_its_active_deployment() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(web(2, Some(policy(1, 0)), 256));
    h.process(&eval).expect("v0");
    let d0 = newest_deployment(&h);
    let mut job = h.state.jobs["web"].clone();
    job.stop = true;
    h.state.upsert_job(job.clone());
    h.process(&mock::eval(&job)).expect("stop");
    let plan = h.plans.last().expect("plan");
    assert_eq!(h.last_stopped().len(), 2);
    assert!(h
        .last_stopped()
        .iter()
        .all(|a| a.desired_description == DESC_JOB_STOPPED));
    assert_eq!(plan.deployment_updates.len(), 1);
    assert_eq!(
        plan.deployment_updates[0].status_description,
        deployment_desc::CANCELLED_JOB_STOPPED
    );
    assert_eq!(
        h.state.deployment(&d0.id).status,
        DeploymentStatus::Cancelled
    );
}

#[test]
fn a_plan_that_only_cancels_a_deployment_is_submitted() {
    let mut h = Harness::new(&[mock::node()]);
    let eval = h.register(web(1, Some(policy(1, 0)), 256));
    h.process(&eval).expect("v0");
    let d0 = newest_deployment(&h);
    // The allocations are already stopped; the deployment is still running.
    let ids: Vec<AllocId> = h.state.allocs.keys().cloned().collect();
    for id in ids {
        let mut a = h.state.allocs[&id].clone();
        a.desired_status = DesiredStatus::Stop;
        h.state.upsert_alloc(a);
    }
    let mut job = h.state.jobs["web"].clone();
    job.stop = true;
    h.state.upsert_job(job.clone());
    let plans = h.plans.len();
    let stop = mock::eval(&job);
    h.process(&stop).expect("stop");
    assert_eq!(h.plans.len(), plans + 1, "submitted");
    let plan = h.plans.last().expect("plan");
    assert!(plan.node_update.is_empty() && plan.node_allocation.is_empty());
    assert_eq!(plan.deployment_updates.len(), 1);
    assert_eq!(
        h.state.deployment(&d0.id).status,
        DeploymentStatus::Cancelled
    );
    let done = h.last_update();
    assert_eq!(
        (done.id.as_str(), done.status),
        (stop.id.as_str(), EvalStatus::Complete)
    );
}

#[test]
fn in_place_updates_join_the_new_deployment_with_their_health_reset() {
    let mut h = running(web(2, Some(policy(1, 0)), 256));
    let before = live(&h);
    assert!(before.iter().all(|a| a.deployment_health() == Some(true)));
    // One more instance and a new meta value: in place for the running two.
    let mut job = web(3, Some(policy(1, 0)), 256);
    job.groups[0].meta.insert("tag".into(), "blue".into());
    let eval = h.register(job);
    h.process(&eval).expect("process");
    let d1 = h
        .plans
        .last()
        .and_then(|p| p.deployment.clone())
        .expect("deployment");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 3);
    for a in &placed {
        assert_eq!(a.deployment_id.as_deref(), Some(d1.id.as_str()));
        assert_eq!(a.job_version, 1);
    }
    let updated: Vec<&Allocation> = placed
        .iter()
        .filter(|a| before.iter().any(|b| b.id == a.id))
        .collect();
    assert_eq!(updated.len(), 2);
    assert!(updated.iter().all(|a| a.deployment_status.is_none()));
    let u = last_updates(&h);
    assert_eq!(
        (u.in_place_update, u.place, u.destructive_update),
        (2, 1, 0)
    );
    assert!(h.last_stopped().is_empty());
}

#[test]
fn a_group_without_a_policy_changes_at_once_beside_one_that_rolls() {
    let mut job = web(2, Some(policy(1, 0)), 256);
    let mut api = job.groups[0].clone();
    api.name = "api".into();
    api.update = None;
    job.groups.insert(0, api);
    let mut h = running(job.clone());
    let mut v1 = job;
    for g in &mut v1.groups {
        g.tasks[0].resources.memory = 512;
    }
    let eval = h.register(v1);
    h.process(&eval).expect("process");
    let d = h
        .plans
        .last()
        .and_then(|p| p.deployment.clone())
        .expect("deployment");
    assert!(d.task_groups.contains_key("web") && !d.task_groups.contains_key("api"));
    let placed = h.last_placed();
    let api: Vec<&Allocation> = placed.iter().filter(|a| a.group == "api").collect();
    let web: Vec<&Allocation> = placed.iter().filter(|a| a.group == "web").collect();
    assert_eq!(api.len(), 2, "all at once");
    assert!(api.iter().all(|a| a.deployment_id.is_none()));
    assert_eq!(web.len(), 1, "max_parallel");
}

#[test]
fn a_system_job_with_an_update_replaces_max_parallel_nodes_then_follows_up_after_stagger() {
    let nodes = vec![mock::node(), mock::node(), mock::node()];
    let mut h = Harness::new(&nodes);
    let update = UpdatePolicy {
        max_parallel: 1,
        stagger: Duration::from_secs(5),
        ..UpdatePolicy::default()
    };
    let sys = |memory| {
        let mut job = JobBuilder::new("sys")
            .job_type(JobType::System)
            .memory(memory)
            .build();
        job.update = Some(update.clone());
        job
    };
    let eval = h.register(sys(256));
    h.process(&eval).expect("v0");
    assert_eq!(h.last_placed().len(), 3, "placements are not limited");
    assert!(h.created.is_empty());

    let eval = h.register(sys(512));
    h.process(&eval).expect("v1");
    assert_eq!(h.last_placed().len(), 1);
    assert_eq!(h.last_stopped().len(), 1);
    let u = &h.plans.last().expect("plan").annotations.desired_tg_updates["web"];
    assert_eq!((u.destructive_update, u.ignore), (1, 2));
    assert!(h.plans.last().is_some_and(|p| p.deployment.is_none()));
    let follow = h.created.last().expect("follow-up").clone();
    assert_eq!(follow.triggered_by, triggers::ROLLING_UPDATE);
    assert_eq!(follow.wait_until, Some(NOW + 5_000));
    assert_eq!(
        h.last_update().next_eval.as_deref(),
        Some(follow.id.as_str())
    );

    h.process(&follow).expect("second batch");
    assert_eq!(h.last_placed().len(), 1);
    h.process(&h.created.last().cloned().expect("third"))
        .expect("third batch");
    assert_eq!(h.last_placed().len(), 1);
    let created = h.created.len();
    let versions: Vec<u64> = h
        .state
        .live_allocs("sys")
        .iter()
        .map(|a| a.job_version)
        .collect();
    assert_eq!(versions, vec![1, 1, 1]);
    // Done: no further follow-up.
    h.process(&mock::eval(&h.state.jobs["sys"].clone()))
        .expect("done");
    assert_eq!(h.created.len(), created);
}

#[test]
fn new_instances_wait_for_promotion_while_canaries_are_tested() {
    let mut h = running(web(2, Some(policy(2, 1)), 256));
    let eval = h.register(web(4, Some(policy(2, 1)), 512));
    h.process(&eval).expect("canary");
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1, "only the canary: {placed:?}");
    assert!(placed[0].is_canary());
    let d = placed[0].deployment_id.clone().expect("deployment");
    assert_eq!(h.state.deployment(&d).task_groups["web"].desired_total, 4);

    h.state.set_health(&placed[0].id, true);
    h.state.promote(&d, "web");
    again(&mut h);
    let placed = h.last_placed();
    let mut indexes: Vec<u32> = placed.iter().map(|a| a.index).collect();
    indexes.sort();
    // The two new instances, and old [1] within max_parallel 2 (old [0] gave way to
    // the promoted canary).
    assert_eq!(indexes, vec![1, 2, 3]);
    assert!(placed.iter().all(|a| a.deployment_id.as_ref() == Some(&d)));
    assert_eq!(live_at(&h, 0).len(), 0);
}

#[test]
fn a_stopped_job_started_again_rolls_out_in_a_new_deployment() {
    let mut h = running(web(2, Some(policy(1, 0)), 256));
    let d0 = newest_deployment(&h);
    let mut job = h.state.jobs["web"].clone();
    job.stop = true;
    h.state.upsert_job(job.clone());
    h.process(&mock::eval(&job)).expect("stop");
    assert!(
        h.plans
            .last()
            .is_some_and(|p| p.deployment_updates.is_empty()),
        "d0 is done"
    );

    // Same spec, same version, a new registration (what the store does).
    job.stop = false;
    job.job_modify_index = h.state.index + 1;
    h.state.upsert_job(job.clone());
    h.process(&mock::eval(&job)).expect("start");
    let d1 = h
        .plans
        .last()
        .and_then(|p| p.deployment.clone())
        .expect("new deployment");
    assert_ne!(d1.id, d0.id);
    assert_eq!(d1.job_version, d0.job_version);
    assert_eq!(h.last_placed().len(), 2);
    assert!(h
        .last_placed()
        .iter()
        .all(|a| a.deployment_id.as_deref() == Some(d1.id.as_str())));
}

#[test]
fn replacing_a_lost_instance_of_a_rolled_out_version_makes_no_deployment() {
    let mut h = running(web(2, Some(policy(1, 0)), 256));
    let d0 = newest_deployment(&h);
    let gone = live(&h)[0].clone();
    let mut node = h.state.nodes[&gone.node_id].clone();
    node.status = orch_common::model::NodeStatus::Down;
    h.state.upsert_node(node);
    again(&mut h);
    let plan = h.plans.last().expect("plan");
    assert!(plan.deployment.is_none() && plan.deployment_updates.is_empty());
    let placed = h.last_placed();
    assert_eq!(placed.len(), 1);
    assert!(placed[0].deployment_id.is_none(), "{} is over", d0.id);
}

#[test]
fn a_rollout_driven_to_the_end_keeps_count_running_and_max_parallel_in_flight() {
    let mut h = running(web(5, Some(policy(2, 1)), 256));
    let eval = h.register(web(5, Some(policy(2, 1)), 512));
    h.process(&eval).expect("canary");
    let d = newest_deployment(&h).id;
    let mut promoted = false;
    for round in 0..20 {
        let running: Vec<Allocation> = live(&h);
        let in_flight = running
            .iter()
            .filter(|a| a.job_version == 1 && a.deployment_health().is_none())
            .count();
        assert!(in_flight <= 2, "round {round}: {in_flight} undecided");
        let regular = running.iter().filter(|a| !a.is_canary()).count();
        assert_eq!(regular, 5, "round {round}: never short, never over");
        if live_at(&h, 0).is_empty() {
            break;
        }
        // The watcher's part: health decided, the canary promoted.
        for a in running.iter().filter(|a| a.job_version == 1) {
            if a.deployment_health().is_none() {
                h.state.set_health(&a.id, true);
            }
        }
        if !promoted {
            h.state.promote(&d, "web");
            promoted = true;
        }
        again(&mut h);
    }
    assert!(live_at(&h, 0).is_empty(), "rolled out");
    assert_eq!(live_at(&h, 1).len(), 5);
    assert!(live(&h)
        .iter()
        .all(|a| a.deployment_id.as_ref() == Some(&d)));
}
