//! `orch job plan` and `orch job run --check-index` against real agents: the dry run
//! shows the diff, the scheduler's verdict and the job modify index without changing
//! anything, and a stale `--check-index` is refused.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn job(agent: &Agent, id: &str) -> serde_json::Value {
    agent
        .get(&format!("/v1/job/{id}"))
        .unwrap_or_else(|| panic!("job {id} not readable"))
}

#[test]
fn planning_a_new_job_shows_it_added_explains_failures_and_writes_nothing() {
    let ws = Workspace::new();
    // A server without clients: nothing can be placed.
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let spec = jobspec("hello.toml");
    let plan = server.orch(&["job", "plan", spec.to_str().unwrap()], T);
    assert_eq!(plan.code(), 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("+ Job: \"hello\""), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("+ Task Group: \"web\""),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("Scheduler dry-run:"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("WARNING: Failed to place all allocations."),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("no nodes"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("Job Modify Index: 0"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("orch job run --check-index 0 "),
        "{}",
        plan.stdout
    );
    assert_eq!(
        server.get("/v1/jobs"),
        Some(serde_json::json!([])),
        "a plan registers nothing"
    );
    assert_eq!(server.get("/v1/evaluations"), Some(serde_json::json!([])));
}

#[test]
fn planning_an_invalid_spec_exits_255() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let bad = ws.write("bad.toml", "id = \"x\"\n[group.web]\ncount = -1\n");
    let plan = server.orch(&["job", "plan", bad.to_str().unwrap()], T);
    assert_eq!(plan.code(), 255, "{}\n{}", plan.stdout, plan.stderr);
}

#[test]
fn a_stale_check_index_is_refused_with_exit_1_and_changes_nothing() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let spec = jobspec("hello.toml");
    server
        .orch(&["job", "run", "--detach", spec.to_str().unwrap()], T)
        .ok();
    let registered = job(&server, "hello");
    let index = registered["job_modify_index"].as_u64().expect("index");

    let text = std::fs::read_to_string(&spec)
        .expect("hello.toml")
        .replace("count = 2", "count = 3");
    let changed = ws.write("hello3.toml", &text);
    let stale = (index + 100).to_string();
    let refused = server.orch(
        &[
            "job",
            "run",
            "--detach",
            "--check-index",
            &stale,
            changed.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(refused.code(), 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(&index.to_string()),
        "the error names the current index: {}",
        refused.stderr
    );
    let after = job(&server, "hello");
    assert_eq!(after["version"], 0);
    assert_eq!(after["groups"][0]["count"], 2);
    assert_eq!(after["job_modify_index"], index);

    // The index the plan printed is the one that works.
    let plan = server.orch(&["job", "plan", changed.to_str().unwrap()], T);
    assert!(
        plan.stdout.contains(&format!("Job Modify Index: {index}")),
        "{}",
        plan.stdout
    );
    server
        .orch(
            &[
                "job",
                "run",
                "--detach",
                "--check-index",
                &index.to_string(),
                changed.to_str().unwrap(),
            ],
            T,
        )
        .ok();
    let after = job(&server, "hello");
    assert_eq!(after["version"], 1);
    assert_eq!(after["groups"][0]["count"], 3);
}

#[test]
fn planning_a_running_job_shows_no_change_then_the_diff_of_an_edit_as_root() {
    if skip_unless_root("planning_a_running_job_shows_no_change_then_the_diff_of_an_edit_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = jobspec("hello.toml");
    let run = agent.orch(
        &["job", "run", spec.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    let index = job(&agent, "hello")["job_modify_index"]
        .as_u64()
        .expect("index");

    let same = agent.orch(&["job", "plan", spec.to_str().unwrap()], T);
    assert_eq!(same.code(), 0, "{}\n{}", same.stdout, same.stderr);
    assert!(same.stdout.contains("\nJob: \"hello\""), "{}", same.stdout);
    assert!(
        same.stdout.contains("All tasks successfully allocated."),
        "{}",
        same.stdout
    );

    let text = std::fs::read_to_string(&spec)
        .expect("hello.toml")
        .replace("count = 2", "count = 3");
    let changed = ws.write("hello3.toml", &text);
    let before = agent.get("/v1/allocations").expect("allocations");
    let plan = agent.orch(&["job", "plan", changed.to_str().unwrap()], T);
    assert_eq!(plan.code(), 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("+/- Job: \"hello\""),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("+/- count: \"2\" => \"3\""),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("1 create"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("All tasks successfully allocated."),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!("Job Modify Index: {index}")),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("orch job run --check-index {index} ")),
        "{}",
        plan.stdout
    );
    assert_eq!(
        job(&agent, "hello")["version"],
        0,
        "a plan registers nothing"
    );
    assert_eq!(agent.get("/v1/allocations"), Some(before));
}

#[test]
fn scaling_a_group_places_the_new_instances_as_root() {
    if skip_unless_root("scaling_a_group_places_the_new_instances_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = jobspec("hello.toml");
    agent
        .orch(
            &["job", "run", spec.to_str().unwrap()],
            Duration::from_secs(120),
        )
        .ok();

    let scale = agent.orch(
        &["job", "scale", "hello", "web", "3"],
        Duration::from_secs(120),
    );
    assert_eq!(scale.code(), 0, "{}\n{}", scale.stdout, scale.stderr);
    assert!(
        scale.stdout.contains("3 of 3 allocations running"),
        "{}",
        scale.stdout
    );
    let j = job(&agent, "hello");
    assert_eq!(j["version"], 1);
    assert_eq!(j["groups"][0]["count"], 3);
    let running = agent
        .job_allocs("hello")
        .into_iter()
        .filter(|a| a["desired_status"] == "run" && a["client_status"] == "running")
        .count();
    assert_eq!(running, 3);

    let unknown = agent.orch(&["job", "scale", "hello", "db", "3"], T);
    assert_eq!(unknown.code(), 1, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no group \"db\""),
        "{}",
        unknown.stderr
    );
    let negative = agent.orch(&["job", "scale", "hello", "web", "-1"], T);
    assert_eq!(negative.code(), 1, "{}", negative.stderr);
    assert_eq!(job(&agent, "hello")["version"], 1);
}

#[test]
fn the_scheduler_configuration_round_trips_through_the_cli() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let get = server
        .orch(&["operator", "scheduler", "get-config"], T)
        .ok();
    assert!(get.stdout.contains("binpack"), "{}", get.stdout);
    server
        .orch(
            &[
                "operator",
                "scheduler",
                "set-config",
                "--scheduler-algorithm",
                "spread",
                "--preempt-batch-scheduler",
                "true",
            ],
            T,
        )
        .ok();
    let get = server
        .orch(&["operator", "scheduler", "get-config"], T)
        .ok();
    assert!(get.stdout.contains("spread"), "{}", get.stdout);
    let json = server
        .orch(&["--json", "operator", "scheduler", "get-config"], T)
        .ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["scheduler_algorithm"], "spread");
    assert_eq!(v["preemption_config"]["batch_scheduler_enabled"], true);
    assert_eq!(
        v["preemption_config"]["system_scheduler_enabled"], true,
        "settings not given keep their value"
    );
    let bad = server.orch(
        &[
            "operator",
            "scheduler",
            "set-config",
            "--scheduler-algorithm",
            "random",
        ],
        T,
    );
    assert_eq!(bad.code(), 2, "{}", bad.stderr);
}
