//! Check-and-set inside commands: a stale `enforce_index` and a change to a deployment
//! that is no longer active are refused by `apply` itself, change no table, are still
//! committed at their index, and are refused the same way when the log is replayed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use orch_common::mock::{DeploymentBuilder, JobBuilder, NodeBuilder};
use orch_common::model::{triggers, DeploymentStatus, Evaluation, Job};

use crate::deployment::testing::plan;
use crate::state::command::{DeploymentChange, Rejection};
use crate::state::{ApplyOutcome, Command, CommandLog, Observer, StateStore, Table};

fn open(dir: &tempfile::TempDir, name: &str) -> StateStore {
    StateStore::open(dir.path().join(name)).expect("open store")
}

fn apply_next(store: &StateStore, cmd: &Command) -> ApplyOutcome {
    store.apply(store.last_index() + 1, cmd).expect("apply")
}

fn upsert(job: &Job, enforce_index: Option<u64>) -> Command {
    Command::UpsertJob {
        job: job.clone(),
        eval: Some(Evaluation::for_job(job, triggers::JOB_REGISTER)),
        enforce_index,
    }
}

/// What a rejected command must leave alone: the job, its versions, the evaluations
/// and every table's index.
fn tables(store: &StateStore) -> (Option<Job>, Vec<Job>, usize, Vec<u64>) {
    (
        store.job("web").expect("job"),
        store.job_versions("web").expect("versions"),
        store.evals().expect("evals").len(),
        Table::ALL.iter().map(|t| store.table_index(*t)).collect(),
    )
}

#[test]
fn a_stale_enforce_index_is_rejected_changes_no_table_and_replays_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, "state.db");
    let v0 = JobBuilder::new("web").build();
    let created = apply_next(&store, &upsert(&v0, Some(0)));
    assert_eq!(created.rejected, None);
    let v1 = JobBuilder::new("web").count(5).build();
    let changed = apply_next(&store, &upsert(&v1, Some(created.index)));
    assert_eq!(changed.rejected, None);
    let before = tables(&store);

    // Written against the first version: the job moved on since.
    let stale = JobBuilder::new("web").count(9).build();
    let outcome = apply_next(&store, &upsert(&stale, Some(created.index)));
    let rejection = Rejection::JobModifyIndex {
        job_id: "web".into(),
        enforce_index: created.index,
        job_modify_index: Some(changed.index),
    };
    assert_eq!(outcome.rejected, Some(rejection.clone()));
    assert_eq!(outcome.tables, Vec::<Table>::new());
    assert_eq!(
        tables(&store),
        before,
        "a rejected command changes no table"
    );
    assert_eq!(
        store.last_index(),
        outcome.index,
        "it is committed at its index"
    );

    // Reopened: the same state, and the index continues after the rejected command.
    drop(store);
    let store = open(&dir, "state.db");
    assert_eq!(tables(&store), before);
    assert_eq!(store.last_index(), outcome.index);

    // Replayed from the log into a fresh store: the same rejection at the same index.
    let log = store.commands_since(0, 100).expect("log");
    assert_eq!(log.len(), 3);
    let replica = open(&dir, "replica.db");
    let outcomes: Vec<ApplyOutcome> = log
        .iter()
        .map(|(index, cmd)| replica.apply(*index, cmd).expect("replay"))
        .collect();
    assert_eq!(outcomes[2].index, outcome.index);
    assert_eq!(outcomes[2].rejected, Some(rejection));
    assert!(outcomes[..2].iter().all(|o| o.rejected.is_none()));
    let job = |s: &StateStore| {
        let j = s.job("web").expect("read").expect("job");
        (j.version, j.job_modify_index, j.groups[0].count)
    };
    assert_eq!(job(&replica), job(&store));
    assert_eq!(job(&replica), (1, changed.index, 5));
}

#[test]
fn enforce_index_zero_creates_only_a_job_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, "state.db");
    let absent = apply_next(&store, &upsert(&JobBuilder::new("web").build(), Some(7)));
    assert_eq!(
        absent.rejected,
        Some(Rejection::JobModifyIndex {
            job_id: "web".into(),
            enforce_index: 7,
            job_modify_index: None,
        })
    );
    assert!(store.job("web").expect("read").is_none());
    let created = apply_next(&store, &upsert(&JobBuilder::new("web").build(), Some(0)));
    assert_eq!(created.rejected, None);
    let again = apply_next(&store, &upsert(&JobBuilder::new("web").build(), Some(0)));
    assert!(matches!(
        again.rejected,
        Some(Rejection::JobModifyIndex {
            job_modify_index: Some(i),
            ..
        }) if i == created.index
    ));
}

#[test]
fn a_stale_deregistration_leaves_the_job_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, "state.db");
    let created = apply_next(&store, &upsert(&JobBuilder::new("web").build(), None));
    let v1 = JobBuilder::new("web").count(5).build();
    apply_next(&store, &upsert(&v1, None));
    let before = tables(&store);
    let outcome = apply_next(
        &store,
        &Command::DeregisterJob {
            job_id: "web".into(),
            purge: true,
            eval: Some(Evaluation::for_job(&v1, triggers::JOB_DEREGISTER)),
            enforce_index: Some(created.index),
        },
    );
    assert!(matches!(
        outcome.rejected,
        Some(Rejection::JobModifyIndex { .. })
    ));
    assert_eq!(tables(&store), before);
}

#[test]
fn a_change_to_an_ended_deployment_is_rejected_but_its_evals_are_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, "state.db");
    apply_next(
        &store,
        &Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    apply_next(&store, &upsert(&JobBuilder::new("web").build(), None));
    let job = store.job("web").expect("read").expect("job");
    let d1 = DeploymentBuilder::new(&job).id("d1").build();
    apply_next(&store, &plan(Some(d1), vec![]));
    let end = |status: DeploymentStatus| DeploymentChange {
        deployment_id: "d1".into(),
        status: Some((status, "ended".into())),
        ..Default::default()
    };
    let failed = apply_next(
        &store,
        &Command::UpdateDeployment {
            change: end(DeploymentStatus::Failed),
            revert_to: None,
            evals: vec![],
        },
    );
    assert_eq!(failed.rejected, None);
    let eval = Evaluation::for_job(&job, triggers::DEPLOYMENT_WATCHER);
    let late = apply_next(
        &store,
        &Command::UpdateDeployment {
            change: end(DeploymentStatus::Successful),
            revert_to: None,
            evals: vec![eval.clone()],
        },
    );
    assert_eq!(
        late.rejected,
        Some(Rejection::DeploymentNotActive {
            deployment_id: "d1".into(),
            status: DeploymentStatus::Failed,
        })
    );
    let d = store.deployment("d1").expect("read").expect("deployment");
    assert_eq!(
        (d.status, d.modify_index),
        (DeploymentStatus::Failed, failed.index)
    );
    assert!(store.eval(&eval.id).expect("read").is_some());
    assert!(late.tables.contains(&Table::Evals));
    assert!(!late.tables.contains(&Table::Deployments));
    let gone = apply_next(
        &store,
        &Command::UpdateDeployment {
            change: DeploymentChange {
                deployment_id: "nope".into(),
                ..Default::default()
            },
            revert_to: None,
            evals: vec![],
        },
    );
    assert_eq!(
        gone.rejected,
        Some(Rejection::DeploymentNotFound {
            deployment_id: "nope".into(),
        })
    );
}

#[tokio::test]
async fn the_log_answers_a_rejection_and_tells_no_observer_of_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, "state.db");
    let told = Arc::new(AtomicUsize::new(0));
    let observer: Observer = {
        let told = told.clone();
        Arc::new(move |_: &Command, _: u64| {
            told.fetch_add(1, Ordering::SeqCst);
        })
    };
    let log = CommandLog::start(store.clone(), vec![observer]).expect("log");
    let created = log
        .submit(upsert(&JobBuilder::new("web").build(), Some(0)))
        .await
        .expect("submit");
    assert_eq!((created.index, created.rejected), (1, None));
    let refused = log
        .submit(upsert(&JobBuilder::new("web").build(), Some(0)))
        .await
        .expect("a rejection is an answer, not an error");
    assert_eq!(refused.index, 2);
    assert!(refused.rejected.is_some());
    assert_eq!(
        told.load(Ordering::SeqCst),
        1,
        "the broker must not queue the evaluation of a rejected registration"
    );
    log.shutdown().await;
}

#[test]
fn commands_without_a_check_encode_as_before_and_old_entries_decode() {
    let job = JobBuilder::new("web").build();
    let cmd = Command::UpsertJob {
        job: job.clone(),
        eval: None,
        enforce_index: None,
    };
    let json = serde_json::to_value(&cmd).expect("encode");
    assert!(json.get("enforce_index").is_none(), "{json}");
    let old = serde_json::json!({"type": "deregister_job", "job_id": "web", "purge": false, "eval": null});
    let decoded: Command = serde_json::from_value(old).expect("an entry of the previous release");
    assert_eq!(
        decoded,
        Command::DeregisterJob {
            job_id: "web".into(),
            purge: false,
            eval: None,
            enforce_index: None,
        }
    );
    let checked = Command::UpsertJob {
        job,
        eval: None,
        enforce_index: Some(4),
    };
    let back: Command =
        serde_json::from_value(serde_json::to_value(&checked).expect("encode")).expect("decode");
    assert_eq!(back, checked);
}
