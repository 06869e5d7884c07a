//! Scheduler workers: the loop that takes evaluations from the broker, runs the pure
//! scheduler on a state snapshot, and acks or nacks; plus the reaper that writes the
//! status of evaluations the broker gave up on (canceled duplicates, failed ones).
//!
//! ```text
//!  loop until shutdown:
//!    broker.dequeue ──► (eval, token)
//!    wait until the store has applied eval.modify_index
//!    spawn_blocking: take the compute turn, snapshot
//!        ──► scheduler::process(eval, snapshot, WorkerPlanner, now)
//!        WorkerPlanner.submit_plan ── PlanRequest ──► plan applier
//!             checked ──► give up the turn;  committed ──► PlanResult
//!             (partly applied: take the turn again, and a fresh snapshot)
//!        update_eval / create_eval / reblock_eval ──► Command::UpsertEvals ──► log
//!    Ok ──► broker.ack        Err ──► broker.nack (redelivered later, or failed)
//! ```
//!
//! Wiring (`server.rs`): `spawn_workers(n, broker, store, log, applier.sender(),
//! shutdown_rx, health)` returns the join handles of the `n` workers and the reaper; await them
//! after signalling shutdown.

use std::sync::Arc;
use std::time::Duration;

use orch_common::ids::{self, EvalId};
use orch_common::model::{Evaluation, Plan, PlanResult};
use orch_common::supervise::{self, Health, Restart};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::broker::{EvalBroker, NackOutcome};
use crate::plan_apply::PlanRequest;
use crate::scheduler::{self, Planner, PlannerError, SchedulerError, State};
use crate::state::{Command, CommandLog, LogError, SnapshotRelease, StateError, StateStore};

/// How long one dequeue waits before checking for shutdown again.
const DEQUEUE_WAIT: Duration = Duration::from_secs(1);
/// How long a worker waits for the store to catch up with an evaluation's index.
const INDEX_WAIT: Duration = Duration::from_secs(10);

/// Why one evaluation could not be processed (it is nacked).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("evaluation {eval_id}: the state is at index {have}, still short of {want}")]
    StaleState {
        eval_id: EvalId,
        want: u64,
        have: u64,
    },
    #[error("evaluation {eval_id}: taking a snapshot: {source}")]
    Snapshot { eval_id: EvalId, source: StateError },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("evaluation {eval_id}: scheduler task failed: {message}")]
    Task { eval_id: EvalId, message: String },
}

/// The worker's `Planner`: plans go to the applier, evaluation writes to the log.
/// Used on a blocking thread only (it blocks on channels and the log).
struct WorkerPlanner {
    store: StateStore,
    log: CommandLog,
    plans: mpsc::Sender<PlanRequest>,
    turn: ComputeTurn,
    /// Held from taking a snapshot until the plan computed on it is checked.
    permit: Option<OwnedSemaphorePermit>,
    /// Ends the read transaction of the snapshot the current plan was computed on.
    snapshot: SnapshotRelease,
}

impl WorkerPlanner {
    fn write_eval(&self, eval: Evaluation) -> Result<(), PlannerError> {
        self.log
            .submit_blocking(Command::UpsertEvals { evals: vec![eval] })
            .map(|_| ())
            .map_err(|e: LogError| match e {
                LogError::Closed | LogError::WriterGone => PlannerError::Stopped("the command log"),
                e => PlannerError::Commit(Box::new(e)),
            })
    }
}

impl Planner for WorkerPlanner {
    fn submit_plan(
        &mut self,
        plan: Plan,
    ) -> Result<(PlanResult, Option<Box<dyn State>>), PlannerError> {
        // Nothing more is read from the snapshot; waiting for the commit with its read
        // transaction open would hold back the WAL checkpoint.
        self.snapshot.release();
        let (reply, answer) = oneshot::channel();
        let (checked, checked_rx) = oneshot::channel();
        self.plans
            .blocking_send(PlanRequest {
                plan,
                reply,
                checked: Some(checked),
            })
            .map_err(|_| PlannerError::Stopped("the plan applier"))?;
        // The plan's room is held in flight once checked: the next worker may compute
        // on a snapshot taken now without handing out the same room.
        let _ = checked_rx.blocking_recv();
        self.permit = None;
        let result = answer
            .blocking_recv()
            .map_err(|_| PlannerError::Stopped("the plan applier"))?
            .map_err(|e| PlannerError::Commit(Box::new(e)))?;
        if result.refresh_index == 0 {
            return Ok((result, None));
        }
        // The applier answered after committing, so the store is at refresh_index.
        self.permit = self.turn.take();
        let fresh = self
            .store
            .snapshot()
            .map_err(|e| PlannerError::Refresh(Box::new(e)))?;
        self.snapshot = fresh.release_handle();
        Ok((result, Some(Box::new(fresh))))
    }

    fn update_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.write_eval(eval)
    }

    fn create_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.write_eval(eval)
    }

    fn reblock_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError> {
        self.write_eval(eval)
    }
}

/// Whose turn it is to compute a plan. Workers compute one at a time, each on a
/// snapshot taken in its turn, and a turn ends when the plan is checked and its room
/// held: a plan is then never computed blind to one checked before it (which, with
/// bin-packing, made most concurrent plans collide on the fullest nodes and be
/// recomputed). Workers still overlap computing with other plans' commits and with
/// their own waits.
#[derive(Clone)]
struct ComputeTurn(Arc<Semaphore>);

impl ComputeTurn {
    fn new() -> ComputeTurn {
        ComputeTurn(Arc::new(Semaphore::new(1)))
    }

    /// Waits for the turn; for blocking threads only. `None` once shut down.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        tokio::runtime::Handle::current()
            .block_on(self.0.clone().acquire_owned())
            .ok()
    }
}

/// What every worker shares.
#[derive(Clone)]
struct WorkerContext {
    broker: Arc<EvalBroker>,
    store: StateStore,
    log: CommandLog,
    plans: mpsc::Sender<PlanRequest>,
    turn: ComputeTurn,
}

/// Starts `n` workers and the reaper; returns their handles (await them after setting
/// `shutdown` to true).
pub fn spawn_workers(
    n: usize,
    broker: Arc<EvalBroker>,
    store: StateStore,
    log: CommandLog,
    plans: mpsc::Sender<PlanRequest>,
    shutdown: watch::Receiver<bool>,
    health: &Health,
) -> Vec<JoinHandle<()>> {
    let ctx = WorkerContext {
        broker,
        store,
        log,
        plans,
        turn: ComputeTurn::new(),
    };
    // A panic inside the scheduler is already caught (it runs on the blocking pool and
    // its evaluation is nacked); one in the worker loop itself is a bug in the dequeue,
    // ack or nack path, where what the worker held is unknown: required, not restarted.
    let mut handles: Vec<JoinHandle<()>> = (0..n.max(1))
        .map(|i| {
            supervise::spawn_required(
                health,
                &format!("server.worker-{i}"),
                worker_loop(i, ctx.clone(), shutdown.clone()),
            )
        })
        .collect();
    // The reaper only writes what the broker hands it each time: restartable.
    let (reaper_ctx, reaper_shutdown) = (ctx, shutdown.clone());
    handles.push(supervise::spawn_restarting(
        health,
        "server.eval-reaper",
        Restart::default(),
        shutdown,
        move || reaper_loop(reaper_ctx.clone(), reaper_shutdown.clone()),
    ));
    handles
}

async fn worker_loop(id: usize, ctx: WorkerContext, mut shutdown: watch::Receiver<bool>) {
    tracing::debug!(worker = id, "scheduler worker started");
    loop {
        let next = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            next = ctx.broker.dequeue(DEQUEUE_WAIT) => next,
        };
        let Some((eval, token)) = next else { continue };
        tracing::debug!(worker = id, eval_id = %eval.id, job_id = %eval.job_id,
            triggered_by = %eval.triggered_by, "processing evaluation");
        match process_one(&ctx, &eval).await {
            Ok(()) => {
                if let Err(e) = ctx.broker.ack(&eval.id, &token) {
                    tracing::warn!(eval_id = %eval.id, error = %e, "ack refused");
                }
            }
            Err(err) => {
                tracing::warn!(eval_id = %eval.id, error = %err, "evaluation failed; nacking");
                match ctx.broker.nack(&eval.id, &token) {
                    Ok(NackOutcome::Failed(_)) => {
                        tracing::error!(eval_id = %eval.id, "evaluation failed for good")
                    }
                    Ok(NackOutcome::Requeued) => {}
                    Err(e) => tracing::warn!(eval_id = %eval.id, error = %e, "nack refused"),
                }
            }
        }
    }
    tracing::debug!(worker = id, "scheduler worker stopped");
}

/// Runs the scheduler for one evaluation.
async fn process_one(ctx: &WorkerContext, eval: &Evaluation) -> Result<(), WorkerError> {
    // The snapshot must include the write that created the evaluation.
    let have = ctx
        .store
        .wait_for_last_index(eval.modify_index, INDEX_WAIT)
        .await;
    if have < eval.modify_index {
        return Err(WorkerError::StaleState {
            eval_id: eval.id.clone(),
            want: eval.modify_index,
            have,
        });
    }
    let ctx = ctx.clone();
    let eval = eval.clone();
    let eval_id = eval.id.clone();
    tokio::task::spawn_blocking(move || {
        let permit = ctx.turn.take();
        let snapshot = ctx
            .store
            .snapshot()
            .map_err(|source| WorkerError::Snapshot {
                eval_id: eval.id.clone(),
                source,
            })?;
        let mut planner = WorkerPlanner {
            store: ctx.store.clone(),
            log: ctx.log.clone(),
            plans: ctx.plans.clone(),
            turn: ctx.turn.clone(),
            permit,
            snapshot: snapshot.release_handle(),
        };
        scheduler::process(&eval, &snapshot, &mut planner, ids::now_ms())?;
        Ok(())
    })
    .await
    .map_err(|e| WorkerError::Task {
        eval_id,
        message: e.to_string(),
    })?
}

/// Writes the status of evaluations the broker canceled or failed.
async fn reaper_loop(ctx: WorkerContext, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => true,
            _ = ctx.broker.reapable_notified() => false,
        };
        let evals = ctx.broker.take_reapable();
        if !evals.is_empty() {
            let count = evals.len();
            if let Err(e) = ctx.log.submit(Command::UpsertEvals { evals }).await {
                tracing::warn!(error = %e, count, "writing canceled/failed evaluations");
            }
        }
        if stopping {
            break;
        }
    }
}

#[cfg(test)]
mod tests;
