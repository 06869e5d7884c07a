//! `Snapshot`: a consistent point-in-time view of the state for the scheduler. It holds
//! a pooled read connection inside an open read transaction; WAL gives that transaction
//! snapshot isolation, so later commits are invisible to it. Taking one costs a pool pop
//! and one query; rows are decoded on demand (nodes once, then cached).

use std::sync::{Mutex, OnceLock};

use orch_common::structs::{Allocation, Evaluation, Job, Node, SchedulerConfiguration};
use rusqlite::Connection;

use super::{read, PooledConn, SqlContext, StateError};
use crate::scheduler::State;

/// A read-only view of the state at `index()`. `Send + Sync + 'static`.
pub struct Snapshot {
    /// The mutex only makes the connection shareable; reads never block each other
    /// for long (one query at a time, no await while held).
    conn: Mutex<PooledConn>,
    index: u64,
    nodes: OnceLock<Vec<Node>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("index", &self.index)
            .finish()
    }
}

impl Snapshot {
    /// Starts the read transaction and pins it with a first read.
    pub(crate) fn begin(conn: PooledConn) -> Result<Snapshot, StateError> {
        conn.execute_batch("BEGIN DEFERRED")
            .ctx(|| "starting a snapshot transaction".to_string())?;
        let index = read::last_index(&conn)?;
        Ok(Snapshot {
            conn: Mutex::new(conn),
            index,
            nodes: OnceLock::new(),
        })
    }

    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> Result<T, StateError>,
    ) -> Option<T> {
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        match f(&conn) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, index = self.index, "snapshot read of {what} failed");
                None
            }
        }
    }

    /// Like the `State` reads, but reporting errors.
    pub fn try_job(&self, id: &str) -> Result<Option<Job>, StateError> {
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        read::job(&conn, id)
    }

    pub fn try_nodes(&self) -> Result<Vec<Node>, StateError> {
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        read::nodes(&conn)
    }

    pub fn eval(&self, id: &str) -> Option<Evaluation> {
        self.with("an evaluation", |c| read::eval(c, id)).flatten()
    }

    pub fn evals_by_job(&self, job_id: &str) -> Vec<Evaluation> {
        self.with("evaluations", |c| read::evals_by_job(c, job_id))
            .unwrap_or_default()
    }

    pub fn alloc(&self, id: &str) -> Option<Allocation> {
        self.with("an allocation", |c| read::alloc(c, id)).flatten()
    }

    /// A job version as stored (what allocations at that version run).
    pub fn job_version(&self, id: &str, version: u64) -> Option<Job> {
        self.with("a job version", |c| read::job_version(c, id, version))
            .flatten()
    }
}

impl State for Snapshot {
    fn index(&self) -> u64 {
        self.index
    }

    fn job(&self, id: &str) -> Option<Job> {
        self.with("a job", |c| read::job(c, id)).flatten()
    }

    fn nodes(&self) -> Vec<Node> {
        if let Some(nodes) = self.nodes.get() {
            return nodes.clone();
        }
        match self.with("nodes", read::nodes) {
            Some(nodes) => self.nodes.get_or_init(|| nodes).clone(),
            None => Vec::new(),
        }
    }

    fn node(&self, id: &str) -> Option<Node> {
        if let Some(nodes) = self.nodes.get() {
            return nodes.iter().find(|n| n.id == id).cloned();
        }
        self.with("a node", |c| read::node(c, id)).flatten()
    }

    fn allocs_by_job(&self, job_id: &str) -> Vec<Allocation> {
        self.with("allocations", |c| read::allocs_by_job(c, job_id))
            .unwrap_or_default()
    }

    fn allocs_by_node(&self, node_id: &str) -> Vec<Allocation> {
        self.with("allocations", |c| read::allocs_by_node(c, node_id, true))
            .unwrap_or_default()
    }

    fn job_version(&self, id: &str, version: u64) -> Option<Job> {
        Snapshot::job_version(self, id, version)
    }

    fn blocked_eval(&self, job_id: &str) -> Option<Evaluation> {
        self.with("a blocked evaluation", |c| read::blocked_eval(c, job_id))
            .flatten()
    }

    fn scheduler_config(&self) -> SchedulerConfiguration {
        self.with("the scheduler configuration", read::scheduler_config)
            .unwrap_or_default()
    }
}
