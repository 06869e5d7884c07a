//! Per-task resource usage: the `UsageBoard` keeps, for every task a task runner started,
//! its cgroup and the last sample of it (memory current/peak, cpu time, throttling,
//! pids). Task runners sample every `SAMPLE_INTERVAL` and once more just before the
//! cgroup is removed, so a task that died (an OOM kill, say) still shows its final
//! numbers; `GET /v1/client/allocation/{id}/stats` samples running tasks afresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_common::api::{AllocResourceUsage, MemoryStats, TaskResourceUsage};
use orch_common::ids::{now_ms, AllocId};

use crate::cgroups::{CgroupLimits, CgroupManager, CgroupPaths};

/// How often a running task's cgroup is read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// A task's cgroup, for sampling.
#[derive(Clone)]
struct Source {
    manager: Arc<dyn CgroupManager>,
    cgroup: CgroupPaths,
}

struct Entry {
    source: Option<Source>,
    last: TaskResourceUsage,
}

/// Usage of every task on this client, by allocation id then task name. Cheap to clone.
#[derive(Clone, Default)]
pub struct UsageBoard {
    /// std Mutex: never held across cgroup file I/O or an `.await`.
    inner: Arc<Mutex<HashMap<AllocId, BTreeMap<String, Entry>>>>,
}

impl UsageBoard {
    /// Starts tracking a task that now runs in `cgroup` (or without one: then only
    /// `running` is known).
    pub fn track(
        &self,
        alloc: &str,
        task: &str,
        source: Option<(Arc<dyn CgroupManager>, CgroupPaths)>,
        limits: Option<&CgroupLimits>,
    ) {
        let source = source.map(|(manager, cgroup)| Source { manager, cgroup });
        let last = TaskResourceUsage {
            sampled_at: now_ms(),
            running: true,
            memory_limit_bytes: limits.map(|l| l.memory_hard_bytes()),
            pids_limit: limits.map(|l| l.pids_max),
            cpuset: source.as_ref().and_then(|s| s.manager.cpuset(&s.cgroup)),
            ..Default::default()
        };
        self.lock()
            .entry(AllocId::from(alloc))
            .or_default()
            .insert(task.to_string(), Entry { source, last });
    }

    /// Reads the task's cgroup now (blocking file I/O) and stores the sample.
    pub fn sample(&self, alloc: &str, task: &str) {
        let source = self
            .lock()
            .get(alloc)
            .and_then(|t| t.get(task))
            .and_then(|e| e.source.clone());
        let Some(src) = source else { return };
        let stats = match src.manager.stats(&src.cgroup) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(alloc, task, error = %e, "sampling the task's cgroup");
                return;
            }
        };
        if let Some(e) = self.lock().get_mut(alloc).and_then(|t| t.get_mut(task)) {
            e.last.sampled_at = now_ms();
            e.last.memory = Some(MemoryStats {
                current_bytes: stats.memory.current_bytes,
                peak_bytes: stats.memory.peak_bytes,
            });
            e.last.cpu = Some(stats.cpu);
            e.last.pids = stats.pids;
        }
    }

    /// Takes a last sample (the cgroup must still exist) and marks the task stopped;
    /// its numbers stay until the allocation is forgotten.
    pub fn finish(&self, alloc: &str, task: &str) {
        self.sample(alloc, task);
        if let Some(e) = self.lock().get_mut(alloc).and_then(|t| t.get_mut(task)) {
            e.source = None;
            e.last.running = false;
            e.last.pids = 0;
            if let Some(m) = &mut e.last.memory {
                m.current_bytes = 0;
            }
        }
    }

    /// The allocation's usage; with `fresh`, running tasks are sampled first (blocking).
    pub fn snapshot(&self, alloc: &str, fresh: bool) -> AllocResourceUsage {
        if fresh {
            let tasks: Vec<String> = self
                .lock()
                .get(alloc)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for t in tasks {
                self.sample(alloc, &t);
            }
        }
        AllocResourceUsage {
            alloc_id: AllocId::from(alloc),
            tasks: self
                .lock()
                .get(alloc)
                .map(|t| t.iter().map(|(k, e)| (k.clone(), e.last.clone())).collect())
                .unwrap_or_default(),
        }
    }

    /// Drops an allocation that this client no longer runs.
    pub fn forget(&self, alloc: &str) {
        self.lock().remove(alloc);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AllocId, BTreeMap<String, Entry>>> {
        self.inner.lock().expect("usage board poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::V2Manager;

    /// A v2 task cgroup as files in a temp dir.
    fn fixture() -> (tempfile::TempDir, Arc<dyn CgroupManager>, CgroupPaths) {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("orch.slice/a1-web");
        std::fs::create_dir_all(&leaf).unwrap();
        for (f, text) in [
            ("memory.current", "1048576\n"),
            ("memory.peak", "2097152\n"),
            ("memory.events", "oom_kill 0\n"),
            ("cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\n"),
            ("pids.current", "2\n"),
        ] {
            std::fs::write(leaf.join(f), text).unwrap();
        }
        let cg = CgroupPaths {
            version: crate::cgroups::CgroupVersion::V2,
            name: "a1-web".into(),
            dirs: BTreeMap::from([("unified".to_string(), leaf)]),
            joined: BTreeMap::new(),
        };
        (dir, Arc::new(V2Manager::new(dir_path(&cg))), cg)
    }

    fn dir_path(cg: &CgroupPaths) -> std::path::PathBuf {
        cg.dirs["unified"]
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn samples_are_kept_after_the_task_finishes() {
        let (_dir, m, cg) = fixture();
        let board = UsageBoard::default();
        let limits = CgroupLimits::basic(64, 100, 1024);
        board.track("a1", "web", Some((m, cg)), Some(&limits));
        let s = board.snapshot("a1", true);
        let web = &s.tasks["web"];
        assert!(web.running);
        assert_eq!(web.memory.unwrap().current_bytes, 1 << 20);
        assert_eq!(web.memory.unwrap().peak_bytes, Some(2 << 20));
        assert_eq!(web.cpu.unwrap().user_ns, Some(6000));
        assert_eq!(web.pids, 2);
        assert_eq!(web.memory_limit_bytes, Some(64 << 20));
        board.finish("a1", "web");
        let after = board.snapshot("a1", true);
        let web = &after.tasks["web"];
        assert!(!web.running);
        assert_eq!(web.memory.unwrap().peak_bytes, Some(2 << 20), "peak kept");
        assert_eq!(web.pids, 0);
        board.forget("a1");
        assert!(board.snapshot("a1", false).tasks.is_empty());
    }
}
