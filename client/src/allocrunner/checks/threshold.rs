//! The pure part of a health check: the health a run of results amounts to
//! (`success_before_passing` / `failures_before_critical`, Consul's semantics) and when
//! `check_restart` asks for a restart. No clock, no I/O: the loop in `checks` feeds it.
//!
//! ```text
//!             N successes in a row                 N = success_before_passing
//!   pending ------------------------> passing
//!      |                               ^   |
//!      | M failures in a row           |   | M failures in a row
//!      v        N successes in a row   |   v      M = failures_before_critical
//!   critical --------------------------+ critical
//! ```
//!
//! Fewer than N (or M) results in a row leave the health where it was: a passing check
//! that fails once with M = 3 stays passing, so a flapping check does not flap its
//! health.

use std::time::Duration;

use orch_common::model::{CheckHealth, CheckRestart};

/// Turns a check's results into its health.
#[derive(Debug, Clone)]
pub struct Threshold {
    success_before_passing: u32,
    failures_before_critical: u32,
    health: CheckHealth,
    successes: u32,
    failures: u32,
}

impl Threshold {
    /// A threshold starting `pending`; a limit of 0 counts as 1 (one result decides).
    pub fn new(success_before_passing: u32, failures_before_critical: u32) -> Self {
        Threshold {
            success_before_passing: success_before_passing.max(1),
            failures_before_critical: failures_before_critical.max(1),
            health: CheckHealth::Pending,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one run's result; returns the health after it.
    pub fn record(&mut self, success: bool) -> CheckHealth {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.success_before_passing {
                self.health = CheckHealth::Passing;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.failures_before_critical {
                self.health = CheckHealth::Critical;
            }
        }
        self.health
    }

    pub fn health(&self) -> CheckHealth {
        self.health
    }
}

/// Counts the critical results of a check after the task's grace period and says when
/// `check_restart.limit` of them came in a row.
#[derive(Debug, Clone)]
pub struct RestartCounter {
    limit: u32,
    grace: Duration,
    critical_in_a_row: u32,
}

impl RestartCounter {
    /// None when the policy never restarts (`limit = 0`, as in Nomad).
    pub fn new(policy: &CheckRestart) -> Option<Self> {
        (policy.limit > 0).then_some(RestartCounter {
            limit: policy.limit,
            grace: policy.grace,
            critical_in_a_row: 0,
        })
    }

    /// Records the health after a run, `running_for` after the task (re)started;
    /// true when the task must be restarted now. Results inside the grace period do
    /// not count: a task that is still starting is not judged.
    pub fn record(&mut self, health: CheckHealth, running_for: Duration) -> bool {
        if health != CheckHealth::Critical {
            self.critical_in_a_row = 0;
            return false;
        }
        if running_for < self.grace {
            return false;
        }
        self.critical_in_a_row = self.critical_in_a_row.saturating_add(1);
        self.critical_in_a_row >= self.limit
    }

    /// How many critical results in a row counted so far.
    pub fn count(&self) -> u32 {
        self.critical_in_a_row
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckHealth::*;

    fn run(t: &mut Threshold, results: &[bool]) -> Vec<CheckHealth> {
        results.iter().map(|&ok| t.record(ok)).collect()
    }

    #[test]
    fn a_new_check_is_pending_until_enough_successes() {
        let mut t = Threshold::new(3, 1);
        assert_eq!(t.health(), Pending);
        assert_eq!(
            run(&mut t, &[true, true, true]),
            [Pending, Pending, Passing]
        );
    }

    #[test]
    fn a_check_becomes_critical_after_enough_failures_in_a_row() {
        let mut t = Threshold::new(1, 3);
        assert_eq!(
            run(&mut t, &[true, false, false, false]),
            [Passing, Passing, Passing, Critical]
        );
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let mut t = Threshold::new(1, 2);
        assert_eq!(
            run(&mut t, &[true, false, true, false, true, false, false]),
            [Passing, Passing, Passing, Passing, Passing, Passing, Critical]
        );
    }

    #[test]
    fn a_flapping_check_keeps_its_health_until_a_run_is_long_enough() {
        let mut t = Threshold::new(2, 2);
        assert_eq!(
            run(
                &mut t,
                &[false, false, true, false, true, true, false, true]
            ),
            [Pending, Critical, Critical, Critical, Critical, Passing, Passing, Passing]
        );
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut t = Threshold::new(0, 0);
        assert_eq!(
            run(&mut t, &[false, true, false]),
            [Critical, Passing, Critical]
        );
    }

    fn policy(limit: u32, grace_s: u64) -> CheckRestart {
        CheckRestart {
            limit,
            grace: Duration::from_secs(grace_s),
        }
    }

    #[test]
    fn a_restart_comes_after_limit_critical_results_in_a_row() {
        let mut c = RestartCounter::new(&policy(2, 0)).unwrap();
        let t = Duration::from_secs(1);
        assert!(!c.record(Critical, t));
        assert!(!c.record(Passing, t), "a passing result resets the count");
        assert!(!c.record(Critical, t));
        assert!(c.record(Critical, t));
        assert_eq!(c.count(), 2);
    }

    #[test]
    fn critical_results_during_the_grace_period_do_not_count() {
        let mut c = RestartCounter::new(&policy(1, 10)).unwrap();
        assert!(!c.record(Critical, Duration::from_secs(3)));
        assert!(!c.record(Critical, Duration::from_secs(9)));
        assert!(c.record(Critical, Duration::from_secs(10)));
    }

    #[test]
    fn a_limit_of_zero_never_restarts() {
        assert!(RestartCounter::new(&policy(0, 0)).is_none());
    }
}
