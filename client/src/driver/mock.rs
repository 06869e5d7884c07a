//! The `mock` driver: runs no process. Its task config says what happens:
//! `run_for = "2s"` (how long the "process" lives; default 0s), `exit_code = 1`,
//! `exit_signal = 9`, `oom_killed = true`, `start_error = "..."` (start fails),
//! `ignore_stop_signal = true` (stop has to wait out the timeout and force-kill).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::Signal;
use orch_common::model::DriverInfo;
use serde::Deserialize;
use tokio::sync::watch;

use super::{wait_exit, Driver, DriverError, ExitResult, StartRequest, TaskHandle, TaskStats};
use crate::once::set_once;

const NAME: &str = "mock";

/// The mock task's behaviour, from the task's `config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MockConfig {
    #[serde(default, with = "orch_common::duration::human_opt")]
    run_for: Option<Duration>,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    exit_signal: Option<i32>,
    #[serde(default)]
    oom_killed: bool,
    #[serde(default)]
    start_error: Option<String>,
    #[serde(default)]
    ignore_stop_signal: bool,
}

struct MockTask {
    exit_tx: watch::Sender<Option<ExitResult>>,
    ignore_stop_signal: bool,
    timer: tokio::task::JoinHandle<()>,
}

/// A driver that pretends: each task is a timer that "exits" as configured.
#[derive(Default)]
pub struct MockDriver {
    /// Task id -> its timer. A std mutex: never held across an await.
    tasks: Mutex<HashMap<String, Arc<MockTask>>>,
}

impl MockDriver {
    pub fn new() -> Self {
        Self::default()
    }

    fn task(&self, id: &str) -> Option<Arc<MockTask>> {
        self.tasks
            .lock()
            .expect("mock task table poisoned")
            .get(id)
            .cloned()
    }

    fn finish(task: &MockTask, result: ExitResult) {
        task.timer.abort();
        set_once(&task.exit_tx, result);
    }
}

impl Driver for MockDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fingerprint(&self) -> DriverInfo {
        DriverInfo {
            detected: true,
            healthy: true,
            description: "mock driver for tests (runs nothing)".to_string(),
        }
    }

    fn uses_cgroups(&self) -> bool {
        false
    }

    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<TaskHandle, DriverError>> {
        async move {
            let value = serde_json::Value::Object(req.config.clone().into_iter().collect());
            let cfg: MockConfig =
                serde_json::from_value(value).map_err(|e| DriverError::InvalidConfig {
                    task: req.id.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(message) = cfg.start_error {
                return Err(DriverError::Injected {
                    task: req.id.clone(),
                    message,
                });
            }
            let result = ExitResult {
                exit_code: match cfg.exit_signal {
                    Some(s) => 128 + s,
                    None => cfg.exit_code,
                },
                signal: cfg.exit_signal,
                oom_killed: cfg.oom_killed,
            };
            let (exit_tx, _) = watch::channel(None);
            let timer_tx = exit_tx.clone();
            let run_for = cfg.run_for.unwrap_or(Duration::ZERO);
            let timer = tokio::spawn(async move {
                tokio::time::sleep(run_for).await;
                set_once(&timer_tx, result);
            });
            self.tasks.lock().expect("mock task table poisoned").insert(
                req.id.clone(),
                Arc::new(MockTask {
                    exit_tx,
                    ignore_stop_signal: cfg.ignore_stop_signal,
                    timer,
                }),
            );
            Ok(TaskHandle {
                id: req.id,
                alloc_id: req.alloc_id,
                task_name: req.task_name,
                driver: NAME.to_string(),
                pid: None,
                pid_start_ticks: None,
                started_at: orch_common::ids::now_ms(),
                cgroup: None,
                driver_state: serde_json::json!({ "run_for_ms": orch_common::duration::millis_saturating(run_for) }),
            })
        }
        .boxed()
    }

    fn wait<'a>(
        &'a self,
        handle: &'a TaskHandle,
    ) -> BoxFuture<'a, Result<ExitResult, DriverError>> {
        async move {
            let rx = self.task(&handle.id).map(|t| t.exit_tx.subscribe());
            wait_exit(rx, &handle.id, NAME).await
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let Some(task) = self.task(&handle.id) else {
                return Ok(());
            };
            if task.exit_tx.borrow().is_some() {
                return Ok(());
            }
            if task.ignore_stop_signal {
                tokio::time::sleep(timeout).await;
                Self::finish(&task, ExitResult::signaled(Signal::SIGKILL as i32));
            } else {
                Self::finish(&task, ExitResult::signaled(signal as i32));
            }
            Ok(())
        }
        .boxed()
    }

    fn destroy<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let task = self
                .tasks
                .lock()
                .expect("mock task table poisoned")
                .remove(&handle.id);
            if let Some(task) = task {
                Self::finish(&task, ExitResult::signaled(Signal::SIGKILL as i32));
            }
            Ok(())
        }
        .boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            // A mock task lives only in this process's memory.
            match self.task(&handle.id) {
                Some(_) => Ok(()),
                None => Err(DriverError::UnknownTask {
                    task: handle.id.clone(),
                    driver: NAME,
                }),
            }
        }
        .boxed()
    }

    fn stats<'a>(
        &'a self,
        handle: &'a TaskHandle,
    ) -> BoxFuture<'a, Result<TaskStats, DriverError>> {
        async move {
            let running = self
                .task(&handle.id)
                .map(|t| t.exit_tx.borrow().is_none())
                .unwrap_or(false);
            Ok(TaskStats {
                memory: None,
                cpu_ns: None,
                pids: usize::from(running),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::super::suite::{self, Harness};
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    pub(crate) struct MockHarness;

    impl Harness for MockHarness {
        fn driver(&self) -> Arc<dyn Driver> {
            Arc::new(MockDriver::new())
        }
        fn driver_after_restart(&self, before: &Arc<dyn Driver>) -> Arc<dyn Driver> {
            // A mock task lives in its driver's memory only.
            before.clone()
        }
        fn exits_with(&self, code: i32) -> BTreeMap<String, serde_json::Value> {
            BTreeMap::from([("exit_code".to_string(), json!(code))])
        }
        fn runs_until_stopped(&self) -> BTreeMap<String, serde_json::Value> {
            BTreeMap::from([("run_for".to_string(), json!("1h"))])
        }
        fn ignores_stop_signal(&self) -> BTreeMap<String, serde_json::Value> {
            BTreeMap::from([
                ("run_for".to_string(), json!("1h")),
                ("ignore_stop_signal".to_string(), json!(true)),
            ])
        }
    }

    suite::driver_suite!(MockHarness);

    #[tokio::test]
    async fn start_error_fails_the_start() {
        let t = suite::TaskDirs::new();
        let d = MockDriver::new();
        let cfg = BTreeMap::from([("start_error".to_string(), json!("boom"))]);
        let err = d.start(t.request("x", cfg)).await.unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert!(err.is_recoverable());
    }

    #[tokio::test]
    async fn unknown_config_keys_are_invalid() {
        let t = suite::TaskDirs::new();
        let d = MockDriver::new();
        let cfg = BTreeMap::from([("run_fro".to_string(), json!("1s"))]);
        let err = d.start(t.request("x", cfg)).await.unwrap_err();
        assert!(matches!(err, DriverError::InvalidConfig { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn run_for_decides_when_the_task_exits() {
        let t = suite::TaskDirs::new();
        let d = MockDriver::new();
        let cfg = BTreeMap::from([
            ("run_for".to_string(), json!("2s")),
            ("oom_killed".to_string(), json!(true)),
        ]);
        let h = d.start(t.request("x", cfg)).await.unwrap();
        let before = tokio::time::Instant::now();
        let r = d.wait(&h).await.unwrap();
        assert!(before.elapsed() >= Duration::from_secs(2));
        assert!(r.oom_killed);
    }
}
