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
