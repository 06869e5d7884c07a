//! The deployment watcher: the only part of the server with a clock that drives
//! deployments. A background loop reads the active deployments with their jobs'
//! allocations and versions, applies the pure `decide`, and submits what it decided
//! through the command log (`Command::UpdateDeployment`, or `UpsertEvals` for an
//! evaluation alone). User actions (`actions`, called by the HTTP API) build their
//! changes from the same functions and go through the same log; the store keeps only
//! the first change that ends a deployment, so a race between them is harmless.
//!
//! ```text
//!  start: one `deployment-watcher` evaluation per active deployment (changes may have
//!         been missed while the server was down)
//!  loop:  read active deployments + their jobs' allocations and versions
//!          ─► decide(now) per deployment ─► UpdateDeployment (fail / revert /
//!             promote / success / description) with an evaluation when needed,
//!             or UpsertEvals when only the healthy count grew
//!         wait for a change to deployments (their counters follow their
//!         allocations), or the earliest progress deadline (at most IDLE_WAIT)
//! ```

pub mod actions;
pub mod decide;
#[cfg(test)]
pub mod testing;

pub use decide::{decide, Decision};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use orch_common::ids::{now_ms, DeploymentId};
use orch_common::model::{triggers, Allocation, Deployment, Evaluation, Job};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::{Command, CommandLog, LogError, StateError, StateStore, Table};

/// The longest wait without a change (a safety net: changes and deadlines wake it).
const IDLE_WAIT: Duration = Duration::from_secs(30);
/// The wait after a failed pass.
const RETRY_WAIT: Duration = Duration::from_secs(2);
/// The shortest wait, so a burst of changes does not become a busy loop.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// The tables whose changes can change a decision. Only deployments: the store
/// recomputes a deployment's counters whenever one of its allocations is written, so
/// every health verdict or placement that matters moves this table, while the status
/// updates of every other allocation in the cluster do not wake the watcher.
const WATCHED: [Table; 1] = [Table::Deployments];

/// Why one watcher pass failed (the loop logs it and tries again).
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error("reading deployments: {0}")]
    Read(#[from] StateError),
    #[error("updating deployment {deployment_id}: {source}")]
    Update {
        deployment_id: DeploymentId,
        source: LogError,
    },
    #[error("creating the evaluations of active deployments at start: {0}")]
    CatchUp(LogError),
    #[error("watcher read task failed: {0}")]
    Task(String),
}

/// One active deployment with what its decision needs.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub deployment: Deployment,
    /// The job as stored now (None once purged).
    pub job: Option<Job>,
    /// The job's stored versions.
    pub versions: Vec<Job>,
    /// The job's allocations (every deployment's).
    pub allocs: Vec<Allocation>,
}

/// Reads the active deployments and their jobs (each job read once).
pub fn read_active(store: &StateStore) -> Result<Vec<DeploymentView>, StateError> {
    let mut out: Vec<DeploymentView> = Vec::new();
    for d in store.active_deployments()? {
        let view = match out.iter().find(|v| v.deployment.job_id == d.job_id) {
            Some(same_job) => DeploymentView {
                deployment: d,
                ..same_job.clone()
            },
            None => DeploymentView {
                job: store.job(&d.job_id)?,
                versions: store.job_versions(&d.job_id)?,
                allocs: store.allocs_by_job(&d.job_id)?,
                deployment: d,
            },
        };
        out.push(view);
    }
    Ok(out)
}

/// A `deployment-watcher` evaluation for `job` (none for a purged job).
pub fn eval_for(job: Option<&Job>) -> Vec<Evaluation> {
    job.map(|j| Evaluation::for_job(j, triggers::DEPLOYMENT_WATCHER))
        .into_iter()
        .collect()
}

/// Starts the watcher; it stops when `shutdown` turns true.
pub fn spawn(log: CommandLog, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run(log, shutdown))
}

/// The watcher loop, until `shutdown` turns true. A fresh run catches up with every
/// active deployment from the store first, so the server restarts it after a panic
/// (`supervise::spawn_restarting`).
pub async fn run(log: CommandLog, mut shutdown: watch::Receiver<bool>) {
    let store = log.store().clone();
    let mut watcher = Watcher::new(log);
    if let Err(e) = watcher.catch_up().await {
        tracing::error!(error = %e, "deployment watcher: evaluating active deployments at start failed");
    }
    loop {
        if *shutdown.borrow() {
            break;
        }
        let seen_index = store.max_table_index(&WATCHED);
        let timeout = match watcher.pass().await {
            Ok(next_check) => next_check
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
                .unwrap_or(IDLE_WAIT)
                .clamp(MIN_WAIT, IDLE_WAIT),
            Err(e) => {
                tracing::error!(error = %e, "deployment watcher pass failed");
                RETRY_WAIT
            }
        };
        let wait = async {
            store
                .wait_for_any_index(&WATCHED, seen_index, timeout)
                .await;
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
    tracing::debug!("deployment watcher stopped");
}

/// The watcher's memory between passes.
pub struct Watcher {
    log: CommandLog,
    /// Deployment -> healthy instances per group at the last pass: more now means an
    /// evaluation (the next batch may go).
    seen: HashMap<DeploymentId, BTreeMap<String, u32>>,
}

impl Watcher {
    pub fn new(log: CommandLog) -> Watcher {
        Watcher {
            log,
            seen: HashMap::new(),
        }
    }

    async fn read(&self) -> Result<Vec<DeploymentView>, WatcherError> {
        let store = self.log.store().clone();
        tokio::task::spawn_blocking(move || read_active(&store))
            .await
            .map_err(|e| WatcherError::Task(e.to_string()))?
            .map_err(WatcherError::from)
    }

    /// At start: one evaluation per active deployment's job, since allocations may have
    /// turned healthy (or deadlines passed) while no watcher ran.
    pub async fn catch_up(&mut self) -> Result<(), WatcherError> {
        let views = self.read().await?;
        let mut jobs = BTreeSet::new();
        let mut evals = Vec::new();
        for v in &views {
            self.seen.insert(
                v.deployment.id.clone(),
                decide::healthy_counts(&v.deployment),
            );
            if jobs.insert(v.deployment.job_id.clone()) {
                evals.extend(eval_for(v.job.as_ref()));
            }
        }
        if evals.is_empty() {
            return Ok(());
        }
        tracing::info!(
            deployments = views.len(),
            evals = evals.len(),
            "deployment watcher: evaluating the jobs of active deployments"
        );
        self.log
            .submit(Command::UpsertEvals { evals })
            .await
            .map_err(WatcherError::CatchUp)?;
        Ok(())
    }

    /// One look at every active deployment; returns when to look again at the latest.
    pub async fn pass(&mut self) -> Result<Option<u64>, WatcherError> {
        let views = self.read().await?;
        let now = now_ms();
        let active: BTreeSet<&DeploymentId> = views.iter().map(|v| &v.deployment.id).collect();
        self.seen.retain(|id, _| active.contains(id));
        let mut next_check: Option<u64> = None;
        for v in &views {
            let d = &v.deployment;
            let decision = decide(
                d,
                &v.allocs,
                v.job.as_ref(),
                &v.versions,
                self.seen.get(&d.id),
                now,
            );
            if let Some(t) = decision.next_check {
                next_check = Some(next_check.map_or(t, |n: u64| n.min(t)));
            }
            let evals = if decision.eval {
                eval_for(v.job.as_ref())
            } else {
                Vec::new()
            };
            let cmd = match decision.change {
                Some(change) => {
                    log_change(d, &change, decision.revert_to.as_ref());
                    Some(Command::UpdateDeployment {
                        change,
                        revert_to: decision.revert_to,
                        evals,
                    })
                }
                None if !evals.is_empty() => {
                    tracing::debug!(deployment_id = %d.id, job_id = %d.job_id, "deployment: instances became healthy");
                    Some(Command::UpsertEvals { evals })
                }
                None => None,
            };
            if let Some(cmd) = cmd {
                self.log
                    .submit(cmd)
                    .await
                    .map_err(|source| WatcherError::Update {
                        deployment_id: d.id.clone(),
                        source,
                    })?;
            }
            // Recorded once submitted: a failed submit is tried again next pass.
            self.seen.insert(d.id.clone(), decide::healthy_counts(d));
        }
        Ok(next_check)
    }
}

fn log_change(
    d: &Deployment,
    change: &crate::state::command::DeploymentChange,
    revert_to: Option<&Job>,
) {
    if let Some((status, description)) = &change.status {
        if *status != d.status {
            tracing::info!(
                deployment_id = %d.id,
                job_id = %d.job_id,
                job_version = d.job_version,
                status = status.as_str(),
                description = %description,
                revert = revert_to.map(|j| j.version),
                "deployment status changed"
            );
        }
    }
    if !change.promote.is_empty() {
        tracing::info!(deployment_id = %d.id, groups = ?change.promote, "deployment: canaries promoted automatically");
    }
}

#[cfg(test)]
mod tests;
