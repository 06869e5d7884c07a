//! A task that allocates more memory than its limit (jobspecs/oom.toml) is killed by
//! the kernel, and the allocation reports an out-of-memory kill.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn task_over_its_memory_limit_is_reported_as_oom_killed_as_root() {
    if skip_unless_root("task_over_its_memory_limit_is_reported_as_oom_killed_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = jobspec("oom.toml");
    let job_id = {
        let text = std::fs::read_to_string(&spec).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    agent
        .orch(
            &["job", "run", "--detach", spec.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
    let alloc = wait_for(Duration::from_secs(120), "an OOM-killed task event", || {
        agent.job_allocs(&job_id).into_iter().find(|a| {
            a["task_states"]
                .as_object()
                .map(|ts| {
                    ts.values().any(|t| {
                        t["events"]
                            .as_array()
                            .map(|ev| ev.iter().any(|e| e["oom_killed"] == true))
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false)
        })
    });
    let id = alloc["id"].as_str().unwrap();
    let status = agent
        .orch(&["alloc", "status", &id[..8]], Duration::from_secs(20))
        .ok();
    assert!(status.stdout.contains("OOM"), "{}", status.stdout);
    assert!(status.stdout.contains("out of memory"), "{}", status.stdout);
    assert!(
        status.stdout.contains("OOM killed (limit 16 MiB)"),
        "{}",
        status.stdout
    );
    // The usage table keeps the last sample taken before the cgroup was removed.
    assert!(
        status
            .stdout
            .contains("Resource Usage (last sample before the task stopped)"),
        "{}",
        status.stdout
    );
    let v = agent.alloc_status_json(&id[..8]);
    let eat = &v["resource_usage"]["tasks"]["eat"];
    assert_eq!(eat["running"], false, "{v:#}");
    assert_eq!(eat["memory_limit_bytes"], 16 << 20, "{v:#}");
    assert!(
        eat["memory"]["peak_bytes"].as_u64().unwrap() > 8 << 20,
        "{v:#}"
    );

    // Once the restart policy gives up, the allocation is failed.
    wait_for(
        Duration::from_secs(120),
        "the OOM-killed allocation to fail",
        || {
            let a = agent.get(&format!("/v1/allocation/{id}"))?;
            (a["client_status"] == "failed").then_some(())
        },
    );
}
