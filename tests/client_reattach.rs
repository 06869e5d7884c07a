//! Issue 5, "Agents that restart": a client killed with SIGKILL and started again on
//! the same data dir re-attaches to its running tasks (the same pids keep running, no
//! second copy starts, the allocations stay `running` with their restart counts, and
//! output written while it was down reaches the logs without a gap); a task that ended
//! while it was down is reported with its real exit code.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Two instances writing `n=<counter>` every 100 ms; and one instance that exits 7 as
/// soon as `<trigger>` exists (checked every 100 ms).
fn specs(ws: &Workspace, trigger: &Path) -> (PathBuf, PathBuf) {
    let counter = ws.write(
        "counter.toml",
        r#"id = "counter"
[group.c]
count = 2
[group.c.task.count]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "i=0; while true; do echo n=$i; i=$((i+1)); sleep 0.1; done"] }
resources = { cpu = 50, memory = 32 }
"#,
    );
    let quitter = ws.write(
        "quitter.toml",
        &format!(
            r#"id = "quitter"
[group.q]
count = 1
[group.q.restart]
attempts = 3
interval = "10m"
delay = "1s"
mode = "fail"
[group.q.task.quit]
driver = "raw_exec"
config = {{ command = "/bin/sh", args = ["-c", "while [ ! -e {t} ]; do sleep 0.1; done; exit 7"] }}
resources = {{ cpu = 50, memory = 32 }}
"#,
            t = trigger.display()
        ),
    );
    (counter, quitter)
}

fn running(server: &Agent, job: &str) -> Vec<serde_json::Value> {
    server
        .job_allocs(job)
        .into_iter()
        .filter(|a| a["client_status"] == "running" && a["desired_status"] == "run")
        .collect()
}

/// The pid the client recorded for each task, from its handle files.
fn handle_pids(data_dir: &Path) -> BTreeSet<(String, i32)> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(data_dir.join("client/handles"))
        .unwrap()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(h) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        out.insert((
            h["alloc_id"].as_str().unwrap_or_default().to_string(),
            h["pid"].as_i64().unwrap_or(0) as i32,
        ));
    }
    out
}

/// The main processes of an allocation's tasks: those leading their own process group
/// (each copy of a task is one; the forks of its shell for `sleep` come and go in its
/// group).
fn shells(alloc: &str) -> Vec<i32> {
    let ids = BTreeSet::from([alloc.to_string()]);
    task_pids(None, &ids)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(*pid)
        })
        .collect()
}

fn counter_lines(data_dir: &Path, alloc: &str) -> Vec<u64> {
    let log = data_dir.join(format!("alloc/{alloc}/alloc/logs/count.stdout.0"));
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("n=")?.parse().ok())
        .collect()
}

fn restarts(a: &serde_json::Value, task: &str) -> u64 {
    a["task_states"][task]["restarts"].as_u64().unwrap_or(0)
}

#[test]
fn a_sigkilled_client_re_attaches_to_its_tasks_as_root() {
    if skip_unless_root("a_sigkilled_client_re_attaches_to_its_tasks_as_root") {
        return;
    }
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(|s| s.as_str()).collect();
    let mut client = Agent::with_config(&ws, "client", &client_section(&servers, 1024, ""));
    wait_for_ready_nodes(&server, 1);

    let trigger = ws.path("quit-now");
    let (counter, quitter) = specs(&ws, &trigger);
    for spec in [&counter, &quitter] {
        server
            .orch(
                &["job", "run", "--detach", spec.to_str().unwrap()],
                Duration::from_secs(60),
            )
            .ok();
    }
    let before = wait_for(Duration::from_secs(60), "3 allocations running", || {
        let c = running(&server, "counter");
        let q = running(&server, "quitter");
        (c.len() == 2 && q.len() == 1).then_some((c, q))
    });
    let counter_ids: BTreeSet<String> = before
        .0
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let quit_id = before.1[0]["id"].as_str().unwrap().to_string();
    let pids_before = wait_for(Duration::from_secs(30), "3 task handles", || {
        let p = handle_pids(&client.data_dir);
        (p.len() == 3).then_some(p)
    });
    for id in &counter_ids {
        wait_for(Duration::from_secs(30), "counter output", || {
            (counter_lines(&client.data_dir, id).len() >= 3).then_some(())
        });
    }

    // The client dies without any cleanup; the tasks write on meanwhile, and the
    // quitter exits 7 while no client runs.
    client.kill9();
    std::fs::write(&trigger, "").unwrap();
    let exit_file = client
        .data_dir
        .join(format!("alloc/{quit_id}/.ctl/quit/exit.json"));
    wait_for(
        Duration::from_secs(30),
        "the quitter's recorded exit",
        || exit_file.exists().then_some(()),
    );
    std::thread::sleep(Duration::from_millis(800));
    let down_since = counter_ids
        .iter()
        .map(|id| (id.clone(), counter_lines(&client.data_dir, id).len()))
        .collect::<Vec<_>>();
    client.restart();

    // The same counter processes run, once each, and the allocations stay running
    // with their ids and restart counts.
    for (alloc, pid) in pids_before.iter().filter(|(a, _)| counter_ids.contains(a)) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(stat.trim(), "sh", "task {pid} of {alloc} is gone");
        assert_eq!(shells(alloc), vec![*pid], "a second copy of {alloc} runs");
    }
    // Output written while the client was down reaches the logs, without a gap.
    for (id, lines_then) in &down_since {
        let lines = wait_for(Duration::from_secs(30), "output after the restart", || {
            let l = counter_lines(&client.data_dir, id);
            (l.len() >= lines_then + 10).then_some(l)
        });
        let expected: Vec<u64> = (0..lines.len() as u64).collect();
        assert_eq!(lines, expected, "the counter of {id} has a gap");
    }
    let after = running(&server, "counter");
    let ids_after: BTreeSet<String> = after
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids_after, counter_ids);
    for (a, b) in after.iter().zip(before.0.iter()) {
        assert_eq!(restarts(a, "count"), restarts(b, "count"));
    }
    for (alloc, pid) in pids_before.iter().filter(|(a, _)| counter_ids.contains(a)) {
        assert_eq!(shells(alloc), vec![*pid]);
    }

    // The quitter's real exit is reported, then its restart policy starts it again.
    let q = wait_for(Duration::from_secs(60), "the quitter's exit 7", || {
        let a = server.get(&format!("/v1/allocation/{quit_id}"))?;
        let events = a["task_states"]["quit"]["events"].as_array()?.clone();
        events
            .iter()
            .any(|e| e["kind"] == "Terminated" && e["exit_code"] == 7)
            .then_some(a)
    });
    assert_eq!(q["id"], quit_id.as_str());
    wait_for(Duration::from_secs(60), "the quitter to restart", || {
        let a = server.get(&format!("/v1/allocation/{quit_id}"))?;
        (restarts(&a, "quit") >= 1).then_some(())
    });

    for job in ["counter", "quitter"] {
        server
            .orch(&["job", "stop", job], Duration::from_secs(60))
            .ok();
    }
    wait_for(Duration::from_secs(60), "every task to stop", || {
        let ids: BTreeSet<String> = alloc_ids_in(&client.data_dir);
        task_pids(Some(&client.data_dir), &ids)
            .is_empty()
            .then_some(())
    });
}

#[test]
fn a_sigkilled_client_re_attaches_to_a_running_container_as_root() {
    if skip_unless_root("a_sigkilled_client_re_attaches_to_a_running_container_as_root") {
        return;
    }
    let ws = Workspace::new();
    let Some(rootfs) = busybox_rootfs_in(&ws) else {
        return;
    };
    let spec = ws.write(
        "boxed.toml",
        &format!(
            r#"id = "boxed"
[group.c]
count = 1
[group.c.task.count]
driver = "container"
config = {{ rootfs = "{}", command = "/bin/sh", args = ["-c", "i=0; while true; do echo n=$i; i=$((i+1)); sleep 0.1; done"] }}
resources = {{ cpu = 50, memory = 32 }}
"#,
            rootfs.display()
        ),
    );
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(|s| s.as_str()).collect();
    let mut client = Agent::with_config(&ws, "client", &client_section(&servers, 1024, ""));
    wait_for_ready_nodes(&server, 1);
    server
        .orch(
            &["job", "run", "--detach", spec.to_str().unwrap()],
            Duration::from_secs(60),
        )
        .ok();
    let before = wait_for(Duration::from_secs(60), "the container running", || {
        let r = running(&server, "boxed");
        (r.len() == 1).then(|| r[0].clone())
    });
    let id = before["id"].as_str().unwrap().to_string();
    let pids_before = wait_for(Duration::from_secs(30), "its task handle", || {
        let p = handle_pids(&client.data_dir);
        (p.len() == 1).then_some(p)
    });
    wait_for(Duration::from_secs(30), "container output", || {
        (counter_lines(&client.data_dir, &id).len() >= 3).then_some(())
    });

    client.kill9();
    std::thread::sleep(Duration::from_millis(800));
    let lines_then = counter_lines(&client.data_dir, &id).len();
    client.restart();

    // The same container keeps running: its recorded process is alive, the allocation
    // keeps its id and restart count, and the counter goes on without starting over.
    let (_, pid) = pids_before.iter().next().unwrap().clone();
    let lines = wait_for(Duration::from_secs(30), "output after the restart", || {
        let l = counter_lines(&client.data_dir, &id);
        (l.len() >= lines_then + 10).then_some(l)
    });
    let expected: Vec<u64> = (0..lines.len() as u64).collect();
    assert_eq!(lines, expected, "the counter has a gap or started over");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container process {pid} is gone"
    );
    assert_eq!(handle_pids(&client.data_dir), pids_before);
    let after = running(&server, "boxed");
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["id"], id.as_str());
    assert_eq!(restarts(&after[0], "count"), restarts(&before, "count"));

    server
        .orch(&["job", "stop", "boxed"], Duration::from_secs(60))
        .ok();
    wait_for(Duration::from_secs(60), "the container to stop", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}
