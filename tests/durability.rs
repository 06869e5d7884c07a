//! A server killed with SIGKILL right after acknowledging jobs comes back, on the same
//! data dir, with every one of them.

mod common;

use std::time::Duration;

use common::*;

const JOBS: usize = 5;

fn spec(i: usize) -> String {
    format!(
        r#"id = "durable-{i}"
[group.web]
count = 1
[group.web.task.server]
driver = "raw_exec"
config = {{ command = "/bin/sleep", args = ["600"] }}
resources = {{ cpu = 100, memory = 32 }}
"#
    )
}

#[test]
fn jobs_acknowledged_before_a_sigkill_survive_the_restart() {
    let ws = Workspace::new();
    // A server without clients: the jobs are stored but nothing runs.
    let mut server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    for i in 0..JOBS {
        let file = ws.write(&format!("durable-{i}.toml"), &spec(i));
        let out = server
            .orch(
                &["job", "run", "--detach", file.to_str().unwrap()],
                Duration::from_secs(30),
            )
            .ok();
        assert!(out.stdout.contains("Evaluation ID"), "{}", out.stdout);
    }
    server.kill9();
    server.restart();

    let jobs = server.get("/v1/jobs").expect("GET /v1/jobs after restart");
    let ids: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    for i in 0..JOBS {
        let id = format!("durable-{i}");
        assert!(
            ids.contains(&id.as_str()),
            "{id} missing after restart: {ids:?}\n{}",
            server.log()
        );
        let job = server.get(&format!("/v1/job/{id}")).expect("GET the job");
        assert_eq!(job["groups"][0]["tasks"][0]["driver"], "raw_exec");
    }
    let status = server
        .orch(&["job", "status"], Duration::from_secs(20))
        .ok();
    assert!(status.stdout.contains("durable-4"), "{}", status.stdout);
}

const QUEUED: usize = 12;

fn queued_spec(i: usize) -> String {
    format!(
        r#"id = "queued-{i}"
[group.web]
count = 2
[group.web.task.server]
driver = "raw_exec"
config = {{ command = "/bin/sleep", args = ["600"] }}
resources = {{ cpu = 20, memory = 16 }}
"#
    )
}

#[test]
fn evaluations_queued_when_the_server_is_killed_are_run_after_its_restart_as_root() {
    if skip_unless_root(
        "evaluations_queued_when_the_server_is_killed_are_run_after_its_restart_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    // No client yet: every evaluation is pending, or blocked waiting for capacity, when
    // the server dies.
    let mut server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    for i in 0..QUEUED {
        let file = ws.write(&format!("queued-{i}.toml"), &queued_spec(i));
        server
            .orch(
                &["job", "run", "--detach", file.to_str().unwrap()],
                Duration::from_secs(30),
            )
            .ok();
    }
    server.kill9();
    let evals_before: Vec<String> = {
        let db = rusqlite::Connection::open(server.data_dir.join("server/state.db"))
            .expect("the server's database");
        let mut st = db
            .prepare("SELECT status FROM evals ORDER BY status")
            .expect("query");
        st.query_map([], |r| r.get::<_, String>(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    };
    // One evaluation per job still waits (pending, or blocked for want of a node).
    let waiting = evals_before
        .iter()
        .filter(|s| *s == "pending" || *s == "blocked")
        .count();
    assert_eq!(waiting, QUEUED, "{evals_before:?}");

    server.restart();
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let _client = Agent::with_config(&ws, "client", &client_section(&servers, 2048, ""));
    for i in 0..QUEUED {
        let job = format!("queued-{i}");
        wait_for(
            Duration::from_secs(60),
            &format!("{job} running 2 of 2 after the restart"),
            || {
                let running = server
                    .job_allocs(&job)
                    .iter()
                    .filter(|a| a["client_status"] == "running")
                    .count();
                (running == 2).then_some(())
            },
        );
    }
}
