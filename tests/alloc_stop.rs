//! `orch alloc stop`: the allocation is replaced (a new one placed and running, linked
//! to it), then stopped; the job keeps its count. A finished allocation is a 409.
//! `orch alloc restart`: the task runs again in place, with new processes.

mod common;

use std::time::Duration;

use common::*;

/// A dev agent running jobspecs/hello.toml (2 instances).
fn hello_on_a_dev_agent(ws: &Workspace) -> Agent {
    let agent = Agent::dev(ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = jobspec("hello.toml");
    agent
        .orch(
            &["job", "run", spec.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    agent
}

/// hello's allocations the server wants running and that run.
fn running(agent: &Agent) -> Vec<serde_json::Value> {
    agent
        .job_allocs("hello")
        .into_iter()
        .filter(|a| a["client_status"] == "running" && a["desired_status"] == "run")
        .collect()
}

#[test]
fn a_stopped_allocation_is_replaced_and_linked_as_root() {
    if skip_unless_root("a_stopped_allocation_is_replaced_and_linked_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = hello_on_a_dev_agent(&ws);
    let before = wait_for(Duration::from_secs(60), "hello to run", || {
        let r = running(&agent);
        (r.len() == 2).then_some(r)
    });
    let old = before[0]["id"].as_str().unwrap().to_string();

    let out = agent
        .orch(&["alloc", "stop", &old[..8]], Duration::from_secs(30))
        .ok();
    assert!(out.stdout.contains("being replaced"), "{}", out.stdout);

    // A replacement runs, linked both ways; the old one is stopped; the count holds.
    let new = wait_for(Duration::from_secs(60), "the replacement to run", || {
        let a = agent.get(&format!("/v1/allocation/{old}"))?;
        let next = a["next_allocation"].as_str()?.to_string();
        let n = agent.get(&format!("/v1/allocation/{next}"))?;
        (n["client_status"] == "running" && a["desired_status"] == "stop").then_some(n)
    });
    assert_eq!(new["previous_allocation"].as_str(), Some(old.as_str()));
    let old_full = agent.get(&format!("/v1/allocation/{old}")).unwrap();
    assert_eq!(
        new["index"], old_full["index"],
        "it takes the same instance index"
    );
    wait_for(Duration::from_secs(60), "two running instances", || {
        (running(&agent).len() == 2).then_some(())
    });
    let status = agent
        .orch(&["alloc", "status", &old[..8]], Duration::from_secs(20))
        .ok();
    assert!(
        status.stdout.contains("alloc is being migrated"),
        "{}",
        status.stdout
    );

    // Stopping it again: it is no longer running.
    let again = agent.orch(&["alloc", "stop", &old[..8]], Duration::from_secs(30));
    assert_ne!(again.code(), 0);
    assert!(again.stderr.contains("nothing to stop"), "{}", again.stderr);
}

#[test]
fn a_restarted_task_runs_again_in_place_as_root() {
    if skip_unless_root("a_restarted_task_runs_again_in_place_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = hello_on_a_dev_agent(&ws);
    let alloc = wait_for(Duration::from_secs(60), "hello to run", || {
        running(&agent).into_iter().next()
    });
    let id = alloc["id"].as_str().unwrap().to_string();
    let ids = std::collections::BTreeSet::from([id.clone()]);
    let before = wait_for(Duration::from_secs(20), "the task's processes", || {
        let p = task_pids(None, &ids);
        (!p.is_empty()).then_some(p)
    });

    let out = agent
        .orch(&["alloc", "restart", &id[..8]], Duration::from_secs(30))
        .ok();
    assert!(out.stdout.contains("Restarting"), "{}", out.stdout);

    // Same allocation, running again with new processes, one restart and its event.
    let a = wait_for(Duration::from_secs(30), "the task to run again", || {
        let a = agent.get(&format!("/v1/allocation/{id}"))?;
        let state = a["task_states"].as_object()?.values().next()?.clone();
        let pids = task_pids(None, &ids);
        (state["restarts"] == 1
            && state["state"] == "running"
            && !pids.is_empty()
            && pids.iter().all(|p| !before.contains(p)))
        .then_some(a)
    });
    assert_eq!(a["client_status"], "running");
    assert!(
        a["next_allocation"].is_null(),
        "restarted in place, not replaced"
    );
    let status = agent
        .orch(&["alloc", "status", &id[..8]], Duration::from_secs(20))
        .ok();
    assert!(
        status.stdout.contains("Restart Signaled"),
        "{}",
        status.stdout
    );

    let bad = agent.orch(
        &["alloc", "restart", &id[..8], "nope"],
        Duration::from_secs(30),
    );
    assert_ne!(bad.code(), 0);
    assert!(bad.stderr.contains("nope"), "{}", bad.stderr);
}
