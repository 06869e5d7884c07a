//! `make install` puts the binary, units and example configs in place (keeping configs
//! that exist), and every command's `--help` carries examples.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn make_install_places_binary_units_and_configs_and_keeps_edited_configs() {
    if Command::new("make").arg("--version").output().is_err() {
        eprintln!("skipping make_install_places_binary_units_and_configs_and_keeps_edited_configs: make is not installed");
        return;
    }
    let ws = Workspace::new();
    let dest = ws.path("root");
    let install = || {
        let out = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo_root())
            .arg("install-files")
            .arg(format!("BIN={BIN}"))
            .arg(format!("DESTDIR={}", dest.display()))
            .output()
            .expect("running make");
        assert!(
            out.status.success(),
            "make install-files failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    install();
    for f in [
        "usr/local/bin/orch",
        "usr/local/bin/orch-task-shim",
        "etc/systemd/system/orch-server.service",
        "etc/systemd/system/orch-client.service",
        "etc/orch/server.toml",
        "etc/orch/client.toml",
        "usr/local/share/doc/orch/operations.md",
        "usr/local/share/doc/orch/security.md",
    ] {
        assert!(dest.join(f).is_file(), "{f} not installed");
    }
    let installed = dest.join("usr/local/bin/orch");
    let out = Command::new(&installed).arg("--version").output().unwrap();
    assert!(out.status.success());

    std::fs::write(dest.join("etc/orch/server.toml"), "# edited\n").unwrap();
    let second = install();
    assert!(second.contains("keeping existing"), "{second}");
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/orch/server.toml")).unwrap(),
        "# edited\n"
    );
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in [
        vec![],
        vec!["agent"],
        vec!["job"],
        vec!["job", "run"],
        vec!["job", "validate"],
        vec!["job", "status"],
        vec!["job", "stop"],
        vec!["job", "plan"],
        vec!["job", "scale"],
        vec!["job", "history"],
        vec!["job", "revert"],
        vec!["deployment"],
        vec!["deployment", "list"],
        vec!["deployment", "status"],
        vec!["deployment", "promote"],
        vec!["deployment", "fail"],
        vec!["deployment", "pause"],
        vec!["deployment", "resume"],
        vec!["alloc"],
        vec!["alloc", "status"],
        vec!["alloc", "logs"],
        vec!["node"],
        vec!["node", "status"],
        vec!["node", "eligibility"],
        vec!["node", "drain"],
        vec!["system"],
        vec!["system", "gc"],
        vec!["server"],
        vec!["server", "members"],
        vec!["operator"],
        vec!["operator", "raft"],
        vec!["operator", "raft", "list-peers"],
        vec!["operator", "raft", "remove-peer"],
        vec!["service"],
        vec!["service", "list"],
        vec!["service", "info"],
        vec!["acl"],
        vec!["acl", "policy"],
        vec!["acl", "token"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = orch_cmd(&args, Duration::from_secs(10));
        assert_eq!(out.code(), 0, "orch {}", args.join(" "));
        assert!(
            out.stdout.contains("EXAMPLES:"),
            "orch {}:\n{}",
            args.join(" "),
            out.stdout
        );
    }
}

#[test]
fn bad_usage_exits_two() {
    let out = orch_cmd(&["job", "run"], Duration::from_secs(10));
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let out = orch_cmd(&["no-such-command"], Duration::from_secs(10));
    assert_eq!(out.code(), 2, "{}", out.stderr);
}

#[test]
fn an_unreachable_server_is_an_error_with_exit_one() {
    let out = orch_cmd(
        &["--address", "127.0.0.1:9", "job", "status"],
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("Error: "), "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    for args in [
        &["--address", "127.0.0.1:9", "service", "list"][..],
        &["--address", "127.0.0.1:9", "service", "info", "web"][..],
    ] {
        let out = orch_cmd(args, Duration::from_secs(30));
        assert_eq!(out.code(), 1, "orch {}: {}", args.join(" "), out.stderr);
        assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    }
}
