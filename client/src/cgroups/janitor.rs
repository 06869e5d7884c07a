//! Removes the cgroups of tasks that are done, on one thread of its own at a lower
//! cpu priority (nice 10). Removing a cgroup v1 task's directories is some of the
//! most costly kernel work a task start and exit bring (every controller's files go,
//! under the kernel's one cgroup lock); in a burst of short tasks, running it beside
//! the next tasks' starts at the same priority slowed them all. Callers still wait for
//! their removal: it is only ordered behind more urgent work, never skipped.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{CgroupError, CgroupManager, CgroupPaths};

/// The nice value of the janitor thread: it yields to the client's other threads and
/// to tasks at the default priority, but is never starved (unlike SCHED_IDLE).
const JANITOR_NICE: libc::c_int = 10;

type Job = (
    Arc<dyn CgroupManager>,
    CgroupPaths,
    oneshot::Sender<Result<(), CgroupError>>,
);

/// The queue of removals; its thread starts with the first one and ends with it.
#[derive(Default)]
pub struct Janitor {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Janitor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes `cg` (with `CgroupManager::remove`) on the janitor thread and returns
    /// its result. Falls back to removing it here when the thread cannot start.
    pub async fn remove(
        &self,
        manager: Arc<dyn CgroupManager>,
        cg: CgroupPaths,
    ) -> Result<(), CgroupError> {
        let (tx, rx) = oneshot::channel();
        let job = match self.sender() {
            Some(queue) => match queue.send((manager, cg, tx)) {
                Ok(()) => return rx.await.unwrap_or(Ok(())),
                Err(mpsc::SendError(job)) => job,
            },
            None => (manager, cg, tx),
        };
        let (manager, cg, _) = job;
        tokio::task::spawn_blocking(move || manager.remove(&cg))
            .await
            .unwrap_or(Ok(()))
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        let mut queue = self.queue.lock().expect("janitor queue poisoned");
        if queue.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("orch-cgroup-gc".to_string())
                .spawn(move || {
                    // SAFETY: setpriority on this thread (Linux: a tid names a thread).
                    unsafe {
                        libc::setpriority(
                            libc::PRIO_PROCESS,
                            libc::gettid() as libc::id_t,
                            JANITOR_NICE,
                        );
                    }
                    for (manager, cg, done) in rx {
                        let _ = done.send(manager.remove(&cg));
                    }
                });
            match started {
                Ok(_) => *queue = Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "starting the cgroup janitor thread; removing cgroups inline");
                    return None;
                }
            }
        }
        queue.clone()
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has done what was sent.
        self.queue.lock().map(|mut q| q.take()).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{CgroupVersion, V1Manager};
    use std::collections::BTreeMap;

    fn paths(dirs: &[std::path::PathBuf]) -> CgroupPaths {
        CgroupPaths {
            version: CgroupVersion::V1,
            name: "a1-web".into(),
            dirs: dirs
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("c{i}"), d.clone()))
                .collect(),
            joined: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn removals_happen_on_the_janitor_thread_and_report_their_result() {
        let root = tempfile::tempdir().unwrap();
        let manager: Arc<dyn CgroupManager> = Arc::new(V1Manager::new(root.path()));
        let janitor = Janitor::new();
        let dirs: Vec<_> = ["memory", "pids"]
            .iter()
            .map(|c| root.path().join(c).join("orch/a1-web"))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        janitor.remove(manager.clone(), paths(&dirs)).await.unwrap();
        assert!(dirs.iter().all(|d| !d.exists()));
        // A directory that cannot go (here: not empty) is an error naming it.
        let busy = root.path().join("cpu/orch/a1-web");
        std::fs::create_dir_all(busy.join("child")).unwrap();
        let err = janitor
            .remove(manager, paths(std::slice::from_ref(&busy)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a1-web"), "{err}");
    }

    /// The nice value of this process's `orch-cgroup-gc` thread, if there is one.
    fn janitor_nice() -> Option<i32> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find_map(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                if comm.trim() != "orch-cgroup-gc" {
                    return None;
                }
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                // Fields after the comm (which may hold spaces); the nice value is field 19.
                let after = &stat[stat.rfind(')')? + 2..];
                after.split_whitespace().nth(16)?.parse().ok()
            })
    }

    #[test]
    fn the_janitor_thread_runs_at_a_lower_priority() {
        let janitor = Janitor::new();
        assert!(janitor.sender().is_some(), "the thread starts");
        // It sets its nice value first thing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while janitor_nice() != Some(JANITOR_NICE) {
            assert!(
                std::time::Instant::now() < deadline,
                "nice is {:?}",
                janitor_nice()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
