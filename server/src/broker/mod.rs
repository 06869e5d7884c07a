//! The evaluation broker and the blocked-evaluations tracker.
//!
//! Every evaluation the state log applies reaches the broker through `observe` (called
//! on the log's writer thread, in index order). Pending ones are queued for the workers;
//! blocked ones are tracked until capacity changes.
//!
//! ```text
//!  observe(cmd) ─ pending ──► wait_until future? ──► delayed ──(time)──┐
//!              │                                                      ▼
//!              │              job has an eval in flight? ──► waiting[job]
//!              │                         no │                  │ on ack: newest runs,
//!              │                            ▼                  │ the rest are canceled
//!              │                ready (priority desc, create index asc)
//!              │                            │ dequeue -> (eval, token)
//!              │                            ▼
//!              │                         unacked ── ack ──► done (slot freed)
//!              │                            │ nack / nack timeout
//!              │                            ├─ deliveries < limit ─► delayed (keeps slot)
//!              │                            └─ limit reached ─► failed (reaped)
//!              └ blocked ──► BlockedEvals (one per job) ── capacity change ──► pending
//! ```
//!
//! At-least-once: an eval stays owned by the broker until acked. One eval per job is
//! ready or in flight at a time. Evaluations the broker gives up on (canceled
//! duplicates, deliveries exhausted) are handed out by `take_reapable` so the worker
//! module can write their status through the log (the broker never writes state).
//!
//! API as wired by `server.rs`: `EvalBroker::new(BrokerConfig::default())`,
//! `observe(&cmd, index)` as a log observer, `restore(evals)` on start (`reset(evals)`
//! after a state snapshot is restored), then workers
//! call `dequeue`/`ack`/`nack`. All methods are safe from non-async threads: a std
//! mutex (never held across an await) plus tokio `Notify`s.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use orch_common::ids::{self, EvalId, JobId, NodeId};
use orch_common::model::{
    ClientStatus, DesiredStatus, Eligibility, EvalStatus, Evaluation, NodeStatus,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::state::Command;

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// An unacked evaluation is taken back and redelivered after this long.
    pub nack_timeout: Duration,
    /// Deliveries before an evaluation is failed.
    pub delivery_limit: u32,
    /// Wait before redelivering after the first nack.
    pub initial_nack_delay: Duration,
    /// Wait before redelivering after later nacks.
    pub subsequent_nack_delay: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            nack_timeout: Duration::from_secs(60),
            delivery_limit: 3,
            initial_nack_delay: Duration::from_secs(1),
            subsequent_nack_delay: Duration::from_secs(20),
        }
    }
}

/// Why an ack or nack was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("evaluation {eval_id} is not outstanding (already acked, nacked or timed out)")]
    NotOutstanding { eval_id: EvalId },
    #[error("evaluation {eval_id} was redelivered: token {token} is stale")]
    TokenMismatch { eval_id: EvalId, token: String },
}

/// What a nack did.
#[derive(Debug, Clone, PartialEq)]
pub enum NackOutcome {
    /// It will be delivered again after a delay.
    Requeued,
    /// It reached the delivery limit and was failed (its failed status is reapable).
    Failed(Box<Evaluation>),
}

/// Queue sizes, for tests and the agent's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub ready: usize,
    pub unacked: usize,
    pub waiting: usize,
    pub delayed: usize,
    pub blocked: usize,
}

/// A ready evaluation in the priority queue.
struct Ready {
    eval: Evaluation,
    seq: u64,
}

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    /// Max-heap: higher priority first, then lower create index, then arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.eval
            .priority
            .cmp(&other.eval.priority)
            .then_with(|| other.eval.create_index.cmp(&self.eval.create_index))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct Unacked {
    eval: Evaluation,
    token: String,
    deadline: Instant,
}

struct Delayed {
    at: Instant,
    eval: Evaluation,
    /// A nacked eval keeps its job's slot while it waits.
    holds_slot: bool,
}

/// Blocked evaluations, at most one per job, with the indexes of capacity changes so
/// that a block arriving after a change it did not see is let through at once.
#[derive(Default)]
struct BlockedEvals {
    by_job: HashMap<JobId, Evaluation>,
    /// computed class -> index of its last capacity change.
    class_changes: HashMap<String, u64>,
    /// Index of the last change that could help any class.
    any_change: u64,
}

impl BlockedEvals {
    /// True when a capacity change newer than the eval's snapshot could help it.
    fn missed_change(&self, eval: &Evaluation) -> bool {
        if self.any_change > eval.snapshot_index {
            return true;
        }
        self.class_changes.iter().any(|(class, index)| {
            *index > eval.snapshot_index && eval.class_eligibility.get(class) != Some(&false)
        })
    }

    /// Removes and returns the evals a change to `class` (None: any) may help.
    fn unblock(&mut self, class: Option<&str>, index: u64) -> Vec<Evaluation> {
        match class {
            Some(c) => {
                let e = self.class_changes.entry(c.to_string()).or_default();
                *e = (*e).max(index);
            }
            None => self.any_change = self.any_change.max(index),
        }
        let jobs: Vec<JobId> = self
            .by_job
            .iter()
            .filter(|(_, e)| class.is_none_or(|c| e.class_eligibility.get(c) != Some(&false)))
            .map(|(job, _)| job.clone())
            .collect();
        jobs.iter().filter_map(|j| self.by_job.remove(j)).collect()
    }

    fn remove_id(&mut self, eval_id: &EvalId) -> Option<Evaluation> {
        let job = self
            .by_job
            .iter()
            .find(|(_, e)| e.id == *eval_id)
            .map(|(j, _)| j.clone())?;
        self.by_job.remove(&job)
    }
}

#[derive(Default)]
struct Inner {
    ready: BinaryHeap<Ready>,
    /// Job -> the eval holding its slot (ready, unacked, or nacked and delayed).
    job_slot: HashMap<JobId, EvalId>,
    /// Job -> evals waiting for the slot.
    waiting: HashMap<JobId, Vec<Evaluation>>,
    unacked: HashMap<EvalId, Unacked>,
    delayed: Vec<Delayed>,
    deliveries: HashMap<EvalId, u32>,
    /// Evals enqueued again while outstanding: enqueued once acked.
    requeue: HashMap<EvalId, Evaluation>,
    /// Ids owned by the queues above (ready, waiting, unacked, delayed).
    known: HashSet<EvalId>,
    blocked: BlockedEvals,
    /// Node id -> computed class, learnt from `UpsertNode`.
    node_classes: HashMap<NodeId, String>,
    reapable: Vec<Evaluation>,
    seq: u64,
}

/// The evaluation broker. Share it in an `Arc`.
pub struct EvalBroker {
    cfg: BrokerConfig,
    inner: Mutex<Inner>,
    /// Wakes dequeuers when something became ready.
    ready_notify: Notify,
    /// Wakes the reaper when evaluations need their status written.
    reap_notify: Notify,
    /// False on a server that is not the leader: it holds nothing and ignores what
    /// is applied (the leader's broker is the one that schedules).
    enabled: std::sync::atomic::AtomicBool,
}

impl Default for EvalBroker {
    fn default() -> Self {
        EvalBroker::new(BrokerConfig::default())
    }
}

fn now_ms() -> u64 {
    ids::now_ms()
}

/// The instant a wall-clock time (ms since the epoch) falls at; `None` when it passed.
fn instant_of(wait_until: Option<u64>) -> Option<Instant> {
    let at = wait_until?;
    let now = now_ms();
    (at > now).then(|| Instant::now() + Duration::from_millis(at - now))
}

impl EvalBroker {
    pub fn new(cfg: BrokerConfig) -> EvalBroker {
        EvalBroker {
            cfg,
            inner: Mutex::new(Inner::default()),
            ready_notify: Notify::new(),
            reap_notify: Notify::new(),
            enabled: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Stops holding evaluations (this server lost or never had the leadership):
    /// forgets every one, and ignores what is applied until `enable`.
    pub fn disable(&self) {
        self.enabled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.reset(Vec::new());
    }

    /// Starts holding evaluations again from `evals` (the pending and blocked ones
    /// in the state): call it where no command applies in between (on the state
    /// writer), so none is missed or seen twice.
    pub fn enable(&self, evals: Vec<Evaluation>) {
        self.reset(evals);
        self.enabled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether it holds evaluations (see `disable`).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Never held across an await; poisoned only if a broker method panicked.
        self.inner.lock().expect("eval broker mutex poisoned")
    }

    fn wake(&self, inner: &Inner, had_reapable: usize) {
        if !inner.ready.is_empty() {
            self.ready_notify.notify_waiters();
        }
        if inner.reapable.len() > had_reapable {
            self.reap_notify.notify_one();
        }
    }

    /// Feeds one applied command to the broker (a state-log observer).
    pub fn observe(&self, cmd: &Command, index: u64) {
        if !self.is_enabled() {
            return;
        }
        let mut inner = self.lock();
        let reapable = inner.reapable.len();
        let stamp = |e: &Evaluation| {
            let mut e = e.clone();
            if e.create_index == 0 {
                e.create_index = index;
            }
            e.modify_index = index;
            e
        };
        match cmd {
            Command::UpsertJob { eval, .. } | Command::DeregisterJob { eval, .. } => {
                if let Some(e) = eval {
                    inner.handle_eval(stamp(e));
                }
            }
            Command::UpsertEvals { evals }
            | Command::MigrateAllocs { evals, .. }
            | Command::UpdateDeployment { evals, .. } => {
                for e in evals {
                    inner.handle_eval(stamp(e));
                }
            }
            Command::ApplyPlan { stopped, evals, .. } => {
                for e in evals {
                    inner.handle_eval(stamp(e));
                }
                let freed: HashSet<&NodeId> = stopped
                    .iter()
                    .filter(|a| a.desired_status != DesiredStatus::Run)
                    .map(|a| &a.node_id)
                    .collect();
                for node_id in freed {
                    inner.unblock_node(node_id, index);
                }
            }
            Command::UpsertNode { node } => {
                inner
                    .node_classes
                    .insert(node.id.clone(), node.computed_class.clone());
                if node.is_schedulable() {
                    inner.unblock_node(&node.id, index);
                }
            }
            Command::UpdateNodeStatus {
                node_id,
                status,
                evals,
            } => {
                for e in evals {
                    inner.handle_eval(stamp(e));
                }
                if *status == NodeStatus::Ready {
                    inner.unblock_node(node_id, index);
                }
            }
            Command::UpdateNodeEligibility {
                node_id,
                eligibility,
                evals,
            } => {
                for e in evals {
                    inner.handle_eval(stamp(e));
                }
                if *eligibility == Eligibility::Eligible {
                    inner.unblock_node(node_id, index);
                }
            }
            Command::UpdateNodeDrain {
                node_id,
                eligibility,
                evals,
                ..
            } => {
                for e in evals {
                    inner.handle_eval(stamp(e));
                }
                if *eligibility == Some(Eligibility::Eligible) {
                    inner.unblock_node(node_id, index);
                }
            }
            // Takes effect for the next evaluation; nothing to enqueue.
            Command::SetSchedulerConfig { .. }
            | Command::UpsertAclPolicy { .. }
            | Command::DeleteAclPolicies { .. }
            | Command::UpsertAclToken { .. }
            | Command::DeleteAclTokens { .. }
            | Command::BootstrapAcl { .. } => {}
            // Only terminal objects are collected: no capacity or work changes.
            Command::Reap { .. } => {}
            Command::UpdateAllocsFromClient { updates, evals } => {
                for e in evals {
                    inner.handle_eval(stamp(e));
                }
                // Updates do not say which node; any class may have gained room.
                let freed = updates.iter().any(|u| {
                    matches!(
                        u.client_status,
                        ClientStatus::Complete | ClientStatus::Failed | ClientStatus::Lost
                    )
                });
                if freed {
                    inner.unblock(None, index);
                }
            }
        }
        self.wake(&inner, reapable);
    }

    /// Loads the non-terminal evaluations found in the store at start.
    pub fn restore(&self, evals: Vec<Evaluation>) {
        let mut inner = self.lock();
        let reapable = inner.reapable.len();
        for e in evals {
            inner.handle_eval(e);
        }
        self.wake(&inner, reapable);
    }

    /// Forgets every evaluation it holds and loads `evals` (the pending and blocked
    /// ones of a restored state snapshot): afterwards the broker is as a server
    /// started on that state would have it. Evaluations out with workers are
    /// forgotten too: their acks and nacks fail, and any plan they submit meets the
    /// restored state's checks in the plan applier.
    pub fn reset(&self, evals: Vec<Evaluation>) {
        let mut inner = self.lock();
        let seq = inner.seq;
        *inner = Inner::default();
        inner.seq = seq;
        for e in evals {
            inner.handle_eval(e);
        }
        self.wake(&inner, 0);
    }

    /// Waits up to `timeout` for a ready evaluation; returns it with the token that
    /// acks or nacks it. Cancel-safe: nothing is taken unless it is returned.
    pub async fn dequeue(&self, timeout: Duration) -> Option<(Evaluation, String)> {
        let give_up = Instant::now() + timeout;
        loop {
            let notified = self.ready_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_timer = {
                let mut inner = self.lock();
                let reapable = inner.reapable.len();
                let now = Instant::now();
                inner.fire_timers(now, &self.cfg);
                if let Some(Ready { eval, .. }) = inner.ready.pop() {
                    let token = ids::new_id();
                    *inner.deliveries.entry(eval.id.clone()).or_default() += 1;
                    inner.unacked.insert(
                        eval.id.clone(),
                        Unacked {
                            eval: eval.clone(),
                            token: token.clone(),
                            deadline: now + self.cfg.nack_timeout,
                        },
                    );
                    self.wake(&inner, reapable);
                    return Some((eval, token));
                }
                self.wake(&inner, reapable);
                inner.next_timer()
            };
            let now = Instant::now();
            if now >= give_up {
                return None;
            }
            let wake_at = next_timer.map_or(give_up, |t| t.min(give_up));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// The evaluation was processed: forget it and let the job's next one run.
    pub fn ack(&self, eval_id: &EvalId, token: &str) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        let reapable = inner.reapable.len();
        let job_id = inner.take_outstanding(eval_id, token)?.eval.job_id;
        inner.deliveries.remove(eval_id);
        inner.known.remove(eval_id);
        inner.release_slot(&job_id, eval_id);
        if let Some(again) = inner.requeue.remove(eval_id) {
            inner.enqueue(again);
        }
        self.wake(&inner, reapable);
        Ok(())
    }

    /// Processing failed: deliver again after a delay, or fail it at the limit.
    pub fn nack(&self, eval_id: &EvalId, token: &str) -> Result<NackOutcome, BrokerError> {
        let mut inner = self.lock();
        let reapable = inner.reapable.len();
        let out = inner.take_outstanding(eval_id, token)?;
        let outcome = inner.retry_or_fail(out.eval, Instant::now(), &self.cfg);
        self.wake(&inner, reapable);
        Ok(outcome)
    }

    /// Hands out evaluations whose status must be written (canceled duplicates, failed
    /// after too many deliveries); their `status` and description are already set.
    pub fn take_reapable(&self) -> Vec<Evaluation> {
        std::mem::take(&mut self.lock().reapable)
    }

    /// Waits until `take_reapable` has something (returns at once if it already may).
    pub async fn reapable_notified(&self) {
        self.reap_notify.notified().await
    }

    pub fn stats(&self) -> BrokerStats {
        let inner = self.lock();
        BrokerStats {
            ready: inner.ready.len(),
            unacked: inner.unacked.len(),
            waiting: inner.waiting.values().map(Vec::len).sum(),
            delayed: inner.delayed.len(),
            blocked: inner.blocked.by_job.len(),
        }
    }

    /// The blocked evaluation tracked for a job, if any.
    pub fn blocked_eval(&self, job_id: &str) -> Option<Evaluation> {
        self.lock().blocked.by_job.get(job_id).cloned()
    }
}

impl Inner {
    fn handle_eval(&mut self, e: Evaluation) {
        match e.status {
            EvalStatus::Pending => {
                self.blocked.remove_id(&e.id);
                self.enqueue(e);
            }
            EvalStatus::Blocked => self.block(e),
            EvalStatus::Complete if e.failed_tg_allocs.is_empty() => {
                self.blocked.remove_id(&e.id);
                // Everything of the job got placed: an older blocked eval is moot.
                if let Some(old) = self.blocked.by_job.remove(&e.job_id) {
                    self.reap(
                        old,
                        EvalStatus::Canceled,
                        format!("job placed by evaluation {}", e.id),
                    );
                }
            }
            _ => {
                self.blocked.remove_id(&e.id);
            }
        }
    }

    fn reap(&mut self, mut e: Evaluation, status: EvalStatus, why: String) {
        e.status = status;
        e.status_description = why;
        e.modify_time = now_ms();
        self.reapable.push(e);
    }

    /// Queues a pending evaluation (or notes it for after its current delivery).
    fn enqueue(&mut self, e: Evaluation) {
        if self.unacked.contains_key(&e.id) {
            self.requeue.insert(e.id.clone(), e);
            return;
        }
        if self.known.contains(&e.id) {
            return;
        }
        self.known.insert(e.id.clone());
        if let Some(at) = instant_of(e.wait_until) {
            self.delayed.push(Delayed {
                at,
                eval: e,
                holds_slot: false,
            });
            return;
        }
        self.admit(e);
    }

    /// Ready when its job has no eval in flight; otherwise it waits for the slot.
    fn admit(&mut self, e: Evaluation) {
        match self.job_slot.get(&e.job_id) {
            None => {
                self.job_slot.insert(e.job_id.clone(), e.id.clone());
                self.push_ready(e);
            }
            Some(holder) if *holder == e.id => self.push_ready(e),
            Some(_) => self.waiting.entry(e.job_id.clone()).or_default().push(e),
        }
    }

    fn push_ready(&mut self, eval: Evaluation) {
        self.seq += 1;
        self.ready.push(Ready {
            eval,
            seq: self.seq,
        });
    }

    fn block(&mut self, e: Evaluation) {
        if self.known.contains(&e.id) && !self.unacked.contains_key(&e.id) {
            return; // already queued to run
        }
        if self.blocked.missed_change(&e) {
            self.enqueue(e);
            return;
        }
        if let Some(existing) = self.blocked.by_job.get(&e.job_id) {
            if existing.id != e.id {
                let (keep, drop) = if existing.create_index > e.create_index {
                    (existing.clone(), e)
                } else {
                    (e, existing.clone())
                };
                let why = format!("superseded by blocked evaluation {}", keep.id);
                self.reap(drop, EvalStatus::Canceled, why);
                self.blocked.by_job.insert(keep.job_id.clone(), keep);
                return;
            }
        }
        self.blocked.by_job.insert(e.job_id.clone(), e);
    }

    fn unblock(&mut self, class: Option<&str>, index: u64) {
        for e in self.blocked.unblock(class, index) {
            self.enqueue(e);
        }
    }

    fn unblock_node(&mut self, node_id: &NodeId, index: u64) {
        let class = self
            .node_classes
            .get(node_id)
            .filter(|c| !c.is_empty())
            .cloned();
        self.unblock(class.as_deref(), index);
    }

    fn take_outstanding(&mut self, eval_id: &EvalId, token: &str) -> Result<Unacked, BrokerError> {
        match self.unacked.get(eval_id) {
            None => Err(BrokerError::NotOutstanding {
                eval_id: eval_id.clone(),
            }),
            Some(u) if u.token != token => Err(BrokerError::TokenMismatch {
                eval_id: eval_id.clone(),
                token: token.to_string(),
            }),
            Some(_) => self
                .unacked
                .remove(eval_id)
                .ok_or_else(|| BrokerError::NotOutstanding {
                    eval_id: eval_id.clone(),
                }),
        }
    }

    /// After a nack or a nack timeout.
    fn retry_or_fail(&mut self, eval: Evaluation, now: Instant, cfg: &BrokerConfig) -> NackOutcome {
        self.requeue.remove(&eval.id);
        let deliveries = self.deliveries.get(&eval.id).copied().unwrap_or(0);
        if deliveries >= cfg.delivery_limit {
            self.deliveries.remove(&eval.id);
            self.known.remove(&eval.id);
            self.release_slot(&eval.job_id, &eval.id);
            let mut failed = eval;
            failed.status = EvalStatus::Failed;
            failed.status_description = format!(
                "evaluation reached its delivery limit ({})",
                cfg.delivery_limit
            );
            failed.modify_time = now_ms();
            self.reapable.push(failed.clone());
            return NackOutcome::Failed(Box::new(failed));
        }
        let delay = if deliveries <= 1 {
            cfg.initial_nack_delay
        } else {
            cfg.subsequent_nack_delay
        };
        self.delayed.push(Delayed {
            at: now + delay,
            eval,
            holds_slot: true,
        });
        NackOutcome::Requeued
    }

    /// Frees the job's slot held by `eval_id`; the newest waiting eval takes it and the
    /// older waiting ones are canceled (the newest sees everything they would).
    fn release_slot(&mut self, job_id: &JobId, eval_id: &EvalId) {
        if self.job_slot.get(job_id) == Some(eval_id) {
            self.job_slot.remove(job_id);
        }
        if self.job_slot.contains_key(job_id) {
            return;
        }
        let Some(mut waiting) = self.waiting.remove(job_id) else {
            return;
        };
        waiting.sort_by_key(|e| (e.create_index, e.modify_index));
        let Some(newest) = waiting.pop() else { return };
        for old in waiting {
            self.known.remove(&old.id);
            let why = format!("superseded by evaluation {}", newest.id);
            self.reap(old, EvalStatus::Canceled, why);
        }
        self.admit(newest);
    }

    /// Nack timeouts and due delayed evals.
    fn fire_timers(&mut self, now: Instant, cfg: &BrokerConfig) {
        let expired: Vec<EvalId> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(u) = self.unacked.remove(&id) {
                tracing::warn!(eval_id = %id, "evaluation not acked in time; redelivering");
                self.retry_or_fail(u.eval, now, cfg);
            }
        }
        let (due, later): (Vec<Delayed>, Vec<Delayed>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|d| d.at <= now);
        self.delayed = later;
        let mut due = due;
        due.sort_by_key(|d| d.at);
        for d in due {
            if d.holds_slot {
                self.push_ready(d.eval);
            } else {
                self.admit(d.eval);
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let unacked = self.unacked.values().map(|u| u.deadline);
        let delayed = self.delayed.iter().map(|d| d.at);
        unacked.chain(delayed).min()
    }
}

#[cfg(test)]
mod tests;
