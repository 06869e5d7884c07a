//! The allocation watch: long-polls the node's allocations (a blocking query) and
//! reconciles the alloc runners with them (start new ones, hand in-place updates to
//! their runners, stop what the servers stopped or no longer list, kill the leftover
//! tasks of an earlier run that no allocation claims), and removes the dirs of
//! allocations the servers garbage collected (`alloc_gc`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use orch_common::api::AllocClientUpdate;
use orch_common::model::{Allocation, ClientStatus, DesiredStatus};
use tokio::sync::watch;

use super::alloc_gc;
use super::shared::{backoff, sleep_or_stop, Shared};
use crate::allocrunner;
use crate::batcher::Motion;

/// How long the server may hold the allocation watch.
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// Long-polls the node's allocations and reconciles the alloc runners with them.
pub(super) async fn watch_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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

impl Shared {
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
                } else if r.is_done() && !a.client_status.is_terminal() {
                    // The servers think it runs but it ended here: their state was
                    // restored from a snapshot taken before it ended. Tell them again.
                    let status = r.status();
                    if status.client_status.is_terminal() {
                        tracing::info!(alloc = %a.id, "reporting again how an allocation ended (the servers list it as running)");
                        self.batcher.push(status, Motion::Settled);
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
            if a.client_status.is_terminal() {
                continue;
            }
            if started.contains(&a.id) {
                if a.desired_status == DesiredStatus::Run {
                    // Ran here and forgotten, yet listed as live: the servers' state
                    // was restored from a snapshot taken while it ran. It runs no
                    // more; `lost` lets the scheduler replace it.
                    tracing::info!(alloc = %a.id, "reporting a forgotten allocation the servers list as live as lost");
                    self.batcher.push(
                        AllocClientUpdate {
                            deployment_health: None,
                            id: a.id.clone(),
                            client_status: ClientStatus::Lost,
                            client_description: "no longer run by this client (the servers' \
                                                 state was restored from an older snapshot)"
                                .to_string(),
                            task_states: a.task_states.clone(),
                            checks: Default::default(),
                        },
                        Motion::Settled,
                    );
                }
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
}
