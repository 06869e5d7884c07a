//! Server tests: the whole server (store, log, broker, workers, plan applier,
//! heartbeats, HTTP) in-process on a temp dir, driven through its router.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use orch_common::api::{
    AllocClientUpdate, AllocUpdateRequest, JobRegisterRequest, NodeRegisterRequest,
};
use orch_common::mock::{JobBuilder, NodeBuilder};
use orch_common::model::{ClientStatus, Job, JobType, Node, NodeStatus, ReschedulePolicy};
use serde_json::Value;
use tower::ServiceExt;

use super::*;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        name: "test".into(),
        ..ServerConfig::default()
    }
}

async fn call(
    server: &Server,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    // Every node of these tests is registered with (and speaks with) one secret.
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(orch_common::api::NODE_SECRET_HEADER, "s".repeat(64));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&v).expect("json"))
        }
        None => Body::empty(),
    };
    let resp = server
        .router()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(server: &Server, uri: &str) -> Value {
    let (status, body) = call(server, Method::GET, uri, None).await;
    assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
    body
}

async fn register_node(server: &Server, node: Node) -> String {
    let (status, body) = call(
        server,
        Method::POST,
        "/v1/node/register",
        Some(serde_json::to_value(NodeRegisterRequest { node }).expect("json")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["node_id"].as_str().expect("node id").to_string()
}

async fn register_job(server: &Server, job: &Job) -> String {
    let req = JobRegisterRequest {
        job: job.clone(),
        enforce_index: None,
    };
    let (status, body) = call(
        server,
        Method::POST,
        "/v1/jobs",
        Some(serde_json::to_value(req).expect("json")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["eval_id"].as_str().expect("eval id").to_string()
}

/// Polls `uri` until `done` holds for its body (10s at most).
async fn wait_until(server: &Server, uri: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(server, uri).await;
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {uri}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn count(body: &Value) -> usize {
    body.as_array().map(Vec::len).unwrap_or(0)
}

/// A node the server names itself (no id yet), of 4000 MHz and `memory` MiB.
fn node(memory: u64) -> Node {
    NodeBuilder::new().id("").cpu(4000).memory(memory).build()
}

#[tokio::test]
async fn a_registered_job_is_placed_on_a_registered_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(config(dir.path())).await.expect("start");
    let node_id = register_node(&server, node(8192)).await;
    let eval_id = register_job(&server, &JobBuilder::new("web").count(2).build()).await;
    let allocs = wait_until(&server, "/v1/job/web/allocations", |b| count(b) == 2).await;
    for alloc in allocs.as_array().expect("list") {
        assert_eq!(alloc["node_id"], node_id.as_str());
        assert_eq!(alloc["desired_status"], "run");
    }
    wait_until(&server, &format!("/v1/evaluation/{eval_id}"), |e| {
        e["status"] == "complete"
    })
    .await;
    let watch = get(&server, &format!("/v1/node/{node_id}/allocations")).await;
    assert_eq!(count(&watch["allocs"]), 2);
    assert_eq!(watch["allocs"][0]["job"]["id"], "web");
    server.shutdown().await;
}

#[tokio::test]
async fn a_job_too_big_is_blocked_and_placed_once_a_node_with_room_joins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(config(dir.path())).await.expect("start");
    register_node(&server, node(40)).await;
    let job = JobBuilder::new("big").count(2).memory(1000).build();
    let eval_id = register_job(&server, &job).await;
    let eval = wait_until(&server, &format!("/v1/evaluation/{eval_id}"), |e| {
        e["status"] == "complete"
    })
    .await;
    let failed = &eval["failed_tg_allocs"]["web"];
    assert!(failed.is_object(), "{eval}");
    let metric: orch_common::model::AllocMetric =
        serde_json::from_value(failed.clone()).expect("metric");
    assert!(
        metric.describe().contains("exhausted on memory"),
        "{}",
        metric.describe()
    );
    assert_eq!(count(&get(&server, "/v1/job/big/allocations").await), 0);

    let roomy = register_node(&server, node(8192)).await;
    let allocs = wait_until(&server, "/v1/job/big/allocations", |b| count(b) == 2).await;
    assert!(allocs
        .as_array()
        .expect("list")
        .iter()
        .all(|a| a["node_id"] == roomy.as_str()));
    server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_server_has_its_jobs_and_continues_pending_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Server::start(config(dir.path())).await.expect("start");
    for i in 0..3 {
        register_job(&first, &JobBuilder::new(format!("job{i}")).count(2).build()).await;
    }
    let index = first.store().last_index();
    first.shutdown().await;

    let second = Server::start(config(dir.path())).await.expect("restart");
    assert!(second.store().last_index() >= index);
    assert_eq!(count(&get(&second, "/v1/jobs").await), 3);
    // The evaluations left blocked (no nodes) resume when capacity appears.
    register_node(&second, node(8192)).await;
    for i in 0..3 {
        wait_until(&second, &format!("/v1/job/job{i}/allocations"), |b| {
            count(b) == 2
        })
        .await;
    }
    second.shutdown().await;
}

#[tokio::test]
async fn a_failed_batch_alloc_is_rescheduled_with_a_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(config(dir.path())).await.expect("start");
    let node_id = register_node(&server, node(8192)).await;
    let mut reschedule = ReschedulePolicy::default_for(JobType::Batch);
    reschedule.delay = Duration::ZERO;
    let job = JobBuilder::new("frames")
        .batch()
        .count(1)
        .reschedule(reschedule)
        .build();
    register_job(&server, &job).await;
    let allocs = wait_until(&server, "/v1/job/frames/allocations", |b| count(b) == 1).await;
    let first_id = allocs[0]["id"].as_str().expect("id").to_string();
    let update = AllocUpdateRequest {
        allocs: vec![AllocClientUpdate {
            deployment_health: None,
            id: first_id.as_str().into(),
            client_status: ClientStatus::Failed,
            client_description: "exit code 1".into(),
            task_states: Default::default(),
            checks: Default::default(),
        }],
    };
    let (status, body) = call(
        &server,
        Method::POST,
        &format!("/v1/node/{node_id}/allocations"),
        Some(serde_json::to_value(update).expect("json")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let allocs = wait_until(&server, "/v1/job/frames/allocations", |b| count(b) == 2).await;
    let replacement = allocs
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["id"] != first_id.as_str())
        .expect("replacement");
    assert_eq!(replacement["previous_allocation"], first_id.as_str());
    let old = get(&server, &format!("/v1/allocation/{first_id}")).await;
    assert_eq!(old["next_allocation"], replacement["id"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_goes_down_and_its_allocs_move() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = ServerConfig {
        heartbeat_min_ttl: Duration::from_millis(300),
        heartbeat_grace: Duration::from_millis(200),
        ..config(dir.path())
    };
    let server = Server::start(cfg).await.expect("start");
    let silent = register_node(&server, node(8192)).await;
    let job = JobBuilder::new("web").count(1).build();
    register_job(&server, &job).await;
    wait_until(&server, "/v1/job/web/allocations", |b| count(b) == 1).await;
    let alive = register_node(&server, node(8192)).await;
    let beat = {
        let router = server.router();
        let alive = alive.clone();
        tokio::spawn(async move {
            loop {
                let req = Request::post(format!("/v1/node/{alive}/heartbeat"))
                    .header(orch_common::api::NODE_SECRET_HEADER, "s".repeat(64))
                    .body(Body::empty())
                    .expect("request");
                let _ = router.clone().oneshot(req).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    wait_until(&server, &format!("/v1/node/{silent}"), |n| {
        n["status"] == "down"
    })
    .await;
    let allocs = wait_until(&server, "/v1/job/web/allocations", |b| {
        b.as_array().is_some_and(|l| {
            l.iter().any(|a| a["client_status"] == "lost")
                && l.iter()
                    .any(|a| a["node_id"] == alive.as_str() && a["desired_status"] == "run")
        })
    })
    .await;
    assert_eq!(count(&allocs), 2);
    let node: Node =
        serde_json::from_value(get(&server, &format!("/v1/node/{alive}")).await).expect("node");
    assert_eq!(node.status, NodeStatus::Ready);
    beat.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_blocking_queries_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(config(dir.path())).await.expect("start");
    let router = server.router();
    let waiter = tokio::spawn(async move {
        let req = Request::get("/v1/jobs?index=1&wait=5m")
            .body(Body::empty())
            .expect("request");
        router.oneshot(req).await.expect("infallible").status()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.shutdown().await;
    let status = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("blocking query ended")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_max_count_beyond_the_spec_bound_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for max_count in [0, orch_common::jobspec::MAX_COUNT + 1] {
        let cfg = ServerConfig {
            max_count,
            ..config(dir.path())
        };
        let err = Server::start(cfg).await.err().expect("refused");
        assert!(err.to_string().contains("max_count"), "{err}");
    }
}

#[tokio::test]
async fn a_replicated_bootstrap_is_refused_for_now() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = ServerConfig {
        bootstrap_expect: 3,
        ..config(dir.path())
    };
    let err = Server::start(cfg).await.err().expect("refused");
    assert!(err.to_string().contains("bootstrap_expect"), "{err}");
}
