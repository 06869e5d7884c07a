//! `orch alloc exec` runs a command inside a running raw_exec task: in its cgroup and
//! environment, with stdin passed through, stdout and stderr apart, its exit code
//! returned, and a terminal with `-t`.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SPEC: &str = r#"
id = "sleeper"

[group.web]
count = 1

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "exec sleep 600"] }
resources = { cpu = 20, memory = 32 }
env = { GREETING = "hello from the task" }
"#;

/// `orch --address A ARGS` with `input` on stdin.
fn orch_with_input(agent: &Agent, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("--address")
        .arg(&agent.addr)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning orch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for orch");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn exec_runs_inside_the_task_with_its_io_and_exit_code_as_root() {
    if skip_unless_root("exec_runs_inside_the_task_with_its_io_and_exit_code_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = ws.write("sleeper.toml", SPEC);
    agent
        .orch(
            &["job", "run", spec.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    let alloc = wait_for(Duration::from_secs(60), "the allocation to run", || {
        agent
            .job_allocs("sleeper")
            .into_iter()
            .find(|a| a["client_status"] == "running")
    });
    let id = alloc["id"].as_str().unwrap().to_string();

    // Environment, cgroup, separate streams and the exit code.
    let script = "echo \"$GREETING\"; echo \"alloc $ORCH_ALLOC_ID\"; cat /proc/self/cgroup; echo oops >&2; exit 3";
    let out = agent.orch(
        &["alloc", "exec", &id[..8], "--", "/bin/sh", "-c", script],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.code(),
        3,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("hello from the task"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("alloc {id}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(":memory:") && l.contains(&id)),
        "runs in the task's memory cgroup:\n{}",
        out.stdout
    );
    assert_eq!(out.stderr.trim(), "oops");

    // stdin reaches the command, and its end ends `cat`.
    let piped = orch_with_input(
        &agent,
        &["alloc", "exec", &id[..8], "server", "--", "cat"],
        "line one\nline two\n",
    );
    assert_eq!(piped.code(), 0, "{}", piped.stderr);
    assert_eq!(piped.stdout, "line one\nline two\n");

    // -t: the command's stdio is a terminal.
    let tty = orch_with_input(
        &agent,
        &[
            "alloc",
            "exec",
            "-t",
            &id[..8],
            "--",
            "/bin/sh",
            "-c",
            "tty; exit 0",
        ],
        "",
    );
    assert_eq!(tty.code(), 0, "{}", tty.stderr);
    assert!(tty.stdout.contains("/dev/pts/"), "{:?}", tty.stdout);

    // Errors name the problem and exit non-zero.
    let bad = agent.orch(
        &["alloc", "exec", &id[..8], "nope", "--", "true"],
        Duration::from_secs(30),
    );
    assert_ne!(bad.code(), 0);
    assert!(bad.stderr.contains("nope"), "{}", bad.stderr);
    let missing = agent.orch(
        &["alloc", "exec", &id[..8], "--", "/no/such/program"],
        Duration::from_secs(30),
    );
    assert_ne!(missing.code(), 0);
    assert!(
        missing.stderr.contains("/no/such/program"),
        "{}",
        missing.stderr
    );
}

#[test]
fn past_64_open_exec_sessions_a_new_one_is_refused_until_one_ends_as_root() {
    if skip_unless_root("past_64_open_exec_sessions_a_new_one_is_refused_until_one_ends_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = ws.write("sleeper.toml", SPEC);
    agent.job_run_file(&spec, Duration::from_secs(60));
    let alloc = agent.job_allocs("sleeper")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sessions: Vec<std::process::Child> = (0..64)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_orch"))
                .args(["--address", &agent.addr, "alloc", "exec", &alloc, "--"])
                .args(["/bin/sleep", "61"])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning orch")
        })
        .collect();
    // All 64 open: their sleeps run in the task's process tree.
    wait_for(Duration::from_secs(60), "64 exec sessions", || {
        let out = Command::new("pgrep")
            .args(["-c", "-f", "^/bin/sleep 61$"])
            .output()
            .ok()?;
        let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (n >= 64).then_some(())
    });
    let refused = agent.orch(
        &["alloc", "exec", &alloc, "--", "/bin/echo", "one more"],
        Duration::from_secs(30),
    );
    assert_ne!(refused.code(), 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("too many exec sessions"),
        "{}",
        refused.stderr
    );
    for s in &mut sessions {
        let _ = s.kill();
        let _ = s.wait();
    }
    wait_for(
        Duration::from_secs(30),
        "a session once the others ended",
        || {
            let ok = agent.orch(
                &["alloc", "exec", &alloc, "--", "/bin/echo", "one more"],
                Duration::from_secs(30),
            );
            (ok.code() == 0 && ok.stdout.contains("one more")).then_some(())
        },
    );
}
