//! A system job on a real cluster (a server and client agents as separate processes):
//! one allocation on every client, including a client that joins later.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const SYSTEM: &str = r#"id = "node-agent"
type = "system"

[group.agent]

[group.agent.task.main]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo on $ORCH_NODE_ID; exec sleep 600"] }
resources = { cpu = 20, memory = 16 }
"#;

fn nodes_running(server: &Agent) -> BTreeSet<String> {
    server
        .job_allocs("node-agent")
        .iter()
        .filter(|a| a["desired_status"] == "run" && a["client_status"] == "running")
        .map(|a| a["node_name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_system_job_runs_on_every_client_and_on_one_that_joins_later_as_root() {
    if skip_unless_root("a_system_job_runs_on_every_client_and_on_one_that_joins_later_as_root") {
        return;
    }
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let _c1 = Agent::with_config(&ws, "client1", &client_section(&servers, 200, ""));
    let _c2 = Agent::with_config(&ws, "client2", &client_section(&servers, 200, ""));
    wait_for_ready_nodes(&server, 2);

    let file = ws.write("system.toml", SYSTEM);
    let run = server.orch(
        &["job", "run", file.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    wait_for(
        Duration::from_secs(30),
        "the system job running on both clients",
        || {
            (nodes_running(&server) == BTreeSet::from(["client1".into(), "client2".into()]))
                .then_some(())
        },
    );

    let _c3 = Agent::with_config(&ws, "client3", &client_section(&servers, 200, ""));
    wait_for_ready_nodes(&server, 3);
    wait_for(
        Duration::from_secs(60),
        "the system job running on the client that joined",
        || (nodes_running(&server).len() == 3).then_some(()),
    );
    assert_eq!(
        nodes_running(&server),
        BTreeSet::from(["client1".into(), "client2".into(), "client3".into()])
    );
    let allocs: Vec<_> = server
        .job_allocs("node-agent")
        .into_iter()
        .filter(|a| a["desired_status"] == "run")
        .collect();
    assert_eq!(allocs.len(), 3, "one per node, no more: {allocs:#?}");
}
