//! The agent process itself: configuration errors, the ready line, clean SIGTERM.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn an_unknown_agent_config_field_is_refused_with_its_line() {
    let ws = Workspace::new();
    let cfg = ws.write(
        "agent.toml",
        "data_dir = \"/tmp/x\"\n\n[server]\nenabeld = true\n",
    );
    let out = orch_cmd(
        &["agent", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("enabeld"), "{}", out.stderr);
    assert!(out.stderr.contains("line 4"), "{}", out.stderr);
}

#[test]
fn a_server_agent_answers_health_and_exits_zero_on_sigterm() {
    let ws = Workspace::new();
    let mut server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let health = server
        .get("/v1/agent/health")
        .expect("GET /v1/agent/health");
    assert_eq!(health["ok"], true, "{health}");
    let leader = server
        .get("/v1/status/leader")
        .expect("GET /v1/status/leader");
    assert!(leader.is_string(), "{leader}");
    let status = server
        .terminate(Duration::from_secs(20))
        .expect("exit status");
    assert!(
        status.success(),
        "agent exited with {status}\n{}",
        server.log()
    );
}

#[test]
fn a_dev_agent_removes_its_temp_data_dir_on_sigterm_as_root() {
    if skip_unless_root("a_dev_agent_removes_its_temp_data_dir_on_sigterm_as_root") {
        return;
    }
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .args(["agent", "--dev", "--http-port", "0"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = l.strip_prefix("orch agent: listening on ") {
                let _ = tx.send(a.trim().to_string());
            }
            lines.push(l);
        }
        lines
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the ready line");
    let me: serde_json::Value = http()
        .get(format!("{addr}/v1/agent/self"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["server"], true, "{me}");
    assert_eq!(me["client"], true, "{me}");
    let data_dir = std::path::PathBuf::from(me["data_dir"].as_str().unwrap());
    let data_root = data_dir
        .ancestors()
        .find(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("orch-dev-"))
                .unwrap_or(false)
        })
        .unwrap_or(&data_dir)
        .to_path_buf();
    assert!(data_root.is_dir(), "{}", data_root.display());

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    cleanup_tasks(&data_root);
    assert!(status.success(), "{status}: {lines:#?}");
    assert!(!data_root.exists(), "{} left behind", data_root.display());
}
