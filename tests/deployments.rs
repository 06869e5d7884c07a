//! Rolling deployments end to end, on a dev agent with a real HTTP service (python3's
//! http.server, serving its version at /version) behind an `http` health check:
//!
//! - v1 becomes healthy and stable; v2 rolls out one instance at a time while a client
//!   that finds the service through DNS (`dig SRV`) and calls it sees no failed
//!   request; a broken v3 fails its deployment within its deadlines and, with
//!   `auto_revert`, v2's spec runs again as a new version; `orch job history` shows
//!   every version. (The client caches DNS answers for a second, so without the
//!   group's `shutdown_delay` it does see failures: 18 of 404 requests when tried.)
//! - a canary runs beside the old instances (with its `canary_tags` in DNS) until
//!   `orch deployment promote` rolls out the rest; `orch deployment fail` on the next
//!   canary rolls back.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The service job at `version` (the text it serves), `canary` canaries, and `broken`:
/// its instances never write /version, so their check never passes.
fn spec(version: &str, canary: u32, broken: bool, healthy_deadline: &str) -> String {
    format!(
        r#"
id = "api"

[update]
max_parallel = 1
min_healthy_time = "2s"
healthy_deadline = "{healthy_deadline}"
progress_deadline = "2m"
auto_revert = true
canary = {canary}

[group.api]
count = 3
shutdown_delay = "2s"

[group.api.network.port.http]

[[group.api.service]]
name = "api"
port = "http"
tags = ["{version}"]
canary_tags = ["canary"]
check = [{{ name = "version", type = "http", path = "/version", interval = "1s", timeout = "1s" }}]

[group.api.task.app]
driver = "raw_exec"
config = {{ command = "/bin/sh", args = ["-c", "mkdir -p $ORCH_TASK_DIR/www && cd $ORCH_TASK_DIR/www && if [ -z \"$BROKEN\" ]; then echo $VERSION > version; fi && exec /usr/bin/python3 -m http.server ${{ORCH_PORT_http}}"] }}
resources = {{ cpu = 50, memory = 64 }}
env = {{ VERSION = "{version}", BROKEN = "{broken}" }}
"#,
        broken = if broken { "1" } else { "" },
    )
}

fn latest_deployment(agent: &Agent) -> Value {
    agent
        .get("/v1/job/api/deployment")
        .expect("the job has a deployment")
}

/// Waits until the job's newest deployment is for `version` and has `status`.
fn wait_for_deployment(agent: &Agent, version: u64, status: &str) -> Value {
    wait_for(
        Duration::from_secs(120),
        &format!("a {status} deployment of version {version}"),
        || {
            let d = agent.get("/v1/job/api/deployment")?;
            (d["job_version"] == version && d["status"] == status).then_some(d)
        },
    )
}

/// The job's allocations that the server wants running and the client runs.
fn running(agent: &Agent) -> Vec<Value> {
    agent
        .job_allocs("api")
        .into_iter()
        .filter(|a| a["desired_status"] == "run" && a["client_status"] == "running")
        .collect()
}

fn versions_of(allocs: &[Value]) -> Vec<u64> {
    let mut v: Vec<u64> = allocs
        .iter()
        .map(|a| a["job_version"].as_u64().unwrap())
        .collect();
    v.sort();
    v
}

/// `GET http://127.0.0.1:PORT/version`: the body, or why the request failed.
fn call(port: u16) -> Result<String, String> {
    let resp = http()
        .get(format!("http://127.0.0.1:{port}/version"))
        .timeout(Duration::from_secs(3))
        .send()
        .map_err(|e| format!("port {port}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("port {port}: HTTP {}", resp.status()));
    }
    resp.text()
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("port {port}: {e}"))
}

/// The SRV answer's ports (`dig +short` lines `PRIO WEIGHT PORT TARGET`).
fn srv_ports(lines: &[String]) -> Vec<u16> {
    lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

/// A client of the service that finds it through DNS, keeps the answer for
/// `DNS_CACHE` as resolvers and client libraries do (whatever the TTL), calls the
/// instances in turn, and records each answer or failure. Because of the cache, an
/// instance killed the moment it leaves DNS would fail some requests: the group's
/// `shutdown_delay` is what keeps them served.
struct Poller {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Result<String, String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const DNS_CACHE: Duration = Duration::from_millis(1000);

impl Poller {
    fn start(dns: u16) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0usize;
            let mut ports: Vec<u16> = Vec::new();
            let mut resolved_at: Option<std::time::Instant> = None;
            while !s.load(Ordering::SeqCst) {
                if resolved_at.is_none_or(|t| t.elapsed() >= DNS_CACHE) {
                    ports = srv_ports(&dig(dns, "api.service.orch", "SRV", &[]));
                    resolved_at = Some(std::time::Instant::now());
                }
                let result = if ports.is_empty() {
                    Err("DNS listed no instance".to_string())
                } else {
                    n += 1;
                    call(ports[n % ports.len()])
                };
                r.lock().unwrap().push(result);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Poller {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("poller thread");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn skip(test: &str) -> bool {
    if skip_unless_root(test) {
        return true;
    }
    if !have_dig() {
        eprintln!("skipping {test}: `dig` is not installed (apt-get install dnsutils)");
        return true;
    }
    false
}

#[test]
fn a_rolling_update_drops_no_request_and_a_broken_version_is_reverted_as_root() {
    if skip("a_rolling_update_drops_no_request_and_a_broken_version_is_reverted_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let dns = dns_port(&agent);

    // v1 (job version 0): its deployment succeeds and makes the version stable.
    let v1 = ws.write("v1.toml", &spec("v1", 0, false, "30s"));
    let run = agent.job_run_file(&v1, RUN_TIMEOUT);
    assert!(run.stdout.contains("successful"), "{}", run.stdout);
    let d1 = wait_for_deployment(&agent, 0, "successful");
    assert_eq!(d1["task_groups"]["api"]["healthy_allocs"], 3, "{d1}");
    assert_eq!(agent.get("/v1/job/api").unwrap()["stable"], true);
    wait_for(Duration::from_secs(30), "3 instances in DNS", || {
        (srv_ports(&dig(dns, "api.service.orch", "SRV", &[])).len() == 3).then_some(())
    });

    // v2, one instance at a time, under a client that must never see a failure.
    let poller = Poller::start(dns);
    let v2 = ws.write("v2.toml", &spec("v2", 0, false, "30s"));
    agent.job_run_file(&v2, RUN_TIMEOUT);
    wait_for(Duration::from_secs(30), "DNS to list only v2", || {
        let ports = srv_ports(&dig(dns, "v2.api.service.orch", "SRV", &[]));
        (ports.len() == 3).then_some(())
    });
    let seen = poller.finish();
    let failures: Vec<&String> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rollout: {failures:?}",
        failures.len(),
        seen.len()
    );
    let bodies: BTreeSet<&str> = seen.iter().filter_map(|r| r.as_deref().ok()).collect();
    println!(
        "{} requests through DNS during the rollout, none failed; answers: {bodies:?}",
        seen.len()
    );
    assert!(
        bodies.contains("v1") && bodies.contains("v2"),
        "the client saw {bodies:?} in {} requests",
        seen.len()
    );
    let d2 = wait_for_deployment(&agent, 1, "successful");
    assert_eq!(versions_of(&running(&agent)), vec![1, 1, 1]);

    // One at a time: each new instance was placed only after the one before it was
    // healthy (max_parallel = 1).
    let mut placed: Vec<Value> = agent
        .job_allocs("api")
        .into_iter()
        .filter(|a| a["deployment_id"] == d2["id"])
        .collect();
    placed.sort_by_key(|a| a["create_index"].as_u64().unwrap());
    assert_eq!(placed.len(), 3, "{placed:?}");
    for pair in placed.windows(2) {
        let healthy_at = pair[0]["deployment_status"]["timestamp"].as_u64().unwrap();
        let next_created = pair[1]["create_time"].as_u64().unwrap();
        assert!(
            healthy_at <= next_created,
            "{} was placed before {} was healthy",
            pair[1]["name"],
            pair[0]["name"]
        );
    }

    // v3 never becomes healthy: its deployment fails at the healthy deadline and the
    // job goes back to v2's spec as version 3.
    let v3 = ws.write("v3.toml", &spec("v3", 0, true, "6s"));
    let run = agent.orch(&["job", "run", v3.to_str().unwrap()], RUN_TIMEOUT);
    assert_eq!(
        run.code(),
        1,
        "a failed deployment ends `job run` with 1:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("rolling back to job version 1"),
        "{}",
        run.stdout
    );
    let failed = agent
        .get("/v1/job/api/deployments")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job_version"] == 2)
        .cloned()
        .expect("v3's deployment");
    assert_eq!(failed["status"], "failed", "{failed}");
    wait_for_deployment(&agent, 3, "successful");
    wait_for(
        Duration::from_secs(60),
        "v2 to serve on 3 instances",
        || {
            let r = running(&agent);
            (versions_of(&r) == vec![3, 3, 3]).then_some(())
        },
    );
    let ports = srv_ports(&dig(dns, "api.service.orch", "SRV", &[]));
    assert_eq!(ports.len(), 3);
    for port in ports {
        assert_eq!(call(port).as_deref(), Ok("v2"));
    }

    // History: all versions, the broken one not stable.
    let out = agent
        .orch(
            &["job", "history", "--json", "api"],
            Duration::from_secs(20),
        )
        .ok();
    let versions: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let stable: Vec<(u64, bool)> = versions
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["stable"] == true))
        .collect();
    assert_eq!(
        stable,
        vec![(3, true), (2, false), (1, true), (0, true)],
        "{}",
        out.stdout
    );
    let table = agent
        .orch(&["job", "history", "api"], Duration::from_secs(20))
        .ok();
    for v in ["0", "1", "2", "3"] {
        assert!(
            table.stdout.lines().any(|l| l.trim_start().starts_with(v)),
            "version {v} missing from:\n{}",
            table.stdout
        );
    }
}

#[test]
fn a_canary_runs_beside_the_old_version_until_promoted_as_root() {
    if skip("a_canary_runs_beside_the_old_version_until_promoted_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let dns = dns_port(&agent);

    let v1 = ws.write("v1.toml", &spec("v1", 1, false, "30s"));
    agent.job_run_file(&v1, RUN_TIMEOUT);
    wait_for_deployment(&agent, 0, "successful");

    // v2 with one canary: `job run` ends once the canary is healthy and waits for a
    // promotion, and says how to give it.
    let v2 = ws.write("v2.toml", &spec("v2", 1, false, "30s"));
    let run = agent.job_run_file(&v2, RUN_TIMEOUT);
    let d = latest_deployment(&agent);
    let id = d["id"].as_str().unwrap().to_string();
    assert!(
        run.stdout
            .contains(&format!("orch deployment promote {}", &id[..8]))
            || run
                .stdout
                .contains(&format!("orch deployment promote {id}")),
        "{}",
        run.stdout
    );
    assert_eq!(d["job_version"], 1);
    assert_eq!(d["status"], "running");
    let live = running(&agent);
    assert_eq!(versions_of(&live), vec![0, 0, 0, 1], "{live:?}");
    let canary = live.iter().find(|a| a["job_version"] == 1).unwrap();
    assert_eq!(canary["deployment_status"]["canary"], true, "{canary}");
    assert_eq!(
        srv_ports(&dig(dns, "canary.api.service.orch", "SRV", &[])).len(),
        1,
        "the canary answers under its canary tag"
    );
    assert_eq!(
        srv_ports(&dig(dns, "v1.api.service.orch", "SRV", &[])).len(),
        3
    );

    // Promote: the rest is replaced and the canary stays.
    agent
        .orch(
            &["deployment", "promote", &id[..8]],
            Duration::from_secs(20),
        )
        .ok();
    wait_for_deployment(&agent, 1, "successful");
    wait_for(Duration::from_secs(60), "3 instances of v2 only", || {
        (versions_of(&running(&agent)) == vec![1, 1, 1]).then_some(())
    });
    assert!(running(&agent).iter().any(|a| a["id"] == canary["id"]));

    // The next canary is failed by hand: it goes, the old instances stay, and the job
    // is reverted to v2's spec (auto_revert).
    let v3 = ws.write("v3.toml", &spec("v3", 1, false, "30s"));
    agent.job_run_file(&v3, RUN_TIMEOUT);
    let d3 = latest_deployment(&agent);
    assert_eq!(d3["job_version"], 2);
    let failed = agent
        .orch(
            &["deployment", "fail", d3["id"].as_str().unwrap()],
            Duration::from_secs(20),
        )
        .ok();
    assert!(
        failed.stdout.contains("version 1"),
        "the fail says which version the job went back to:\n{}",
        failed.stdout
    );
    wait_for_deployment(&agent, 3, "successful");
    wait_for(Duration::from_secs(60), "v2's spec on 3 instances", || {
        let live = running(&agent);
        (live.len() == 3 && live.iter().all(|a| a["job_version"] == 3)).then_some(())
    });
    for port in srv_ports(&dig(dns, "api.service.orch", "SRV", &[])) {
        assert_eq!(call(port).as_deref(), Ok("v2"));
    }
}

#[test]
fn a_deployment_goes_on_after_its_agent_is_killed_as_root() {
    if skip("a_deployment_goes_on_after_its_agent_is_killed_as_root") {
        return;
    }
    let ws = Workspace::new();
    let mut agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let v1 = ws.write("v1.toml", &spec("v1", 0, false, "30s"));
    agent.job_run_file(&v1, RUN_TIMEOUT);

    // v2 is registered and its first instance placed; then the agent (server and
    // client in one process) dies with SIGKILL in the middle of the rollout.
    let v2 = ws.write("v2.toml", &spec("v2", 0, false, "30s"));
    agent
        .orch(
            &["job", "run", "--detach", v2.to_str().unwrap()],
            Duration::from_secs(20),
        )
        .ok();
    wait_for(
        Duration::from_secs(60),
        "v2's first instance to run",
        || {
            running(&agent)
                .iter()
                .any(|a| a["job_version"] == 1)
                .then_some(())
        },
    );
    let d = latest_deployment(&agent);
    assert_eq!(d["status"], "running", "{d}");
    agent.restart();

    // The stored deployment, the re-attached tasks and the watcher's first pass carry
    // the rollout to its end.
    let done = wait_for_deployment(&agent, 1, "successful");
    assert_eq!(done["id"], d["id"]);
    wait_for(Duration::from_secs(60), "3 instances of v2 only", || {
        (versions_of(&running(&agent)) == vec![1, 1, 1]).then_some(())
    });
    let dns = dns_port(&agent);
    for port in srv_ports(&dig(dns, "api.service.orch", "SRV", &[])) {
        assert_eq!(call(port).as_deref(), Ok("v2"));
    }
}
