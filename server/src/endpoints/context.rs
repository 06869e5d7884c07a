//! `Endpoints`: what every endpoint shares (the store it reads, the log it submits
//! to, the heartbeat timers, the garbage collector, the server's limits), and `ReadError`, a store read on
//! the blocking pool that failed.

use std::sync::Arc;

use orch_common::model::Job;

use super::grants_cache::GrantsCache;
use crate::gc::Collector;
use crate::heartbeat::Heartbeats;
use crate::state::{CommandLog, StateError, StateStore};

/// A store read run on the blocking pool failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The read's task panicked or was cancelled.
    #[error("state read task: {0}")]
    Task(String),
}

/// A group asks for more instances than this server allows (`[server] max_count`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group.{group}.count: {count} is above this server's limit of {limit} instances per group ([server] max_count)")]
pub struct CountAboveLimit {
    pub group: String,
    pub count: u32,
    pub limit: u32,
}

/// The handles the endpoints work with. Cheap to clone (each is an `Arc` inside).
#[derive(Clone)]
pub struct Endpoints {
    pub store: StateStore,
    pub log: CommandLog,
    pub heartbeats: Heartbeats,
    /// Runs a collection now (`operator::collect_garbage`); the server sets its
    /// configured collector.
    pub gc: Arc<Collector>,
    /// What tokens granted, valid until the next ACL change (`acl::resolve`).
    pub grants: Arc<GrantsCache>,
    /// Most instances a group may ask for on this server (`[server] max_count`, at
    /// most the spec's own `MAX_COUNT`); the server sets its configured one.
    pub max_count: u32,
    /// Largest snapshot a restore accepts, in bytes (`[server] max_snapshot_bytes`);
    /// the server sets its configured one.
    pub max_snapshot_bytes: u64,
}

impl Endpoints {
    pub fn new(
        store: StateStore,
        log: CommandLog,
        heartbeats: Heartbeats,
        gc: Arc<Collector>,
    ) -> Self {
        Endpoints {
            store,
            log,
            heartbeats,
            gc,
            grants: Arc::default(),
            max_count: orch_common::jobspec::MAX_COUNT,
            max_snapshot_bytes: crate::config::DEFAULT_MAX_SNAPSHOT_BYTES,
        }
    }

    /// Refuses a group asking for more instances than this server allows (`validate`
    /// already holds every group to the spec's own, larger bound, `MAX_COUNT`).
    pub fn within_max_count(&self, job: &Job) -> Result<(), CountAboveLimit> {
        match job.groups.iter().find(|g| g.count > self.max_count) {
            Some(g) => Err(CountAboveLimit {
                group: g.name.clone(),
                count: g.count,
                limit: self.max_count,
            }),
            None => Ok(()),
        }
    }

    /// Runs a store read on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&StateStore) -> Result<T, StateError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ReadError::Task(e.to_string()))?
            .map_err(ReadError::from)
    }
}
