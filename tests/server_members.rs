//! `orch server members` and `orch operator raft list-peers|remove-peer` against one
//! dev agent, a cluster of one server: it is alive and leads, it cannot remove itself,
//! and an unknown peer is an error that says so (issue 18).

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// The cells of each table row after the header.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn a_single_server_is_an_alive_leader_that_cannot_remove_itself() {
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");

    // The table: one row, alive, leading, voting, last contact 0ms.
    let out = agent.orch(&["server", "members"], T).ok();
    let header = out.stdout.lines().next().unwrap_or_default().to_string();
    for col in [
        "NAME",
        "ADDRESS",
        "HTTP",
        "STATUS",
        "LEADER",
        "VOTER",
        "RAFT INDEX",
        "LAST CONTACT",
    ] {
        assert!(header.contains(col), "{}", out.stdout);
    }
    let table = rows(&out.stdout);
    assert_eq!(table.len(), 1, "{}", out.stdout);
    assert_eq!(table[0][3..6], ["alive", "true", "true"], "{}", out.stdout);
    assert_eq!(table[0].last().map(String::as_str), Some("0ms"));

    // --json: the API's array.
    let out = agent.orch(&["server", "members", "--json"], T).ok();
    let members: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let members = members.as_array().expect("an array").clone();
    assert_eq!(members.len(), 1, "{}", out.stdout);
    let me = &members[0];
    assert_eq!(me["leader"], true, "{}", out.stdout);
    assert_eq!(me["status"], "alive", "{}", out.stdout);
    let id = me["id"].as_u64().expect("a numeric id");
    let rpc_addr = me["rpc_addr"].as_str().expect("rpc_addr").to_string();

    // --stale answers too (the server asked is the leader here).
    let out = agent.orch(&["server", "members", "--stale"], T).ok();
    assert_eq!(rows(&out.stdout).len(), 1, "{}", out.stdout);

    // Every answer says whether a leader is known.
    let resp = http()
        .get(format!("{}/v1/status/leader", agent.addr))
        .send()
        .expect("GET /v1/status/leader");
    assert_eq!(
        resp.headers()
            .get("X-Orch-KnownLeader")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(
        resp.json::<String>().expect("a JSON string"),
        rpc_addr,
        "the leader is this server's RPC address"
    );

    // list-peers: the one server, as leader.
    let out = agent.orch(&["operator", "raft", "list-peers"], T).ok();
    let peers = rows(&out.stdout);
    assert_eq!(peers.len(), 1, "{}", out.stdout);
    assert_eq!(peers[0][1], id.to_string(), "{}", out.stdout);
    assert_eq!(peers[0][2], rpc_addr, "{}", out.stdout);
    assert_eq!(peers[0][3..5], ["leader", "true"], "{}", out.stdout);
    let out = agent
        .orch(&["operator", "raft", "list-peers", "--json"], T)
        .ok();
    let config: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(config["servers"][0]["leader"], true, "{}", out.stdout);

    // remove-peer: not the leader itself, not an unknown server.
    let own = id.to_string();
    let out = agent.orch(&["operator", "raft", "remove-peer", "--peer-id", &own], T);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("leads the cluster"), "{}", out.stderr);
    let out = agent.orch(
        &[
            "operator",
            "raft",
            "remove-peer",
            "--peer-address",
            &rpc_addr,
        ],
        T,
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("leads the cluster"), "{}", out.stderr);
    let out = agent.orch(
        &["operator", "raft", "remove-peer", "--peer-id", "12345"],
        T,
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("no server 12345"), "{}", out.stderr);
    // Neither or both of --peer-id and --peer-address is bad usage.
    let out = agent.orch(&["operator", "raft", "remove-peer"], T);
    assert_eq!(out.code(), 2, "{out:?}");
    let out = agent.orch(
        &[
            "operator",
            "raft",
            "remove-peer",
            "--peer-id",
            "2",
            "--peer-address",
            "127.0.0.1:1",
        ],
        T,
    );
    assert_eq!(out.code(), 2, "{out:?}");

    // Still the one server, still leading.
    let out = agent.orch(&["operator", "raft", "list-peers"], T).ok();
    assert_eq!(rows(&out.stdout).len(), 1, "{}", out.stdout);
}
