//! Health checks end to end on a dev agent (jobspecs/web-checks.toml): a Python web
//! server's HTTP, TCP and script checks, run by the client, become `passing` on the
//! server's allocation and in `orch alloc status` (table and `--json`).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn checks_of_a_web_server_pass_and_show_in_alloc_status_as_root() {
    if skip_unless_root("checks_of_a_web_server_pass_and_show_in_alloc_status_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    agent.job_run("web-checks.toml", Duration::from_secs(120));
    let alloc = wait_for(Duration::from_secs(30), "a running allocation", || {
        agent
            .job_allocs("web-checks")
            .into_iter()
            .find(|a| a["client_status"] == "running")
    });
    let id = alloc["id"].as_str().unwrap().to_string();

    // The server's allocation carries what the client reported.
    let stored = wait_for(
        Duration::from_secs(30),
        "every check passing on the server",
        || {
            let a = agent.get(&format!("/v1/allocation/{id}"))?;
            let checks = a["checks"].as_object()?.clone();
            (checks.len() == 3 && checks.values().all(|c| c["status"] == "passing"))
                .then_some(checks)
        },
    );
    assert_eq!(stored["web/alive"]["type"], "http");
    assert_eq!(stored["web/alive"]["task"], "server");
    assert!(
        stored["web/alive"]["output"]
            .as_str()
            .unwrap()
            .contains("200 OK"),
        "{stored:#?}"
    );
    assert_eq!(stored["web/listening"]["type"], "tcp");
    assert!(
        stored["web/files"]["output"]
            .as_str()
            .unwrap()
            .contains(&id),
        "the script ran in the task's directory: {stored:#?}"
    );

    let v = agent.alloc_status_json(&id[..8]);
    assert_eq!(v["checks"]["web/alive"]["status"], "passing", "{v:#?}");
    assert!(v["checks"]["web/alive"]["last_run_ms"].as_u64().unwrap() > 0);

    let text = agent
        .orch(&["alloc", "status", &id[..8]], Duration::from_secs(20))
        .ok();
    assert!(text.stdout.contains("\nChecks\n"), "{}", text.stdout);
    let row = text
        .stdout
        .lines()
        .find(|l| l.starts_with("web") && l.contains("alive"))
        .unwrap_or_else(|| panic!("no check row:\n{}", text.stdout));
    assert!(row.contains("http") && row.contains("passing"), "{row}");
    assert!(row.contains("200 OK"), "{row}");

    let stop = agent.orch(&["job", "stop", "web-checks"], Duration::from_secs(60));
    assert_eq!(stop.code(), 0, "{}\n{}", stop.stdout, stop.stderr);
    wait_for(Duration::from_secs(30), "the allocation to stop", || {
        agent
            .get(&format!("/v1/allocation/{id}"))
            .filter(|a| a["client_status"] == "complete")
    });
}
