//! `Client`: the client agent. `start` fingerprints the host, builds the `Node` (id kept
//! in `<data_dir>/client/node-id`), loads the tasks a previous run left (re-attached to
//! by their task runners, or killed when no allocation claims them), and starts three
//! loops: register + heartbeat (at TTL/2), the blocking allocation watch (starts, stops
//! and drops alloc runners) and the status sender (batched, at most every ~200ms).
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_common::api::{AllocClientUpdate, AllocUpdateRequest, HeartbeatRequest};
use orch_common::ids::now_ms;
use orch_common::model::{Allocation, ClientStatus, DesiredStatus, Node, NodeStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::allocdir::AllocDir;
use crate::allocrunner::taskrunner::{RecoveredHandles, TaskRunnerDeps};
use crate::allocrunner::{self, AllocRunnerHandle};
use crate::batcher::{Motion, UpdateBatcher};
use crate::cgroups::{self, CgroupManager};
use crate::config::ClientConfig;
use crate::driver::{DriverSet, TaskHandle};
use crate::fingerprint::{FingerprintError, Fingerprinter};
use crate::rpc::ServerApi;
use crate::state::{self, HandleStore, StateError};

/// How long the server may hold the allocation watch.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Status updates are sent at most once per window (Nomad's client uses 200 ms).
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// How long shutdown tries to deliver the final states.
const FINAL_FLUSH: Duration = Duration::from_secs(3);
/// Longest pause between retries (a restarted server is picked up within this).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
}

/// A running client agent.
pub struct Client {
    shared: Arc<Shared>,
    stop_loops: watch::Sender<bool>,
    stop_sender: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    sender: JoinHandle<()>,
}

/// What the loops and the HTTP handlers share.
pub(crate) struct Shared {
    pub(crate) cfg: ClientConfig,
    pub(crate) node: Arc<Node>,
    api: ServerApi,
    pub(crate) deps: TaskRunnerDeps,
    /// Alloc id -> runner. A std mutex: never held across an await.
    pub(crate) runners: Mutex<HashMap<String, AllocRunnerHandle>>,
    /// Allocations this process already ran: never started twice.
    started: Mutex<HashSet<String>>,
    /// Whether the tasks of an earlier run that no allocation claims were killed
    /// (after the first allocation list from the servers).
    swept: std::sync::atomic::AtomicBool,
    batcher: Arc<UpdateBatcher>,
    registered: watch::Sender<bool>,
    /// When a server last answered a register or heartbeat (None: never yet).
    last_contact: Mutex<Option<std::time::Instant>>,
}

impl Client {
    /// Prepares the data dir, fingerprints the host and starts the loops. Does not wait
    /// for a server to answer.
    pub async fn start(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        let client_dir = cfg.client_dir();
        for dir in [client_dir.clone(), cfg.alloc_root()] {
            std::fs::create_dir_all(&dir).map_err(|source| ClientError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        let node_id = state::load_or_create_node_id(&client_dir)?;
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

        let (registered, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            api: ServerApi::new(&cfg.servers),
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
            runners: Mutex::new(HashMap::new()),
            started: Mutex::new(HashSet::new()),
            swept: std::sync::atomic::AtomicBool::new(false),
            batcher: Arc::new(UpdateBatcher::new()),
            registered,
            last_contact: Mutex::new(None),
        });
        let (stop_loops, stop_loops_rx) = watch::channel(false);
        let (stop_sender, stop_sender_rx) = watch::channel(false);
        let loops = vec![
            tokio::spawn(heartbeat_loop(shared.clone(), stop_loops_rx.clone())),
            tokio::spawn(watch_loop(shared.clone(), stop_loops_rx.clone())),
            tokio::spawn(disconnect_watchdog(shared.clone(), stop_loops_rx)),
        ];
        let sender = tokio::spawn(update_loop(shared.clone(), stop_sender_rx));
        Ok(Client {
            shared,
            stop_loops,
            stop_sender,
            loops,
            sender,
        })
    }

    /// The client's HTTP routes (`/v1/client/...`).
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.shared.clone())
    }

    pub fn node_id(&self) -> String {
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

fn build_node(
    cfg: &ClientConfig,
    id: String,
    fp: crate::fingerprint::Fingerprint,
    drivers: &DriverSet,
) -> Node {
    let mut attributes = fp.attributes;
    let infos = drivers.fingerprint(&mut attributes);
    let name = if cfg.name.is_empty() {
        attributes
            .get("unique.hostname")
            .cloned()
            .unwrap_or_else(|| id.clone())
    } else {
        cfg.name.clone()
    };
    let mut node = Node {
        id,
        name,
        datacenter: cfg.datacenter.clone(),
        node_class: cfg.node_class.clone(),
        node_pool: "default".to_string(),
        status: NodeStatus::Ready,
        status_description: String::new(),
        eligibility: Default::default(),
        attributes,
        meta: cfg.meta.clone(),
        resources: fp.resources,
        reserved: cfg.reserved,
        drivers: infos,
        http_addr: cfg.http_advertise.clone(),
        min_dynamic_port: cfg.min_dynamic_port,
        max_dynamic_port: cfg.max_dynamic_port,
        reserved_ports: cfg.reserved_ports.clone(),
        computed_class: String::new(),
        status_updated_at: now_ms(),
        drain: None,
        last_drain: None,
        create_index: 0,
        modify_index: 0,
    };
    node.compute_class();
    node
}

/// Sleeps `d` unless asked to stop; true when stopping.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

fn backoff(d: Duration) -> Duration {
    (d * 2).min(MAX_BACKOFF)
}

/// Registers (retrying with backoff over the server list), then heartbeats at TTL/2;
/// registers again when a server no longer knows the node.
async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let node_id = shared.node.id.clone();
    'register: loop {
        let mut wait = Duration::from_millis(250);
        let mut attempts = 0u32;
        let mut ttl = loop {
            match shared.api.register(&shared.node).await {
                Ok(r) => {
                    shared.contacted();
                    tracing::info!(node_id = %node_id, ttl_ms = r.heartbeat_ttl_ms, "registered with the servers");
                    break Duration::from_millis(r.heartbeat_ttl_ms);
                }
                Err(e) => {
                    attempts += 1;
                    // The first failures are normal while servers start; say so quietly.
                    if attempts > 3 {
                        tracing::warn!(error = %e, "registering the node; retrying");
                    } else {
                        tracing::debug!(error = %e, "registering the node; retrying");
                    }
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                    wait = backoff(wait);
                }
            }
        };
        let _ = shared.registered.send(true);
        let mut failed = false;
        loop {
            let next = if failed {
                Duration::from_secs(1)
            } else {
                (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
            };
            if sleep_or_stop(next, &mut stop).await {
                return;
            }
            // After a failed heartbeat the server may have marked the node down: ask for
            // ready again.
            let req = HeartbeatRequest {
                status: failed.then_some(NodeStatus::Ready),
            };
            match shared.api.heartbeat(&node_id, &req).await {
                Ok(r) => {
                    shared.contacted();
                    ttl = Duration::from_millis(r.heartbeat_ttl_ms);
                    failed = false;
                }
                Err(e) if e.is_not_found() => {
                    tracing::warn!(error = %e, "the server does not know this node; registering again");
                    continue 'register;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    failed = true;
                }
            }
        }
    }
}

/// How often the watchdog looks at how long the servers have been out of reach.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// Stops the allocations whose group's `disconnect.lost_after` has passed since a
/// server last answered: by then the servers count them lost and have replaced them,
/// so running on would leave two copies once the network heals.
async fn disconnect_watchdog(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if sleep_or_stop(WATCHDOG_TICK, &mut stop).await {
            return;
        }
        let Some(last) = *shared.last_contact.lock().expect("contact time poisoned") else {
            continue;
        };
        let away = last.elapsed();
        let runners = shared.runners.lock().expect("runner table poisoned");
        for r in runners.values() {
            let Some(lost_after) = r.lost_after else {
                continue;
            };
            if away > lost_after && !r.stop_requested() && !r.is_done() {
                let why = format!(
                    "no server reachable for {:.0}s (disconnect.lost_after is {})",
                    away.as_secs_f64(),
                    orch_common::duration::format(lost_after)
                );
                tracing::warn!(alloc = %r.alloc_id, "stopping allocation: {why}");
                r.stop(&why);
            }
        }
    }
}

/// Long-polls the node's allocations and reconciles the alloc runners with them.
async fn watch_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut registered = shared.registered.subscribe();
    tokio::select! {
        _ = registered.wait_for(|r| *r) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let node_id = shared.node.id.clone();
    let mut index = 0u64;
    // The servers' garbage collection index the alloc dirs were last checked at;
    // `None` checks them once after the first answer (dirs left from earlier runs).
    let mut dirs_checked_at: Option<u64> = None;
    let mut wait = Duration::from_millis(250);
    loop {
        let resp = tokio::select! {
            r = shared.api.node_allocations(&node_id, index, WATCH_WAIT) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match resp {
            Ok(r) => {
                wait = Duration::from_millis(250);
                let unchanged = r.index == index;
                shared.reconcile(r.allocs);
                index = r.index;
                if dirs_checked_at != Some(r.gc_index) {
                    match alloc_gc::remove_collected_dirs(&shared).await {
                        Ok(_) => dirs_checked_at = Some(r.gc_index),
                        Err(e) => {
                            tracing::warn!(error = %e, "checking alloc dirs against the servers; retrying")
                        }
                    }
                }
                // A server that answers without blocking must not make us spin.
                if unchanged && sleep_or_stop(Duration::from_millis(100), &mut stop).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching allocations; retrying");
                if sleep_or_stop(wait, &mut stop).await {
                    return;
                }
                wait = backoff(wait);
            }
        }
    }
}

/// Sends pending status updates, retrying failures. A change after a quiet spell goes
/// out at once; changes that follow within `BATCH_WINDOW` of a send wait for the window
/// to end and go together, so a burst costs the server one write per window. The
/// burst's last change (no allocation is left starting or running to its end) ends
/// the window early.
async fn update_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_millis(500);
    let mut last_sent: Option<tokio::time::Instant> = None;
    loop {
        if shared.batcher.is_empty() {
            tokio::select! {
                _ = shared.batcher.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if let Some(sent) = last_sent {
            // Wait for the window to end, unless nothing more is coming: once no
            // allocation here is starting or running to its end, what is pending is
            // the last word for now, and waiting would only delay it.
            let window_end = sent + BATCH_WINDOW;
            while !shared.batcher.settled() {
                tokio::select! {
                    _ = tokio::time::sleep_until(window_end) => break,
                    _ = shared.batcher.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        last_sent = Some(tokio::time::Instant::now());
        if send_batch(&shared).await {
            wait = Duration::from_millis(500);
        } else {
            if sleep_or_stop(wait, &mut stop).await {
                return;
            }
            wait = backoff(wait);
        }
    }
}

/// POSTs everything pending; on failure puts it back. True when sent (or nothing to send).
async fn send_batch(shared: &Shared) -> bool {
    let batch = shared.batcher.take();
    if batch.is_empty() {
        return true;
    }
    let req = AllocUpdateRequest { allocs: batch };
    match shared.api.update_allocs(&shared.node.id, &req).await {
        Ok(_) => {
            tracing::debug!(count = req.allocs.len(), "sent allocation updates");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, count = req.allocs.len(), "sending allocation updates; will retry");
            shared.batcher.requeue(req.allocs);
            false
        }
    }
}

impl Shared {
    /// A server answered: the disconnect watchdog's clock starts again.
    fn contacted(&self) {
        *self.last_contact.lock().expect("contact time poisoned") = Some(std::time::Instant::now());
    }

    /// The driver and handle of a running task, for `exec`.
    pub(crate) fn running_task(
        &self,
        alloc_id: &str,
        task: &str,
    ) -> Result<(Arc<dyn crate::driver::Driver>, crate::driver::TaskHandle), String> {
        let handles = self
            .deps
            .handles
            .as_ref()
            .ok_or_else(|| "this client keeps no task handles".to_string())?;
        let handle = handles
            .load(alloc_id, task)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("task {task:?} of allocation {alloc_id} is not running"))?;
        let driver = self
            .deps
            .drivers
            .get(&handle.driver)
            .cloned()
            .ok_or_else(|| format!("driver {:?} is not available", handle.driver))?;
        Ok((driver, handle))
    }

    /// Starts runners for new allocations, stops those the server wants stopped, and
    /// drops finished runners the server no longer lists.
    fn reconcile(&self, allocs: Vec<Allocation>) {
        let mut runners = self.runners.lock().expect("runner table poisoned");
        let mut started = self.started.lock().expect("started set poisoned");
        let mut listed = HashSet::new();
        for a in allocs {
            listed.insert(a.id.clone());
            if let Some(r) = runners.get(&a.id) {
                if a.desired_status != DesiredStatus::Run {
                    if !r.stop_requested() {
                        let why = if a.desired_description.is_empty() {
                            format!("allocation desired status is {:?}", a.desired_status)
                        } else {
                            a.desired_description.clone()
                        };
                        tracing::info!(alloc = %a.id, "stopping allocation: {why}");
                        r.stop_after_shutdown_delay(&why);
                    }
                } else if !r.stop_requested() && !r.is_done() {
                    // Updated in place (a new job version or deployment): the runner
                    // takes it without restarting its tasks.
                    let id = a.id.clone();
                    if r.update(a) {
                        tracing::info!(alloc = %id, "taking an in-place update of the allocation");
                    }
                }
                continue;
            }
            if a.client_status.is_terminal() || started.contains(&a.id) {
                continue;
            }
            if a.desired_status != DesiredStatus::Run {
                // Stopped before this client ever ran it: say so, or the server would
                // count it as pending (and using the node's capacity) forever.
                started.insert(a.id.clone());
                self.batcher.push(
                    AllocClientUpdate {
                        deployment_health: None,
                        id: a.id.clone(),
                        client_status: ClientStatus::Complete,
                        client_description: "stopped before it started".to_string(),
                        task_states: a.task_states.clone(),
                        checks: Default::default(),
                    },
                    Motion::Settled,
                );
                continue;
            }
            if a.job.is_none() {
                tracing::error!(alloc = %a.id, "allocation arrived without its job; cannot run it");
                continue;
            }
            tracing::info!(alloc = %a.id, name = %a.name, "starting allocation");
            started.insert(a.id.clone());
            let id = a.id.clone();
            let h = allocrunner::spawn(
                a,
                &self.cfg.alloc_root(),
                self.deps.clone(),
                self.batcher.clone(),
            );
            runners.insert(id, h);
        }
        if !self.swept.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let leftovers = self
                .deps
                .recovered
                .take_unclaimed(|alloc| runners.contains_key(alloc));
            if !leftovers.is_empty() {
                let (store, cgroups) = (self.deps.handles.clone(), self.deps.cgroups.clone());
                tokio::task::spawn_blocking(move || {
                    for h in leftovers {
                        tracing::warn!(task = %h.id, "killing a task of an earlier client run that no allocation wants any more");
                        if let Some(store) = &store {
                            if let Err(e) = store.kill_recorded(&h, cgroups.as_deref()) {
                                tracing::warn!(task = %h.id, error = %e, "forgetting a leftover task");
                            }
                        }
                    }
                });
            }
        }
        runners.retain(|id, r| {
            if listed.contains(id) {
                return true;
            }
            if r.is_done() {
                self.deps.usage.forget(id);
                self.batcher.forget(id);
                return false;
            }
            // Ended and cleaning up (the end is reported first): nothing to stop.
            if !r.stop_requested() && !r.status().client_status.is_terminal() {
                tracing::info!(alloc = %id, "allocation no longer assigned to this node; stopping it");
                r.stop("allocation no longer assigned to this node");
            }
            true
        });
    }

    /// Finds an allocation by id or unique id prefix among the running ones and those
    /// with a directory on disk.
    pub(crate) fn find_alloc(&self, prefix: &str) -> Result<AllocRef, LookupError> {
        let mut ids: HashSet<String> = self
            .runners
            .lock()
            .expect("runner table poisoned")
            .keys()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect();
        if let Ok(rd) = std::fs::read_dir(self.cfg.alloc_root()) {
            for e in rd.flatten() {
                if let Ok(name) = e.file_name().into_string() {
                    if name.starts_with(prefix) && e.path().is_dir() {
                        ids.insert(name);
                    }
                }
            }
        }
        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort();
        match ids.len() {
            0 => Err(LookupError::NotFound(prefix.to_string())),
            1 => {
                let id = ids.remove(0);
                let runners = self.runners.lock().expect("runner table poisoned");
                let (tasks, status) = match runners.get(&id) {
                    Some(r) => (r.tasks.clone(), Some(r.watch())),
                    None => (
                        AllocDir::new(&self.cfg.alloc_root(), &id).task_names(),
                        None,
                    ),
                };
                Ok(AllocRef {
                    dir: AllocDir::new(&self.cfg.alloc_root(), &id),
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
    pub id: String,
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

#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("no allocation with id prefix {0:?} on this client")]
    NotFound(String),
    #[error("id prefix {0:?} matches several allocations")]
    Ambiguous(String, Vec<String>),
}

mod alloc_gc;
#[cfg(test)]
mod tests;
