//! Server-side node heartbeat timers. Each registered node must heartbeat within its TTL
//! (plus a grace period); one that does not is marked `down` with a `node-update`
//! evaluation for every job that has live allocations there, so the scheduler marks
//! them lost and replaces them. A node running allocations whose group sets
//! `disconnect.lost_after` is first marked `disconnected` instead: the scheduler keeps
//! those allocations (or places stand-ins, with `replace = true`) until their
//! `lost_after`, and the node goes `down` once the longest of them has passed.
//! Timers live in memory and are rebuilt when the server starts.
//!
//! ```text
//!  register / heartbeat ──► reset(node): deadline = now + ttl + grace ──┐
//!                                                                       ▼
//!  expiry loop: sleep until the earliest deadline (or a reset, or shutdown)
//!      deadline passed, node ready, tolerant allocs ─► disconnected + evals;
//!                               deadline = now + longest lost_after
//!      deadline passed otherwise ──► UpdateNodeStatus { down, evals: node-update per job }
//!  heartbeat from a disconnected or down node ──► ready + node_ready_evals
//! ```
//!
//! The other way round, a node that becomes ready (registers, heartbeats back from
//! down, turns eligible) gets `node_ready_evals`: one per system/sysbatch job and one
//! per job with allocations there, so system jobs reach nodes that join later.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_common::duration::millis_saturating;
use orch_common::ids::{JobId, NodeId};
use orch_common::model::{triggers, Eligibility, Evaluation, Job, JobType, NodeStatus};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::state::{Command, CommandLog, LogError, StateError, StateStore};

/// Spread heartbeats so the servers see at most this many per second.
const MAX_HEARTBEATS_PER_SECOND: f64 = 50.0;
/// How long the expiry loop sleeps when there is no timer at all.
const IDLE_SLEEP: Duration = Duration::from_secs(3600);

/// What can go wrong while marking a node down.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("reading node {node_id}: {source}")]
    Read { node_id: NodeId, source: StateError },
    #[error("changing node {node_id}: {source}")]
    Submit { node_id: NodeId, source: LogError },
    #[error("state read task for node {node_id} failed: {message}")]
    Task { node_id: NodeId, message: String },
}

/// The heartbeat timers. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Heartbeats {
    inner: Arc<Inner>,
}

struct Inner {
    min_ttl: Duration,
    grace: Duration,
    /// Node id -> when it is declared down. A std mutex: never held across an await.
    deadlines: Mutex<HashMap<NodeId, Instant>>,
    changed: Notify,
}

impl Heartbeats {
    pub fn new(min_ttl: Duration, grace: Duration) -> Heartbeats {
        Heartbeats {
            inner: Arc::new(Inner {
                min_ttl,
                grace,
                deadlines: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            }),
        }
    }

    fn deadlines(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.inner
            .deadlines
            .lock()
            .expect("heartbeat timers mutex poisoned")
    }

    /// The TTL clients are told: at least `min_ttl`, longer with many nodes so the
    /// servers see at most 50 heartbeats a second.
    pub fn ttl(&self) -> Duration {
        let nodes = self.deadlines().len() as f64;
        self.inner
            .min_ttl
            .max(Duration::from_secs_f64(nodes / MAX_HEARTBEATS_PER_SECOND))
    }

    /// Restarts a node's timer; returns the TTL to tell the client.
    pub fn reset(&self, node_id: &NodeId) -> Duration {
        let ttl = self.ttl();
        let deadline = after(ttl.saturating_add(self.inner.grace));
        self.deadlines().insert(node_id.clone(), deadline);
        self.inner.changed.notify_one();
        ttl
    }

    /// Sets a node's timer to fire at `deadline` (the end of its disconnect window).
    fn schedule(&self, node_id: &NodeId, deadline: Instant) {
        self.deadlines().insert(node_id.clone(), deadline);
        self.inner.changed.notify_one();
    }

    /// Forgets a node's timer (it is down or gone).
    pub fn remove(&self, node_id: &NodeId) {
        self.deadlines().remove(node_id);
        self.inner.changed.notify_one();
    }

    /// Node ids with a running timer.
    pub fn tracked(&self) -> BTreeSet<NodeId> {
        self.deadlines().keys().cloned().collect()
    }

    /// Starts a timer for every node that is not down (server start): a fresh TTL, or
    /// for a disconnected node what is left of its disconnect window.
    pub fn restore(&self, store: &StateStore) -> Result<usize, StateError> {
        let mut n = 0;
        let now_ms = now_ms();
        for node in store.nodes()? {
            match node.status {
                NodeStatus::Down => continue,
                NodeStatus::Disconnected => {
                    let (_, window) = live_jobs_and_window(store, &node.id)?;
                    let ends = node
                        .status_updated_at
                        .saturating_add(millis_saturating(window.unwrap_or_default()));
                    let left = Duration::from_millis(ends.saturating_sub(now_ms));
                    self.schedule(&node.id, after(left));
                }
                _ => {
                    self.reset(&node.id);
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Drops every timer and starts them again from `store` as `restore` does (a
    /// state snapshot was restored: its nodes are the ones to watch, each with a
    /// fresh TTL, and a node it does not hold is not expired).
    pub fn restart_from(&self, store: &StateStore) -> Result<usize, StateError> {
        self.deadlines().clear();
        self.restore(store)
    }

    fn take_expired(&self, now: Instant) -> Vec<NodeId> {
        let mut deadlines = self.deadlines();
        let expired: Vec<NodeId> = deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            deadlines.remove(id);
        }
        expired
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines().values().min().copied()
    }

    /// Runs the expiry loop until `shutdown` turns true.
    pub fn spawn(&self, log: CommandLog, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(log, shutdown))
    }

    /// The expiry loop, until `shutdown` turns true. The timers live in `self` (shared
    /// with the endpoints that reset them), not in the loop, so the server restarts it
    /// after a panic: a fresh run picks up every deadline where the old one left it.
    pub fn run(
        &self,
        log: CommandLog,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let timers = self.clone();
        async move {
            loop {
                let wake_at = timers
                    .next_deadline()
                    .unwrap_or_else(|| Instant::now() + IDLE_SLEEP);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake_at) => {}
                    _ = timers.inner.changed.notified() => continue,
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
                for node_id in timers.take_expired(Instant::now()) {
                    match expire(&log, &node_id).await {
                        Ok(Some(Expired::Disconnected(window))) => {
                            tracing::warn!(
                                node_id = %node_id,
                                window_s = window.as_secs_f64(),
                                "node missed its heartbeat: marked disconnected"
                            );
                            timers.schedule(&node_id, after(window));
                        }
                        Ok(Some(Expired::Down)) => {
                            tracing::warn!(
                                node_id = %node_id,
                                "node missed its heartbeat: marked down"
                            )
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "heartbeat expiry failed"),
                    }
                }
            }
            tracing::debug!("heartbeat loop stopped");
        }
    }
}

/// The `node-update` evaluations for a node that became ready (registered, came back,
/// or turned eligible again), as Nomad's createNodeEvals: one per `system`/`sysbatch`
/// job that runs in the node's datacenter (so it gets its allocation there) and one per
/// other job with live allocations on the node. One per job, never one per alloc.
pub fn node_ready_evals(
    store: &StateStore,
    node_id: &NodeId,
) -> Result<Vec<Evaluation>, StateError> {
    let Some(node) = store.node(node_id)? else {
        return Ok(Vec::new());
    };
    let mut with_allocs = BTreeSet::new();
    for alloc in store.allocs_by_node(node_id)? {
        if !alloc.client_status.is_terminal() {
            with_allocs.insert(alloc.job_id);
        }
    }
    let mut evals = Vec::new();
    for job in store.jobs()? {
        let system = matches!(job.job_type, JobType::System | JobType::Sysbatch)
            && !job.stop
            && node.in_datacenters(&job.datacenters);
        if system || with_allocs.contains(&job.id) {
            let mut eval = Evaluation::for_job(&job, triggers::NODE_UPDATE);
            eval.node_id = Some(node_id.clone());
            evals.push(eval);
        }
    }
    Ok(evals)
}

/// Sets a node's scheduling eligibility (the `orch node eligibility` path). A node that
/// turns eligible gets `node_ready_evals` in the same command, so its system jobs place
/// there; one that turns ineligible keeps what it runs. Returns false when the node is
/// unknown or already has that eligibility.
pub async fn set_eligibility(
    log: &CommandLog,
    node_id: &NodeId,
    eligibility: Eligibility,
) -> Result<bool, HeartbeatError> {
    let store = log.store().clone();
    let id = node_id.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, StateError> {
        let Some(node) = store.node(&id)? else {
            return Ok(None);
        };
        if node.eligibility == eligibility {
            return Ok(Some(None));
        }
        let evals = if eligibility == Eligibility::Eligible && node.status == NodeStatus::Ready {
            node_ready_evals(&store, &id)?
        } else {
            Vec::new()
        };
        Ok(Some(Some(evals)))
    })
    .await
    .map_err(|e| HeartbeatError::Task {
        node_id: node_id.clone(),
        message: e.to_string(),
    })?
    .map_err(|source| HeartbeatError::Read {
        node_id: node_id.clone(),
        source,
    })?;
    let Some(Some(evals)) = found else {
        return Ok(false);
    };
    log.submit(Command::UpdateNodeEligibility {
        node_id: node_id.clone(),
        eligibility,
        evals,
    })
    .await
    .map_err(|source| HeartbeatError::Submit {
        node_id: node_id.clone(),
        source,
    })?;
    Ok(true)
}

/// The instant `d` from now. `d` may be a user's `lost_after` (bounded by the spec, but
/// a job stored before the bounds is not): past the longest duration a spec may give,
/// it is "that long", never an `Instant + Duration` overflow that would panic the loop.
fn after(d: Duration) -> Instant {
    Instant::now() + d.min(orch_common::duration::MAX)
}

/// What a missed heartbeat did to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Marked disconnected; it goes down after this window unless it comes back.
    Disconnected(Duration),
    Down,
}

/// The jobs with live allocations on a node, and the longest `disconnect.lost_after`
/// among their groups that run there (None: nothing there tolerates a disconnect).
fn live_jobs_and_window(
    store: &StateStore,
    node_id: &NodeId,
) -> Result<(Vec<Job>, Option<Duration>), StateError> {
    let mut groups: BTreeMap<JobId, BTreeSet<String>> = BTreeMap::new();
    for alloc in store.allocs_by_node(node_id)? {
        if !alloc.client_status.is_terminal() {
            groups.entry(alloc.job_id).or_default().insert(alloc.group);
        }
    }
    let mut jobs: Vec<Job> = Vec::new();
    let mut window: Option<Duration> = None;
    for (job_id, names) in groups {
        let Some(job) = store.job(&job_id)? else {
            continue;
        };
        let tolerated = names
            .iter()
            .filter_map(|g| job.group(g)?.disconnect.as_ref()?.lost_after);
        window = window.into_iter().chain(tolerated).max();
        jobs.push(job);
    }
    Ok((jobs, window))
}

fn node_update_evals(jobs: &[Job], node_id: &NodeId) -> Vec<Evaluation> {
    jobs.iter()
        .map(|job| {
            let mut eval = Evaluation::for_job(job, triggers::NODE_UPDATE);
            eval.node_id = Some(node_id.clone());
            eval
        })
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A node missed its heartbeat: a ready node running allocations that tolerate a
/// disconnect becomes `disconnected`; any other (or one whose disconnect window has
/// passed) becomes `down`. Either way with one `node-update` evaluation per job that
/// has live allocations there. None when the node is gone or already down.
pub async fn expire(log: &CommandLog, node_id: &NodeId) -> Result<Option<Expired>, HeartbeatError> {
    let Some((node, jobs, window)) = read_node_jobs(log, node_id).await? else {
        return Ok(None);
    };
    let (expired, status) = match (node.status, window) {
        (NodeStatus::Down, _) => return Ok(None),
        (NodeStatus::Ready | NodeStatus::Initializing, Some(w)) => {
            (Expired::Disconnected(w), NodeStatus::Disconnected)
        }
        _ => (Expired::Down, NodeStatus::Down),
    };
    submit_status(log, node_id, status, node_update_evals(&jobs, node_id)).await?;
    Ok(Some(expired))
}

/// Marks a node down with one `node-update` evaluation per job that has live
/// allocations on it (the client said it is going away). Returns false when the node
/// is gone or already down.
pub async fn mark_down(log: &CommandLog, node_id: &NodeId) -> Result<bool, HeartbeatError> {
    let Some((node, jobs, _)) = read_node_jobs(log, node_id).await? else {
        return Ok(false);
    };
    if node.status == NodeStatus::Down {
        return Ok(false);
    }
    submit_status(
        log,
        node_id,
        NodeStatus::Down,
        node_update_evals(&jobs, node_id),
    )
    .await?;
    Ok(true)
}

type NodeJobs = (orch_common::model::Node, Vec<Job>, Option<Duration>);

async fn read_node_jobs(
    log: &CommandLog,
    node_id: &NodeId,
) -> Result<Option<NodeJobs>, HeartbeatError> {
    let store = log.store().clone();
    let id = node_id.clone();
    tokio::task::spawn_blocking(move || -> Result<_, StateError> {
        let Some(node) = store.node(&id)? else {
            return Ok(None);
        };
        let (jobs, window) = live_jobs_and_window(&store, &id)?;
        Ok(Some((node, jobs, window)))
    })
    .await
    .map_err(|e| HeartbeatError::Task {
        node_id: node_id.clone(),
        message: e.to_string(),
    })?
    .map_err(|source| HeartbeatError::Read {
        node_id: node_id.clone(),
        source,
    })
}

async fn submit_status(
    log: &CommandLog,
    node_id: &NodeId,
    status: NodeStatus,
    evals: Vec<Evaluation>,
) -> Result<(), HeartbeatError> {
    log.submit(Command::UpdateNodeStatus {
        node_id: node_id.clone(),
        status,
        evals,
    })
    .await
    .map_err(|source| HeartbeatError::Submit {
        node_id: node_id.clone(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use orch_common::mock::{alloc_on, JobBuilder, NodeBuilder};

    use super::*;

    /// Registers `nodes`, the job, and one allocation of it on the first node.
    async fn job_on_node(log: &CommandLog, nodes: &[&str], job: &Job) {
        for id in nodes {
            log.submit(Command::UpsertNode {
                node: NodeBuilder::new().id(*id).build(),
            })
            .await
            .expect("node");
        }
        log.submit(Command::UpsertJob {
            job: job.clone(),
            eval: None,
            enforce_index: None,
        })
        .await
        .expect("job");
        log.submit(Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![alloc_on("a1", job, nodes[0], 0)],
            stopped: vec![],
            evals: vec![],
        })
        .await
        .expect("plan");
    }

    #[test]
    fn ttl_grows_with_the_number_of_nodes() {
        let hb = Heartbeats::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(hb.ttl(), Duration::from_secs(10));
        for i in 0..1000 {
            hb.reset(&format!("n{i}").into());
        }
        assert_eq!(hb.ttl(), Duration::from_secs(20));
        hb.remove(&"n0".into());
        assert_eq!(hb.tracked().len(), 999);
    }

    #[tokio::test]
    async fn a_ready_node_gets_evals_for_system_jobs_and_jobs_with_allocs_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let log = CommandLog::start(store.clone(), vec![]).expect("log");
        let service = JobBuilder::new("web").build();
        let idle = JobBuilder::new("idle").build();
        let system = JobBuilder::new("agent").job_type(JobType::System).build();
        let elsewhere = JobBuilder::new("far")
            .job_type(JobType::Sysbatch)
            .datacenters(&["dc9"])
            .build();
        log.submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await
        .expect("node");
        for job in [&service, &idle, &system, &elsewhere] {
            log.submit(Command::UpsertJob {
                job: job.clone(),
                eval: None,
                enforce_index: None,
            })
            .await
            .expect("job");
        }
        log.submit(Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![alloc_on("a1", &service, "n1", 0)],
            stopped: vec![],
            evals: vec![],
        })
        .await
        .expect("plan");

        let evals = node_ready_evals(&store, &"n1".into()).expect("evals");
        let jobs: BTreeSet<&str> = evals.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(jobs, BTreeSet::from(["agent", "web"]));
        assert!(evals
            .iter()
            .all(|e| e.triggered_by == "node-update" && e.node_id.as_deref() == Some("n1")));
        assert!(node_ready_evals(&store, &"nope".into())
            .expect("evals")
            .is_empty());
        log.shutdown().await;
    }

    #[tokio::test]
    async fn a_node_turning_eligible_gets_evals_for_its_system_jobs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let log = CommandLog::start(store.clone(), vec![]).expect("log");
        let node = NodeBuilder::new()
            .id("n1")
            .eligibility(Eligibility::Ineligible)
            .build();
        log.submit(Command::UpsertNode { node })
            .await
            .expect("node");
        let system = JobBuilder::new("agent").job_type(JobType::System).build();
        log.submit(Command::UpsertJob {
            job: system,
            eval: None,
            enforce_index: None,
        })
        .await
        .expect("job");

        assert!(set_eligibility(&log, &"n1".into(), Eligibility::Eligible)
            .await
            .expect("eligible"));
        assert_eq!(
            store.node("n1").expect("read").expect("n1").eligibility,
            Eligibility::Eligible
        );
        let evals = store.evals_by_job("agent").expect("evals");
        assert_eq!(evals.len(), 1);
        assert_eq!(evals[0].triggered_by, "node-update");
        // Already eligible: nothing to do, no second eval.
        assert!(!set_eligibility(&log, &"n1".into(), Eligibility::Eligible)
            .await
            .expect("again"));
        assert!(set_eligibility(&log, &"n1".into(), Eligibility::Ineligible)
            .await
            .expect("ineligible"));
        assert_eq!(store.evals_by_job("agent").expect("evals").len(), 1);
        assert!(
            !set_eligibility(&log, &"ghost".into(), Eligibility::Eligible)
                .await
                .expect("unknown")
        );
        log.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_node_is_marked_down_with_evals_for_its_jobs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let log = CommandLog::start(store.clone(), vec![]).expect("log");
        let job = JobBuilder::new("web").build();
        job_on_node(&log, &["n1", "n2"], &job).await;

        let hb = Heartbeats::new(Duration::from_millis(100), Duration::from_millis(50));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = hb.spawn(log.clone(), stop_rx);
        hb.reset(&"n1".into());
        // n2 keeps heartbeating.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            hb.reset(&"n2".into());
            if store.node("n1").expect("read").expect("n1").status == NodeStatus::Down {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "n1 never marked down");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            store.node("n2").expect("read").expect("n2").status,
            NodeStatus::Ready
        );
        let evals = store.evals_by_job("web").expect("evals");
        assert_eq!(evals.len(), 1);
        assert_eq!(evals[0].triggered_by, "node-update");
        assert_eq!(evals[0].node_id.as_deref(), Some("n1"));
        assert!(!hb.tracked().contains("n1"));

        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("loop stops")
            .expect("task");
        log.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_node_with_tolerant_allocs_is_disconnected_then_down() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let log = CommandLog::start(store.clone(), vec![]).expect("log");
        let job = JobBuilder::new("web")
            .disconnect(Duration::from_millis(400), false)
            .build();
        job_on_node(&log, &["n1"], &job).await;

        let hb = Heartbeats::new(Duration::from_millis(100), Duration::from_millis(50));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = hb.spawn(log.clone(), stop_rx);
        hb.reset(&"n1".into());
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = store.node("n1").expect("read").expect("n1").status;
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if status == NodeStatus::Down {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never down: {seen:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            seen,
            vec![
                NodeStatus::Ready,
                NodeStatus::Disconnected,
                NodeStatus::Down
            ]
        );
        // One node-update evaluation for each of the two changes.
        let evals = store.evals_by_job("web").expect("evals");
        assert_eq!(evals.len(), 2);
        assert!(evals.iter().all(|e| e.triggered_by == "node-update"));

        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("loop stops")
            .expect("task");
        log.shutdown().await;
    }

    #[tokio::test]
    async fn restore_starts_timers_for_nodes_that_are_not_down() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let down = NodeBuilder::new().id("n2").status(NodeStatus::Down).build();
        store
            .apply(
                1,
                &Command::UpsertNode {
                    node: NodeBuilder::new().id("n1").build(),
                },
            )
            .expect("n1");
        store
            .apply(2, &Command::UpsertNode { node: down })
            .expect("n2");
        let hb = Heartbeats::new(Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(hb.restore(&store).expect("restore"), 1);
        assert_eq!(hb.tracked().into_iter().collect::<Vec<_>>(), vec!["n1"]);
    }

    #[tokio::test]
    async fn a_disconnect_window_no_clock_can_add_does_not_stop_the_loop() {
        // Stored before the spec bounds existed (or written by an older server): the
        // expiry loop must treat it as "very long", not panic on `Instant + window`.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let log = CommandLog::start(store.clone(), vec![]).expect("log");
        let job = JobBuilder::new("web")
            .disconnect(Duration::from_secs(200_000_000_000_000 * 86400), false)
            .build();
        job_on_node(&log, &["n1"], &job).await;

        let hb = Heartbeats::new(Duration::from_millis(50), Duration::from_millis(10));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = hb.spawn(log.clone(), stop_rx);
        hb.reset(&"n1".into());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.node("n1").expect("read").expect("n1").status != NodeStatus::Disconnected {
            assert!(std::time::Instant::now() < deadline, "never disconnected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The loop is still alive: it answers a fresh timer and the shutdown.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "the heartbeat loop died");
        assert!(hb.tracked().contains(&NodeId::from("n1")));
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("loop stops")
            .expect("task did not panic");
        log.shutdown().await;
    }
}
