//! Tests of the state store: every command applied and read back, indexes, versions,
//! prefix lookup, reopening, migration, blocking waits, the log, and a property test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_common::api::AllocClientUpdate;
use orch_common::ids::{AllocId, JobId, NodeId};
use orch_common::mock::{alloc_on, AllocBuilder, JobBuilder, NodeBuilder};
use orch_common::model::{
    Allocation, ClientStatus, DesiredStatus, Eligibility, EvalStatus, Evaluation, Job, JobStatus,
    JobType, NodeAllocated, NodeStatus,
};
use proptest::prelude::*;

use super::*;
use crate::scheduler::State;

mod acl;
mod backup;
mod cas;
mod deployments;
mod versions;

fn temp_store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateStore::open(dir.path().join("state.db")).expect("open store");
    (dir, store)
}

/// Applies `cmd` at the next index.
fn apply(store: &StateStore, cmd: Command) -> u64 {
    let index = store.last_index() + 1;
    store.apply(index, &cmd).expect("apply");
    index
}

/// Commits placements as the plan applier would.
fn place(store: &StateStore, allocs: Vec<Allocation>) -> u64 {
    apply(
        store,
        Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs,
            stopped: vec![],
            evals: vec![],
        },
    )
}

/// Commits client-reported allocation states.
fn report(store: &StateStore, updates: Vec<AllocClientUpdate>) -> u64 {
    apply(
        store,
        Command::UpdateAllocsFromClient {
            updates,
            evals: vec![],
        },
    )
}

fn register(store: &StateStore, job: &Job) -> (u64, Evaluation) {
    let eval = Evaluation::for_job(job, "job-register");
    let index = apply(
        store,
        Command::UpsertJob {
            job: job.clone(),
            eval: Some(eval.clone()),
            enforce_index: None,
        },
    );
    (index, eval)
}

fn client_update(id: &str, status: ClientStatus) -> AllocClientUpdate {
    AllocClientUpdate {
        deployment_health: None,
        id: id.into(),
        client_status: status,
        client_description: format!("now {}", status.as_str()),
        task_states: BTreeMap::new(),
        checks: Default::default(),
    }
}

#[test]
fn a_new_store_starts_at_index_zero_with_the_current_schema() {
    let (_dir, store) = temp_store();
    assert_eq!(store.last_index(), 0);
    for t in Table::ALL {
        assert_eq!(store.table_index(t), 0);
    }
    let conn = store.reader().expect("reader");
    assert_eq!(
        schema::version(&conn).expect("version"),
        schema::CURRENT_VERSION
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
}

#[test]
fn registering_a_job_stores_it_with_version_zero_and_its_eval() {
    let (_dir, store) = temp_store();
    // Submitted without a name: the store names it after its id.
    let (index, eval) = register(&store, &JobBuilder::new("web").name("").build());
    let job = store.job("web").expect("read").expect("job stored");
    assert_eq!(job.version, 0);
    assert_eq!(job.name, "web");
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(
        (job.create_index, job.modify_index, job.job_modify_index),
        (index, index, index)
    );
    assert!(job.submit_time > 0);
    let stored_eval = store.eval(&eval.id).expect("read").expect("eval stored");
    assert_eq!(stored_eval.job_modify_index, index);
    assert_eq!(
        (stored_eval.create_index, stored_eval.modify_index),
        (index, index)
    );
    assert_eq!(store.job_versions("web").expect("versions").len(), 1);
    assert_eq!(store.table_index(Table::Jobs), index);
    assert_eq!(store.table_index(Table::Evals), index);
    assert_eq!(store.table_index(Table::Allocs), 0);
}

#[test]
fn a_changed_spec_gets_a_new_version_and_an_unchanged_one_keeps_it() {
    let (_dir, store) = temp_store();
    let spec = || JobBuilder::new("web").count(2);
    let (first, _) = register(&store, &spec().build());
    let (second, _) = register(&store, &spec().build());
    let job = store.job("web").expect("read").expect("job");
    assert_eq!(job.version, 0, "same spec keeps its version");
    assert_eq!(job.job_modify_index, first);
    assert_eq!(job.modify_index, second);
    assert_eq!(job.create_index, first);

    let changed = spec().count(5).build();
    let (third, _) = register(&store, &changed);
    let job = store.job("web").expect("read").expect("job");
    assert_eq!(job.version, 1);
    assert_eq!(job.job_modify_index, third);
    assert_eq!(job.create_index, first);
    let versions = store.job_versions("web").expect("versions");
    assert_eq!(
        versions.iter().map(|j| j.version).collect::<Vec<_>>(),
        vec![1, 0]
    );
    assert_eq!(
        store
            .job_version("web", 0)
            .expect("read")
            .expect("v0")
            .groups[0]
            .count,
        2
    );
}

#[test]
fn stopping_a_job_marks_it_dead_and_keeps_it() {
    let (_dir, store) = temp_store();
    register(&store, &JobBuilder::new("web").build());
    let eval = Evaluation::for_job(&JobBuilder::new("web").build(), "job-deregister");
    let index = apply(
        &store,
        Command::DeregisterJob {
            job_id: "web".into(),
            purge: false,
            eval: Some(eval.clone()),
            enforce_index: None,
        },
    );
    let job = store.job("web").expect("read").expect("still there");
    assert!(job.stop);
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.job_modify_index, index);
    assert!(store.eval(&eval.id).expect("read").is_some());

    register(&store, &JobBuilder::new("web").build());
    let job = store.job("web").expect("read").expect("job");
    assert!(!job.stop, "re-registering starts a stopped job again");
    assert_eq!(job.status, JobStatus::Pending);
}

#[test]
fn purging_a_job_deletes_it_and_a_new_registration_continues_its_versions() {
    let (_dir, store) = temp_store();
    register(&store, &JobBuilder::new("web").build());
    apply(
        &store,
        Command::DeregisterJob {
            job_id: "web".into(),
            purge: true,
            eval: None,
            enforce_index: None,
        },
    );
    assert!(store.job("web").expect("read").is_none());
    assert!(store.jobs().expect("jobs").is_empty());
    register(&store, &JobBuilder::new("web").build());
    assert_eq!(store.job("web").expect("read").expect("job").version, 1);
}

#[test]
fn eval_upserts_keep_the_create_index() {
    let (_dir, store) = temp_store();
    let (first, mut eval) = register(&store, &JobBuilder::new("web").build());
    eval.status = EvalStatus::Complete;
    let second = apply(
        &store,
        Command::UpsertEvals {
            evals: vec![eval.clone()],
        },
    );
    let stored = store.eval(&eval.id).expect("read").expect("eval");
    assert_eq!(stored.status, EvalStatus::Complete);
    assert_eq!((stored.create_index, stored.modify_index), (first, second));
    assert_eq!(store.evals_by_job("web").expect("read").len(), 1);
    assert!(store.evals_non_terminal().expect("read").is_empty());
}

#[test]
fn plan_allocs_are_stored_without_the_job_and_make_the_job_running() {
    let (_dir, store) = temp_store();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    let a = alloc_on("a1", &job, "n1", 0);
    let index = place(&store, vec![a.clone()]);
    let stored = store.alloc("a1").expect("read").expect("alloc");
    assert!(stored.job.is_none(), "the job is served from job_versions");
    assert_eq!(stored.node_name, "node-n1");
    assert_eq!((stored.create_index, stored.modify_index), (index, index));
    assert!(stored.create_time > 0);
    assert_eq!(store.allocs_by_job("web").expect("read").len(), 1);
    assert_eq!(store.allocs_by_node("n1").expect("read").len(), 1);
    assert_eq!(store.table_index(Table::Allocs), index);
    let job = store.job("web").expect("read").expect("job");
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.modify_index, index);
}

#[test]
fn client_updates_touch_only_the_client_fields() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    place(&store, vec![alloc_on("a1", &job, "n1", 0)]);
    let mut update = client_update("a1", ClientStatus::Running);
    update
        .task_states
        .insert("server".into(), Default::default());
    update.checks.insert(
        "web/alive".into(),
        orch_common::model::CheckStatus {
            service: "web".into(),
            name: "alive".into(),
            check_type: orch_common::model::CheckType::Http,
            task: "server".into(),
            status: orch_common::model::CheckHealth::Passing,
            output: "HTTP GET http://127.0.0.1:20000/: 200 OK".into(),
            last_run_ms: 1,
            status_since_ms: 1,
        },
    );
    let index = report(
        &store,
        vec![update, client_update("unknown", ClientStatus::Failed)],
    );
    let stored = store.alloc("a1").expect("read").expect("alloc");
    assert_eq!(stored.client_status, ClientStatus::Running);
    assert_eq!(stored.client_description, "now running");
    assert_eq!(stored.task_states.len(), 1);
    assert_eq!(
        stored.checks["web/alive"].status,
        orch_common::model::CheckHealth::Passing
    );
    assert_eq!(stored.desired_status, DesiredStatus::Run);
    assert_eq!(stored.modify_index, index);
    assert!(store.alloc("unknown").expect("read").is_none());

    // A later in-place plan update keeps what the client reported.
    let mut in_place = alloc_on("a1", &job, "n1", 0);
    in_place.desired_description = "updated in place".into();
    place(&store, vec![in_place]);
    let stored = store.alloc("a1").expect("read").expect("alloc");
    assert_eq!(stored.client_status, ClientStatus::Running);
    assert_eq!(stored.desired_description, "updated in place");
    assert_eq!(stored.task_states.len(), 1);
    assert_eq!(stored.checks.len(), 1);
}

#[test]
fn plan_stops_set_desired_fields_and_lost_on_down_nodes() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    place(
        &store,
        vec![alloc_on("a1", &job, "n1", 0), alloc_on("a2", &job, "n2", 1)],
    );
    let mut stop = alloc_on("a1", &job, "n1", 0);
    stop.desired_status = DesiredStatus::Stop;
    stop.desired_description = "alloc not needed".into();
    let mut lost = alloc_on("a2", &job, "n2", 1);
    lost.desired_status = DesiredStatus::Stop;
    lost.client_status = ClientStatus::Lost;
    lost.client_description = "node is down".into();
    apply(
        &store,
        Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![],
            stopped: vec![stop, lost],
            evals: vec![],
        },
    );
    let a1 = store.alloc("a1").expect("read").expect("a1");
    assert_eq!(a1.desired_status, DesiredStatus::Stop);
    assert_eq!(a1.desired_description, "alloc not needed");
    assert_eq!(a1.client_status, ClientStatus::Pending);
    let a2 = store.alloc("a2").expect("read").expect("a2");
    assert_eq!(a2.client_status, ClientStatus::Lost);
    assert_eq!(a2.client_description, "node is down");
}

#[test]
fn a_replacement_links_the_previous_allocation() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    place(&store, vec![alloc_on("old", &job, "n1", 0)]);
    let mut replacement = alloc_on("new", &job, "n2", 0);
    replacement.previous_allocation = Some("old".into());
    let index = place(&store, vec![replacement]);
    let old = store.alloc("old").expect("read").expect("old");
    assert_eq!(old.next_allocation.as_deref(), Some("new"));
    assert_eq!(old.modify_index, index);
}

#[test]
fn a_batch_job_is_dead_once_its_allocs_finish_and_its_evals_are_done() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("frames").batch().build();
    let (_, mut eval) = register(&store, &job);
    eval.status = EvalStatus::Complete;
    apply(
        &store,
        Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![alloc_on("a1", &job, "n1", 0)],
            stopped: vec![],
            evals: vec![eval],
        },
    );
    assert_eq!(
        store.job("frames").expect("read").expect("job").status,
        JobStatus::Running
    );
    report(&store, vec![client_update("a1", ClientStatus::Complete)]);
    assert_eq!(
        store.job("frames").expect("read").expect("job").status,
        JobStatus::Dead
    );
}

#[test]
fn a_service_job_with_only_failed_allocs_is_pending() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    place(&store, vec![alloc_on("a1", &job, "n1", 0)]);
    report(&store, vec![client_update("a1", ClientStatus::Failed)]);
    assert_eq!(
        store.job("web").expect("read").expect("job").status,
        JobStatus::Pending
    );
}

#[test]
fn node_upserts_keep_eligibility_and_create_index() {
    let (_dir, store) = temp_store();
    let first = apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    apply(
        &store,
        Command::UpdateNodeEligibility {
            node_id: "n1".into(),
            eligibility: Eligibility::Ineligible,
            evals: vec![],
        },
    );
    let mut refreshed = NodeBuilder::new().id("n1").build();
    refreshed.name = "renamed".into();
    let third = apply(&store, Command::UpsertNode { node: refreshed });
    let node = store.node("n1").expect("read").expect("node");
    assert_eq!(node.eligibility, Eligibility::Ineligible);
    assert_eq!(node.name, "renamed");
    assert_eq!((node.create_index, node.modify_index), (first, third));
    assert_eq!(store.table_index(Table::Nodes), third);
}

#[test]
fn node_status_updates_change_the_status_and_store_their_evals() {
    let (_dir, store) = temp_store();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    let mut eval = Evaluation::for_job(&JobBuilder::new("web").build(), "node-update");
    eval.node_id = Some("n1".into());
    let index = apply(
        &store,
        Command::UpdateNodeStatus {
            node_id: "n1".into(),
            status: NodeStatus::Down,
            evals: vec![eval.clone()],
        },
    );
    let node = store.node("n1").expect("read").expect("node");
    assert_eq!(node.status, NodeStatus::Down);
    assert_eq!(node.modify_index, index);
    assert!(node.status_updated_at > 0);
    assert_eq!(
        store
            .eval(&eval.id)
            .expect("read")
            .expect("eval")
            .triggered_by,
        "node-update"
    );
    // An unknown node is a no-op, not an error.
    apply(
        &store,
        Command::UpdateNodeStatus {
            node_id: "nope".into(),
            status: NodeStatus::Down,
            evals: vec![],
        },
    );
}

#[test]
fn every_applied_command_is_in_the_command_log() {
    let (_dir, store) = temp_store();
    let cmd = Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    };
    apply(&store, cmd.clone());
    register(&store, &JobBuilder::new("web").build());
    let log = store.commands_since(0, 10).expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], (1, cmd));
    assert_eq!(
        store.stored_indexes().expect("indexes").get("command_log"),
        Some(&2)
    );
}

#[test]
fn a_plan_is_logged_with_its_placements_as_written_and_replays_to_the_same_rows() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    let mut eval = Evaluation::for_job(&job, "job-register");
    eval.status = EvalStatus::Complete;
    let index = apply(
        &store,
        Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![alloc_on("a1", &job, "n1", 0), alloc_on("a2", &job, "n2", 1)],
            stopped: vec![],
            evals: vec![eval.clone()],
        },
    );
    let log = store.commands_since(index - 1, 10).expect("log");
    let [(logged_index, logged)] = log.as_slice() else {
        panic!("one entry expected, got {log:?}");
    };
    assert_eq!(*logged_index, index);
    let Command::ApplyPlan {
        allocs,
        stopped,
        evals,
        ..
    } = logged
    else {
        panic!("an ApplyPlan expected, got {logged:?}");
    };
    let rows: Vec<Allocation> = ["a1", "a2"]
        .iter()
        .map(|id| store.alloc(id).expect("read").expect("row"))
        .collect();
    assert_eq!(allocs, &rows, "the entry holds the rows as written");
    assert_eq!(rows[0].create_index, index);
    assert!(stopped.is_empty());
    assert_eq!(evals, &vec![eval]);

    // Applied again on another store, the entry writes the same allocations.
    let (_dir2, replica) = temp_store();
    register(&replica, &job);
    apply(&replica, logged.clone());
    for row in &rows {
        let copy = replica.alloc(&row.id).expect("read").expect("row");
        assert_eq!(
            (copy.node_id.as_str(), copy.index),
            (row.node_id.as_str(), row.index)
        );
        assert_eq!(copy.create_index, index);
    }
}

#[test]
fn command_log_entries_written_as_json_text_still_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    let old = Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    };
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open raw");
        schema::migrate(&mut conn).expect("schema");
        conn.execute(
            "INSERT INTO command_log (idx, command, time) VALUES (1, ?1, 0)",
            [serde_json::to_string(&old).expect("json")],
        )
        .expect("insert text entry");
        conn.execute(
            "INSERT INTO indexes (name, idx) VALUES ('command_log', 1)",
            [],
        )
        .expect("insert index");
    }
    let store = StateStore::open(&path).expect("open");
    let new = Command::UpsertNode {
        node: NodeBuilder::new().id("n2").build(),
    };
    apply(&store, new.clone());
    let log = store.commands_since(0, 10).expect("log");
    assert_eq!(log, vec![(1, old), (2, new)]);
}

#[test]
fn apply_refuses_an_index_that_does_not_advance() {
    let (_dir, store) = temp_store();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    let err = store
        .apply(
            1,
            &Command::UpsertNode {
                node: NodeBuilder::new().id("n2").build(),
            },
        )
        .expect_err("stale index");
    assert!(matches!(
        err,
        StateError::IndexNotIncreasing { index: 1, last: 1 }
    ));
    assert!(store.node("n2").expect("read").is_none());
}

#[test]
fn prefix_lookup_finds_unique_ambiguous_and_exact_ids() {
    let (_dir, store) = temp_store();
    for id in ["abc123", "abd456", "abc"] {
        apply(
            &store,
            Command::UpsertNode {
                node: NodeBuilder::new().id(id).build(),
            },
        );
    }
    let find = |p: &str| store.ids_with_prefix(Table::Nodes, p, 10).expect("lookup");
    assert_eq!(find("abd"), vec!["abd456"]);
    assert_eq!(find("abc"), vec!["abc"], "an exact match wins");
    assert_eq!(find("ab"), vec!["abc", "abc123", "abd456"]);
    assert!(find("x").is_empty());
    assert!(find("a%").is_empty(), "LIKE wildcards are escaped");
    assert!(find("ABC1").is_empty(), "matching is case-sensitive");
}

#[test]
fn a_reopened_store_has_everything_and_continues_its_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("server").join("state.db");
    let job = JobBuilder::new("web").build();
    {
        let store = StateStore::open(&path).expect("open");
        apply(
            &store,
            Command::UpsertNode {
                node: NodeBuilder::new().id("n1").build(),
            },
        );
        register(&store, &job);
        place(&store, vec![alloc_on("a1", &job, "n1", 0)]);
    }
    let store = StateStore::open(&path).expect("reopen");
    assert_eq!(store.last_index(), 3);
    assert_eq!(store.table_index(Table::Nodes), 1);
    assert_eq!(store.table_index(Table::Allocs), 3);
    assert!(store.job("web").expect("read").is_some());
    assert!(store.node("n1").expect("read").is_some());
    assert!(store.alloc("a1").expect("read").is_some());
    assert_eq!(store.evals().expect("read").len(), 1);
    let next = apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n2").build(),
        },
    );
    assert_eq!(next, 4);
}

#[test]
fn opening_a_version_one_file_migrates_it_and_backfills_groups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.db");
    let job = JobBuilder::new("web").build();
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open raw");
        schema::migrate_to(&mut conn, 1).expect("v1 schema");
        let alloc = alloc_on("a1", &job, "n1", 0);
        conn.execute(
            "INSERT INTO allocs (id, job_id, node_id, client_status, desired_status, \
             create_index, modify_index, json) VALUES ('a1', 'web', 'n1', 'running', 'run', 1, 1, ?1)",
            [serde_json::to_string(&alloc).expect("json")],
        )
        .expect("insert v1 row");
        conn.execute("INSERT INTO indexes (name, idx) VALUES ('allocs', 1)", [])
            .expect("insert index");
        assert_eq!(schema::version(&conn).expect("version"), 1);
    }
    let store = StateStore::open(&path).expect("open migrates");
    let conn = store.reader().expect("reader");
    assert_eq!(
        schema::version(&conn).expect("version"),
        schema::CURRENT_VERSION
    );
    let counts = store.alloc_status_counts().expect("counts");
    assert_eq!(
        counts,
        vec![GroupStatusCount {
            job_id: "web".into(),
            group: "web".into(),
            client_status: ClientStatus::Running,
            count: 1
        }]
    );
    assert_eq!(store.last_index(), 1);
    assert_eq!(store.allocs_by_node("n1").expect("read").len(), 1);
}

#[test]
fn a_file_from_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("new.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open raw");
        conn.pragma_update(None, "user_version", schema::CURRENT_VERSION + 1)
            .expect("set version");
    }
    let err = StateStore::open(&path).expect_err("too new");
    assert!(matches!(err, StateError::SchemaTooNew { .. }), "{err}");
}

#[test]
fn a_snapshot_does_not_see_later_commits() {
    let (_dir, store) = temp_store();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    let snap = store.snapshot().expect("snapshot");
    assert_eq!(snap.index(), 2);
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n2").build(),
        },
    );
    place(&store, vec![alloc_on("a1", &job, "n1", 0)]);
    assert_eq!(snap.nodes().len(), 1);
    assert!(snap.node("n2").is_none());
    assert!(snap.allocs_by_job("web").is_empty());
    assert!(snap.job("web").is_some());
    let fresh = store.snapshot().expect("snapshot");
    assert_eq!(fresh.index(), 4);
    assert_eq!(fresh.nodes().len(), 2);
    assert_eq!(fresh.allocs_by_node("n1").len(), 1);
}

#[test]
fn a_snapshot_finds_a_jobs_newest_blocked_eval_and_its_versions() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    let (_, mut first) = register(&store, &job);
    first.status = EvalStatus::Blocked;
    let mut second = Evaluation::for_job(&job, "queued-allocs");
    second.status = EvalStatus::Blocked;
    apply(&store, Command::UpsertEvals { evals: vec![first] });
    apply(
        &store,
        Command::UpsertEvals {
            evals: vec![second.clone()],
        },
    );
    let snap = store.snapshot().expect("snapshot");
    let state: &dyn State = &snap;
    let (web, other) = (JobId::from("web"), JobId::from("other"));
    assert_eq!(state.blocked_eval(&web).map(|e| e.id), Some(second.id));
    assert!(state.blocked_eval(&other).is_none());
    assert_eq!(state.job_version(&web, 0).map(|j| j.version), Some(0));
    assert!(state.job_version(&web, 1).is_none());
}

#[test]
fn snapshot_allocs_by_node_leaves_out_terminal_allocs() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    place(
        &store,
        vec![alloc_on("a1", &job, "n1", 0), alloc_on("a2", &job, "n1", 1)],
    );
    report(&store, vec![client_update("a1", ClientStatus::Complete)]);
    let snap = store.snapshot().expect("snapshot");
    let live: Vec<_> = snap
        .allocs_by_node("n1")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(live, vec!["a2"]);
    assert_eq!(snap.allocs_by_job("web").len(), 2);
}

#[test]
fn allocs_for_client_shows_live_allocs_and_server_side_changes() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    let placed = place(
        &store,
        vec![
            alloc_on("a1", &job, "n1", 0),
            alloc_on("a2", &job, "n1", 1),
            alloc_on("a3", &job, "n1", 2),
        ],
    );
    let before = store.last_index();
    let ids = |since| -> Vec<AllocId> {
        store
            .allocs_for_client("n1", since)
            .expect("read")
            .into_iter()
            .map(|a| a.id)
            .collect()
    };
    // What the client reported itself neither wakes its watch nor comes back to it.
    let done = report(&store, vec![client_update("a1", ClientStatus::Complete)]);
    assert_eq!(ids(before), vec!["a2", "a3"]);
    assert_eq!(ids(0), vec!["a2", "a3"]);
    assert_eq!(store.node_allocs_server_index("n1").expect("read"), placed);
    // A change made on the server (here: `lost`) does, once.
    let mut lost = alloc_on("a2", &job, "n1", 1);
    lost.desired_status = DesiredStatus::Stop;
    lost.client_status = ClientStatus::Lost;
    let stopped = apply(
        &store,
        Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![],
            stopped: vec![lost],
            evals: vec![],
        },
    );
    assert_eq!(store.node_allocs_server_index("n1").expect("read"), stopped);
    assert_eq!(ids(done), vec!["a2", "a3"], "the loss is seen once");
    assert_eq!(ids(stopped), vec!["a3"]);
    // A later client report on a server-changed row keeps the server's index.
    report(&store, vec![client_update("a3", ClientStatus::Running)]);
    assert_eq!(store.node_allocs_server_index("n1").expect("read"), stopped);
    assert_eq!(store.node_allocs_server_index("n9").expect("read"), 0);
}

#[test]
fn job_summary_counts_allocs_per_group_and_status() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    register(&store, &job);
    place(
        &store,
        vec![alloc_on("a1", &job, "n1", 0), alloc_on("a2", &job, "n1", 1)],
    );
    let counts = store.alloc_status_counts().expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].count, 2);
    assert_eq!(counts[0].client_status, ClientStatus::Pending);
}

#[tokio::test]
async fn a_blocking_wait_wakes_on_a_change() {
    let (_dir, store) = temp_store();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_index(Table::Nodes, 0, Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let index = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            apply(
                &store,
                Command::UpsertNode {
                    node: NodeBuilder::new().id("n1").build(),
                },
            )
        })
        .await
        .expect("apply task")
    };
    let woke_at = waiter.await.expect("waiter");
    assert_eq!(woke_at, index);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_blocking_wait_times_out_when_nothing_changes() {
    let (_dir, store) = temp_store();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    let started = std::time::Instant::now();
    // A change to another table does not wake a waiter on nodes.
    register(&store, &JobBuilder::new("web").build());
    let index = store
        .wait_for_index(Table::Nodes, 1, Duration::from_millis(150))
        .await;
    assert_eq!(index, 1);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn releasing_waiters_ends_blocking_waits_at_once() {
    let (_dir, store) = temp_store();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_index(Table::Allocs, 0, Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.release_waiters();
    let index = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("released")
        .expect("task");
    assert_eq!(index, 0);
}

#[tokio::test]
async fn the_log_assigns_indexes_in_order_and_calls_observers() {
    let (_dir, store) = temp_store();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer: Observer = {
        let seen = seen.clone();
        Arc::new(move |_cmd: &Command, index: u64| seen.lock().expect("lock").push(index))
    };
    let log = CommandLog::start(store.clone(), vec![observer]).expect("log");
    let a = log
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await
        .expect("submit");
    let blocking = {
        let log = log.clone();
        tokio::task::spawn_blocking(move || {
            log.submit_blocking(Command::UpsertNode {
                node: NodeBuilder::new().id("n2").build(),
            })
        })
        .await
        .expect("task")
        .expect("submit")
    };
    assert_eq!((a.index, blocking.index), (1, 2));
    assert_eq!(*seen.lock().expect("lock"), vec![1, 2]);
    assert_eq!(store.last_index(), 2);
    log.shutdown().await;
    let err = log
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n3").build(),
        })
        .await
        .expect_err("closed");
    assert!(matches!(err, LogError::Closed));
}

#[tokio::test]
async fn a_panicking_observer_does_not_stop_the_log() {
    let (_dir, store) = temp_store();
    let observer: Observer = Arc::new(|_: &Command, _: u64| panic!("observer bug"));
    let log = CommandLog::start(store, vec![observer]).expect("log");
    for expected in 1..=2 {
        let index = log
            .submit(Command::UpsertNode {
                node: NodeBuilder::new().id(format!("n{expected}")).build(),
            })
            .await
            .expect("submit");
        assert_eq!(index.index, expected);
    }
    log.shutdown().await;
}

// ----------------------------------------------------------------------------- property

#[derive(Debug, Clone)]
enum Op {
    Register {
        job: u8,
        count: u32,
    },
    Stop {
        job: u8,
        purge: bool,
    },
    Node {
        node: u8,
        down: bool,
    },
    Place {
        alloc: u8,
        job: u8,
        node: u8,
        prev: Option<u8>,
    },
    StopAlloc {
        alloc: u8,
        lost: bool,
    },
    Client {
        alloc: u8,
        status: u8,
    },
    EvalDone {
        job: u8,
    },
    /// Garbage collection of the allocations, jobs and nodes in the bit masks.
    Reap {
        allocs: u8,
        jobs: u8,
        nodes: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1u32..4).prop_map(|(job, count)| Op::Register { job, count }),
        (0u8..3, any::<bool>()).prop_map(|(job, purge)| Op::Stop { job, purge }),
        (0u8..3, any::<bool>()).prop_map(|(node, down)| Op::Node { node, down }),
        (0u8..6, 0u8..3, 0u8..3, proptest::option::of(0u8..6)).prop_map(
            |(alloc, job, node, prev)| Op::Place {
                alloc,
                job,
                node,
                prev
            }
        ),
        (0u8..6, any::<bool>()).prop_map(|(alloc, lost)| Op::StopAlloc { alloc, lost }),
        (0u8..6, 0u8..5).prop_map(|(alloc, status)| Op::Client { alloc, status }),
        (0u8..3).prop_map(|job| Op::EvalDone { job }),
        (0u8..64, 0u8..8, 0u8..8).prop_map(|(allocs, jobs, nodes)| Op::Reap {
            allocs,
            jobs,
            nodes
        }),
    ]
}

fn command_for(op: &Op) -> Command {
    let job_of = |j: u8| JobBuilder::new(format!("job{j}")).build();
    match op {
        Op::Register { job, count } => {
            let mut j = job_of(*job);
            j.groups[0].count = *count;
            Command::UpsertJob {
                eval: Some(Evaluation::for_job(&j, "job-register")),
                job: j,
                enforce_index: None,
            }
        }
        Op::Stop { job, purge } => Command::DeregisterJob {
            job_id: format!("job{job}").into(),
            purge: *purge,
            eval: Some(Evaluation::for_job(&job_of(*job), "job-deregister")),
            enforce_index: None,
        },
        Op::Node { node, down } => {
            if *down {
                Command::UpdateNodeStatus {
                    node_id: format!("n{node}").into(),
                    status: NodeStatus::Down,
                    evals: vec![],
                }
            } else {
                Command::UpsertNode {
                    node: NodeBuilder::new().id(format!("n{node}")).build(),
                }
            }
        }
        Op::Place {
            alloc,
            job,
            node,
            prev,
        } => {
            let mut a = alloc_on(format!("a{alloc}"), &job_of(*job), format!("n{node}"), 0);
            a.previous_allocation = prev.map(|p| format!("a{p}").into());
            Command::ApplyPlan {
                deployment: None,
                deployment_updates: Vec::new(),
                allocs: vec![a],
                stopped: vec![],
                evals: vec![],
            }
        }
        Op::StopAlloc { alloc, lost } => {
            let mut a = alloc_on(format!("a{alloc}"), &job_of(0), "n0", 0);
            a.desired_status = DesiredStatus::Stop;
            if *lost {
                a.client_status = ClientStatus::Lost;
            }
            Command::ApplyPlan {
                deployment: None,
                deployment_updates: Vec::new(),
                allocs: vec![],
                stopped: vec![a],
                evals: vec![],
            }
        }
        Op::Client { alloc, status } => {
            let status = [
                ClientStatus::Pending,
                ClientStatus::Running,
                ClientStatus::Complete,
                ClientStatus::Failed,
                ClientStatus::Lost,
            ][*status as usize];
            Command::UpdateAllocsFromClient {
                updates: vec![client_update(&format!("a{alloc}"), status)],
                evals: vec![],
            }
        }
        Op::EvalDone { job } => {
            let mut e = Evaluation::for_job(&job_of(*job), "job-register");
            e.status = EvalStatus::Complete;
            Command::UpsertEvals { evals: vec![e] }
        }
        Op::Reap {
            allocs,
            jobs,
            nodes,
        } => {
            fn picked<I: From<String>>(mask: u8, n: u8, name: impl Fn(u8) -> String) -> Vec<I> {
                (0..n)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| I::from(name(i)))
                    .collect()
            }
            Command::Reap {
                allocs: picked(*allocs, 6, |i| format!("a{i}")),
                jobs: picked(*jobs, 3, |i| format!("job{i}")),
                nodes: picked(*nodes, 3, |i| format!("n{i}")),
                evals: vec![],
                log_before: 0,
            }
        }
    }
}

fn all_row_indexes(store: &StateStore) -> Vec<(String, u64, u64)> {
    let conn = store.reader().expect("reader");
    let mut out = Vec::new();
    for table in ["jobs", "job_versions", "evals", "allocs", "nodes"] {
        let mut stmt = conn
            .prepare(&format!("SELECT create_index, modify_index FROM {table}"))
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .expect("query");
        for row in rows {
            let (c, m) = row.expect("row");
            out.push((table.to_string(), c as u64, m as u64));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_command_sequence_keeps_row_indexes_ordered(ops in proptest::collection::vec(op(), 1..25)) {
        let (_dir, store) = temp_store();
        for op in &ops {
            apply(&store, command_for(op));
        }
        let last = store.last_index();
        prop_assert_eq!(last, ops.len() as u64);
        for (table, create, modify) in all_row_indexes(&store) {
            prop_assert!(create >= 1, "{} row with create_index 0", table);
            prop_assert!(create <= modify, "{} row: create {} > modify {}", table, create, modify);
            prop_assert!(modify <= last, "{} row: modify {} > last {}", table, modify, last);
        }
        for (name, idx) in store.stored_indexes().expect("indexes") {
            prop_assert!(idx <= last, "{} index {} > last {}", name, idx, last);
        }
        // The JSON agrees with the columns.
        for a in store.allocs().expect("allocs") {
            prop_assert!(a.create_index <= a.modify_index);
        }
        for j in store.jobs().expect("jobs") {
            prop_assert!(j.create_index <= j.job_modify_index && j.job_modify_index <= j.modify_index);
        }
    }
}

#[test]
fn the_scheduler_configuration_defaults_then_keeps_what_was_set() {
    use orch_common::model::{SchedulerAlgorithm, SchedulerConfiguration};
    let (_dir, store) = temp_store();
    assert_eq!(
        store.scheduler_config().unwrap(),
        SchedulerConfiguration::default()
    );
    let mut config = SchedulerConfiguration {
        scheduler_algorithm: SchedulerAlgorithm::Spread,
        ..Default::default()
    };
    config.preemption_config.service_scheduler_enabled = true;
    let first = apply(
        &store,
        Command::SetSchedulerConfig {
            config: config.clone(),
        },
    );
    let second = apply(&store, Command::SetSchedulerConfig { config });
    let stored = store.scheduler_config().unwrap();
    assert_eq!(stored.scheduler_algorithm, SchedulerAlgorithm::Spread);
    assert!(stored.preemption_config.service_scheduler_enabled);
    assert_eq!((stored.create_index, stored.modify_index), (first, second));
    assert_eq!(
        store
            .snapshot()
            .unwrap()
            .scheduler_config()
            .scheduler_algorithm,
        SchedulerAlgorithm::Spread
    );
}

/// The per-node sums recomputed from the allocation rows in SQLite.
fn sums_from_sql(store: &StateStore) -> BTreeMap<NodeId, (u64, u64)> {
    let mut sums = BTreeMap::new();
    for a in store.allocs().expect("allocs") {
        if a.holds_resources() {
            let t = a.resources.total();
            let e = sums.entry(a.node_id.clone()).or_insert((0, 0));
            e.0 += t.cpu;
            e.1 += t.memory;
        }
    }
    sums
}

fn sums_from_mirror(store: &StateStore, nodes: &[NodeId]) -> BTreeMap<NodeId, (u64, u64)> {
    nodes
        .iter()
        .map(|n| {
            let u = store.node_allocated(n);
            (n.clone(), (u.resources.cpu, u.resources.memory))
        })
        .filter(|(_, v)| *v != (0, 0))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The in-memory state (per-node sums and the allocation index) agrees with the
    /// SQL rows after any command sequence, and is rebuilt the same on a reopen.
    #[test]
    fn the_in_memory_state_matches_sqlite_and_survives_a_reopen(ops in proptest::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let nodes: Vec<NodeId> = (0..8).map(|n| NodeId::from(format!("n{n}"))).collect();
        {
            let store = StateStore::open(&path).expect("open");
            for op in &ops {
                apply(&store, command_for(op));
            }
            prop_assert_eq!(sums_from_mirror(&store, &nodes), sums_from_sql(&store));
            node_reads_match_sql(&store, &nodes, false)?;
        }
        let reopened = StateStore::open(&path).expect("reopen");
        prop_assert_eq!(sums_from_mirror(&reopened, &nodes), sums_from_sql(&reopened));
        node_reads_match_sql(&reopened, &nodes, true)?;
    }
}

/// Every by-node read (all allocations, the client's view at several indexes, the
/// newest server index) agrees with the same question asked of the SQL rows.
fn node_reads_match_sql(
    store: &StateStore,
    nodes: &[NodeId],
    reopened: bool,
) -> Result<(), TestCaseError> {
    let all = store.allocs().expect("allocs");
    let ids =
        |allocs: Vec<Allocation>| -> Vec<AllocId> { allocs.into_iter().map(|a| a.id).collect() };
    for node in nodes {
        let on_node: Vec<&Allocation> = all.iter().filter(|a| &a.node_id == node).collect();
        let expected: Vec<AllocId> = on_node.iter().map(|a| a.id.clone()).collect();
        prop_assert_eq!(ids(store.allocs_by_node(node).expect("read")), expected);
        // The server index skips changes clients reported; it is not stored, so a
        // reopened store starts it at the modify index: never later than that, and
        // equal to it after a reopen.
        let max = on_node.iter().map(|a| a.modify_index).max().unwrap_or(0);
        let server_max = store.node_allocs_server_index(node).expect("read");
        prop_assert!(server_max <= max, "{} > {}", server_max, max);
        if reopened {
            prop_assert_eq!(server_max, max);
        }
        for since in [0, 1, max.saturating_sub(1), max] {
            let seen = ids(store.allocs_for_client(node, since).expect("read"));
            let changed_since: Vec<AllocId> = on_node
                .iter()
                .filter(|a| !a.client_status.is_terminal() || (since > 0 && a.modify_index > since))
                .map(|a| a.id.clone())
                .collect();
            let live = on_node.iter().filter(|a| !a.client_status.is_terminal());
            for a in live {
                prop_assert!(
                    seen.contains(&a.id),
                    "live {} not shown to its client",
                    a.id
                );
            }
            for id in &seen {
                prop_assert!(changed_since.contains(id), "{} shown but not changed", id);
            }
            if reopened {
                prop_assert_eq!(&seen, &changed_since);
            }
        }
        let live: Vec<AllocId> = on_node
            .iter()
            .filter(|a| !a.client_status.is_terminal())
            .map(|a| a.id.clone())
            .collect();
        let snap = store.snapshot().expect("snapshot");
        prop_assert_eq!(ids(State::allocs_by_node(&snap, node)), live);
    }
    // Lookups by id and by prefix find exactly the stored rows (reaped ones are gone).
    let mut stored = ids(all);
    stored.sort();
    for i in 0..6 {
        let id = AllocId::from(format!("a{i}"));
        prop_assert_eq!(
            store.alloc(&id).expect("read").is_some(),
            stored.contains(&id)
        );
    }
    prop_assert_eq!(
        store
            .ids_with_prefix(Table::Allocs, "a", 100)
            .expect("prefix"),
        stored
    );
    Ok(())
}

#[test]
fn a_snapshot_keeps_the_node_sums_and_nodes_of_its_index() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    place(&store, vec![alloc_on("a1", &job, "n1", 0)]);
    let snap = store.snapshot().expect("snapshot");
    let before = snap.node_allocated("n1");
    assert!(before.resources.cpu > 0);
    assert_eq!(snap.nodes().len(), 1);

    place(&store, vec![alloc_on("a2", &job, "n1", 1)]);
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n2").build(),
        },
    );
    assert_eq!(
        snap.node_allocated("n1"),
        before,
        "later commits are invisible"
    );
    assert_eq!(snap.nodes().len(), 1);
    let fresh = store.snapshot().expect("fresh snapshot");
    assert_eq!(
        fresh.node_allocated("n1").resources.cpu,
        2 * before.resources.cpu
    );
    assert_eq!(fresh.nodes().len(), 2);
    assert!(fresh.node("n2").is_some());
}

#[test]
fn placements_in_flight_count_once_until_committed_or_released() {
    let (_dir, store, job) = store_with_node_n1();
    let a1 = alloc_on("a1", &job, "n1", 0);
    let a2 = alloc_on("a2", &job, "n1", 1);
    let one = NodeAllocated::of(&a1).resources.cpu;
    store.hold_in_flight([&a1, &a2]);
    let held = store.snapshot().expect("snapshot");
    assert_eq!(held.node_allocated("n1").resources.cpu, 2 * one);
    assert_eq!(store.node_allocated("n1").resources.cpu, 2 * one);

    // Committing a1 moves it from in flight to the sums: still counted once.
    place(&store, vec![a1.clone()]);
    assert_eq!(store.node_allocated("n1").resources.cpu, 2 * one);
    // a2's commit failed: released, it no longer counts.
    store.release_in_flight([&AllocId::from("a2")]);
    assert_eq!(store.node_allocated("n1").resources.cpu, one);
    // A snapshot keeps what it saw.
    assert_eq!(held.node_allocated("n1").resources.cpu, 2 * one);
    // Releasing an id that is not held (or was committed) changes nothing.
    store.release_in_flight([&AllocId::from("a1"), &AllocId::from("nope")]);
    assert_eq!(store.node_allocated("n1").resources.cpu, one);
}

#[test]
fn a_new_placement_with_an_existing_id_updates_it_instead_of_failing() {
    let (_dir, store, job) = store_with_node_n1();
    let first = alloc_on("a1", &job, "n1", 0);
    place(&store, vec![first.clone()]);
    let created = store.alloc("a1").expect("read").expect("a1").create_index;
    // Sent again as new (create_index 0): the stored row is updated in place.
    let mut again = first.clone();
    again.desired_description = "again".into();
    place(&store, vec![again]);
    let stored = store.alloc("a1").expect("read").expect("a1");
    assert_eq!(stored.create_index, created);
    assert_eq!(stored.desired_description, "again");
    let one = NodeAllocated::of(&first).resources.cpu;
    assert_eq!(store.node_allocated("n1").resources.cpu, one);
}

#[test]
fn a_released_snapshot_ends_its_read_transaction() {
    let (_dir, store) = temp_store();
    let snap = store.snapshot().expect("snapshot");
    assert!(snap.nodes().is_empty());
    snap.release_handle().release();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    // No longer pinned to its index: reads see the newest state.
    assert!(snap.try_nodes().expect("read").len() == 1);
    // Releasing twice is harmless.
    snap.release_handle().release();
}

/// A store with node "n1" registered, and a job to place on it.
fn store_with_node_n1() -> (tempfile::TempDir, StateStore, Job) {
    let (dir, store) = temp_store();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    (dir, store, JobBuilder::new("web").build())
}

#[test]
fn allocations_are_found_by_id_and_prefix_after_a_reopen_and_not_before_their_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    let job = JobBuilder::new("web").build();
    {
        let store = StateStore::open(&path).expect("open");
        place(
            &store,
            vec![
                alloc_on("abc-1", &job, "n1", 0),
                alloc_on("abd-2", &job, "n1", 1),
            ],
        );
        let before = store.snapshot().expect("snapshot");
        place(&store, vec![alloc_on("abc-3", &job, "n1", 2)]);
        // Known to the id map, but committed after the snapshot began.
        assert!(before.alloc("abc-3").is_none());
        assert!(before.alloc("abc-1").is_some());
        assert!(store.alloc("abc-3").expect("read").is_some());
    }
    let store = StateStore::open(&path).expect("reopen");
    assert_eq!(
        store
            .ids_with_prefix(Table::Allocs, "abc", 10)
            .expect("lookup"),
        vec!["abc-1".to_string(), "abc-3".to_string()]
    );
    assert_eq!(
        store
            .ids_with_prefix(Table::Allocs, "ab", 1)
            .expect("lookup"),
        vec!["abc-1".to_string()]
    );
    assert_eq!(
        store
            .ids_with_prefix(Table::Allocs, "abd-2", 10)
            .expect("lookup"),
        vec!["abd-2".to_string()]
    );
    assert!(store
        .ids_with_prefix(Table::Allocs, "x", 10)
        .expect("lookup")
        .is_empty());
    assert_eq!(store.alloc("abd-2").expect("read").expect("found").index, 1);
    assert!(store.alloc("nope").expect("read").is_none());
    // Updating keeps one row per id.
    let mut again = alloc_on("abc-1", &job, "n1", 0);
    again.desired_description = "updated".into();
    place(&store, vec![again]);
    assert_eq!(store.allocs_by_job("web").expect("read").len(), 3);
}

// ------------------------------------------------------------------ garbage collection

fn reap(store: &StateStore, jobs: &[&str], evals: &[&str], allocs: &[&str], nodes: &[&str]) -> u64 {
    fn owned<I: for<'a> From<&'a str>>(v: &[&str]) -> Vec<I> {
        v.iter().map(|s| I::from(s)).collect()
    }
    apply(
        store,
        Command::Reap {
            jobs: owned(jobs),
            evals: owned(evals),
            allocs: owned(allocs),
            nodes: owned(nodes),
            log_before: 0,
        },
    )
}

const UUID_DONE: &str = "7a1b2c3d-0000-4000-8000-000000000001";
const UUID_LIVE: &str = "7a1b2c3d-0000-4000-8000-000000000002";

#[test]
fn reap_deletes_terminal_rows_and_skips_what_is_not_collectable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    let store = StateStore::open(&path).expect("open");
    let job = JobBuilder::new("web").build();
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        },
    );
    apply(
        &store,
        Command::UpsertNode {
            node: NodeBuilder::new().id("n2").build(),
        },
    );
    let (_, eval) = register(&store, &job);
    place(
        &store,
        vec![
            alloc_on(UUID_DONE, &job, "n1", 0),
            alloc_on(UUID_LIVE, &job, "n1", 1),
        ],
    );
    report(
        &store,
        vec![
            client_update(UUID_DONE, ClientStatus::Complete),
            client_update(UUID_LIVE, ClientStatus::Running),
        ],
    );
    let used = store.node_allocated("n1");
    apply(
        &store,
        Command::UpdateNodeStatus {
            node_id: "n2".into(),
            status: NodeStatus::Down,
            evals: vec![],
        },
    );

    // The eval is still pending, the job runs, n1 is ready: only the finished
    // allocation and the down node go.
    let index = reap(
        &store,
        &["web"],
        &[&eval.id],
        &[UUID_DONE, UUID_LIVE],
        &["n1", "n2"],
    );
    assert!(store.alloc(UUID_DONE).unwrap().is_none());
    assert!(store.alloc(UUID_LIVE).unwrap().is_some());
    assert!(store.eval(&eval.id).unwrap().is_some());
    assert!(store.job("web").unwrap().is_some());
    assert!(store.node("n1").unwrap().is_some());
    assert!(store.node("n2").unwrap().is_none());
    assert_eq!(store.alloc_gc_index(), index);
    assert_eq!(
        store.node_allocated("n1"),
        used,
        "terminal allocations held nothing"
    );
    assert_eq!(
        store.ids_with_prefix(Table::Allocs, "7a1b", 10).unwrap(),
        vec![UUID_LIVE]
    );
    assert_eq!(store.table_index(Table::Allocs), index);
    assert_eq!(store.table_index(Table::Nodes), index);

    // Stop the job, finish everything: now the job goes with its versions.
    apply(
        &store,
        Command::DeregisterJob {
            job_id: "web".into(),
            purge: false,
            eval: None,
            enforce_index: None,
        },
    );
    report(
        &store,
        vec![client_update(UUID_LIVE, ClientStatus::Complete)],
    );
    let mut done = eval.clone();
    done.status = EvalStatus::Complete;
    apply(&store, Command::UpsertEvals { evals: vec![done] });
    reap(&store, &["web"], &[&eval.id], &[UUID_LIVE], &[]);
    assert!(store.job("web").unwrap().is_none());
    assert!(store.job_versions("web").unwrap().is_empty());
    assert!(store.eval(&eval.id).unwrap().is_none());
    assert!(store.allocs().unwrap().is_empty());
    assert!(store.allocs_by_node("n1").unwrap().is_empty());
    let gc_index = store.alloc_gc_index();
    drop(store);

    let reopened = StateStore::open(&path).expect("reopen");
    assert_eq!(reopened.alloc_gc_index(), gc_index);
    assert!(reopened.alloc(UUID_LIVE).unwrap().is_none());
    assert!(reopened
        .ids_with_prefix(Table::Allocs, "7a1b", 10)
        .unwrap()
        .is_empty());
    assert_eq!(reopened.node_allocs_server_index("n1").unwrap(), 0);
}

#[test]
fn a_reap_applied_again_changes_nothing() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").build();
    place(&store, vec![alloc_on("a1", &job, "n1", 0)]);
    report(&store, vec![client_update("a1", ClientStatus::Failed)]);
    let cmd = Command::Reap {
        jobs: vec!["nope".into()],
        evals: vec!["nope".into()],
        allocs: vec!["a1".into(), "a1".into()],
        nodes: vec!["nope".into()],
        log_before: 0,
    };
    apply(&store, cmd.clone());
    let rows = all_row_indexes(&store);
    let gc_index = store.alloc_gc_index();
    apply(&store, cmd);
    assert_eq!(all_row_indexes(&store), rows);
    assert_eq!(
        store.alloc_gc_index(),
        gc_index,
        "nothing deleted the second time"
    );
    assert!(store.alloc("a1").unwrap().is_none());
}

#[test]
fn a_truncated_command_log_says_so_instead_of_skipping_entries() {
    let (_dir, store) = temp_store();
    for n in 0..5 {
        apply(
            &store,
            Command::UpsertNode {
                node: NodeBuilder::new().id(format!("n{n}")).build(),
            },
        );
    }
    assert_eq!(store.commands_since(0, 100).unwrap().len(), 5);
    let cut = apply(
        &store,
        Command::Reap {
            jobs: vec![],
            evals: vec![],
            allocs: vec![],
            nodes: vec![],
            log_before: 4,
        },
    );
    assert_eq!(store.command_log_first().unwrap(), Some(4));
    match store.commands_since(0, 100) {
        Err(StateError::LogTruncated { after: 0, first: 4 }) => {}
        other => panic!("expected LogTruncated, got {other:?}"),
    }
    let tail = store.commands_since(3, 100).unwrap();
    assert_eq!(
        tail.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![4, 5, cut]
    );
}

#[test]
fn the_gc_view_reads_what_the_rules_need_from_the_rows() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("frames").batch().build();
    let (_, eval) = register(&store, &job);
    let mut a = alloc_on("a1", &job, "n1", 0);
    a.eval_id = eval.id.clone();
    place(&store, vec![a]);
    report(&store, vec![client_update("a1", ClientStatus::Failed)]);
    let view = store.gc_view().unwrap();
    assert_eq!(view.jobs.len(), 1);
    assert_eq!(view.jobs[0].job_type, JobType::Batch);
    assert!(!view.jobs[0].stop);
    assert!(view.jobs[0].submit_time > 0);
    assert_eq!(view.evals[0].id, eval.id);
    assert_eq!(view.evals[0].job_type, JobType::Batch);
    assert!(view.evals[0].modify_time > 0);
    let a = &view.allocs[0];
    assert_eq!(
        (a.eval_id.as_str(), a.node_id.as_str()),
        (eval.id.as_str(), "n1")
    );
    assert_eq!(a.client_status, ClientStatus::Failed);
    assert_eq!(a.desired_status, DesiredStatus::Run);
    assert!(a.modify_time > 0 && a.create_index > 0);
    assert!(!a.replaced);
    assert_eq!(view.jobs[0].groups, vec![job.groups[0].name.clone()]);
    assert!(view.evals[0].create_index > 0);
    assert_eq!(
        (a.group.as_str(), a.index),
        (job.groups[0].name.as_str(), 0)
    );
    assert_eq!(a.untracked_previous, None);
}

#[test]
fn the_gc_view_names_the_previous_allocation_only_of_one_without_a_tracker() {
    let (_dir, store) = temp_store();
    let job = JobBuilder::new("web").count(2).build();
    register(&store, &job);
    place(
        &store,
        vec![
            AllocBuilder::new(&job).id("old").node_id("n1").build(),
            AllocBuilder::new(&job)
                .id("untracked")
                .node_id("n1")
                .previous("old")
                .build(),
            AllocBuilder::new(&job)
                .id("tracked")
                .node_id("n1")
                .index(1)
                .previous("old")
                .reschedule_tracker(Default::default())
                .build(),
        ],
    );
    let view = store.gc_view().unwrap();
    let previous = |id: &str| {
        view.allocs
            .iter()
            .find(|a| a.id == id)
            .map(|a| (a.index, a.untracked_previous.clone()))
            .unwrap()
    };
    assert_eq!(previous("untracked"), (0, Some("old".into())));
    assert_eq!(previous("tracked"), (1, None));
}

/// What Raft replication rests on: the same commands at the same indexes and times
/// write the same rows on two stores (no clock or randomness of the applying server).
#[test]
fn the_same_commands_at_the_same_times_write_the_same_rows_on_two_stores() {
    let job = JobBuilder::new("web").build();
    let node = NodeBuilder::new().id("n1").build();
    let eval = Evaluation::for_job(&job, "job-register");
    let mut alloc = alloc_on("a1", &job, "n1", 0);
    alloc.eval_id = eval.id.clone();
    let commands = [
        Command::UpsertNode { node: node.clone() },
        Command::UpsertJob {
            job: job.clone(),
            eval: Some(eval.clone()),
            enforce_index: None,
        },
        Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![alloc.clone()],
            stopped: vec![],
            evals: vec![],
        },
        Command::UpdateAllocsFromClient {
            updates: vec![client_update("a1", ClientStatus::Running)],
            evals: vec![],
        },
    ];
    let rows = |store: &StateStore| {
        (
            serde_json::to_value(store.job(&job.id).unwrap()).unwrap(),
            serde_json::to_value(store.evals_by_job(&job.id).unwrap()).unwrap(),
            serde_json::to_value(store.allocs_by_job(&job.id).unwrap()).unwrap(),
            serde_json::to_value(store.node(&node.id).unwrap()).unwrap(),
        )
    };
    let (_a_dir, a) = temp_store();
    let (_b_dir, b) = temp_store();
    for (i, cmd) in commands.iter().enumerate() {
        let (index, time) = (i as u64 + 1, 1_700_000_000_000 + i as u64 * 1000);
        a.apply_at(index, time, cmd).unwrap();
        std::thread::sleep(Duration::from_millis(5)); // the applying clocks differ
        b.apply_at(index, time, cmd).unwrap();
    }
    assert_eq!(rows(&a), rows(&b));
}

#[test]
fn the_raft_mark_is_written_with_its_entry_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.replication_mark().unwrap(), None);
    let mark = |log_id: &str| ReplicationMark {
        log_id: log_id.to_string(),
        membership: "{\"voters\":[1]}".to_string(),
    };
    // A membership entry: the mark moves, the state's index does not.
    store.record_mark(&mark("1-1-1")).unwrap();
    assert_eq!(store.replication_mark().unwrap(), Some(mark("1-1-1")));
    assert_eq!(store.last_index(), 0);

    let node = Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    };
    store
        .apply_replicated(2, 1_700_000_000_000, &node, &mark("1-1-2"))
        .unwrap();
    assert_eq!(store.last_index(), 2);
    // An entry that fails to apply leaves the mark where it was.
    let err = store.apply_replicated(2, 1_700_000_000_000, &node, &mark("1-1-2b"));
    assert!(err.is_err());
    drop(store);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.replication_mark().unwrap(), Some(mark("1-1-2")));
    assert_eq!(store.last_index(), 2);
}
