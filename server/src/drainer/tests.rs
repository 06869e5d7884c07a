//! The drainer's decision as a table: draining node A, a spare node B, jobs with
//! allocations in given states -> which allocations are marked, whether A's drain is
//! complete, and when to look again.

use std::collections::HashMap;
use std::time::Duration;

use orch_common::ids::{AllocId, JobId};
use orch_common::mock::{self, running_alloc, JobBuilder, NodeBuilder, NOW};
use orch_common::model::{
    Allocation, ClientStatus, DesiredStatus, DrainStrategy, Job, JobType, MigratePolicy, Node,
    TaskState, TaskStateKind,
};

use super::{decide, health, Health};

const A: &str = "node-a";
const B: &str = "node-b";
const SEC: u64 = 1000;

/// An allocation's state in a case.
#[derive(Clone, Copy)]
enum St {
    /// Running for a minute (past any `min_healthy_time` here).
    Healthy,
    /// Running for one second.
    Young,
    /// Placed, not started (created `age` ms ago).
    Pending { age: u64 },
    /// Running, already marked for migration.
    Marked,
    /// Stopped by the server and finished on the client.
    Stopped,
}

struct Case {
    name: &'static str,
    jobs: Vec<Job>,
    /// (job position in `jobs`, node, index, state)
    allocs: Vec<(usize, &'static str, u32, St)>,
    deadline: Option<u64>,
    ignore_system: bool,
    /// (job position, node, index) of the allocations to mark.
    want_marked: Vec<(usize, &'static str, u32)>,
    want_complete: bool,
    want_next_check: Option<u64>,
}

fn service(id: &str, count: u32, max_parallel: u32) -> Job {
    let mut job = JobBuilder::new(id).count(count).build();
    job.groups[0].migrate = Some(MigratePolicy {
        max_parallel,
        min_healthy_time: Duration::from_secs(10),
        healthy_deadline: Duration::from_secs(60),
        ..MigratePolicy::default()
    });
    job
}

fn typed(id: &str, t: JobType) -> Job {
    JobBuilder::new(id).job_type(t).count(1).build()
}

fn node(id: &str, drain: Option<DrainStrategy>) -> Node {
    let mut n = NodeBuilder::new().id(id).build();
    n.drain = drain;
    n
}

fn alloc(job: &Job, node: &Node, index: u32, st: St) -> Allocation {
    let mut a = running_alloc(job, "web", index, node);
    a.id = format!("{}-{}-{index}", job.id, node.id).into();
    match st {
        St::Healthy => start(&mut a, NOW - 60 * SEC),
        St::Young => start(&mut a, NOW - SEC),
        St::Marked => {
            start(&mut a, NOW - 60 * SEC);
            a.desired_transition.migrate = true;
        }
        St::Pending { age } => {
            a.client_status = ClientStatus::Pending;
            a.create_time = NOW - age;
        }
        St::Stopped => {
            a.desired_status = DesiredStatus::Stop;
            a.client_status = ClientStatus::Complete;
        }
    }
    a
}

fn start(a: &mut Allocation, at: u64) {
    a.task_states.insert(
        "server".into(),
        TaskState {
            state: TaskStateKind::Running,
            started_at: Some(at),
            ..TaskState::default()
        },
    );
}

fn cases() -> Vec<Case> {
    let base = || Case {
        name: "",
        jobs: vec![service("web", 3, 1)],
        allocs: Vec::new(),
        deadline: None,
        ignore_system: false,
        want_marked: Vec::new(),
        want_complete: false,
        want_next_check: None,
    };
    let all_healthy_on_a = vec![
        (0, A, 0, St::Healthy),
        (0, A, 1, St::Healthy),
        (0, A, 2, St::Healthy),
    ];
    vec![
        Case {
            name: "max_parallel 1 marks one allocation, lowest index first",
            allocs: all_healthy_on_a.clone(),
            want_marked: vec![(0, A, 0)],
            ..base()
        },
        Case {
            name: "max_parallel 2 marks two",
            jobs: vec![service("web", 3, 2)],
            allocs: all_healthy_on_a.clone(),
            want_marked: vec![(0, A, 0), (0, A, 1)],
            ..base()
        },
        Case {
            name: "a marked allocation whose replacement is not yet healthy holds the next",
            allocs: vec![
                (0, A, 0, St::Marked),
                (0, A, 1, St::Healthy),
                (0, A, 2, St::Healthy),
            ],
            ..base()
        },
        Case {
            name: "a young replacement holds the next until min_healthy_time",
            allocs: vec![
                (0, A, 0, St::Stopped),
                (0, B, 0, St::Young),
                (0, A, 1, St::Healthy),
                (0, A, 2, St::Healthy),
            ],
            want_next_check: Some(NOW - SEC + 10 * SEC),
            ..base()
        },
        Case {
            name: "a healthy replacement lets the next one go",
            allocs: vec![
                (0, A, 0, St::Stopped),
                (0, B, 0, St::Healthy),
                (0, A, 1, St::Healthy),
                (0, A, 2, St::Healthy),
            ],
            want_marked: vec![(0, A, 1)],
            ..base()
        },
        Case {
            name: "a replacement past its healthy_deadline never counts",
            allocs: vec![
                (0, A, 0, St::Stopped),
                (0, B, 0, St::Pending { age: 120 * SEC }),
                (0, A, 1, St::Healthy),
                (0, A, 2, St::Healthy),
            ],
            ..base()
        },
        Case {
            name: "allocations not yet healthy on the draining node wait too",
            allocs: vec![
                (0, A, 0, St::Young),
                (0, A, 1, St::Healthy),
                (0, A, 2, St::Healthy),
            ],
            want_next_check: Some(NOW - SEC + 10 * SEC),
            ..base()
        },
        Case {
            name: "past the deadline everything left is marked at once",
            allocs: vec![
                (0, A, 0, St::Marked),
                (0, A, 1, St::Young),
                (0, A, 2, St::Pending { age: SEC }),
            ],
            deadline: Some(NOW),
            want_marked: vec![(0, A, 1), (0, A, 2)],
            ..base()
        },
        Case {
            name: "a future deadline is when to look again",
            allocs: vec![(0, A, 0, St::Marked), (0, A, 1, St::Healthy)],
            jobs: vec![service("web", 2, 1)],
            deadline: Some(NOW + 30 * SEC),
            want_next_check: Some(NOW + 30 * SEC),
            ..base()
        },
        Case {
            name: "batch allocations run until the deadline",
            jobs: vec![typed("frames", JobType::Batch)],
            allocs: vec![(0, A, 0, St::Healthy)],
            ..base()
        },
        Case {
            name: "batch allocations move at the deadline",
            jobs: vec![typed("frames", JobType::Batch)],
            allocs: vec![(0, A, 0, St::Healthy)],
            deadline: Some(NOW - SEC),
            want_marked: vec![(0, A, 0)],
            ..base()
        },
        Case {
            name: "system allocations wait while others run on the node",
            jobs: vec![typed("agent", JobType::System), service("web", 3, 1)],
            allocs: vec![
                (0, A, 0, St::Healthy),
                (1, A, 0, St::Marked),
                (1, A, 1, St::Healthy),
            ],
            ..base()
        },
        Case {
            name: "system allocations go last, once only they are left",
            jobs: vec![typed("agent", JobType::System), service("web", 3, 1)],
            allocs: vec![(0, A, 0, St::Healthy), (1, A, 0, St::Stopped)],
            want_marked: vec![(0, A, 0)],
            ..base()
        },
        Case {
            name: "with ignore_system_jobs a node left with system allocations is done",
            jobs: vec![typed("agent", JobType::System)],
            allocs: vec![(0, A, 0, St::Healthy)],
            ignore_system: true,
            deadline: Some(NOW - SEC),
            want_complete: true,
            ..base()
        },
        Case {
            name: "a node with only finished allocations is done",
            allocs: vec![(0, A, 0, St::Stopped), (0, B, 0, St::Healthy)],
            want_complete: true,
            ..base()
        },
        Case {
            name: "allocations on other nodes are never marked",
            allocs: vec![
                (0, B, 0, St::Healthy),
                (0, B, 1, St::Healthy),
                (0, B, 2, St::Healthy),
            ],
            want_complete: true,
            ..base()
        },
        Case {
            name: "a stopped job is left to the scheduler",
            jobs: vec![{
                let mut j = service("web", 3, 1);
                j.stop = true;
                j
            }],
            allocs: all_healthy_on_a.clone(),
            ..base()
        },
    ]
}

#[test]
fn the_drain_decision_table() {
    for case in cases() {
        let drain = DrainStrategy {
            deadline: case.deadline,
            ignore_system_jobs: case.ignore_system,
            started_at: NOW - 5 * SEC,
        };
        let nodes = vec![node(A, Some(drain)), node(B, None)];
        let by_id: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let allocs: Vec<Allocation> = case
            .allocs
            .iter()
            .map(|(j, n, i, st)| alloc(&case.jobs[*j], by_id[n], *i, *st))
            .collect();
        let jobs: HashMap<JobId, Job> = case
            .jobs
            .iter()
            .map(|j| (j.id.clone(), j.clone()))
            .collect();
        let got = decide(&nodes, &jobs, &allocs, NOW);
        let mut marked: Vec<AllocId> = got.migrate.values().flatten().cloned().collect();
        marked.sort();
        let mut want: Vec<String> = case
            .want_marked
            .iter()
            .map(|(j, n, i)| format!("{}-{n}-{i}", case.jobs[*j].id))
            .collect();
        want.sort();
        assert_eq!(marked, want, "{}", case.name);
        for (job_id, ids) in &got.migrate {
            assert!(
                ids.iter().all(|id| id.starts_with(job_id.as_str())),
                "{}: {ids:?} filed under {job_id}",
                case.name
            );
        }
        let want_complete: Vec<String> = if case.want_complete {
            vec![A.to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(got.complete, want_complete, "{}", case.name);
        assert_eq!(got.next_check, case.want_next_check, "{}", case.name);
    }
}

#[test]
fn health_needs_every_task_running_for_min_healthy_time() {
    let job = service("web", 1, 1);
    let n = node(A, None);
    let policy = job.groups[0].migrate.clone().unwrap();
    let mut a = alloc(&job, &n, 0, St::Young);
    assert_eq!(
        health(&a, &policy, NOW),
        Health::NotYet(Some(NOW + 9 * SEC))
    );
    assert_eq!(health(&a, &policy, NOW + 9 * SEC), Health::Healthy);
    a.task_states.insert("sidecar".into(), TaskState::default());
    assert_eq!(health(&a, &policy, NOW + 9 * SEC), Health::NotYet(None));
    assert_eq!(health(&a, &policy, NOW + 61 * SEC), Health::Unhealthy);
}

#[test]
fn a_drain_survives_re_registration_and_a_stale_completion_is_ignored() {
    use orch_common::model::{DrainOutcome, Eligibility, LastDrain};

    use crate::state::{Command, StateStore};

    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path().join("state.db")).unwrap();
    let n = node(A, None);
    store
        .apply(1, &Command::UpsertNode { node: n.clone() })
        .unwrap();
    let drain = DrainStrategy {
        deadline: None,
        ignore_system_jobs: false,
        started_at: NOW,
    };
    let set = |index: u64, drain: Option<DrainStrategy>, last: Option<LastDrain>| {
        store
            .apply(
                index,
                &Command::UpdateNodeDrain {
                    node_id: A.into(),
                    drain,
                    eligibility: Some(Eligibility::Ineligible),
                    last_drain: last,
                    evals: vec![],
                },
            )
            .unwrap();
    };
    set(2, Some(drain.clone()), None);
    // The client registers again (a restart): the drain and eligibility stay.
    store.apply(3, &Command::UpsertNode { node: n }).unwrap();
    let got = store.node(A).unwrap().unwrap();
    assert_eq!(got.drain, Some(drain.clone()));
    assert_eq!(got.eligibility, Eligibility::Ineligible);

    // A completion for another drain (one that started earlier) changes nothing.
    let done = |started_at| LastDrain {
        outcome: DrainOutcome::Complete,
        started_at,
        finished_at: NOW + 5 * SEC,
    };
    set(4, None, Some(done(NOW - SEC)));
    assert_eq!(store.node(A).unwrap().unwrap().drain, Some(drain));
    set(5, None, Some(done(NOW)));
    let got = store.node(A).unwrap().unwrap();
    assert_eq!(got.drain, None);
    assert_eq!(got.last_drain, Some(done(NOW)));
}

#[test]
fn a_system_allocation_marked_by_a_drain_is_stopped_and_not_replaced() {
    use orch_common::model::Eligibility;

    use crate::scheduler::testing::Harness;

    let a = NodeBuilder::new().id(A).build();
    let b = NodeBuilder::new().id(B).build();
    let mut h = Harness::new(&[a.clone(), b]);
    let eval = h.register(typed("sys", JobType::System));
    h.process(&eval).unwrap();
    assert_eq!(h.last_placed().len(), 2);
    // The drain: node A ineligible, its allocation marked.
    let mut drained = a;
    drained.eligibility = Eligibility::Ineligible;
    h.state.upsert_node(drained);
    let mut on_a = h
        .state
        .allocs
        .values()
        .find(|x| x.node_id == A)
        .cloned()
        .unwrap();
    on_a.desired_transition.migrate = true;
    h.state.upsert_alloc(on_a.clone());
    h.process(&mock::eval(&h.state.jobs["sys"].clone()))
        .unwrap();
    let stopped: Vec<AllocId> = h.last_stopped().into_iter().map(|x| x.id).collect();
    assert_eq!(stopped, vec![on_a.id]);
    assert!(h.last_placed().is_empty());
}

#[test]
fn past_the_deadline_a_job_still_waiting_to_move_gets_one_more_evaluation() {
    let job = service("web", 2, 1);
    let strategy = |deadline| DrainStrategy {
        deadline: Some(deadline),
        ignore_system_jobs: false,
        started_at: NOW - 60 * SEC,
    };
    let spare = node(B, None);
    let jobs: HashMap<JobId, Job> = [(job.id.clone(), job.clone())].into();
    // A marked allocation whose replacement found no room keeps running on A.
    let before = node(A, Some(strategy(NOW + SEC)));
    let allocs = vec![
        alloc(&job, &before, 0, St::Marked),
        alloc(&job, &spare, 1, St::Healthy),
    ];
    let d = decide(&[before.clone(), spare.clone()], &jobs, &allocs, NOW);
    assert!(d.force.is_empty(), "not yet: {:?}", d.force);
    let after = node(A, Some(strategy(NOW - SEC)));
    let d = decide(&[after, spare], &jobs, &allocs, NOW);
    assert_eq!(d.force.get("web"), Some(&(NOW - SEC)));
    assert!(d.migrate.is_empty(), "already marked: {:?}", d.migrate);
}
