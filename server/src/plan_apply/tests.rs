//! Plan applier tests on a real temp-dir store: what fits is committed, what does not
//! is handed back with a refresh index, stops always commit.

use std::time::Duration;

use orch_common::mock::{running_alloc, JobBuilder, NodeBuilder, PlanBuilder};
use orch_common::model::{AllocatedPort, Allocation, DesiredStatus, Job, Node, NodeStatus, Plan};
use tokio::sync::{oneshot, watch};

use super::*;
use crate::state::{Command, CommandLog, StateStore};

struct Fixture {
    _dir: tempfile::TempDir,
    store: StateStore,
    log: CommandLog,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path().join("state.db")).expect("open store");
    let log = CommandLog::start(store.clone(), vec![]).expect("start log");
    Fixture {
        _dir: dir,
        store,
        log,
    }
}

impl Fixture {
    async fn node(&self, node: &Node) {
        self.log
            .submit(Command::UpsertNode { node: node.clone() })
            .await
            .expect("node");
    }
    async fn job(&self, job: &Job) {
        self.log
            .submit(Command::UpsertJob {
                job: job.clone(),
                eval: None,
                enforce_index: None,
            })
            .await
            .expect("job");
    }
    /// Commits allocations directly (as an earlier plan would have).
    async fn existing(&self, allocs: Vec<Allocation>) {
        self.log
            .submit(Command::ApplyPlan {
                deployment: None,
                deployment_updates: Vec::new(),
                allocs,
                stopped: vec![],
                evals: vec![],
            })
            .await
            .expect("allocs");
    }
    fn live(&self, job_id: &str) -> Vec<Allocation> {
        self.store
            .allocs_by_job(job_id)
            .expect("read")
            .into_iter()
            .filter(|a| a.desired_status == DesiredStatus::Run)
            .collect()
    }
}

fn plan_of(job: &Job, placed: &[Allocation], stopped: &[Allocation]) -> Plan {
    let plan = PlanBuilder::new(job).eval_id("eval-1");
    let plan = placed.iter().fold(plan, |plan, a| plan.place(a));
    stopped.iter().fold(plan, |plan, a| plan.stop(a)).build()
}

#[tokio::test]
async fn a_plan_that_fits_is_committed_whole() {
    let f = fixture().await;
    let node = NodeBuilder::new().build();
    let job = JobBuilder::new("web").build();
    f.node(&node).await;
    f.job(&job).await;
    let placed = vec![
        running_alloc(&job, "web", 0, &node),
        running_alloc(&job, "web", 1, &node),
    ];
    let plan = plan_of(&job, &placed, &[]);
    let result = apply(&f.store, &f.log, plan.clone()).await.expect("apply");
    assert!(result.is_full_commit(&plan));
    assert_eq!(result.refresh_index, 0);
    assert_eq!(result.alloc_index, f.store.last_index());
    assert_eq!(f.live("web").len(), 2);
}

#[tokio::test]
async fn a_node_without_room_is_rejected_with_a_refresh_index() {
    let f = fixture().await;
    let small = NodeBuilder::new().memory(512).build();
    let big = NodeBuilder::new().build();
    let job = JobBuilder::new("web").memory(300).build();
    f.node(&small).await;
    f.node(&big).await;
    f.job(&job).await;
    f.existing(vec![running_alloc(&job, "web", 0, &small)])
        .await;
    let placed = vec![
        running_alloc(&job, "web", 1, &small),
        running_alloc(&job, "web", 2, &big),
    ];
    let plan = plan_of(&job, &placed, &[]);
    let result = apply(&f.store, &f.log, plan.clone()).await.expect("apply");
    assert!(!result.is_full_commit(&plan));
    assert!(result.allocated_nodes.contains(&big.id));
    assert!(!result.allocated_nodes.contains(&small.id));
    assert!(result.refresh_index >= result.alloc_index && result.refresh_index > 0);
    let mut indexes: Vec<u32> = f.live("web").iter().map(|a| a.index).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 2]);
}

#[tokio::test]
async fn stops_commit_even_when_placements_on_a_down_node_are_rejected() {
    let f = fixture().await;
    let node = NodeBuilder::new().build();
    let job = JobBuilder::new("web").build();
    f.node(&node).await;
    f.job(&job).await;
    let old = running_alloc(&job, "web", 0, &node);
    f.existing(vec![old.clone()]).await;
    f.log
        .submit(Command::UpdateNodeStatus {
            node_id: node.id.clone(),
            status: NodeStatus::Down,
            evals: vec![],
        })
        .await
        .expect("down");
    let plan = plan_of(
        &job,
        &[running_alloc(&job, "web", 1, &node)],
        std::slice::from_ref(&old),
    );
    let result = apply(&f.store, &f.log, plan).await.expect("apply");
    assert!(result.allocated_nodes.is_empty());
    assert!(result.updated_nodes.contains(&node.id));
    let stored = f.store.alloc(&old.id).expect("read").expect("alloc");
    assert_eq!(stored.desired_status, DesiredStatus::Stop);
    assert!(f.live("web").is_empty());
}

#[tokio::test]
async fn stops_in_the_plan_free_room_for_its_placements() {
    let f = fixture().await;
    let node = NodeBuilder::new().memory(512).build();
    let v0 = JobBuilder::new("web").memory(400).build();
    f.node(&node).await;
    f.job(&v0).await;
    let old = running_alloc(&v0, "web", 0, &node);
    f.existing(vec![old.clone()]).await;
    let mut new = running_alloc(&v0, "web", 0, &node);
    new.previous_allocation = Some(old.id.clone());
    let plan = plan_of(&v0, &[new.clone()], std::slice::from_ref(&old));
    let result = apply(&f.store, &f.log, plan.clone()).await.expect("apply");
    assert!(result.is_full_commit(&plan));
    let live = f.live("web");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, new.id);
}

#[tokio::test]
async fn evictions_free_room_and_give_the_evicted_job_an_eval() {
    let f = fixture().await;
    let node = NodeBuilder::new().memory(512).build();
    let low = JobBuilder::new("low").priority(10).memory(400).build();
    let vip = JobBuilder::new("vip").priority(80).memory(400).build();
    f.node(&node).await;
    f.job(&low).await;
    f.job(&vip).await;
    let victim = running_alloc(&low, "web", 0, &node);
    f.existing(vec![victim.clone()]).await;
    let placed = running_alloc(&vip, "web", 0, &node);
    let mut plan = plan_of(&vip, std::slice::from_ref(&placed), &[]);
    let mut evicted = victim.clone();
    evicted.desired_status = DesiredStatus::Evict;
    plan.node_preemptions.insert(node.id.clone(), vec![evicted]);
    let result = apply(&f.store, &f.log, plan.clone()).await.expect("apply");
    assert!(result.is_full_commit(&plan));
    assert_eq!(f.live("vip").len(), 1);
    let stored = f.store.alloc(&victim.id).expect("read").expect("alloc");
    assert_eq!(stored.desired_status, DesiredStatus::Evict);
    let evals = f.store.evals_by_job("low").expect("evals");
    assert_eq!(evals.len(), 1);
    assert_eq!(evals[0].triggered_by, "preemption");
}

#[tokio::test]
async fn an_in_place_update_is_not_counted_twice() {
    let f = fixture().await;
    let node = NodeBuilder::new().memory(512).build();
    let job = JobBuilder::new("web").memory(400).build();
    f.node(&node).await;
    f.job(&job).await;
    let a = running_alloc(&job, "web", 0, &node);
    f.existing(vec![a.clone()]).await;
    let mut updated = a.clone();
    updated.job_version = 1;
    let plan = plan_of(&job, &[updated], &[]);
    let result = apply(&f.store, &f.log, plan.clone()).await.expect("apply");
    assert!(result.is_full_commit(&plan));
}

#[tokio::test]
async fn a_port_already_taken_is_rejected() {
    let f = fixture().await;
    let node = NodeBuilder::new().build();
    let job = JobBuilder::new("web").build();
    f.node(&node).await;
    f.job(&job).await;
    let port = |v| AllocatedPort {
        label: "http".into(),
        value: v,
        to: None,
        host_ip: "127.0.0.1".into(),
    };
    let mut first = running_alloc(&job, "web", 0, &node);
    first.resources.ports = vec![port(8080)];
    f.existing(vec![first]).await;
    let mut second = running_alloc(&job, "web", 1, &node);
    second.resources.ports = vec![port(8080)];
    let plan = plan_of(&job, &[second], &[]);
    let result = apply(&f.store, &f.log, plan).await.expect("apply");
    assert!(result.allocated_nodes.is_empty());
    assert!(result.refresh_index > 0);
}

#[tokio::test]
async fn all_at_once_commits_nothing_when_one_node_is_rejected() {
    let f = fixture().await;
    let small = NodeBuilder::new().memory(100).build();
    let big = NodeBuilder::new().build();
    let job = JobBuilder::new("web").build();
    f.node(&small).await;
    f.node(&big).await;
    f.job(&job).await;
    let mut plan = plan_of(
        &job,
        &[
            running_alloc(&job, "web", 0, &small),
            running_alloc(&job, "web", 1, &big),
        ],
        &[],
    );
    plan.all_at_once = true;
    let before = f.store.last_index();
    let result = apply(&f.store, &f.log, plan).await.expect("apply");
    assert!(result.allocated_nodes.is_empty());
    assert_eq!(result.alloc_index, 0);
    assert_eq!(f.store.last_index(), before);
}

#[tokio::test]
async fn the_applier_task_answers_requests_and_stops_on_shutdown() {
    let f = fixture().await;
    let node = NodeBuilder::new().build();
    let job = JobBuilder::new("web").build();
    f.node(&node).await;
    f.job(&job).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let applier = PlanApplier::spawn(f.store.clone(), f.log.clone(), stop_rx);
    let (reply, answer) = oneshot::channel();
    applier
        .sender()
        .send(PlanRequest {
            checked: None,
            plan: plan_of(&job, &[running_alloc(&job, "web", 0, &node)], &[]),
            reply,
        })
        .await
        .expect("send");
    let result = answer.await.expect("answer").expect("applied");
    assert!(result.alloc_index > 0);
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), applier.join())
        .await
        .expect("stopped");
}

#[test]
fn node_fits_sum_checks_placements_against_what_stays_on_the_node() {
    let node = NodeBuilder::new().memory(512).reserved_ports(&[22]).build();
    let job = JobBuilder::new("web").memory(200).build();
    let mut staying = NodeAllocated::default();
    let mut running = running_alloc(&job, "web", 0, &node);
    running.resources.ports = vec![port(20001)];
    staying.add(&running);

    let fits = running_alloc(&job, "web", 1, &node);
    assert_eq!(
        node_fits_sum(Some(&node), staying.clone(), std::slice::from_ref(&fits)),
        Ok(())
    );
    let too_many = vec![fits.clone(), running_alloc(&job, "web", 2, &node)];
    assert_eq!(
        node_fits_sum(Some(&node), staying.clone(), &too_many),
        Err("memory exhausted")
    );
    let mut taken = fits.clone();
    taken.resources.ports = vec![port(20001)];
    assert_eq!(
        node_fits_sum(Some(&node), staying.clone(), &[taken]),
        Err("port collision")
    );
    let mut reserved = fits;
    reserved.resources.ports = vec![port(22)];
    assert_eq!(
        node_fits_sum(Some(&node), staying, &[reserved]),
        Err("port reserved on the node")
    );
    assert_eq!(
        node_fits_sum(None, NodeAllocated::default(), &[]),
        Err("node does not exist")
    );
}

fn port(value: u16) -> AllocatedPort {
    AllocatedPort {
        label: "http".into(),
        value,
        to: None,
        host_ip: "127.0.0.1".into(),
    }
}

#[tokio::test]
async fn a_plan_checked_while_the_previous_one_commits_sees_its_room_taken() {
    let f = fixture().await;
    let node = NodeBuilder::new().memory(512).build();
    let job = JobBuilder::new("web").memory(300).build();
    f.node(&node).await;
    f.job(&job).await;
    // New placements, as the scheduler sends them (no create index yet).
    let new = |index| {
        let mut a = running_alloc(&job, "web", index, &node);
        a.create_index = 0;
        a
    };
    let first = plan_of(&job, &[new(0)], &[]);
    let second = plan_of(&job, &[new(1)], &[]);
    // Both checked before either commit is awaited: the second must not get the
    // room the first holds.
    let a = prepare(&f.store, &f.log, first.clone())
        .await
        .expect("first");
    let b = prepare(&f.store, &f.log, second.clone())
        .await
        .expect("second");
    let a = a.committed().await.expect("first commits");
    let b = b.committed().await.expect("second answers");
    assert!(a.is_full_commit(&first));
    assert!(b.allocated_nodes.is_empty());
    assert!(b.refresh_index > 0);
    assert_eq!(f.live("web").len(), 1);
    // Nothing stays held once the commit landed.
    let one = f.live("web")[0].resources.total().memory;
    assert_eq!(f.store.node_allocated(&node.id).resources.memory, one);
}
