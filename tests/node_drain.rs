//! `orch node drain`: a server and two client processes; a 3-instance service placed on
//! client A moves to client B at its `migrate` pace (never fewer than 2 instances
//! running, checked by polling), a deadline moves what is left at once, and draining an
//! unknown node is an error.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// Three instances, moved one at a time, each replacement healthy after 1 s.
const PACED: &str = r#"id = "paced"

[group.web]
count = 3

[group.web.migrate]
max_parallel = 1
min_healthy_time = "1s"

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sleep", args = ["600"] }
resources = { cpu = 50, memory = 32 }
"#;

/// Three instances, one at a time; once `MARKER` exists a new instance fails at once
/// (no restart, no reschedule), so a replacement never turns healthy and the drain's
/// deadline has to move the other two. (A long `min_healthy_time` would hold back the
/// originals too: like Nomad's, their health is judged the same way.)
const STALLED: &str = r#"id = "stalled"

[group.web]
count = 3

[group.web.migrate]
max_parallel = 1
min_healthy_time = "1s"

[group.web.restart]
attempts = 0
mode = "fail"

[group.web.reschedule]
attempts = 0

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "test -e MARKER && exit 3; exec sleep 600"] }
resources = { cpu = 50, memory = 32 }
"#;

/// A server plus clients "client-a" and "client-b", and their node ids.
struct Cluster {
    // Dropped in field order: clients first (they stop their tasks), then the server.
    a: Agent,
    b: Agent,
    server: Agent,
    a_id: String,
    b_id: String,
}

fn cluster(ws: &Workspace) -> Cluster {
    cluster_with_server_on(ws, 0)
}

/// `cluster`, with the server on 127.0.0.1:`port` (0: any).
fn cluster_with_server_on(ws: &Workspace, port: u16) -> Cluster {
    let server = Agent::with_config_on(ws, "server", port, "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let a = Agent::with_config(ws, "client-a", &client_section(&servers, 512, ""));
    let b = Agent::with_config(ws, "client-b", &client_section(&servers, 512, ""));
    wait_for_ready_nodes(&server, 2);
    let id_of = |name: &str| {
        server
            .get("/v1/nodes")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["id"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("node {name} not registered"))
    };
    let (a_id, b_id) = (id_of("client-a"), id_of("client-b"));
    Cluster {
        a,
        b,
        server,
        a_id,
        b_id,
    }
}

impl Cluster {
    /// Runs `spec` with client-b ineligible so every instance lands on client-a, then
    /// makes client-b eligible again.
    fn run_on_a(&self, ws: &Workspace, job: &str, spec: &str) {
        let s = &self.server;
        s.orch(
            &["node", "eligibility", "--disable", "client-b"],
            Duration::from_secs(20),
        )
        .ok();
        let file = ws.write(&format!("{job}.toml"), spec);
        s.orch(
            &["job", "run", file.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
        wait_for(
            Duration::from_secs(60),
            "3 instances running on client-a",
            || {
                let allocs = s.job_allocs(job);
                (allocs.len() == 3
                    && allocs.iter().all(|a| {
                        a["client_status"] == "running" && a["node_id"] == self.a_id.as_str()
                    }))
                .then_some(())
            },
        );
        s.orch(
            &["node", "eligibility", "--enable", "client-b"],
            Duration::from_secs(20),
        )
        .ok();
    }

    /// Waits until client-a runs nothing of `job` and client-b runs its 3 instances.
    fn wait_for_all_on_b(&self, job: &str) -> Vec<serde_json::Value> {
        wait_for(
            Duration::from_secs(60),
            "all 3 instances running on client-b",
            || {
                let live: Vec<serde_json::Value> = self
                    .server
                    .job_allocs(job)
                    .into_iter()
                    .filter(|a| a["desired_status"] == "run")
                    .collect();
                (live.len() == 3
                    && live.iter().all(|a| {
                        a["client_status"] == "running" && a["node_id"] == self.b_id.as_str()
                    }))
                .then_some(live)
            },
        )
    }

    /// Client-a's allocations that are not terminal (wanted, or still running).
    fn live_on_a(&self) -> Vec<serde_json::Value> {
        self.server
            .get(&format!("/v1/allocations?node_id={}", self.a_id))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                let client = a["client_status"].as_str().unwrap_or("");
                let terminal = matches!(client, "complete" | "failed" | "lost");
                !(terminal || (a["desired_status"] != "run" && client != "running"))
            })
            .collect()
    }
}

/// Allocation ids of `allocs` whose task process is alive on this machine.
fn alive(allocs: &[serde_json::Value]) -> usize {
    allocs
        .iter()
        .filter(|a| {
            let id = a["id"].as_str().unwrap().to_string();
            !task_pids(None, &BTreeSet::from([id])).is_empty()
        })
        .count()
}

#[test]
fn a_drain_moves_a_service_one_at_a_time_and_empties_the_node_as_root() {
    if skip_unless_root("a_drain_moves_a_service_one_at_a_time_and_empties_the_node_as_root") {
        return;
    }
    let ws = Workspace::new();
    let c = cluster(&ws);
    c.run_on_a(&ws, "paced", PACED);

    // The drain, watched by the CLI in another thread while this one polls.
    let addr = c.server.addr.clone();
    let monitor = std::thread::spawn(move || {
        orch_cmd(
            &["--address", &addr, "node", "drain", "--enable", "client-a"],
            Duration::from_secs(180),
        )
    });
    let started = Instant::now();
    let (mut polls, mut min_running, mut min_alive) = (0u32, usize::MAX, usize::MAX);
    while !monitor.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the drain never ended"
        );
        let allocs = c.server.job_allocs("paced");
        let running = allocs
            .iter()
            .filter(|a| a["client_status"] == "running" && a["desired_status"] == "run")
            .count();
        let live = alive(&allocs);
        assert!(
            running >= 2,
            "only {running} running during the drain: {allocs:#?}"
        );
        assert!(
            live >= 2,
            "only {live} task processes alive during the drain: {allocs:#?}"
        );
        polls += 1;
        min_running = min_running.min(running);
        min_alive = min_alive.min(live);
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = monitor.join().unwrap();
    eprintln!(
        "drain took {:?}: {polls} polls, at least {min_running} running and {min_alive} processes alive",
        started.elapsed()
    );
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Drain complete"), "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("marked for migration").count(),
        3,
        "{}",
        out.stdout
    );

    assert!(c.live_on_a().is_empty(), "{:#?}", c.live_on_a());
    let moved = c.wait_for_all_on_b("paced");
    // Each replacement stands in for an instance that was on client-a.
    for a in &moved {
        assert!(a["previous_allocation"].is_string(), "{a:#}");
    }
    let node = c.server.get(&format!("/v1/node/{}", c.a_id)).unwrap();
    assert!(node["drain"].is_null(), "{node:#}");
    assert_eq!(node["last_drain"]["outcome"], "complete", "{node:#}");
    assert_eq!(node["eligibility"], "ineligible", "{node:#}");
    let status = c
        .server
        .orch(&["node", "status", "client-a"], Duration::from_secs(20))
        .ok();
    assert!(
        status.stdout.contains("last drain complete"),
        "{}",
        status.stdout
    );
    c.server
        .orch(&["job", "stop", "paced"], Duration::from_secs(60))
        .ok();
    drop(c.b);
    drop(c.a);
}

#[test]
fn past_the_deadline_everything_left_moves_at_once_as_root() {
    if skip_unless_root("past_the_deadline_everything_left_moves_at_once_as_root") {
        return;
    }
    let ws = Workspace::new();
    let c = cluster(&ws);
    let marker = ws.path("replacements-fail");
    let spec = STALLED.replace("MARKER", &marker.display().to_string());
    c.run_on_a(&ws, "stalled", &spec);
    let originals: Vec<(u32, String)> = c
        .server
        .job_allocs("stalled")
        .iter()
        .map(|a| (alloc_index(a), a["id"].as_str().unwrap().to_string()))
        .collect();
    std::fs::write(&marker, "").unwrap();

    let out = c
        .server
        .orch(
            &[
                "node",
                "drain",
                "--enable",
                "--deadline",
                "3s",
                "--detach",
                &c.a_id[..8],
            ],
            Duration::from_secs(20),
        )
        .ok();
    assert!(out.stdout.contains("drain enabled"), "{}", out.stdout);
    let status = c
        .server
        .orch(&["node", "status", &c.a_id[..8]], Duration::from_secs(20))
        .ok();
    assert!(
        status.stdout.contains("draining since"),
        "{}",
        status.stdout
    );

    wait_for(Duration::from_secs(60), "the drain to complete", || {
        let node = c.server.get(&format!("/v1/node/{}", c.a_id))?;
        node["drain"].is_null().then_some(())
    });
    assert!(c.live_on_a().is_empty(), "{:#?}", c.live_on_a());
    // The first instance moved at the group's pace; its replacement failed, so the
    // other two waited for the deadline and then moved together: one evaluation placed
    // both of their replacements.
    let allocs = c.server.job_allocs("stalled");
    let replacement_eval = |original: &str| {
        allocs
            .iter()
            .find(|a| a["previous_allocation"] == original)
            .map(|a| a["eval_id"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no replacement of {original}: {allocs:#?}"))
    };
    let mut evals: Vec<(u32, String)> = originals
        .iter()
        .map(|(i, id)| (*i, replacement_eval(id)))
        .collect();
    evals.sort();
    assert_ne!(evals[0].1, evals[1].1, "{allocs:#?}");
    assert_eq!(evals[1].1, evals[2].1, "{allocs:#?}");
    c.server
        .orch(&["job", "stop", "stalled"], Duration::from_secs(60))
        .ok();
}

#[test]
fn a_drain_goes_on_after_a_server_restart_as_root() {
    if skip_unless_root("a_drain_goes_on_after_a_server_restart_as_root") {
        return;
    }
    let ws = Workspace::new();
    // A fixed port: the clients find the restarted server where they left it.
    let mut c = cluster_with_server_on(&ws, free_port());
    c.run_on_a(&ws, "paced", PACED);
    c.server
        .orch(
            &["node", "drain", "--enable", "--detach", "client-a"],
            Duration::from_secs(20),
        )
        .ok();
    c.server.kill9();
    c.server.restart();
    c.wait_for_all_on_b("paced");
    let node = wait_for(Duration::from_secs(60), "the drain to complete", || {
        let n = c.server.get(&format!("/v1/node/{}", c.a_id))?;
        (c.live_on_a().is_empty() && n["drain"].is_null() && !n["last_drain"].is_null())
            .then_some(n)
    });
    assert_eq!(node["last_drain"]["outcome"], "complete", "{node:#}");
    assert_eq!(node["eligibility"], "ineligible", "{node:#}");
}

#[test]
fn draining_an_unknown_node_is_an_error() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let out = server.orch(
        &["node", "drain", "--enable", "ffffffff"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let usage = server.orch(&["node", "drain", "ffffffff"], Duration::from_secs(20));
    assert_eq!(
        usage.code(),
        2,
        "neither --enable nor --disable is bad usage"
    );

    let post = |body: &str| {
        http()
            .post(format!("{}/v1/node/ffffffff/drain", server.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let missing = post(r#"{"drain_spec": {"deadline": "1h"}}"#);
    assert_eq!(missing.status(), 404);
    for bad in [
        r#"{"drain_spec": {"deadline": "soon"}}"#,
        r#"{"drain_spec": {}, "mark_eligible": true}"#,
        r#"{"drain": true}"#,
        "not json",
    ] {
        let resp = post(bad);
        assert_eq!(resp.status(), 400, "{bad}");
        let err: serde_json::Value = resp.json().unwrap();
        assert!(err["error"].is_string(), "{bad}: {err}");
    }
}
