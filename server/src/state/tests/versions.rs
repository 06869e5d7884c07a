//! A job's history stays bounded: registrations prune all but the newest versions,
//! the stable ones an auto-revert may go back to and the versions still in use, and a
//! plan computed for a version pruned since is not applied.

use orch_common::mock::DeploymentBuilder;
use orch_common::model::DeploymentStatus;

use super::*;
use crate::deployment::testing::plan;
use crate::state::command::{DeploymentChange, Rejection};
use crate::state::versions::JOB_TRACKED_VERSIONS;

/// Job "web" at `count` instances: each count is a spec of its own.
fn web(count: u32) -> Job {
    JobBuilder::new("web").count(count).build()
}

/// The stored versions of "web", newest first.
fn versions(store: &StateStore) -> Vec<u64> {
    store
        .job_versions("web")
        .expect("versions")
        .iter()
        .map(|v| v.version)
        .collect()
}

/// Registers "web" with counts `from..=to`, one new version each.
fn register_counts(store: &StateStore, counts: std::ops::RangeInclusive<u32>) {
    for count in counts {
        register(store, &web(count));
    }
}

/// Stores a running deployment of the job's current version with no allocations;
/// `succeed` ends it successful, which makes that version stable.
fn deploy(store: &StateStore, id: &str, succeed: bool) {
    let job = store.job("web").unwrap().unwrap();
    apply(
        store,
        plan(Some(DeploymentBuilder::new(&job).id(id).build()), vec![]),
    );
    if succeed {
        apply(
            store,
            Command::UpdateDeployment {
                change: DeploymentChange {
                    deployment_id: id.into(),
                    status: Some((DeploymentStatus::Successful, "done".into())),
                    mark_stable: true,
                    ..Default::default()
                },
                revert_to: None,
                evals: vec![],
            },
        );
    }
}

#[test]
fn registering_a_job_ten_times_keeps_its_newest_six_versions() {
    let (_dir, store) = temp_store();
    register_counts(&store, 1..=10);
    assert_eq!(JOB_TRACKED_VERSIONS, 6);
    assert_eq!(versions(&store), [9, 8, 7, 6, 5, 4]);
    assert_eq!(store.job("web").unwrap().unwrap().version, 9);
}

#[test]
fn a_registration_that_changes_nothing_prunes_nothing() {
    let (_dir, store) = temp_store();
    register_counts(&store, 1..=6);
    register(&store, &web(6));
    assert_eq!(versions(&store), [5, 4, 3, 2, 1, 0]);
}

#[test]
fn the_version_a_running_allocation_runs_is_kept_and_a_finished_ones_is_not() {
    let (_dir, store) = temp_store();
    register(&store, &web(1));
    let v0 = store.job("web").unwrap().unwrap();
    register(&store, &web(2));
    let v1 = store.job("web").unwrap().unwrap();
    place(
        &store,
        vec![
            AllocBuilder::new(&v0).id("runs-v0").node_id("n1").build(),
            AllocBuilder::new(&v1).id("ran-v1").node_id("n1").build(),
        ],
    );
    report(
        &store,
        vec![
            client_update("runs-v0", ClientStatus::Running),
            client_update("ran-v1", ClientStatus::Complete),
        ],
    );
    register_counts(&store, 3..=10);
    assert_eq!(versions(&store), [9, 8, 7, 6, 5, 4, 0]);
    // The allocation still reads its job.
    let stored = store
        .job_version("web", 0)
        .unwrap()
        .expect("version 0 kept");
    assert_eq!(stored.groups[0].count, 1);
}

#[test]
fn the_version_an_active_deployment_rolls_out_is_kept() {
    let (_dir, store) = temp_store();
    register(&store, &web(1));
    deploy(&store, "d0", false);
    register_counts(&store, 2..=10);
    assert_eq!(versions(&store), [9, 8, 7, 6, 5, 4, 0]);
}

#[test]
fn the_newest_stable_version_is_kept_however_old() {
    let (_dir, store) = temp_store();
    register(&store, &web(1));
    deploy(&store, "d0", true);
    register_counts(&store, 2..=10);
    assert_eq!(versions(&store), [9, 8, 7, 6, 5, 4, 0]);
    assert!(store.job_version("web", 0).unwrap().unwrap().stable);
}

#[test]
fn the_stable_version_an_auto_revert_would_go_back_to_is_kept() {
    let (_dir, store) = temp_store();
    register(&store, &web(1));
    deploy(&store, "d0", true);
    register(&store, &web(2));
    deploy(&store, "d1", true);
    register_counts(&store, 3..=6);
    // Version 6 is version 1's spec again: should its rollout fail, the auto-revert
    // skips 1 (the same spec) and goes back to 0.
    register(&store, &web(2));
    assert_eq!(versions(&store), [6, 5, 4, 3, 2, 1, 0]);
    // Version 7 differs from 1, the newest stable version: 0 is needed no more.
    register(&store, &web(7));
    assert_eq!(versions(&store), [7, 6, 5, 4, 3, 2, 1]);
}

#[test]
fn a_plan_of_a_version_pruned_since_is_rejected_and_stores_only_its_evaluations() {
    let (_dir, store) = temp_store();
    register(&store, &web(1));
    let v0 = store.job("web").unwrap().unwrap();
    register_counts(&store, 2..=10);
    assert!(store.job_version("web", 0).unwrap().is_none());
    let mut eval = Evaluation::for_job(&v0, "job-register");
    eval.status = EvalStatus::Complete;
    let placed = AllocBuilder::new(&v0).id("late").node_id("n1").build();
    store.hold_in_flight([&placed]);
    let index = store.last_index() + 1;
    let outcome = store
        .apply(
            index,
            &Command::ApplyPlan {
                allocs: vec![placed],
                stopped: vec![],
                evals: vec![eval.clone()],
                deployment: None,
                deployment_updates: vec![],
            },
        )
        .expect("apply");
    assert_eq!(
        outcome.rejected,
        Some(Rejection::PlanOfPrunedVersion {
            job_id: "web".into(),
            version: 0
        })
    );
    assert!(store.alloc("late").unwrap().is_none(), "nothing placed");
    assert_eq!(
        store.eval(&eval.id).unwrap().expect("eval stored").status,
        EvalStatus::Complete
    );
    let snap = store.snapshot().expect("snapshot");
    assert_eq!(
        snap.node_allocated("n1"),
        NodeAllocated::default(),
        "the placement's room is no longer held"
    );
}

#[test]
fn a_plan_of_a_job_with_no_stored_versions_is_applied() {
    let (_dir, store) = temp_store();
    let job = web(1);
    place(
        &store,
        vec![AllocBuilder::new(&job).id("a1").node_id("n1").build()],
    );
    assert!(store.alloc("a1").unwrap().is_some());
}
