//! `decide` as a table: a deployment of job version 1 (groups, counters, deadlines),
//! its allocations' health, the job's versions -> the change, revert, evaluation and
//! next check.

use std::collections::BTreeMap;

use orch_common::mock::{deployment_group, AllocBuilder, DeploymentBuilder, JobBuilder};
use orch_common::model::{
    deployment_desc as desc, Allocation, Deployment, DeploymentGroup, DeploymentStatus, Job,
};

use super::*;

const NOW: u64 = 1_704_067_200_000;
const D: &str = "d1";

/// Group `total` instances, `canaries` of them canaries, `healthy` healthy so far.
fn grp(total: u32, canaries: u32, healthy: u32) -> DeploymentGroup {
    let mut g = deployment_group(total, canaries);
    g.healthy_allocs = healthy;
    g.require_progress_by = Some(NOW + 60_000);
    g
}

/// Deployment D of "web" version 1, running, with these groups.
fn dep(groups: Vec<(&str, DeploymentGroup)>) -> Deployment {
    DeploymentBuilder::new(&job(1, false))
        .id(D)
        .groups(groups)
        .build()
}

/// An allocation of deployment `deployment` in `group`.
fn alloc(id: &str, group: &str, health: Option<bool>, canary: bool) -> Allocation {
    in_deployment(id, group, health, canary, D)
}

fn in_deployment(
    id: &str,
    group: &str,
    health: Option<bool>,
    canary: bool,
    deployment: &str,
) -> Allocation {
    let a = AllocBuilder::new(&job(1, false))
        .id(id)
        .group(group)
        .node_id("n1")
        .deployment(deployment)
        .health(health, NOW);
    if canary {
        a.canary().build()
    } else {
        a.build()
    }
}

/// Version `version` of job "web" (version 0 has one instance, version 1 two).
fn job(version: u64, stable: bool) -> Job {
    let mut j = JobBuilder::new("web")
        .version(version)
        .count(if version == 0 { 1 } else { 2 })
        .build();
    j.stable = stable;
    j.job_modify_index = 10 + version;
    j
}

/// v0 stable, v1 current.
fn history() -> Vec<Job> {
    vec![job(1, false), job(0, true)]
}

struct Case {
    name: &'static str,
    d: Deployment,
    allocs: Vec<Allocation>,
    /// The job now (version 1 unless said).
    current: Option<Job>,
    versions: Vec<Job>,
    seen: Option<BTreeMap<String, u32>>,
    now: u64,
    want_status: Option<(DeploymentStatus, String)>,
    want_promote: Vec<&'static str>,
    want_stable: bool,
    want_revert: Option<u64>,
    want_eval: bool,
    want_next_check: Option<u64>,
}

fn case(name: &'static str, d: Deployment, allocs: Vec<Allocation>) -> Case {
    Case {
        name,
        d,
        allocs,
        current: Some(job(1, false)),
        versions: history(),
        seen: Some(BTreeMap::new()),
        now: NOW,
        want_status: None,
        want_promote: vec![],
        want_stable: false,
        want_revert: None,
        want_eval: false,
        want_next_check: Some(NOW + 60_000),
    }
}

impl Case {
    fn status(mut self, s: DeploymentStatus, d: impl Into<String>) -> Self {
        self.want_status = Some((s, d.into()));
        self
    }
    fn failed(mut self, d: impl Into<String>) -> Self {
        self.want_status = Some((DeploymentStatus::Failed, d.into()));
        self.want_eval = true;
        self.want_next_check = None;
        self
    }
    fn promotes(mut self, groups: &[&'static str]) -> Self {
        self.want_promote = groups.to_vec();
        self
    }
    fn eval(mut self) -> Self {
        self.want_eval = true;
        self
    }
    fn next(mut self, t: Option<u64>) -> Self {
        self.want_next_check = t;
        self
    }
    fn at(mut self, now: u64) -> Self {
        self.now = now;
        self
    }
    fn seen(mut self, seen: Option<&[(&str, u32)]>) -> Self {
        self.seen = seen.map(|s| s.iter().map(|(g, n)| (g.to_string(), *n)).collect());
        self
    }
}

fn auto_revert(mut g: DeploymentGroup) -> DeploymentGroup {
    g.auto_revert = true;
    g
}

fn auto_promote(mut g: DeploymentGroup) -> DeploymentGroup {
    g.auto_promote = true;
    g
}

fn promoted(mut g: DeploymentGroup) -> DeploymentGroup {
    g.promoted = true;
    g
}

fn paused(mut d: Deployment) -> Deployment {
    d.status = DeploymentStatus::Paused;
    d.status_description = desc::PAUSED.into();
    d
}

fn described(mut d: Deployment, description: &str) -> Deployment {
    d.status_description = description.into();
    d
}

fn cases() -> Vec<Case> {
    let late = NOW + 61_000;
    vec![
        // ---- unhealthy instances
        case(
            "an unhealthy instance fails the deployment",
            dep(vec![("web", grp(2, 0, 0))]),
            vec![alloc("a", "web", Some(false), false)],
        )
        .failed(desc::FAILED_ALLOCATIONS),
        case(
            "an unhealthy instance fails a paused deployment too",
            paused(dep(vec![("web", grp(2, 0, 0))])),
            vec![alloc("a", "web", Some(false), false)],
        )
        .failed(desc::FAILED_ALLOCATIONS),
        {
            let mut c = case(
                "with auto_revert it rolls back to the newest stable older version",
                dep(vec![("web", auto_revert(grp(2, 0, 0)))]),
                vec![alloc("a", "web", Some(false), false)],
            )
            .failed(desc::rolling_back(desc::FAILED_ALLOCATIONS, 0));
            c.want_revert = Some(0);
            c
        },
        {
            let mut c = case(
                "auto_revert picks the newest stable version that differs, not an identical one",
                dep(vec![("web", auto_revert(grp(2, 0, 0)))]),
                vec![alloc("a", "web", Some(false), false)],
            )
            .failed(desc::rolling_back(desc::FAILED_ALLOCATIONS, 0));
            // Version 2 would be newer but is not older than the deployment's.
            let mut v2 = job(2, true);
            v2.groups[0].count = 3;
            c.versions = vec![v2, job(1, true), job(0, true)];
            c.want_revert = Some(0);
            c
        },
        {
            let mut c = case(
                "auto_revert without a stable version says so",
                dep(vec![("web", auto_revert(grp(2, 0, 0)))]),
                vec![alloc("a", "web", Some(false), false)],
            )
            .failed(desc::no_stable_version(desc::FAILED_ALLOCATIONS));
            c.versions = vec![job(1, false), job(0, false)];
            c
        },
        {
            let mut c = case(
                "auto_revert to a stable version identical to the current spec is no revert",
                dep(vec![("web", auto_revert(grp(2, 0, 0)))]),
                vec![alloc("a", "web", Some(false), false)],
            )
            .failed(desc::no_stable_version(desc::FAILED_ALLOCATIONS));
            let mut same = job(0, true);
            same.groups[0].count = 2;
            c.versions = vec![job(1, false), same];
            c
        },
        {
            let mut c = case(
                "no revert once the job moved on to a newer version, and no word of one",
                dep(vec![("web", auto_revert(grp(2, 0, 0)))]),
                vec![alloc("a", "web", Some(false), false)],
            )
            .failed(desc::FAILED_ALLOCATIONS);
            c.current = Some(job(2, false));
            c
        },
        case(
            "auto_revert of another group does not revert for this group's failure",
            dep(vec![
                ("api", auto_revert(grp(1, 0, 0))),
                ("web", grp(2, 0, 0)),
            ]),
            vec![alloc("a", "web", Some(false), false)],
        )
        .failed(desc::FAILED_ALLOCATIONS),
        case(
            "an unhealthy instance of another deployment is ignored",
            dep(vec![("web", grp(2, 0, 0))]),
            vec![in_deployment("old", "web", Some(false), false, "d0")],
        ),
        // ---- progress deadline
        case(
            "a passed progress deadline fails a group that is not done",
            dep(vec![("web", grp(2, 0, 1))]),
            vec![alloc("a", "web", Some(true), false)],
        )
        .seen(Some(&[("web", 1)]))
        .at(late)
        .failed(desc::FAILED_DEADLINE),
        {
            let mut c = case(
                "a passed progress deadline with auto_revert reverts",
                dep(vec![("web", auto_revert(grp(2, 0, 0)))]),
                vec![],
            )
            .at(late)
            .failed(desc::rolling_back(desc::FAILED_DEADLINE, 0));
            c.want_revert = Some(0);
            c
        },
        case(
            "the deadline is not enforced while paused",
            paused(dep(vec![("web", grp(2, 0, 0))])),
            vec![],
        )
        .at(late)
        .next(None),
        case(
            "the deadline is not enforced while a group waits for a manual promotion with healthy canaries",
            described(dep(vec![("web", grp(2, 1, 1))]), desc::RUNNING_NEEDS_PROMOTION),
            vec![alloc("c", "web", Some(true), true)],
        )
        .seen(Some(&[("web", 1)]))
        .at(late)
        .next(None),
        case(
            "before the deadline it is the next check",
            dep(vec![("web", grp(2, 0, 0))]),
            vec![alloc("a", "web", None, false)],
        ),
        {
            let mut d = dep(vec![("api", grp(1, 0, 0)), ("web", grp(2, 0, 0))]);
            if let Some(g) = d.task_groups.get_mut("api") {
                g.require_progress_by = Some(NOW + 5_000);
            }
            case("the earliest deadline of the groups is the next check", d, vec![])
                .next(Some(NOW + 5_000))
        },
        // ---- promotion
        case(
            "healthy canaries of an auto_promote group are promoted",
            dep(vec![("web", auto_promote(grp(2, 1, 1)))]),
            vec![alloc("c", "web", Some(true), true)],
        )
        .seen(Some(&[("web", 1)]))
        .status(DeploymentStatus::Running, desc::RUNNING)
        .promotes(&["web"])
        .eval()
        .next(None),
        case(
            "no auto-promotion while another waiting group has no auto_promote",
            dep(vec![
                ("api", grp(1, 1, 0)),
                ("web", auto_promote(grp(2, 1, 1))),
            ]),
            vec![alloc("c", "web", Some(true), true)],
        )
        .seen(Some(&[("web", 1)]))
        .status(DeploymentStatus::Running, desc::RUNNING_NEEDS_PROMOTION),
        case(
            "auto_promote groups are promoted together, once all their canaries are healthy",
            dep(vec![
                ("api", auto_promote(grp(1, 1, 0))),
                ("web", auto_promote(grp(2, 1, 1))),
            ]),
            vec![
                alloc("c1", "api", None, true),
                alloc("c2", "web", Some(true), true),
            ],
        )
        .seen(Some(&[("web", 1)]))
        .status(DeploymentStatus::Running, desc::RUNNING_AUTO_PROMOTION),
        case(
            "both groups' canaries healthy: both promoted in one change",
            dep(vec![
                ("api", auto_promote(grp(1, 1, 1))),
                ("web", auto_promote(grp(2, 1, 1))),
            ]),
            vec![
                alloc("c1", "api", Some(true), true),
                alloc("c2", "web", Some(true), true),
            ],
        )
        .seen(Some(&[("api", 1), ("web", 1)]))
        .status(DeploymentStatus::Running, desc::RUNNING)
        .promotes(&["api", "web"])
        .eval()
        .next(None),
        case(
            "auto_promote canaries not yet healthy: pending automatic promotion",
            dep(vec![("web", auto_promote(grp(2, 2, 1)))]),
            vec![
                alloc("c1", "web", Some(true), true),
                alloc("c2", "web", None, true),
            ],
        )
        .seen(Some(&[("web", 1)]))
        .status(DeploymentStatus::Running, desc::RUNNING_AUTO_PROMOTION),
        case(
            "healthy canaries without auto_promote need a manual promotion",
            dep(vec![("web", grp(2, 1, 1))]),
            vec![alloc("c", "web", Some(true), true)],
        )
        .seen(Some(&[("web", 1)]))
        .status(DeploymentStatus::Running, desc::RUNNING_NEEDS_PROMOTION)
        .next(None),
        case(
            "a paused deployment is not promoted automatically",
            paused(dep(vec![("web", auto_promote(grp(2, 1, 1)))])),
            vec![alloc("c", "web", Some(true), true)],
        )
        .seen(Some(&[("web", 1)]))
        .next(None),
        // ---- success
        {
            let mut c = case(
                "every group healthy and promoted: successful and stable",
                dep(vec![("web", promoted(grp(2, 1, 2)))]),
                vec![
                    alloc("c", "web", Some(true), false),
                    alloc("a", "web", Some(true), false),
                ],
            )
            .seen(Some(&[("web", 2)]))
            .status(DeploymentStatus::Successful, desc::SUCCESSFUL)
            .next(None);
            c.want_stable = true;
            c
        },
        {
            let mut c = case(
                "the last instance turning healthy ends it with an evaluation",
                dep(vec![("web", grp(2, 0, 2))]),
                vec![
                    alloc("a", "web", Some(true), false),
                    alloc("b", "web", Some(true), false),
                ],
            )
            .seen(Some(&[("web", 1)]))
            .status(DeploymentStatus::Successful, desc::SUCCESSFUL)
            .eval()
            .next(None);
            c.want_stable = true;
            c
        },
        case(
            "all healthy but not promoted is not a success",
            described(dep(vec![("web", grp(1, 1, 1))]), desc::RUNNING_NEEDS_PROMOTION),
            vec![alloc("c", "web", Some(true), true)],
        )
        .seen(Some(&[("web", 1)]))
        .next(None),
        case(
            "one group done, another not: still running",
            dep(vec![("api", grp(1, 0, 1)), ("web", grp(2, 0, 1))]),
            vec![],
        )
        .seen(Some(&[("api", 1), ("web", 1)])),
        // ---- evaluations
        case(
            "a grown healthy count creates an evaluation",
            dep(vec![("web", grp(3, 0, 2))]),
            vec![],
        )
        .seen(Some(&[("web", 1)]))
        .eval(),
        case(
            "the first look at a deployment creates no evaluation",
            dep(vec![("web", grp(3, 0, 2))]),
            vec![],
        )
        .seen(None),
        case(
            "an unchanged healthy count creates none",
            dep(vec![("web", grp(3, 0, 2))]),
            vec![],
        )
        .seen(Some(&[("web", 2)])),
    ]
}

#[test]
fn the_deployment_decision_table() {
    for c in cases() {
        let got = decide(
            &c.d,
            &c.allocs,
            c.current.as_ref(),
            &c.versions,
            c.seen.as_ref(),
            c.now,
        );
        let change = got.change.clone().unwrap_or_default();
        assert_eq!(change.status, c.want_status, "{}: status", c.name);
        let promote: Vec<&str> = change.promote.iter().map(String::as_str).collect();
        assert_eq!(promote, c.want_promote, "{}: promote", c.name);
        assert_eq!(change.mark_stable, c.want_stable, "{}: stable", c.name);
        assert_eq!(
            got.revert_to.as_ref().map(|j| j.groups[0].count),
            c.want_revert.map(|v| job(v, false).groups[0].count),
            "{}: revert",
            c.name
        );
        assert_eq!(got.eval, c.want_eval, "{}: eval", c.name);
        assert_eq!(got.next_check, c.want_next_check, "{}: next check", c.name);
        if got.change.is_some() {
            assert_eq!(change.deployment_id, D, "{}", c.name);
        }
    }
}

#[test]
fn a_revert_is_the_old_spec_with_server_fields_cleared() {
    let d = dep(vec![("web", auto_revert(grp(2, 0, 0)))]);
    let allocs = vec![alloc("a", "web", Some(false), false)];
    let current = job(1, false);
    let mut v0 = job(0, true);
    v0.stop = true;
    v0.create_index = 5;
    v0.submit_time = 77;
    let got = decide(
        &d,
        &allocs,
        Some(&current),
        &[current.clone(), v0.clone()],
        None,
        NOW,
    );
    let r = got.revert_to.expect("revert");
    assert!(!r.stable && !r.stop);
    assert_eq!(
        (r.create_index, r.modify_index, r.job_modify_index),
        (0, 0, 0)
    );
    assert_eq!(r.submit_time, 0);
    assert!(!v0.spec_changed(&r), "the spec itself is the old version's");
}

#[test]
fn an_inactive_deployment_is_left_alone() {
    for status in [
        DeploymentStatus::Failed,
        DeploymentStatus::Successful,
        DeploymentStatus::Cancelled,
    ] {
        let mut d = dep(vec![("web", grp(2, 0, 0))]);
        d.status = status;
        let got = decide(
            &d,
            &[alloc("a", "web", Some(false), false)],
            Some(&job(1, false)),
            &history(),
            Some(&BTreeMap::new()),
            NOW + 3_600_000,
        );
        assert_eq!(got, Decision::default(), "{status:?}");
    }
}
