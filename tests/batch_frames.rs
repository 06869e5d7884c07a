//! The INTERFACE.md batch example (jobspecs/frames.toml): all 20 allocations end
//! `complete` and `orch job run` returns 0.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn frames_batch_job_completes_all_twenty_allocations_as_root() {
    if skip_unless_root("frames_batch_job_completes_all_twenty_allocations_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    agent.job_run("frames.toml", Duration::from_secs(240));
    let allocs = agent.job_allocs("frames");
    assert_eq!(allocs.len(), 20, "{allocs:#?}");
    assert!(
        allocs.iter().all(|a| a["client_status"] == "complete"),
        "{allocs:#?}"
    );

    let one = allocs[0]["id"].as_str().unwrap();
    let logs = agent
        .orch(&["alloc", "logs", &one[..8]], Duration::from_secs(20))
        .ok();
    assert!(logs.stdout.contains("rendering frame"), "{}", logs.stdout);
}
