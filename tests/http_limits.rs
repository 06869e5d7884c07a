//! The agent's HTTP listener under a flood of connections that never send a request:
//! with 3,000 of them open (more than the agent may keep waiting), `/v1/agent/health`
//! is still answered, promptly, and the agent does not hold thousands of descriptors.

mod common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use common::*;

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn three_thousand_half_open_connections_do_not_stop_the_health_answer() {
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "agent");
    let addr = host_port(&agent.addr);
    let mut idle = Vec::new();
    let t_open = Instant::now();
    for _ in 0..3000 {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {}: {e}", idle.len()),
        }
    }
    eprintln!("3000 connections opened in {:?}", t_open.elapsed());
    // Let the agent accept them all.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut health = std::net::TcpStream::connect(&addr).unwrap();
    health
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    health
        .write_all(b"GET /v1/agent/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = health.read_to_string(&mut answer);
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    eprintln!("health answered in {took:?} beside 3000 idle connections");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let fds = open_fds(agent.pid().unwrap());
    assert!(fds < 1000, "the agent holds {fds} descriptors");
    drop(idle);
    let t_stop = Instant::now();
    drop(agent);
    eprintln!("agent stopped in {:?}", t_stop.elapsed());
}

/// The peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[test]
fn reading_a_large_log_streams_it_instead_of_holding_it_in_memory() {
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "agent");
    // 120 MiB of output, kept whole: 12 files of up to 10 MiB.
    let spec = ws.write(
        "chatty.toml",
        r#"id = "chatty"
type = "batch"
[group.g.task.t]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "head -c 125829120 /dev/zero | tr '\\0' x"] }
logs = { max_files = 15, max_file_size = 10 }
resources = { cpu = 100, memory = 64 }
"#,
    );
    agent.job_run_file(&spec, Duration::from_secs(120));
    let alloc = agent.job_allocs("chatty")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = agent.pid().unwrap();
    let before = peak_rss_mib(pid);
    let url = format!(
        "{}/v1/client/fs/logs/{alloc}?task=t&type=stdout&origin=start",
        agent.addr
    );
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut resp = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .get(&url)
                    .send()
                    .unwrap();
                let mut sink = std::io::sink();
                resp.copy_to(&mut sink).unwrap()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), 125_829_120, "the whole log, in order");
    }
    let after = peak_rss_mib(pid);
    eprintln!("peak RSS {before} MiB before, {after} MiB after four reads of a 120 MiB log");
    assert!(after < before + 64, "peak RSS {before} -> {after} MiB");
}
