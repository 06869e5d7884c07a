//! The watcher against a real store in a temp dir and the command log: each pass reads
//! what plans and client reports stored and submits what `decide` asked for.

use std::time::{Duration, Instant};

use orch_common::ids::now_ms;
use orch_common::mock::{
    deployment_group, AllocBuilder, DeploymentBuilder, JobBuilder, NodeBuilder,
};
use orch_common::model::{deployment_desc as desc, triggers, DeploymentStatus, Job};

use super::testing::{health, plan};
use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    log: CommandLog,
    store: StateStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateStore::open(dir.path().join("state.db")).expect("store");
    let log = CommandLog::start(store.clone(), vec![]).expect("log");
    Fixture {
        _dir: dir,
        log,
        store,
    }
}

impl Fixture {
    async fn submit(&self, cmd: Command) -> u64 {
        self.log.submit(cmd).await.expect("submit").index
    }

    /// Registers `job` and returns it as stored.
    async fn register(&self, job: &Job) -> Job {
        self.submit(Command::UpsertJob {
            job: job.clone(),
            eval: None,
            enforce_index: None,
        })
        .await;
        self.store.job(&job.id).expect("read").expect("job")
    }

    fn deployment(&self, id: &str) -> Deployment {
        self.store
            .deployment(id)
            .expect("read")
            .expect("deployment")
    }

    fn watcher_evals(&self, job_id: &str) -> Vec<Evaluation> {
        self.store
            .evals_by_job(job_id)
            .expect("read")
            .into_iter()
            .filter(|e| e.triggered_by == triggers::DEPLOYMENT_WATCHER)
            .collect()
    }

    /// Version 0 of "web" (one instance) rolled out and healthy: stable.
    async fn stable_v0(&self, w: &mut Watcher) -> Job {
        self.submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await;
        let v0 = self
            .register(&JobBuilder::new("web").count(1).build())
            .await;
        self.submit(plan(
            Some(
                DeploymentBuilder::new(&v0)
                    .id("d0")
                    .group("web", deployment_group(1, 0))
                    .build(),
            ),
            vec![AllocBuilder::new(&v0)
                .id("a0")
                .node_id("n1")
                .deployment("d0")
                .build()],
        ))
        .await;
        self.submit(health("a0", "d0", true, now_ms())).await;
        w.pass().await.expect("pass");
        assert_eq!(self.deployment("d0").status, DeploymentStatus::Successful);
        v0
    }
}

#[tokio::test]
async fn all_healthy_makes_the_deployment_successful_and_the_version_stable() {
    let f = fixture();
    let mut w = Watcher::new(f.log.clone());
    f.stable_v0(&mut w).await;
    let d = f.deployment("d0");
    assert_eq!(d.status_description, desc::SUCCESSFUL);
    assert!(f.store.job("web").unwrap().unwrap().stable);
    assert!(f.store.job_version("web", 0).unwrap().unwrap().stable);
    // Nothing more to do: a pass changes nothing.
    let index = f.store.last_index();
    w.pass().await.expect("pass");
    assert_eq!(f.store.last_index(), index);
}

#[tokio::test]
async fn an_unhealthy_instance_fails_the_deployment_and_reverts_to_the_stable_version() {
    let f = fixture();
    let mut w = Watcher::new(f.log.clone());
    f.stable_v0(&mut w).await;
    let v1 = f.register(&JobBuilder::new("web").count(2).build()).await;
    assert_eq!(v1.version, 1);
    let mut g = deployment_group(2, 0);
    g.auto_revert = true;
    f.submit(plan(
        Some(DeploymentBuilder::new(&v1).id("d1").group("web", g).build()),
        vec![AllocBuilder::new(&v1)
            .id("b0")
            .node_id("n1")
            .deployment("d1")
            .build()],
    ))
    .await;
    w.pass().await.expect("pass");
    f.submit(health("b0", "d1", false, now_ms())).await;
    w.pass().await.expect("pass");

    let d = f.deployment("d1");
    assert_eq!(d.status, DeploymentStatus::Failed);
    assert_eq!(
        d.status_description,
        desc::rolling_back(desc::FAILED_ALLOCATIONS, 0)
    );
    let job = f.store.job("web").unwrap().unwrap();
    assert_eq!(
        job.version, 2,
        "the stable spec registered as a new version"
    );
    assert_eq!(job.groups[0].count, 1);
    assert!(
        !job.stable,
        "the new version is not stable until it is deployed"
    );
    let evals = f.watcher_evals("web");
    let last = evals.last().expect("an evaluation for the failure");
    assert_eq!(last.job_modify_index, job.job_modify_index);
}

#[tokio::test]
async fn a_passed_progress_deadline_fails_the_deployment() {
    let f = fixture();
    let mut w = Watcher::new(f.log.clone());
    f.stable_v0(&mut w).await;
    let v1 = f.register(&JobBuilder::new("web").count(2).build()).await;
    let mut g = deployment_group(2, 0);
    g.require_progress_by = Some(now_ms() - 1);
    f.submit(plan(
        Some(DeploymentBuilder::new(&v1).id("d1").group("web", g).build()),
        vec![AllocBuilder::new(&v1)
            .id("b0")
            .node_id("n1")
            .deployment("d1")
            .build()],
    ))
    .await;
    w.pass().await.expect("pass");
    let d = f.deployment("d1");
    assert_eq!(d.status, DeploymentStatus::Failed);
    assert_eq!(d.status_description, desc::FAILED_DEADLINE);
    assert_eq!(
        f.store.job("web").unwrap().unwrap().version,
        1,
        "no auto_revert"
    );
    assert!(!f.watcher_evals("web").is_empty());
}

#[tokio::test]
async fn a_deadline_ahead_is_the_next_check() {
    let f = fixture();
    let mut w = Watcher::new(f.log.clone());
    let v0 = f.register(&JobBuilder::new("web").count(2).build()).await;
    let by = now_ms() + 60_000;
    let mut g = deployment_group(2, 0);
    g.require_progress_by = Some(by);
    f.submit(plan(
        Some(DeploymentBuilder::new(&v0).id("d0").group("web", g).build()),
        vec![],
    ))
    .await;
    assert_eq!(w.pass().await.expect("pass"), Some(by));
}

#[tokio::test]
async fn a_growing_healthy_count_creates_an_evaluation_from_the_running_loop() {
    let f = fixture();
    f.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    })
    .await;
    let v0 = f.register(&JobBuilder::new("web").count(2).build()).await;
    f.submit(plan(
        Some(
            DeploymentBuilder::new(&v0)
                .id("d0")
                .group("web", deployment_group(2, 0))
                .build(),
        ),
        vec![AllocBuilder::new(&v0)
            .id("a0")
            .node_id("n1")
            .deployment("d0")
            .build()],
    ))
    .await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = spawn(f.log.clone(), stop_rx);
    // At start: one evaluation for the active deployment.
    wait_until(|| f.watcher_evals("web").len() == 1).await;
    f.submit(health("a0", "d0", true, now_ms())).await;
    wait_until(|| f.watcher_evals("web").len() == 2).await;
    assert_eq!(f.deployment("d0").status, DeploymentStatus::Running);
    // The second instance: healthy, and the deployment is done.
    f.submit(plan(
        None,
        vec![AllocBuilder::new(&v0)
            .id("a1")
            .node_id("n1")
            .index(1)
            .deployment("d0")
            .build()],
    ))
    .await;
    f.submit(health("a1", "d0", true, now_ms())).await;
    wait_until(|| f.deployment("d0").status == DeploymentStatus::Successful).await;
    stop_tx.send_replace(true);
    handle.await.expect("watcher task");
}

#[tokio::test]
async fn healthy_auto_promote_canaries_are_promoted_with_an_evaluation() {
    let f = fixture();
    let mut w = Watcher::new(f.log.clone());
    f.stable_v0(&mut w).await;
    let mut v1 = JobBuilder::new("web").count(1).build();
    v1.meta.insert("v".into(), "1".into());
    let v1 = f.register(&v1).await;
    let mut g = deployment_group(1, 1);
    g.auto_promote = true;
    f.submit(plan(
        Some(DeploymentBuilder::new(&v1).id("d1").group("web", g).build()),
        vec![AllocBuilder::new(&v1)
            .id("c0")
            .node_id("n1")
            .deployment("d1")
            .canary()
            .build()],
    ))
    .await;
    w.pass().await.expect("pass");
    assert_eq!(
        f.deployment("d1").status_description,
        desc::RUNNING_AUTO_PROMOTION
    );
    let before = f.watcher_evals("web").len();
    f.submit(health("c0", "d1", true, now_ms())).await;
    w.pass().await.expect("pass");
    let d = f.deployment("d1");
    assert!(d.task_groups["web"].promoted);
    assert!(!f.store.alloc("c0").unwrap().unwrap().is_canary());
    assert!(f.watcher_evals("web").len() > before);
    // The canary is the one instance: the next pass ends the deployment.
    w.pass().await.expect("pass");
    assert_eq!(f.deployment("d1").status, DeploymentStatus::Successful);
}

/// Polls `cond` until it holds (a deadline only against hanging).
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
