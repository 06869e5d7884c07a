//! The deployment commands: a plan stores its deployment, client health reports keep
//! its counters, `UpdateDeployment` promotes, ends, marks stable and reverts, and only
//! ever changes an active deployment.

use orch_common::mock::{deployment_group, DeploymentBuilder};
use orch_common::model::{deployment_desc as desc, DeploymentStatus};

use super::*;

use crate::deployment::decide::registration_of;
use crate::deployment::testing::{health, plan};
use crate::state::command::DeploymentChange;

/// Job "web" as `deployed` registers it: version 0, two instances.
fn web_v0() -> Job {
    JobBuilder::new("web").count(2).build()
}

/// Node n1, job "web" v0 registered, and deployment "d1" of it with two allocations
/// (`canary`: both are canaries) stored by one plan. Returns the plan's index.
fn deployed(store: &StateStore, canary: bool) -> (Job, u64) {
    apply(
        store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    register(store, &web_v0());
    let job = store.job("web").unwrap().unwrap();
    let g = deployment_group(2, if canary { 2 } else { 0 });
    let placed = |id: &str, index| {
        let a = AllocBuilder::new(&job)
            .id(id)
            .node_id("n1")
            .index(index)
            .deployment("d1");
        if canary {
            a.canary().build()
        } else {
            a.build()
        }
    };
    let index = apply(
        store,
        plan(
            Some(
                DeploymentBuilder::new(&job)
                    .id("d1")
                    .group("web", g)
                    .build(),
            ),
            vec![placed("a0", 0), placed("a1", 1)],
        ),
    );
    (job, index)
}

fn change(f: impl FnOnce(&mut DeploymentChange)) -> DeploymentChange {
    let mut c = DeploymentChange {
        deployment_id: "d1".into(),
        ..Default::default()
    };
    f(&mut c);
    c
}

fn update(
    store: &StateStore,
    change: DeploymentChange,
    revert_to: Option<Job>,
    evals: Vec<Evaluation>,
) -> u64 {
    apply(
        store,
        Command::UpdateDeployment {
            change,
            revert_to,
            evals,
        },
    )
}

fn d1(store: &StateStore) -> orch_common::model::Deployment {
    store.deployment("d1").unwrap().unwrap()
}

#[test]
fn a_plan_stores_its_deployment_with_its_progress_deadline_and_counters() {
    let (_dir, store) = temp_store();
    let (_, index) = deployed(&store, false);
    let d = d1(&store);
    assert_eq!((d.create_index, d.modify_index), (index, index));
    assert!(d.create_time > 0);
    let g = &d.task_groups["web"];
    assert_eq!(g.require_progress_by, Some(d.create_time + 600_000));
    assert_eq!(
        (g.placed_allocs, g.healthy_allocs, g.unhealthy_allocs),
        (2, 0, 0)
    );
    assert_eq!(store.table_index(Table::Deployments), index);
    assert_eq!(store.active_deployments().unwrap().len(), 1);
    assert_eq!(store.latest_deployment("web").unwrap().unwrap().id, "d1");
}

#[test]
fn health_reports_keep_the_counters_and_move_the_progress_deadline() {
    let (_dir, store) = temp_store();
    deployed(&store, false);
    let before = d1(&store).task_groups["web"].require_progress_by.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let index = apply(&store, health("a0", "d1", true, 1));
    let d = d1(&store);
    let g = &d.task_groups["web"];
    assert_eq!((g.healthy_allocs, g.unhealthy_allocs), (1, 0));
    assert!(
        g.require_progress_by.unwrap() > before,
        "a healthy instance moves it"
    );
    assert_eq!(d.modify_index, index);
    apply(&store, health("a1", "d1", false, 2));
    let g = d1(&store).task_groups["web"].clone();
    assert_eq!((g.healthy_allocs, g.unhealthy_allocs), (1, 1));
}

#[test]
fn a_report_for_another_deployment_is_ignored_and_the_first_verdict_wins() {
    let (_dir, store) = temp_store();
    deployed(&store, false);
    apply(&store, health("a0", "d0", true, 1));
    assert_eq!(
        store.alloc("a0").unwrap().unwrap().deployment_health(),
        None
    );
    assert_eq!(d1(&store).task_groups["web"].healthy_allocs, 0);
    apply(&store, health("a0", "d1", false, 2));
    apply(&store, health("a0", "d1", true, 3));
    let a = store.alloc("a0").unwrap().unwrap();
    assert_eq!(a.deployment_health(), Some(false));
    assert_eq!(a.deployment_status.unwrap().timestamp, 2);
    assert_eq!(d1(&store).task_groups["web"].unhealthy_allocs, 1);
}

#[test]
fn promoting_clears_the_canary_flags_and_keeps_the_canary_ids() {
    let (_dir, store) = temp_store();
    deployed(&store, true);
    assert!(store.alloc("a0").unwrap().unwrap().is_canary());
    assert_eq!(
        d1(&store).task_groups["web"].placed_canaries,
        vec!["a0", "a1"]
    );
    let index = update(
        &store,
        change(|c| c.promote = vec!["web".into()]),
        None,
        vec![],
    );
    let d = d1(&store);
    assert!(d.task_groups["web"].promoted);
    assert_eq!(d.modify_index, index);
    assert_eq!(d.task_groups["web"].placed_canaries, vec!["a0", "a1"]);
    for id in ["a0", "a1"] {
        let a = store.alloc(id).unwrap().unwrap();
        assert!(!a.is_canary(), "{id}");
        assert_eq!(a.modify_index, index);
    }
}

#[test]
fn an_inactive_deployment_changes_nothing_but_its_evals_are_stored() {
    let (_dir, store) = temp_store();
    let (job, _) = deployed(&store, true);
    let failed = (DeploymentStatus::Failed, desc::FAILED_BY_USER.to_string());
    update(
        &store,
        change(|c| c.status = Some(failed.clone())),
        None,
        vec![],
    );
    let before = d1(&store);
    let jobs_before = store.job("web").unwrap().unwrap();
    let eval = Evaluation::for_job(&job, "deployment-watcher");
    let mut v0 = registration_of(&job);
    v0.meta.insert("x".into(), "y".into());
    update(
        &store,
        change(|c| {
            c.status = Some((DeploymentStatus::Successful, desc::SUCCESSFUL.into()));
            c.promote = vec!["web".into()];
            c.alloc_health = vec![("a0".into(), true)];
            c.mark_stable = true;
        }),
        Some(v0),
        vec![eval.clone()],
    );
    assert_eq!(d1(&store), before, "the first verdict stays");
    assert_eq!(
        store.job("web").unwrap().unwrap(),
        jobs_before,
        "no revert, not stable"
    );
    assert!(store.alloc("a0").unwrap().unwrap().is_canary());
    assert_eq!(
        store.alloc("a0").unwrap().unwrap().deployment_health(),
        None
    );
    assert!(
        store.eval(&eval.id).unwrap().is_some(),
        "the evals are stored"
    );
}

#[test]
fn manual_health_counts_like_a_client_report() {
    let (_dir, store) = temp_store();
    deployed(&store, false);
    let index = update(
        &store,
        change(|c| {
            c.alloc_health = vec![
                ("a0".into(), true),
                ("a1".into(), false),
                ("nope".into(), true),
            ]
        }),
        None,
        vec![],
    );
    let g = d1(&store).task_groups["web"].clone();
    assert_eq!((g.healthy_allocs, g.unhealthy_allocs), (1, 1));
    assert_eq!(store.alloc("a0").unwrap().unwrap().modify_index, index);
}

#[test]
fn mark_stable_marks_the_version_and_the_job() {
    let (_dir, store) = temp_store();
    deployed(&store, false);
    update(
        &store,
        change(|c| {
            c.status = Some((DeploymentStatus::Successful, desc::SUCCESSFUL.into()));
            c.mark_stable = true;
        }),
        None,
        vec![],
    );
    assert_eq!(d1(&store).status, DeploymentStatus::Successful);
    assert!(store.job("web").unwrap().unwrap().stable);
    assert!(store.job_version("web", 0).unwrap().unwrap().stable);
    // Registering the same spec again keeps it stable; a submitted `stable` is ignored.
    register(&store, &web_v0());
    assert!(store.job("web").unwrap().unwrap().stable);
    let mut v1 = JobBuilder::new("web").count(3).build();
    v1.stable = true;
    register(&store, &v1);
    let job = store.job("web").unwrap().unwrap();
    assert_eq!(job.version, 1);
    assert!(!job.stable);
    assert!(!store.job_version("web", 1).unwrap().unwrap().stable);
}

#[test]
fn a_revert_registers_a_new_version_and_its_eval_gets_the_new_job_modify_index() {
    let (_dir, store) = temp_store();
    let (v0, _) = deployed(&store, false);
    register(&store, &JobBuilder::new("web").count(3).build());
    let v1 = store.job("web").unwrap().unwrap();
    apply(
        &store,
        plan(
            Some(
                DeploymentBuilder::new(&v1)
                    .id("d2")
                    .group("web", deployment_group(3, 0))
                    .build(),
            ),
            vec![],
        ),
    );
    let eval = Evaluation::for_job(&v1, "deployment-watcher");
    let index = apply(
        &store,
        Command::UpdateDeployment {
            change: DeploymentChange {
                deployment_id: "d2".into(),
                status: Some((
                    DeploymentStatus::Failed,
                    desc::rolling_back(desc::FAILED_BY_USER, 0),
                )),
                ..Default::default()
            },
            revert_to: Some(registration_of(&v0)),
            evals: vec![eval.clone()],
        },
    );
    let job = store.job("web").unwrap().unwrap();
    assert_eq!((job.version, job.job_modify_index), (2, index));
    assert_eq!(job.groups[0].count, 2);
    assert_eq!(
        store.eval(&eval.id).unwrap().unwrap().job_modify_index,
        index
    );
    assert_eq!(store.job_versions("web").unwrap().len(), 3);
}

#[test]
fn a_revert_is_dropped_once_the_job_moved_past_the_deployments_version() {
    let (_dir, store) = temp_store();
    let (v0, _) = deployed(&store, false);
    register(&store, &JobBuilder::new("web").count(3).build());
    // d1 is of version 0; the job is at version 1 now.
    let mut stale = registration_of(&v0);
    stale.groups[0].count = 1;
    update(
        &store,
        change(|c| c.status = Some((DeploymentStatus::Failed, desc::FAILED_BY_USER.into()))),
        Some(stale),
        vec![],
    );
    assert_eq!(d1(&store).status, DeploymentStatus::Failed);
    let job = store.job("web").unwrap().unwrap();
    assert_eq!((job.version, job.groups[0].count), (1, 3));
}

#[test]
fn deployments_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let index = {
        let store = StateStore::open(&path).unwrap();
        deployed(&store, true);
        apply(&store, health("a0", "d1", true, 1));
        update(
            &store,
            change(|c| c.promote = vec!["web".into()]),
            None,
            vec![],
        )
    };
    let store = StateStore::open(&path).unwrap();
    let d = d1(&store);
    assert_eq!(d.modify_index, index);
    assert!(d.task_groups["web"].promoted);
    assert_eq!(d.task_groups["web"].healthy_allocs, 1);
    assert_eq!(store.table_index(Table::Deployments), index);
    assert_eq!(store.deployments_by_job("web").unwrap().len(), 1);
    assert_eq!(
        store.ids_with_prefix(Table::Deployments, "d", 10).unwrap(),
        vec!["d1"]
    );
}

#[test]
fn a_resumed_deployment_gets_its_whole_progress_deadline_again() {
    let (_dir, store) = temp_store();
    deployed(&store, false);
    let set_status =
        |status: DeploymentStatus| change(|c| c.status = Some((status, String::new())));
    update(&store, set_status(DeploymentStatus::Paused), None, vec![]);
    let paused = d1(&store);
    let before = paused.task_groups["web"].require_progress_by.unwrap();
    assert_eq!(
        before,
        paused.create_time + 600_000,
        "pausing keeps the deadline"
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    update(&store, set_status(DeploymentStatus::Running), None, vec![]);
    let resumed = d1(&store);
    assert_eq!(
        resumed.task_groups["web"].require_progress_by,
        Some(resumed.modify_time + 600_000)
    );
    assert!(resumed.modify_time > paused.create_time);
}

#[test]
fn an_ended_deployment_keeps_the_counts_it_ended_with() {
    let (_dir, store) = temp_store();
    deployed(&store, false);
    let end = change(|c| {
        c.status = Some((DeploymentStatus::Cancelled, String::new()));
    });
    update(&store, end, None, vec![]);
    let ended = d1(&store);
    apply(&store, health("a0", "d1", true, 1));
    let alloc = store.alloc("a0").unwrap().unwrap();
    assert_eq!(alloc.deployment_health(), Some(true), "the report is kept");
    assert_eq!(d1(&store), ended, "the deployment is not rewritten");
}
