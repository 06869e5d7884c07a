//! Service catalog routes (`/v1/services`, `/v1/service/{name}`) over mock jobs,
//! allocations and nodes: instances follow their allocation's lifecycle, addresses and
//! ports resolve, health follows the reported checks, and blocking queries wake.

use std::collections::BTreeMap;

use orch_common::mock::{self, AllocBuilder, JobBuilder, NodeBuilder};
use orch_common::model::{CheckHealth, CheckStatus, CheckType, DesiredStatus};

use super::*;

/// A job whose group has port `http` and service `web` (tags `v1`, canary tags
/// `canary`, meta `team = a`, with `checks` tcp checks `c0`, `c1`...).
fn job_with_service(id: &str, checks: usize) -> Job {
    let mut web = mock::service("web", Some("http"));
    web.tags = vec!["v1".into()];
    web.canary_tags = vec!["canary".into()];
    web.meta = BTreeMap::from([("team".to_string(), "a".to_string())]);
    web.checks = (0..checks)
        .map(|i| {
            let mut c = mock::check(CheckType::Tcp);
            c.name = Some(format!("c{i}"));
            c
        })
        .collect();
    JobBuilder::new(id)
        .dynamic_port("http")
        .service(web)
        .build()
}

/// Instance 0 of `job` on `node_id`, given port `port` on `host_ip` for `http` (built
/// by the caller, who may set more).
fn alloc_with_port(id: &str, job: &Job, node_id: &str, port: u16, host_ip: &str) -> AllocBuilder {
    AllocBuilder::new(job)
        .id(id)
        .node_id(node_id)
        .port("http", port, host_ip)
}

fn check(name: &str, status: CheckHealth) -> (String, CheckStatus) {
    (
        format!("web/{name}"),
        CheckStatus {
            service: "web".into(),
            name: name.into(),
            check_type: CheckType::Tcp,
            task: "server".into(),
            status,
            output: String::new(),
            last_run_ms: 1,
            status_since_ms: 1,
        },
    )
}

impl Harness {
    /// Reports the allocation's client status and checks, as its client would.
    async fn report(
        &self,
        id: &str,
        client_status: ClientStatus,
        checks: Vec<(String, CheckStatus)>,
    ) -> u64 {
        self.submit(Command::UpdateAllocsFromClient {
            updates: vec![AllocClientUpdate {
                deployment_health: None,
                id: id.into(),
                client_status,
                client_description: String::new(),
                task_states: Default::default(),
                checks: checks.into_iter().collect(),
            }],
            evals: vec![],
        })
        .await
    }

    /// Node `n1` at 10.0.0.5, job `api` with service `web` (no checks), and one
    /// allocation per `(id, port)` placed on `n1` with a wildcard host address.
    async fn web_placed(&self, allocs: &[(&str, u16)]) -> Job {
        self.node_at("n1", "10.0.0.5:4646").await;
        let job = job_with_service("api", 0);
        self.register_job(&job).await;
        self.place(
            allocs
                .iter()
                .map(|(id, port)| alloc_with_port(id, &job, "n1", *port, "0.0.0.0").build())
                .collect(),
        )
        .await;
        job
    }

    async fn node_at(&self, id: &str, http_addr: &str) {
        let node = NodeBuilder::new().id(id).http_addr(http_addr).build();
        self.submit(Command::UpsertNode { node }).await;
    }
}

#[tokio::test]
async fn an_instance_is_listed_only_while_its_allocation_runs() {
    let h = harness();
    let job = h.web_placed(&[("a1", 25000)]).await;
    // Placed but not yet running on its client: not in the catalog.
    assert_eq!(h.get("/v1/service/web").await.body, json!([]));
    assert_eq!(h.get("/v1/services").await.body, json!([]));

    h.report("a1", ClientStatus::Running, vec![]).await;
    let answer = h.get("/v1/service/web").await;
    assert_eq!(answer.status, StatusCode::OK);
    let instances = answer.body.as_array().expect("array");
    assert_eq!(instances.len(), 1, "{}", answer.body);
    let i = &instances[0];
    assert_eq!(i["service"], "web");
    assert_eq!(i["alloc_id"], "a1");
    assert_eq!(i["job_id"], "api");
    assert_eq!(i["group"], "web");
    assert_eq!(i["node_id"], "n1");
    assert_eq!(i["node_name"], "node-n1");
    // A wildcard host address resolves to the node's.
    assert_eq!(i["address"], "10.0.0.5");
    assert_eq!(i["port"], 25000);
    assert_eq!(i["address_mode"], "auto");
    assert_eq!(i["tags"], json!(["v1"]));
    assert_eq!(i["canary_tags"], json!(["canary"]));
    assert_eq!(i["meta"], json!({"team": "a"}));
    // No checks: passing once it runs.
    assert_eq!(i["health"], "passing");
    assert_eq!(i["checks"], json!({}));
    let list = h.get("/v1/services").await.body;
    assert_eq!(
        list,
        json!([{"name": "web", "tags": ["v1"], "instances": 1, "healthy": 1}])
    );

    // The server stops it: gone at once, before its client reports.
    let stop = alloc_with_port("a1", &job, "n1", 25000, "0.0.0.0")
        .desired_status(DesiredStatus::Stop)
        .build();
    h.submit(Command::ApplyPlan {
        deployment: None,
        deployment_updates: Vec::new(),
        allocs: vec![],
        stopped: vec![stop],
        evals: vec![],
    })
    .await;
    assert_eq!(h.get("/v1/service/web").await.body, json!([]));
    assert_eq!(h.get("/v1/services").await.body, json!([]));
}

#[tokio::test]
async fn an_instance_whose_allocation_completes_or_fails_disappears() {
    let h = harness();
    h.web_placed(&[("a1", 25000), ("a2", 25001)]).await;
    h.report("a1", ClientStatus::Running, vec![]).await;
    h.report("a2", ClientStatus::Running, vec![]).await;
    assert_eq!(
        h.get("/v1/service/web").await.body.as_array().map(Vec::len),
        Some(2)
    );
    h.report("a1", ClientStatus::Failed, vec![]).await;
    let left = h.get("/v1/service/web").await.body;
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["alloc_id"], "a2");
    h.report("a2", ClientStatus::Complete, vec![]).await;
    assert_eq!(h.get("/v1/service/web").await.body, json!([]));
}

#[tokio::test]
async fn an_instance_on_a_down_or_disconnected_node_is_left_out() {
    let h = harness();
    h.web_placed(&[("a1", 25000)]).await;
    h.report("a1", ClientStatus::Running, vec![]).await;
    let index = h.get("/v1/service/web").await.index.expect("index");
    let waiter = spawn_get(&h, format!("/v1/service/web?index={index}&wait=20s"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for status in [NodeStatus::Down, NodeStatus::Disconnected] {
        let node = NodeBuilder::new()
            .id("n1")
            .http_addr("10.0.0.5:4646")
            .status(status)
            .build();
        h.submit(Command::UpsertNode { node }).await;
        // The allocation still runs as far as the state knows.
        assert_eq!(
            h.get("/v1/allocation/a1").await.body["client_status"],
            "running"
        );
        assert_eq!(h.get("/v1/service/web").await.body, json!([]), "{status:?}");
    }
    // A node change wakes a blocking catalog query.
    let (body, _) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the node change")
        .expect("task");
    assert_eq!(body, json!([]));
    h.node_at("n1", "10.0.0.5:4646").await;
    assert_eq!(
        h.get("/v1/service/web").await.body.as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_concrete_port_address_is_kept_and_a_service_without_port_has_none() {
    let h = harness();
    h.node_at("n1", "10.0.0.5:4646").await;
    let mut job = job_with_service("api", 0);
    let mut metrics = mock::service("metrics", None);
    metrics.address_mode = Some("host".into());
    job.groups[0].services.push(metrics);
    h.register_job(&job).await;
    h.place(vec![alloc_with_port(
        "a1",
        &job,
        "n1",
        25000,
        "192.168.7.7",
    )
    .build()])
        .await;
    h.report("a1", ClientStatus::Running, vec![]).await;
    let web = h.get("/v1/service/web").await.body;
    assert_eq!(web[0]["address"], "192.168.7.7");
    assert_eq!(web[0]["port"], 25000);
    let metrics = h.get("/v1/service/metrics").await.body;
    assert_eq!(metrics[0]["address"], "10.0.0.5");
    assert_eq!(metrics[0]["port"], Value::Null);
    assert_eq!(metrics[0]["address_mode"], "host");
    let names: Vec<Value> = h
        .get("/v1/services")
        .await
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("metrics"), json!("web")]);
}

#[tokio::test]
async fn health_follows_the_reported_checks_and_healthy_true_filters() {
    let h = harness();
    h.node_at("n1", "10.0.0.5:4646").await;
    h.node_at("n2", "10.0.0.6:4646").await;
    let job = job_with_service("api", 2);
    h.register_job(&job).await;
    h.place(vec![
        alloc_with_port("a1", &job, "n1", 25000, "0.0.0.0").build(),
        alloc_with_port("a2", &job, "n2", 25000, "0.0.0.0").build(),
    ])
    .await;
    // Running, checks not reported yet: pending.
    h.report("a1", ClientStatus::Running, vec![]).await;
    h.report(
        "a2",
        ClientStatus::Running,
        vec![check("c0", CheckHealth::Passing)],
    )
    .await;
    let all = h.get("/v1/service/web").await.body;
    assert_eq!(all[0]["node_name"], "node-n1");
    assert_eq!(all[0]["health"], "pending");
    assert_eq!(all[1]["health"], "pending", "one of two checks passing");
    assert_eq!(all[1]["checks"]["c0"]["status"], "passing");
    assert_eq!(h.get("/v1/service/web?healthy=true").await.body, json!([]));

    h.report(
        "a1",
        ClientStatus::Running,
        vec![
            check("c0", CheckHealth::Passing),
            check("c1", CheckHealth::Critical),
        ],
    )
    .await;
    h.report(
        "a2",
        ClientStatus::Running,
        vec![
            check("c0", CheckHealth::Passing),
            check("c1", CheckHealth::Passing),
        ],
    )
    .await;
    let all = h.get("/v1/service/web").await.body;
    assert_eq!(all[0]["health"], "critical");
    assert_eq!(all[1]["health"], "passing");
    let healthy = h.get("/v1/service/web?healthy=true").await.body;
    assert_eq!(healthy.as_array().map(Vec::len), Some(1), "{healthy}");
    assert_eq!(healthy[0]["alloc_id"], "a2");
    assert_eq!(
        h.get("/v1/services").await.body,
        json!([{"name": "web", "tags": ["v1"], "instances": 2, "healthy": 1}])
    );
    let bad = h.get("/v1/service/web?healthy=maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"].as_str().is_some());
}

#[tokio::test]
async fn an_unknown_service_is_an_empty_list() {
    let h = harness();
    let answer = h.get("/v1/service/nothing").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!([]));
    assert!(answer.index.is_some_and(|i| i >= 1));
}

/// Starts `GET uri` (a blocking query) in the background.
fn spawn_get(h: &Harness, uri: String) -> tokio::task::JoinHandle<(Value, Option<u64>)> {
    let router = h.router.clone();
    tokio::spawn(async move {
        let req = Request::get(uri).body(Body::empty()).expect("request");
        let resp = router.oneshot(req).await.expect("infallible");
        let index = resp
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (serde_json::from_slice(&bytes).expect("json"), index)
    })
}

#[tokio::test]
async fn a_blocking_service_query_wakes_when_an_allocation_starts_and_stops() {
    let h = harness();
    h.web_placed(&[("a1", 25000)]).await;
    let first = h.get("/v1/service/web").await;
    let index = first.index.expect("index");

    let waiter = spawn_get(&h, format!("/v1/service/web?index={index}&wait=20s"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "answered before any change");
    let started = h.report("a1", ClientStatus::Running, vec![]).await;
    let (body, woke_at) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the allocation starting")
        .expect("task");
    assert_eq!(woke_at, Some(started));
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");

    let waiter = spawn_get(&h, format!("/v1/services?index={started}&wait=20s"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "answered before any change");
    let stopped = h.report("a1", ClientStatus::Complete, vec![]).await;
    let (body, woke_at) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the allocation stopping")
        .expect("task");
    assert_eq!(woke_at, Some(stopped));
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn a_blocking_service_query_without_a_change_answers_after_wait() {
    let h = harness();
    h.register_job(&job_with_service("api", 0)).await;
    let current = h.get("/v1/services").await.index.expect("index");
    let started = Instant::now();
    let answer = h
        .get(&format!("/v1/services?index={current}&wait=200ms"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.index, Some(current));
    assert!(started.elapsed() >= Duration::from_millis(200));
}
