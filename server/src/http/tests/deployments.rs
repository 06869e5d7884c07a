//! Deployment routes and `POST /v1/job/{id}/revert` over a store filled through the
//! log: reads (lists, one deployment, its allocations, a job's newest), prefix ids, a
//! blocking read, every action with its 4xx answers, and an action racing the watcher.

use orch_common::api::{DeploymentAllocHealthRequest, DeploymentPromoteRequest, JobRevertRequest};
use orch_common::ids::now_ms;
use orch_common::mock::{
    deployment_group, AllocBuilder, DeploymentBuilder, JobBuilder, NodeBuilder,
};
use orch_common::model::{deployment_desc as desc, DeploymentStatus};

use super::*;
use crate::deployment::testing::{health, plan};
use crate::deployment::{decide, read_active, Watcher};

/// Node n1, job "web" v0 (count 2) with deployment "dep-1" of two allocations
/// `a0`/`a1` (canaries when `canaries > 0`).
async fn deployed(h: &Harness, canaries: u32, auto_revert: bool) -> Job {
    h.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    })
    .await;
    h.register_job(&JobBuilder::new("web").count(2).build())
        .await;
    let job = h.state.store.job("web").unwrap().unwrap();
    let mut g = deployment_group(2, canaries);
    g.auto_revert = auto_revert;
    let d = DeploymentBuilder::new(&job)
        .id("dep-1")
        .group("web", g)
        .build();
    let placed = |id: &str, index: u32| {
        let a = AllocBuilder::new(&job)
            .id(id)
            .node_id("n1")
            .index(index)
            .deployment("dep-1");
        if canaries > 0 {
            a.canary().build()
        } else {
            a.build()
        }
    };
    h.submit(plan(Some(d), vec![placed("a0", 0), placed("a1", 1)]))
        .await;
    job
}

/// "web" v0 stable (deployment dep-0 successful), then v1 (count 3) rolling out in
/// dep-1 with `auto_revert`, allocation b0 placed.
async fn v1_rolling_out(h: &Harness) -> Job {
    h.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    })
    .await;
    h.register_job(&JobBuilder::new("web").count(2).build())
        .await;
    let v0 = h.state.store.job("web").unwrap().unwrap();
    let d0 = DeploymentBuilder::new(&v0).id("dep-0").build();
    h.submit(plan(Some(d0), vec![])).await;
    h.submit(Command::UpdateDeployment {
        change: crate::state::command::DeploymentChange {
            deployment_id: "dep-0".into(),
            status: Some((DeploymentStatus::Successful, desc::SUCCESSFUL.into())),
            mark_stable: true,
            ..Default::default()
        },
        revert_to: None,
        evals: vec![],
    })
    .await;
    h.register_job(&JobBuilder::new("web").count(3).build())
        .await;
    let v1 = h.state.store.job("web").unwrap().unwrap();
    let mut g = deployment_group(3, 0);
    g.auto_revert = true;
    let d1 = DeploymentBuilder::new(&v1)
        .id("dep-1")
        .group("web", g)
        .build();
    let b0 = AllocBuilder::new(&v1)
        .id("b0")
        .node_id("n1")
        .deployment("dep-1")
        .build();
    h.submit(plan(Some(d1), vec![b0])).await;
    v1
}

async fn post(h: &Harness, uri: &str) -> Answer {
    h.call(Method::POST, uri, "", Vec::new()).await
}

fn status_of(h: &Harness, id: &str) -> DeploymentStatus {
    h.state.store.deployment(id).unwrap().unwrap().status
}

#[tokio::test]
async fn deployments_are_listed_read_and_found_by_job_and_prefix() {
    let h = harness();
    deployed(&h, 0, false).await;
    let job = h.state.store.job("web").unwrap().unwrap();
    let d2 = DeploymentBuilder::new(&job).id("dep-2").build();
    h.submit(plan(Some(d2), vec![])).await;
    h.register_job(&JobBuilder::new("other").build()).await;

    let all = h.get("/v1/deployments").await;
    assert_eq!(all.status, StatusCode::OK);
    let ids: Vec<&str> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["dep-2", "dep-1"], "newest first");
    assert_eq!(
        all.index,
        Some(h.state.store.table_index(Table::Deployments))
    );
    let filtered = h.get("/v1/deployments?job_id=other").await;
    assert_eq!(filtered.body, json!([]));
    let by_prefix = h.get("/v1/deployments?prefix=dep-1").await;
    assert_eq!(by_prefix.body.as_array().unwrap().len(), 1);

    let one = h.get("/v1/deployment/dep-1").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["job_id"], "web");
    assert_eq!(one.body["task_groups"]["web"]["placed_allocs"], 2);
    assert_eq!(h.get("/v1/deployment/dep-2").await.body["id"], "dep-2");
    let ambiguous = h.get("/v1/deployment/dep-").await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST);
    assert_eq!(ambiguous.body["details"], json!(["dep-1", "dep-2"]));
    let unknown = h.get("/v1/deployment/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body["error"].as_str().unwrap().contains("nope"));

    let allocs = h.get("/v1/deployment/dep-1/allocations").await;
    let ids: Vec<&str> = allocs
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a0", "a1"]);
    assert_eq!(allocs.body[0]["deployment_id"], "dep-1");
    assert_eq!(
        h.get("/v1/deployment/dep-2/allocations").await.body,
        json!([])
    );

    assert_eq!(h.get("/v1/job/web/deployment").await.body["id"], "dep-2");
    assert_eq!(
        h.get("/v1/job/we/deployments")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let none = h.get("/v1/job/other/deployment").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/v1/job/other/deployments").await.body, json!([]));
}

#[tokio::test]
async fn a_blocking_deployment_read_returns_when_the_deployment_changes() {
    let h = harness();
    deployed(&h, 0, false).await;
    let index = h.state.store.table_index(Table::Deployments);
    let router = h.router.clone();
    let waiter = tokio::spawn(async move {
        let req = Request::get(format!("/v1/deployment/dep-1?index={index}&wait=20s"))
            .body(Body::empty())
            .expect("request");
        router.oneshot(req).await.expect("infallible")
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let changed = h.submit(health("a0", "dep-1", true, now_ms())).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("returns")
        .expect("task");
    assert_eq!(
        resp.headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(changed.to_string().as_str())
    );
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["task_groups"]["web"]["healthy_allocs"], 1);
}

#[tokio::test]
async fn promoting_needs_healthy_canaries_and_known_groups() {
    let h = harness();
    deployed(&h, 2, false).await;
    // A write names the full id: the prefix of the only deployment is not enough.
    let by_prefix = post(&h, "/v1/deployment/dep-/promote").await;
    assert_eq!(
        by_prefix.status,
        StatusCode::NOT_FOUND,
        "{}",
        by_prefix.body
    );
    let uri = "/v1/deployment/dep-1/promote";
    let not_yet = post(&h, uri).await;
    assert_eq!(not_yet.status, StatusCode::BAD_REQUEST, "{}", not_yet.body);
    assert!(not_yet.body["error"]
        .as_str()
        .unwrap()
        .contains("0 of 2 canaries healthy"));
    h.submit(health("a0", "dep-1", true, now_ms())).await;
    h.submit(health("a1", "dep-1", true, now_ms())).await;
    let unknown = h
        .post_json(
            uri,
            &DeploymentPromoteRequest {
                groups: vec!["db".into()],
            },
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body["error"]
        .as_str()
        .unwrap()
        .contains("no group \"db\""));
    assert!(
        !h.state
            .store
            .deployment("dep-1")
            .unwrap()
            .unwrap()
            .task_groups["web"]
            .promoted
    );

    let ok = h
        .post_json(
            uri,
            &DeploymentPromoteRequest {
                groups: vec!["web".into()],
            },
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["deployment_id"], "dep-1");
    let eval_id = ok.body["eval_id"].as_str().unwrap();
    let eval = h.state.store.eval(eval_id).unwrap().unwrap();
    assert_eq!(eval.triggered_by, "deployment-watcher");
    let d = h.state.store.deployment("dep-1").unwrap().unwrap();
    assert!(d.task_groups["web"].promoted);
    assert_eq!(ok.body["deployment_modify_index"], d.modify_index);
    assert!(!h.state.store.alloc("a0").unwrap().unwrap().is_canary());

    let again = post(&h, uri).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body["error"]
        .as_str()
        .unwrap()
        .contains("no canaries to promote"));
}

#[tokio::test]
async fn a_deployment_without_canaries_has_nothing_to_promote() {
    let h = harness();
    deployed(&h, 0, false).await;
    let answer = post(&h, "/v1/deployment/dep-1/promote").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("no canaries"));
    assert_eq!(
        h.post_json("/v1/deployment/nope/promote", &json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let bad = h
        .call(
            Method::POST,
            "/v1/deployment/dep-1/promote",
            "application/json",
            b"{".to_vec(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pause_resume_and_fail_change_an_active_deployment_only() {
    let h = harness();
    deployed(&h, 0, false).await;
    let paused = post(&h, "/v1/deployment/dep-1/pause").await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    assert_eq!(paused.body["eval_id"], "", "pausing needs no evaluation");
    let d = h.state.store.deployment("dep-1").unwrap().unwrap();
    assert_eq!(
        (d.status, d.status_description.as_str()),
        (DeploymentStatus::Paused, desc::PAUSED)
    );
    assert_eq!(
        post(&h, "/v1/deployment/dep-1/pause").await.status,
        StatusCode::BAD_REQUEST
    );

    let resumed = post(&h, "/v1/deployment/dep-1/resume").await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert_ne!(
        resumed.body["eval_id"], "",
        "resuming lets the next batch go"
    );
    assert_eq!(status_of(&h, "dep-1"), DeploymentStatus::Running);
    assert_eq!(
        post(&h, "/v1/deployment/dep-1/resume").await.status,
        StatusCode::BAD_REQUEST
    );

    let failed = post(&h, "/v1/deployment/dep-1/fail").await;
    assert_eq!(failed.status, StatusCode::OK);
    assert_eq!(failed.body["reverted_job_version"], Value::Null);
    let d = h.state.store.deployment("dep-1").unwrap().unwrap();
    assert_eq!(
        (d.status, d.status_description.as_str()),
        (DeploymentStatus::Failed, desc::FAILED_BY_USER)
    );

    for action in ["pause", "resume", "fail", "promote"] {
        let answer = post(&h, &format!("/v1/deployment/dep-1/{action}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{action}");
        assert_eq!(
            answer.body["error"], "deployment dep-1 is failed",
            "{action}"
        );
    }
    let health = h
        .post_json(
            "/v1/deployment/dep-1/alloc-health",
            &DeploymentAllocHealthRequest {
                healthy: vec!["a0".into()],
                unhealthy: vec![],
            },
        )
        .await;
    assert_eq!(health.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        post(&h, "/v1/deployment/nope/fail").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn failing_with_auto_revert_registers_the_stable_version_again() {
    let h = harness();
    v1_rolling_out(&h).await;
    let answer = post(&h, "/v1/deployment/dep-1/fail").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["reverted_job_version"], 0);
    let d = h.state.store.deployment("dep-1").unwrap().unwrap();
    assert_eq!(
        d.status_description,
        desc::rolling_back(desc::FAILED_BY_USER, 0)
    );
    let job = h.state.store.job("web").unwrap().unwrap();
    assert_eq!((job.version, job.groups[0].count), (2, 2));
    let eval = h
        .state
        .store
        .eval(answer.body["eval_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(eval.job_modify_index, job.job_modify_index);
}

#[tokio::test]
async fn manual_health_takes_full_allocation_ids_of_the_deployment_only() {
    let h = harness();
    deployed(&h, 0, false).await;
    let uri = "/v1/deployment/dep-1/alloc-health";
    let empty = h
        .post_json(uri, &DeploymentAllocHealthRequest::default())
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let stranger = h
        .post_json(
            uri,
            &DeploymentAllocHealthRequest {
                healthy: vec!["zz".into()],
                unhealthy: vec![],
            },
        )
        .await;
    assert_eq!(stranger.status, StatusCode::BAD_REQUEST);
    assert!(stranger.body["error"]
        .as_str()
        .unwrap()
        .contains("not part of deployment dep-1"));
    // A prefix names no allocation: writes take full ids.
    let prefix = h
        .post_json(
            uri,
            &DeploymentAllocHealthRequest {
                healthy: vec!["a".into()],
                unhealthy: vec![],
            },
        )
        .await;
    assert_eq!(prefix.status, StatusCode::BAD_REQUEST);
    assert!(prefix.body["error"]
        .as_str()
        .unwrap()
        .contains("not part of deployment dep-1"));
    let both = h
        .post_json(
            uri,
            &DeploymentAllocHealthRequest {
                healthy: vec!["a0".into()],
                unhealthy: vec!["a0".into()],
            },
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.state
            .store
            .alloc("a0")
            .unwrap()
            .unwrap()
            .deployment_health(),
        None
    );

    let ok = h
        .post_json(
            uri,
            &DeploymentAllocHealthRequest {
                healthy: vec!["a0".into(), "a1".into()],
                unhealthy: vec![],
            },
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let d = h.state.store.deployment("dep-1").unwrap().unwrap();
    assert_eq!(d.task_groups["web"].healthy_allocs, 2);
}

#[tokio::test]
async fn a_user_fail_racing_the_watchers_failure_reverts_once() {
    // The watcher decides on a snapshot in which dep-1 is active and unhealthy...
    let h = harness();
    v1_rolling_out(&h).await;
    h.submit(health("b0", "dep-1", false, now_ms())).await;
    let view = read_active(&h.state.store).unwrap();
    let v = view.iter().find(|v| v.deployment.id == "dep-1").unwrap();
    let decision = decide(
        &v.deployment,
        &v.allocs,
        v.job.as_ref(),
        &v.versions,
        None,
        now_ms(),
    );
    assert!(decision.revert_to.is_some());
    // ...the user's fail lands first and reverts...
    let answer = post(&h, "/v1/deployment/dep-1/fail").await;
    assert_eq!(answer.status, StatusCode::OK);
    let after_user = h.state.store.job("web").unwrap().unwrap();
    assert_eq!(after_user.version, 2);
    // ...and the watcher's decision, applied after, changes nothing.
    h.submit(Command::UpdateDeployment {
        change: decision.change.unwrap(),
        revert_to: decision.revert_to,
        evals: vec![],
    })
    .await;
    assert_eq!(h.state.store.job("web").unwrap().unwrap(), after_user);
    let d = h.state.store.deployment("dep-1").unwrap().unwrap();
    assert_eq!(
        d.status_description,
        desc::rolling_back(desc::FAILED_BY_USER, 0)
    );
    assert_eq!(h.state.store.job_versions("web").unwrap().len(), 3);
}

#[tokio::test]
async fn a_user_action_after_the_watcher_ended_the_deployment_is_a_400() {
    let h = harness();
    v1_rolling_out(&h).await;
    h.submit(health("b0", "dep-1", false, now_ms())).await;
    let mut w = Watcher::new(h.state.endpoints.log.clone());
    w.pass().await.unwrap();
    assert_eq!(status_of(&h, "dep-1"), DeploymentStatus::Failed);
    let answer = post(&h, "/v1/deployment/dep-1/fail").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"], "deployment dep-1 is failed");
    assert_eq!(
        h.state.store.job_versions("web").unwrap().len(),
        3,
        "one revert"
    );
}

// ----------------------------------------------------------------------------- revert

#[tokio::test]
async fn reverting_registers_the_old_spec_as_a_new_version_with_an_eval() {
    let h = harness();
    v1_rolling_out(&h).await;
    let answer = h
        .post_json(
            "/v1/job/web/revert",
            &JobRevertRequest {
                version: 0,
                enforce_prior_version: Some(1),
            },
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let job = h.state.store.job("web").unwrap().unwrap();
    assert_eq!((job.version, job.groups[0].count), (2, 2));
    assert!(
        !job.stable,
        "a stable version's copy is a new, unproven version"
    );
    assert_eq!(answer.body["job_modify_index"], job.job_modify_index);
    let eval = h
        .state
        .store
        .eval(answer.body["eval_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (eval.job_modify_index, eval.triggered_by.as_str()),
        (job.job_modify_index, "job-register")
    );
    let versions = h.get("/v1/job/web/versions").await;
    assert_eq!(versions.body[0]["version"], 2);
    assert_eq!(versions.body[2]["stable"], true);
}

#[tokio::test]
async fn reverting_to_the_current_or_an_unknown_version_or_a_stale_prior_is_refused() {
    let h = harness();
    v1_rolling_out(&h).await;
    let index = h.state.store.last_index();
    let revert = |version, prior| JobRevertRequest {
        version,
        enforce_prior_version: prior,
    };
    let current = h.post_json("/v1/job/web/revert", &revert(1, None)).await;
    assert_eq!(current.status, StatusCode::BAD_REQUEST);
    assert!(current.body["error"]
        .as_str()
        .unwrap()
        .contains("current version"));
    let unknown = h.post_json("/v1/job/web/revert", &revert(7, None)).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body["error"]
        .as_str()
        .unwrap()
        .contains("no version 7"));
    let stale = h.post_json("/v1/job/web/revert", &revert(0, Some(0))).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    let no_job = h.post_json("/v1/job/nope/revert", &revert(0, None)).await;
    assert_eq!(no_job.status, StatusCode::NOT_FOUND);
    let bad = h
        .post_json("/v1/job/web/revert", &json!({"version": -1}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.state.store.last_index(), index, "nothing written");
}

#[tokio::test]
async fn reverting_to_a_pruned_version_is_a_400_that_names_it_and_the_kept_ones() {
    let h = harness();
    for count in 1..=10 {
        h.register_job(&JobBuilder::new("web").count(count).build())
            .await;
    }
    let versions = h.get("/v1/job/web/versions").await;
    let listed: Vec<u64> = versions
        .body
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(listed, [9, 8, 7, 6, 5, 4]);
    let index = h.state.store.last_index();
    let answer = h
        .post_json(
            "/v1/job/web/revert",
            &JobRevertRequest {
                version: 2,
                enforce_prior_version: None,
            },
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(
        answer.body["error"],
        "version 2 of job \"web\" was pruned: a job keeps its newest 6 versions, its \
         newest stable one and those still running (kept: 9, 8, 7, 6, 5, 4)"
    );
    assert_eq!(h.state.store.last_index(), index, "nothing written");
    let kept = h
        .post_json(
            "/v1/job/web/revert",
            &JobRevertRequest {
                version: 4,
                enforce_prior_version: None,
            },
        )
        .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    assert_eq!(h.state.store.job("web").unwrap().unwrap().version, 10);
}
