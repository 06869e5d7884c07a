//! `StateStore`: opening the database (schema migration, the mirror rebuilt from the
//! rows), the per-table watch channels blocking queries wait on, the placements held
//! in flight, snapshots, and every read, each on a pooled connection. Writes are
//! `StateStore::apply` (`apply.rs`), called only by the command log's writer thread.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use orch_common::ids::{AllocId, NodeId};
use orch_common::model::{
    AclPolicy, AclToken, Allocation, Deployment, Evaluation, Job, Node, NodeAllocated,
    SchedulerConfiguration,
};
use rusqlite::Connection;
use tokio::sync::watch;

use super::alloc_index::{AllocIndex, NodeRow};
use super::command::Command;
use super::error::{SqlContext, StateError};
use super::mirror::{InFlight, Mirror, SharedMirror};
use super::pool::{open_connection, private_files, PooledConn, ReaderPool};
use super::read::{self, GroupStatusCount};
use super::snapshot::Snapshot;
use super::table::{Table, ACL_BOOTSTRAP_INDEX, ALLOC_GC_INDEX};
use super::views::{self, CatalogView, GcView};
use super::{schema, wal};

/// The writer connection's page cache, in KiB (SQLite allocates it as pages are used).
const WRITER_CACHE_KIB: i64 = 128 * 1024;

/// The state store. Cheap to clone (an `Arc` inside); every clone is the same store.
#[derive(Clone)]
pub struct StateStore {
    pub(super) inner: Arc<Inner>,
}

/// What every clone of the store shares. `apply` (`apply.rs`) writes through it.
pub(super) struct Inner {
    pub(super) path: PathBuf,
    /// The one write connection (only `apply` uses it) and its WAL checkpointer.
    pub(super) writer: Mutex<(Connection, wal::Checkpointer)>,
    /// Idle read connections.
    pub(super) readers: Arc<ReaderPool>,
    /// Last index that touched each table, by `Table::slot`.
    pub(super) tables: [watch::Sender<u64>; 5],
    /// Last applied index (any command).
    pub(super) last: watch::Sender<u64>,
    pub(super) last_index: AtomicU64,
    /// The index of the last command that deleted allocations (`ALLOC_GC_INDEX` in
    /// the `indexes` table); clients watch it to remove collected allocation dirs.
    pub(super) alloc_gc_index: AtomicU64,
    /// The index of the last ACL command applied (policies, tokens, the bootstrap);
    /// what a cached token lookup was valid for. The store's last index at open.
    pub(super) acl_index: AtomicU64,
    /// Set by `release_waiters`: blocking queries return at once (shutdown).
    pub(super) closing: watch::Sender<bool>,
    /// What the scheduler reads hottest, kept in memory in step with SQLite; shared
    /// with snapshots, which give back the node list they decode.
    pub(super) mirror: SharedMirror,
    /// Where each allocation's row is (by id and by node); changed under the mirror's
    /// write lock with each commit. Shared with snapshots, which look rows up in it.
    pub(super) alloc_index: Arc<AllocIndex>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.inner.path)
            .field("last_index", &self.last_index())
            .finish()
    }
}

/// What the store keeps in memory, read from its rows: on open, and again when a
/// snapshot is installed.
pub(super) struct Loaded {
    /// The `indexes` table: last index per table name.
    pub indexes: BTreeMap<String, u64>,
    pub alloc_index: AllocIndex,
    /// Node id -> what its allocations that hold resources use (the mirror's sums).
    pub usage: HashMap<NodeId, Arc<NodeAllocated>>,
}

/// Reads what the store keeps in memory from the database behind `conn`.
pub(super) fn load_memory(conn: &Connection) -> Result<Loaded, StateError> {
    let indexes = read::table_indexes(conn)?;
    let mut sums: HashMap<NodeId, NodeAllocated> = HashMap::new();
    let alloc_index = AllocIndex::load(conn, |id, node_id, json| {
        let part = read::usage_part(id, json)?;
        match sums.get_mut(node_id) {
            Some(sum) => sum.add_part(&part),
            None => {
                sums.insert(NodeId::from(node_id), part);
            }
        }
        Ok(())
    })?;
    Ok(Loaded {
        indexes,
        alloc_index,
        usage: sums.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
    })
}

impl StateStore {
    /// Opens (creating if needed) the database at `path`, migrating its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<StateStore, StateError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_files(dir, &path).map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut writer = open_connection(&path)?;
        schema::migrate(&mut writer)?;
        let writer_pragmas = || -> Result<(), rusqlite::Error> {
            // The writer's page cache holds the hot index pages between commits (the
            // default 2 MiB made it re-read and spill them at a million allocations).
            writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        };
        writer_pragmas().map_err(|source| StateError::Open {
            path: path.clone(),
            source,
        })?;
        let checkpointer =
            wal::Checkpointer::start(&writer, path.clone()).map_err(|reason| StateError::Open {
                path: path.clone(),
                source: rusqlite::Error::InvalidParameterName(reason),
            })?;
        let Loaded {
            indexes,
            alloc_index,
            usage,
        } = load_memory(&writer)?;
        let mirror = Mirror {
            usage: Arc::new(usage),
            nodes: None,
            nodes_index: indexes.get(Table::Nodes.name()).copied().unwrap_or(0),
            in_flight: Arc::default(),
        };
        let last = indexes.values().copied().max().unwrap_or(0);
        let table_sender =
            |t: Table| watch::Sender::new(indexes.get(t.name()).copied().unwrap_or(0));
        let inner = Inner {
            readers: Arc::new(ReaderPool::new(path.clone())),
            path,
            writer: Mutex::new((writer, checkpointer)),
            tables: [
                table_sender(Table::Jobs),
                table_sender(Table::Evals),
                table_sender(Table::Allocs),
                table_sender(Table::Nodes),
                table_sender(Table::Deployments),
            ],
            last: watch::Sender::new(last),
            last_index: AtomicU64::new(last),
            alloc_gc_index: AtomicU64::new(indexes.get(ALLOC_GC_INDEX).copied().unwrap_or(0)),
            acl_index: AtomicU64::new(last),
            closing: watch::Sender::new(false),
            mirror: Arc::new(RwLock::new(mirror)),
            alloc_index: Arc::new(alloc_index),
        };
        Ok(StateStore {
            inner: Arc::new(inner),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the Raft log last applied to this state, `None` before it applied any.
    pub fn replication_mark(&self) -> Result<Option<super::ReplicationMark>, StateError> {
        self.read(super::mark::read)
    }

    /// The index of the last applied command (0 for a new store).
    pub fn last_index(&self) -> u64 {
        self.inner.last_index.load(Ordering::SeqCst)
    }

    /// The last index that changed `table`.
    pub fn table_index(&self, table: Table) -> u64 {
        *self.inner.tables[table.slot()].borrow()
    }

    /// Waits until `table`'s index is greater than `min_index`, at most `timeout`;
    /// returns the table's index then. Returns at once when the store is closing.
    pub async fn wait_for_index(&self, table: Table, min_index: u64, timeout: Duration) -> u64 {
        let rx = self.inner.tables[table.slot()].subscribe();
        self.wait_on(rx, move |v| v > min_index, timeout).await
    }

    /// Waits until any of `tables` has an index greater than `min_index`, at most
    /// `timeout`; returns the highest of their indexes then. For reads that combine
    /// tables (the service catalog: jobs, allocations, nodes).
    pub async fn wait_for_any_index(
        &self,
        tables: &[Table],
        min_index: u64,
        timeout: Duration,
    ) -> u64 {
        // `publish` bumps the table indexes before `last`, so each change of `last`
        // sees the tables of its commit.
        let rx = self.inner.last.subscribe();
        self.wait_on(rx, |_| self.max_table_index(tables) > min_index, timeout)
            .await;
        self.max_table_index(tables)
    }

    /// The highest index of `tables`.
    pub fn max_table_index(&self, tables: &[Table]) -> u64 {
        tables
            .iter()
            .map(|t| self.table_index(*t))
            .max()
            .unwrap_or(0)
    }

    /// Waits until the last applied index is at least `index`, at most `timeout`;
    /// returns the last applied index then.
    pub async fn wait_for_last_index(&self, index: u64, timeout: Duration) -> u64 {
        let rx = self.inner.last.subscribe();
        self.wait_on(rx, move |v| v >= index, timeout).await
    }

    async fn wait_on(
        &self,
        mut rx: watch::Receiver<u64>,
        done: impl Fn(u64) -> bool,
        timeout: Duration,
    ) -> u64 {
        let mut closing = self.inner.closing.subscribe();
        if *closing.borrow() {
            return *rx.borrow();
        }
        let wait = async {
            tokio::select! {
                r = rx.wait_for(|v| done(*v)) => { let _ = r; }
                _ = closing.wait_for(|c| *c) => {}
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        let current = *rx.borrow();
        current
    }

    /// Lets commits return before they reach the disk (`synchronous=NORMAL`; WAL
    /// order is kept): for a state replicated through Raft, whose log is fsynced before
    /// anything is applied and replays what a power cut took from here (each entry's
    /// mark commits with its change). `sync_to_disk` makes it all durable.
    pub fn commit_without_sync(&self) -> Result<(), StateError> {
        let guard = self
            .inner
            .writer
            .lock()
            .expect("state writer mutex poisoned");
        guard
            .0
            .pragma_update(None, "synchronous", "NORMAL")
            .ctx(|| "setting synchronous=NORMAL".to_string())
    }

    /// Makes every commit so far durable (fsyncs the write-ahead log and the
    /// database file): before a Raft snapshot lets the log entries before it go.
    pub fn sync_to_disk(&self) -> Result<(), StateError> {
        let mut wal = self.path().as_os_str().to_owned();
        wal.push("-wal");
        for file in [std::path::PathBuf::from(wal), self.path().to_path_buf()] {
            match std::fs::File::open(&file) {
                Ok(f) => f.sync_all().map_err(|source| StateError::Sync {
                    path: file.clone(),
                    source,
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::Sync { path: file, source }),
            }
        }
        Ok(())
    }

    /// Makes every current and future blocking wait return at once (server shutdown),
    /// so long polls do not hold up a graceful HTTP shutdown.
    pub fn release_waiters(&self) {
        self.inner.closing.send_replace(true);
    }

    /// True once `release_waiters` was called.
    pub fn is_closing(&self) -> bool {
        *self.inner.closing.borrow()
    }

    /// Test-only stand-in for a full disk: with `full`, caps the database at the pages
    /// it has now (`PRAGMA max_page_count`), so a write that needs one more fails with
    /// SQLITE_FULL as it would on a full file system; without, lifts the cap.
    #[cfg(test)]
    pub(crate) fn fill_disk_for_test(&self, full: bool) {
        let writer = self.inner.writer.lock().expect("writer mutex poisoned");
        let conn = &writer.0;
        let pages: u64 = if full {
            conn.query_row("PRAGMA page_count", [], |r| r.get(0))
                .expect("page_count")
        } else {
            u32::MAX as u64 - 1
        };
        let _: u64 = conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
            .expect("max_page_count");
    }

    /// Publishes a commit: bumps the watched indexes. Called by `apply` after commit.
    pub(super) fn publish(&self, index: u64, tables: &[Table]) {
        self.inner.last_index.store(index, Ordering::SeqCst);
        for t in tables {
            self.inner.tables[t.slot()].send_replace(index);
        }
        self.inner.last.send_replace(index);
    }

    /// Takes an idle read connection (or opens one); it goes back to the pool on drop.
    pub(super) fn reader(&self) -> Result<PooledConn, StateError> {
        self.inner.readers.take()
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let conn = self.reader()?;
        f(&conn)
    }

    /// A consistent point-in-time view for the scheduler (a pinned read transaction
    /// plus the in-memory mirror at the same index).
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        let conn = self.reader()?;
        let mirror = self
            .inner
            .mirror
            .read()
            .expect("state mirror lock poisoned");
        // Under the read lock no commit can land between the transaction start and
        // the mirror copy.
        Snapshot::begin(
            conn,
            mirror.clone(),
            self.inner.mirror.clone(),
            self.inner.alloc_index.clone(),
        )
    }

    /// What the node's allocations that hold resources use, now (from memory),
    /// counting placements in flight.
    pub fn node_allocated(&self, node_id: &str) -> NodeAllocated {
        self.inner
            .mirror
            .read()
            .expect("state mirror lock poisoned")
            .node_allocated(node_id)
    }

    /// Counts new placements (those that hold resources) as used until `apply` commits
    /// them or `release_in_flight` gives them up: the plan applier calls it between its
    /// check of a plan and handing the plan to the log.
    pub fn hold_in_flight<'a>(&self, allocs: impl IntoIterator<Item = &'a Allocation>) {
        self.change_in_flight(|in_flight| {
            for a in allocs.into_iter().filter(|a| a.holds_resources()) {
                in_flight.add(a);
            }
        });
    }

    /// Gives up placements held by `hold_in_flight` (their commit failed).
    pub fn release_in_flight<'a>(&self, alloc_ids: impl IntoIterator<Item = &'a AllocId>) {
        self.change_in_flight(|in_flight| {
            for id in alloc_ids {
                in_flight.remove(id);
            }
        });
    }

    fn change_in_flight(&self, change: impl FnOnce(&mut InFlight)) {
        let mut mirror = self
            .inner
            .mirror
            .write()
            .expect("state mirror lock poisoned");
        change(Arc::make_mut(&mut mirror.in_flight));
    }

    // ------------------------------------------------------------------ reads

    pub fn job(&self, id: &str) -> Result<Option<Job>, StateError> {
        self.read(|c| read::job(c, id))
    }

    /// Every job, sorted by id.
    pub fn jobs(&self) -> Result<Vec<Job>, StateError> {
        self.read(read::jobs)
    }

    /// Every stored version of a job, newest first.
    pub fn job_versions(&self, id: &str) -> Result<Vec<Job>, StateError> {
        self.read(|c| read::job_versions(c, id))
    }

    pub fn job_version(&self, id: &str, version: u64) -> Result<Option<Job>, StateError> {
        self.read(|c| read::job_version(c, id, version))
    }

    pub fn eval(&self, id: &str) -> Result<Option<Evaluation>, StateError> {
        self.read(|c| read::eval(c, id))
    }

    pub fn deployment(&self, id: &str) -> Result<Option<Deployment>, StateError> {
        self.read(|c| read::deployment(c, id))
    }

    /// Every deployment, newest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StateError> {
        self.read(read::deployments)
    }

    /// A job's deployments, newest first.
    pub fn deployments_by_job(&self, job_id: &str) -> Result<Vec<Deployment>, StateError> {
        self.read(|c| read::deployments_by_job(c, job_id))
    }

    /// A job's newest deployment, whatever its status.
    pub fn latest_deployment(&self, job_id: &str) -> Result<Option<Deployment>, StateError> {
        self.read(|c| read::latest_deployment(c, job_id))
    }

    /// Deployments still running or paused, oldest first.
    pub fn active_deployments(&self) -> Result<Vec<Deployment>, StateError> {
        self.read(read::active_deployments)
    }

    /// Every evaluation, oldest first.
    pub fn evals(&self) -> Result<Vec<Evaluation>, StateError> {
        self.read(read::evals)
    }

    /// A job's evaluations, oldest first.
    pub fn evals_by_job(&self, job_id: &str) -> Result<Vec<Evaluation>, StateError> {
        self.read(|c| read::evals_by_job(c, job_id))
    }

    /// Pending and blocked evaluations (to restore the broker on start), oldest first.
    pub fn evals_non_terminal(&self) -> Result<Vec<Evaluation>, StateError> {
        self.read(read::evals_non_terminal)
    }

    pub fn alloc(&self, id: &str) -> Result<Option<Allocation>, StateError> {
        let Some(seq) = self.inner.alloc_index.get(id) else {
            return Ok(None);
        };
        // A snapshot installed between the lookup and the read may have put another
        // row at `seq`.
        let found = self.read(|c| read::alloc_at(c, seq))?;
        Ok(found.filter(|a| a.id.as_str() == id))
    }

    /// True when allocation `id` is stored (from memory).
    pub fn alloc_known(&self, id: &str) -> bool {
        self.inner.alloc_index.get(id).is_some()
    }

    /// Every allocation, oldest first.
    pub fn allocs(&self) -> Result<Vec<Allocation>, StateError> {
        self.read(read::allocs)
    }

    pub fn allocs_by_job(&self, job_id: &str) -> Result<Vec<Allocation>, StateError> {
        self.read(|c| read::allocs_by_job(c, job_id))
    }

    /// Every allocation on a node, terminal ones included.
    pub fn allocs_by_node(&self, node_id: &str) -> Result<Vec<Allocation>, StateError> {
        self.with_node_rows(node_id, |c, rows| {
            read::allocs_at(c, rows.iter().map(|r| r.seq))
        })
    }

    /// What a client must see: its allocations not terminal on the client side, plus
    /// those the server changed after `since` (so it sees such a transition once).
    pub fn allocs_for_client(
        &self,
        node_id: &str,
        since: u64,
    ) -> Result<Vec<Allocation>, StateError> {
        self.with_node_rows(node_id, |c, rows| {
            let wanted = rows
                .iter()
                .filter(|r| r.live || (since > 0 && r.server_index > since))
                .map(|r| r.seq);
            read::allocs_at(c, wanted)
        })
    }

    /// The index of the latest change to a node's allocations that its client did not
    /// report itself (0 when it has none): what a client's watch waits for.
    pub fn node_allocs_server_index(&self, node_id: &str) -> Result<u64, StateError> {
        Ok(self.inner.alloc_index.node_max_server_index(node_id))
    }

    /// Runs `f` with a node's rows in a read transaction at the same index as them:
    /// both are taken under the mirror's read lock, which `apply` holds across its
    /// commit and the index change.
    fn with_node_rows<T>(
        &self,
        node_id: &str,
        f: impl FnOnce(&Connection, &[NodeRow]) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let conn = self.reader()?;
        let rows = {
            let _mirror = self
                .inner
                .mirror
                .read()
                .expect("state mirror lock poisoned");
            conn.execute_batch("BEGIN DEFERRED")
                .ctx(|| "starting a read transaction".to_string())?;
            // The first read starts the transaction's view of the database.
            read::last_index(&conn)?;
            self.inner.alloc_index.node_rows(node_id)
        };
        // The pooled connection rolls the transaction back when it goes back.
        f(&conn, &rows)
    }

    pub fn node(&self, id: &str) -> Result<Option<Node>, StateError> {
        self.read(|c| read::node(c, id))
    }

    pub fn acl_policy(&self, name: &str) -> Result<Option<AclPolicy>, StateError> {
        self.read(|c| read::acl_policy(c, name))
    }

    /// Every ACL policy, by name.
    pub fn acl_policies(&self) -> Result<Vec<AclPolicy>, StateError> {
        self.read(read::acl_policies)
    }

    pub fn acl_token(&self, accessor_id: &str) -> Result<Option<AclToken>, StateError> {
        self.read(|c| read::acl_token(c, accessor_id))
    }

    /// The token whose secret has this SHA-256 (hex), if any.
    pub fn acl_token_by_secret_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<AclToken>, StateError> {
        self.read(|c| read::acl_token_by_secret_hash(c, secret_hash))
    }

    /// Every ACL token, oldest first.
    pub fn acl_tokens(&self) -> Result<Vec<AclToken>, StateError> {
        self.read(read::acl_tokens)
    }

    /// The index ACLs were bootstrapped at; `None` before the bootstrap.
    pub fn acl_bootstrap_index(&self) -> Result<Option<u64>, StateError> {
        self.read(|c| read::index_of(c, ACL_BOOTSTRAP_INDEX))
    }

    /// The cluster-wide scheduler configuration (defaults until one is set).
    pub fn scheduler_config(&self) -> Result<SchedulerConfiguration, StateError> {
        self.read(read::scheduler_config)
    }

    /// Every node, sorted by id.
    pub fn nodes(&self) -> Result<Vec<Node>, StateError> {
        self.read(read::nodes)
    }

    /// Allocation counts per (job, group, client status), for job summaries.
    pub fn alloc_status_counts(&self) -> Result<Vec<GroupStatusCount>, StateError> {
        self.read(read::alloc_status_counts)
    }

    /// Ids in `table` starting with `prefix` (at most `limit`, sorted). An exact match
    /// is the only result when there is one.
    pub fn ids_with_prefix(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        if table == Table::Allocs {
            let ids = self.inner.alloc_index.with_prefix(prefix, limit);
            return Ok(ids.into_iter().map(String::from).collect());
        }
        self.read(|c| read::ids_with_prefix(c, table, prefix, limit))
    }

    /// What garbage collection looks at, read in one transaction.
    pub fn gc_view(&self) -> Result<GcView, StateError> {
        self.read(|c| {
            c.execute_batch("BEGIN DEFERRED")
                .ctx(|| "starting a read transaction".to_string())?;
            // The pooled connection rolls the transaction back when it goes back.
            views::gc_view(c)
        })
    }

    /// What the service catalog is computed from (of service `name` only, when given),
    /// read in one transaction.
    pub fn catalog_view(&self, name: Option<&str>) -> Result<CatalogView, StateError> {
        self.read(|c| {
            c.execute_batch("BEGIN DEFERRED")
                .ctx(|| "starting a read transaction".to_string())?;
            // The pooled connection rolls the transaction back when it goes back.
            views::catalog_view(c, name)
        })
    }

    /// The oldest index the command log still holds (`None`: empty).
    pub fn command_log_first(&self) -> Result<Option<u64>, StateError> {
        self.read(read::command_log_first)
    }

    /// The index of the last command that deleted allocations (0: none yet).
    pub fn alloc_gc_index(&self) -> u64 {
        self.inner.alloc_gc_index.load(Ordering::SeqCst)
    }

    /// The index of the last ACL change (or of the store's opening): a token lookup
    /// made at this index is still right.
    pub fn acl_index(&self) -> u64 {
        self.inner.acl_index.load(Ordering::SeqCst)
    }

    /// Last modify index per table name, as stored (includes `command_log`).
    pub fn stored_indexes(&self) -> Result<BTreeMap<String, u64>, StateError> {
        self.read(read::table_indexes)
    }

    /// The commands applied after `after`, in index order (at most `limit`). An error
    /// (`LogTruncated`) when garbage collection dropped some of them already.
    pub fn commands_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Command)>, StateError> {
        self.read(|c| {
            // One view for the truncation check and the read.
            c.execute_batch("BEGIN DEFERRED")
                .ctx(|| "starting a read transaction".to_string())?;
            read::commands_since(c, after, limit)
        })
    }
}
