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

use axum::Router;
use orch_common::ids::NodeId;
use orch_common::supervise::{self, Restart};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{BrokerConfig, EvalBroker};
use crate::config::ServerConfig;
use crate::deployment;
use crate::drainer;
use crate::gc::Collector;
use crate::heartbeat::Heartbeats;
use crate::http::{self, AgentInfo, HttpState};
use crate::plan_apply::PlanApplier;
use crate::state::{CommandLog, LogError, Observer, RestoreObserver, StateError, StateStore};
use crate::worker;

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
                broker.reset(evals);
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
    http: Arc<HttpState>,
    shutdown_tx: watch::Sender<bool>,
    applier: PlanApplier,
    workers: Vec<JoinHandle<()>>,
    heartbeat_loop: JoinHandle<()>,
    drainer: JoinHandle<()>,
    deployment_watcher: JoinHandle<()>,
    gc_loop: JoinHandle<()>,
}

impl Server {
    /// Opens the state, restores pending work and starts every loop.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        if cfg.bootstrap_expect > 1 {
            return Err(ServerError::Config(format!(
                "bootstrap_expect = {}: replicated servers are not supported yet; use 1",
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
        let path = cfg.state_path();
        let state_err = |source| ServerError::State {
            path: path.clone(),
            source,
        };
        let (store, pending) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<_, StateError> {
                if let Some(dir) = path.parent() {
                    crate::endpoints::snapshot::remove_leftovers(dir);
                }
                let store = StateStore::open(&path)?;
                let pending = store.evals_non_terminal()?;
                Ok((store, pending))
            })
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(state_err)?
        };

        let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
        let restored = pending.len();
        broker.restore(pending);
        let observer: Observer = {
            let broker = broker.clone();
            Arc::new(move |cmd, index| broker.observe(cmd, index))
        };
        let log = CommandLog::start(store.clone(), vec![observer])?;

        let heartbeats = Heartbeats::new(cfg.heartbeat_min_ttl, cfg.heartbeat_grace);
        log.add_restore_observer(restore_observer(broker.clone(), heartbeats.clone()));
        let nodes = {
            let (store, heartbeats) = (store.clone(), heartbeats.clone());
            tokio::task::spawn_blocking(move || heartbeats.restore(&store))
                .await
                .map_err(|e| ServerError::Task(e.to_string()))?
                .map_err(state_err)?
        };

        // Every loop is supervised (docs/operations.md, "Background loops"): a panic is
        // logged with the loop's name and shown by /v1/agent/health. The plan applier
        // and the workers are required (a panic stops the agent); the loops that keep
        // nothing a fresh run cannot rebuild from the store or from the shared
        // heartbeat timers are restarted with backoff.
        let health = cfg.health.clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let applier =
            PlanApplier::spawn_with(store.clone(), log.clone(), shutdown_rx.clone(), |run| {
                supervise::spawn_required(&health, "server.plan-applier", run)
            });
        let workers = worker::spawn_workers(
            cfg.num_schedulers,
            broker.clone(),
            store.clone(),
            log.clone(),
            applier.sender(),
            shutdown_rx.clone(),
            &health,
        );
        let restarting = Restart::default();
        let drainer = {
            let (log, stop) = (log.clone(), shutdown_rx.clone());
            supervise::spawn_restarting(
                &health,
                "server.drainer",
                restarting,
                shutdown_rx.clone(),
                move || drainer::run(log.clone(), stop.clone()),
            )
        };
        let deployment_watcher = {
            let (log, stop) = (log.clone(), shutdown_rx.clone());
            supervise::spawn_restarting(
                &health,
                "server.deployment-watcher",
                restarting,
                shutdown_rx.clone(),
                move || deployment::run(log.clone(), stop.clone()),
            )
        };
        let heartbeat_loop = {
            let (timers, log, stop) = (heartbeats.clone(), log.clone(), shutdown_rx.clone());
            supervise::spawn_restarting(
                &health,
                "server.heartbeat",
                restarting,
                shutdown_rx.clone(),
                move || timers.run(log.clone(), stop.clone()),
            )
        };
        let collector = Arc::new(Collector::new(store.clone(), log.clone(), cfg.gc.clone()));
        let gc_loop = {
            let (collector, stop) = (collector.clone(), shutdown_rx.clone());
            supervise::spawn_restarting(&health, "server.gc", restarting, shutdown_rx, move || {
                collector.clone().run(stop.clone())
            })
        };

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
        http.health = health;
        http.relay = http::relay::Relay::new(cfg.tls.as_ref())
            .map_err(|e| ServerError::Config(format!("building the relay's HTTPS client: {e}")))?;
        let http = Arc::new(http);
        tracing::info!(
            path = %path.display(),
            index = store.last_index(),
            restored_evals = restored,
            nodes,
            workers = cfg.num_schedulers,
            "server started"
        );
        Ok(Server {
            cfg,
            store,
            log,
            broker,
            http,
            shutdown_tx,
            applier,
            workers,
            heartbeat_loop,
            drainer,
            deployment_watcher,
            gc_loop,
        })
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
        for handle in self.workers {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "scheduler worker failed");
            }
        }
        self.applier.join().await;
        if let Err(e) = self.heartbeat_loop.await {
            tracing::error!(error = %e, "heartbeat loop failed");
        }
        if let Err(e) = self.drainer.await {
            tracing::error!(error = %e, "drainer failed");
        }
        if let Err(e) = self.deployment_watcher.await {
            tracing::error!(error = %e, "deployment watcher failed");
        }
        if let Err(e) = self.gc_loop.await {
            tracing::error!(error = %e, "garbage collector failed");
        }
        self.log.shutdown().await;
        tracing::info!("server stopped");
    }
}

#[cfg(test)]
mod tests;
