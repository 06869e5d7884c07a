//! `Server`: wires the state store, the command log, the evaluation broker, the
//! scheduler workers, the plan applier, the heartbeat timers and the HTTP API together,
//! and stops them all on `shutdown`.
//!
//! ```text
//!  start:  open <data_dir>/server/state.db ─► broker.restore(pending + blocked evals)
//!          ─► CommandLog (observer: broker.observe; on a snapshot restore: broker.reset
//!          and heartbeats.restart_from, the same rebuild) ─► heartbeats.restore(nodes)
//!          ─► plan applier ─► workers + reaper ─► heartbeat expiry loop ─► drainer
//!          ─► deployment watcher ─► garbage collector (every gc.interval)
//!          (each loop supervised: `orch_common::supervise`, policy per loop below)
//!  serve:  router() (the agent binds the listener and serves it)
//!  stop:   release blocking queries ─► shutdown=true ─► await workers, applier,
//!          heartbeat loop, drainer, deployment watcher, collector ─► close the log
//!          (joins the writer thread)
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use orch_common::ids::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{BrokerConfig, EvalBroker};
use crate::config::{RaftConfig, ServerConfig};
use crate::gc::Collector;
use crate::heartbeat::Heartbeats;
use crate::http::{self, AgentInfo, HttpState};
use crate::raft::cluster::{self, PeerClient};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::proposer::{RaftProposer, Waiting};
use crate::raft::state_machine::StateMachine;
use crate::raft::view::{ClusterView, Contacts};
use crate::raft::{Raft, ServerId, ServerNode};
use crate::state::{CommandLog, LogError, Observer, RestoreObserver, StateError, StateStore};

mod leader;

use leader::LeaderParts;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("state store {path}: {source}")]
    State {
        path: std::path::PathBuf,
        source: StateError,
    },
    #[error("starting the command log: {0}")]
    Log(#[from] LogError),
    #[error("invalid server configuration: {0}")]
    Config(String),
    #[error("server start task failed: {0}")]
    Task(String),
}

/// After a state snapshot is restored (`CommandLog::restore`), on the writer thread
/// before any later command: the broker and the heartbeat timers are rebuilt from the
/// restored state as `start` builds them. The other loops (plan applier, workers,
/// drainer, deployment watcher, collector) read the store afresh on each pass.
fn restore_observer(broker: Arc<EvalBroker>, heartbeats: Heartbeats) -> RestoreObserver {
    Arc::new(move |store: &StateStore, index| {
        match store.evals_non_terminal() {
            Ok(evals) => {
                tracing::info!(
                    index,
                    evals = evals.len(),
                    "eval broker rebuilt after a restore"
                );
                // Only the leader's broker holds evaluations.
                if broker.is_enabled() {
                    broker.reset(evals);
                }
            }
            Err(e) => tracing::error!(index, error = %e, "reading evaluations after a restore"),
        }
        if let Err(e) = heartbeats.restart_from(store) {
            tracing::error!(index, error = %e, "restarting heartbeat timers after a restore");
        }
    })
}

/// A running server.
pub struct Server {
    cfg: ServerConfig,
    store: StateStore,
    log: CommandLog,
    broker: Arc<EvalBroker>,
    raft: Raft,
    server_id: ServerId,
    me: ServerNode,
    peers: PeerClient,
    contacts: Contacts,
    http: Arc<HttpState>,
    shutdown_tx: watch::Sender<bool>,
    leadership: JoinHandle<()>,
    cluster: JoinHandle<()>,
}

/// A server that is the only voter of its cluster (a single server) elects itself
/// at once and takes over before `start` returns, so it answers writes from its
/// first request, as a server without replication did.
async fn lead_alone(raft: &Raft, me: ServerId, broker: &EvalBroker) {
    // Asked of Raft's core, not its metrics: those may not show the membership yet.
    let voters: Vec<ServerId> = match raft
        .with_raft_state(|st| {
            st.membership_state
                .effective()
                .membership()
                .voter_ids()
                .collect()
        })
        .await
    {
        Ok(voters) => voters,
        Err(_) => return,
    };
    if voters != [me] {
        return;
    }
    if let Err(e) = raft.trigger().elect().await {
        tracing::warn!(error = %e, "electing this single server");
        return;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !broker.is_enabled() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Largest Raft RPC body: a snapshot chunk (4 MiB) with room to spare, or an
/// AppendEntries batch (a bigger one is refused with 413 and sent again halved).
const RPC_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// openraft's configuration from ours.
fn raft_config(cfg: &RaftConfig) -> Result<openraft::Config, ServerError> {
    let ms = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    let election = ms(cfg.election_timeout);
    openraft::Config {
        cluster_name: "orch".to_string(),
        heartbeat_interval: ms(cfg.heartbeat_interval),
        election_timeout_min: election,
        election_timeout_max: election.saturating_mul(2),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_threshold),
        max_in_snapshot_log_to_keep: cfg.trailing_logs,
        // A state snapshot is a file of the whole state: sent in 4 MiB chunks, each
        // given time enough on a slow link.
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        install_snapshot_timeout: 30_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ServerError::Config(format!("raft: {e}")))
}

impl Server {
    /// Opens the state, restores pending work and starts every loop.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        if cfg.bootstrap_expect == 0 {
            return Err(ServerError::Config(
                "bootstrap_expect must be at least 1".to_string(),
            ));
        }
        if cfg.bootstrap_expect > 1 && cfg.raft.retry_join.is_empty() {
            return Err(ServerError::Config(format!(
                "bootstrap_expect = {}: list the other servers in retry_join",
                cfg.bootstrap_expect
            )));
        }
        if cfg.max_request_body_bytes == 0 {
            return Err(ServerError::Config(
                "max_request_body_bytes must be above 0".to_string(),
            ));
        }
        if cfg.max_snapshot_bytes == 0 {
            return Err(ServerError::Config(
                "max_snapshot_bytes must be above 0".to_string(),
            ));
        }
        if !(1..=orch_common::jobspec::MAX_COUNT).contains(&cfg.max_count) {
            return Err(ServerError::Config(format!(
                "max_count = {}: must be between 1 and {}",
                cfg.max_count,
                orch_common::jobspec::MAX_COUNT
            )));
        }
        if cfg.gc.interval.is_zero() {
            return Err(ServerError::Config(
                "gc_interval must be above 0".to_string(),
            ));
        }
        let raft_config = raft_config(&cfg.raft)?;
        let path = cfg.state_path();
        let state_err = |source| ServerError::State {
            path: path.clone(),
            source,
        };
        let (store, log_store, server_id, legacy) = {
            let (path, raft_path) = (path.clone(), cfg.raft_log_path());
            tokio::task::spawn_blocking(move || -> Result<_, StateError> {
                if let Some(dir) = path.parent() {
                    crate::endpoints::snapshot::remove_leftovers(dir);
                }
                let store = StateStore::open(&path)?;
                // The Raft log is the durable record (fsynced before anything
                // applies); the state replays from it (see `raft::state_machine`).
                store.commit_without_sync()?;
                let log_store = LogStore::open(&raft_path)?;
                let server_id = log_store.server_id()?;
                // A state written before replication: its commands never went
                // through Raft, so a server joining later must get it as a snapshot.
                let legacy = store.last_index() > 0 && store.replication_mark()?.is_none();
                Ok((store, log_store, server_id, legacy))
            })
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(state_err)?
        };

        if legacy && cfg.bootstrap_expect > 1 {
            return Err(ServerError::Config(format!(
                "{} holds a state from before replication: start this server alone first \
                 (bootstrap_expect = 1) so it becomes a cluster of one, then start the \
                 others with retry_join pointing at it (docs/operations.md, \
                 \"Upgrading a single server\")",
                path.display()
            )));
        }
        // Only the leader's broker holds evaluations (see `leader`).
        let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
        broker.disable();
        let observer: Observer = {
            let broker = broker.clone();
            Arc::new(move |cmd, index| broker.observe(cmd, index))
        };
        let log = CommandLog::start(store.clone(), vec![observer])?;
        let heartbeats = Heartbeats::new(cfg.heartbeat_min_ttl, cfg.heartbeat_grace);
        log.add_restore_observer(restore_observer(broker.clone(), heartbeats.clone()));

        // Every Raft exchange that succeeds is recorded here (last contact).
        let contacts = Contacts::default();
        let network = Network::new(cfg.tls.as_ref(), contacts.clone())
            .map_err(|e| ServerError::Config(format!("building the Raft HTTPS client: {e}")))?;
        let waiting = Waiting::default();
        let state_machine =
            StateMachine::open(log.clone(), waiting.clone(), cfg.raft_snapshot_dir())
                .map_err(state_err)?;
        let raft = Raft::new(
            server_id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ServerError::Task(format!("starting Raft: {e}")))?;
        log.replicate_through(Arc::new(RaftProposer::spawn(
            raft.clone(),
            waiting,
            cfg.raft.commit_timeout,
        )));
        let me = ServerNode {
            name: cfg.name.clone(),
            rpc_addr: cfg.raft.advertise_rpc.clone(),
            http_addr: cfg.advertise_http.clone(),
        };
        if cfg.bootstrap_expect == 1
            && cfg.raft.retry_join.is_empty()
            && !raft.is_initialized().await.unwrap_or(true)
        {
            raft.initialize(std::collections::BTreeMap::from([(server_id, me.clone())]))
                .await
                .map_err(|e| ServerError::Task(format!("initialising Raft: {e}")))?;
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let peers = PeerClient::new(cfg.tls.as_ref())
            .map_err(|e| ServerError::Config(format!("building the peers' HTTPS client: {e}")))?;
        let cluster = cluster::spawn(
            raft.clone(),
            peers.clone(),
            server_id,
            me.clone(),
            cfg.bootstrap_expect,
            cfg.raft.retry_join.clone(),
            shutdown_rx.clone(),
        );

        let collector = Arc::new(Collector::new(store.clone(), log.clone(), cfg.gc.clone()));
        let parts = LeaderParts::new(
            &cfg,
            &log,
            &broker,
            &heartbeats,
            &collector,
            &raft,
            &contacts,
        );
        // Twice the longest election timeout: the followers have elected another
        // leader by then.
        let step_down_after = cfg.raft.election_timeout * 4;
        let leadership = leader::spawn(parts, raft.clone(), step_down_after, shutdown_rx);
        lead_alone(&raft, server_id, &broker).await;
        if legacy {
            // Before the RPC port is served (the agent serves it after `start`).
            let compacted =
                tokio::time::timeout(Duration::from_secs(120), cluster::compact_upgraded(&raft))
                    .await;
            if compacted.is_err() {
                return Err(ServerError::Task(
                    "upgrading the data dir: the first Raft snapshot did not finish in 2 minutes"
                        .to_string(),
                ));
            }
        }

        let agent = AgentInfo {
            name: cfg.name.clone(),
            datacenter: cfg.datacenter.clone(),
            http_addr: cfg.advertise_http.clone(),
            data_dir: cfg.data_dir.display().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut http = HttpState::new(
            store.clone(),
            log.clone(),
            heartbeats,
            agent,
            cfg.max_request_body_bytes,
        );
        http.endpoints.gc = collector;
        http.endpoints.max_count = cfg.max_count;
        http.endpoints.max_snapshot_bytes = cfg.max_snapshot_bytes;
        http.health = cfg.health.clone();
        http.relay = http::relay::Relay::new(cfg.tls.as_ref())
            .map_err(|e| ServerError::Config(format!("building the relay's HTTPS client: {e}")))?;
        http.cluster = Some(ClusterView {
            raft: raft.clone(),
            me: server_id,
            contacts: contacts.clone(),
            failed_after: cfg.raft.election_timeout * 4,
        });
        let http = Arc::new(http);
        tracing::info!(
            path = %path.display(),
            index = store.last_index(),
            server_id,
            rpc = %cfg.raft.advertise_rpc,
            workers = cfg.num_schedulers,
            "server started"
        );
        Ok(Server {
            cfg,
            store,
            log,
            broker,
            raft,
            server_id,
            me,
            peers,
            contacts,
            http,
            shutdown_tx,
            leadership,
            cluster,
        })
    }

    /// The routes other servers call on the RPC port: Raft's own
    /// (`/v1/raft/append|vote|snapshot`) and the cluster's (`/v1/raft/info|join`).
    pub fn rpc_router(&self) -> Router {
        crate::raft::rpc::router(
            self.raft.clone(),
            RPC_MAX_BODY_BYTES,
            self.contacts.clone(),
            cluster::routes(
                self.raft.clone(),
                self.peers.clone(),
                self.server_id,
                self.me.clone(),
            ),
        )
    }

    /// The Raft instance (membership, metrics, the RPC routes serve it).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This server's Raft id.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// Every server `/v1` route, with the request body limit.
    pub fn router(&self) -> Router {
        http::router(self.http.clone())
    }

    /// The token lookup, for the agent's authorization layer
    /// (`http::authorize::authorize`) when ACLs are on.
    pub fn tokens(&self) -> Arc<dyn http::authorize::TokenResolver> {
        Arc::new(self.http.endpoints.clone())
    }

    /// The client routes, forwarded to the client that runs the allocation: for an
    /// agent that runs no client of its own (one that does serves them itself).
    pub fn client_forward_router(&self) -> Router {
        http::client_forward::router(self.http.clone())
    }

    /// Tells `/v1/agent/self` that this agent also runs a client with this node id.
    /// Set once, when the agent's client starts; later calls change nothing.
    pub fn set_client_node_id(&self, node_id: Option<impl Into<NodeId>>) {
        if let Some(id) = node_id {
            if self.http.client_node_id.set(id.into()).is_err() {
                tracing::warn!("the client node id is already set; keeping it");
            }
        }
    }

    /// Ends every blocking query at once (they answer with the current state). Call it
    /// when a graceful HTTP shutdown starts, so long polls do not hold it up;
    /// `shutdown` calls it too.
    pub fn stop_blocking_queries(&self) {
        self.store.release_waiters();
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The state store (reads; writes go through `log()`).
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn log(&self) -> &CommandLog {
        &self.log
    }

    pub fn broker(&self) -> &Arc<EvalBroker> {
        &self.broker
    }

    /// Stops every loop and waits for it; the state is durable at every step, so
    /// anything acknowledged before is there on the next start.
    pub async fn shutdown(self) {
        self.store.release_waiters();
        self.shutdown_tx.send_replace(true);
        if let Err(e) = self.leadership.await {
            tracing::error!(error = %e, "the leadership task failed");
        }
        self.cluster.abort();
        let _ = self.cluster.await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::error!(error = %e, "Raft did not stop cleanly");
        }
        self.log.shutdown().await;
        tracing::info!("server stopped");
    }
}

#[cfg(test)]
mod tests;
