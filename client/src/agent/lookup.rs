//! Finding this client's allocations and tasks for the client's HTTP routes: an
//! `AllocLookup` sees the runner table, the alloc dirs on disk, the task handles and
//! drivers, and the usage board, and nothing else of the agent. `AllocRef` is an
//! allocation found by id prefix; `LookupError` says why none was.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::allocdir::AllocDir;
use crate::allocrunner::AllocRunnerHandle;
use crate::driver::{Driver, DriverSet, TaskHandle};
use crate::state::HandleStore;
use crate::usage::UsageBoard;
use orch_common::ids::AllocId;

/// Alloc id -> runner, shared by the agent's loops and its lookups. A std mutex:
/// never held across an await.
pub(crate) type RunnerTable = Arc<Mutex<HashMap<AllocId, AllocRunnerHandle>>>;

/// What the client's HTTP routes see of the agent.
#[derive(Clone)]
pub(crate) struct AllocLookup {
    alloc_root: PathBuf,
    runners: RunnerTable,
    drivers: Arc<DriverSet>,
    handles: Option<HandleStore>,
    usage: UsageBoard,
}

impl AllocLookup {
    pub(crate) fn new(
        alloc_root: PathBuf,
        runners: RunnerTable,
        drivers: Arc<DriverSet>,
        handles: Option<HandleStore>,
        usage: UsageBoard,
    ) -> Self {
        AllocLookup {
            alloc_root,
            runners,
            drivers,
            handles,
            usage,
        }
    }

    /// The runner table, locked (not to be held across an await).
    pub(crate) fn runners(&self) -> MutexGuard<'_, HashMap<AllocId, AllocRunnerHandle>> {
        self.runners.lock().expect("runner table poisoned")
    }

    /// Where the task runners leave their tasks' resource usage.
    pub(crate) fn usage(&self) -> &UsageBoard {
        &self.usage
    }

    /// The driver and handle of a running task, for `exec`.
    pub(crate) fn running_task(
        &self,
        alloc_id: &str,
        task: &str,
    ) -> Result<(Arc<dyn Driver>, TaskHandle), String> {
        let handles = self
            .handles
            .as_ref()
            .ok_or_else(|| "this client keeps no task handles".to_string())?;
        let handle = handles
            .load(alloc_id, task)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("task {task:?} of allocation {alloc_id} is not running"))?;
        let driver = self
            .drivers
            .get(&handle.driver)
            .cloned()
            .ok_or_else(|| format!("driver {:?} is not available", handle.driver))?;
        Ok((driver, handle))
    }

    /// Finds an allocation by id or unique id prefix among the running ones and those
    /// with a directory on disk.
    pub(crate) fn find_alloc(&self, prefix: &str) -> Result<AllocRef, LookupError> {
        let mut ids: HashSet<AllocId> = self
            .runners
            .lock()
            .expect("runner table poisoned")
            .keys()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect();
        if let Ok(rd) = std::fs::read_dir(&self.alloc_root) {
            for e in rd.flatten() {
                if let Ok(name) = e.file_name().into_string() {
                    if name.starts_with(prefix) && e.path().is_dir() {
                        ids.insert(AllocId::from(name));
                    }
                }
            }
        }
        let mut ids: Vec<AllocId> = ids.into_iter().collect();
        ids.sort();
        match ids.len() {
            0 => Err(LookupError::NotFound(prefix.to_string())),
            1 => {
                let id = ids.remove(0);
                let runners = self.runners.lock().expect("runner table poisoned");
                let (tasks, status) = match runners.get(&id) {
                    Some(r) => (r.tasks.clone(), Some(r.watch())),
                    None => (AllocDir::new(&self.alloc_root, &id).task_names(), None),
                };
                Ok(AllocRef {
                    dir: AllocDir::new(&self.alloc_root, &id),
                    id,
                    tasks,
                    status,
                })
            }
            _ => Err(LookupError::Ambiguous(prefix.to_string(), ids)),
        }
    }
}

/// An allocation found by `find_alloc`.
pub(crate) struct AllocRef {
    pub id: AllocId,
    pub dir: AllocDir,
    pub tasks: Vec<String>,
    /// Live status when a runner exists (none: the allocation is finished).
    pub status: Option<watch::Receiver<orch_common::api::AllocClientUpdate>>,
}

impl AllocRef {
    /// True when `task` will write no more output.
    pub fn task_dead(&self, task: &str) -> bool {
        match &self.status {
            None => true,
            Some(rx) => {
                let s = rx.borrow();
                s.client_status.is_terminal()
                    || s.task_states
                        .get(task)
                        .map(|t| t.state == orch_common::model::TaskStateKind::Dead)
                        .unwrap_or(false)
            }
        }
    }
}

/// Why an id prefix names no single allocation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("no allocation with id prefix {0:?} on this client")]
    NotFound(String),
    #[error("id prefix {0:?} matches several allocations")]
    Ambiguous(String, Vec<AllocId>),
}
