//! A server and two clients as three separate `orch agent --config` processes (own
//! data dirs and ports) form one cluster: a job whose instances do not all fit on one
//! client is packed onto both; the server relays the client routes (logs) to them.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const SPREAD: &str = r#"id = "packed"

[group.web]
count = 3

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo up $ORCH_ALLOC_INDEX; exec sleep 600"] }
resources = { cpu = 100, memory = 64 }
"#;

#[test]
fn a_server_and_two_client_processes_pack_a_job_onto_both_clients_as_root() {
    if skip_unless_root("a_server_and_two_client_processes_pack_a_job_onto_both_clients_as_root") {
        return;
    }
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    // Room for two 64 MiB instances each, so three need both clients.
    let c1 = Agent::with_config(&ws, "client1", &client_section(&servers, 150, ""));
    let c2 = Agent::with_config(&ws, "client2", &client_section(&servers, 150, ""));
    assert_ne!(c1.addr, c2.addr);
    wait_for_ready_nodes(&server, 2);

    let nodes = server
        .orch(&["node", "status"], Duration::from_secs(20))
        .ok();
    assert!(
        nodes.stdout.contains("client1") && nodes.stdout.contains("client2"),
        "{}",
        nodes.stdout
    );

    let file = ws.write("packed.toml", SPREAD);
    let run = server.orch(
        &["job", "run", file.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);

    let allocs = server.job_allocs("packed");
    assert_eq!(allocs.len(), 3, "{allocs:#?}");
    assert!(
        allocs.iter().all(|a| a["client_status"] == "running"),
        "{allocs:#?}"
    );
    let names: BTreeSet<&str> = allocs
        .iter()
        .map(|a| a["node_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["client1", "client2"]), "{allocs:#?}");

    // Logs come from whichever client runs the allocation.
    for a in &allocs {
        let id = &a["id"].as_str().unwrap()[..8];
        let want = format!("up {}", alloc_index(a));
        wait_for(
            Duration::from_secs(20),
            &format!("{want:?} in {id}'s logs"),
            || {
                let out = server.orch(&["alloc", "logs", id], Duration::from_secs(20));
                out.stdout.contains(&want).then_some(())
            },
        );
    }
    // The server, which runs no client, relays the client routes to the right client.
    for a in &allocs {
        let id = a["id"].as_str().unwrap();
        let url = format!("{}/v1/client/fs/logs/{}?task=server", server.addr, &id[..8]);
        let body = http().get(&url).send().unwrap();
        assert_eq!(body.status(), 200, "{url}");
        let text = body.text().unwrap();
        assert!(
            text.contains(&format!("up {}", alloc_index(a))),
            "{url}: {text:?}"
        );
    }
    let missing = http()
        .get(format!(
            "{}/v1/client/fs/logs/ffffffff?task=server",
            server.addr
        ))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let err: serde_json::Value = missing.json().unwrap();
    assert!(err["error"].as_str().unwrap().contains("ffffffff"), "{err}");

    let node_id = allocs[0]["node_id"].as_str().unwrap();
    let one = server
        .orch(&["node", "status", &node_id[..8]], Duration::from_secs(20))
        .ok();
    assert!(one.stdout.contains("packed"), "{}", one.stdout);
}
