//! The systemd units in deploy/systemd pass `systemd-analyze verify` (pointed at the
//! built binary, since verify checks that ExecStart exists).

mod common;

use std::process::Command;

use common::*;

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping systemd_units_pass_systemd_analyze_verify: systemd-analyze is not installed (.ci/run installs it)");
        return;
    }
    let ws = Workspace::new();
    let mut units = Vec::new();
    for name in ["orch-server.service", "orch-client.service"] {
        let text = std::fs::read_to_string(repo_root().join("deploy/systemd").join(name)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/orch agent --config /etc/orch/"),
            "{name}"
        );
        let conf = ws.path(
            name.trim_start_matches("orch-")
                .replace(".service", ".toml")
                .as_str(),
        );
        let text = text.replace("/usr/local/bin/orch", BIN).replace(
            &format!("/etc/orch/{}", conf.file_name().unwrap().to_str().unwrap()),
            conf.to_str().unwrap(),
        );
        units.push(ws.write(name, &text));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("orch-")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn example_agent_configs_in_deploy_are_accepted_by_the_agent_parser() {
    // `orch agent --config` with an unusable data dir fails after parsing, so a parse
    // error would show up as a TOML/field complaint instead.
    for name in ["server.toml", "client.toml"] {
        let ws = Workspace::new();
        let text = std::fs::read_to_string(repo_root().join("deploy").join(name)).unwrap();
        // Point it somewhere harmless: a file where the data dir should be.
        let blocker = ws.write("blocker", "");
        let text = text.replace("/var/lib/orch", blocker.join("data").to_str().unwrap());
        let cfg = ws.write(name, &text);
        let out = orch_cmd(
            &["agent", "--config", cfg.to_str().unwrap()],
            std::time::Duration::from_secs(30),
        );
        assert_eq!(out.code(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("data_dir"), "{name}: {}", out.stderr);
    }
}

#[test]
fn the_example_configs_run_a_secure_cluster_with_the_certificates_their_comments_make() {
    let ws = Workspace::new();
    let tls = ws.path("etc-orch-tls");
    std::fs::create_dir_all(&tls).unwrap();
    let t = std::time::Duration::from_secs(60);
    let dir = tls.to_str().unwrap();
    // The commands the comments in deploy/server.toml give.
    orch_cmd(&["tls", "ca", "create", "--dir", dir], t).ok();
    for role in ["--server", "--client", "--cli"] {
        orch_cmd(&["tls", "cert", "create", role, "--dir", dir], t).ok();
    }
    let (server_port, client_port) = (free_port(), free_port());
    let adapt = |name: &str| {
        let text = std::fs::read_to_string(repo_root().join("deploy").join(name)).unwrap();
        let data = ws.path(name.trim_end_matches(".toml"));
        text.replace("/var/lib/orch", data.to_str().unwrap())
            .replace("/etc/orch/tls", dir)
            .replace("http = 4747", &format!("http = {server_port}\ndns = 0"))
            .replace("127.0.0.1:4747", &format!("127.0.0.1:{server_port}"))
            .replace("http = 4646", &format!("http = {client_port}"))
    };
    let server_cfg = ws.write("server.toml", &adapt("server.toml"));
    let client_cfg = ws.write("client.toml", &adapt("client.toml"));
    let server = Agent::with_args(
        &ws,
        "server",
        &["agent", "--config", server_cfg.to_str().unwrap()],
    );
    let _client = Agent::with_args(
        &ws,
        "client",
        &["agent", "--config", client_cfg.to_str().unwrap()],
    );
    assert!(server.addr.starts_with("https://"), "{}", server.addr);

    let ca = tls.join("orch-agent-ca.pem");
    let cert = tls.join("global-cli-orch.pem");
    let key = tls.join("global-cli-orch-key.pem");
    let env = [
        ("ORCH_CACERT", ca.to_str().unwrap()),
        ("ORCH_CLIENT_CERT", cert.to_str().unwrap()),
        ("ORCH_CLIENT_KEY", key.to_str().unwrap()),
    ];
    let orch = |args: &[&str]| {
        let mut full = vec!["--address", server.addr.as_str()];
        full.extend_from_slice(args);
        orch_cmd_env(&full, &env, t)
    };
    // ACLs are on: nothing anonymous, then the bootstrap the comments give.
    let anonymous = orch(&["node", "status"]);
    assert_ne!(anonymous.code(), 0);
    assert!(
        anonymous.stderr.contains("node:read"),
        "{}",
        anonymous.stderr
    );
    let boot = orch(&["--json", "acl", "bootstrap"]);
    assert_eq!(boot.code(), 0, "{}", boot.stderr);
    let root: serde_json::Value = serde_json::from_str(&boot.stdout).unwrap();
    let root = root["secret"].as_str().unwrap().to_string();
    wait_for(t, "the client's node, ready", || {
        let out = orch(&["--token", &root, "--json", "node", "status"]);
        let nodes: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (nodes.as_array()?.iter().any(|n| n["status"] == "ready")).then_some(())
    });
}
