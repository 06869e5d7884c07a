//! A network partition: one server and two clients as separate `orch` processes, each in
//! its own network namespace (made by the test with veth pairs, removed on drop). One
//! client is cut off: its allocations are replaced on the other client (at once for a
//! group with `disconnect = { replace = true }`, as lost for one without), while its
//! tasks keep running where nobody can reach them. The cut heals: the cluster converges
//! to exactly `count` running instances per job, and no duplicate process is left.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::netns::Star;
use common::*;

fn spec(id: &str, disconnect: &str) -> String {
    format!(
        r#"id = "{id}"

[group.web]
count = 2
{disconnect}

[group.web.task.server]
driver = "raw_exec"
config = {{ command = "/bin/sh", args = ["-c", "exec sleep 600"] }}
resources = {{ cpu = 50, memory = 32 }}
"#
    )
}

const SERVER: &str =
    "[server]\nenabled = true\nheartbeat_min_ttl = \"1s\"\nheartbeat_grace = \"1s\"\n";

fn node_id(server: &Agent, name: &str) -> String {
    let nodes = server.get("/v1/nodes").expect("nodes");
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["id"].as_str())
        .unwrap_or_else(|| panic!("no node {name}: {nodes}"))
        .to_string()
}

fn node_status(server: &Agent, name: &str) -> Option<String> {
    let nodes = server.get("/v1/nodes")?;
    nodes
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["status"].as_str())
        .map(str::to_string)
}

/// Allocations of `job` that the server wants running and the client reports running,
/// as (node name, id).
fn running_on(server: &Agent, job: &str) -> Vec<(String, String)> {
    server
        .job_allocs(job)
        .iter()
        .filter(|a| a["desired_status"] == "run" && a["client_status"] == "running")
        .map(|a| {
            (
                a["node_name"].as_str().unwrap_or_default().to_string(),
                a["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Task processes alive for `job`'s allocations, on either client.
fn live_processes(server: &Agent, job: &str) -> usize {
    let ids: BTreeSet<String> = server
        .job_allocs(job)
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    task_pids(None, &ids).len()
}

#[test]
fn a_cut_off_client_is_replaced_and_the_cluster_converges_after_the_heal_as_root() {
    if skip_unless_root(
        "a_cut_off_client_is_replaced_and_the_cluster_converges_after_the_heal_as_root",
    ) {
        return;
    }
    // Declared first so it is removed last, after every agent in it has stopped.
    let star = Star::new("orchpt", 2).expect("network namespaces");
    let ws = Workspace::new();
    let server = Agent::in_netns(
        &ws,
        "server",
        &star.hub_ns(),
        &star.hub_addr(),
        4747,
        SERVER,
    );
    let servers = [format!("{}:4747", star.hub_addr())];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let c1 = Agent::in_netns(
        &ws,
        "client1",
        &star.leaf_ns(1),
        &star.leaf_addr(1),
        4646,
        &client_section(&servers, 1024, ""),
    );
    let c2 = Agent::in_netns(
        &ws,
        "client2",
        &star.leaf_ns(2),
        &star.leaf_addr(2),
        4646,
        &client_section(&servers, 1024, ""),
    );
    wait_for_ready_nodes(&server, 2);
    let n2 = node_id(&server, "client2");

    // Everything starts on client1: client2 is ineligible until the jobs are placed.
    server
        .orch(
            &["node", "eligibility", "--disable", &n2],
            Duration::from_secs(20),
        )
        .ok();
    let tolerant = ws.write(
        "tolerant.toml",
        &spec(
            "tolerant",
            "disconnect = { lost_after = \"1m\", replace = true }",
        ),
    );
    let plain = ws.write("plain.toml", &spec("plain", ""));
    for file in [&tolerant, &plain] {
        server
            .orch(
                &["job", "run", file.to_str().unwrap()],
                Duration::from_secs(60),
            )
            .ok();
    }
    for job in ["tolerant", "plain"] {
        let on = running_on(&server, job);
        assert_eq!(on.len(), 2, "{job}: {on:?}");
        assert!(
            on.iter().all(|(node, _)| node == "client1"),
            "{job}: {on:?}"
        );
    }
    server
        .orch(
            &["node", "eligibility", "--enable", &n2],
            Duration::from_secs(20),
        )
        .ok();
    let originals: BTreeSet<String> = ["tolerant", "plain"]
        .iter()
        .flat_map(|job| running_on(&server, job))
        .map(|(_, id)| id)
        .collect();

    star.cut(1);
    // client1 runs allocations that tolerate a disconnect: it is disconnected, not down.
    wait_for(Duration::from_secs(30), "client1 disconnected", || {
        (node_status(&server, "client1").as_deref() == Some("disconnected")).then_some(())
    });
    // Both jobs get two instances running on client2.
    wait_for(Duration::from_secs(30), "replacements on client2", || {
        ["tolerant", "plain"]
            .iter()
            .all(|job| {
                running_on(&server, job)
                    .iter()
                    .filter(|(node, _)| node == "client2")
                    .count()
                    == 2
            })
            .then_some(())
    });
    let allocs = server.job_allocs("plain");
    let lost = allocs
        .iter()
        .filter(|a| originals.contains(a["id"].as_str().unwrap()))
        .filter(|a| a["client_status"] == "lost" && a["desired_status"] == "stop")
        .count();
    assert_eq!(lost, 2, "plain's originals are lost: {allocs:#?}");
    let allocs = server.job_allocs("tolerant");
    let kept = allocs
        .iter()
        .filter(|a| originals.contains(a["id"].as_str().unwrap()))
        .filter(|a| a["client_status"] == "running" && a["desired_status"] == "run")
        .count();
    assert_eq!(
        kept, 2,
        "tolerant's originals wait out lost_after: {allocs:#?}"
    );
    // Out of reach, client1's tasks keep running: four copies of each job exist now.
    for job in ["tolerant", "plain"] {
        assert_eq!(live_processes(&server, job), 4, "{job}");
    }

    star.heal(1);
    wait_for(Duration::from_secs(30), "client1 ready again", || {
        (node_status(&server, "client1").as_deref() == Some("ready")).then_some(())
    });
    // Exactly count instances survive per job, and only their processes run.
    for job in ["tolerant", "plain"] {
        wait_for(
            Duration::from_secs(30),
            &format!("{job} converged to 2 instances"),
            || {
                let on = running_on(&server, job);
                let procs = live_processes(&server, job);
                (on.len() == 2 && procs == 2).then_some(())
            },
        );
    }
    // The plain job's lost originals were stopped by client1 once it heard of them; the
    // tolerant job kept, per index, the better placed of original and stand-in.
    let survivors: BTreeSet<String> = running_on(&server, "tolerant")
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let indexes: BTreeSet<u32> = server
        .job_allocs("tolerant")
        .iter()
        .filter(|a| survivors.contains(a["id"].as_str().unwrap()))
        .map(alloc_index)
        .collect();
    assert_eq!(indexes, BTreeSet::from([0, 1]));
    let duplicates: Vec<_> = server
        .job_allocs("tolerant")
        .into_iter()
        .filter(|a| a["desired_status"] == "stop")
        .collect();
    assert_eq!(duplicates.len(), 2, "{duplicates:#?}");
    // Both clients are still part of the cluster.
    assert_eq!(node_status(&server, "client2").as_deref(), Some("ready"));
    drop((c1, c2));
}
