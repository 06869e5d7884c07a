//! `Client`: the client agent. `start` fingerprints the host, builds the `Node` (id kept
//! in `<data_dir>/client/node-id`), loads the tasks a previous run left (re-attached to
//! by their task runners, or killed when no allocation claims them), and starts its
//! loops: register + heartbeat (at TTL/2), the disconnect watchdog, the blocking
//! allocation watch (starts, stops and drops alloc runners) and the status sender
//! (batched, at most every ~200ms).
//! An allocation the servers updated in place (a new job version or deployment) is
//! handed to its runner; one they stopped is stopped after its group's
//! `shutdown_delay`.
//! Once at start and after each server garbage collection, the watch removes the
//! directories of allocations the servers no longer store (`alloc_gc`).
//! `shutdown` stops the loops and, with `stop_tasks_on_shutdown`, kills every task and
//! removes its cgroup, then sends the final states.
//!
//! `start` never waits for a server: registration retries with backoff in the background,
//! so an agent running server and client in one process can start serving first.
//!
//! Layout: `mod.rs` (`Client`: start and shutdown), `shared` (the state the loops
//! share), `register` (the node, registration, heartbeats, the disconnect watchdog),
//! `watch` (the allocation watch and reconciling the runners), `status` (sending
//! status updates in batches), `alloc_gc` (removing collected alloc dirs), `lookup`
//! (finding allocations and tasks for the client's HTTP routes) and `tokens` (what ACL
//! tokens grant, asked of the servers, on an agent that runs no server).

mod alloc_gc;
pub(crate) mod lookup;
mod register;
mod shared;
mod status;
#[cfg(test)]
mod tests;
mod tokens;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use orch_common::model::Node;
use orch_common::supervise::{self, Restart};
use tokio::task::JoinHandle;

use crate::allocrunner::taskrunner::{RecoveredHandles, TaskRunnerDeps};
use crate::allocrunner::AllocRunnerHandle;
use crate::batcher::UpdateBatcher;
use crate::cgroups::{self, CgroupManager};
use crate::config::ClientConfig;
use crate::driver::{DriverSet, TaskHandle};
use crate::fingerprint::{FingerprintError, Fingerprinter};
use crate::rpc::ServerApi;
use crate::state::{self, HandleStore, StateError};
use orch_common::ids::NodeId;
use register::{build_node, disconnect_watchdog, heartbeat_loop};
use shared::Shared;
use status::{send_batch, update_loop, FINAL_FLUSH};
use watch::watch_loop;

pub use tokens::TokenCache;

/// A loop's stop signal.
type Receiver = tokio::sync::watch::Receiver<bool>;
/// One run of a restartable loop, made afresh by its supervisor for each restart.
type LoopFuture = BoxFuture<'static, ()>;

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("fingerprinting the host: {0}")]
    Fingerprint(#[from] FingerprintError),
    #[error("no servers configured for the client")]
    NoServers,
    #[error("the client's connection to the servers: {0}")]
    Servers(#[from] crate::rpc::RpcError),
}

/// A running client agent.
pub struct Client {
    shared: Arc<Shared>,
    tokens: Arc<TokenCache>,
    stop_loops: tokio::sync::watch::Sender<bool>,
    stop_sender: tokio::sync::watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    sender: JoinHandle<()>,
}

impl Client {
    /// Prepares the data dir, fingerprints the host and starts the loops. Does not wait
    /// for a server to answer.
    pub async fn start(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        let client_dir = cfg.client_dir();
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::Dir { path, source }
        };
        state::private_dir(&client_dir).map_err(dir_err(&client_dir))?;
        // Tasks that run as another user (`nobody`) must reach their own directories
        // below it: others may pass through (x), not list which allocations there are.
        {
            use std::os::unix::fs::DirBuilderExt as _;
            let alloc_root = cfg.alloc_root();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&alloc_root)
                .map_err(dir_err(&alloc_root))?;
        }
        let node_id = state::load_or_create_node_id(&client_dir)?;
        let node_secret = state::load_or_create_node_secret(&client_dir)?;
        let cgroups = pick_cgroups(&cfg);
        let handles = HandleStore::open(&client_dir)?;
        // Tasks an earlier run started keep running: their runners re-attach to them
        // once the servers say which allocations are still ours.
        let recovered: Vec<TaskHandle> = handles.load_all()?.into_iter().map(|(_, h)| h).collect();
        if !recovered.is_empty() {
            tracing::info!(
                tasks = recovered.len(),
                "found tasks of an earlier client run; re-attaching once the allocations are known"
            );
        }

        let drivers = DriverSet::configured(&cfg, cgroups.clone());
        let fp = tokio::task::spawn_blocking(|| Fingerprinter::default().fingerprint())
            .await
            .map_err(|e| {
                ClientError::Fingerprint(FingerprintError::Missing {
                    path: PathBuf::from(format!("(fingerprint task failed: {e})")),
                    field: "anything",
                })
            })??;
        let node = Arc::new(build_node(&cfg, node_id, fp, &drivers));
        tracing::info!(
            node_id = %node.id,
            name = %node.name,
            cpu_mhz = node.resources.cpu,
            memory_mib = node.resources.memory,
            cgroups = ?cgroups.as_ref().map(|c| c.version()),
            "client fingerprinted the host"
        );

        let (registered, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            api: ServerApi::new(&cfg.servers, node_secret, cfg.tls.as_ref())?,
            deps: TaskRunnerDeps {
                drivers: Arc::new(drivers),
                cgroups,
                handles: Some(handles),
                node: node.clone(),
                pids_limit: cfg.pids_limit,
                usage: Default::default(),
                recovered: RecoveredHandles::new(recovered),
            },
            cfg,
            node,
            runners: Arc::new(Mutex::new(HashMap::new())),
            started: Mutex::new(HashSet::new()),
            swept: AtomicBool::new(false),
            batcher: Arc::new(UpdateBatcher::new()),
            registered,
            last_contact: Mutex::new(None),
        });
        let (stop_loops, stop_loops_rx) = tokio::sync::watch::channel(false);
        let (stop_sender, stop_sender_rx) = tokio::sync::watch::channel(false);
        // Supervised (docs/operations.md, "Background loops"): registration and
        // heartbeats, and the disconnect watchdog, keep their state in `shared`, so a
        // fresh run carries on and they are restarted after a panic. The allocation
        // watch (it starts and stops alloc runners mid-way) and the status sender (a
        // batch it took and did not send would be lost, a task's final state with it)
        // are required: their panic stops the agent.
        let health = shared.cfg.health.clone();
        let restartable = |name: &str, run: fn(Arc<Shared>, Receiver) -> LoopFuture| {
            let (shared, stop) = (shared.clone(), stop_loops_rx.clone());
            supervise::spawn_restarting(
                &health,
                name,
                Restart::default(),
                stop_loops_rx.clone(),
                move || run(shared.clone(), stop.clone()),
            )
        };
        let loops = vec![
            restartable("client.heartbeat", |s, stop| {
                Box::pin(heartbeat_loop(s, stop))
            }),
            restartable("client.disconnect-watchdog", |s, stop| {
                Box::pin(disconnect_watchdog(s, stop))
            }),
            supervise::spawn_required(
                &health,
                "client.watch",
                watch_loop(shared.clone(), stop_loops_rx),
            ),
        ];
        let sender = supervise::spawn_required(
            &health,
            "client.status-sender",
            update_loop(shared.clone(), stop_sender_rx),
        );
        Ok(Client {
            tokens: Arc::new(TokenCache::new(shared.clone())),
            shared,
            stop_loops,
            stop_sender,
            loops,
            sender,
        })
    }

    /// `GET /v1/agent/health` over the client's loops, for an agent that runs no server
    /// (a server's own health route reports the client's loops too).
    pub fn health_router(&self) -> axum::Router {
        crate::health::router(self.shared.cfg.health.clone())
    }

    /// The client's HTTP routes (`/v1/client/...`).
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.shared.lookup())
    }

    /// What ACL tokens grant, asked of the servers and cached: for an agent that runs
    /// a client and no server and checks tokens.
    pub fn tokens(&self) -> Arc<TokenCache> {
        self.tokens.clone()
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.node.id.clone()
    }

    /// The node as registered.
    pub fn node(&self) -> Node {
        (*self.shared.node).clone()
    }

    /// The latest client-side state of every allocation this client runs.
    pub fn alloc_states(&self) -> Vec<orch_common::api::AllocClientUpdate> {
        let runners = self.shared.runners.lock().expect("runner table poisoned");
        let mut v: Vec<_> = runners.values().map(|r| r.status()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The latest result of every health check of allocation `id` (every run's, not
    /// only the changes sent to the servers); None when no runner has it.
    pub fn alloc_checks(
        &self,
        id: &str,
    ) -> Option<BTreeMap<String, orch_common::model::CheckStatus>> {
        let runners = self.shared.runners.lock().expect("runner table poisoned");
        runners.get(id).map(|r| r.checks())
    }

    /// Stops the loops; with `stop_tasks_on_shutdown`, kills every task (removing its
    /// cgroup) and reports the final states. Everything started is awaited.
    pub async fn shutdown(self) {
        let _ = self.stop_loops.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        let runners: Vec<AllocRunnerHandle> = self
            .shared
            .runners
            .lock()
            .expect("runner table poisoned")
            .drain()
            .map(|(_, r)| r)
            .collect();
        if self.shared.cfg.stop_tasks_on_shutdown {
            for r in &runners {
                r.stop("client shutting down");
            }
            for r in runners {
                r.wait().await;
            }
        } else {
            tracing::warn!("client stopping without stopping its tasks (stop_tasks_on_shutdown = false); the next start re-attaches to them");
            for r in runners {
                r.abandon();
            }
        }
        let _ = self.stop_sender.send(true);
        let _ = self.sender.await;
        if !self.shared.batcher.is_empty() {
            let _ = tokio::time::timeout(FINAL_FLUSH, send_batch(&self.shared)).await;
        }
        tracing::info!("client stopped");
    }
}

/// The cgroup manager for this host, or `None` (loudly) when the client cannot use
/// cgroups: tasks then run without enforced limits.
fn pick_cgroups(cfg: &ClientConfig) -> Option<Arc<dyn CgroupManager>> {
    let root = cfg
        .cgroup_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!("client is not running as root: tasks get no cgroup, so memory and cpu limits are NOT enforced");
        return None;
    }
    match cgroups::detect_manager(Path::new("/proc/mounts"), &root) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "no usable cgroups: memory and cpu limits are NOT enforced");
            None
        }
    }
}
