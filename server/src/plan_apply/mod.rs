//! The plan applier: the only writer of allocations. Workers send it the plans their
//! schedulers computed; it checks them one at a time, in arrival order, each against
//! the newest state (optimistic concurrency: a plan was computed on a snapshot that may
//! be stale by now), and hands each to the log without waiting for the previous commit.
//!
//! ```text
//!  worker ── PlanRequest{plan, reply, checked} ──► mpsc ──► applier task
//!    prepare (one plan at a time):
//!      for each node with placements:
//!        node exists, ready and eligible?   no ──► reject the node
//!        existing allocs holding resources + placements in flight
//!          - the plan's stops - the plan's in-place updates + the plan's placements
//!          fit cpu / memory / ports?         no ──► reject the node
//!      stops always commit; all_at_once and any rejection ──► commit nothing
//!      hold the new placements in flight (snapshots count them as used)
//!      Command::ApplyPlan{accepted allocs, stops, evals} ──► log queue
//!      tell `checked` (the worker's compute turn ends)
//!    committed (its own task, while the next plan is prepared):
//!      wait for the commit (it drops the placements from in flight)
//!      reply PlanResult{committed parts, alloc_index, refresh_index if rejected}
//! ```
//!
//! Wiring (`server.rs`): `let applier = PlanApplier::spawn(store, log, shutdown_rx);`,
//! give `applier.sender()` to `worker::spawn_workers`, and on shutdown
//! `applier.join().await` after the workers stopped.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use orch_common::ids::{AllocId, EvalId, JobId, NodeId};
use orch_common::model::{triggers, Allocation, Evaluation, Node, NodeAllocated, Plan, PlanResult};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::state::{Command, CommandLog, LogError, StateError, StateStore};

/// How many plans may wait for the applier.
const QUEUE_DEPTH: usize = 64;

/// Why a plan could not be applied (the scheduler's eval is then nacked and retried).
#[derive(Debug, thiserror::Error)]
pub enum PlanApplyError {
    #[error("plan for evaluation {eval_id}: reading state: {source}")]
    Read { eval_id: EvalId, source: StateError },
    #[error("plan for evaluation {eval_id}: committing: {source}")]
    Commit { eval_id: EvalId, source: LogError },
    #[error("plan for evaluation {eval_id}: check task failed: {message}")]
    Task { eval_id: EvalId, message: String },
}

/// A plan and where to send the answer.
#[derive(Debug)]
pub struct PlanRequest {
    pub plan: Plan,
    pub reply: oneshot::Sender<Result<PlanResult, PlanApplyError>>,
    /// Told once the plan is checked and its room held (before its commit).
    pub checked: Option<oneshot::Sender<()>>,
}

/// The running applier: its queue and its task.
pub struct PlanApplier {
    tx: mpsc::Sender<PlanRequest>,
    task: JoinHandle<()>,
}

impl PlanApplier {
    /// Starts the applier task; it runs until `shutdown` turns true (or every sender
    /// is dropped). Plans still queued then are dropped, which their workers see as an
    /// error (and nack).
    pub fn spawn(
        store: StateStore,
        log: CommandLog,
        shutdown: watch::Receiver<bool>,
    ) -> PlanApplier {
        PlanApplier::spawn_with(store, log, shutdown, tokio::spawn)
    }

    /// `spawn`, the task started by `start` (the server's: `supervise::spawn_required`,
    /// as the loop owns the plan queue and a restart would lose what is in it).
    pub fn spawn_with(
        store: StateStore,
        log: CommandLog,
        mut shutdown: watch::Receiver<bool>,
        start: impl FnOnce(BoxFuture<'static, ()>) -> JoinHandle<()>,
    ) -> PlanApplier {
        let (tx, mut rx) = mpsc::channel::<PlanRequest>(QUEUE_DEPTH);
        let task = start(Box::pin(async move {
            loop {
                let req = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    req = rx.recv() => match req {
                        Some(req) => req,
                        None => break,
                    },
                };
                let eval_id = req.plan.eval_id.clone();
                let reply = req.reply;
                let checked = req.checked;
                let answer = move |result: Result<PlanResult, PlanApplyError>| {
                    if let Err(e) = &result {
                        tracing::warn!(%eval_id, error = %e, "plan not applied");
                    }
                    // The worker may have given up waiting; the commit stands anyway.
                    let _ = reply.send(result);
                };
                let prepared = prepare(&store, &log, req.plan).await;
                if let Some(checked) = checked {
                    let _ = checked.send(());
                }
                match prepared {
                    // The next plan is checked while this one commits.
                    Ok(prepared) => {
                        tokio::spawn(async move { answer(prepared.committed().await) });
                    }
                    Err(e) => answer(Err(e)),
                }
            }
            tracing::debug!("plan applier stopped");
        }));
        PlanApplier { tx, task }
    }

    /// Where workers submit plans.
    pub fn sender(&self) -> mpsc::Sender<PlanRequest> {
        self.tx.clone()
    }

    /// Waits for the task to end (after shutdown was signalled).
    pub async fn join(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "plan applier task failed");
        }
    }
}

/// What the check decided for one plan.
#[derive(Debug, Default)]
struct Verdict {
    accepted: BTreeSet<NodeId>,
    rejected: BTreeSet<NodeId>,
    /// Evaluations for the jobs whose allocations accepted nodes evict.
    evals: Vec<Evaluation>,
}

/// Checks, commits and answers one plan.
pub async fn apply(
    store: &StateStore,
    log: &CommandLog,
    plan: Plan,
) -> Result<PlanResult, PlanApplyError> {
    prepare(store, log, plan).await?.committed().await
}

/// A plan checked and handed to the log, its commit still to come.
pub struct Prepared {
    eval_id: EvalId,
    store: StateStore,
    result: PlanResult,
    /// The command's commit, when the plan changes anything.
    commit: Option<BoxFuture<'static, Result<u64, LogError>>>,
    /// New placements counted as in flight until the commit.
    held: Vec<AllocId>,
    rejected: bool,
}

impl Prepared {
    /// Waits for the commit and gives the worker its answer.
    pub async fn committed(mut self) -> Result<PlanResult, PlanApplyError> {
        if let Some(commit) = self.commit.take() {
            match commit.await {
                Ok(index) => self.result.alloc_index = index,
                Err(source) => {
                    self.store.release_in_flight(self.held.iter());
                    return Err(PlanApplyError::Commit {
                        eval_id: self.eval_id,
                        source,
                    });
                }
            }
        }
        if self.rejected {
            self.result.refresh_index = self.result.alloc_index.max(self.store.last_index()).max(1);
        }
        Ok(self.result)
    }
}

/// Checks a plan against the newest state (counting plans still committing), holds
/// its new placements in flight and queues its command. The next plan can be checked
/// as soon as this returns: the log commits in queue order.
pub async fn prepare(
    store: &StateStore,
    log: &CommandLog,
    plan: Plan,
) -> Result<Prepared, PlanApplyError> {
    let eval_id = plan.eval_id.clone();
    let (mut plan, mut verdict) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let verdict = check_plan(&store, &plan);
            verdict.map(|v| (plan, v))
        })
        .await
        .map_err(|e| PlanApplyError::Task {
            eval_id: eval_id.clone(),
            message: e.to_string(),
        })??
    };
    let all_or_nothing = plan.all_at_once && !verdict.rejected.is_empty();
    let mut result = PlanResult::default();
    let mut allocs: Vec<Allocation> = Vec::new();
    let mut stopped: Vec<Allocation> = Vec::new();
    if !all_or_nothing {
        // Empty lists in the plan count as committed nodes for `is_full_commit`.
        for (node, stops) in std::mem::take(&mut plan.node_update) {
            stopped.extend(stops);
            result.updated_nodes.insert(node);
        }
        // Moved, not copied: a thousand placements go into the command as they are.
        for (node, placed) in std::mem::take(&mut plan.node_allocation) {
            if !verdict.accepted.contains(&node) {
                continue;
            }
            allocs.extend(placed.into_iter().map(compact));
            // Evictions commit only with the placements they make room for.
            stopped.extend(plan.node_preemptions.remove(&node).into_iter().flatten());
            result.allocated_nodes.insert(node);
        }
    }
    let mut prepared = Prepared {
        eval_id: eval_id.clone(),
        store: store.clone(),
        result,
        commit: None,
        held: Vec::new(),
        rejected: !verdict.rejected.is_empty(),
    };
    if verdict.rejected.is_empty() {
        tracing::trace!(%eval_id, "plan accepted");
    } else {
        tracing::debug!(%eval_id, rejected = ?verdict.rejected, "plan partly rejected");
    }
    // Deployment changes go with the allocations they are about (none when the
    // all-at-once plan was rejected).
    let (deployment, deployment_updates) = if all_or_nothing {
        (None, Vec::new())
    } else {
        (
            plan.deployment.take(),
            std::mem::take(&mut plan.deployment_updates),
        )
    };
    if allocs.is_empty()
        && stopped.is_empty()
        && deployment.is_none()
        && deployment_updates.is_empty()
    {
        return Ok(prepared);
    }
    // A placement with create_index 0 is new: its room is not in the state yet.
    let new: Vec<&Allocation> = allocs.iter().filter(|a| a.create_index == 0).collect();
    store.hold_in_flight(new.iter().copied());
    prepared.held = new.iter().map(|a| a.id.clone()).collect();
    let queued = log.submit_later(Command::ApplyPlan {
        allocs,
        stopped,
        evals: if all_or_nothing {
            Vec::new()
        } else {
            std::mem::take(&mut verdict.evals)
        },
        deployment,
        deployment_updates,
    });
    match queued {
        Ok(commit) => {
            prepared.commit = Some(Box::pin(async move { commit.await.map(|o| o.index) }));
            Ok(prepared)
        }
        Err(source) => {
            store.release_in_flight(prepared.held.iter());
            Err(PlanApplyError::Commit { eval_id, source })
        }
    }
}

/// The allocation as stored: no embedded job (served from the job's versions) and of
/// the placement scores only the chosen node's, which keeps each row (and the command
/// that carries it) a fraction of the size at a million allocations.
fn compact(mut a: Allocation) -> Allocation {
    a.job = None;
    if let Some(m) = a.metrics.as_mut() {
        m.scores.retain(|node, _| *node == a.node_id);
    }
    a
}

/// Re-checks every node that gets placements against the current state.
fn check_plan(store: &StateStore, plan: &Plan) -> Result<Verdict, PlanApplyError> {
    let read_err = |source| PlanApplyError::Read {
        eval_id: plan.eval_id.clone(),
        source,
    };
    // One snapshot for the whole check: node, per-node sums and the allocations the
    // plan replaces are then of one index even while clients report.
    let snap = store.snapshot().map_err(read_err)?;
    let mut verdict = Verdict::default();
    for (node_id, placed) in &plan.node_allocation {
        if placed.is_empty() {
            verdict.accepted.insert(node_id.clone());
            continue;
        }
        let node = snap.node(node_id);
        // Stops, evictions and in-place updates free their room before the re-check.
        // A placement with create_index 0 is new (the store gives every row one >= 1).
        let mut base = snap.node_allocated(node_id);
        let leaving: BTreeSet<&AllocId> = [
            plan.node_update.get(node_id),
            plan.node_preemptions.get(node_id),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .chain(placed.iter().filter(|a| a.create_index > 0))
        .map(|a| &a.id)
        .collect();
        for id in leaving {
            if let Some(a) = snap.try_alloc(id).map_err(read_err)? {
                if a.holds_resources() && a.node_id == *node_id {
                    base.remove(&a);
                }
            }
        }
        match node_fits_sum(node.as_ref(), base, placed) {
            Ok(()) => {
                verdict.accepted.insert(node_id.clone());
            }
            Err(why) => {
                tracing::debug!(eval_id = %plan.eval_id, %node_id, why, "node rejected from plan");
                verdict.rejected.insert(node_id.clone());
            }
        }
    }
    // Jobs that lose allocations to preemption get an evaluation to place them again
    // (one per job, committed with the evictions).
    let mut preempted: BTreeSet<&JobId> = BTreeSet::new();
    for (node_id, victims) in &plan.node_preemptions {
        if verdict.accepted.contains(node_id) {
            preempted.extend(victims.iter().map(|a| &a.job_id));
        }
    }
    for job_id in preempted {
        if let Some(job) = store.job(job_id).map_err(read_err)? {
            verdict
                .evals
                .push(Evaluation::for_job(&job, triggers::PREEMPTION));
        }
    }
    Ok(verdict)
}

/// Whether `placed` fits on `node` next to what stays there: `staying` is what the
/// allocations that stay on the node use (held resources minus the plan's stops and
/// replacements).
pub fn node_fits_sum(
    node: Option<&Node>,
    staying: NodeAllocated,
    placed: &[Allocation],
) -> Result<(), &'static str> {
    let Some(node) = node else {
        return Err("node does not exist");
    };
    if !node.is_schedulable() {
        return Err("node is not ready or not eligible");
    }
    let mut used = staying.resources;
    let mut ports: BTreeSet<u16> = staying.ports.into_iter().collect();
    for a in placed {
        used = used.add(&a.resources.total());
        for p in &a.resources.ports {
            if node.reserved_ports.contains(&p.value) {
                return Err("port reserved on the node");
            }
            if !ports.insert(p.value) {
                return Err("port collision");
            }
        }
    }
    used.fits(&node.allocatable()).map_err(|dim| match dim {
        "cpu" => "cpu exhausted",
        "cores" => "cores exhausted",
        _ => "memory exhausted",
    })
}

#[cfg(test)]
mod tests;
