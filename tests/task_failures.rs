//! Failures of tasks and allocations, end to end: a stop delivers the job's
//! `kill_signal` to the task (which traps it), and a service task that keeps exiting is
//! restarted in place, then rescheduled onto the other client with both allocations
//! linked.

mod common;

use std::time::Duration;

use common::*;

const TRAPS: &str = r#"id = "traps"

[group.g]
count = 1

[group.g.task.t]
driver = "raw_exec"
kill_signal = "SIGUSR1"
kill_timeout = "10s"
config = { command = "/bin/sh", args = ["-c", "trap 'echo got USR1 > $ORCH_TASK_DIR/signal; exit 0' USR1; echo ready; while true; do sleep 0.1; done"] }
resources = { cpu = 50, memory = 32 }
"#;

#[test]
fn a_stop_sends_the_kill_signal_that_the_task_traps_as_root() {
    if skip_unless_root("a_stop_sends_the_kill_signal_that_the_task_traps_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    let file = ws.write("traps.toml", TRAPS);
    agent
        .orch(
            &["job", "run", file.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    let alloc = agent.job_allocs("traps")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The trap is set before "ready" is printed.
    wait_for(Duration::from_secs(20), "the task to say ready", || {
        let out = agent.orch(&["alloc", "logs", &alloc[..8]], Duration::from_secs(20));
        out.stdout.contains("ready").then_some(())
    });
    agent
        .orch(&["job", "stop", "traps"], Duration::from_secs(60))
        .ok();
    let marker = agent
        .data_dir
        .join("alloc")
        .join(&alloc)
        .join("t/local/signal");
    let text = wait_for(Duration::from_secs(20), "the trap's file", || {
        std::fs::read_to_string(&marker).ok()
    });
    assert_eq!(text.trim(), "got USR1");
    // It exited on the signal, well before kill_timeout would have forced it.
    wait_for(
        Duration::from_secs(20),
        "the allocation to complete",
        || {
            let a = agent.get(&format!("/v1/allocation/{alloc}"))?;
            (a["client_status"] == "complete").then_some(a)
        },
    );
    let a = agent.get(&format!("/v1/allocation/{alloc}")).unwrap();
    let events: Vec<&str> = a["task_states"]["t"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str().or_else(|| e["kind"].as_str()))
        .collect();
    assert!(events.contains(&"Killing"), "{events:?}");
    assert!(
        !a["task_states"]["t"]["failed"].as_bool().unwrap_or(false),
        "{a:#}"
    );
}

const CRASHES: &str = r#"id = "crashes"

[group.g]
count = 1

[group.g.restart]
attempts = 1
interval = "10m"
delay = "200ms"
mode = "fail"

[group.g.reschedule]
attempts = 1
interval = "1h"
delay = "1s"
delay_function = "constant"

[group.g.task.t]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo run; sleep 0.3; exit 3"] }
resources = { cpu = 50, memory = 32 }
"#;

#[test]
fn a_crashing_service_is_restarted_in_place_then_rescheduled_on_the_other_client_as_root() {
    if skip_unless_root(
        "a_crashing_service_is_restarted_in_place_then_rescheduled_on_the_other_client_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let _c1 = Agent::with_config(&ws, "client1", &client_section(&servers, 512, ""));
    let _c2 = Agent::with_config(&ws, "client2", &client_section(&servers, 512, ""));
    wait_for_ready_nodes(&server, 2);

    let file = ws.write("crashes.toml", CRASHES);
    server
        .orch(
            &["job", "run", "--detach", file.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    // The first allocation fails after its one restart; its replacement runs elsewhere
    // and fails the same way; the reschedule attempt is used up, so nothing follows.
    let (first, second) = wait_for(Duration::from_secs(60), "two failed allocations", || {
        let allocs = server.job_allocs("crashes");
        let failed: Vec<_> = allocs
            .iter()
            .filter(|a| a["client_status"] == "failed")
            .collect();
        if failed.len() < 2 {
            return None;
        }
        let full = |a: &serde_json::Value| {
            server.get(&format!("/v1/allocation/{}", a["id"].as_str().unwrap()))
        };
        let mut pair: Vec<serde_json::Value> = failed.iter().filter_map(|a| full(a)).collect();
        pair.sort_by_key(|a| a["create_index"].as_u64());
        Some((pair[0].clone(), pair[1].clone()))
    });
    for a in [&first, &second] {
        let t = &a["task_states"]["t"];
        assert_eq!(t["restarts"], 1, "restarted once in place first: {a:#}");
        assert_eq!(t["failed"], true, "{a:#}");
        let restarting = t["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "Restarting" || e["kind"] == "Restarting")
            .count();
        assert_eq!(restarting, 1, "{a:#}");
    }
    assert_ne!(
        first["node_id"], second["node_id"],
        "the reschedule avoids the node it failed on"
    );
    assert_eq!(second["previous_allocation"], first["id"]);
    assert_eq!(first["next_allocation"], second["id"]);
    // The links show in `orch alloc status`.
    let first_id = first["id"].as_str().unwrap();
    let second_id = second["id"].as_str().unwrap();
    let status = server
        .orch(
            &["alloc", "status", &second_id[..8]],
            Duration::from_secs(20),
        )
        .ok();
    assert!(
        status.stdout.contains(first_id) || status.stdout.contains(&first_id[..8]),
        "{}",
        status.stdout
    );
    // Attempts used up: still exactly two allocations a little later.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.job_allocs("crashes").len(), 2);
}
