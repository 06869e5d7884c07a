//! The INTERFACE.md service example (jobspecs/hello.toml) end to end on a dev agent:
//! both instances run, their stdout is readable through `orch alloc logs`, `orch job
//! status` lists them, and `orch job stop` leaves no process and no cgroup behind.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[test]
fn hello_service_runs_shows_logs_and_stops_without_leftovers_as_root() {
    if skip_unless_root("hello_service_runs_shows_logs_and_stops_without_leftovers_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let run = agent.job_run("hello.toml", Duration::from_secs(120));
    assert!(run.stdout.contains("Placed 2 of 2"), "{}", run.stdout);

    let allocs: Vec<_> = agent
        .job_allocs("hello")
        .into_iter()
        .filter(|a| a["desired_status"] == "run")
        .collect();
    assert_eq!(allocs.len(), 2, "{allocs:#?}");
    assert!(
        allocs.iter().all(|a| a["client_status"] == "running"),
        "{allocs:#?}"
    );
    let ids: BTreeSet<String> = allocs
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();

    // Each instance prints its own index; the logs come from the client agent.
    for a in &allocs {
        let short = &a["id"].as_str().unwrap()[..8];
        let want = format!("hello from {}", alloc_index(a));
        wait_for(
            Duration::from_secs(20),
            &format!("{want:?} in the logs of {short}"),
            || {
                let out = agent.orch(&["alloc", "logs", short], Duration::from_secs(20));
                (out.code() == 0 && out.stdout.contains(&want)).then_some(())
            },
        );
        let tail = agent
            .orch(
                &["alloc", "logs", "--tail", "1", short, "server"],
                Duration::from_secs(20),
            )
            .ok();
        assert_eq!(tail.stdout.lines().count(), 1, "{}", tail.stdout);
        assert!(tail.stdout.contains(&want), "{}", tail.stdout);
    }

    let status = agent
        .orch(&["job", "status", "hello"], Duration::from_secs(20))
        .ok();
    for id in &ids {
        assert!(status.stdout.contains(&id[..8]), "{}", status.stdout);
    }
    assert!(status.stdout.contains("running"), "{}", status.stdout);
    let list = agent.orch(&["job", "status"], Duration::from_secs(20)).ok();
    assert!(list.stdout.contains("hello"), "{}", list.stdout);

    // While running, the tasks have processes and cgroups the harness can see.
    assert!(!task_pids(None, &ids).is_empty(), "no task processes found");
    assert!(!alloc_cgroups(&ids).is_empty(), "no task cgroups found");

    agent
        .orch(&["job", "stop", "hello"], Duration::from_secs(60))
        .ok();
    wait_for(
        Duration::from_secs(30),
        "the tasks' processes and cgroups to be gone",
        || (task_pids(None, &ids).is_empty() && alloc_cgroups(&ids).is_empty()).then_some(()),
    );
}
