//! Broker scenarios: ordering, one-in-flight per job, coalescing, ack/nack/timeouts,
//! delayed evaluations and the blocked-evals tracker. Time-dependent ones run on a
//! paused tokio clock.

use std::time::Duration;

use orch_common::api::AllocClientUpdate;
use orch_common::mock::{JobBuilder, NodeBuilder};
use orch_common::model::{ClientStatus, EvalStatus, Evaluation, JobType, NodeStatus};

use super::*;

const SHORT: Duration = Duration::from_millis(10);

fn eval(job: &str, priority: u8) -> Evaluation {
    let job = JobBuilder::new(job).priority(priority).build();
    Evaluation::for_job(&job, "job-register")
}

fn blocked(job: &str, snapshot_index: u64) -> Evaluation {
    let mut e = eval(job, 50);
    e.status = EvalStatus::Blocked;
    e.snapshot_index = snapshot_index;
    e
}

fn put(b: &EvalBroker, e: &Evaluation, index: u64) {
    b.observe(
        &Command::UpsertEvals {
            evals: vec![e.clone()],
        },
        index,
    );
}

fn config() -> BrokerConfig {
    BrokerConfig {
        nack_timeout: Duration::from_secs(60),
        delivery_limit: 3,
        initial_nack_delay: Duration::from_secs(1),
        subsequent_nack_delay: Duration::from_secs(20),
    }
}

#[tokio::test]
async fn higher_priority_is_delivered_first_then_oldest() {
    let b = EvalBroker::new(config());
    let low = eval("a", 10);
    let high = eval("b", 90);
    let mid_old = eval("c", 50);
    let mid_new = eval("d", 50);
    put(&b, &low, 1);
    put(&b, &mid_old, 2);
    put(&b, &mid_new, 3);
    put(&b, &high, 4);
    let mut order = Vec::new();
    while let Some((e, _)) = b.dequeue(SHORT).await {
        order.push(e.id);
    }
    assert_eq!(order, vec![high.id, mid_old.id, mid_new.id, low.id]);
}

#[tokio::test(start_paused = true)]
async fn dequeue_times_out_when_nothing_is_ready() {
    let b = EvalBroker::new(config());
    let started = Instant::now();
    assert!(b.dequeue(Duration::from_secs(5)).await.is_none());
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test]
async fn a_waiting_dequeue_wakes_on_enqueue() {
    let b = std::sync::Arc::new(EvalBroker::new(config()));
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.dequeue(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let e = eval("a", 50);
    // From a plain thread, as the state writer does.
    let b2 = b.clone();
    let e2 = e.clone();
    std::thread::spawn(move || put(&b2, &e2, 1))
        .join()
        .expect("observer thread");
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("task")
        .expect("an eval");
    assert_eq!(got.0.id, e.id);
}

#[tokio::test]
async fn only_one_eval_per_job_is_in_flight() {
    let b = EvalBroker::new(config());
    let first = eval("a", 50);
    let second = eval("a", 50);
    put(&b, &first, 1);
    put(&b, &second, 2);
    let (got, token) = b.dequeue(SHORT).await.expect("first");
    assert_eq!(got.id, first.id);
    assert!(b.dequeue(SHORT).await.is_none(), "the job is busy");
    b.ack(&got.id, &token).expect("ack");
    let (next, _) = b.dequeue(SHORT).await.expect("second");
    assert_eq!(next.id, second.id);
}

#[tokio::test]
async fn the_newest_waiting_eval_runs_and_older_ones_are_canceled() {
    let b = EvalBroker::new(config());
    let running = eval("a", 50);
    let older = eval("a", 50);
    let newest = eval("a", 50);
    put(&b, &running, 1);
    let (got, token) = b.dequeue(SHORT).await.expect("running");
    put(&b, &older, 2);
    put(&b, &newest, 3);
    assert_eq!(b.stats().waiting, 2);
    b.ack(&got.id, &token).expect("ack");
    let (next, _) = b.dequeue(SHORT).await.expect("newest");
    assert_eq!(next.id, newest.id);
    let reaped = b.take_reapable();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].id, older.id);
    assert_eq!(reaped[0].status, EvalStatus::Canceled);
}

#[tokio::test]
async fn ack_with_a_stale_token_is_refused() {
    let b = EvalBroker::new(config());
    let e = eval("a", 50);
    put(&b, &e, 1);
    let (got, token) = b.dequeue(SHORT).await.expect("eval");
    assert!(matches!(
        b.ack(&got.id, "not-the-token"),
        Err(BrokerError::TokenMismatch { .. })
    ));
    b.ack(&got.id, &token).expect("ack");
    assert!(matches!(
        b.ack(&got.id, &token),
        Err(BrokerError::NotOutstanding { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_nacked_eval_is_redelivered_after_a_delay() {
    let b = EvalBroker::new(config());
    let e = eval("a", 50);
    put(&b, &e, 1);
    let (_, token) = b.dequeue(SHORT).await.expect("eval");
    assert_eq!(b.nack(&e.id, &token), Ok(NackOutcome::Requeued));
    assert!(b.dequeue(Duration::from_millis(500)).await.is_none());
    let (again, _) = b
        .dequeue(Duration::from_secs(2))
        .await
        .expect("redelivered");
    assert_eq!(again.id, e.id);
}

#[tokio::test(start_paused = true)]
async fn the_delivery_limit_fails_the_eval() {
    let b = EvalBroker::new(config());
    let e = eval("a", 50);
    put(&b, &e, 1);
    for attempt in 1..=3 {
        let (_, token) = b.dequeue(Duration::from_secs(60)).await.expect("delivery");
        let outcome = b.nack(&e.id, &token).expect("nack");
        if attempt < 3 {
            assert_eq!(outcome, NackOutcome::Requeued);
        } else {
            assert!(
                matches!(outcome, NackOutcome::Failed(ref f) if f.status == EvalStatus::Failed)
            );
        }
    }
    let reaped = b.take_reapable();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].status, EvalStatus::Failed);
    assert!(b.dequeue(Duration::from_secs(60)).await.is_none());
    // The job's slot is free again.
    let next = eval("a", 50);
    put(&b, &next, 2);
    assert!(b.dequeue(SHORT).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn an_unacked_eval_is_redelivered_after_the_nack_timeout() {
    let b = EvalBroker::new(config());
    let e = eval("a", 50);
    put(&b, &e, 1);
    let (_, stale) = b.dequeue(SHORT).await.expect("eval");
    assert!(b.dequeue(Duration::from_secs(59)).await.is_none());
    let (again, fresh) = b
        .dequeue(Duration::from_secs(5))
        .await
        .expect("redelivered");
    assert_eq!(again.id, e.id);
    assert!(b.ack(&e.id, &stale).is_err());
    b.ack(&e.id, &fresh).expect("ack");
}

#[tokio::test(start_paused = true)]
async fn an_eval_with_wait_until_is_held_until_then() {
    let b = EvalBroker::new(config());
    let mut e = eval("a", 50);
    e.wait_until = Some(orch_common::ids::now_ms() + 5_000);
    put(&b, &e, 1);
    assert_eq!(b.stats().delayed, 1);
    assert!(b.dequeue(Duration::from_secs(4)).await.is_none());
    let (got, _) = b.dequeue(Duration::from_secs(2)).await.expect("due");
    assert_eq!(got.id, e.id);
}

#[tokio::test]
async fn evals_in_job_and_node_commands_are_enqueued() {
    let b = EvalBroker::new(config());
    let job = JobBuilder::new("a").build();
    let e1 = Evaluation::for_job(&job, "job-register");
    b.observe(
        &Command::UpsertJob {
            job: job.clone(),
            eval: Some(e1.clone()),
            enforce_index: None,
        },
        7,
    );
    let e2 = eval("b", 50);
    b.observe(
        &Command::UpdateNodeStatus {
            node_id: "n".into(),
            status: NodeStatus::Down,
            evals: vec![e2.clone()],
        },
        8,
    );
    let (got, _) = b.dequeue(SHORT).await.expect("first");
    assert_eq!(got.id, e1.id);
    assert_eq!((got.create_index, got.modify_index), (7, 7));
    let (got, _) = b.dequeue(SHORT).await.expect("second");
    assert_eq!(got.id, e2.id);
}

#[tokio::test]
async fn a_blocked_eval_waits_until_a_node_joins() {
    let b = EvalBroker::new(config());
    let e = blocked("a", 10);
    put(&b, &e, 11);
    assert_eq!(b.stats().blocked, 1);
    assert!(b.dequeue(SHORT).await.is_none());
    let node = NodeBuilder::new().build();
    b.observe(&Command::UpsertNode { node }, 12);
    let (got, _) = b.dequeue(SHORT).await.expect("unblocked");
    assert_eq!(got.id, e.id);
    assert_eq!(
        got.status,
        EvalStatus::Blocked,
        "the scheduler sees it was blocked"
    );
    assert_eq!(b.stats().blocked, 0);
}

#[tokio::test]
async fn a_node_of_an_infeasible_class_does_not_unblock() {
    let b = EvalBroker::new(config());
    let node = NodeBuilder::new().build();
    let mut e = blocked("a", 10);
    e.class_eligibility
        .insert(node.computed_class.clone(), false);
    put(&b, &e, 11);
    b.observe(&Command::UpsertNode { node: node.clone() }, 12);
    assert!(b.dequeue(SHORT).await.is_none());
    let other = NodeBuilder::new().driver("container").build();
    assert_ne!(other.computed_class, node.computed_class);
    b.observe(&Command::UpsertNode { node: other }, 13);
    assert!(b.dequeue(SHORT).await.is_some());
}

#[tokio::test]
async fn a_terminal_alloc_update_unblocks() {
    let b = EvalBroker::new(config());
    let e = blocked("a", 10);
    put(&b, &e, 11);
    let running = AllocClientUpdate {
        deployment_health: None,
        id: "x".into(),
        client_status: ClientStatus::Running,
        client_description: String::new(),
        task_states: Default::default(),
        checks: Default::default(),
    };
    let done = AllocClientUpdate {
        client_status: ClientStatus::Complete,
        ..running.clone()
    };
    b.observe(
        &Command::UpdateAllocsFromClient {
            updates: vec![running],
            evals: vec![],
        },
        12,
    );
    assert!(b.dequeue(SHORT).await.is_none());
    b.observe(
        &Command::UpdateAllocsFromClient {
            updates: vec![done],
            evals: vec![],
        },
        13,
    );
    assert!(b.dequeue(SHORT).await.is_some());
}

#[tokio::test]
async fn repeated_capacity_changes_enqueue_a_blocked_eval_once() {
    let b = EvalBroker::new(config());
    put(&b, &blocked("a", 10), 11);
    for i in 0..5 {
        b.observe(
            &Command::UpsertNode {
                node: NodeBuilder::new().build(),
            },
            12 + i,
        );
    }
    assert_eq!(b.stats().ready, 1);
}

#[tokio::test]
async fn only_the_newest_blocked_eval_of_a_job_is_kept() {
    let b = EvalBroker::new(config());
    let older = blocked("a", 10);
    let newer = blocked("a", 10);
    put(&b, &older, 11);
    put(&b, &newer, 12);
    assert_eq!(b.stats().blocked, 1);
    assert_eq!(b.blocked_eval("a").map(|e| e.id), Some(newer.id));
    let reaped = b.take_reapable();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].id, older.id);
    assert_eq!(reaped[0].status, EvalStatus::Canceled);
}

#[tokio::test]
async fn a_complete_eval_without_failures_cancels_the_jobs_blocked_eval() {
    let b = EvalBroker::new(config());
    let stale = blocked("a", 10);
    put(&b, &stale, 11);
    let mut done = eval("a", 50);
    done.status = EvalStatus::Complete;
    put(&b, &done, 12);
    assert_eq!(b.stats().blocked, 0);
    assert_eq!(b.take_reapable()[0].id, stale.id);
}

#[tokio::test]
async fn a_block_that_missed_a_capacity_change_runs_again_after_its_ack() {
    let b = EvalBroker::new(config());
    let e = blocked("a", 10);
    put(&b, &e, 11);
    b.observe(
        &Command::UpsertNode {
            node: NodeBuilder::new().build(),
        },
        12,
    );
    let (got, token) = b.dequeue(SHORT).await.expect("unblocked");
    // While it runs (on a snapshot at 12), another node joins...
    b.observe(
        &Command::UpsertNode {
            node: NodeBuilder::new().build(),
        },
        13,
    );
    // ...and the scheduler reblocks it having seen only index 12.
    let mut again = got.clone();
    again.snapshot_index = 12;
    put(&b, &again, 14);
    assert_eq!(b.stats().blocked, 0);
    assert!(b.dequeue(SHORT).await.is_none(), "still outstanding");
    b.ack(&got.id, &token).expect("ack");
    let (rerun, _) = b.dequeue(SHORT).await.expect("rerun");
    assert_eq!(rerun.id, e.id);
}

#[tokio::test]
async fn restore_queues_pending_and_tracks_blocked_evals() {
    let b = EvalBroker::new(config());
    let mut pending = eval("a", 50);
    pending.create_index = 3;
    let mut parked = blocked("b", 4);
    parked.create_index = 4;
    b.restore(vec![pending.clone(), parked]);
    assert_eq!(b.stats().ready, 1);
    assert_eq!(b.stats().blocked, 1);
    let (got, _) = b.dequeue(SHORT).await.expect("pending");
    assert_eq!(got.id, pending.id);
}

#[tokio::test]
async fn a_reset_forgets_everything_and_queues_the_restored_evals() {
    let b = EvalBroker::new(config());
    put(&b, &eval("old-ready", 50), 1);
    put(&b, &blocked("old-blocked", 1), 2);
    let out = eval("old-out", 50);
    put(&b, &out, 3);
    // One out with a worker (dequeue order is by priority then index: take until it).
    let mut token = None;
    while let Some((e, t)) = b.dequeue(SHORT).await {
        if e.id == out.id {
            token = Some(t);
            break;
        }
    }
    let token = token.expect("old-out dequeued");

    let mut restored = eval("new", 50);
    restored.create_index = 7;
    b.reset(vec![restored.clone(), blocked("new-blocked", 7)]);
    assert_eq!(b.stats().ready, 1);
    assert_eq!(b.stats().blocked, 1);
    assert_eq!(b.stats().unacked, 0);
    assert!(
        b.ack(&out.id, &token).is_err(),
        "the old delivery is forgotten"
    );
    let (got, _) = b.dequeue(SHORT).await.expect("the restored eval");
    assert_eq!(got.id, restored.id);
    assert!(b.dequeue(SHORT).await.is_none());
}

#[tokio::test]
async fn a_system_job_eval_is_queued_like_any_other() {
    let b = EvalBroker::new(config());
    let job = JobBuilder::new("sys").job_type(JobType::System).build();
    let e = Evaluation::for_job(&job, "node-update");
    put(&b, &e, 1);
    assert_eq!(
        b.dequeue(SHORT).await.map(|(e, _)| e.job_type),
        Some(JobType::System)
    );
}
