//! The DNS interface end to end: a dev agent runs two instances of a service whose
//! script check passes while a file exists in the task's directory; `dig` (UDP and
//! TCP) lists exactly the passing instances, and one whose file is removed (its check
//! goes critical) drops out of the answer.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const JOB: &str = r#"
id = "dns-web"

[group.web]
count = 2

[group.web.network.port.http]

[[group.web.service]]
name = "web"
port = "http"
tags = ["v1"]
check = [
  { name = "file", type = "script", command = "/bin/sh", args = ["-c", "test -f $ORCH_TASK_DIR/healthy"], interval = "1s", timeout = "1s" },
]

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "touch $ORCH_TASK_DIR/healthy && exec sleep 3600"] }
resources = { cpu = 50, memory = 32 }
"#;

/// `dig ... +noall +comments`'s status (NOERROR, NXDOMAIN, ...).
fn dig_status(port: u16, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), name, rtype])
        .args(["+time=2", "+tries=1", "+noall", "+comments"])
        .output()
        .expect("running dig");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no status in dig output:\n{text}"))
}

/// The SRV answer's ports, sorted.
fn srv_ports(lines: &[String]) -> BTreeSet<u16> {
    lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

#[test]
fn dig_lists_exactly_the_passing_instances_as_root() {
    if skip_unless_root("dig_lists_exactly_the_passing_instances_as_root") {
        return;
    }
    if !have_dig() {
        eprintln!("skipping: `dig` is not installed (apt-get install dnsutils)");
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let port = dns_port(&agent);

    // Before the job runs: an unknown service is NXDOMAIN, other zones are refused.
    assert_eq!(dig_status(port, "web.service.orch", "SRV"), "NXDOMAIN");
    assert_eq!(dig_status(port, "example.com", "A"), "REFUSED");

    let spec = ws.write("dns-web.toml", JOB);
    agent.job_run_file(&spec, Duration::from_secs(120));

    // (alloc id, port) of both instances once both pass.
    let instances: Vec<(String, u16)> = wait_for(
        Duration::from_secs(60),
        "two passing instances of service web",
        || {
            let v = agent.get("/v1/service/web?healthy=true")?;
            let list = v.as_array()?;
            (list.len() == 2).then(|| {
                list.iter()
                    .map(|i| {
                        (
                            i["alloc_id"].as_str().unwrap().to_string(),
                            i["port"].as_u64().unwrap() as u16,
                        )
                    })
                    .collect()
            })
        },
    );
    let all_ports: BTreeSet<u16> = instances.iter().map(|(_, p)| *p).collect();
    assert_eq!(all_ports.len(), 2, "{instances:?}");

    let srv = wait_for(Duration::from_secs(20), "both ports over DNS", || {
        let lines = dig(port, "web.service.orch", "SRV", &[]);
        (srv_ports(&lines) == all_ports).then_some(lines)
    });
    assert_eq!(srv.len(), 2, "exactly the two instances: {srv:?}");
    for line in &srv {
        assert!(
            line.starts_with("0 0 ") && line.ends_with(".addr.orch."),
            "{line}"
        );
    }
    // The SRV target resolves, and so does the service's own A record.
    let target = srv[0].split_whitespace().nth(3).unwrap().to_string();
    let target_a = dig(port, &target, "A", &[]);
    assert_eq!(target_a.len(), 1, "{target_a:?}");
    let a = dig(port, "web.service.orch", "A", &[]);
    assert_eq!(a, target_a, "both instances run on this node");
    // TCP answers the same; so does the tag name.
    let tcp = dig(port, "web.service.orch", "SRV", &["+tcp"]);
    assert_eq!(srv_ports(&tcp), all_ports, "{tcp:?}");
    let tagged = dig(port, "v1.web.service.orch", "SRV", &[]);
    assert_eq!(srv_ports(&tagged), all_ports, "{tagged:?}");
    assert_eq!(dig_status(port, "v9.web.service.orch", "SRV"), "NXDOMAIN");

    // One instance's check goes critical: its port leaves the answer, the other stays.
    let (sick_alloc, sick_port) = instances[0].clone();
    let healthy_port = instances[1].1;
    let flag: PathBuf = agent
        .data_dir
        .join("alloc")
        .join(&sick_alloc)
        .join("server/local/healthy");
    std::fs::remove_file(&flag).unwrap_or_else(|e| panic!("removing {}: {e}", flag.display()));
    let left = wait_for(
        Duration::from_secs(30),
        "only the healthy instance over DNS",
        || {
            let lines = dig(port, "web.service.orch", "SRV", &[]);
            (srv_ports(&lines) == BTreeSet::from([healthy_port])).then_some(lines)
        },
    );
    assert_eq!(left.len(), 1, "{left:?}");
    let tcp = dig(port, "web.service.orch", "SRV", &["+tcp"]);
    assert_eq!(srv_ports(&tcp), BTreeSet::from([healthy_port]), "{tcp:?}");
    assert_ne!(sick_port, healthy_port);

    // Both critical: the name still exists (NOERROR) but has no records.
    let flag2 = agent
        .data_dir
        .join("alloc")
        .join(&instances[1].0)
        .join("server/local/healthy");
    std::fs::remove_file(&flag2).unwrap_or_else(|e| panic!("removing {}: {e}", flag2.display()));
    wait_for(Duration::from_secs(30), "no instance over DNS", || {
        dig(port, "web.service.orch", "SRV", &[])
            .is_empty()
            .then_some(())
    });
    assert_eq!(dig_status(port, "web.service.orch", "SRV"), "NOERROR");

    agent.orch(&["job", "stop", "dns-web"], Duration::from_secs(60));
}

/// A DNS query for `name` (type A), id `id`, as bytes on the wire.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, A, IN
    q
}

#[test]
fn a_flood_of_udp_queries_from_one_source_is_answered_at_its_rate_only() {
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "agent");
    let port = dns_port(&agent);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    // A name answered from itself (no catalog read): every answer costs the same.
    let reader = socket.try_clone().unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut answered = 0;
        while reader.recv(&mut buf).is_ok() {
            answered += 1;
        }
        answered
    });
    let started = std::time::Instant::now();
    for id in 0..1000u16 {
        socket.send(&query(id, "10-0-0-5.addr.orch")).unwrap();
    }
    let sent_in = started.elapsed();
    let answered = counter.join().unwrap();
    // The burst (200), plus 100/s for the time the flood took.
    let allowed = 200 + (sent_in.as_secs_f64() * 100.0).ceil() as usize + 5;
    assert!(
        (150..=allowed).contains(&answered),
        "{answered} of 1000 answered in {sent_in:?} (allowed {allowed})"
    );
}
