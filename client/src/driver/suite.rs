//! The test suite every driver passes: a `Harness` says how to make the driver do each
//! behaviour, `driver_suite!` expands the shared scenarios for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Driver, StartRequest};
use crate::cgroups::{self, CgroupLimits, CgroupManager, CgroupPaths};

/// How to make one driver exit with a code, run until stopped, or ignore SIGTERM.
pub(crate) trait Harness {
    fn driver(&self) -> Arc<dyn Driver>;
    fn exits_with(&self, code: i32) -> BTreeMap<String, serde_json::Value>;
    fn runs_until_stopped(&self) -> BTreeMap<String, serde_json::Value>;
    fn ignores_stop_signal(&self) -> BTreeMap<String, serde_json::Value>;
    /// The driver of a restarted client: a new instance that knows nothing of the
    /// tasks `before` started (the mock, whose tasks live in memory, returns it).
    fn driver_after_restart(&self, before: &Arc<dyn Driver>) -> Arc<dyn Driver> {
        let _ = before;
        self.driver()
    }
    /// Why the driver cannot run on this host (e.g. it needs root); the shared
    /// scenarios then print the reason and pass.
    fn skip(&self) -> Option<String> {
        None
    }
}

/// A temp task dir with log paths; removed on drop.
pub(crate) struct TaskDirs {
    _dir: tempfile::TempDir,
    pub task_dir: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl TaskDirs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let task_dir = dir.path().join("task");
        std::fs::create_dir_all(&task_dir).unwrap();
        TaskDirs {
            stdout: dir.path().join("logs/task.stdout.0"),
            stderr: dir.path().join("logs/task.stderr.0"),
            task_dir,
            _dir: dir,
        }
    }

    pub fn request(&self, name: &str, config: BTreeMap<String, serde_json::Value>) -> StartRequest {
        let alloc_id = orch_common::ids::AllocId::generate();
        StartRequest {
            id: format!("{alloc_id}/{name}"),
            alloc_id,
            task_name: name.to_string(),
            config,
            env: BTreeMap::new(),
            user: None,
            task_dir: self.task_dir.clone(),
            stdout_path: self.stdout.clone(),
            stderr_path: self.stderr.clone(),
            logs: Default::default(),
            cgroup: None,
            resources: Default::default(),
            ports: Vec::new(),
        }
    }
}

/// A real cgroup for one test, killed and removed on drop. `None` (with the reason
/// printed) when not root or the host has no usable cgroups.
pub(crate) struct TestCgroup {
    pub m: Arc<dyn CgroupManager>,
    pub cg: CgroupPaths,
}

impl TestCgroup {
    pub fn new(memory_mib: u64) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: cgroups need root");
            return None;
        }
        let m = match cgroups::detect_manager(
            std::path::Path::new("/proc/mounts"),
            std::path::Path::new("/sys/fs/cgroup"),
        ) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        let limits = CgroupLimits::basic(memory_mib, 100, 64);
        let name = format!("test-{}-task", uuid::Uuid::new_v4());
        let cg = m.create(&name, &limits).unwrap();
        Some(TestCgroup { m, cg })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.m.kill_all(&self.cg);
        let _ = self.m.remove(&self.cg);
    }
}

/// Expands the shared driver scenarios as tests for `$harness`.
macro_rules! driver_suite {
    ($harness:expr) => {
        mod shared_suite {
            use super::*;
            use crate::driver::suite::TaskDirs;
            use std::time::Duration;

            fn harness() -> impl crate::driver::suite::Harness {
                $harness
            }

            macro_rules! skip_unless_supported {
                ($h:expr) => {
                    if let Some(why) = crate::driver::suite::Harness::skip(&$h) {
                        eprintln!("skipped: {why}");
                        return;
                    }
                };
            }

            #[tokio::test]
            async fn exit_zero_is_successful() {
                let h = harness();
                skip_unless_supported!(h);
                let d = h.driver();
                let t = TaskDirs::new();
                let handle = d.start(t.request("ok", h.exits_with(0))).await.unwrap();
                let r = d.wait(&handle).await.unwrap();
                assert!(r.successful(), "{r:?}");
                d.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn exit_code_3_is_classified() {
                let h = harness();
                skip_unless_supported!(h);
                let d = h.driver();
                let t = TaskDirs::new();
                let handle = d.start(t.request("three", h.exits_with(3))).await.unwrap();
                let r = d.wait(&handle).await.unwrap();
                assert_eq!((r.exit_code, r.signal, r.oom_killed), (3, None, false));
                assert_eq!(r.describe(), "Exit Code: 3");
                d.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn stop_delivers_the_signal() {
                let h = harness();
                skip_unless_supported!(h);
                let d = h.driver();
                let t = TaskDirs::new();
                let handle = d
                    .start(t.request("long", h.runs_until_stopped()))
                    .await
                    .unwrap();
                d.stop(
                    &handle,
                    nix::sys::signal::Signal::SIGTERM,
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
                let r = d.wait(&handle).await.unwrap();
                assert_eq!(r.signal, Some(15), "{r:?}");
                d.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn stop_force_kills_after_the_timeout() {
                let h = harness();
                skip_unless_supported!(h);
                let d = h.driver();
                let t = TaskDirs::new();
                let handle = d
                    .start(t.request("stubborn", h.ignores_stop_signal()))
                    .await
                    .unwrap();
                // Give a shell time to install its trap.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let started = std::time::Instant::now();
                d.stop(
                    &handle,
                    nix::sys::signal::Signal::SIGTERM,
                    Duration::from_millis(500),
                )
                .await
                .unwrap();
                assert!(started.elapsed() >= Duration::from_millis(450));
                let r = d.wait(&handle).await.unwrap();
                assert_eq!(r.signal, Some(9), "{r:?}");
                d.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn destroy_is_idempotent_and_forgets_the_task() {
                let h = harness();
                skip_unless_supported!(h);
                let d = h.driver();
                let t = TaskDirs::new();
                let handle = d
                    .start(t.request("gone", h.runs_until_stopped()))
                    .await
                    .unwrap();
                d.destroy(&handle).await.unwrap();
                d.destroy(&handle).await.unwrap();
                assert!(d.wait(&handle).await.is_err());
                assert_eq!(d.stats(&handle).await.unwrap().pids, 0);
            }

            #[tokio::test]
            async fn the_handle_round_trips_through_json() {
                let h = harness();
                skip_unless_supported!(h);
                let d = h.driver();
                let t = TaskDirs::new();
                let handle = d.start(t.request("json", h.exits_with(0))).await.unwrap();
                assert_eq!(handle.driver, d.name());
                let text = serde_json::to_string(&handle).unwrap();
                let back: crate::driver::TaskHandle = serde_json::from_str(&text).unwrap();
                assert_eq!(back, handle);
                d.wait(&handle).await.unwrap();
                d.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn recover_re_attaches_to_a_running_task() {
                let h = harness();
                skip_unless_supported!(h);
                let before = h.driver();
                let t = TaskDirs::new();
                let handle = before
                    .start(t.request("again", h.runs_until_stopped()))
                    .await
                    .unwrap();
                let handle: crate::driver::TaskHandle =
                    serde_json::from_str(&serde_json::to_string(&handle).unwrap()).unwrap();
                let after = h.driver_after_restart(&before);
                after.recover(&handle).await.unwrap();
                after
                    .stop(
                        &handle,
                        nix::sys::signal::Signal::SIGTERM,
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                let r = after.wait(&handle).await.unwrap();
                assert_eq!(r.signal, Some(15), "{r:?}");
                after.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn recover_reports_the_real_exit_of_a_task_that_ended() {
                let h = harness();
                skip_unless_supported!(h);
                let before = h.driver();
                let t = TaskDirs::new();
                let handle = before
                    .start(t.request("ended", h.exits_with(7)))
                    .await
                    .unwrap();
                // It ends "while no client runs".
                assert_eq!(before.wait(&handle).await.unwrap().exit_code, 7);
                let after = h.driver_after_restart(&before);
                after.recover(&handle).await.unwrap();
                let r = after.wait(&handle).await.unwrap();
                assert_eq!((r.exit_code, r.signal), (7, None), "{r:?}");
                after.destroy(&handle).await.unwrap();
            }

            #[tokio::test]
            async fn fingerprint_says_detected_and_healthy() {
                let h = harness();
                skip_unless_supported!(h);
                let info = h.driver().fingerprint();
                assert!(info.detected && info.healthy);
            }
        }
    };
}

pub(crate) use driver_suite;
