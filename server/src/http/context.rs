//! `HttpState`, what every handler shares: the store it reads, the endpoints it hands
//! writes to, facts about this agent; and the lookups handlers make before either:
//! blocking-query waits, store reads off the async runtime, id-prefix resolution.

use std::sync::{Arc, OnceLock};

use axum::extract::FromRef;
use orch_common::ids::{AllocId, DeploymentId, EvalId, JobId, NodeId};
use orch_common::supervise::Health;

use super::error::ApiError;
use super::extract::{BodyLimit, Params};
use super::relay::Relay;
use crate::endpoints::Endpoints;
use crate::heartbeat::Heartbeats;
use crate::state::{CommandLog, StateError, StateStore, Table};

/// Most ids listed when an id prefix is ambiguous.
const PREFIX_MATCH_LIMIT: usize = 10;

/// An id kind that users give by a unique prefix: the table its ids are looked up in,
/// and what the error messages call it.
pub trait PrefixedId: From<String> + Send + 'static {
    const TABLE: Table;
    const KIND: &'static str;
}

impl PrefixedId for JobId {
    const TABLE: Table = Table::Jobs;
    const KIND: &'static str = "job";
}

impl PrefixedId for NodeId {
    const TABLE: Table = Table::Nodes;
    const KIND: &'static str = "node";
}

impl PrefixedId for AllocId {
    const TABLE: Table = Table::Allocs;
    const KIND: &'static str = "allocation";
}

impl PrefixedId for EvalId {
    const TABLE: Table = Table::Evals;
    const KIND: &'static str = "evaluation";
}

impl PrefixedId for DeploymentId {
    const TABLE: Table = Table::Deployments;
    const KIND: &'static str = "deployment";
}

/// Facts about this agent for `/v1/agent/self` and `/v1/status/leader`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub name: String,
    pub datacenter: String,
    pub http_addr: String,
    pub data_dir: String,
    pub version: String,
}

/// What every handler shares.
pub struct HttpState {
    /// For the reads the handlers answer themselves (writes go through `endpoints`).
    pub store: StateStore,
    /// The rules of every write, with the log, heartbeats and collector they use.
    pub endpoints: Endpoints,
    pub agent: AgentInfo,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Set once by the agent when it also runs a client (for `/v1/agent/self`).
    pub client_node_id: OnceLock<NodeId>,
    /// How client routes are relayed to the client that runs the allocation.
    pub relay: Relay,
    /// Blocking queries waiting at once, at most (`MAX_BLOCKING_QUERIES` permits):
    /// past it a blocking query answers at once, as if its wait had passed.
    pub blocking: Arc<tokio::sync::Semaphore>,
    /// The agent's supervised loops, for `/v1/agent/health`; the server sets the
    /// agent's registry.
    pub health: Health,
    /// The Raft cluster this server belongs to: who leads (writes are forwarded
    /// there), the peers. `None` in tests that run the HTTP API over a local log.
    pub cluster: Option<crate::raft::view::ClusterView>,
}

/// Blocking queries that may wait at once; each holds a connection and a task.
pub const MAX_BLOCKING_QUERIES: usize = 2048;

impl HttpState {
    /// With a garbage collector of the default configuration; the server replaces it
    /// with its configured one (`endpoints.gc`).
    pub fn new(
        store: StateStore,
        log: CommandLog,
        heartbeats: Heartbeats,
        agent: AgentInfo,
        max_body_bytes: usize,
    ) -> Self {
        let gc = Arc::new(crate::gc::Collector::new(
            store.clone(),
            log.clone(),
            crate::config::GcConfig::default(),
        ));
        HttpState {
            endpoints: Endpoints::new(store.clone(), log, heartbeats, gc),
            store,
            agent,
            max_body_bytes,
            client_node_id: OnceLock::new(),
            relay: Relay::new(None).expect("a plain HTTP client builds"),
            blocking: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_QUERIES)),
            health: Health::default(),
            cluster: None,
        }
    }

    /// Runs a store read on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&StateStore) -> Result<T, StateError> + Send + 'static,
    {
        self.endpoints.read(f).await.map_err(ApiError::from)
    }

    /// For a blocking query: waits (per `params`) for `table` to pass the given index,
    /// then returns the table's index to answer with (at least 1, so a client that
    /// echoes it back always blocks next time).
    pub async fn wait(&self, table: Table, params: &Params) -> Result<u64, ApiError> {
        let index = params.index()?;
        if index > 0 {
            let wait = params.wait()?;
            if let Ok(_waiting) = self.blocking.try_acquire() {
                self.store.wait_for_index(table, index, wait).await;
            }
        }
        Ok(self.store.table_index(table).max(1))
    }

    /// `wait` over several tables: waits until any of them passes the given index and
    /// answers with the highest of their indexes (at least 1).
    pub async fn wait_any(&self, tables: &[Table], params: &Params) -> Result<u64, ApiError> {
        let index = params.index()?;
        if index > 0 {
            let wait = params.wait()?;
            if let Ok(_waiting) = self.blocking.try_acquire() {
                self.store.wait_for_any_index(tables, index, wait).await;
            }
        }
        Ok(self.store.max_table_index(tables).max(1))
    }

    /// Resolves a full id or a unique prefix of one (of the kind `I`).
    pub async fn resolve<I: PrefixedId>(&self, prefix: &str) -> Result<I, ApiError> {
        let kind = I::KIND;
        let p = prefix.to_string();
        let mut ids = self
            .read(move |s| s.ids_with_prefix(I::TABLE, &p, PREFIX_MATCH_LIMIT + 1))
            .await?;
        match ids.len() {
            0 => Err(ApiError::NotFound(format!("{kind} {prefix:?} not found"))),
            1 => Ok(I::from(ids.remove(0))),
            _ => {
                let more = ids.len() > PREFIX_MATCH_LIMIT;
                ids.truncate(PREFIX_MATCH_LIMIT);
                let mut details = ids;
                if more {
                    details.push("...".to_string());
                }
                Err(ApiError::BadRequest {
                    message: format!("{kind} id prefix {prefix:?} matches more than one {kind}"),
                    details,
                })
            }
        }
    }

    /// The id of an object that exists with exactly this id. Writes take no prefix, so
    /// that `DELETE /v1/job/we` cannot stop `web`; clients resolve a prefix with a read
    /// first.
    pub async fn exact<I: PrefixedId>(&self, id: &str) -> Result<I, ApiError> {
        let kind = I::KIND;
        let wanted = id.to_string();
        let found = self
            .read(move |s| s.ids_with_prefix(I::TABLE, &wanted, 1))
            .await?;
        if found.first().map(String::as_str) == Some(id) {
            return Ok(I::from(id.to_string()));
        }
        Err(ApiError::NotFound(format!(
            "{kind} {id:?} not found (a change names the full {kind} id; a prefix is \
             resolved only by reads)"
        )))
    }

    /// A job id from a path: a unique prefix of a live job, or (for a purged job's
    /// history) the id exactly as given.
    pub async fn job_id_or_exact(&self, prefix: &str) -> Result<JobId, ApiError> {
        match self.resolve(prefix).await {
            Ok(id) => Ok(id),
            Err(ApiError::NotFound(_)) => Ok(JobId::from(prefix)),
            Err(e) => Err(e),
        }
    }
}

impl FromRef<Arc<HttpState>> for BodyLimit {
    fn from_ref(st: &Arc<HttpState>) -> Self {
        BodyLimit(st.max_body_bytes)
    }
}
