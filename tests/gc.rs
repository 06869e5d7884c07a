//! Garbage collection end to end (`orch system gc`): a stopped service job and a
//! finished batch job go with their evaluations and allocations, and the client
//! removes the collected allocations' dirs; a running service job and a batch job
//! still running (its finished allocation included) are untouched.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const SERVICE: &str = r#"
id = "ID"
type = "service"
[group.g]
count = 1
[group.g.task.t]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "while true; do sleep 1; done"] }
resources = { cpu = 50, memory = 16 }
"#;

const BATCH_DONE: &str = r#"
id = "frames"
type = "batch"
[group.render]
count = 2
[group.render.task.frame]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo frame $ORCH_ALLOC_INDEX"] }
resources = { cpu = 50, memory = 16 }
"#;

// Instance 0 finishes at once, instance 1 keeps running: the job is live.
const BATCH_LIVE: &str = r#"
id = "render"
type = "batch"
[group.render]
count = 2
[group.render.task.frame]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "if [ $ORCH_ALLOC_INDEX = 0 ]; then exit 0; fi; while true; do sleep 1; done"] }
resources = { cpu = 50, memory = 16 }
"#;

fn run_spec(agent: &Agent, ws: &Workspace, name: &str, text: &str) {
    let spec = ws.write(&format!("{name}.toml"), text);
    agent
        .orch(
            &["job", "run", "--detach", spec.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
}

fn ids_of(allocs: &[serde_json::Value]) -> Vec<String> {
    allocs
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

fn statuses(agent: &Agent, job: &str) -> Vec<String> {
    let mut s: Vec<String> = agent
        .job_allocs(job)
        .iter()
        .map(|a| a["client_status"].as_str().unwrap_or("").to_string())
        .collect();
    s.sort();
    s
}

fn alloc_dir(agent: &Agent, id: &str) -> std::path::PathBuf {
    agent.data_dir.join("alloc").join(id)
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn system_gc_collects_dead_jobs_and_the_client_removes_their_dirs_as_root() {
    if skip_unless_root("system_gc_collects_dead_jobs_and_the_client_removes_their_dirs_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);

    run_spec(&agent, &ws, "frames", BATCH_DONE);
    run_spec(&agent, &ws, "render", BATCH_LIVE);
    run_spec(&agent, &ws, "web", &SERVICE.replace("ID", "web"));
    run_spec(&agent, &ws, "keep", &SERVICE.replace("ID", "keep"));
    wait_for(Duration::from_secs(60), "every job to settle", || {
        let frames_dead = agent.get("/v1/job/frames")?["status"] == "dead";
        (frames_dead
            && statuses(&agent, "frames") == ["complete", "complete"]
            && statuses(&agent, "render") == ["complete", "running"]
            && statuses(&agent, "web") == ["running"]
            && statuses(&agent, "keep") == ["running"])
        .then_some(())
    });

    agent
        .orch(&["job", "stop", "web"], Duration::from_secs(60))
        .ok();
    wait_for(
        Duration::from_secs(60),
        "web's allocation to finish",
        || (statuses(&agent, "web") == ["complete"]).then_some(()),
    );

    let collected_allocs: Vec<String> = ids_of(&agent.job_allocs("web"))
        .into_iter()
        .chain(ids_of(&agent.job_allocs("frames")))
        .collect();
    let collected_evals: Vec<String> = ["web", "frames"]
        .iter()
        .flat_map(|j| {
            agent
                .get(&format!("/v1/job/{j}/evaluations"))
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!collected_evals.is_empty());
    let kept_allocs: Vec<String> = ids_of(&agent.job_allocs("render"))
        .into_iter()
        .chain(ids_of(&agent.job_allocs("keep")))
        .collect();
    for id in collected_allocs.iter().chain(&kept_allocs) {
        assert!(
            exists(&alloc_dir(&agent, id)),
            "alloc dir of {id} before gc"
        );
    }

    let out = agent
        .orch(&["--json", "system", "gc"], Duration::from_secs(60))
        .ok();
    let counts: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON counts");
    eprintln!("orch system gc: {counts}");
    assert_eq!(counts["jobs"], 2, "{counts}");
    assert_eq!(counts["allocs"], 3, "{counts}");
    assert!(
        counts["evals"].as_u64().unwrap() >= collected_evals.len() as u64,
        "{counts}"
    );

    // Gone from the API.
    for job in ["web", "frames"] {
        assert!(agent.get(&format!("/v1/job/{job}")).is_none(), "job {job}");
    }
    for id in &collected_allocs {
        assert!(
            agent.get(&format!("/v1/allocation/{id}")).is_none(),
            "alloc {id}"
        );
    }
    for id in &collected_evals {
        assert!(
            agent.get(&format!("/v1/evaluation/{id}")).is_none(),
            "eval {id}"
        );
    }
    // Running work, and the finished allocation of a live batch job, stay.
    assert_eq!(statuses(&agent, "keep"), ["running"]);
    assert_eq!(statuses(&agent, "render"), ["complete", "running"]);
    for id in &kept_allocs {
        assert!(
            agent.get(&format!("/v1/allocation/{id}")).is_some(),
            "alloc {id}"
        );
    }

    // The client removes the collected allocations' dirs, and only those.
    wait_for(
        Duration::from_secs(30),
        "the collected alloc dirs to go",
        || {
            collected_allocs
                .iter()
                .all(|id| !exists(&alloc_dir(&agent, id)))
                .then_some(())
        },
    );
    for id in &kept_allocs {
        assert!(exists(&alloc_dir(&agent, id)), "alloc dir of {id} after gc");
    }

    // Nothing left to collect: a table of zeros.
    let again = agent.orch(&["system", "gc"], Duration::from_secs(60)).ok();
    let lines: Vec<&str> = again.stdout.lines().collect();
    assert!(lines[0].starts_with("JOBS"), "{}", again.stdout);
    assert_eq!(
        lines[1].split_whitespace().take(4).collect::<Vec<_>>(),
        ["0", "0", "0", "0"]
    );
}

#[test]
fn system_gc_against_an_unreachable_server_exits_one() {
    let out = orch_cmd(
        &["--address", "http://127.0.0.1:9", "system", "gc"],
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("Error"), "{}", out.stderr);
}

#[test]
fn an_unknown_gc_setting_is_refused_with_its_line() {
    let ws = Workspace::new();
    let cfg = ws.write(
        "bad.toml",
        "[server]\nenabled = true\ngc_interval = \"5m\"\njob_gc_treshold = \"1h\"\n",
    );
    let out = orch_cmd(
        &["agent", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("job_gc_treshold"), "{}", out.stderr);
    assert!(out.stderr.contains("line 4"), "{}", out.stderr);
}
