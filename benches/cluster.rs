//! The cluster benchmark (`make bench`): real `orch agent` processes (release build) on
//! 127.0.0.1 with real tasks, timed from outside through the HTTP API. Prints
//! `name value unit` lines:
//!
//! - `recovery.task_restart_ms`: a running task is SIGKILLed; until its restart has run
//!   (the new process wrote its start time). Restart delay `0s`, median of 10.
//! - `recovery.node_loss_s`: a client running 10 instances is SIGKILLed; until all 10
//!   replacements run on the other client. Heartbeat TTL 1 s, grace 1 s.
//! - `e2e.service50_running_s`: POST of a 50-instance raw_exec service until all 50 run.
//! - `e2e.batch200_complete_s`: POST of a 200-instance batch job of /bin/true until all
//!   200 are complete. Both median of 5, on one server+client agent.
//! - `e2e.secure.*`: the same on an agent with ACLs and mutual TLS on (every call with a
//!   token, over HTTPS with client certificates, the agent's client calling its server
//!   over HTTPS too), rounds interleaved with the plain agent's; `*_ratio` is secure
//!   over plain.
//! - `footprint.server_rss_mib`, `footprint.client_rss_mib`: resident memory of an idle
//!   server agent and an idle client agent (separate processes), 3 s after start.
//!
//! - `ha.write_p50_ms`, `ha.write_p99_ms`: a job registration through the leader of
//!   three servers replicating through Raft (committed on two before it is answered),
//!   200 in a row.
//! - `ha.leader_failover_s`: the leader is SIGKILLed; until a write is acknowledged by
//!   the cluster. `ha.scheduling_resume_s`: the leader is SIGKILLed and a service job
//!   submitted at once; until its task runs. Default Raft timeouts (heartbeat 100 ms,
//!   election 500-1000 ms), median of 3.
//!
//! Needs root (tasks run in cgroups). `BENCH=recovery|e2e|footprint|ha` runs one part.
//! The agents' data dirs are under cargo's `target/tmp`, removed at the end.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_orch");

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.3} {unit}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One `orch agent --config` process with its own data dir; stopped (and its tasks
/// killed) on drop.
struct AgentProc {
    child: Option<Child>,
    addr: String,
    data_dir: PathBuf,
}

impl AgentProc {
    fn start(dir: &Path, name: &str, tables: &str) -> Result<AgentProc> {
        AgentProc::start_on(dir, name, 0, 0, tables)
    }

    /// `start` with fixed HTTP and Raft RPC ports (servers that must know each other).
    fn start_on(dir: &Path, name: &str, http: u16, rpc: u16, tables: &str) -> Result<AgentProc> {
        let data_dir = dir.join(name);
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = {name:?}\ndata_dir = {:?}\nbind_addr = \"127.0.0.1\"\nlog_level = \"warn\"\n\n[ports]\nhttp = {http}\nrpc = {rpc}\ndns = 0\n\n{tables}\n",
                data_dir.display().to_string()
            ),
        )?;
        let mut child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting orch agent")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, rx) = mpsc::channel();
        let log_path = dir.join(format!("{name}.log"));
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).ok();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if !sent {
                    if let Some(addr) = line.strip_prefix("orch agent: listening on ") {
                        let _ = tx.send(addr.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("agent {name} did not start; see {}", dir.display()))?;
        Ok(AgentProc {
            child: Some(child),
            addr,
            data_dir,
        })
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_tasks_of(&self.data_dir);
    }
}

/// Kills task processes left from `data_dir` (found by their `ORCH_ALLOC_DIR`), then
/// removes their cgroups (a SIGKILLed client leaves both behind).
fn kill_tasks_of(data_dir: &Path) {
    kill_processes_of(data_dir);
    let allocs: Vec<String> = std::fs::read_dir(data_dir.join("alloc"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if allocs.is_empty() {
        return;
    }
    // Killed tasks leave their cgroups once reaped: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = 0;
        for parent in cgroup_parents() {
            let Ok(rd) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir()
                    && allocs.iter().any(|a| name.starts_with(&format!("{a}-")))
                    && std::fs::remove_dir(e.path()).is_err()
                {
                    left += 1;
                }
            }
        }
        if left == 0 || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where task cgroups live: v1 `<controller>/orch`, v2 `orch.slice`.
fn cgroup_parents() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.join("orch.slice")];
    if let Ok(rd) = std::fs::read_dir(root) {
        out.extend(rd.flatten().map(|e| e.path().join("orch")));
    }
    out
}

/// SIGKILLs the processes whose `ORCH_ALLOC_DIR` is under `data_dir`.
fn kill_processes_of(data_dir: &Path) {
    let prefix = format!("ORCH_ALLOC_DIR={}", data_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|v| String::from_utf8_lossy(v).starts_with(&prefix))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn http() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn get(c: &reqwest::blocking::Client, base: &str, path: &str) -> Result<Value> {
    let resp = c.get(format!("{base}{path}")).send()?;
    if !resp.status().is_success() {
        bail!("GET {path}: {}", resp.status());
    }
    Ok(resp.json()?)
}

fn post_toml(c: &reqwest::blocking::Client, base: &str, spec: &str) -> Result<()> {
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .header("Content-Type", "application/toml")
        .body(spec.to_string())
        .send()?;
    if !resp.status().is_success() {
        bail!("POST /v1/jobs: {}: {}", resp.status(), resp.text()?);
    }
    Ok(())
}

/// Waits until `done` holds for the job's allocations, with blocking queries (each
/// answer comes as the allocations change, so the wait costs the server nothing in
/// between); returns when it first held.
fn wait_allocs(
    c: &reqwest::blocking::Client,
    base: &str,
    job: &str,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut index = 0u64;
    loop {
        let resp = c
            .get(format!(
                "{base}/v1/job/{job}/allocations?index={index}&wait=5s"
            ))
            .send()?;
        if !resp.status().is_success() {
            bail!("GET allocations of {job}: {}", resp.status());
        }
        let next = resp
            .headers()
            .get("X-Orch-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let list: Vec<Value> = resp.json()?;
        if done(&list) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("job {job}: condition not reached within {timeout:?}");
        }
        if next <= index {
            // No newer index to wait for: do not spin.
            std::thread::sleep(Duration::from_millis(5));
        }
        index = next;
    }
}

fn count(list: &[Value], status: &str) -> usize {
    list.iter().filter(|a| a["client_status"] == status).count()
}

fn wait_ready_nodes(c: &reqwest::blocking::Client, base: &str, n: usize) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = get(c, base, "/v1/nodes")?;
        let ready: Vec<Value> = nodes
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n["status"] == "ready")
            .collect();
        if ready.len() >= n {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            bail!("{n} ready nodes never appeared");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LARGE_CLIENT: &str =
    "[client]\nenabled = true\nservers = [\"SERVER\"]\nreserved = { cpu = 0, memory = 0 }\nraw_exec = true\nallow_root_tasks = true\ndefault_user = \"\"\n";

fn client_of(server: &AgentProc) -> String {
    LARGE_CLIENT.replace("SERVER", server.addr.trim_start_matches("http://"))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

const BOTH: &str = "[server]\nenabled = true\nheartbeat_min_ttl = \"1s\"\nheartbeat_grace = \"1s\"\n\n[client]\nenabled = true\nreserved = { cpu = 0, memory = 0 }\nraw_exec = true\nallow_root_tasks = true\ndefault_user = \"\"\n";

/// Start times (ns since the epoch) the task has written to its `starts` file.
fn starts(alloc_dir: &Path) -> Vec<u128> {
    std::fs::read_to_string(alloc_dir.join("alloc/starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The pid of the task's `sleep` (it writes `$$` before exec'ing it).
fn task_pid(alloc_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(alloc_dir.join("alloc/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn recovery_task_restart(dir: &Path) -> Result<()> {
    const ROUNDS: usize = 10;
    let c = http()?;
    let agent = AgentProc::start(dir, "restart", BOTH)?;
    wait_ready_nodes(&c, &agent.addr, 1)?;
    let spec = r#"id = "crashy"
[group.g]
count = 1
[group.g.restart]
attempts = 100
interval = "1h"
delay = "0s"
mode = "fail"
[group.g.task.t]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo $$ > $ORCH_ALLOC_DIR/pid.new && mv $ORCH_ALLOC_DIR/pid.new $ORCH_ALLOC_DIR/pid; date +%s%N >> $ORCH_ALLOC_DIR/starts; exec sleep 3600"] }
resources = { cpu = 50, memory = 32 }
"#;
    post_toml(&c, &agent.addr, spec)?;
    wait_allocs(&c, &agent.addr, "crashy", Duration::from_secs(30), |l| {
        count(l, "running") == 1
    })?;
    let allocs = get(&c, &agent.addr, "/v1/job/crashy/allocations")?;
    let id = allocs[0]["id"].as_str().context("alloc id")?.to_string();
    let alloc_dir = agent.data_dir.join("alloc").join(&id);
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let deadline = Instant::now() + Duration::from_secs(10);
        let before = loop {
            let s = starts(&alloc_dir);
            if let (Some(pid), false) = (task_pid(&alloc_dir), s.is_empty()) {
                if s.len() == samples.len() + 1 {
                    break (pid, s.len());
                }
            }
            if Instant::now() > deadline {
                bail!("the task never settled");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Let it settle into `sleep` so the kill hits the task, not its start-up.
        std::thread::sleep(Duration::from_millis(100));
        let killed_at = now_ns();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(before.0),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            let s = starts(&alloc_dir);
            if s.len() > before.1 {
                break s[before.1];
            }
            if Instant::now() > deadline {
                bail!("the task was not restarted within 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        samples.push(started.saturating_sub(killed_at) as f64 / 1e6);
    }
    report("recovery.task_restart_ms", median(samples), "ms");
    Ok(())
}

fn recovery_node_loss(dir: &Path) -> Result<()> {
    const COUNT: usize = 10;
    let c = http()?;
    let server = AgentProc::start(
        dir,
        "loss-server",
        "[server]\nenabled = true\nheartbeat_min_ttl = \"1s\"\nheartbeat_grace = \"1s\"\n",
    )?;
    let mut doomed = AgentProc::start(dir, "loss-a", &client_of(&server))?;
    wait_ready_nodes(&c, &server.addr, 1)?;
    let survivor = AgentProc::start(dir, "loss-b", &client_of(&server))?;
    let nodes = wait_ready_nodes(&c, &server.addr, 2)?;
    let b = nodes
        .iter()
        .find(|n| n["name"] == "loss-b")
        .and_then(|n| n["id"].as_str())
        .context("node loss-b")?
        .to_string();
    let eligibility = |e: &str| -> Result<()> {
        let resp = c
            .post(format!("{}/v1/node/{b}/eligibility", server.addr))
            .header("Content-Type", "application/json")
            .body(format!("{{\"eligibility\":\"{e}\"}}"))
            .send()?;
        if !resp.status().is_success() {
            bail!("eligibility: {}", resp.status());
        }
        Ok(())
    };
    // All instances start on loss-a.
    eligibility("ineligible")?;
    let spec = format!(
        r#"id = "survivor"
[group.g]
count = {COUNT}
[group.g.task.t]
driver = "raw_exec"
config = {{ command = "/bin/sleep", args = ["3600"] }}
resources = {{ cpu = 20, memory = 16 }}
"#
    );
    post_toml(&c, &server.addr, &spec)?;
    wait_allocs(&c, &server.addr, "survivor", Duration::from_secs(30), |l| {
        count(l, "running") == COUNT
    })?;
    eligibility("eligible")?;
    // Let at least one heartbeat pass so the kill lands at a random point of the TTL.
    std::thread::sleep(Duration::from_millis(700));
    let killed = Instant::now();
    doomed.kill9();
    let done = wait_allocs(&c, &server.addr, "survivor", Duration::from_secs(60), |l| {
        l.iter()
            .filter(|a| a["client_status"] == "running" && a["node_name"] == "loss-b")
            .count()
            == COUNT
    })?;
    report(
        "recovery.node_loss_s",
        done.duration_since(killed).as_secs_f64(),
        "s",
    );
    drop(survivor);
    drop(doomed);
    Ok(())
}

/// An agent with ACLs and mutual TLS on (certificates from `orch tls`), and an HTTPS
/// client that presents the CLI certificate and the management token.
fn secure_agent(dir: &Path) -> Result<(AgentProc, reqwest::blocking::Client)> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    let orch = |args: &[&str]| -> Result<()> {
        let out = Command::new(BIN)
            .args(args)
            .arg("--dir")
            .arg(&tls)
            .output()?;
        if !out.status.success() {
            bail!(
                "orch {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    orch(&["tls", "ca", "create"])?;
    for role in ["--server", "--cli"] {
        orch(&["tls", "cert", "create", role])?;
    }
    let file = |name: &str| tls.join(name).display().to_string();
    // Beside the plain agent: DNS (its fixed port taken) is not what is measured.
    let both = BOTH.replace("[server]\n", "[server]\ndns = false\n");
    let tables = format!(
        "{both}
[acl]
enabled = true

[tls]
http = true
ca_file = {:?}
cert_file = {:?}
key_file = {:?}
",
        file("orch-agent-ca.pem"),
        file("global-server-orch.pem"),
        file("global-server-orch-key.pem")
    );
    let agent = AgentProc::start(dir, "e2e-secure", &tables)?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("orch-agent-ca.pem"))?)?;
    let mut identity = std::fs::read(tls.join("global-cli-orch.pem"))?;
    identity.extend(std::fs::read(tls.join("global-cli-orch-key.pem"))?);
    let identity = reqwest::Identity::from_pem(&identity)?;
    let builder = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(ca.clone())
            .identity(identity.clone())
    };
    let boot: Value = builder()
        .build()?
        .post(format!("{}/v1/acl/bootstrap", agent.addr))
        .send()?
        .json()?;
    let token = boot["secret"].as_str().context("the bootstrap token")?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("X-Orch-Token", token.parse()?);
    Ok((agent, builder().default_headers(headers).build()?))
}

/// One round of each job on one agent: (service50 running, batch200 complete) seconds.
fn e2e_round(
    c: &reqwest::blocking::Client,
    agent: &AgentProc,
    label: &str,
    round: usize,
) -> Result<(f64, f64)> {
    {
        let id = format!("service50-{label}{round}");
        let spec = format!(
            r#"id = "{id}"
[group.g]
count = 50
[group.g.task.t]
driver = "raw_exec"
config = {{ command = "/bin/sleep", args = ["3600"] }}
resources = {{ cpu = 10, memory = 16 }}
"#
        );
        let t0 = Instant::now();
        post_toml(c, &agent.addr, &spec)?;
        let t1 = wait_allocs(c, &agent.addr, &id, Duration::from_secs(60), |l| {
            count(l, "running") == 50
        })?;
        let service = t1.duration_since(t0).as_secs_f64();
        stop_job(c, &agent.addr, &id)?;

        let id = format!("batch200-{label}{round}");
        let spec = format!(
            r#"id = "{id}"
type = "batch"
[group.g]
count = 200
[group.g.task.t]
driver = "raw_exec"
config = {{ command = "/bin/true" }}
resources = {{ cpu = 10, memory = 16 }}
"#
        );
        let t0 = Instant::now();
        post_toml(c, &agent.addr, &spec)?;
        let t1 = wait_allocs(c, &agent.addr, &id, Duration::from_secs(60), |l| {
            count(l, "complete") == 200
        })?;
        Ok((service, t1.duration_since(t0).as_secs_f64()))
    }
}

fn e2e(dir: &Path) -> Result<()> {
    const ROUNDS: usize = 5;
    let c = http()?;
    let agent = AgentProc::start(dir, "e2e", BOTH)?;
    wait_ready_nodes(&c, &agent.addr, 1)?;
    let (secure, sc) = secure_agent(dir)?;
    wait_ready_nodes(&sc, &secure.addr, 1)?;
    let (mut service, mut batch) = (Vec::new(), Vec::new());
    let (mut secure_service, mut secure_batch) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so that neither always runs on a warmer machine.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_secure in order {
            if is_secure {
                let (s, b) = e2e_round(&sc, &secure, "secure-", round)?;
                secure_service.push(s);
                secure_batch.push(b);
            } else {
                let (s, b) = e2e_round(&c, &agent, "", round)?;
                service.push(s);
                batch.push(b);
            }
        }
    }
    // One read, many times, on a kept-alive connection: the per-request price of the
    // token check and of TLS, without the scheduler and the tasks around it.
    let read_us = |c: &reqwest::blocking::Client, base: &str, job: &str| -> Result<f64> {
        const N: u32 = 1000;
        let url = format!("{base}/v1/job/{job}");
        let t0 = Instant::now();
        for _ in 0..N {
            let resp = c.get(&url).send()?;
            if !resp.status().is_success() {
                bail!("GET {url}: {}", resp.status());
            }
            resp.bytes()?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / f64::from(N))
    };
    let (mut read, mut secure_read) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        read.push(read_us(&c, &agent.addr, "batch200-0")?);
        secure_read.push(read_us(&sc, &secure.addr, "batch200-secure-0")?);
    }
    let (read, secure_read) = (median(read), median(secure_read));
    report("e2e.read_job_us", read, "us");
    report("e2e.secure.read_job_us", secure_read, "us");
    let (service, batch) = (median(service), median(batch));
    let (secure_service, secure_batch) = (median(secure_service), median(secure_batch));
    report("e2e.service50_running_s", service, "s");
    report("e2e.batch200_complete_s", batch, "s");
    report("e2e.secure.service50_running_s", secure_service, "s");
    report("e2e.secure.batch200_complete_s", secure_batch, "s");
    report("e2e.secure.service50_ratio", secure_service / service, "x");
    report("e2e.secure.batch200_ratio", secure_batch / batch, "x");
    Ok(())
}

/// Stops a job and waits until none of its allocations runs any more.
fn stop_job(c: &reqwest::blocking::Client, base: &str, id: &str) -> Result<()> {
    let resp = c.delete(format!("{base}/v1/job/{id}")).send()?;
    if !resp.status().is_success() {
        bail!("DELETE /v1/job/{id}: {}", resp.status());
    }
    wait_allocs(c, base, id, Duration::from_secs(60), |l| {
        count(l, "running") == 0 && count(l, "pending") == 0
    })?;
    Ok(())
}

fn rss_mib(pid: i32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb / 1024.0)
}

fn footprint(dir: &Path) -> Result<()> {
    let c = http()?;
    let server = AgentProc::start(dir, "idle-server", "[server]\nenabled = true\n")?;
    let client = AgentProc::start(dir, "idle-client", &client_of(&server))?;
    wait_ready_nodes(&c, &server.addr, 1)?;
    std::thread::sleep(Duration::from_secs(3));
    report("footprint.server_rss_mib", rss_mib(server.pid())?, "MiB");
    report("footprint.client_rss_mib", rss_mib(client.pid())?, "MiB");
    Ok(())
}

// --------------------------------------------------------------------------- ha

/// `n` distinct ports on 127.0.0.1 that were free a moment ago (all held until all
/// are chosen, so none is handed out twice).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Three servers replicating through Raft (default timeouts) and one client, on
/// 127.0.0.1 with their own ports.
struct Replicated {
    servers: Vec<Option<AgentProc>>,
    http: Vec<String>,
    rpc: Vec<String>,
    tables: String,
    _client: AgentProc,
}

impl Replicated {
    fn start(dir: &Path) -> Result<Replicated> {
        let free = free_ports(6)?;
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|p| (p[0], p[1])).collect();
        let http: Vec<String> = ports
            .iter()
            .map(|(h, _)| format!("127.0.0.1:{h}"))
            .collect();
        let rpc: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("127.0.0.1:{r}"))
            .collect();
        let join: Vec<String> = rpc.iter().map(|a| format!("{a:?}")).collect();
        let tables = format!(
            "[server]\nenabled = true\nbootstrap_expect = 3\nretry_join = [{}]\n",
            join.join(", ")
        );
        let mut servers = Vec::new();
        for (i, (h, r)) in ports.iter().enumerate() {
            servers.push(Some(AgentProc::start_on(
                dir,
                &format!("ha-s{i}"),
                *h,
                *r,
                &tables,
            )?));
        }
        let servers_list: Vec<String> = http.iter().map(|a| format!("{a:?}")).collect();
        let client_tables =
            LARGE_CLIENT.replace("[\"SERVER\"]", &format!("[{}]", servers_list.join(", ")));
        let client = AgentProc::start(dir, "ha-client", &client_tables)?;
        let cluster = Replicated {
            servers,
            http,
            rpc,
            tables,
            _client: client,
        };
        cluster.leader(Duration::from_secs(30))?;
        wait_ready_nodes(&http_client()?, &format!("http://{}", cluster.http[0]), 1)?;
        Ok(cluster)
    }

    /// The index of the server that leads, as the live servers agree.
    fn leader(&self, timeout: Duration) -> Result<usize> {
        let c = http_client()?;
        let deadline = Instant::now() + timeout;
        loop {
            for (i, s) in self.servers.iter().enumerate() {
                if s.is_none() {
                    continue;
                }
                let said = c
                    .get(format!("http://{}/v1/status/leader", self.http[i]))
                    .send()
                    .ok()
                    .and_then(|r| r.json::<String>().ok());
                if let Some(leader) = said.and_then(|l| self.rpc.iter().position(|r| *r == l)) {
                    if self.servers[leader].is_some() {
                        return Ok(leader);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Registers `spec` through the live servers, trying each in turn until one
    /// acknowledges it; when it was acknowledged.
    fn register(&self, spec: &str, timeout: Duration) -> Result<Instant> {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + timeout;
        loop {
            for (i, s) in self.servers.iter().enumerate() {
                if s.is_some() && post_toml(&c, &format!("http://{}", self.http[i]), spec).is_ok() {
                    return Ok(Instant::now());
                }
            }
            if Instant::now() > deadline {
                bail!("no server took the write within {timeout:?}");
            }
        }
    }

    fn kill_leader(&mut self) -> Result<(usize, Instant)> {
        let leader = self.leader(Duration::from_secs(30))?;
        self.servers[leader].as_mut().map(AgentProc::kill9);
        self.servers[leader] = None;
        Ok((leader, Instant::now()))
    }

    fn restart(&mut self, dir: &Path, i: usize) -> Result<()> {
        let port = |a: &str| -> Result<u16> { Ok(a.rsplit(':').next().unwrap_or("0").parse()?) };
        self.servers[i] = Some(AgentProc::start_on(
            dir,
            &format!("ha-s{i}"),
            port(&self.http[i])?,
            port(&self.rpc[i])?,
            &self.tables,
        )?);
        // Back in the cluster: every server alive in the leader's view.
        let c = http_client()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self.leader(Duration::from_secs(30))?;
            let members = get(
                &c,
                &format!("http://{}", self.http[leader]),
                "/v1/agent/members",
            )?;
            let alive = members
                .as_array()
                .map(|m| m.iter().filter(|m| m["status"] == "alive").count())
                .unwrap_or(0);
            if alive == 3 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("server {i} did not rejoin");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn http_client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `ha.*`: three replicating servers and a client on this machine, default Raft
/// timeouts (heartbeat 100 ms, election 500-1000 ms).
fn ha(dir: &Path) -> Result<()> {
    let mut cluster = Replicated::start(dir)?;
    // Write latency: 200 registrations one after another, through the leader.
    let leader = cluster.leader(Duration::from_secs(30))?;
    let c = http()?;
    let base = format!("http://{}", cluster.http[leader]);
    let mut lat = Vec::new();
    for i in 0..200 {
        let spec = format!(
            "id = \"w{i}\"\ntype = \"batch\"\n[group.g]\ncount = 1\n[group.g.task.t]\ndriver = \"raw_exec\"\nconfig = {{ command = \"/bin/true\" }}\nresources = {{ cpu = 10, memory = 8 }}\n"
        );
        let t = Instant::now();
        post_toml(&c, &base, &spec)?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    report("ha.write_p50_ms", percentile(&lat, 0.5), "ms");
    report("ha.write_p99_ms", percentile(&lat, 0.99), "ms");

    // Failover: SIGKILL the leader; until a write is acknowledged (median of 3).
    let mut failover = Vec::new();
    let mut resume = Vec::new();
    for round in 0..3 {
        let (killed, at) = cluster.kill_leader()?;
        let spec = format!("id = \"f{round}\"\ntype = \"batch\"\n[group.g]\ncount = 1\n[group.g.task.t]\ndriver = \"raw_exec\"\nconfig = {{ command = \"/bin/true\" }}\nresources = {{ cpu = 10, memory = 8 }}\n");
        failover.push(
            cluster
                .register(&spec, Duration::from_secs(30))?
                .duration_since(at)
                .as_secs_f64(),
        );
        cluster.restart(dir, killed)?;

        // Scheduling resumes: SIGKILL the leader, submit a service job at once; until
        // it runs.
        let (killed, at) = cluster.kill_leader()?;
        let id = format!("r{round}");
        let spec = format!("id = \"{id}\"\n[group.g]\ncount = 1\n[group.g.task.t]\ndriver = \"raw_exec\"\nconfig = {{ command = \"/bin/sleep\", args = [\"600\"] }}\nresources = {{ cpu = 10, memory = 8 }}\n");
        cluster.register(&spec, Duration::from_secs(30))?;
        let leader = cluster.leader(Duration::from_secs(30))?;
        let running = wait_allocs(
            &c,
            &format!("http://{}", cluster.http[leader]),
            &id,
            Duration::from_secs(60),
            |a| count(a, "running") == 1,
        )?;
        resume.push(running.duration_since(at).as_secs_f64());
        stop_job(&c, &format!("http://{}", cluster.http[leader]), &id)?;
        cluster.restart(dir, killed)?;
    }
    report("ha.leader_failover_s", median(failover), "s");
    report("ha.scheduling_resume_s", median(resume), "s");
    Ok(())
}

fn main() -> Result<()> {
    let which = std::env::var("BENCH").unwrap_or_default();
    let run = |name: &str| which.is_empty() || which == name;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the cluster benchmark runs tasks in cgroups: run it as root");
        return Ok(());
    }
    // Cargo's scratch dir for benchmarks (`target/tmp`), not /tmp: where the test
    // suite has just deleted thousands of files, a file system that scans recently
    // deleted inodes on every allocation (ext4 without a journal, as on this project's
    // VMs) makes the agents' file creation the benchmark's largest cost.
    let dir = tempfile::Builder::new()
        .prefix("orch-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    if run("recovery") {
        recovery_task_restart(dir.path())?;
        recovery_node_loss(dir.path())?;
    }
    if run("e2e") {
        e2e(dir.path())?;
    }
    if run("footprint") {
        footprint(dir.path())?;
    }
    if run("ha") {
        ha(dir.path())?;
    }
    Ok(())
}
