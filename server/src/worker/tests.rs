//! Worker tests: broker + workers + plan applier over a real temp-dir store and log,
//! wired the way `server.rs` wires them.

use std::sync::Arc;
use std::time::Duration;

use orch_common::ids::AllocId;
use orch_common::mock::{JobBuilder, NodeBuilder};
use orch_common::model::{triggers, DesiredStatus, EvalStatus, Evaluation, Job, Node};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::broker::{BrokerConfig, EvalBroker};
use crate::plan_apply::PlanApplier;
use crate::state::{Command, CommandLog, Observer, StateStore};

struct Cluster {
    _dir: tempfile::TempDir,
    store: StateStore,
    log: CommandLog,
    broker: Arc<EvalBroker>,
    stop: watch::Sender<bool>,
    applier: Option<PlanApplier>,
    workers: Vec<JoinHandle<()>>,
}

fn fast_broker() -> BrokerConfig {
    BrokerConfig {
        nack_timeout: Duration::from_secs(10),
        delivery_limit: 2,
        initial_nack_delay: Duration::from_millis(10),
        subsequent_nack_delay: Duration::from_millis(10),
    }
}

/// Store, log (with the broker observing it) and applier; workers start separately.
fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path().join("state.db")).expect("open");
    let broker = Arc::new(EvalBroker::new(fast_broker()));
    let observer: Observer = {
        let broker = broker.clone();
        Arc::new(move |cmd: &Command, index: u64| broker.observe(cmd, index))
    };
    let log = CommandLog::start(store.clone(), vec![observer]).expect("log");
    let (stop, stop_rx) = watch::channel(false);
    let applier = PlanApplier::spawn(store.clone(), log.clone(), stop_rx);
    Cluster {
        _dir: dir,
        store,
        log,
        broker,
        stop,
        applier: Some(applier),
        workers: Vec::new(),
    }
}

impl Cluster {
    fn start_workers(&mut self, n: usize) {
        let sender = match &self.applier {
            Some(a) => a.sender(),
            None => {
                let (tx, rx) = mpsc::channel(1);
                drop(rx);
                tx
            }
        };
        self.workers = spawn_workers(
            n,
            self.broker.clone(),
            self.store.clone(),
            self.log.clone(),
            sender,
            self.stop.subscribe(),
            &orch_common::supervise::Health::new(),
        );
    }

    async fn node(&self, node: &Node) {
        self.log
            .submit(Command::UpsertNode { node: node.clone() })
            .await
            .expect("node");
    }

    async fn register(&self, job: &Job) -> Evaluation {
        let eval = Evaluation::for_job(job, triggers::JOB_REGISTER);
        self.log
            .submit(Command::UpsertJob {
                job: job.clone(),
                eval: Some(eval.clone()),
                enforce_index: None,
            })
            .await
            .expect("register");
        eval
    }

    fn eval(&self, id: &str) -> Evaluation {
        self.store.eval(id).expect("read").expect("eval")
    }

    fn live(&self, job_id: &str) -> usize {
        self.store
            .allocs_by_job(job_id)
            .expect("read")
            .iter()
            .filter(|a| a.desired_status == DesiredStatus::Run)
            .count()
    }

    async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for w in self.workers.drain(..) {
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("worker stopped")
                .expect("worker task");
        }
        if let Some(a) = self.applier.take() {
            a.join().await;
        }
        self.log.shutdown().await;
    }
}

/// Polls `cond` until it holds (or panics after 10 s).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_job_is_placed_and_its_eval_completed() {
    let mut c = cluster();
    c.start_workers(2);
    c.node(&NodeBuilder::new().build()).await;
    let job = JobBuilder::new("web").count(3).build();
    let eval = c.register(&job).await;
    eventually("3 allocations", || c.live("web") == 3).await;
    eventually("eval complete", || {
        c.eval(&eval.id).status == EvalStatus::Complete
    })
    .await;
    let done = c.eval(&eval.id);
    assert_eq!(done.queued_allocations.get("web"), Some(&0));
    assert!(done.snapshot_index > 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_too_big_waits_blocked_until_a_node_with_room_joins() {
    let mut c = cluster();
    c.start_workers(1);
    c.node(&NodeBuilder::new().memory(512).build()).await;
    let job = JobBuilder::new("big").memory(2048).build();
    let eval = c.register(&job).await;
    eventually("eval complete", || {
        c.eval(&eval.id).status == EvalStatus::Complete
    })
    .await;
    let done = c.eval(&eval.id);
    let why = done.failed_tg_allocs["web"].describe();
    assert!(why.contains("exhausted on memory"), "{why}");
    let blocked_id = done.blocked_eval.clone().expect("blocked eval");
    assert_eq!(c.eval(&blocked_id).status, EvalStatus::Blocked);
    assert_eq!(c.live("big"), 0);

    c.node(&NodeBuilder::new().memory(4096).build()).await;
    eventually("placed", || c.live("big") == 1).await;
    eventually("blocked eval complete", || {
        c.eval(&blocked_id).status == EvalStatus::Complete
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_a_job_stops_its_allocations() {
    let mut c = cluster();
    c.start_workers(1);
    c.node(&NodeBuilder::new().build()).await;
    let job = JobBuilder::new("web").count(2).build();
    c.register(&job).await;
    eventually("placed", || c.live("web") == 2).await;
    let stop_eval = Evaluation::for_job(&job, triggers::JOB_DEREGISTER);
    c.log
        .submit(Command::DeregisterJob {
            job_id: "web".into(),
            purge: false,
            eval: Some(stop_eval.clone()),
            enforce_index: None,
        })
        .await
        .expect("deregister");
    eventually("stopped", || c.live("web") == 0).await;
    eventually("eval complete", || {
        c.eval(&stop_eval.id).status == EvalStatus::Complete
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_pending_evals_of_a_job_are_canceled_in_the_store() {
    let mut c = cluster();
    c.node(&NodeBuilder::new().build()).await;
    let job = JobBuilder::new("web").build();
    let first = c.register(&job).await;
    let middle = c.register(&job).await;
    let last = c.register(&job).await;
    c.start_workers(1);
    eventually("middle canceled", || {
        c.eval(&middle.id).status == EvalStatus::Canceled
    })
    .await;
    eventually("first and last complete", || {
        c.eval(&first.id).status == EvalStatus::Complete
            && c.eval(&last.id).status == EvalStatus::Complete
    })
    .await;
    assert_eq!(c.live("web"), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_that_keeps_failing_is_marked_failed() {
    let mut c = cluster();
    // No plan applier: every plan submission fails.
    if let Some(a) = c.applier.take() {
        c.stop.send_replace(true);
        a.join().await;
        c.stop.send_replace(false);
    }
    c.start_workers(1);
    c.node(&NodeBuilder::new().build()).await;
    let eval = c.register(&JobBuilder::new("web").build()).await;
    eventually("eval failed", || {
        c.eval(&eval.id).status == EvalStatus::Failed
    })
    .await;
    assert!(c
        .eval(&eval.id)
        .status_description
        .contains("delivery limit"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stop_promptly_on_shutdown() {
    let mut c = cluster();
    c.start_workers(3);
    assert_eq!(c.workers.len(), 4, "three workers and the reaper");
    let started = std::time::Instant::now();
    c.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_change_updates_stored_allocations_in_place() {
    let mut c = cluster();
    c.start_workers(1);
    c.node(&NodeBuilder::new().build()).await;
    c.register(&JobBuilder::new("web").count(2).build()).await;
    eventually("placed", || c.live("web") == 2).await;
    let ids = |c: &Cluster| -> std::collections::BTreeSet<AllocId> {
        c.store
            .allocs_by_job("web")
            .expect("read")
            .into_iter()
            .filter(|a| a.desired_status == DesiredStatus::Run)
            .map(|a| a.id)
            .collect()
    };
    let before = ids(&c);
    let eval = c.register(&JobBuilder::new("web").count(3).build()).await;
    eventually("eval complete", || {
        c.eval(&eval.id).status == EvalStatus::Complete
    })
    .await;
    let after = ids(&c);
    assert_eq!(after.len(), 3);
    assert!(before.is_subset(&after), "the first two were kept");
    let versions: Vec<u64> = c
        .store
        .allocs_by_job("web")
        .expect("read")
        .iter()
        .map(|a| a.job_version)
        .collect();
    let job = c.store.job("web").expect("read").expect("job");
    assert!(
        versions.iter().all(|v| *v == job.version),
        "{versions:?} vs {}",
        job.version
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_keeps_one_blocked_eval_across_failing_evaluations() {
    let mut c = cluster();
    c.start_workers(1);
    c.node(&NodeBuilder::new().memory(512).build()).await;
    let job = JobBuilder::new("big").memory(2048).build();
    let first = c.register(&job).await;
    eventually("first complete", || {
        c.eval(&first.id).status == EvalStatus::Complete
    })
    .await;
    let again = Evaluation::for_job(&job, triggers::JOB_REGISTER);
    c.log
        .submit(Command::UpsertEvals {
            evals: vec![again.clone()],
        })
        .await
        .expect("eval");
    eventually("second complete", || {
        c.eval(&again.id).status == EvalStatus::Complete
    })
    .await;
    let blocked: Vec<Evaluation> = c
        .store
        .evals_by_job("big")
        .expect("read")
        .into_iter()
        .filter(|e| e.status == EvalStatus::Blocked)
        .collect();
    assert_eq!(blocked.len(), 1);
    assert_eq!(c.eval(&again.id).blocked_eval, Some(blocked[0].id.clone()));
    assert_eq!(c.broker.stats().blocked, 1);
    c.shutdown().await;
}
