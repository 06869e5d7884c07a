//! `orch operator snapshot save|restore` on real agents: a restore brings back the
//! jobs and allocations of the save (waking blocking queries), the agent schedules new
//! work afterwards and comes back from a SIGKILL with the restored state; another
//! agent restores the same file; bad files are a 400 that changes nothing.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const SERVER_ONLY: &str = "[server]\nenabled = true\n";

fn spec(id: &str, count: u32) -> String {
    format!(
        r#"id = "{id}"
[group.web]
count = {count}
[group.web.task.server]
driver = "raw_exec"
config = {{ command = "/bin/sleep", args = ["600"] }}
resources = {{ cpu = 20, memory = 16 }}
"#
    )
}

fn run_detached(agent: &Agent, ws: &Workspace, id: &str, count: u32) {
    let file = ws.write(&format!("{id}.toml"), &spec(id, count));
    agent
        .orch(
            &["job", "run", "--detach", file.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
}

fn job_ids(agent: &Agent) -> Vec<String> {
    agent
        .get("/v1/jobs")
        .expect("GET /v1/jobs")
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

fn alloc_ids(agent: &Agent, job: &str) -> BTreeSet<String> {
    agent
        .job_allocs(job)
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

fn wait_running(agent: &Agent, job: &str, n: usize) {
    wait_for(
        Duration::from_secs(60),
        &format!("{job} running {n}"),
        || {
            let running = agent
                .job_allocs(job)
                .iter()
                .filter(|a| a["client_status"] == "running")
                .count();
            (running >= n).then_some(())
        },
    );
}

/// `PUT /v1/operator/snapshot` with `body`: the status and the JSON answer.
fn put_snapshot(agent: &Agent, body: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = http()
        .put(format!("{}/v1/operator/snapshot", agent.addr))
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .expect("PUT /v1/operator/snapshot");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

/// `GET /v1/operator/snapshot`: the file and its `X-Orch-Index`.
fn get_snapshot(agent: &Agent) -> (Vec<u8>, u64) {
    let resp = http()
        .get(format!("{}/v1/operator/snapshot", agent.addr))
        .send()
        .expect("GET /v1/operator/snapshot");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let index = resp.headers()["x-orch-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (resp.bytes().expect("body").to_vec(), index)
}

#[test]
fn a_restore_brings_back_the_saved_jobs_and_the_agent_keeps_scheduling_as_root() {
    if skip_unless_root(
        "a_restore_brings_back_the_saved_jobs_and_the_agent_keeps_scheduling_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let mut agent = Agent::dev(&ws, "dev");
    run_detached(&agent, &ws, "alpha", 1);
    run_detached(&agent, &ws, "beta", 2);
    wait_running(&agent, "alpha", 1);
    wait_running(&agent, "beta", 2);

    let file = ws.path("backup.snap");
    let saved = agent
        .orch(
            &["operator", "snapshot", "save", file.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
    assert!(saved.stdout.contains("Index"), "{}", saved.stdout);
    let (alpha, beta) = (alloc_ids(&agent, "alpha"), alloc_ids(&agent, "beta"));

    // After the save: alpha purged, gamma registered.
    agent
        .orch(
            &["job", "stop", "--purge", "alpha"],
            Duration::from_secs(30),
        )
        .ok();
    run_detached(&agent, &ws, "gamma", 1);
    wait_running(&agent, "gamma", 1);
    assert_eq!(job_ids(&agent), ["beta", "gamma"]);

    // A blocking query on the jobs, waiting when the restore lands.
    let jobs_index: u64 = http()
        .get(format!("{}/v1/jobs", agent.addr))
        .send()
        .unwrap()
        .headers()["x-orch-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let waiter = {
        let url = format!("{}/v1/jobs?index={jobs_index}&wait=60s", agent.addr);
        std::thread::spawn(move || {
            let started = Instant::now();
            let resp = http().get(url).send().expect("blocking GET /v1/jobs");
            let index: u64 = resp.headers()["x-orch-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let jobs: serde_json::Value = resp.json().unwrap();
            (started.elapsed(), index, jobs)
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let restored = agent
        .orch(
            &["operator", "snapshot", "restore", file.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
    assert!(restored.stdout.contains("->"), "{}", restored.stdout);
    assert_eq!(job_ids(&agent), ["alpha", "beta"]);
    assert!(alloc_ids(&agent, "gamma").is_empty());
    assert!(alpha.is_subset(&alloc_ids(&agent, "alpha")));
    assert_eq!(
        alloc_ids(&agent, "beta"),
        beta,
        "beta's allocations as saved"
    );

    let (waited, index, jobs) = waiter.join().expect("the blocking query");
    assert!(
        waited < Duration::from_secs(30),
        "woken by the restore: {waited:?}"
    );
    assert!(index > jobs_index, "{index} > {jobs_index}");
    let ids: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);

    // The client reconciles: gamma's task is stopped, alpha runs again (its old
    // allocation ended here, so it is replaced), beta keeps running as it was.
    wait_running(&agent, "alpha", 1);
    wait_running(&agent, "beta", 2);
    // The broker works on the restored state.
    run_detached(&agent, &ws, "delta", 1);
    wait_running(&agent, "delta", 1);

    agent.kill9();
    agent.restart();
    assert_eq!(
        job_ids(&agent),
        ["alpha", "beta", "delta"],
        "{}",
        agent.log()
    );
    assert!(alloc_ids(&agent, "gamma").is_empty());
    cleanup_tasks(&agent.data_dir);
}

#[test]
fn a_fresh_agent_restores_another_agents_snapshot() {
    let ws = Workspace::new();
    let first = Agent::with_config(&ws, "first", SERVER_ONLY);
    run_detached(&first, &ws, "alpha", 1);
    run_detached(&first, &ws, "beta", 3);
    let (bytes, index) = get_snapshot(&first);
    assert!(index > 0);
    let file = ws.path("first.snap");
    std::fs::write(&file, &bytes).unwrap();

    let second = Agent::with_config(&ws, "second", SERVER_ONLY);
    run_detached(&second, &ws, "other", 1);
    let out = second
        .orch(
            &[
                "--json",
                "operator",
                "snapshot",
                "restore",
                file.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        )
        .ok();
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON answer");
    assert_eq!(answer["snapshot_index"], index);
    assert_eq!(answer["size_bytes"], bytes.len() as u64);
    assert_eq!(job_ids(&second), ["alpha", "beta"]);
    let job = second.get("/v1/job/beta").expect("beta");
    assert_eq!(job["groups"][0]["count"], 3);
    // Its evaluations were restored into its broker: with no client they block.
    wait_for(Duration::from_secs(30), "beta's evaluation handled", || {
        let evals = second.get("/v1/job/beta/evaluations")?;
        evals
            .as_array()?
            .iter()
            .any(|e| e["status"] == "blocked" || e["status"] == "complete")
            .then_some(())
    });
}

#[test]
fn bad_snapshot_files_are_refused_with_a_400_and_change_nothing() {
    let ws = Workspace::new();
    let agent = Agent::with_config(
        &ws,
        "server",
        "[server]\nenabled = true\nmax_snapshot_bytes = 1048576\n",
    );
    run_detached(&agent, &ws, "alpha", 1);
    let (good, _) = get_snapshot(&agent);
    let before = agent.get("/v1/jobs").unwrap();

    let mut newer = good.clone();
    // The header's user_version (offset 60): a schema this binary does not know.
    newer[60..64].copy_from_slice(&999u32.to_be_bytes());
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage",
            b"hello, this is not a database".repeat(20),
            "not a SQLite database",
        ),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("newer schema", newer, "newer than this binary knows"),
        ("empty", Vec::new(), "empty"),
    ];
    for (what, body, why) in cases {
        let (status, answer) = put_snapshot(&agent, body);
        assert_eq!(status, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{what}: {error}");
        assert!(
            !error.contains("snapshot-upload"),
            "{what}: no internal path: {error}"
        );
        assert_eq!(agent.get("/v1/jobs").unwrap(), before, "{what}: unchanged");
    }

    // Over `max_snapshot_bytes`: 413, also unchanged.
    let (status, answer) = put_snapshot(&agent, vec![0u8; 2 * 1048576]);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(agent.get("/v1/jobs").unwrap(), before);
    // Only application/octet-stream is taken for a snapshot.
    let resp = http()
        .put(format!("{}/v1/operator/snapshot", agent.addr))
        .header("Content-Type", "text/plain")
        .body(good)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let leftovers: Vec<_> = std::fs::read_dir(agent.data_dir.join("server"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
