//! A job's history stays bounded, end to end through the `orch` binary and the HTTP
//! API: a job registered ten times keeps six versions (a revert to a pruned one is a
//! 400 that says so), the collector trims the command log and each job's terminal
//! evaluations on its own schedule, and a crash loop whose failed allocations are
//! collected still spends its reschedule attempts (each replacement carries them).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// Job "web" with `count` instances: a new spec, so a new version, per count.
fn web(count: u32) -> String {
    format!(
        "id = \"web\"\n[group.web]\ncount = {count}\n[group.web.task.t]\ndriver = \"raw_exec\"\n\
         config = {{ command = \"/bin/sleep\", args = [\"3600\"] }}\n\
         resources = {{ cpu = 50, memory = 16 }}\n"
    )
}

/// `POST /v1/jobs` with a TOML body; the status must be 200.
fn register(agent: &Agent, spec: &str) {
    let resp = http()
        .post(format!("{}/v1/jobs", agent.addr))
        .header("Content-Type", "application/toml")
        .body(spec.to_string())
        .send()
        .expect("POST /v1/jobs");
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

fn versions(agent: &Agent) -> Vec<u64> {
    agent
        .get("/v1/job/web/versions")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect()
}

#[test]
fn a_job_registered_ten_times_keeps_six_versions_and_a_revert_to_a_pruned_one_is_a_400() {
    let ws = Workspace::new();
    let agent = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    for count in 1..=10 {
        register(&agent, &web(count));
    }
    assert_eq!(versions(&agent), [9, 8, 7, 6, 5, 4]);

    let resp = http()
        .post(format!("{}/v1/job/web/revert", agent.addr))
        .header("Content-Type", "application/json")
        .body(r#"{"version": 2}"#)
        .send()
        .expect("POST revert");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().expect("a JSON error");
    let error = body["error"].as_str().expect("an error text");
    assert!(
        error.contains("version 2 of job \"web\" was pruned")
            && error.contains("kept: 9, 8, 7, 6, 5, 4"),
        "{error}"
    );

    let revert = agent.orch(
        &["job", "revert", "-d", "web", "3"],
        Duration::from_secs(30),
    );
    assert_eq!(revert.code(), 1, "{}\n{}", revert.stdout, revert.stderr);
    assert!(revert.stderr.contains("was pruned"), "{}", revert.stderr);
    let history = agent
        .orch(&["job", "history", "web"], Duration::from_secs(30))
        .ok();
    let rows: Vec<&str> = history.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{}", history.stdout);
    assert!(
        rows[5].contains("(previous version no longer kept)"),
        "{}",
        history.stdout
    );
    let pruned = agent.orch(
        &["job", "history", "--version", "1", "web"],
        Duration::from_secs(30),
    );
    assert!(pruned.stderr.contains("was pruned"), "{}", pruned.stderr);

    // A kept version reverts as before: a new version, still six kept.
    agent
        .orch(
            &["job", "revert", "-d", "web", "4"],
            Duration::from_secs(30),
        )
        .ok();
    assert_eq!(versions(&agent), [10, 9, 8, 7, 6, 5]);
}

/// The terminal evaluations of job "web".
fn terminal_evals(agent: &Agent) -> usize {
    agent
        .get("/v1/job/web/evaluations")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            matches!(
                e["status"].as_str(),
                Some("complete" | "failed" | "canceled")
            )
        })
        .count()
}

/// `(entries, first index)` of the server's command log, read from its database.
fn command_log(agent: &Agent) -> (u64, u64) {
    let db = rusqlite::Connection::open(agent.data_dir.join("server/state.db")).expect("state.db");
    db.query_row(
        "SELECT COUNT(*), COALESCE(MIN(idx), 0) FROM command_log",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .expect("reading the command log")
}

#[test]
fn the_collector_trims_the_command_log_and_each_jobs_terminal_evaluations() {
    let ws = Workspace::new();
    // No client: every registration's evaluation fails to place and leaves a blocked
    // one, which the next registration's evaluation replaces.
    let agent = Agent::with_config(
        &ws,
        "server",
        "[server]\nenabled = true\ngc_interval = \"1s\"\ncommand_log_retain = 20\n\
         gc_max_terminal_evals_per_job = 3\n",
    );
    for count in 1..=15 {
        register(&agent, &web(count));
    }
    wait_for(
        Duration::from_secs(30),
        "the collector to keep 3 terminal evaluations of web",
        || (terminal_evals(&agent) == 3).then_some(()),
    );
    let (entries, first) = wait_for(
        Duration::from_secs(30),
        "the collector to trim the command log",
        || {
            let (entries, first) = command_log(&agent);
            (first > 1 && entries <= 25).then_some((entries, first))
        },
    );
    eprintln!("command log: {entries} entries from index {first}");
    // The blocked evaluation is not terminal: it stays whatever the cap.
    let open: Vec<serde_json::Value> = agent
        .get("/v1/job/web/evaluations")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["status"] == "blocked")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    // `orch system gc` reports what it trimmed: the entries written since.
    let out = agent
        .orch(&["--json", "system", "gc"], Duration::from_secs(30))
        .ok();
    let counts: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON counts");
    assert!(counts["log_entries"].is_u64(), "{counts}");
}

const CRASH: &str = r#"
id = "crash"
[group.g]
count = 1
[group.g.restart]
attempts = 0
mode = "fail"
[group.g.reschedule]
attempts = 4
interval = "1h"
delay = "1s"
delay_function = "constant"
[group.g.task.t]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "exit 3"] }
resources = { cpu = 50, memory = 16 }
"#;

#[test]
fn a_crash_loop_spends_its_reschedule_attempts_though_gc_collects_its_failures_as_root() {
    if skip_unless_root(
        "a_crash_loop_spends_its_reschedule_attempts_though_gc_collects_its_failures_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::with_config(
        &ws,
        "dev",
        &format!(
            "[server]\nenabled = true\ngc_max_terminal_allocs_per_job = 1\n{}",
            client_section(&[], 150, "").replace("servers = []\n", "")
        ),
    );
    wait_for_ready_nodes(&agent, 1);
    let spec = ws.write("crash.toml", CRASH);
    agent
        .orch(
            &["job", "run", "--detach", spec.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
    let collect = || {
        let resp = http()
            .put(format!("{}/v1/system/gc", agent.addr))
            .send()
            .expect("PUT /v1/system/gc");
        assert_eq!(resp.status(), 200);
    };
    // Every allocation ever seen; each failed one is collected as soon as it is
    // replaced, so the scheduler cannot find the earlier failures by walking them.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last_failed: Option<serde_json::Value> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        for a in agent.job_allocs("crash") {
            let id = a["id"].as_str().unwrap_or_default().to_string();
            seen.insert(id.clone());
            if a["client_status"] == "failed" {
                if let Some(full) = agent.get(&format!("/v1/allocation/{id}")) {
                    if full["reschedule_tracker"]["failures"] == 4 {
                        last_failed = Some(full);
                    }
                }
            }
        }
        collect();
        if last_failed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = last_failed.unwrap_or_else(|| {
        panic!(
            "no allocation failed after 4 reschedules; seen {seen:?}\nagent log:\n{}",
            agent.log()
        )
    });
    // Attempts used up: nothing more is placed, however long we look.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle {
        for a in agent.job_allocs("crash") {
            seen.insert(a["id"].as_str().unwrap_or_default().to_string());
        }
        collect();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen.len(), 5, "one placement and 4 reschedules: {seen:?}");
    let events = last["reschedule_tracker"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), 4, "{last:#}");
    let left = agent.job_allocs("crash");
    assert_eq!(left.len(), 1, "only the last failure is kept: {left:?}");
    assert_eq!(left[0]["id"], last["id"]);
}
