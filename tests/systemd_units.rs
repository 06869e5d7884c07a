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
