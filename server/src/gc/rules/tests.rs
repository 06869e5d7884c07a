//! Table tests of the collection rules: one scenario per row.

use orch_common::model::EvalStatus;

use super::*;
use crate::state::views::GcNode;

const NOW: u64 = 100 * HOUR;
const HOUR: u64 = 3_600_000;

fn th() -> Thresholds {
    Thresholds {
        job_ms: 4 * HOUR,
        eval_ms: HOUR,
        batch_eval_ms: 24 * HOUR,
        node_ms: 24 * HOUR,
    }
}

fn job(id: &str, t: JobType, status: JobStatus, stop: bool) -> GcJob {
    GcJob {
        id: id.into(),
        job_type: t,
        status,
        stop,
        create_index: 10,
        submit_time: 0,
        groups: vec!["web".into()],
    }
}

fn eval(id: &str, job_id: &str, t: JobType, status: EvalStatus, age_h: u64) -> GcEval {
    GcEval {
        id: id.into(),
        job_id: job_id.into(),
        job_type: t,
        status,
        modify_time: NOW - age_h * HOUR,
        create_index: 10,
    }
}

fn alloc(id: &str, job_id: &str, eval_id: &str, client: ClientStatus, age_h: u64) -> GcAlloc {
    GcAlloc {
        id: id.into(),
        job_id: job_id.into(),
        eval_id: eval_id.into(),
        node_id: "n1".into(),
        client_status: client,
        desired_status: DesiredStatus::Run,
        modify_time: NOW - age_h * HOUR,
        create_index: 20,
        replaced: false,
        group: "web".into(),
        index: 0,
        untracked_previous: None,
    }
}

/// Caps no scenario of the threshold table reaches.
const NO_CAPS: HistoryCaps = HistoryCaps {
    allocs_per_job: 1000,
    evals_per_job: 1000,
};

fn node(id: &str, status: NodeStatus, age_h: u64) -> GcNode {
    GcNode {
        id: id.into(),
        status,
        status_updated_at: NOW - age_h * HOUR,
    }
}

/// Ids of any kind, from their text.
fn ids<I: for<'a> From<&'a str>>(v: &[&str]) -> Vec<I> {
    v.iter().map(|s| I::from(s)).collect()
}

struct Case {
    name: &'static str,
    view: GcView,
    thresholds: Thresholds,
    jobs: &'static [&'static str],
    evals: &'static [&'static str],
    allocs: &'static [&'static str],
    nodes: &'static [&'static str],
}

use ClientStatus::{Complete, Failed, Running};
use EvalStatus::{Blocked, Complete as EvalDone, Pending};
use JobStatus::{Dead, Running as JobRunning};
use JobType::{Batch, Service};

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a stopped service job idle past job_gc_threshold goes with everything",
            view: GcView {
                jobs: vec![job("web", Service, Dead, true)],
                evals: vec![eval("e1", "web", Service, EvalDone, 5), eval("e2", "web", Service, EvalDone, 5)],
                allocs: vec![alloc("a1", "web", "e1", Complete, 5)],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &["web"],
            evals: &["e1", "e2"],
            allocs: &["a1"],
            nodes: &[],
        },
        Case {
            name: "a stopped job changed recently stays; its evals are not old enough either",
            view: GcView {
                jobs: vec![job("web", Service, Dead, true)],
                evals: vec![eval("e1", "web", Service, EvalDone, 6), eval("e2", "web", Service, EvalDone, 0)],
                allocs: vec![alloc("a1", "web", "e1", Complete, 6)],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &["e1"],
            allocs: &["a1"],
            nodes: &[],
        },
        Case {
            name: "a stopped job whose allocation still runs keeps it, its eval and the job",
            view: GcView {
                jobs: vec![job("web", Service, Dead, true)],
                evals: vec![eval("e1", "web", Service, EvalDone, 5)],
                allocs: vec![alloc("a1", "web", "e1", Running, 5)],
                nodes: vec![],
            },
            thresholds: Thresholds::FORCE,
            jobs: &[],
            evals: &[],
            allocs: &[],
            nodes: &[],
        },
        Case {
            name: "pending and blocked evaluations are never collected",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![eval("e1", "web", Service, Pending, 50), eval("e2", "web", Service, Blocked, 50)],
                allocs: vec![],
                nodes: vec![],
            },
            thresholds: Thresholds::FORCE,
            jobs: &[],
            evals: &[],
            allocs: &[],
            nodes: &[],
        },
        Case {
            name: "a running service job's old eval goes with its terminal allocations; running ones keep theirs",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![eval("old", "web", Service, EvalDone, 2), eval("cur", "web", Service, EvalDone, 2)],
                allocs: vec![
                    alloc("done", "web", "old", Complete, 2),
                    alloc("live", "web", "cur", Running, 2),
                    alloc("stopped", "web", "cur", Complete, 2),
                ],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &["old"],
            allocs: &["done", "stopped"],
            nodes: &[],
        },
        Case {
            name: "a failed allocation of a live job stays until it is replaced",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![eval("e1", "web", Service, EvalDone, 2)],
                allocs: vec![
                    alloc("failed", "web", "e1", Failed, 2),
                    GcAlloc { replaced: true, ..alloc("failed-replaced", "web", "e1", Failed, 2) },
                    GcAlloc {
                        desired_status: DesiredStatus::Stop,
                        ..alloc("failed-stopped", "web", "e1", Failed, 2)
                    },
                ],
                nodes: vec![],
            },
            thresholds: Thresholds::FORCE,
            jobs: &[],
            evals: &[],
            allocs: &["failed-replaced", "failed-stopped"],
            nodes: &[],
        },
        Case {
            name: "a live batch job keeps its finished allocations (never run twice) and their eval",
            view: GcView {
                jobs: vec![job("frames", Batch, JobRunning, false)],
                evals: vec![eval("e1", "frames", Batch, EvalDone, 30)],
                allocs: vec![
                    alloc("f1", "frames", "e1", Complete, 30),
                    alloc("f2", "frames", "e1", Running, 30),
                    // from an earlier job with this id (purged, registered again)
                    GcAlloc { create_index: 5, ..alloc("f0", "frames", "e1", Complete, 30) },
                ],
                nodes: vec![],
            },
            thresholds: Thresholds::FORCE,
            jobs: &[],
            evals: &[],
            allocs: &["f0"],
            nodes: &[],
        },
        Case {
            name: "a finished batch job goes whole after job_gc_threshold",
            view: GcView {
                jobs: vec![job("frames", Batch, Dead, false)],
                evals: vec![eval("e1", "frames", Batch, EvalDone, 5)],
                allocs: vec![alloc("f1", "frames", "e1", Complete, 5), alloc("f2", "frames", "e1", Failed, 5)],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &["frames"],
            evals: &["e1"],
            allocs: &["f1", "f2"],
            nodes: &[],
        },
        Case {
            name: "a finished batch job younger than job_gc_threshold keeps everything (the eval pass does not take batch allocations)",
            view: GcView {
                jobs: vec![job("frames", Batch, Dead, false)],
                evals: vec![eval("e1", "frames", Batch, EvalDone, 30)],
                allocs: vec![alloc("f1", "frames", "e1", Complete, 1)],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &[],
            nodes: &[],
        },
        Case {
            name: "evaluations and allocations of a purged job go",
            view: GcView {
                jobs: vec![],
                evals: vec![eval("e1", "gone", Batch, EvalDone, 30)],
                allocs: vec![alloc("a1", "gone", "e1", Failed, 30), alloc("orphan", "gone", "e0", Complete, 30)],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &["e1"],
            allocs: &["a1", "orphan"],
            nodes: &[],
        },
        Case {
            name: "down nodes go after node_gc_threshold unless something runs there",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![],
                allocs: vec![GcAlloc { node_id: "busy".into(), ..alloc("a1", "web", "e1", Running, 1) }],
                nodes: vec![
                    node("old-down", NodeStatus::Down, 30),
                    node("new-down", NodeStatus::Down, 1),
                    node("busy", NodeStatus::Down, 30),
                    node("ready", NodeStatus::Ready, 30),
                ],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &[],
            nodes: &["old-down"],
        },
    ]
}

/// Collects each case under its thresholds and `caps`, and checks what it expects.
fn check_cases(cases: Vec<Case>, caps: &HistoryCaps) {
    for case in cases {
        let got = collect(&case.view, &case.thresholds, caps, NOW);
        let want = Collection {
            jobs: ids(case.jobs),
            evals: ids(case.evals),
            allocs: ids(case.allocs),
            nodes: ids(case.nodes),
        };
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn the_rules_collect_what_each_scenario_expects() {
    check_cases(cases(), &NO_CAPS);
}

#[test]
fn nothing_non_terminal_is_ever_collected() {
    let tight = HistoryCaps {
        allocs_per_job: 1,
        evals_per_job: 1,
    };
    for case in cases().into_iter().chain(cap_cases()) {
        let got = collect(&case.view, &Thresholds::FORCE, &tight, NOW);
        for a in case
            .view
            .allocs
            .iter()
            .filter(|a| !a.client_status.is_terminal())
        {
            assert!(!got.allocs.contains(&a.id), "{}: {}", case.name, a.id);
        }
        for e in case.view.evals.iter().filter(|e| !e.status.is_terminal()) {
            assert!(!got.evals.contains(&e.id), "{}: {}", case.name, e.id);
        }
    }
}

// ------------------------------------------------------------------ per-job caps

/// Allocation `id` of "web" at `index`, created at `create_index`, young (1 minute).
fn young(id: &str, index: u32, create_index: u64, client: ClientStatus) -> GcAlloc {
    GcAlloc {
        index,
        create_index,
        modify_time: NOW - 60_000,
        ..alloc(id, "web", "e1", client, 0)
    }
}

/// Replaced by a newer allocation (`next_allocation` set).
fn replaced(a: GcAlloc) -> GcAlloc {
    GcAlloc {
        replaced: true,
        ..a
    }
}

/// Evaluation `id` of "web", terminal, created at `create_index`, young.
fn young_eval(id: &str, create_index: u64, status: EvalStatus) -> GcEval {
    GcEval {
        create_index,
        ..eval(id, "web", Service, status, 0)
    }
}

const CAPS: HistoryCaps = HistoryCaps {
    allocs_per_job: 3,
    evals_per_job: 3,
};

/// Scenarios of the per-job caps: nothing is old enough for the thresholds (`th()`),
/// so whatever goes, goes for the caps.
fn cap_cases() -> Vec<Case> {
    vec![
        Case {
            name: "a crash loop keeps its newest terminal allocations, the oldest beyond the cap go",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![],
                allocs: (1..=6)
                    .map(|i| replaced(young(&format!("f{i}"), 0, i, Failed)))
                    .chain([young("live", 0, 7, Running)])
                    .collect(),
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &["f1", "f2", "f3"],
            nodes: &[],
        },
        Case {
            name: "each slot's newest allocation stays beyond the cap: a finished batch instance is never run again",
            view: GcView {
                jobs: vec![job("frames", Batch, JobRunning, false)],
                evals: vec![],
                allocs: (0..4)
                    .flat_map(|i| {
                        let at = |id: String, n| GcAlloc { job_id: "frames".into(), ..young(&id, i, n, Complete) };
                        [at(format!("v0-{i}"), u64::from(i)), at(format!("v1-{i}"), 10 + u64::from(i))]
                    })
                    .collect(),
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &["v0-0", "v0-1", "v0-2", "v0-3"],
            nodes: &[],
        },
        Case {
            name: "a sysbatch job's slot is its node: the run on each node stays",
            view: GcView {
                jobs: vec![job("sweep", JobType::Sysbatch, JobRunning, false)],
                evals: vec![],
                allocs: (1..=5)
                    .map(|i| GcAlloc {
                        job_id: "sweep".into(),
                        node_id: format!("n{i}").into(),
                        ..young(&format!("s{i}"), 0, i, Complete)
                    })
                    .collect(),
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &[],
            nodes: &[],
        },
        Case {
            name: "slots of a group no longer in the job are not kept; a failed allocation awaiting its replacement is",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![],
                allocs: vec![
                    GcAlloc { group: "old".into(), ..young("gone-group", 0, 1, Complete) },
                    GcAlloc { index: 1, ..young("waiting", 1, 2, Failed) },
                    young("c3", 2, 3, Complete),
                    young("c4", 3, 4, Complete),
                    young("c5", 4, 5, Complete),
                ],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &["gone-group"],
            nodes: &[],
        },
        Case {
            name: "the chain of an allocation without a reschedule tracker stays: the rescheduler walks it",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: vec![],
                allocs: vec![
                    replaced(young("a1", 0, 1, Failed)),
                    GcAlloc { untracked_previous: Some("a1".into()), ..replaced(young("a2", 0, 2, Failed)) },
                    GcAlloc { untracked_previous: Some("a2".into()), ..young("a3", 0, 3, Running) },
                    replaced(young("b1", 1, 4, Failed)),
                    replaced(young("b2", 1, 5, Failed)),
                    replaced(young("b3", 1, 6, Failed)),
                    replaced(young("b4", 1, 7, Failed)),
                    young("b5", 1, 8, Running),
                ],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &["b1"],
            nodes: &[],
        },
        Case {
            name: "a purged job's allocations have no slot to keep",
            view: GcView {
                jobs: vec![],
                evals: vec![],
                allocs: (1..=5).map(|i| young(&format!("p{i}"), 0, i, Complete)).collect(),
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &[],
            allocs: &["p1", "p2"],
            nodes: &[],
        },
        Case {
            name: "terminal evaluations beyond the cap go, the newest and the open ones stay",
            view: GcView {
                jobs: vec![job("web", Service, JobRunning, false)],
                evals: (1..=6)
                    .map(|i| young_eval(&format!("e{i}"), i, EvalDone))
                    .chain([young_eval("blocked", 0, Blocked), young_eval("pending", 7, Pending)])
                    .collect(),
                allocs: vec![],
                nodes: vec![],
            },
            thresholds: th(),
            jobs: &[],
            evals: &["e1", "e2", "e3"],
            allocs: &[],
            nodes: &[],
        },
    ]
}

#[test]
fn each_job_keeps_a_bounded_history_whatever_its_age() {
    check_cases(cap_cases(), &CAPS);
}

#[test]
fn the_caps_leave_alone_a_job_collected_whole() {
    let view = GcView {
        jobs: vec![job("web", Service, Dead, true)],
        evals: (1..=5)
            .map(|i| GcEval {
                modify_time: NOW - 5 * HOUR,
                ..young_eval(&format!("e{i}"), i, EvalDone)
            })
            .collect(),
        allocs: (1..=5)
            .map(|i| GcAlloc {
                modify_time: NOW - 5 * HOUR,
                ..young(&format!("a{i}"), 0, i, Complete)
            })
            .collect(),
        nodes: vec![],
    };
    let got = collect(&view, &th(), &CAPS, NOW);
    assert_eq!(got.jobs, ids::<JobId>(&["web"]));
    assert_eq!(got.evals.len(), 5);
    assert_eq!(got.allocs.len(), 5);
}

#[test]
fn batches_are_bounded_and_put_allocations_before_their_jobs() {
    let c = Collection {
        jobs: ids(&["j1"]),
        evals: ids(&["e1", "e2"]),
        allocs: ids(&["a1", "a2", "a3"]),
        nodes: ids(&["n1"]),
    };
    let parts = c.clone().batches(2);
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0].allocs, ["a1", "a2"]);
    assert_eq!(parts[1].allocs, ["a3"]);
    assert_eq!(parts[1].evals, ["e1"]);
    assert_eq!(parts[2].evals, ["e2"]);
    assert_eq!(parts[2].jobs, ["j1"]);
    assert_eq!(parts[3].nodes, ["n1"]);
    assert_eq!(c.clone().batches(100), vec![c]);
    assert!(Collection::default().batches(10).is_empty());
}
