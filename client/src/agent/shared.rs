//! `Shared`: what the agent's loops share (config, node, server API, the task runners'
//! dependencies, the runner table, the status batcher, registration and contact
//! state), and the stop-aware sleep and backoff every loop retries with.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_common::model::Node;
use tokio::sync::watch;

use super::lookup::{AllocLookup, RunnerTable};
use crate::allocrunner::taskrunner::TaskRunnerDeps;
use crate::batcher::UpdateBatcher;
use crate::config::ClientConfig;
use crate::rpc::ServerApi;
use orch_common::ids::AllocId;

/// Longest pause between retries (a restarted server is picked up within this).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the agent's loops share.
pub(super) struct Shared {
    pub(super) cfg: ClientConfig,
    pub(super) node: Arc<Node>,
    pub(super) api: ServerApi,
    pub(super) deps: TaskRunnerDeps,
    pub(super) runners: RunnerTable,
    /// Allocations this process already ran: never started twice.
    pub(super) started: Mutex<HashSet<AllocId>>,
    /// Whether the tasks of an earlier run that no allocation claims were killed
    /// (after the first allocation list from the servers).
    pub(super) swept: AtomicBool,
    pub(super) batcher: Arc<UpdateBatcher>,
    pub(super) registered: watch::Sender<bool>,
    /// When a server last answered a register or heartbeat (None: never yet).
    pub(super) last_contact: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    /// A server answered: the disconnect watchdog's clock starts again.
    pub(super) fn contacted(&self) {
        *self.last_contact.lock().expect("contact time poisoned") = Some(std::time::Instant::now());
    }

    /// What the client's HTTP routes may see: allocations, runners, task handles,
    /// drivers and usage.
    pub(super) fn lookup(&self) -> AllocLookup {
        AllocLookup::new(
            self.cfg.alloc_root(),
            self.runners.clone(),
            self.deps.drivers.clone(),
            self.deps.handles.clone(),
            self.deps.usage.clone(),
        )
    }
}

/// Sleeps `d` unless asked to stop; true when stopping.
pub(super) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// The next pause after a failed try: twice the last, at most `MAX_BACKOFF`.
pub(super) fn backoff(d: Duration) -> Duration {
    (d * 2).min(MAX_BACKOFF)
}
