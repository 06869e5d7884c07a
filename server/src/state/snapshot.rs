//! `Snapshot`: a consistent point-in-time view of the state for the scheduler. It holds
//! a pooled read connection inside an open read transaction; WAL gives that transaction
//! snapshot isolation, so later commits are invisible to it. With it goes a copy of the
//! store's in-memory mirror taken at the same index: per-node allocation sums, and the
//! decoded node list (shared by every snapshot until a node changes). Taking one costs
//! a pool pop, one query and a few `Arc` clones; other rows are decoded on demand.

use std::sync::{Arc, Mutex, OnceLock};

use orch_common::ids::JobId;
use orch_common::model::{
    Allocation, Deployment, Evaluation, Job, Node, NodeAllocated, SchedulerConfiguration,
};
use rusqlite::Connection;

use super::alloc_index::AllocIndex;
use super::error::{SqlContext, StateError};
use super::mirror::{Mirror, SharedMirror};
use super::pool::PooledConn;
use super::read;

/// A read-only view of the state at `index()`. `Send + Sync + 'static`.
pub struct Snapshot {
    /// The mutex only makes the connection shareable; reads never block each other
    /// for long (one query at a time, no await while held).
    conn: Arc<Mutex<PooledConn>>,
    index: u64,
    mirror: Mirror,
    /// The store's mirror, to give it the node list this snapshot decodes.
    shared_mirror: SharedMirror,
    /// The store's index of allocation rows (by id and by node).
    rows: Arc<AllocIndex>,
    nodes: OnceLock<Arc<Vec<Node>>>,
    /// The last job whose allocations were read: the scheduler reads them more than
    /// once per evaluation (reconcile, then node usage), and decoding dominates.
    job_allocs: Mutex<Option<(JobId, Arc<Vec<Allocation>>)>>,
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
    /// Must be called with the mirror's read lock held (see `StateStore::snapshot`).
    pub(crate) fn begin(
        conn: PooledConn,
        mirror: Mirror,
        shared_mirror: SharedMirror,
        rows: Arc<AllocIndex>,
    ) -> Result<Snapshot, StateError> {
        conn.execute_batch("BEGIN DEFERRED")
            .ctx(|| "starting a snapshot transaction".to_string())?;
        let index = read::last_index(&conn)?;
        let nodes = OnceLock::new();
        if let Some(shared) = &mirror.nodes {
            let _ = nodes.set(shared.clone());
        }
        Ok(Snapshot {
            conn: Arc::new(Mutex::new(conn)),
            index,
            mirror,
            shared_mirror,
            rows,
            nodes,
            job_allocs: Mutex::new(None),
        })
    }

    /// Every node sorted by id, decoded once and shared with later snapshots while
    /// the nodes do not change.
    fn shared_node_list(&self) -> Arc<Vec<Node>> {
        if let Some(nodes) = self.nodes.get() {
            return nodes.clone();
        }
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        match read::nodes(&conn) {
            Ok(nodes) => {
                let nodes = self.nodes.get_or_init(|| Arc::new(nodes)).clone();
                self.shared_mirror
                    .write()
                    .expect("state mirror lock poisoned")
                    .offer_nodes(self.mirror.nodes_index, &nodes);
                nodes
            }
            Err(e) => {
                tracing::error!(error = %e, index = self.index, "snapshot read of nodes failed");
                Arc::new(Vec::new())
            }
        }
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

    /// A handle that ends this snapshot's read transaction early (see
    /// `SnapshotRelease::release`).
    pub fn release_handle(&self) -> SnapshotRelease {
        SnapshotRelease(self.conn.clone())
    }

    /// Like the `State` reads, but reporting errors.
    pub fn try_job(&self, id: &str) -> Result<Option<Job>, StateError> {
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        read::job(&conn, id)
    }

    pub fn try_alloc(&self, id: &str) -> Result<Option<Allocation>, StateError> {
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        match self.rows.get(id) {
            // The index is the store's newest: after a snapshot install it may name
            // rows of the new contents, which this older transaction does not hold.
            Some(seq) => Ok(read::alloc_at(&conn, seq)?.filter(|a| a.id.as_str() == id)),
            None => Ok(None),
        }
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
        match self.try_alloc(id) {
            Ok(alloc) => alloc,
            Err(e) => {
                tracing::error!(error = %e, index = self.index, "snapshot read of an allocation failed");
                None
            }
        }
    }

    /// A job version as stored (what allocations at that version run).
    pub fn job_version(&self, id: &str, version: u64) -> Option<Job> {
        self.with("a job version", |c| read::job_version(c, id, version))
            .flatten()
    }
}

/// Ends a snapshot's read transaction before the snapshot is dropped. A worker does
/// once its plan is with the applier: the scheduler reads nothing more from it then,
/// and a read transaction held while plans commit keeps SQLite from restarting the WAL
/// (which then grows without bound under steady load). Reads through the snapshot
/// afterwards see the newest state.
pub struct SnapshotRelease(Arc<Mutex<PooledConn>>);

impl SnapshotRelease {
    pub fn release(&self) {
        let conn = self.0.lock().expect("snapshot connection mutex poisoned");
        if !conn.is_autocommit() {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "ending a snapshot's read transaction");
            }
        }
    }
}

/// The reads the scheduler makes (`scheduler::State`, implemented in
/// `crate::scheduler_state`).
impl Snapshot {
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn job(&self, id: &str) -> Option<Job> {
        self.with("a job", |c| read::job(c, id)).flatten()
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.shared_node_list().as_ref().clone()
    }

    pub fn node(&self, id: &str) -> Option<Node> {
        if let Some(nodes) = self.nodes.get() {
            return nodes
                .binary_search_by(|n| n.id.as_str().cmp(id))
                .ok()
                .map(|i| nodes[i].clone());
        }
        self.with("a node", |c| read::node(c, id)).flatten()
    }

    pub fn shared_nodes(&self) -> Arc<Vec<Node>> {
        self.shared_node_list()
    }

    pub fn node_allocated(&self, node_id: &str) -> NodeAllocated {
        self.mirror.node_allocated(node_id)
    }

    pub fn allocs_by_job(&self, job_id: &str) -> Vec<Allocation> {
        let mut memo = self
            .job_allocs
            .lock()
            .expect("snapshot allocation memo poisoned");
        if let Some((id, allocs)) = memo.as_ref() {
            if id == job_id {
                return allocs.as_ref().clone();
            }
        }
        let Some(allocs) = self.with("allocations", |c| read::allocs_by_job(c, job_id)) else {
            return Vec::new();
        };
        let allocs = Arc::new(allocs);
        *memo = Some((JobId::from(job_id), allocs.clone()));
        allocs.as_ref().clone()
    }

    /// The node's allocations live on their client as of this snapshot. The rows are
    /// listed as of now: those committed after this snapshot are not found, and the
    /// status filter is on the rows this snapshot sees.
    pub fn allocs_by_node(&self, node_id: &str) -> Vec<Allocation> {
        let conn = self
            .conn
            .lock()
            .expect("snapshot connection mutex poisoned");
        let rows = self.rows.node_rows(node_id);
        match read::allocs_at(&conn, rows.iter().map(|r| r.seq)) {
            Ok(mut allocs) => {
                // (`node_id`: after a snapshot install the rows listed may be of
                // the new contents, which this older transaction does not hold.)
                allocs.retain(|a| !a.client_status.is_terminal() && a.node_id.as_str() == node_id);
                allocs
            }
            Err(e) => {
                tracing::error!(error = %e, index = self.index, "snapshot read of allocations failed");
                Vec::new()
            }
        }
    }

    pub fn blocked_eval(&self, job_id: &str) -> Option<Evaluation> {
        self.with("a blocked evaluation", |c| read::blocked_eval(c, job_id))
            .flatten()
    }

    pub fn scheduler_config(&self) -> SchedulerConfiguration {
        self.with("the scheduler configuration", read::scheduler_config)
            .unwrap_or_default()
    }

    pub fn latest_deployment(&self, job_id: &str) -> Option<Deployment> {
        self.with("the job's deployment", |c| {
            read::latest_deployment(c, job_id)
        })
        .flatten()
    }
}
