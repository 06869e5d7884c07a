//! The restart policy on the client: after an exit (or a failed start), restart after
//! `delay` while fewer than `attempts` restarts happened within the current `interval`;
//! beyond that, mode `fail` gives up and mode `delay` waits for the interval to end.

use std::time::Duration;

use orch_common::duration::format as human;
use orch_common::model::{RestartMode, RestartPolicy};
use tokio::time::Instant;

/// What to do after a task stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start again after this long; the message is the event text.
    Restart { delay: Duration, message: String },
    /// Give up: the task is dead and failed.
    Fail { message: String },
}

/// Counts restarts within the policy's interval.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    window_start: Option<Instant>,
    count: u32,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            window_start: None,
            count: 0,
        }
    }

    /// Decides after an unsuccessful run (or any exit of a service task) at `now`.
    pub fn next(&mut self, now: Instant) -> RestartDecision {
        let window_over = self
            .window_start
            .map(|s| now.duration_since(s) >= self.policy.interval)
            .unwrap_or(true);
        if window_over {
            self.window_start = Some(now);
            self.count = 0;
        }
        self.count += 1;
        if self.count <= self.policy.attempts {
            return RestartDecision::Restart {
                delay: self.policy.delay,
                message: format!("Restarting in {}", human(self.policy.delay)),
            };
        }
        let exceeded = format!(
            "Exceeded allowed attempts {} in interval {}",
            self.policy.attempts,
            human(self.policy.interval)
        );
        match self.policy.mode {
            RestartMode::Fail => RestartDecision::Fail {
                message: format!("{exceeded} and mode is \"fail\""),
            },
            RestartMode::Delay => {
                // The interval is the user's; one no clock can add (from a job older than
                // the spec's bounds) waits the longest a spec may give instead of panicking.
                let start = self.window_start.unwrap_or(now);
                let end = start
                    .checked_add(self.policy.interval)
                    .unwrap_or_else(|| now + orch_common::duration::MAX);
                let delay = end.saturating_duration_since(now).max(self.policy.delay);
                // The next failure after this wait opens a fresh window.
                self.window_start = None;
                RestartDecision::Restart {
                    delay,
                    message: format!("{exceeded}, delaying restart by {}", human(delay)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::mock::restart_policy;

    /// `attempts` restarts within `interval_s` seconds, `delay_ms` apart, then `mode`.
    fn tracker(attempts: u32, delay_ms: u64, interval_s: u64, mode: RestartMode) -> RestartTracker {
        RestartTracker::new(restart_policy(
            attempts,
            Duration::from_millis(delay_ms),
            Duration::from_secs(interval_s),
            mode,
        ))
    }

    fn delay_of(d: RestartDecision) -> Duration {
        match d {
            RestartDecision::Restart { delay, .. } => delay,
            RestartDecision::Fail { message } => panic!("failed: {message}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_within_the_interval_then_fail() {
        let mut t = tracker(2, 1000, 60, RestartMode::Fail);
        let now = Instant::now();
        assert_eq!(delay_of(t.next(now)), Duration::from_secs(1));
        assert_eq!(
            delay_of(t.next(now + Duration::from_secs(2))),
            Duration::from_secs(1)
        );
        match t.next(now + Duration::from_secs(4)) {
            RestartDecision::Fail { message } => assert_eq!(
                message,
                "Exceeded allowed attempts 2 in interval 1m and mode is \"fail\""
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_interval_resets_the_count() {
        let mut t = tracker(1, 10, 10, RestartMode::Fail);
        let now = Instant::now();
        delay_of(t.next(now));
        delay_of(t.next(now + Duration::from_secs(11)));
        assert!(matches!(
            t.next(now + Duration::from_secs(12)),
            RestartDecision::Fail { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_attempts_fail_at_once() {
        let mut t = tracker(0, 10, 10, RestartMode::Fail);
        assert!(matches!(
            t.next(Instant::now()),
            RestartDecision::Fail { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn mode_delay_waits_out_the_interval() {
        let mut t = tracker(1, 100, 30, RestartMode::Delay);
        let now = Instant::now();
        delay_of(t.next(now));
        let d = delay_of(t.next(now + Duration::from_secs(10)));
        assert_eq!(d, Duration::from_secs(20));
        // After the wait a fresh window allows attempts again.
        assert_eq!(
            delay_of(t.next(now + Duration::from_secs(31))),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_interval_in_mode_delay_waits_long_instead_of_panicking() {
        // A policy from an older server (or a JSON job from before the bounds) may hold
        // an interval no clock can add; the runner must still decide.
        let mut t = RestartTracker::new(restart_policy(
            0,
            Duration::from_secs(1),
            Duration::MAX,
            RestartMode::Delay,
        ));
        let d = delay_of(t.next(Instant::now()));
        assert!(d >= Duration::from_secs(86400 * 365), "{d:?}");
    }
}
