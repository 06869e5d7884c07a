//! A job too big for the cluster is reported as not placed, with the reason, and `orch
//! job run` exits 2; once a client with room joins (a separate agent process) the job
//! is placed automatically.

mod common;

use std::time::Duration;

use common::*;

const BIG: &str = r#"id = "big"

[group.web]
count = 1

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sleep", args = ["600"] }
resources = { cpu = 100, memory = 200 }
"#;

#[test]
fn a_job_too_big_for_the_cluster_waits_and_is_placed_when_a_client_with_room_joins_as_root() {
    if skip_unless_root(
        "a_job_too_big_for_the_cluster_waits_and_is_placed_when_a_client_with_room_joins_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let _small = Agent::with_config(&ws, "small", &client_section(&servers, 100, "small"));
    wait_for_ready_nodes(&server, 1);

    let file = ws.write("big.toml", BIG);
    let run = server.orch(
        &["job", "run", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(
        run.code(),
        2,
        "job run should exit 2:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("Placement failed for group web"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("exhausted on memory"), "{}", run.stdout);
    assert!(run.stdout.contains("stays registered"), "{}", run.stdout);

    let status = server
        .orch(&["job", "status", "big"], Duration::from_secs(20))
        .ok();
    assert!(
        status.stdout.contains("exhausted on memory"),
        "{}",
        status.stdout
    );
    assert!(server.job_allocs("big").is_empty());

    let roomy = Agent::with_config(&ws, "roomy", &client_section(&servers, 400, "roomy"));
    let alloc = wait_for(
        Duration::from_secs(60),
        "the big job to be placed and running",
        || {
            server
                .job_allocs("big")
                .into_iter()
                .find(|a| a["client_status"] == "running")
        },
    );
    assert_eq!(alloc["node_name"], "roomy", "{alloc:#}");
    let status = server
        .orch(&["job", "status", "big"], Duration::from_secs(20))
        .ok();
    assert!(
        !status.stdout.contains("Placement Failure"),
        "{}",
        status.stdout
    );
    drop(roomy);
}
