//! Garbage collection: the collector that deletes terminal allocations, evaluations,
//! dead jobs and down nodes past their thresholds, each job's terminal history beyond
//! its caps whatever its age, and keeps the command log bounded. It runs every
//! `gc.interval` and on demand (`PUT /v1/system/gc`, thresholds zero, the same caps).
//!
//! ```text
//!  one read transaction (StateStore::gc_view, off the runtime)
//!     ─► rules::collect(view, thresholds, caps, now)
//!     ─► Collection split into Command::Reap batches of at most MAX_PER_COMMAND ids
//!     ─► log.submit each (apply checks every object again) ─► counts
//! ```
//!
//! The decision is made outside the state writer, from a read; the writer only
//! deletes, in batches, so it is never blocked for long. The view's shape (`GcView`)
//! is the store's (`crate::state::views`): it is filled by one SQL pass over columns
//! and a few JSON fields, which only the store can express.

pub mod rules;

use std::sync::Arc;

use orch_common::api::GcResponse;
use orch_common::duration::millis_saturating;
use orch_common::ids::now_ms;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::GcConfig;
use crate::state::{Command, CommandLog, LogError, StateError, StateStore};
use rules::{Collection, HistoryCaps, Thresholds};

/// Most ids one `Command::Reap` deletes (one write transaction).
pub const MAX_PER_COMMAND: usize = 10_000;

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("reading the state for garbage collection: {0}")]
    State(#[from] StateError),
    #[error("submitting a garbage collection: {0}")]
    Log(#[from] LogError),
    #[error("garbage collection read task failed: {0}")]
    Task(String),
}

/// Runs collections; one at a time (the periodic one and `orch system gc` share it).
pub struct Collector {
    store: StateStore,
    log: CommandLog,
    cfg: GcConfig,
    running: tokio::sync::Mutex<()>,
}

impl Collector {
    pub fn new(store: StateStore, log: CommandLog, cfg: GcConfig) -> Collector {
        Collector {
            store,
            log,
            cfg,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The configured thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            job_ms: millis_saturating(self.cfg.job_threshold),
            eval_ms: millis_saturating(self.cfg.eval_threshold),
            batch_eval_ms: millis_saturating(self.cfg.batch_eval_threshold),
            node_ms: millis_saturating(self.cfg.node_threshold),
        }
    }

    /// The configured per-job caps.
    pub fn caps(&self) -> HistoryCaps {
        HistoryCaps {
            allocs_per_job: self.cfg.max_terminal_allocs_per_job,
            evals_per_job: self.cfg.max_terminal_evals_per_job,
        }
    }

    /// One collection: with `force`, every threshold is zero (`orch system gc`).
    /// Returns how many objects it submitted for deletion.
    pub async fn collect(&self, force: bool) -> Result<GcResponse, GcError> {
        let _one_at_a_time = self.running.lock().await;
        let thresholds = if force {
            Thresholds::FORCE
        } else {
            self.thresholds()
        };
        let caps = self.caps();
        let store = self.store.clone();
        let retain = self.cfg.command_log_retain;
        let now = now_ms();
        let (collection, log_before, log_entries) =
            tokio::task::spawn_blocking(move || -> Result<_, StateError> {
                let view = store.gc_view()?;
                let collection = rules::collect(&view, &thresholds, &caps, now);
                let (log_before, dropped) =
                    log_cut(store.command_log_first()?, store.last_index(), retain);
                Ok((collection, log_before, dropped))
            })
            .await
            .map_err(|e| GcError::Task(e.to_string()))??;
        let counts = GcResponse {
            jobs: collection.jobs.len() as u64,
            evals: collection.evals.len() as u64,
            allocs: collection.allocs.len() as u64,
            nodes: collection.nodes.len() as u64,
            log_entries,
        };
        let mut batches = collection.batches(MAX_PER_COMMAND);
        if batches.is_empty() && log_before > 0 {
            batches.push(Collection::default());
        }
        let last = batches.len().saturating_sub(1);
        for (i, part) in batches.into_iter().enumerate() {
            let cmd = Command::Reap {
                jobs: part.jobs,
                evals: part.evals,
                allocs: part.allocs,
                nodes: part.nodes,
                log_before: if i == last { log_before } else { 0 },
            };
            self.log.submit(cmd).await?;
        }
        if counts != GcResponse::default() {
            tracing::info!(
                jobs = counts.jobs,
                evals = counts.evals,
                allocs = counts.allocs,
                nodes = counts.nodes,
                log_entries = counts.log_entries,
                force,
                "garbage collected"
            );
        }
        Ok(counts)
    }

    /// Starts the periodic collector; it stops when `shutdown` turns true.
    pub fn spawn(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// The collector loop, until `shutdown` turns true. Each pass reads what it needs
    /// from the store, so the server restarts it after a panic.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.collect(false).await {
                tracing::warn!(error = %e, "garbage collection failed; retrying next interval");
            }
        }
    }
}

/// Where to cut the command log to keep its newest `retain` entries: `(log_before,
/// entries dropped)`, `(0, 0)` when nothing is to go.
fn log_cut(first: Option<u64>, last: u64, retain: u64) -> (u64, u64) {
    let Some(first) = first else { return (0, 0) };
    let keep_from = last.saturating_sub(retain) + 1;
    if keep_from <= first {
        return (0, 0);
    }
    (keep_from, keep_from - first)
}

#[cfg(test)]
mod tests {
    use orch_common::mock::JobBuilder;
    use orch_common::model::{EvalStatus, Evaluation};

    use super::*;

    #[tokio::test]
    async fn a_pass_trims_the_command_log_and_each_jobs_terminal_evaluations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path().join("state.db")).expect("store");
        let log = CommandLog::start(store.clone(), vec![]).expect("log");
        let cfg = GcConfig {
            command_log_retain: 5,
            max_terminal_evals_per_job: 2,
            ..GcConfig::default()
        };
        let collector = Collector::new(store.clone(), log.clone(), cfg);
        let job = JobBuilder::new("web").build();
        log.submit(Command::UpsertJob {
            job: job.clone(),
            eval: None,
            enforce_index: None,
        })
        .await
        .expect("register");
        for _ in 0..6 {
            let mut eval = Evaluation::for_job(&job, "job-register");
            eval.status = EvalStatus::Complete;
            log.submit(Command::UpsertEvals { evals: vec![eval] })
                .await
                .expect("eval");
        }
        let last = store.last_index();
        assert_eq!(store.command_log_first().expect("first"), Some(1));

        let counts = collector.collect(false).await.expect("collect");
        assert_eq!(counts.evals, 4, "the 2 newest terminal evaluations stay");
        assert_eq!(store.evals_by_job("web").expect("evals").len(), 2);
        assert_eq!(counts.log_entries, last - 5);
        assert_eq!(
            store.command_log_first().expect("first"),
            Some(last - 4),
            "the newest 5 entries (and the collection's own) are kept"
        );
        assert!(matches!(
            store.commands_since(0, 100),
            Err(StateError::LogTruncated { .. })
        ));
        log.shutdown().await;
    }

    #[test]
    fn the_log_keeps_its_newest_entries_and_is_not_cut_below_the_retention() {
        assert_eq!(log_cut(None, 50, 10), (0, 0));
        assert_eq!(log_cut(Some(1), 10, 10), (0, 0));
        assert_eq!(log_cut(Some(1), 11, 10), (2, 1));
        assert_eq!(log_cut(Some(1), 100, 10), (91, 90));
        assert_eq!(log_cut(Some(91), 100, 10), (0, 0));
        assert_eq!(log_cut(Some(1), 100, 0), (101, 100));
    }
}
