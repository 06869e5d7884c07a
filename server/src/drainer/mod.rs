//! The node drainer: a background loop that empties draining nodes (`orch node drain`)
//! by marking their allocations for migration in batches (`Command::MigrateAllocs` plus a
//! `node-drain` evaluation per job), at each group's `migrate` pace, and ends each drain
//! once its node is empty (`Command::UpdateNodeDrain`). The decision itself is pure
//! (`decide`); this module only reads state, submits commands and waits.
//!
//! ```text
//!  loop: read draining nodes ──none──> wait for a node change (or IDLE_WAIT)
//!          │ some
//!          ▼
//!        read their jobs + allocations ─► decide(now) ─► MigrateAllocs (+ evals)
//!                                                     └► UpdateNodeDrain (complete)
//!        wait for any state change, or next_check (a replacement turning healthy,
//!        a deadline), at most BUSY_WAIT
//! ```
//!
//! The scheduler does the moving: a marked service or batch allocation gets a
//! replacement elsewhere and is stopped once that is placed (`PlaceReason::Migrate`); a
//! marked system allocation is stopped.

mod decide;

pub use decide::{decide, health, DrainDecision, Health};

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use orch_common::ids::{now_ms, JobId, NodeId};
use orch_common::model::{triggers, Allocation, DrainOutcome, Evaluation, Job, LastDrain, Node};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::{Command, CommandLog, LogError, StateError, StateStore, Table};

/// How long the loop sleeps with no draining node and no node change.
const IDLE_WAIT: Duration = Duration::from_secs(30);
/// The longest wait while a drain is in progress (a safety net: every state change and
/// every `next_check` wakes it sooner).
const BUSY_WAIT: Duration = Duration::from_secs(2);
/// The shortest wait, so a burst of changes does not become a busy loop.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Why one drainer pass failed (the loop logs it and tries again).
#[derive(Debug, thiserror::Error)]
pub enum DrainerError {
    #[error("reading drain state: {0}")]
    Read(#[from] StateError),
    #[error("marking allocations of job {job_id} for migration: {source}")]
    Migrate { job_id: JobId, source: LogError },
    #[error("completing the drain of node {node_id}: {source}")]
    Complete { node_id: NodeId, source: LogError },
    #[error("drainer read task failed: {0}")]
    Task(String),
}

/// What one pass saw.
enum Pass {
    /// No node is draining.
    Idle,
    /// Some node is draining; look again at this time (ms) even without a change.
    Draining { next_check: Option<u64> },
}

/// Starts the drainer; it stops when `shutdown` turns true.
pub fn spawn(log: CommandLog, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run(log, shutdown))
}

/// The drainer loop, until `shutdown` turns true. It keeps nothing a fresh run cannot
/// rebuild from the store (at worst a deadline evaluation is created twice), so the
/// server restarts it after a panic (`supervise::spawn_restarting`).
pub async fn run(log: CommandLog, mut shutdown: watch::Receiver<bool>) {
    let store = log.store().clone();
    // (job, deadline) pairs already given their deadline evaluation.
    let mut forced: BTreeSet<(JobId, u64)> = BTreeSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let seen_any = store.last_index();
        let seen_nodes = store.table_index(Table::Nodes);
        let pass = match pass(&log, &mut forced).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "drainer pass failed");
                Pass::Draining {
                    next_check: Some(now_ms() + BUSY_WAIT.as_millis() as u64),
                }
            }
        };
        let wait = async {
            match pass {
                Pass::Idle => {
                    store
                        .wait_for_index(Table::Nodes, seen_nodes, IDLE_WAIT)
                        .await;
                }
                Pass::Draining { next_check } => {
                    let timeout = next_check
                        .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
                        .unwrap_or(BUSY_WAIT)
                        .clamp(MIN_WAIT, BUSY_WAIT);
                    store.wait_for_last_index(seen_any + 1, timeout).await;
                }
            }
            // Blocking waits return at once while the store is closing; do not spin
            // in the moment before the shutdown signal arrives.
            if store.is_closing() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    tracing::debug!("drainer stopped");
}

/// What a pass read: the draining nodes, their jobs and every allocation of those.
struct DrainView {
    nodes: Vec<Node>,
    jobs: HashMap<JobId, Job>,
    allocs: Vec<Allocation>,
}

fn read_view(store: &StateStore) -> Result<Option<DrainView>, StateError> {
    let nodes: Vec<Node> = store
        .nodes()?
        .into_iter()
        .filter(|n| n.drain.is_some())
        .collect();
    if nodes.is_empty() {
        return Ok(None);
    }
    let mut job_ids = BTreeSet::new();
    for n in &nodes {
        for a in store.allocs_by_node(&n.id)? {
            if !a.is_terminal() {
                job_ids.insert(a.job_id);
            }
        }
    }
    let mut jobs = HashMap::new();
    let mut allocs = Vec::new();
    for id in job_ids {
        allocs.extend(store.allocs_by_job(&id)?);
        if let Some(job) = store.job(&id)? {
            jobs.insert(id, job);
        }
    }
    Ok(Some(DrainView {
        nodes,
        jobs,
        allocs,
    }))
}

/// One look at every draining node: mark what may move now, end drains that are done.
async fn pass(log: &CommandLog, forced: &mut BTreeSet<(JobId, u64)>) -> Result<Pass, DrainerError> {
    let store = log.store().clone();
    let now = now_ms();
    let found = tokio::task::spawn_blocking(move || -> Result<_, StateError> {
        let Some(view) = read_view(&store)? else {
            return Ok(None);
        };
        let decision = decide(&view.nodes, &view.jobs, &view.allocs, now);
        Ok(Some((view, decision)))
    })
    .await
    .map_err(|e| DrainerError::Task(e.to_string()))??;
    let Some((view, decision)) = found else {
        return Ok(Pass::Idle);
    };
    for (job_id, alloc_ids) in decision.migrate {
        let evals: Vec<Evaluation> = view
            .jobs
            .get(&job_id)
            .map(|job| Evaluation::for_job(job, triggers::NODE_DRAIN))
            .into_iter()
            .collect();
        tracing::info!(
            job_id = %job_id,
            allocs = alloc_ids.len(),
            "drain: migrating allocations"
        );
        log.submit(Command::MigrateAllocs { alloc_ids, evals })
            .await
            .map_err(|source| DrainerError::Migrate {
                job_id: job_id.clone(),
                source,
            })?;
    }
    for (job_id, deadline) in decision.force {
        let Some(job) = view.jobs.get(&job_id) else {
            continue;
        };
        if !forced.insert((job_id.clone(), deadline)) {
            continue;
        }
        tracing::info!(
            job_id = %job_id,
            "drain deadline passed: stopping what is still waiting to move"
        );
        log.submit(Command::UpsertEvals {
            evals: vec![Evaluation::for_job(job, triggers::NODE_DRAIN)],
        })
        .await
        .map_err(|source| DrainerError::Migrate {
            job_id: job_id.clone(),
            source,
        })?;
    }
    for node_id in decision.complete {
        let Some(strategy) = view
            .nodes
            .iter()
            .find(|n| n.id == node_id)
            .and_then(|n| n.drain.clone())
        else {
            continue;
        };
        log.submit(Command::UpdateNodeDrain {
            node_id: node_id.clone(),
            drain: None,
            eligibility: None,
            last_drain: Some(LastDrain {
                outcome: DrainOutcome::Complete,
                started_at: strategy.started_at,
                finished_at: now_ms(),
            }),
            evals: Vec::new(),
        })
        .await
        .map_err(|source| DrainerError::Complete {
            node_id: node_id.clone(),
            source,
        })?;
        tracing::info!(node_id = %node_id, "drain complete");
    }
    Ok(Pass::Draining {
        next_check: decision.next_check,
    })
}

#[cfg(test)]
mod tests;
