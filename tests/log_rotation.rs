//! Task output rotates per the task's `logs` settings: only `max_files` files of
//! `max_file_size` MiB are kept, and `orch alloc logs` (tail and follow) reads across
//! the rotated files.

mod common;

use std::time::Duration;

use common::*;

const SPEC: &str = r#"
id = "chatty"
type = "batch"

[group.talk]
count = 1

[group.talk.task.talk]
driver = "raw_exec"
# 3,500 lines of 1 KiB (3.4 MiB), a pause (so `logs -f` starts while it runs), more
# lines, then a last line.
config = { command = "/bin/sh", args = ["-c", "yes $(printf %01023d 0) | head -n 3500; sleep 3; yes more | head -n 2000; echo the-end"] }
resources = { cpu = 20, memory = 32 }
logs = { max_files = 2, max_file_size = 1 }
"#;

#[test]
fn task_output_rotates_and_logs_read_across_the_files_as_root() {
    if skip_unless_root("task_output_rotates_and_logs_read_across_the_files_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let spec = ws.write("chatty.toml", SPEC);
    agent
        .orch(
            &["job", "run", "--detach", spec.to_str().unwrap()],
            Duration::from_secs(30),
        )
        .ok();
    let alloc = wait_for(Duration::from_secs(60), "the allocation to run", || {
        agent
            .job_allocs("chatty")
            .into_iter()
            .find(|a| a["client_status"] == "running")
    });
    let id = alloc["id"].as_str().unwrap().to_string();

    // Started while the task runs: follows through the rotations to its last line.
    let follow = {
        let args = ["alloc", "logs", "-f", "--tail", "1", &id[..8]];
        let address = agent.addr.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            let mut full = vec!["--address".to_string(), address];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            orch_cmd(&refs, Duration::from_secs(90))
        })
    };

    wait_for(
        Duration::from_secs(90),
        "the batch task to complete",
        || {
            let a = agent.get(&format!("/v1/allocation/{id}"))?;
            (a["client_status"] == "complete").then_some(())
        },
    );
    let logs_dir = agent.data_dir.join("alloc").join(&id).join("alloc/logs");
    let mut files: Vec<String> = std::fs::read_dir(&logs_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("talk.stdout."))
        .collect();
    files.sort();
    // 3.5 MiB + 12 KiB of output in 1 MiB files: .0 .. .3 written, the two newest kept.
    assert_eq!(
        files,
        vec!["talk.stdout.2", "talk.stdout.3"],
        "in {}",
        logs_dir.display()
    );
    for f in &files[..1] {
        let len = std::fs::metadata(logs_dir.join(f)).unwrap().len();
        assert_eq!(len, 1024 * 1024, "{f} is a full file");
    }

    let tail = agent
        .orch(
            &["alloc", "logs", "--tail", "2", &id[..8]],
            Duration::from_secs(20),
        )
        .ok();
    assert_eq!(tail.stdout, "more\nthe-end\n");

    let followed = follow.join().unwrap();
    assert_eq!(followed.code(), 0, "{}", followed.stderr);
    assert!(
        followed.stdout.ends_with("more\nthe-end\n"),
        "followed output ends: {:?}",
        &followed.stdout[followed.stdout.len().saturating_sub(200)..]
    );
    assert!(
        followed.stdout.matches("more\n").count() >= 2000,
        "every later line was followed"
    );
}
