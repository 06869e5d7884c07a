//! The deployment health tracker of one allocation: decides, from its task states and
//! check statuses, whether the allocation became healthy in its deployment (its
//! condition held for `min_healthy_time`) or not (a task failed, or `healthy_deadline`
//! passed first). A pure state machine fed with observations and `now`; the alloc
//! runner wakes it at the instant it asks for.
//!
//! ```text
//!             condition holds                 held for min_healthy_time
//!   waiting ─────────────────> holding ───────────────────────────────> healthy
//!      ▲                          │
//!      └──────────────────────────┘  a task not running / restarted, a check not passing
//!
//!   waiting | holding ──> unhealthy   a task dead and failed (at once), or
//!                                     healthy_deadline (from the start of tracking)
//! ```
//!
//! The condition per `health_check`: `checks` = every task running and every check of
//! the group passing; `task_states` = every task running; `manual` = never decided
//! here (an operator sets the health through the API).

use std::collections::BTreeMap;
use std::time::Duration;

use orch_common::duration::format as human;
use orch_common::ids::DeploymentId;
use orch_common::model::{
    Allocation, CheckHealth, CheckStatus, HealthCheckMode, TaskState, TaskStateKind, UpdatePolicy,
};
use tokio::time::Instant;

/// The tracker's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    /// Why, in words.
    pub description: String,
    /// When it became true (for a healthy verdict: when `min_healthy_time` was reached,
    /// which may be before the observation that noticed it).
    pub at: Instant,
}

/// Tracks one allocation's health in one deployment.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    deployment_id: DeploymentId,
    mode: HealthCheckMode,
    min_healthy_time: Duration,
    healthy_deadline: Duration,
    /// Tracking started + `healthy_deadline`.
    deadline: Instant,
    /// The group's tasks: one missing from the states is not running.
    tasks: Vec<String>,
    /// Since when the condition has held without a break (None: it does not hold).
    holding_since: Option<Instant>,
    /// Each task's run (restarts, started_at) when `holding_since` was set: a task that
    /// restarted in between did not hold continuously.
    runs: BTreeMap<String, (u32, Option<u64>)>,
    verdict: Option<Verdict>,
}

impl HealthTracker {
    /// A tracker for `alloc` when its health is the client's to decide: it belongs to
    /// a deployment, its group has an update policy, and the servers do not know its
    /// health yet. Tracking starts at `now`.
    pub fn for_alloc(alloc: &Allocation, now: Instant) -> Option<HealthTracker> {
        let deployment_id = alloc.deployment_id.as_ref()?;
        if alloc.deployment_health().is_some() {
            return None;
        }
        let group = alloc.job.as_ref()?.group(&alloc.group)?;
        let policy = group.update.as_ref()?;
        let tasks = group.tasks.iter().map(|t| t.name.clone()).collect();
        Some(HealthTracker::new(deployment_id, policy, tasks, now))
    }

    pub fn new(
        deployment_id: &DeploymentId,
        policy: &UpdatePolicy,
        tasks: Vec<String>,
        now: Instant,
    ) -> HealthTracker {
        // The user's durations, capped (the spec bounds them; older jobs may not be) so
        // that adding them to an instant never overflows.
        let cap = |d: std::time::Duration| d.min(orch_common::duration::MAX);
        HealthTracker {
            deployment_id: deployment_id.clone(),
            mode: policy.health_check,
            min_healthy_time: cap(policy.min_healthy_time),
            healthy_deadline: cap(policy.healthy_deadline),
            deadline: now + cap(policy.healthy_deadline),
            tasks,
            holding_since: None,
            runs: BTreeMap::new(),
            verdict: None,
        }
    }

    pub fn deployment_id(&self) -> &DeploymentId {
        &self.deployment_id
    }

    /// The decision, once made (it never changes afterwards).
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// Takes the allocation's current task states and check statuses (keyed
    /// `SERVICE/CHECK`) at `now`. Returns when to be called again even if nothing
    /// changes (None: no timer needed, because a verdict was made or the mode is
    /// `manual`).
    pub fn observe(
        &mut self,
        tasks: &BTreeMap<String, TaskState>,
        checks: &BTreeMap<String, CheckStatus>,
        now: Instant,
    ) -> Option<Instant> {
        if self.verdict.is_some() || self.mode == HealthCheckMode::Manual {
            return None;
        }
        if let Some(name) = self.tasks.iter().find(|t| {
            tasks
                .get(*t)
                .is_some_and(|s| s.state == TaskStateKind::Dead && s.failed)
        }) {
            self.decide(false, format!("task {name} failed"), now);
            return None;
        }
        let blocker = self.blocker(tasks, checks);
        if blocker.is_some() {
            self.holding_since = None;
        } else {
            let runs = self.runs_of(tasks);
            if self.holding_since.is_none() || runs != self.runs {
                self.holding_since = Some(now);
                self.runs = runs;
            }
        }
        if let Some(since) = self.holding_since {
            let healthy_at = since + self.min_healthy_time;
            // Reached before the deadline: healthy, even if noticed a little later.
            if healthy_at <= now && healthy_at <= self.deadline {
                let what = match self.mode {
                    HealthCheckMode::Checks if !checks.is_empty() => {
                        "tasks running and checks passing"
                    }
                    _ => "tasks running",
                };
                let description = format!("{what} for {}", human(self.min_healthy_time));
                self.decide(true, description, healthy_at);
                return None;
            }
        }
        if now >= self.deadline {
            let why = blocker.unwrap_or_else(|| {
                let held = self
                    .holding_since
                    .map(|s| now.saturating_duration_since(s))
                    .unwrap_or_default();
                format!(
                    "healthy for only {} of min_healthy_time {}",
                    human(round_to_ms(held)),
                    human(self.min_healthy_time)
                )
            });
            let description = format!(
                "healthy deadline of {} passed: {why}",
                human(self.healthy_deadline)
            );
            self.decide(false, description, now);
            return None;
        }
        Some(match self.holding_since {
            Some(since) => (since + self.min_healthy_time).min(self.deadline),
            None => self.deadline,
        })
    }

    /// The first reason the condition does not hold now, in words (None: it holds).
    fn blocker(
        &self,
        tasks: &BTreeMap<String, TaskState>,
        checks: &BTreeMap<String, CheckStatus>,
    ) -> Option<String> {
        for name in &self.tasks {
            match tasks.get(name).map(|s| s.state) {
                Some(TaskStateKind::Running) => {}
                Some(kind) => return Some(format!("task {name} is {}", kind_word(kind))),
                None => return Some(format!("task {name} has not started")),
            }
        }
        if self.mode == HealthCheckMode::Checks {
            if let Some((key, c)) = checks
                .iter()
                .find(|(_, c)| c.status != CheckHealth::Passing)
            {
                return Some(format!("check {key} is {}", c.status.as_str()));
            }
        }
        None
    }

    fn runs_of(&self, tasks: &BTreeMap<String, TaskState>) -> BTreeMap<String, (u32, Option<u64>)> {
        self.tasks
            .iter()
            .filter_map(|n| {
                tasks
                    .get(n)
                    .map(|s| (n.clone(), (s.restarts, s.started_at)))
            })
            .collect()
    }

    fn decide(&mut self, healthy: bool, description: String, at: Instant) {
        self.holding_since = None;
        self.verdict = Some(Verdict {
            healthy,
            description,
            at,
        });
    }
}

fn kind_word(kind: TaskStateKind) -> &'static str {
    match kind {
        TaskStateKind::Pending => "pending",
        TaskStateKind::Running => "running",
        TaskStateKind::Dead => "dead",
    }
}

/// Durations in descriptions in whole milliseconds (no "1.000123s").
fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::model::CheckType;

    const MIN: Duration = Duration::from_secs(10);
    const DEADLINE: Duration = Duration::from_secs(60);

    fn policy(mode: HealthCheckMode) -> UpdatePolicy {
        UpdatePolicy {
            health_check: mode,
            min_healthy_time: MIN,
            healthy_deadline: DEADLINE,
            ..Default::default()
        }
    }

    /// A tracker of tasks `app` and `side` that started at `t0`.
    fn tracker(mode: HealthCheckMode, t0: Instant) -> HealthTracker {
        HealthTracker::new(
            &"dep-1".into(),
            &policy(mode),
            vec!["app".into(), "side".into()],
            t0,
        )
    }

    fn task(kind: TaskStateKind, failed: bool, restarts: u32) -> TaskState {
        TaskState {
            state: kind,
            failed,
            restarts,
            started_at: (kind == TaskStateKind::Running).then_some(1000 + restarts as u64),
            ..Default::default()
        }
    }

    fn both(kind: TaskStateKind) -> BTreeMap<String, TaskState> {
        BTreeMap::from([
            ("app".to_string(), task(kind, false, 0)),
            ("side".to_string(), task(kind, false, 0)),
        ])
    }

    fn check(status: CheckHealth) -> BTreeMap<String, CheckStatus> {
        BTreeMap::from([(
            "api/http-0".to_string(),
            CheckStatus {
                service: "api".into(),
                name: "http-0".into(),
                check_type: CheckType::Http,
                task: "app".into(),
                status,
                output: String::new(),
                last_run_ms: 0,
                status_since_ms: 0,
            },
        )])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn running_tasks_are_healthy_after_min_healthy_time() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let running = both(TaskStateKind::Running);
        let none = BTreeMap::new();
        assert_eq!(
            h.observe(&both(TaskStateKind::Pending), &none, t0),
            Some(t0 + DEADLINE)
        );
        // Running from t0+2s: wake at t0+12s.
        assert_eq!(
            h.observe(&running, &none, t0 + secs(2)),
            Some(t0 + secs(12))
        );
        assert_eq!(
            h.observe(&running, &none, t0 + secs(5)),
            Some(t0 + secs(12))
        );
        assert!(h.verdict().is_none());
        assert_eq!(h.observe(&running, &none, t0 + secs(12)), None);
        let v = h.verdict().unwrap();
        assert!(v.healthy);
        assert_eq!(v.at, t0 + secs(12));
        assert_eq!(v.description, "tasks running for 10s");
    }

    #[test]
    fn a_late_wake_up_dates_the_verdict_when_min_healthy_time_was_reached() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let running = both(TaskStateKind::Running);
        h.observe(&running, &BTreeMap::new(), t0);
        assert_eq!(h.observe(&running, &BTreeMap::new(), t0 + secs(30)), None);
        assert_eq!(h.verdict().unwrap().at, t0 + MIN);
    }

    #[test]
    fn task_states_mode_ignores_checks() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let running = both(TaskStateKind::Running);
        h.observe(&running, &check(CheckHealth::Critical), t0);
        h.observe(&running, &check(CheckHealth::Critical), t0 + MIN);
        assert!(h.verdict().unwrap().healthy);
    }

    #[test]
    fn checks_mode_waits_for_every_check_to_pass() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::Checks, t0);
        let running = both(TaskStateKind::Running);
        assert_eq!(
            h.observe(&running, &check(CheckHealth::Pending), t0),
            Some(t0 + DEADLINE)
        );
        assert_eq!(
            h.observe(&running, &check(CheckHealth::Passing), t0 + secs(3)),
            Some(t0 + secs(13))
        );
        assert_eq!(
            h.observe(&running, &check(CheckHealth::Passing), t0 + secs(13)),
            None
        );
        let v = h.verdict().unwrap();
        assert!(v.healthy);
        assert_eq!(v.description, "tasks running and checks passing for 10s");
    }

    #[test]
    fn checks_mode_without_checks_judges_task_states() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::Checks, t0);
        let running = both(TaskStateKind::Running);
        h.observe(&running, &BTreeMap::new(), t0);
        h.observe(&running, &BTreeMap::new(), t0 + MIN);
        assert!(h.verdict().unwrap().healthy);
    }

    #[test]
    fn a_check_leaving_passing_resets_the_clock() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::Checks, t0);
        let running = both(TaskStateKind::Running);
        h.observe(&running, &check(CheckHealth::Passing), t0);
        h.observe(&running, &check(CheckHealth::Critical), t0 + secs(8));
        assert_eq!(
            h.observe(&running, &check(CheckHealth::Passing), t0 + secs(9)),
            Some(t0 + secs(19))
        );
        h.observe(&running, &check(CheckHealth::Passing), t0 + secs(12));
        assert!(h.verdict().is_none(), "the clock must restart at 9s");
        h.observe(&running, &check(CheckHealth::Passing), t0 + secs(19));
        assert!(h.verdict().unwrap().healthy);
    }

    #[test]
    fn a_task_restart_resets_the_clock_even_when_unseen_in_between() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        h.observe(&both(TaskStateKind::Running), &BTreeMap::new(), t0);
        // The next observation already shows the task running again, one restart on.
        let mut restarted = both(TaskStateKind::Running);
        restarted.insert("app".into(), task(TaskStateKind::Running, false, 1));
        assert_eq!(
            h.observe(&restarted, &BTreeMap::new(), t0 + secs(7)),
            Some(t0 + secs(17))
        );
        h.observe(&restarted, &BTreeMap::new(), t0 + secs(10));
        assert!(h.verdict().is_none());
        h.observe(&restarted, &BTreeMap::new(), t0 + secs(17));
        assert!(h.verdict().unwrap().healthy);
    }

    #[test]
    fn a_task_not_running_resets_the_clock() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        h.observe(&both(TaskStateKind::Running), &BTreeMap::new(), t0);
        let mut restarting = both(TaskStateKind::Running);
        restarting.insert("side".into(), task(TaskStateKind::Pending, false, 1));
        assert_eq!(
            h.observe(&restarting, &BTreeMap::new(), t0 + secs(5)),
            Some(t0 + DEADLINE)
        );
        h.observe(
            &both(TaskStateKind::Running),
            &BTreeMap::new(),
            t0 + secs(6),
        );
        h.observe(
            &both(TaskStateKind::Running),
            &BTreeMap::new(),
            t0 + secs(10),
        );
        assert!(h.verdict().is_none());
    }

    #[test]
    fn a_failed_task_is_unhealthy_at_once() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::Checks, t0);
        let mut states = both(TaskStateKind::Running);
        states.insert("app".into(), task(TaskStateKind::Dead, true, 0));
        assert_eq!(h.observe(&states, &BTreeMap::new(), t0 + secs(1)), None);
        let v = h.verdict().unwrap();
        assert!(!v.healthy);
        assert_eq!(v.description, "task app failed");
        assert_eq!(v.at, t0 + secs(1));
    }

    #[test]
    fn a_task_that_completed_is_not_a_failure_but_not_running_either() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let mut states = both(TaskStateKind::Running);
        states.insert("app".into(), task(TaskStateKind::Dead, false, 0));
        assert_eq!(
            h.observe(&states, &BTreeMap::new(), t0 + MIN),
            Some(t0 + DEADLINE)
        );
        assert!(h.verdict().is_none());
    }

    #[test]
    fn the_deadline_passing_first_is_unhealthy_and_says_what_was_missing() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::Checks, t0);
        let running = both(TaskStateKind::Running);
        h.observe(&running, &check(CheckHealth::Critical), t0 + secs(1));
        assert_eq!(
            h.observe(&running, &check(CheckHealth::Critical), t0 + DEADLINE),
            None
        );
        let v = h.verdict().unwrap();
        assert!(!v.healthy);
        assert_eq!(
            v.description,
            "healthy deadline of 1m passed: check api/http-0 is critical"
        );
    }

    #[test]
    fn the_deadline_within_min_healthy_time_is_unhealthy() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let running = both(TaskStateKind::Running);
        // Holding from 55s: min_healthy_time would end at 65s, past the deadline.
        h.observe(&both(TaskStateKind::Pending), &BTreeMap::new(), t0);
        assert_eq!(
            h.observe(&running, &BTreeMap::new(), t0 + secs(55)),
            Some(t0 + DEADLINE)
        );
        // Woken late, after 65s: still unhealthy, the deadline came first.
        assert_eq!(h.observe(&running, &BTreeMap::new(), t0 + secs(70)), None);
        let v = h.verdict().unwrap();
        assert!(!v.healthy);
        assert_eq!(
            v.description,
            "healthy deadline of 1m passed: healthy for only 15s of min_healthy_time 10s"
        );
    }

    #[test]
    fn a_task_that_never_started_is_named_at_the_deadline() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let mut states = BTreeMap::new();
        states.insert("app".to_string(), task(TaskStateKind::Running, false, 0));
        h.observe(&states, &BTreeMap::new(), t0 + DEADLINE);
        assert_eq!(
            h.verdict().unwrap().description,
            "healthy deadline of 1m passed: task side has not started"
        );
    }

    #[test]
    fn manual_mode_never_decides() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::Manual, t0);
        let running = both(TaskStateKind::Running);
        assert_eq!(h.observe(&running, &BTreeMap::new(), t0), None);
        assert_eq!(h.observe(&running, &BTreeMap::new(), t0 + secs(3600)), None);
        let mut failed = both(TaskStateKind::Running);
        failed.insert("app".into(), task(TaskStateKind::Dead, true, 0));
        assert_eq!(h.observe(&failed, &BTreeMap::new(), t0 + secs(3601)), None);
        assert!(h.verdict().is_none());
    }

    #[test]
    fn the_verdict_is_final() {
        let t0 = Instant::now();
        let mut h = tracker(HealthCheckMode::TaskStates, t0);
        let running = both(TaskStateKind::Running);
        h.observe(&running, &BTreeMap::new(), t0);
        h.observe(&running, &BTreeMap::new(), t0 + MIN);
        let first = h.verdict().cloned();
        let mut failed = both(TaskStateKind::Running);
        failed.insert("app".into(), task(TaskStateKind::Dead, true, 0));
        assert_eq!(h.observe(&failed, &BTreeMap::new(), t0 + secs(20)), None);
        assert_eq!(h.verdict().cloned(), first);
    }

    #[test]
    fn zero_min_healthy_time_is_healthy_on_the_first_good_observation() {
        let t0 = Instant::now();
        let mut p = policy(HealthCheckMode::TaskStates);
        p.min_healthy_time = Duration::ZERO;
        let mut h = HealthTracker::new(&"d".into(), &p, vec!["app".into()], t0);
        let states = BTreeMap::from([("app".to_string(), task(TaskStateKind::Running, false, 0))]);
        assert_eq!(h.observe(&states, &BTreeMap::new(), t0 + secs(1)), None);
        assert!(h.verdict().unwrap().healthy);
    }

    mod for_alloc {
        use super::*;
        use orch_common::mock::{task as spec_task, AllocBuilder, JobBuilder};

        /// An allocation of deployment "dep-1" of a job whose group tracks task states
        /// of its one task "a".
        fn deployment_alloc() -> AllocBuilder {
            let j = JobBuilder::new("job1")
                .group_name("g")
                .tasks(vec![spec_task("a", "mock")])
                .update(policy(HealthCheckMode::TaskStates))
                .build();
            AllocBuilder::new(&j).deployment("dep-1")
        }

        #[test]
        fn an_alloc_of_a_deployment_with_an_update_policy_is_tracked() {
            let h = HealthTracker::for_alloc(&deployment_alloc().build(), Instant::now()).unwrap();
            assert_eq!(h.deployment_id(), "dep-1");
            assert_eq!(h.tasks, vec!["a".to_string()]);
        }

        #[test]
        fn no_deployment_no_policy_or_a_known_health_is_not_tracked() {
            let now = Instant::now();
            let mut a = deployment_alloc().build();
            a.deployment_id = None;
            assert!(HealthTracker::for_alloc(&a, now).is_none());

            let mut a = deployment_alloc().build();
            a.job.as_mut().unwrap().groups[0].update = None;
            assert!(HealthTracker::for_alloc(&a, now).is_none());

            let a = deployment_alloc().health(Some(true), 0).build();
            assert!(HealthTracker::for_alloc(&a, now).is_none());

            // A canary whose health is not known yet is tracked.
            let a = deployment_alloc().canary().build();
            assert!(HealthTracker::for_alloc(&a, now).is_some());
        }
    }
}
