//! HTTP tests: the router against a real temp-dir store and log, driven with
//! `tower::ServiceExt::oneshot` (no scheduler: allocations are placed by applying
//! plans through the log directly).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use orch_common::api::{
    AllocClientUpdate, AllocUpdateRequest, JobRegisterRequest, NodeRegisterRequest, INDEX_HEADER,
};
use orch_common::mock::{alloc_on, AllocBuilder, JobBuilder, NodeBuilder};
use orch_common::model::{ClientStatus, DesiredStatus, Job, Node, NodeStatus};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::heartbeat::Heartbeats;
use crate::state::{Command, CommandLog, StateStore, Table};

mod acl;
mod deployments;
mod services;

const HELLO_TOML: &str = r#"
id = "hello"
type = "service"
datacenters = ["dc1"]
priority = 50

[group.web]
count = 2

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "while true; do echo hello from $ORCH_ALLOC_INDEX; sleep 1; done"] }
resources = { cpu = 100, memory = 32 }
"#;

struct Harness {
    _dir: tempfile::TempDir,
    state: Arc<HttpState>,
    router: Router,
}

fn harness() -> Harness {
    harness_with(|_| {})
}

/// A harness whose state is first changed by `configure` (a server's limits).
fn harness_with(configure: impl FnOnce(&mut HttpState)) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateStore::open(dir.path().join("state.db")).expect("store");
    let log = CommandLog::start(store.clone(), vec![]).expect("log");
    let heartbeats = Heartbeats::new(Duration::from_secs(10), Duration::from_secs(10));
    let agent = AgentInfo {
        name: "test-server".into(),
        datacenter: "dc1".into(),
        http_addr: "127.0.0.1:4747".into(),
        data_dir: dir.path().display().to_string(),
        version: "0.1.0".into(),
    };
    let mut state = HttpState::new(store, log, heartbeats, agent, 4 * 1024 * 1024);
    configure(&mut state);
    let state = Arc::new(state);
    // As on a server-only agent: the client routes are relayed.
    let router = router(state.clone()).merge(super::client_forward::router(state.clone()));
    Harness {
        _dir: dir,
        state,
        router,
    }
}

struct Answer {
    status: StatusCode,
    index: Option<u64>,
    request_id: Option<String>,
    body: Value,
}

impl Harness {
    async fn call(&self, method: Method, uri: &str, content_type: &str, body: Vec<u8>) -> Answer {
        self.call_with(method, uri, content_type, body, None).await
    }

    /// `call`, presenting `secret` as the node secret.
    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
        secret: Option<&str>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        if let Some(s) = secret {
            req = req.header(orch_common::api::NODE_SECRET_HEADER, s);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let index = resp
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{status}: body is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            index,
            request_id,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, "", Vec::new()).await
    }

    async fn post_json(&self, uri: &str, body: &impl serde::Serialize) -> Answer {
        let bytes = serde_json::to_vec(body).expect("json");
        self.call(Method::POST, uri, "application/json", bytes)
            .await
    }

    /// `POST /v1/node/register` presenting `secret`.
    async fn register_node(&self, node: &Node, secret: Option<&str>) -> Answer {
        let body = serde_json::to_vec(&NodeRegisterRequest { node: node.clone() }).unwrap();
        self.call_with(
            Method::POST,
            "/v1/node/register",
            "application/json",
            body,
            secret,
        )
        .await
    }

    async fn post_toml(&self, uri: &str, toml: &str) -> Answer {
        self.call(
            Method::POST,
            uri,
            "application/toml",
            toml.as_bytes().to_vec(),
        )
        .await
    }

    async fn register_job(&self, job: &Job) -> Answer {
        let answer = self
            .post_json(
                "/v1/jobs",
                &JobRegisterRequest {
                    job: job.clone(),
                    enforce_index: None,
                },
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer
    }

    async fn submit(&self, cmd: Command) -> u64 {
        self.state
            .endpoints
            .log
            .submit(cmd)
            .await
            .expect("submit")
            .index
    }

    async fn place(&self, allocs: Vec<orch_common::model::Allocation>) -> u64 {
        self.submit(Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs,
            stopped: vec![],
            evals: vec![],
        })
        .await
    }
}

// ----------------------------------------------------------------------------- jobs

#[tokio::test]
async fn registering_a_json_job_stores_it_and_its_eval() {
    let h = harness();
    let answer = h.register_job(&JobBuilder::new("web").build()).await;
    let eval_id = answer.body["eval_id"]
        .as_str()
        .expect("eval id")
        .to_string();
    let job = h.get("/v1/job/web").await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["id"], "web");
    assert_eq!(job.body["version"], 0);
    assert_eq!(
        answer.body["job_modify_index"],
        job.body["job_modify_index"]
    );
    let eval = h.get(&format!("/v1/evaluation/{eval_id}")).await;
    assert_eq!(eval.status, StatusCode::OK);
    assert_eq!(eval.body["triggered_by"], "job-register");
    assert_eq!(eval.body["status"], "pending");
}

#[tokio::test]
async fn registering_a_toml_job_parses_the_spec() {
    let h = harness();
    let answer = h.post_toml("/v1/jobs", HELLO_TOML).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let job = h.get("/v1/job/hello").await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["groups"][0]["count"], 2);
    let list = h.get("/v1/jobs").await;
    assert_eq!(list.body.as_array().expect("list").len(), 1);
    assert_eq!(list.body[0]["summary"]["web"]["running"], 0);
}

#[tokio::test]
async fn malformed_toml_is_a_400_with_line_numbers_and_stores_nothing() {
    let h = harness();
    let answer = h
        .post_toml("/v1/jobs", "id = \"x\"\n[group.web\ncount = 1\n")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let details = answer.body["details"].as_array().expect("details");
    assert!(!details.is_empty());
    assert!(
        details
            .iter()
            .any(|d| d.as_str().unwrap_or("").contains("line 2")),
        "{}",
        answer.body
    );
    assert_eq!(h.get("/v1/jobs").await.body, json!([]));
    assert_eq!(h.state.store.last_index(), 0);
}

#[tokio::test]
async fn an_unknown_toml_field_is_a_400_naming_it() {
    let h = harness();
    let spec = HELLO_TOML.replace("count = 2", "count = 2\ncuont = 3");
    let answer = h.post_toml("/v1/jobs", &spec).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let text = answer.body["details"].to_string();
    assert!(text.contains("cuont"), "{text}");
    assert!(text.contains("line"), "{text}");
    assert_eq!(h.state.store.last_index(), 0);
}

#[tokio::test]
async fn a_negative_count_in_json_is_a_400_naming_the_field() {
    let h = harness();
    let mut body = serde_json::to_value(JobRegisterRequest {
        job: JobBuilder::new("web").build(),
        enforce_index: None,
    })
    .expect("json");
    body["job"]["groups"][0]["count"] = json!(-1);
    let answer = h.post_json("/v1/jobs", &body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let error = answer.body["error"].as_str().expect("error");
    assert!(error.contains("groups[0].count"), "{error}");
    assert_eq!(h.state.store.last_index(), 0);
}

#[tokio::test]
async fn malformed_json_is_a_400_json_error() {
    let h = harness();
    let answer = h
        .call(
            Method::POST,
            "/v1/jobs",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body["error"]
        .as_str()
        .expect("error")
        .contains("line 1"));
}

#[tokio::test]
async fn a_ten_mib_body_is_refused_with_a_413_json_error() {
    let h = harness();
    let body = vec![b' '; 10 * 1024 * 1024];
    let answer = h
        .call(Method::POST, "/v1/jobs", "application/json", body)
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.body["error"]
        .as_str()
        .expect("error")
        .contains("larger"));
    assert_eq!(h.state.store.last_index(), 0);
}

#[tokio::test]
async fn a_ten_mib_body_over_tcp_gets_the_413_not_a_broken_pipe() {
    // A real client writes the whole body before reading the answer: the server must
    // read past the limit (discarding) so the client sees the 413.
    let h = harness();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, h.router.clone()).await });
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/jobs"))
        .header("content-type", "application/json")
        .body(vec![b' '; 10 * 1024 * 1024])
        .send()
        .await
        .expect("the 413 answer, not a transport error");
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.expect("JSON body");
    assert!(body["error"].as_str().expect("error").contains("larger"));
    server.abort();
}

#[tokio::test]
async fn an_unknown_job_is_a_404_json_error() {
    let h = harness();
    let answer = h.get("/v1/job/nope").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["error"], "job \"nope\" not found");
    let answer = h.call(Method::DELETE, "/v1/job/nope", "", vec![]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let h = harness();
    let answer = h.get("/v1/nothing-here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body["error"].is_string());
    let answer = h.call(Method::PUT, "/v1/jobs", "", vec![]).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer.body["error"].is_string());
}

#[tokio::test]
async fn enforce_index_mismatch_is_a_409() {
    let h = harness();
    let created = h
        .post_json(
            "/v1/jobs",
            &JobRegisterRequest {
                job: JobBuilder::new("web").build(),
                enforce_index: Some(0),
            },
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let again = h
        .post_json(
            "/v1/jobs",
            &JobRegisterRequest {
                job: JobBuilder::new("web").build(),
                enforce_index: Some(0),
            },
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let index = created.body["job_modify_index"].as_u64().expect("index");
    let changed = JobBuilder::new("web").count(3).build();
    let matched = h
        .post_json(
            "/v1/jobs",
            &JobRegisterRequest {
                job: changed,
                enforce_index: Some(index),
            },
        )
        .await;
    assert_eq!(matched.status, StatusCode::OK, "{}", matched.body);
    let stale = h
        .post_toml(&format!("/v1/jobs?enforce_index={index}"), HELLO_TOML)
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
}

#[tokio::test]
async fn stopping_a_job_keeps_it_dead_and_creates_a_deregister_eval() {
    let h = harness();
    h.register_job(&JobBuilder::new("web").build()).await;
    let answer = h.call(Method::DELETE, "/v1/job/web", "", vec![]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let eval_id = answer.body["eval_id"].as_str().expect("eval").to_string();
    let job = h.get("/v1/job/web").await;
    assert_eq!(job.body["stop"], true);
    assert_eq!(job.body["status"], "dead");
    let eval = h.get(&format!("/v1/evaluation/{eval_id}")).await;
    assert_eq!(eval.body["triggered_by"], "job-deregister");
}

#[tokio::test]
async fn purging_a_job_removes_it_but_keeps_its_history_readable() {
    let h = harness();
    let job = JobBuilder::new("web").build();
    h.register_job(&job).await;
    h.place(vec![alloc_on("a1", &job, "n1", 0)]).await;
    let answer = h
        .call(Method::DELETE, "/v1/job/web?purge=true", "", vec![])
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(h.get("/v1/job/web").await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/v1/jobs").await.body, json!([]));
    let allocs = h.get("/v1/job/web/allocations").await;
    assert_eq!(allocs.status, StatusCode::OK);
    assert_eq!(allocs.body.as_array().expect("list").len(), 1);
    let evals = h.get("/v1/job/web/evaluations").await;
    assert_eq!(evals.body.as_array().expect("list").len(), 2);
}

#[tokio::test]
async fn job_versions_are_listed_newest_first() {
    let h = harness();
    h.register_job(&JobBuilder::new("web").build()).await;
    let changed = JobBuilder::new("web").count(4).build();
    h.register_job(&changed).await;
    let versions = h.get("/v1/job/web/versions").await;
    assert_eq!(versions.status, StatusCode::OK);
    assert_eq!(versions.body[0]["version"], 1);
    assert_eq!(versions.body[1]["version"], 0);
}

#[tokio::test]
async fn the_job_list_summarizes_allocs_per_group() {
    let h = harness();
    let job = JobBuilder::new("web").count(2).build();
    h.register_job(&job).await;
    h.place(vec![
        alloc_on("a1", &job, "n1", 0),
        alloc_on("a2", &job, "n1", 1),
    ])
    .await;
    h.submit(Command::UpdateAllocsFromClient {
        updates: vec![AllocClientUpdate {
            deployment_health: None,
            id: "a1".into(),
            client_status: ClientStatus::Running,
            client_description: String::new(),
            task_states: Default::default(),
            checks: Default::default(),
        }],
        evals: vec![],
    })
    .await;
    let list = h.get("/v1/jobs").await;
    assert_eq!(list.body[0]["status"], "running");
    assert_eq!(list.body[0]["summary"]["web"]["running"], 1);
    assert_eq!(list.body[0]["summary"]["web"]["starting"], 1);
}

// ----------------------------------------------------------------------------- reads

#[tokio::test]
async fn ids_resolve_by_unique_prefix_and_ambiguity_is_a_400() {
    let h = harness();
    let job = JobBuilder::new("web").count(2).build();
    h.register_job(&job).await;
    h.place(vec![
        alloc_on("abcd1111", &job, "n1", 0),
        alloc_on("abcd2222", &job, "n1", 1),
    ])
    .await;
    let one = h.get("/v1/allocation/abcd1").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["id"], "abcd1111");
    assert_eq!(one.body["job"]["id"], "web", "the job version is embedded");
    let both = h.get("/v1/allocation/abcd").await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.body["details"], json!(["abcd1111", "abcd2222"]));
    assert_eq!(
        h.get("/v1/allocation/zzz").await.status,
        StatusCode::NOT_FOUND
    );
    let list = h.get("/v1/allocations?prefix=abcd2").await;
    assert_eq!(list.body.as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn writes_take_full_ids_and_resolve_no_prefix() {
    let h = harness();
    let job = JobBuilder::new("web").count(1).build();
    h.register_job(&job).await;
    h.add_node("n1").await;
    h.place(vec![alloc_on("abcd1111", &job, "n1", 0)]).await;

    let stop = h.call(Method::DELETE, "/v1/job/we", "", vec![]).await;
    assert_eq!(stop.status, StatusCode::NOT_FOUND, "{}", stop.body);
    assert!(stop.body["error"].as_str().unwrap().contains("full job id"));
    let scale = h
        .post_json("/v1/job/we/scale", &json!({"group": "web", "count": 3}))
        .await;
    assert_eq!(scale.status, StatusCode::NOT_FOUND);
    let alloc_stop = h.post_json("/v1/allocation/abcd1/stop", &json!({})).await;
    assert_eq!(alloc_stop.status, StatusCode::NOT_FOUND);
    let ineligible = h
        .post_json(
            "/v1/node/n/eligibility",
            &json!({"eligibility": "ineligible"}),
        )
        .await;
    assert_eq!(ineligible.status, StatusCode::NOT_FOUND);

    let job = h.get("/v1/job/web").await;
    assert_eq!(
        (job.body["stop"].clone(), job.body["version"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(
        h.get("/v1/allocation/abcd1").await.body["desired_status"],
        "run"
    );
    assert_eq!(h.get("/v1/node/n1").await.body["eligibility"], "eligible");

    // The same writes with the full ids go through.
    let alloc_stop = h
        .post_json("/v1/allocation/abcd1111/stop", &json!({}))
        .await;
    assert_eq!(alloc_stop.status, StatusCode::OK, "{}", alloc_stop.body);
    let stop = h.call(Method::DELETE, "/v1/job/web", "", vec![]).await;
    assert_eq!(stop.status, StatusCode::OK, "{}", stop.body);
}

#[tokio::test]
async fn reads_answer_with_the_table_index_header() {
    let h = harness();
    let empty = h.get("/v1/nodes").await;
    assert_eq!(empty.index, Some(1), "the index is never 0");
    let index = h
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await;
    let nodes = h.get("/v1/nodes").await;
    assert_eq!(nodes.index, Some(index));
    assert_eq!(nodes.body[0]["id"], "n1");
    let node = h.get("/v1/node/n1").await;
    assert_eq!(node.body["name"], "node-n1");
    assert_eq!(node.index, Some(index));
}

#[tokio::test]
async fn a_blocking_query_returns_when_a_change_lands() {
    let h = harness();
    let first = h
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await;
    let router = h.router.clone();
    let waiter = tokio::spawn(async move {
        let req = Request::get(format!("/v1/nodes?index={first}&wait=20s"))
            .body(Body::empty())
            .expect("request");
        let started = Instant::now();
        let resp = router.oneshot(req).await.expect("infallible");
        (resp, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = h
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n2").build(),
        })
        .await;
    let (resp, took) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("returns")
        .expect("task");
    assert!(took < Duration::from_secs(10));
    assert_eq!(
        resp.headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(second.to_string().as_str())
    );
}

#[tokio::test]
async fn a_blocking_query_returns_after_wait_without_a_change() {
    let h = harness();
    let index = h
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await;
    // A change to another table does not end the wait.
    h.register_job(&JobBuilder::new("web").build()).await;
    let started = Instant::now();
    let answer = h.get(&format!("/v1/nodes?index={index}&wait=200ms")).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.index, Some(index));
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn past_the_blocking_query_limit_a_query_answers_at_once() {
    // No waits left: as a server with MAX_BLOCKING_QUERIES queries already waiting.
    let h = harness_with(|state| state.blocking = Arc::new(tokio::sync::Semaphore::new(0)));
    let index = h
        .submit(Command::UpsertNode {
            node: NodeBuilder::new().id("n1").build(),
        })
        .await;
    let started = Instant::now();
    let answer = h.get(&format!("/v1/nodes?index={index}&wait=20s")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.index, Some(index), "the current index, unchanged");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_bad_wait_is_a_400() {
    let h = harness();
    let answer = h.get("/v1/nodes?index=1&wait=soon").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = h.get("/v1/nodes?index=abc").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_huge_wait_is_clamped_or_refused_never_a_panic() {
    let h = harness();
    // Plain milliseconds beyond any clock: clamped to MAX_WAIT (no index change is
    // pending, so a short index answers at once).
    let answer = h.get("/v1/nodes?index=0&wait=18446744073709551615").await;
    assert_eq!(answer.status, StatusCode::OK);
    // A human duration too large to represent: a 400 naming the parameter.
    let answer = h
        .get("/v1/jobs?index=1&wait=99999999999999999999999999h")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.body.to_string().contains("wait"), "{}", answer.body);
    let answer = h.get("/v1/agent/health").await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_count_above_the_limit_is_a_400_naming_the_group() {
    let h = harness();
    let spec = HELLO_TOML.replace("count = 2", "count = 10001");
    let answer = h.post_toml("/v1/jobs", &spec).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    let text = answer.body.to_string();
    assert!(text.contains("count") && text.contains("10000"), "{text}");
    assert!(text.contains("line "), "{text}");
}

#[tokio::test]
async fn a_count_above_the_servers_max_count_is_a_400_naming_the_group_and_limit() {
    let h = harness_with(|st| st.endpoints.max_count = 5);
    let answer = h
        .post_toml("/v1/jobs", &HELLO_TOML.replace("count = 2", "count = 6"))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    let text = answer.body.to_string();
    assert!(
        text.contains("group.web.count") && text.contains("limit of 5"),
        "{text}"
    );
    // The dry run refuses what the run would.
    let answer = h
        .post_toml(
            "/v1/job/hello/plan",
            &HELLO_TOML.replace("count = 2", "count = 6"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(
        answer.body.to_string().contains("limit of 5"),
        "{}",
        answer.body
    );
    // Within the limit it registers; scaling past it is refused the same way.
    let answer = h.post_toml("/v1/jobs", HELLO_TOML).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = h
        .post_json("/v1/job/hello/scale", &json!({"group": "web", "count": 6}))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(
        answer.body.to_string().contains("limit of 5"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_huge_lost_after_is_a_400_with_its_line() {
    let h = harness();
    let spec = HELLO_TOML.replace(
        "count = 2",
        "count = 2\ndisconnect = { lost_after = \"200000000000000d\" }",
    );
    let answer = h.post_toml("/v1/jobs", &spec).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    let text = answer.body.to_string();
    assert!(
        text.contains("lost_after") && text.contains("line "),
        "{text}"
    );
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let h = harness();
    let answer = h.get("/v1/agent/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["ok"], true);
    assert!(answer.request_id.is_some_and(|id| id.len() >= 32));
}

#[tokio::test]
async fn agent_self_and_leader_describe_this_server() {
    let h = harness();
    let me = h.get("/v1/agent/self").await;
    assert_eq!(me.body["name"], "test-server");
    assert_eq!(me.body["server"], true);
    assert_eq!(me.body["client"], false);
    h.state.client_node_id.set("n1".into()).expect("set once");
    let me = h.get("/v1/agent/self").await;
    assert_eq!(me.body["client"], true);
    assert_eq!(me.body["node_id"], "n1");
    // Without a cluster (this harness runs a local log) no leader is known: "".
    assert_eq!(h.get("/v1/status/leader").await.body, json!(""));
    assert_eq!(h.get("/v1/status/peers").await.body, json!([]));
}

// ----------------------------------------------------------------------------- clients

#[tokio::test]
async fn registering_a_node_assigns_an_id_and_marks_it_ready() {
    let h = harness();
    let mut node = NodeBuilder::new()
        .id("")
        .status(NodeStatus::Initializing)
        .build();
    // The server computes the class: the client sends none.
    node.computed_class.clear();
    let answer = h.register_node(&node, Some(SECRET)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let id = answer.body["node_id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(answer.body["heartbeat_ttl_ms"], 10_000);
    let stored = h.get(&format!("/v1/node/{id}")).await;
    assert_eq!(stored.body["status"], "ready");
    assert!(stored.body["computed_class"]
        .as_str()
        .expect("class")
        .starts_with("v1:"));
    assert!(h.state.endpoints.heartbeats.tracked().contains(id.as_str()));

    assert!(
        stored.body.get("secret_hash").is_none(),
        "the API never answers the secret's hash: {}",
        stored.body
    );

    node.id = id.as_str().into();
    let again = h.register_node(&node, Some(SECRET)).await;
    assert_eq!(again.body["node_id"], id.as_str(), "a known id is kept");
    assert_eq!(
        h.get("/v1/nodes")
            .await
            .body
            .as_array()
            .expect("list")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_node_without_a_name_is_refused() {
    let h = harness();
    let node = NodeBuilder::new().id("").name("").build();
    let answer = h.register_node(&node, Some(SECRET)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body["details"][0]
        .as_str()
        .expect("detail")
        .contains("node.name"));
}

/// A node secret as clients make them.
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_known_node_cannot_be_registered_or_spoken_for_without_its_secret() {
    let h = harness();
    let node = NodeBuilder::new().id("n1").build();
    let first = h.register_node(&node, Some(SECRET)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    // A forged registration: the same id without the secret, or with another one.
    let mut forged = node.clone();
    forged.http_addr = "10.9.9.9:4747".into();
    let other = "f".repeat(64);
    for secret in [None, Some(other.as_str())] {
        let answer = h.register_node(&forged, secret).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    }
    let stored = h.state.store.node("n1").unwrap().unwrap();
    assert_eq!(
        stored.http_addr, node.http_addr,
        "the forgery changed nothing"
    );

    // Every client call for the node needs the secret.
    let no_status = json!({"allocs": []});
    let calls: [(Method, &str, Vec<u8>); 4] = [
        (
            Method::POST,
            "/v1/node/n1/heartbeat",
            b"{\"status\": \"down\"}".to_vec(),
        ),
        (Method::GET, "/v1/node/n1/allocations", Vec::new()),
        (
            Method::POST,
            "/v1/node/n1/allocations",
            serde_json::to_vec(&no_status).unwrap(),
        ),
        (
            Method::POST,
            "/v1/node/n1/allocations/known",
            b"{\"ids\": []}".to_vec(),
        ),
    ];
    for (method, uri, body) in &calls {
        for secret in [None, Some(other.as_str())] {
            let answer = h
                .call_with(
                    method.clone(),
                    uri,
                    "application/json",
                    body.clone(),
                    secret,
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{method} {uri}: {}",
                answer.body
            );
        }
    }
    assert_eq!(
        h.get("/v1/node/n1").await.body["status"],
        "ready",
        "not marked down"
    );
    for (method, uri, body) in calls.iter().skip(1) {
        let answer = h
            .call_with(
                method.clone(),
                uri,
                "application/json",
                body.clone(),
                Some(SECRET),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{method} {uri}: {}",
            answer.body
        );
    }

    // A registration with the secret goes through; a new node needs one too.
    let again = h.register_node(&node, Some(SECRET)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let fresh = NodeBuilder::new().id("n2").build();
    assert_eq!(
        h.register_node(&fresh, None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.register_node(&fresh, Some("short")).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_node_advertises_only_a_host_and_port() {
    let h = harness();
    for addr in [
        "http://10.0.0.1:4646",
        "10.0.0.1:4646/x",
        "user@10.0.0.1:4646",
        "10.0.0.1",
    ] {
        let node = NodeBuilder::new().id("").http_addr(addr).build();
        let answer = h.register_node(&node, Some(SECRET)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{addr}: {}",
            answer.body
        );
    }
    for addr in ["10.0.0.1:4646", "node-1.example:4646", "[::1]:4646"] {
        let node = NodeBuilder::new().id("").http_addr(addr).build();
        let answer = h.register_node(&node, Some(SECRET)).await;
        assert_eq!(answer.status, StatusCode::OK, "{addr}: {}", answer.body);
    }
}

#[tokio::test]
async fn heartbeats_need_a_registered_node_and_revive_a_down_one() {
    let h = harness();
    let unknown = h.post_json("/v1/node/nope/heartbeat", &json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let node = NodeBuilder::new().id("n1").status(NodeStatus::Down).build();
    h.submit(Command::UpsertNode { node }).await;
    let answer = h
        .call(Method::POST, "/v1/node/n1/heartbeat", "", Vec::new())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["heartbeat_ttl_ms"], 10_000);
    assert_eq!(h.get("/v1/node/n1").await.body["status"], "ready");
}

#[tokio::test]
async fn the_node_alloc_watch_embeds_jobs_and_wakes_only_for_its_node() {
    let h = harness();
    h.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    })
    .await;
    h.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n2").build(),
    })
    .await;
    let job = JobBuilder::new("web").count(2).build();
    h.register_job(&job).await;
    let placed = h.place(vec![alloc_on("a1", &job, "n1", 0)]).await;
    let first = h.get("/v1/node/n1/allocations").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["index"], placed);
    assert_eq!(first.body["allocs"][0]["id"], "a1");
    assert_eq!(first.body["allocs"][0]["job"]["id"], "web");

    let router = h.router.clone();
    let waiter = tokio::spawn(async move {
        let req = Request::get(format!("/v1/node/n1/allocations?index={placed}&wait=20s"))
            .body(Body::empty())
            .expect("request");
        let started = Instant::now();
        let resp = router.oneshot(req).await.expect("infallible");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            serde_json::from_slice::<Value>(&bytes).expect("json"),
            started.elapsed(),
        )
    });
    // Another node's allocation does not wake n1's watch.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.place(vec![alloc_on("b1", &job, "n2", 1)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "woken by another node's change");
    let stop = AllocBuilder::new(&job)
        .id("a1")
        .node_id("n1")
        .desired_status(DesiredStatus::Stop)
        .build();
    let stopped = h
        .submit(Command::ApplyPlan {
            deployment: None,
            deployment_updates: Vec::new(),
            allocs: vec![],
            stopped: vec![stop],
            evals: vec![],
        })
        .await;
    let (body, took) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("returns")
        .expect("task");
    assert!(took >= Duration::from_millis(400));
    assert_eq!(body["index"], stopped);
    assert_eq!(body["allocs"][0]["desired_status"], "stop");
}

#[tokio::test]
async fn the_node_alloc_watch_of_an_unknown_node_is_a_404() {
    let h = harness();
    assert_eq!(
        h.get("/v1/node/nope/allocations").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn client_updates_store_states_and_a_failure_creates_an_eval() {
    let h = harness();
    h.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    })
    .await;
    let job = JobBuilder::new("frames").batch().count(2).build();
    h.register_job(&job).await;
    h.place(vec![
        alloc_on("a1", &job, "n1", 0),
        alloc_on("a2", &job, "n2", 1),
    ])
    .await;
    let update = |id: &str, status| AllocClientUpdate {
        deployment_health: None,
        id: id.into(),
        client_status: status,
        client_description: "exit code 1".into(),
        task_states: Default::default(),
        checks: Default::default(),
    };
    let answer = h
        .post_json(
            "/v1/node/n1/allocations",
            &AllocUpdateRequest {
                allocs: vec![
                    update("a1", ClientStatus::Failed),
                    update("a2", ClientStatus::Complete),
                    update("zz", ClientStatus::Complete),
                ],
            },
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let a1 = h.get("/v1/allocation/a1").await;
    assert_eq!(a1.body["client_status"], "failed");
    assert_eq!(a1.body["client_description"], "exit code 1");
    let a2 = h.get("/v1/allocation/a2").await;
    assert_eq!(
        a2.body["client_status"], "pending",
        "another node's alloc is not changed"
    );
    let evals = h.get("/v1/job/frames/evaluations").await;
    let triggers: Vec<&str> = evals
        .body
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["triggered_by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(triggers, vec!["job-register", "alloc-failure"]);

    // Reporting the same failure again does not create another evaluation.
    h.post_json(
        "/v1/node/n1/allocations",
        &AllocUpdateRequest {
            allocs: vec![update("a1", ClientStatus::Failed)],
        },
    )
    .await;
    let evals = h.get("/v1/job/frames/evaluations").await;
    assert_eq!(evals.body.as_array().expect("list").len(), 2);
}

// ----------------------------------------------------------------------------- plan, scale, operator

impl Harness {
    async fn plan(&self, job: &Job) -> Answer {
        self.post_json(
            &format!("/v1/job/{}/plan", job.id),
            &orch_common::api::JobPlanRequest {
                job: job.clone(),
                diff: true,
            },
        )
        .await
    }

    async fn add_node(&self, id: &str) -> u64 {
        self.submit(Command::UpsertNode {
            node: NodeBuilder::new().id(id).build(),
        })
        .await
    }
}

#[tokio::test]
async fn planning_a_new_job_places_every_instance_and_writes_nothing() {
    let h = harness();
    h.add_node("n1").await;
    let before = h.state.store.last_index();
    let answer = h.plan(&JobBuilder::new("web").count(2).build()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["job_modify_index"], 0);
    assert_eq!(answer.body["diff"]["type"], "Added");
    assert_eq!(
        answer.body["annotations"]["desired_tg_updates"]["web"]["place"],
        2
    );
    assert_eq!(answer.body["failed_tg_allocs"], json!({}));
    assert_eq!(h.state.store.last_index(), before, "a plan writes nothing");
    assert_eq!(h.get("/v1/jobs").await.body, json!([]));
    assert_eq!(h.get("/v1/allocations").await.body, json!([]));
}

#[tokio::test]
async fn planning_a_changed_count_shows_the_diff_and_only_the_extra_placement() {
    let h = harness();
    h.add_node("n1").await;
    h.register_job(&JobBuilder::new("web").count(2).build())
        .await;
    let stored: Job = serde_json::from_value(h.get("/v1/job/web").await.body).expect("job");
    h.place(vec![
        alloc_on("a0", &stored, "n1", 0),
        alloc_on("a1", &stored, "n1", 1),
    ])
    .await;
    let before = h.state.store.last_index();
    let bigger = JobBuilder::new("web").count(3).build();
    let answer = h.plan(&bigger).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["job_modify_index"], stored.job_modify_index);
    assert_eq!(answer.body["next_version"], 1);
    let group = &answer.body["diff"]["task_groups"][0];
    assert_eq!(answer.body["diff"]["type"], "Edited");
    assert_eq!(group["type"], "Edited");
    assert_eq!(
        group["fields"],
        json!([{"type": "Edited", "name": "count", "old": "2", "new": "3"}])
    );
    let updates = &answer.body["annotations"]["desired_tg_updates"]["web"];
    assert_eq!(updates["place"], 1, "{updates}");
    assert_eq!(updates["stop"], 0, "{updates}");
    assert_eq!(h.state.store.last_index(), before, "a plan writes nothing");
    let job = h.get("/v1/job/web").await;
    assert_eq!(job.body["groups"][0]["count"], 2);
}

#[tokio::test]
async fn planning_without_room_explains_the_failure_in_words() {
    let h = harness();
    let answer = h.plan(&JobBuilder::new("web").count(2).build()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.body["failed_tg_allocs"]["web"].is_object(),
        "{}",
        answer.body
    );
    let why = answer.body["failure_reasons"]["web"].as_str().expect("why");
    assert!(why.contains("no nodes"), "{why}");
    assert_eq!(
        answer.body["annotations"]["desired_tg_updates"]["web"]["place"], 2,
        "unplaceable instances still count as wanted placements"
    );
    assert_eq!(h.state.store.last_index(), 0);
}

#[tokio::test]
async fn planning_a_toml_spec_with_diff_query_flag_works() {
    let h = harness();
    h.add_node("n1").await;
    let answer = h
        .post_toml("/v1/job/hello/plan?diff=true", HELLO_TOML)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["diff"]["id"], "hello");
    assert_eq!(
        answer.body["annotations"]["desired_tg_updates"]["web"]["place"],
        2
    );
}

#[tokio::test]
async fn planning_under_another_id_than_the_path_is_a_400() {
    let h = harness();
    let answer = h
        .post_json(
            "/v1/job/other/plan",
            &orch_common::api::JobPlanRequest {
                job: JobBuilder::new("web").build(),
                diff: false,
            },
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
}

#[tokio::test]
async fn scaling_a_group_registers_a_new_version_with_an_eval() {
    let h = harness();
    h.register_job(&JobBuilder::new("web").build()).await;
    let answer = h
        .post_json("/v1/job/web/scale", &json!({"group": "web", "count": 5}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let job = h.get("/v1/job/web").await;
    assert_eq!(job.body["groups"][0]["count"], 5);
    assert_eq!(job.body["version"], 1);
    let eval_id = answer.body["eval_id"].as_str().expect("eval");
    let eval = h.get(&format!("/v1/evaluation/{eval_id}")).await;
    assert_eq!(eval.body["triggered_by"], "job-register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scale_requests_on_two_groups_both_take_effect() {
    let h = Arc::new(harness());
    let job = JobBuilder::new("web").copy_group("api").build();
    h.register_job(&job).await;
    let scale = |group: &'static str, count: u32| {
        let h = h.clone();
        tokio::spawn(async move {
            h.post_json(
                "/v1/job/web/scale",
                &json!({"group": group, "count": count}),
            )
            .await
        })
    };
    for round in 3..13 {
        let (web, api) = (scale("web", round), scale("api", round + 10));
        for answer in [web.await.expect("task"), api.await.expect("task")] {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        }
        let job = h.get("/v1/job/web").await;
        assert_eq!(job.body["groups"][0]["count"], round);
        assert_eq!(job.body["groups"][1]["count"], round + 10);
    }
}

#[tokio::test]
async fn a_stale_enforce_index_is_a_409_naming_both_indexes_and_writes_nothing() {
    let h = harness();
    let created = h.register_job(&JobBuilder::new("web").build()).await;
    let first = created.body["job_modify_index"].as_u64().expect("index");
    let scaled = h
        .post_json(
            "/v1/job/web/scale",
            &json!({"group": "web", "count": 4, "enforce_index": first}),
        )
        .await;
    assert_eq!(scaled.status, StatusCode::OK, "{}", scaled.body);
    let current = scaled.body["job_modify_index"].as_u64().expect("index");
    let before = h.state.store.last_index();
    let stale = h
        .post_json(
            "/v1/job/web/scale",
            &json!({"group": "web", "count": 6, "enforce_index": first}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(
        stale.body["error"],
        format!("enforce_index {first} does not match job \"web\"'s job_modify_index {current}")
    );
    let missing = h
        .post_json(
            "/v1/jobs",
            &JobRegisterRequest {
                job: JobBuilder::new("api").build(),
                enforce_index: Some(first),
            },
        )
        .await;
    assert_eq!(missing.status, StatusCode::CONFLICT);
    assert_eq!(
        missing.body["error"],
        format!("enforce_index {first}: job \"api\" does not exist (use 0 to create it)")
    );
    assert_eq!(h.state.store.last_index(), before, "nothing written");
}

#[tokio::test]
async fn scaling_an_unknown_group_or_to_a_negative_count_is_a_400_and_writes_nothing() {
    let h = harness();
    h.register_job(&JobBuilder::new("web").build()).await;
    let before = h.state.store.last_index();
    let unknown = h
        .post_json("/v1/job/web/scale", &json!({"group": "db", "count": 1}))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert!(
        unknown.body["error"]
            .as_str()
            .unwrap_or("")
            .contains("\"db\""),
        "{}",
        unknown.body
    );
    let negative = h
        .post_json("/v1/job/web/scale", &json!({"group": "web", "count": -1}))
        .await;
    assert_eq!(
        negative.status,
        StatusCode::BAD_REQUEST,
        "{}",
        negative.body
    );
    let missing = h
        .post_json("/v1/job/nope/scale", &json!({"group": "web", "count": 1}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert_eq!(h.state.store.last_index(), before);
}

#[tokio::test]
async fn the_scheduler_configuration_round_trips_through_get_and_put() {
    let h = harness();
    let initial = h.get("/v1/operator/scheduler/configuration").await;
    assert_eq!(initial.status, StatusCode::OK);
    assert_eq!(initial.body["scheduler_algorithm"], "binpack");
    assert_eq!(
        initial.body["preemption_config"]["system_scheduler_enabled"],
        true
    );
    let put = h
        .call(
            Method::PUT,
            "/v1/operator/scheduler/configuration",
            "application/json",
            serde_json::to_vec(&json!({
                "scheduler_algorithm": "spread",
                "preemption_config": {"service_scheduler_enabled": true}
            }))
            .expect("json"),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["updated"], true);
    let after = h.get("/v1/operator/scheduler/configuration").await;
    assert_eq!(after.body["scheduler_algorithm"], "spread");
    assert_eq!(
        after.body["preemption_config"]["service_scheduler_enabled"],
        true
    );
    assert_eq!(after.index, put.body["index"].as_u64());
}

#[tokio::test]
async fn an_unknown_scheduler_algorithm_is_a_400() {
    let h = harness();
    let put = h
        .call(
            Method::PUT,
            "/v1/operator/scheduler/configuration",
            "application/json",
            br#"{"scheduler_algorithm": "random"}"#.to_vec(),
        )
        .await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST, "{}", put.body);
    assert_eq!(h.state.store.last_index(), 0);
}

#[tokio::test]
async fn planning_a_high_priority_job_on_a_full_node_lists_the_preemptions() {
    let h = harness();
    // 8192 MiB: full with the two 4096 MiB instances of "low".
    h.submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").memory(8192).build(),
    })
    .await;
    let low = JobBuilder::new("low")
        .priority(20)
        .count(2)
        .memory(4096)
        .build();
    h.register_job(&low).await;
    let stored: Job = serde_json::from_value(h.get("/v1/job/low").await.body).expect("job");
    h.place(vec![
        alloc_on("low0", &stored, "n1", 0),
        alloc_on("low1", &stored, "n1", 1),
    ])
    .await;
    h.submit(Command::SetSchedulerConfig {
        config: orch_common::model::SchedulerConfiguration {
            preemption_config: orch_common::model::PreemptionConfig {
                service_scheduler_enabled: true,
                ..Default::default()
            },
            ..Default::default()
        },
    })
    .await;
    let before = h.state.store.last_index();
    let high = JobBuilder::new("high")
        .priority(80)
        .count(1)
        .memory(1024)
        .build();
    let answer = h.plan(&high).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let preempted = answer.body["preemptions"].as_array().expect("list");
    assert_eq!(preempted.len(), 1, "{}", answer.body);
    assert_eq!(preempted[0]["job_id"], "low");
    assert_eq!(answer.body["failed_tg_allocs"], json!({}));
    assert_eq!(h.state.store.last_index(), before, "a plan writes nothing");
    let low0 = h.get("/v1/allocation/low0").await;
    assert_eq!(low0.body["desired_status"], "run");
}

#[tokio::test]
async fn planning_a_new_command_counts_destructive_updates_and_a_meta_change_in_place_ones() {
    let h = harness();
    h.add_node("n1").await;
    h.register_job(&JobBuilder::new("web").count(2).build())
        .await;
    let stored: Job = serde_json::from_value(h.get("/v1/job/web").await.body).expect("job");
    h.place(vec![
        alloc_on("a0", &stored, "n1", 0),
        alloc_on("a1", &stored, "n1", 1),
    ])
    .await;

    let new_command = JobBuilder::new("web")
        .count(2)
        .task_config("command", json!("/bin/false"))
        .build();
    let answer = h.plan(&new_command).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let updates = &answer.body["annotations"]["desired_tg_updates"]["web"];
    assert_eq!(updates["destructive_update"], 2, "{updates}");
    assert_eq!(updates["in_place_update"], 0, "{updates}");
    let task = &answer.body["diff"]["task_groups"][0]["tasks"][0];
    assert_eq!(task["type"], "Edited", "{task}");

    let mut new_meta = JobBuilder::new("web").count(2).build();
    new_meta.meta.insert("owner".into(), "ops".into());
    let answer = h.plan(&new_meta).await;
    let updates = &answer.body["annotations"]["desired_tg_updates"]["web"];
    assert_eq!(updates["in_place_update"], 2, "{updates}");
    assert_eq!(updates["destructive_update"], 0, "{updates}");
    assert_eq!(answer.body["diff"]["objects"][0]["name"], "meta");
}

#[tokio::test]
async fn allocation_stats_are_forwarded_to_the_node_http_addr() {
    // A fake client agent answering the stats route.
    let fake = Router::new().route(
        "/v1/client/allocation/{id}/stats",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"alloc_id": id, "tasks": {"web": {"sampled_at": 1, "running": true, "pids": 2}}}))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, fake).await });

    let h = harness();
    let node = NodeBuilder::new()
        .id("n1")
        .http_addr(&addr.to_string())
        .build();
    h.submit(Command::UpsertNode { node }).await;
    let gone = NodeBuilder::new().id("n2").http_addr("127.0.0.1:1").build();
    h.submit(Command::UpsertNode { node: gone }).await;
    let job = JobBuilder::new("web").count(2).build();
    h.register_job(&job).await;
    h.place(vec![
        alloc_on("a1", &job, "n1", 0),
        alloc_on("b1", &job, "n2", 1),
    ])
    .await;

    let r = h.get("/v1/client/allocation/a1/stats").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["alloc_id"], "a1");
    assert_eq!(r.body["tasks"]["web"]["pids"], 2);
    // A client that cannot be reached is a JSON 502, an unknown allocation a 404.
    let r = h.get("/v1/client/allocation/b1/stats").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("n2"),
        "{}",
        r.body
    );
    let r = h.get("/v1/client/allocation/zz/stats").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    server.abort();
}

// ------------------------------------------------------------------------------ health

#[tokio::test]
async fn health_fails_while_state_writes_fail_and_recovers_after_one_succeeds() {
    let h = harness();
    assert_eq!(h.get("/v1/agent/health").await.status, StatusCode::OK);
    h.state.store.fill_disk_for_test(true);
    // A job large enough to need pages the capped database does not have.
    let big = "x".repeat(256 * 1024);
    let mut job = JobBuilder::new("big").build();
    job.meta.insert("blob".into(), big);
    let body = JobRegisterRequest {
        job,
        enforce_index: None,
    };
    let answer = h.post_json("/v1/jobs", &body).await;
    assert!(answer.status.is_server_error(), "{}", answer.body);
    let health = h.get("/v1/agent/health").await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.body
    );
    assert_eq!(health.body["ok"], false);
    let server = health.body["server"].as_str().unwrap_or_default();
    assert!(server.contains("full"), "{}", health.body);

    h.state.store.fill_disk_for_test(false);
    let answer = h.post_toml("/v1/jobs", HELLO_TOML).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let health = h.get("/v1/agent/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["ok"], true);
    assert_eq!(health.body["server"], "ok");
}

#[tokio::test]
async fn health_fails_once_a_required_loop_failed_and_names_it() {
    let h = harness();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let restartable = orch_common::supervise::spawn_restarting(
        &h.state.health,
        "server.gc",
        orch_common::supervise::Restart::default(),
        stop_rx,
        || async {},
    );
    restartable.await.expect("supervisor");
    let health = h.get("/v1/agent/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["loops"]["server.gc"]["state"], "stopped");
    assert_eq!(health.body["client"], Value::Null);

    let failed = orch_common::supervise::spawn_required(&h.state.health, "client.watch", async {
        panic!("the watch broke")
    });
    failed.await.expect("the supervisor catches the panic");
    let health = h.get("/v1/agent/health").await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.body
    );
    assert_eq!(health.body["ok"], false);
    assert_eq!(health.body["server"], "ok");
    let client = health.body["client"].as_str().unwrap_or_default();
    assert!(
        client.contains("client.watch") && client.contains("the watch broke"),
        "{}",
        health.body
    );
    assert_eq!(health.body["loops"]["client.watch"]["state"], "failed");
}
