//! A node is who holds its secret: a client (a separate process) registers with the
//! secret it keeps in `client/node-secret` (0600); another process that registers the
//! same node id without it, or heartbeats the node down without it, is refused and
//! changes nothing, while the real client keeps its node ready.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::*;

#[test]
fn a_forged_registration_and_a_heartbeat_without_the_secret_are_refused() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let client = Agent::with_config(&ws, "client", &client_section(&servers, 150, ""));
    wait_for_ready_nodes(&server, 1);

    let secret_file = client.data_dir.join("client/node-secret");
    let mode = std::fs::metadata(&secret_file)
        .expect("the client keeps its node secret")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", secret_file.display());

    let nodes = server.get("/v1/nodes").expect("GET /v1/nodes");
    let id = nodes[0]["id"].as_str().expect("node id").to_string();
    let node = server.get(&format!("/v1/node/{id}")).expect("GET node");
    assert!(node.get("secret_hash").is_none(), "{node}");

    // Another process claims the node: same id, its own address, no secret.
    let mut forged = node.clone();
    forged["http_addr"] = "127.0.0.1:9".into();
    for secret in [None, Some("f".repeat(64))] {
        let mut req = http()
            .post(format!("{}/v1/node/register", server.addr))
            .json(&serde_json::json!({ "node": forged }));
        if let Some(s) = &secret {
            req = req.header("X-Orch-Node-Secret", s);
        }
        let resp = req.send().expect("POST /v1/node/register");
        assert_eq!(resp.status().as_u16(), 403, "secret {secret:?}");
        let body: serde_json::Value = resp.json().expect("a JSON error");
        assert!(body["error"].as_str().unwrap().contains(&id), "{body}");
    }

    // ... or tries to mark it down.
    let down = http()
        .post(format!("{}/v1/node/{id}/heartbeat", server.addr))
        .json(&serde_json::json!({ "status": "down" }))
        .send()
        .expect("POST heartbeat");
    assert_eq!(down.status().as_u16(), 403);
    let watch = http()
        .get(format!("{}/v1/node/{id}/allocations", server.addr))
        .send()
        .expect("GET the node's allocations");
    assert_eq!(
        watch.status().as_u16(),
        403,
        "the jobs sent to a node stay its own"
    );

    let node = server.get(&format!("/v1/node/{id}")).expect("GET node");
    assert_eq!(node["status"], "ready", "{node}");
    assert_ne!(node["http_addr"], "127.0.0.1:9", "{node}");

    // The real client goes on: it still heartbeats (past a TTL) and runs work.
    let out = server.job_run("hello.toml", Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    let node = server.get(&format!("/v1/node/{id}")).expect("GET node");
    assert_eq!(node["status"], "ready", "{node}");
    drop(client);
}
