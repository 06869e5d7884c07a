//! `orch node eligibility`: an ineligible node gets no new placements (the job waits,
//! explained), and making it eligible again places the waiting job there.

mod common;

use std::time::Duration;

use common::*;

const ONE: &str = r#"id = "waiting"

[group.web]
count = 1

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sleep", args = ["600"] }
resources = { cpu = 50, memory = 16 }
"#;

#[test]
fn an_ineligible_node_gets_nothing_new_until_it_is_eligible_again_as_root() {
    if skip_unless_root("an_ineligible_node_gets_nothing_new_until_it_is_eligible_again_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let node_id = agent.get("/v1/nodes").unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let off = agent
        .orch(
            &["node", "eligibility", "--disable", &node_id[..8]],
            Duration::from_secs(20),
        )
        .ok();
    assert!(off.stdout.contains("is now ineligible"), "{}", off.stdout);
    let again = agent
        .orch(
            &["node", "eligibility", "--disable", &node_id[..8]],
            Duration::from_secs(20),
        )
        .ok();
    assert!(
        again.stdout.contains("was already ineligible"),
        "{}",
        again.stdout
    );

    let file = ws.write("waiting.toml", ONE);
    let run = agent.orch(
        &["job", "run", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Placement failed"), "{}", run.stdout);
    assert!(agent.job_allocs("waiting").is_empty());

    agent
        .orch(
            &["node", "eligibility", "--enable", &node_id],
            Duration::from_secs(20),
        )
        .ok();
    let alloc = wait_for(
        Duration::from_secs(60),
        "the waiting job to run once the node is eligible",
        || {
            agent
                .job_allocs("waiting")
                .into_iter()
                .find(|a| a["client_status"] == "running")
        },
    );
    assert_eq!(alloc["node_id"], node_id.as_str(), "{alloc:#}");
    agent
        .orch(&["job", "stop", "waiting"], Duration::from_secs(60))
        .ok();
}

#[test]
fn eligibility_of_an_unknown_node_is_an_error() {
    let ws = Workspace::new();
    let agent = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let out = agent.orch(
        &["node", "eligibility", "--enable", "ffffffff"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let usage = agent.orch(
        &["node", "eligibility", "ffffffff"],
        Duration::from_secs(20),
    );
    assert_eq!(
        usage.code(),
        2,
        "neither --enable nor --disable is bad usage"
    );
}
