//! Three servers replicating through Raft, as separate `orch` processes, each in its
//! own network namespace with its own address (a star made by the test, removed on
//! drop), and clients in two more: the leader killed in the middle of a stream of
//! writes, a leader cut off with a minority, a follower whose disk is wiped, a
//! rolling restart under a running service, a cluster snapshot restored onto a fresh
//! single server, and a single server's data dir upgraded into a cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::Star;
use common::*;

const HTTP: u16 = 4747;

/// The servers are leaves 1-3; clients 4 and 5.
fn server_addr(star: &Star, n: usize) -> String {
    format!("{}:{HTTP}", star.leaf_addr(n))
}

fn server_tables(star: &Star) -> String {
    let join: Vec<String> = (1..=3)
        .map(|n| format!("\"{}:4748\"", star.leaf_addr(n)))
        .collect();
    format!(
        "[server]\nenabled = true\nbootstrap_expect = 3\nretry_join = [{}]\n\
         raft_snapshot_threshold = 64\nraft_trailing_logs = 8\n",
        join.join(", ")
    )
}

struct Cluster {
    // Agents first: they stop before the namespaces go.
    servers: BTreeMap<usize, Agent>,
    clients: Vec<Agent>,
    ws: Workspace,
    star: Star,
}

impl Cluster {
    /// Servers and `clients` in a star `prefix` on `10.<net>.0.0/16` (each test its own).
    fn start(prefix: &str, net: u8, clients: usize) -> Cluster {
        let star = Star::in_net(prefix, 3 + clients, net).expect("network namespaces");
        let ws = Workspace::new();
        let tables = server_tables(&star);
        let mut servers = BTreeMap::new();
        for n in 1..=3 {
            servers.insert(
                n,
                Agent::in_netns(
                    &ws,
                    &format!("server{n}"),
                    &star.leaf_ns(n),
                    &star.leaf_addr(n),
                    HTTP,
                    &tables,
                ),
            );
        }
        let mut cluster = Cluster {
            servers,
            clients: Vec::new(),
            ws,
            star,
        };
        cluster.wait_leader(None);
        let addrs: Vec<String> = (1..=3).map(|n| server_addr(&cluster.star, n)).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        for c in 1..=clients {
            let leaf = 3 + c;
            cluster.clients.push(Agent::in_netns(
                &cluster.ws,
                &format!("client{c}"),
                &cluster.star.leaf_ns(leaf),
                &cluster.star.leaf_addr(leaf),
                HTTP,
                &client_section(&addrs, 1024, ""),
            ));
        }
        cluster
    }

    /// The server (1-3) that leads, as server `asked` says (`None` while unknown).
    fn leader_by(&self, asked: usize) -> Option<usize> {
        let rpc = self.servers.get(&asked)?.get("/v1/status/leader")?;
        let rpc = rpc.as_str()?;
        (1..=3).find(|n| rpc == format!("{}:4748", self.star.leaf_addr(*n)))
    }

    /// Waits until every running server (but `except`) names the same leader, and
    /// returns it.
    fn wait_leader(&self, except: Option<usize>) -> usize {
        wait_for(Duration::from_secs(30), "one leader", || {
            let views: BTreeSet<Option<usize>> = self
                .servers
                .keys()
                .filter(|n| Some(**n) != except)
                .map(|n| self.leader_by(*n))
                .collect();
            match views.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(l)] if Some(*l) != except => Some(*l),
                _ => None,
            }
        })
    }

    fn server(&self, n: usize) -> &Agent {
        &self.servers[&n]
    }

    /// `GET path?stale=true` on server `n`: what that server itself holds.
    fn stale(&self, n: usize, path: &str) -> Option<serde_json::Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.server(n).get(&format!("{path}{sep}stale=true"))
    }

    fn job_ids(&self, n: usize) -> BTreeSet<String> {
        self.stale(n, "/v1/jobs")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|j| j["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until server `n` holds exactly the jobs the leader holds.
    fn wait_caught_up(&self, n: usize) {
        wait_for(Duration::from_secs(60), "the server catches up", || {
            let leader = self.wait_leader(None);
            let want = self.job_ids(leader);
            (self.job_ids(n) == want).then_some(())
        });
    }
}

fn batch_spec(id: &str) -> String {
    format!(
        r#"id = "{id}"
type = "batch"

[group.g]
count = 1

[group.g.task.t]
driver = "raw_exec"
config = {{ command = "/bin/true" }}
resources = {{ cpu = 10, memory = 8 }}
"#
    )
}

/// Registers `spec` through the servers in `addrs` in turn until one acknowledges it
/// (a 200), for at most `timeout`; whether it was acknowledged.
fn register(addrs: &[String], spec: &str, timeout: Duration) -> bool {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut i = 0;
    while Instant::now() < deadline {
        let addr = &addrs[i % addrs.len()];
        i += 1;
        let sent = client
            .post(format!("http://{addr}/v1/jobs"))
            .header("content-type", "application/toml")
            .body(spec.to_string())
            .send();
        if matches!(&sent, Ok(r) if r.status().is_success()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn every_acknowledged_job_survives_a_leader_killed_mid_stream_as_root() {
    if skip_unless_root("every_acknowledged_job_survives_a_leader_killed_mid_stream_as_root") {
        return;
    }
    let mut cluster = Cluster::start("orchha1", 232, 2);
    wait_for_ready_nodes(cluster.server(cluster.wait_leader(None)), 2);
    let addrs: Vec<String> = (1..=3).map(|n| server_addr(&cluster.star, n)).collect();

    // A stream of registrations (each a batch job whose run sends status updates)
    // through every server in turn, while the leader is killed.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, done, addrs) = (acked.clone(), done.clone(), addrs.clone());
        std::thread::spawn(move || {
            for i in 0..60 {
                let id = format!("stream-{i:03}");
                // Rotate the first server tried, so followers forward too.
                let mut order = addrs.clone();
                order.rotate_left(i % 3);
                if register(&order, &batch_spec(&id), Duration::from_secs(30)) {
                    acked.lock().unwrap().push(id);
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    wait_for(Duration::from_secs(30), "a few acknowledged jobs", || {
        (acked.lock().unwrap().len() >= 10).then_some(())
    });
    let old = cluster.wait_leader(None);
    cluster.servers.get_mut(&old).unwrap().kill9();
    let killed_at = Instant::now();
    let new = cluster.wait_leader(Some(old));
    assert_ne!(new, old);
    eprintln!("new leader after {:?}", killed_at.elapsed());
    writer.join().expect("writer");
    assert!(done.load(Ordering::SeqCst));
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() >= 55,
        "most writes were acknowledged: {}",
        acked.len()
    );

    // Every acknowledged job is there, registered once (version 0), and ran once.
    let leader = cluster.server(new);
    wait_for(
        Duration::from_secs(60),
        "every acknowledged job ran",
        || {
            let jobs = cluster.job_ids(new);
            let missing: Vec<&String> = acked.difference(&jobs).collect();
            assert!(missing.is_empty(), "acknowledged jobs lost: {missing:?}");
            acked
                .iter()
                .all(|id| {
                    let allocs = leader.job_allocs(id);
                    allocs.len() == 1 && allocs[0]["client_status"] == "complete"
                })
                .then_some(())
        },
    );
    for id in &acked {
        let job = leader.get(&format!("/v1/job/{id}")).expect("job");
        assert_eq!(job["version"], 0, "{id} was registered once: {job}");
        let allocs = leader.job_allocs(id);
        assert_eq!(allocs.len(), 1, "{id} placed once: {allocs:#?}");
    }

    // The killed server comes back and catches up.
    cluster.servers.get_mut(&old).unwrap().restart();
    cluster.wait_caught_up(old);
    let members = cluster
        .server(new)
        .get("/v1/agent/members")
        .expect("members");
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|m| m["status"] == "alive"),
        "{members:#?}"
    );
}

#[test]
fn a_leader_cut_off_with_a_minority_steps_down_and_catches_up_after_the_heal_as_root() {
    if skip_unless_root(
        "a_leader_cut_off_with_a_minority_steps_down_and_catches_up_after_the_heal_as_root",
    ) {
        return;
    }
    let cluster = Cluster::start("orchha2", 233, 0);
    let old = cluster.wait_leader(None);
    let addrs: Vec<String> = (1..=3).map(|n| server_addr(&cluster.star, n)).collect();
    assert!(register(
        &addrs,
        &batch_spec("before"),
        Duration::from_secs(20)
    ));

    cluster.star.isolate(old);
    let new = cluster.wait_leader(Some(old));
    let majority: Vec<String> = (1..=3)
        .filter(|n| *n != old)
        .map(|n| server_addr(&cluster.star, n))
        .collect();
    assert!(register(
        &majority,
        &batch_spec("during"),
        Duration::from_secs(20)
    ));

    // Inside the cut-off namespace: the old leader has stepped down (no leader is
    // known there) and refuses a write.
    let inside = |args: &[&str]| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &cluster.star.leaf_name(old)]);
        cmd.args(args);
        cmd.output().expect("ip netns exec")
    };
    let url = format!("http://{}", server_addr(&cluster.star, old));
    wait_for(
        Duration::from_secs(10),
        "the cut-off leader steps down",
        || {
            let out = inside(&[
                "python3",
                "-c",
                "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
                &format!("{url}/v1/status/leader"),
            ]);
            let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
            eprintln!(
                "the cut-off server names the leader {said:?} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            (said == "\"\"").then_some(())
        },
    );
    let spec = cluster.ws.write("cut.toml", &batch_spec("cut-off"));
    let out = inside(&[
        env!("CARGO_BIN_EXE_orch"),
        "--address",
        &url,
        "job",
        "run",
        "--detach",
        spec.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a write on the cut-off server was refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("leader"), "{said}");

    cluster.star.rejoin(old);
    cluster.wait_caught_up(old);
    let jobs = cluster.job_ids(old);
    assert!(jobs.contains("during"), "{jobs:?}");
    assert!(!jobs.contains("cut-off"), "{jobs:?}");
    assert_eq!(
        cluster.wait_leader(None),
        new,
        "the healed server did not take over"
    );
}

#[test]
fn a_follower_whose_disk_is_wiped_rejoins_by_snapshot_as_root() {
    if skip_unless_root("a_follower_whose_disk_is_wiped_rejoins_by_snapshot_as_root") {
        return;
    }
    let mut cluster = Cluster::start("orchha3", 234, 0);
    let leader = cluster.wait_leader(None);
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let addrs: Vec<String> = (1..=3).map(|n| server_addr(&cluster.star, n)).collect();
    // More entries than the snapshot threshold (64): the log before them is dropped.
    for i in 0..80 {
        assert!(register(
            &addrs,
            &batch_spec(&format!("w{i:02}")),
            Duration::from_secs(20)
        ));
    }
    let agent = cluster.servers.get_mut(&follower).unwrap();
    agent.terminate(Duration::from_secs(20));
    let dir = cluster.ws.path(&format!("server{follower}"));
    std::fs::remove_dir_all(&dir).expect("wipe the data dir");
    agent.restart();
    cluster.wait_caught_up(follower);
    let log = cluster.server(follower).log();
    assert!(log.contains("installed a Raft snapshot"), "{log}");
    // Its old identity was replaced: three voters, all alive.
    wait_for(Duration::from_secs(20), "three live voters", || {
        let url = format!(
            "http://{}/v1/agent/members",
            server_addr(&cluster.star, leader)
        );
        let resp = http().get(&url).send().ok()?;
        let status = resp.status();
        let text = resp.text().ok()?;
        if !status.is_success() {
            eprintln!("members: {status} {text}");
            return None;
        }
        let members: serde_json::Value = serde_json::from_str(&text).ok()?;
        let members = members.as_array()?.clone();
        (members.len() == 3
            && members
                .iter()
                .all(|m| m["status"] == "alive" && m["voter"] == true))
        .then_some(())
    });
}

#[test]
fn a_rolling_restart_of_every_server_keeps_a_service_running_as_root() {
    if skip_unless_root("a_rolling_restart_of_every_server_keeps_a_service_running_as_root") {
        return;
    }
    let mut cluster = Cluster::start("orchha4", 235, 2);
    wait_for_ready_nodes(cluster.server(cluster.wait_leader(None)), 2);
    let spec = cluster.ws.write(
        "svc.toml",
        r#"id = "svc"

[group.web]
count = 2

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "exec sleep 600"] }
resources = { cpu = 20, memory = 16 }
"#,
    );
    let leader = cluster.wait_leader(None);
    cluster
        .server(leader)
        .job_run_file(&spec, Duration::from_secs(60))
        .ok();
    let running = |c: &Cluster| -> BTreeSet<String> {
        let leader = c.wait_leader(None);
        c.server(leader)
            .job_allocs("svc")
            .iter()
            .filter(|a| a["desired_status"] == "run" && a["client_status"] == "running")
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect()
    };
    let before = wait_for(Duration::from_secs(30), "two running", || {
        let r = running(&cluster);
        (r.len() == 2).then_some(r)
    });
    for n in 1..=3 {
        let agent = cluster.servers.get_mut(&n).unwrap();
        agent.terminate(Duration::from_secs(20));
        agent.restart();
        cluster.wait_caught_up(n);
        cluster.wait_leader(None);
    }
    // Give heartbeats a round through the new leaders, then look again.
    std::thread::sleep(Duration::from_secs(3));
    let leader = cluster.wait_leader(None);
    let allocs = cluster.server(leader).job_allocs("svc");
    assert_eq!(allocs.len(), 2, "no allocation added or lost: {allocs:#?}");
    assert_eq!(running(&cluster), before, "the same two allocations run");
    let ids: BTreeSet<String> = before.clone();
    assert_eq!(task_pids(None, &ids).len(), 2, "two task processes");
}

#[test]
fn a_cluster_snapshot_restores_onto_a_fresh_single_server_as_root() {
    if skip_unless_root("a_cluster_snapshot_restores_onto_a_fresh_single_server_as_root") {
        return;
    }
    let cluster = Cluster::start("orchha5", 236, 1);
    let leader = cluster.wait_leader(None);
    wait_for_ready_nodes(cluster.server(leader), 1);
    let addrs: Vec<String> = (1..=3).map(|n| server_addr(&cluster.star, n)).collect();
    for i in 0..5 {
        assert!(register(
            &addrs,
            &batch_spec(&format!("snap{i}")),
            Duration::from_secs(20)
        ));
    }
    wait_for(Duration::from_secs(30), "the jobs ran", || {
        (0..5)
            .all(|i| {
                let a = cluster.server(leader).job_allocs(&format!("snap{i}"));
                a.len() == 1 && a[0]["client_status"] == "complete"
            })
            .then_some(())
    });
    // Saved through a follower (forwarded to the leader).
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let file = cluster.ws.path("cluster.snap");
    cluster
        .server(follower)
        .orch(
            &["operator", "snapshot", "save", file.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    // Onto the running cluster it is refused (the others would not follow), and
    // nothing changes.
    let refused = cluster.server(follower).orch(
        &["operator", "snapshot", "restore", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr.contains("not supported"),
        "{}",
        refused.stderr
    );
    let single = Agent::with_config(&cluster.ws, "single", "[server]\nenabled = true\n");
    single
        .orch(
            &["operator", "snapshot", "restore", file.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    let ids = |agent: &Agent, path: &str| -> BTreeSet<String> {
        agent
            .get(path)
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|j| j["id"].as_str().map(str::to_string))
            .collect()
    };
    let source = cluster.server(leader);
    assert_eq!(ids(&single, "/v1/jobs"), ids(source, "/v1/jobs"));
    assert_eq!(
        ids(&single, "/v1/allocations"),
        ids(source, "/v1/allocations")
    );
    assert_eq!(ids(&single, "/v1/jobs").len(), 5);
}

#[test]
fn a_single_servers_data_dir_is_upgraded_into_a_cluster() {
    let ws = Workspace::new();
    let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
    // A single server writes some state; then its data dir is made to look as one
    // from before replication (no Raft log, no Raft mark).
    let mut first = Agent::with_ports(
        &ws,
        "s0",
        ports[0].0,
        ports[0].1,
        "[server]\nenabled = true\n",
    );
    let spec = ws.write("old.toml", &batch_spec("old-job"));
    first
        .orch(
            &["job", "run", "--detach", spec.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
    first.terminate(Duration::from_secs(20));
    let dir = ws.path("s0").join("server");
    std::fs::remove_file(dir.join("raft.db")).expect("remove raft.db");
    let _ = std::fs::remove_dir_all(dir.join("raft-snapshots"));
    let cleared = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM raft_applied'); c.commit()",
            dir.join("state.db").to_str().unwrap(),
        ])
        .status()
        .expect("python3");
    assert!(cleared.success());

    // The documented upgrade: the old server alone first, then the new ones join it.
    let join: Vec<String> = ports
        .iter()
        .map(|(_, rpc)| format!("\"127.0.0.1:{rpc}\""))
        .collect();
    let tables = format!(
        "[server]\nenabled = true\nbootstrap_expect = 3\nretry_join = [{}]\n",
        join.join(", ")
    );
    // Started with bootstrap_expect = 3 it refuses, saying what to do.
    let wrong = ws.write(
        "s0-cluster.toml",
        &format!(
            "name = \"s0\"\ndata_dir = {:?}\nbind_addr = \"127.0.0.1\"\n\n[ports]\nhttp = {}\ndns = 0\nrpc = {}\n\n{tables}",
            ws.path("s0").display().to_string(),
            ports[0].0,
            ports[0].1
        ),
    );
    let refused = orch_cmd(
        &["agent", "--config", wrong.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr.contains("start this server alone first"),
        "{}",
        refused.stderr
    );
    first.restart();
    let mut servers = vec![first];
    for (i, (http, rpc)) in ports.iter().enumerate().skip(1) {
        servers.push(Agent::with_ports(
            &ws,
            &format!("s{i}"),
            *http,
            *rpc,
            &tables,
        ));
    }
    for agent in &servers[1..] {
        wait_for(
            Duration::from_secs(60),
            "the new server holds the old job",
            || {
                agent
                    .get("/v1/job/old-job?stale=true")
                    .filter(|j| j["id"] == "old-job")
            },
        );
    }
    let peers = servers[0].get("/v1/status/peers").expect("peers");
    assert_eq!(peers.as_array().map(Vec::len), Some(3), "{peers}");
    // Writes work through any of them.
    let addrs: Vec<String> = ports
        .iter()
        .map(|(http, _)| format!("127.0.0.1:{http}"))
        .collect();
    assert!(register(
        &addrs[1..],
        &batch_spec("new-job"),
        Duration::from_secs(20)
    ));
    wait_for(Duration::from_secs(20), "replicated to the first", || {
        servers[0]
            .get("/v1/job/new-job?stale=true")
            .filter(|j| j["id"] == "new-job")
    });
}

#[test]
fn autopilot_removes_a_dead_server_once_its_replacement_has_joined() {
    let ws = Workspace::new();
    let ports: Vec<(u16, u16)> = free_ports(8).chunks(2).map(|p| (p[0], p[1])).collect();
    let join: Vec<String> = ports
        .iter()
        .map(|(_, rpc)| format!("\"127.0.0.1:{rpc}\""))
        .collect();
    let tables = format!(
        "[server]\nenabled = true\nbootstrap_expect = 3\nretry_join = [{}]\n\
         dead_server_cleanup = \"2s\"\n",
        join.join(", ")
    );
    let mut servers: Vec<Agent> = (0..3)
        .map(|i| Agent::with_ports(&ws, &format!("s{i}"), ports[i].0, ports[i].1, &tables))
        .collect();
    let voters = |agent: &Agent| -> Option<Vec<serde_json::Value>> {
        let members = agent.get("/v1/agent/members")?;
        Some(
            members
                .as_array()?
                .iter()
                .filter(|m| m["voter"] == true)
                .cloned()
                .collect(),
        )
    };
    wait_for(Duration::from_secs(30), "three voters", || {
        (voters(&servers[0])?.len() == 3).then_some(())
    });
    // One dies for good: the cluster keeps it, as removing it would leave fewer than
    // bootstrap_expect servers.
    servers[2].kill9();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(voters(&servers[0]).map(|v| v.len()), Some(3));
    // Its replacement (another address) joins; then the dead one goes.
    let fourth = Agent::with_ports(&ws, "s3", ports[3].0, ports[3].1, &tables);
    let dead = format!("127.0.0.1:{}", ports[2].1);
    let left = wait_for(Duration::from_secs(30), "the dead server removed", || {
        let v = voters(&fourth)?;
        (v.len() == 3 && v.iter().all(|m| m["rpc_addr"] != dead.as_str())).then_some(v)
    });
    assert!(left.iter().all(|m| m["status"] == "alive"), "{left:#?}");
}
