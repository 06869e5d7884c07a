//! The client agent against a small fake server (register, heartbeat, blocking alloc
//! watch, status updates), with real processes and the client's HTTP logs route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use axum::extract::{Path as AxPath, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use orch_common::api::{
    AllocClientUpdate, AllocUpdateRequest, AllocUpdateResponse, ErrorBody, HeartbeatResponse,
    NodeAllocationsResponse, NodeRegisterRequest, NodeRegisterResponse,
};
use orch_common::mock::{self, restart_policy, AllocBuilder, JobBuilder, TaskBuilder};
use orch_common::model::{
    Allocation, CheckHealth, CheckRestart, CheckSpec, CheckStatus, CheckType, ClientStatus,
    DesiredStatus, HealthCheckMode, Job, JobType, NodeStatus, RestartMode, RestartPolicy,
    UpdatePolicy,
};
use serde::Deserialize;
use serde_json::json;

use super::*;

/// What the fake server knows.
#[derive(Default)]
struct FakeState {
    nodes: StdMutex<Vec<Node>>,
    allocs: StdMutex<Vec<Allocation>>,
    updates: StdMutex<Vec<AllocClientUpdate>>,
    heartbeats: AtomicU64,
    /// Answer 404 to heartbeats (a server that lost the node).
    forget_node: std::sync::atomic::AtomicBool,
    /// Answer 503 to heartbeats (the servers are out of reach).
    unreachable: std::sync::atomic::AtomicBool,
    index: StdMutex<u64>,
    changed: tokio::sync::Notify,
}

impl FakeState {
    fn bump(&self) -> u64 {
        let mut i = self.index.lock().unwrap();
        *i += 1;
        self.changed.notify_waiters();
        *i
    }

    fn add_alloc(&self, a: Allocation) {
        self.allocs.lock().unwrap().push(a);
        self.bump();
    }

    fn set_desired_stop(&self, id: &str) {
        for a in self.allocs.lock().unwrap().iter_mut() {
            if a.id == id {
                a.desired_status = DesiredStatus::Stop;
                a.desired_description = "alloc stopped by the test".into();
            }
        }
        self.bump();
    }

    fn remove_alloc(&self, id: &str) {
        self.allocs.lock().unwrap().retain(|a| a.id != id);
        self.bump();
    }

    fn last_status(&self, id: &str) -> Option<AllocClientUpdate> {
        self.updates
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|u| u.id == id)
            .cloned()
    }
}

#[derive(Deserialize)]
struct WatchQuery {
    index: Option<u64>,
}

async fn register(
    State(s): State<Arc<FakeState>>,
    Json(req): Json<NodeRegisterRequest>,
) -> Json<NodeRegisterResponse> {
    let id = req.node.id.clone();
    s.nodes.lock().unwrap().push(req.node);
    s.forget_node.store(false, Ordering::SeqCst);
    Json(NodeRegisterResponse {
        node_id: id,
        heartbeat_ttl_ms: 400,
        index: s.bump(),
    })
}

async fn heartbeat(State(s): State<Arc<FakeState>>) -> axum::response::Response {
    s.heartbeats.fetch_add(1, Ordering::SeqCst);
    if s.unreachable.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody {
                error: "no route to the servers".into(),
                details: vec![],
            }),
        )
            .into_response();
    }
    if s.forget_node.load(Ordering::SeqCst) {
        return (
            StatusCode::NOT_FOUND,
            Json(ErrorBody {
                error: "node not found".into(),
                details: vec![],
            }),
        )
            .into_response();
    }
    Json(HeartbeatResponse {
        heartbeat_ttl_ms: 400,
        index: *s.index.lock().unwrap(),
        servers: Vec::new(),
    })
    .into_response()
}

async fn watch_allocs(
    State(s): State<Arc<FakeState>>,
    AxPath(node): AxPath<String>,
    Query(q): Query<WatchQuery>,
) -> Json<NodeAllocationsResponse> {
    let min = q.index.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let notified = s.changed.notified();
        let index = *s.index.lock().unwrap();
        if index > min || tokio::time::Instant::now() >= deadline {
            let allocs = s
                .allocs
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.node_id == node)
                .cloned()
                .collect();
            return Json(NodeAllocationsResponse {
                allocs,
                index,
                gc_index: 0,
            });
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn update_allocs(
    State(s): State<Arc<FakeState>>,
    Json(req): Json<AllocUpdateRequest>,
) -> Json<AllocUpdateResponse> {
    {
        let mut allocs = s.allocs.lock().unwrap();
        for u in &req.allocs {
            if let Some(a) = allocs.iter_mut().find(|a| a.id == u.id) {
                a.client_status = u.client_status;
                a.task_states = u.task_states.clone();
            }
        }
    }
    s.updates.lock().unwrap().extend(req.allocs);
    Json(AllocUpdateResponse { index: s.bump() })
}

struct Fake {
    state: Arc<FakeState>,
    addr: String,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_server_on(listener: tokio::net::TcpListener) -> Fake {
    let state = Arc::new(FakeState::default());
    let app = Router::new()
        .route("/v1/node/register", post(register))
        .route("/v1/node/{id}/heartbeat", post(heartbeat))
        .route(
            "/v1/node/{id}/allocations",
            get(watch_allocs).post(update_allocs),
        )
        .with_state(state.clone());
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { state, addr, task }
}

async fn fake_server() -> Fake {
    fake_server_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

fn config(dir: &Path, server: &str) -> ClientConfig {
    ClientConfig {
        data_dir: dir.to_path_buf(),
        servers: vec![server.to_string()],
        name: "test-node".into(),
        enable_mock_driver: true,
        // A trusted test machine: raw_exec on, tasks as the test's user (root).
        raw_exec: true,
        allow_root_tasks: true,
        default_user: None,
        ..Default::default()
    }
}

/// Serves the client's router on 127.0.0.1:0; returns its base URL.
async fn serve_client_http(client: &Client) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = client.router();
    let h = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, h)
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn status_becomes(fake: &Fake, id: &str, want: ClientStatus) -> AllocClientUpdate {
    eventually(&format!("alloc {id} to be {want:?}"), || {
        fake.state
            .last_status(id)
            .filter(|u| u.client_status == want)
    })
    .await
}

/// A task is not restarted: it fails at its first failure.
fn no_restarts() -> RestartPolicy {
    restart_policy(
        0,
        Duration::from_millis(10),
        Duration::from_secs(60),
        RestartMode::Fail,
    )
}

/// Job "job1" of `job_type` whose group "g" runs task "main", `/bin/sh -c script` under
/// raw_exec, never restarted.
fn raw_exec_job(job_type: JobType, script: &str) -> JobBuilder {
    let main = TaskBuilder::new("main", "raw_exec")
        .config("command", json!("/bin/sh"))
        .config("args", json!(["-c", script]))
        .build();
    JobBuilder::new("job1")
        .job_type(job_type)
        .group_name("g")
        .tasks(vec![main])
        .restart(no_restarts())
}

/// The allocation of `raw_exec_job(job_type, script)` on `node_id`.
fn raw_exec_alloc(node_id: &str, job_type: JobType, script: &str) -> Allocation {
    let job = raw_exec_job(job_type, script).build();
    AllocBuilder::new(&job).node_id(node_id).build()
}

/// Runs a service alloc whose task sleeps; returns it and the task's pid once running.
async fn run_sleeper(fake: &Fake, client: &Client, data_dir: &Path) -> (Allocation, i32) {
    let a = raw_exec_alloc(
        &client.node_id(),
        JobType::Service,
        "echo $$ > pid; exec sleep 300",
    );
    fake.state.add_alloc(a.clone());
    status_becomes(fake, &a.id, ClientStatus::Running).await;
    let pidfile = data_dir.join("alloc").join(a.id.as_str()).join("main/pid");
    let pid: i32 = eventually("pid file", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;
    (a, pid)
}

use crate::driver::process_alive as pid_alive;

#[tokio::test]
async fn the_client_registers_its_fingerprinted_node_and_heartbeats() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let node = eventually("registration", || {
        fake.state.nodes.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(node.id, client.node_id());
    assert_eq!(node.name, "test-node");
    assert_eq!(node.status, NodeStatus::Ready);
    assert_eq!(node.attributes["driver.raw_exec"], "1");
    assert_eq!(node.attributes["driver.mock"], "1");
    assert!(node.attributes.contains_key("cpu.numcores"));
    assert!(node.has_driver("raw_exec"));
    assert!(node.resources.memory > 0);
    eventually("two heartbeats", || {
        (fake.state.heartbeats.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn the_node_id_is_kept_across_restarts() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let first = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let id = first.node_id();
    first.shutdown().await;
    let second = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    assert_eq!(second.node_id(), id);
    second.shutdown().await;
}

#[tokio::test]
async fn registration_is_retried_until_a_server_answers() {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    // start must not wait for the server.
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        Client::start(config(dir.path(), &addr.to_string())),
    )
    .await
    .expect("start waited for a server")
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fake = fake_server_on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    eventually("late registration", || {
        fake.state.nodes.lock().unwrap().first().cloned()
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn a_server_that_forgot_the_node_gets_it_registered_again() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    eventually("registration", || {
        fake.state.nodes.lock().unwrap().first().cloned()
    })
    .await;
    fake.state.forget_node.store(true, Ordering::SeqCst);
    eventually("second registration", || {
        (fake.state.nodes.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn a_batch_alloc_runs_reports_complete_and_its_logs_are_served() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let (url, http) = serve_client_http(&client).await;
    let a = raw_exec_alloc(&client.node_id(), JobType::Batch, "echo hi; echo oops >&2");
    fake.state.add_alloc(a.clone());
    let done = status_becomes(&fake, &a.id, ClientStatus::Complete).await;
    assert_eq!(
        done.task_states["main"].state,
        orch_common::model::TaskStateKind::Dead
    );
    // A running state was reported on the way (or folded into the batch).
    let stdout = reqwest::get(format!("{url}/v1/client/fs/logs/{}", &a.id[..8]))
        .await
        .unwrap();
    assert_eq!(stdout.status(), 200);
    assert_eq!(stdout.text().await.unwrap(), "hi\n");
    let stderr = get_text(&format!(
        "{url}/v1/client/fs/logs/{}?task=main&type=stderr",
        a.id
    ))
    .await;
    assert_eq!(stderr, "oops\n");
    let tail = get_text(&format!(
        "{url}/v1/client/fs/logs/{}?origin=end&offset=3",
        a.id
    ))
    .await;
    assert_eq!(tail, "hi\n");
    http.abort();
    client.shutdown().await;
}

#[tokio::test]
async fn logs_errors_are_json_with_the_right_status() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let (url, http) = serve_client_http(&client).await;
    for id in ["abc00000-1", "abc00000-2"] {
        std::fs::create_dir_all(dir.path().join("alloc").join(id).join("t")).unwrap();
    }
    let r = reqwest::get(format!("{url}/v1/client/fs/logs/zzz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: ErrorBody = r.json().await.unwrap();
    assert!(body.error.contains("zzz"));
    let r = reqwest::get(format!("{url}/v1/client/fs/logs/abc"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.details.len(), 2);
    let r = reqwest::get(format!("{url}/v1/client/fs/logs/abc00000-1?type=stdin"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::get(format!("{url}/v1/client/fs/logs/abc00000-1?task=nope"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    http.abort();
    client.shutdown().await;
}

#[tokio::test]
async fn stats_of_a_running_alloc_come_from_its_cgroup() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let (url, http) = serve_client_http(&client).await;
    let a = raw_exec_alloc(&client.node_id(), JobType::Service, "exec sleep 30");
    fake.state.add_alloc(a.clone());
    status_becomes(&fake, &a.id, ClientStatus::Running).await;
    let r = reqwest::get(format!("{url}/v1/client/allocation/{}/stats", &a.id[..8]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let usage: orch_common::api::AllocResourceUsage = r.json().await.unwrap();
    assert_eq!(usage.alloc_id, a.id);
    let main = &usage.tasks["main"];
    assert!(main.running);
    if client.shared.deps.cgroups.is_some() {
        assert!(main.memory.is_some(), "{main:?}");
        assert!(main.cpu.is_some(), "{main:?}");
        // The task and its shim (`shim`), which lives in the task's cgroup
        // (here the shim is this test binary, which may count more than one).
        assert!(main.pids >= 2, "{main:?}");
        assert_eq!(main.pids_limit, Some(1024));
    } else {
        eprintln!("no cgroups (not root): only checked the answer's shape");
    }
    let r = reqwest::get(format!("{url}/v1/client/allocation/zzz/stats"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: ErrorBody = r.json().await.unwrap();
    assert!(body.error.contains("zzz"), "{}", body.error);
    fake.state.set_desired_stop(&a.id);
    status_becomes(&fake, &a.id, ClientStatus::Complete).await;
    http.abort();
    client.shutdown().await;
}

#[tokio::test]
async fn following_logs_streams_until_the_alloc_is_stopped() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let (url, http) = serve_client_http(&client).await;
    let a = raw_exec_alloc(
        &client.node_id(),
        JobType::Service,
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done",
    );
    fake.state.add_alloc(a.clone());
    status_becomes(&fake, &a.id, ClientStatus::Running).await;
    let mut resp = reqwest::get(format!("{url}/v1/client/fs/logs/{}?follow=true", a.id))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("line 3\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("no log bytes")
            .unwrap()
            .expect("stream ended early");
        got.extend_from_slice(&chunk);
    }
    fake.state.set_desired_stop(&a.id);
    // The stream ends by itself once the task is dead and the file fully read.
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(c) = resp.chunk().await.unwrap() {
            got.extend_from_slice(&c);
        }
    })
    .await;
    assert!(rest.is_ok(), "follow did not end after the task died");
    assert!(String::from_utf8_lossy(&got).starts_with("line 0\nline 1\n"));
    status_becomes(&fake, &a.id, ClientStatus::Complete).await;
    http.abort();
    client.shutdown().await;
}

#[tokio::test]
async fn a_stopped_alloc_has_its_process_killed() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let (a, pid) = run_sleeper(&fake, &client, dir.path()).await;
    assert!(pid_alive(pid));
    fake.state.set_desired_stop(&a.id);
    let done = status_becomes(&fake, &a.id, ClientStatus::Complete).await;
    let events: Vec<&str> = done.task_states["main"]
        .events
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert!(
        events.contains(&"Killing") && events.contains(&"Killed"),
        "{events:?}"
    );
    assert!(!pid_alive(pid));
    // No handle file remains for a task that is gone.
    let handles: Vec<_> = std::fs::read_dir(dir.path().join("client/handles"))
        .unwrap()
        .collect();
    assert!(handles.is_empty());
    client.shutdown().await;
}

#[tokio::test]
async fn an_alloc_no_longer_listed_is_stopped_and_dropped() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let t = TaskBuilder::new("m", "mock")
        .config("run_for", json!("1h"))
        .build();
    let j = JobBuilder::new("job1")
        .group_name("g")
        .tasks(vec![t])
        .restart(no_restarts())
        .build();
    let a = AllocBuilder::new(&j).node_id(client.node_id()).build();
    fake.state.add_alloc(a.clone());
    status_becomes(&fake, &a.id, ClientStatus::Running).await;
    fake.state.remove_alloc(&a.id);
    eventually("the runner to be dropped", || {
        // Another change makes the client look again once the runner finished.
        fake.state.bump();
        client.alloc_states().is_empty().then_some(())
    })
    .await;
    client.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_running_tasks_and_reports_them() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let (a, pid) = run_sleeper(&fake, &client, dir.path()).await;
    client.shutdown().await;
    assert!(!pid_alive(pid));
    assert_eq!(
        fake.state.last_status(&a.id).unwrap().client_status,
        ClientStatus::Complete
    );
}

#[tokio::test]
async fn tasks_no_allocation_claims_are_killed_after_the_first_sync() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.addr);
    cfg.stop_tasks_on_shutdown = false;
    let client = Client::start(cfg.clone()).await.unwrap();
    let (a, pid) = run_sleeper(&fake, &client, dir.path()).await;
    client.shutdown().await;
    assert!(pid_alive(pid), "the task should have been left running");
    // The server no longer assigns it: the next client kills it once it has the list.
    fake.state.remove_alloc(&a.id);
    let again = Client::start(cfg).await.unwrap();
    eventually("the leftover task to be killed", || {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    if nix::unistd::geteuid().is_root() {
        let cg = std::path::Path::new("/sys/fs/cgroup/memory/orch").join(format!("{}-main", a.id));
        eventually("the leftover cgroup to go", || (!cg.exists()).then_some(())).await;
    }
    again.shutdown().await;
}

#[tokio::test]
async fn a_restarted_client_re_attaches_to_a_task_still_assigned() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.addr);
    cfg.stop_tasks_on_shutdown = false;
    let client = Client::start(cfg.clone()).await.unwrap();
    let (a, pid) = run_sleeper(&fake, &client, dir.path()).await;
    // The server keeps what the client reported last (running, one Started event).
    let reported = fake.state.last_status(&a.id).unwrap();
    client.shutdown().await;
    assert!(pid_alive(pid));
    let mut assigned = a.clone();
    assigned.client_status = reported.client_status;
    assigned.task_states = reported.task_states.clone();
    fake.state.remove_alloc(&a.id);
    fake.state.add_alloc(assigned);

    let mut cfg2 = cfg.clone();
    cfg2.stop_tasks_on_shutdown = true;
    let again = Client::start(cfg2).await.unwrap();
    eventually("the runner to re-attach", || {
        again
            .alloc_states()
            .iter()
            .any(|s| s.id == a.id && s.client_status == ClientStatus::Running)
            .then_some(())
    })
    .await;
    assert!(pid_alive(pid), "the task was restarted or killed");
    let state = &again.alloc_states()[0].task_states["main"];
    assert_eq!(state.restarts, 0);
    assert_eq!(
        state.events.iter().filter(|e| e.kind == "Started").count(),
        1,
        "{:?}",
        state.events
    );
    // The re-attached task is stopped like any other.
    again.shutdown().await;
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn an_alloc_stopped_before_it_started_is_reported_complete_without_running() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let job = raw_exec_job(JobType::Service, "exec sleep 300").build();
    let a = AllocBuilder::new(&job)
        .node_id(client.node_id())
        .desired_status(DesiredStatus::Stop)
        .build();
    fake.state.add_alloc(a.clone());
    let done = status_becomes(&fake, &a.id, ClientStatus::Complete).await;
    assert_eq!(done.client_description, "stopped before it started");
    assert!(
        !dir.path().join("alloc").join(a.id.as_str()).exists(),
        "no alloc dir is made for an alloc that never ran"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn allocs_stop_once_the_servers_are_out_of_reach_for_their_lost_after() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let tolerant_job = raw_exec_job(JobType::Service, "exec sleep 300")
        .disconnect(Duration::from_millis(800), false)
        .build();
    let tolerant = AllocBuilder::new(&tolerant_job)
        .node_id(client.node_id())
        .build();
    let plain = raw_exec_alloc(&client.node_id(), JobType::Service, "exec sleep 300");
    fake.state.add_alloc(tolerant.clone());
    fake.state.add_alloc(plain.clone());
    status_becomes(&fake, &tolerant.id, ClientStatus::Running).await;
    status_becomes(&fake, &plain.id, ClientStatus::Running).await;

    fake.state.unreachable.store(true, Ordering::SeqCst);
    let done = status_becomes(&fake, &tolerant.id, ClientStatus::Complete).await;
    let killing = done.task_states["main"]
        .events
        .iter()
        .find(|e| e.kind == "Killing")
        .expect("a Killing event");
    assert!(
        killing.message.contains("disconnect.lost_after"),
        "{killing:?}"
    );
    // A group without a disconnect policy keeps running while the servers are away.
    assert_eq!(
        fake.state.last_status(&plain.id).unwrap().client_status,
        ClientStatus::Running
    );
    fake.state.unreachable.store(false, Ordering::SeqCst);
    client.shutdown().await;
}

/// A port on 127.0.0.1 that nothing listens on (right now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A check of `check_type` every 300ms with a 2s timeout.
fn check_spec(check_type: CheckType) -> CheckSpec {
    let mut check = mock::check(check_type);
    // Shorter than a spec may say (validation wants 1s): the loop takes any.
    check.interval = Duration::from_millis(300);
    check.timeout = Duration::from_secs(2);
    check
}

/// Waits for the server to hear that check `key` of `id` has `health`.
async fn check_becomes(fake: &Fake, id: &str, key: &str, health: CheckHealth) -> CheckStatus {
    eventually(&format!("check {key} of {id} to be {health:?}"), || {
        fake.state
            .last_status(id)
            .and_then(|u| u.checks.get(key).cloned())
            .filter(|c| c.status == health)
    })
    .await
}

#[tokio::test]
async fn an_http_check_of_a_live_server_passes_and_a_tcp_check_of_a_closed_port_is_critical() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let mut by_http = check_spec(CheckType::Http);
    by_http.path = Some("/".into());
    by_http.headers = BTreeMap::from([("X-Probe".to_string(), vec!["orch".to_string()])]);
    let mut closed_tcp = check_spec(CheckType::Tcp);
    closed_tcp.name = Some("closed".into());
    closed_tcp.port = Some("closed".into());
    let mut web = mock::service("web", Some("http"));
    web.checks = vec![by_http, closed_tcp];
    let job = raw_exec_job(
        JobType::Service,
        "exec /usr/bin/python3 -m http.server $ORCH_PORT_http --bind 127.0.0.1",
    )
    .service(web)
    .build();
    let (http, closed) = (free_port(), free_port());
    let a = AllocBuilder::new(&job)
        .node_id(client.node_id())
        .port("http", http, "127.0.0.1")
        .port("closed", closed, "127.0.0.1")
        .build();
    fake.state.add_alloc(a.clone());

    let passing = check_becomes(&fake, &a.id, "web/http-0", CheckHealth::Passing).await;
    assert_eq!(passing.task, "main");
    assert!(passing.output.contains("200 OK"), "{passing:?}");
    assert!(passing.last_run_ms > 0);
    let critical = check_becomes(&fake, &a.id, "web/closed", CheckHealth::Critical).await;
    assert!(
        critical.output.contains(&format!("127.0.0.1:{closed}")),
        "{critical:?}"
    );
    // The client's live view has every run's result too.
    let live = client.alloc_checks(&a.id).expect("a runner for the alloc");
    assert_eq!(live["web/http-0"].status, CheckHealth::Passing);
    let (url, server) = serve_client_http(&client).await;
    let served: BTreeMap<String, CheckStatus> =
        reqwest::get(format!("{url}/v1/client/allocation/{}/checks", &a.id[..8]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(served["web/closed"].status, CheckHealth::Critical);
    server.abort();
    // A critical check without check_restart leaves the task alone.
    let last = fake.state.last_status(&a.id).unwrap();
    assert_eq!(last.client_status, ClientStatus::Running);
    assert_eq!(last.task_states["main"].restarts, 0);
    client.shutdown().await;
}

#[tokio::test]
async fn a_failing_script_check_restarts_its_task_until_the_restart_policy_gives_up() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let mut script = check_spec(CheckType::Script);
    script.command = Some("/bin/sh".into());
    script.args = vec!["-c".into(), "echo not ready; exit 1".into()];
    script.check_restart = Some(CheckRestart {
        limit: 2,
        grace: Duration::ZERO,
    });
    let mut sc = mock::service("sc", None);
    sc.checks = vec![script];
    let job = raw_exec_job(JobType::Service, "exec sleep 300")
        .service(sc)
        // One restart allowed: the check's first restart happens, its second fails the task.
        .restart(restart_policy(
            1,
            Duration::from_millis(10),
            Duration::from_secs(600),
            RestartMode::Fail,
        ))
        .build();
    let a = AllocBuilder::new(&job).node_id(client.node_id()).build();
    fake.state.add_alloc(a.clone());

    let restarted = eventually("the task to be restarted by its check", || {
        fake.state.last_status(&a.id).filter(|u| {
            u.client_status == ClientStatus::Running
                && u.task_states.get("main").is_some_and(|t| t.restarts == 1)
        })
    })
    .await;
    let main = &restarted.task_states["main"];
    let kinds: Vec<&str> = main.events.iter().map(|e| e.kind.as_str()).collect();
    let signaled = kinds
        .iter()
        .position(|k| *k == "Restart Signaled")
        .unwrap_or_else(|| panic!("no Restart Signaled event: {kinds:?}"));
    let ev = &main.events[signaled];
    assert!(
        ev.message
            .contains("\"sc/script-0\" was critical 2 times in a row"),
        "{ev:?}"
    );
    assert!(ev.message.contains("not ready"), "{ev:?}");
    assert!(
        kinds[signaled..].contains(&"Restarting"),
        "the restart policy decided: {kinds:?}"
    );
    // The checks of the new run start again, go critical, and the second restart is
    // one more than the policy allows.
    let failed = status_becomes(&fake, &a.id, ClientStatus::Failed).await;
    let main = &failed.task_states["main"];
    assert!(main.failed);
    assert_eq!(
        main.events
            .iter()
            .filter(|e| e.kind == "Restart Signaled")
            .count(),
        2,
        "{:?}",
        main.events
    );
    assert!(
        main.events.iter().any(|e| e.kind == "Not Restarting"),
        "{:?}",
        main.events
    );
    assert_eq!(failed.checks["sc/script-0"].status, CheckHealth::Critical);
    assert_eq!(failed.checks["sc/script-0"].output.trim(), "not ready");
    client.shutdown().await;
}

// -------------------------------------------------------------------- deployments

impl FakeState {
    /// Changes the stored allocation `id` with `f` (as a scheduler's in-place update).
    fn change_alloc(&self, id: &str, f: impl FnOnce(&mut Allocation)) {
        if let Some(a) = self.allocs.lock().unwrap().iter_mut().find(|a| a.id == id) {
            f(a);
        }
        self.bump();
    }
}

/// A mock-driver service job whose group tracks task states (healthy after 100ms).
fn deployment_job() -> JobBuilder {
    let main = TaskBuilder::new("main", "mock")
        .config("run_for", json!("1h"))
        .build();
    JobBuilder::new("job1")
        .group_name("g")
        .tasks(vec![main])
        .restart(no_restarts())
        .update(UpdatePolicy {
            health_check: HealthCheckMode::TaskStates,
            min_healthy_time: Duration::from_millis(100),
            ..Default::default()
        })
}

/// An allocation of `job` on `node_id`, placed by `deployment`.
fn deployment_alloc(job: &Job, node_id: &str, deployment: &str) -> Allocation {
    AllocBuilder::new(job)
        .node_id(node_id)
        .deployment(deployment)
        .build()
}

#[tokio::test]
async fn the_servers_hear_the_deployment_health_and_an_in_place_update_gets_its_own() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let a = deployment_alloc(&deployment_job().build(), &client.node_id(), "dep-1");
    fake.state.add_alloc(a.clone());
    let first = eventually("a verdict for dep-1", || {
        fake.state.last_status(&a.id)?.deployment_health
    })
    .await;
    assert!(first.healthy && first.deployment_id == "dep-1", "{first:?}");
    let started = fake.state.last_status(&a.id).unwrap().task_states["main"].started_at;

    fake.state.change_alloc(&a.id, |a| {
        a.job_version = 1;
        a.deployment_id = Some("dep-2".into());
    });
    let second = eventually("a verdict for dep-2", || {
        fake.state
            .last_status(&a.id)?
            .deployment_health
            .filter(|h| h.deployment_id == "dep-2")
    })
    .await;
    assert!(second.healthy);
    let main = &fake.state.last_status(&a.id).unwrap().task_states["main"];
    assert_eq!(
        main.started_at, started,
        "the in-place update restarted the task"
    );
    assert_eq!(main.restarts, 0);
    client.shutdown().await;
}

#[tokio::test]
async fn a_server_stop_keeps_the_task_for_the_shutdown_delay() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(config(dir.path(), &fake.addr)).await.unwrap();
    let job = deployment_job()
        .shutdown_delay(Duration::from_millis(300))
        .build();
    let a = deployment_alloc(&job, &client.node_id(), "dep-1");
    fake.state.add_alloc(a.clone());
    status_becomes(&fake, &a.id, ClientStatus::Running).await;
    fake.state.set_desired_stop(&a.id);
    let done = status_becomes(&fake, &a.id, ClientStatus::Complete).await;
    let events = &done.task_states["main"].events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let waiting = kinds
        .iter()
        .position(|k| *k == "Waiting for shutdown delay")
        .unwrap_or_else(|| panic!("no shutdown delay event: {kinds:?}"));
    let killing = kinds.iter().position(|k| *k == "Killing").unwrap();
    assert!(waiting < killing, "{kinds:?}");
    assert!(events[killing].time >= events[waiting].time + 300);
    assert!(events[killing]
        .message
        .starts_with("alloc stopped by the test"));
    client.shutdown().await;
}

#[tokio::test]
async fn a_re_attached_deployment_alloc_resumes_health_tracking() {
    let fake = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &fake.addr);
    cfg.stop_tasks_on_shutdown = false;
    let client = Client::start(cfg.clone()).await.unwrap();
    let job = raw_exec_job(JobType::Service, "exec sleep 300")
        .update(UpdatePolicy {
            health_check: HealthCheckMode::TaskStates,
            // Longer than the restart below takes: no verdict before it.
            min_healthy_time: Duration::from_secs(3600),
            ..Default::default()
        })
        .build();
    let a = AllocBuilder::new(&job)
        .node_id(client.node_id())
        .deployment("dep-1")
        .build();
    fake.state.add_alloc(a.clone());
    status_becomes(&fake, &a.id, ClientStatus::Running).await;
    let reported = fake.state.last_status(&a.id).unwrap();
    assert_eq!(reported.deployment_health, None);
    client.shutdown().await;

    // The servers still wait for its health; the next client run decides it.
    fake.state.change_alloc(&a.id, |stored| {
        stored.client_status = reported.client_status;
        stored.task_states = reported.task_states.clone();
        if let Some(u) = stored.job.as_mut().unwrap().groups[0].update.as_mut() {
            u.min_healthy_time = Duration::from_millis(100);
        }
    });
    let mut cfg2 = cfg.clone();
    cfg2.stop_tasks_on_shutdown = true;
    let again = Client::start(cfg2).await.unwrap();
    let v = eventually("a verdict after the restart", || {
        fake.state.last_status(&a.id)?.deployment_health
    })
    .await;
    assert!(v.healthy && v.deployment_id == "dep-1", "{v:?}");
    let main = &fake.state.last_status(&a.id).unwrap().task_states["main"];
    assert_eq!(
        main.restarts, 0,
        "the task was restarted, not re-attached to"
    );
    again.shutdown().await;
}
