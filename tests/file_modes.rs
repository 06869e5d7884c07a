//! File modes on disk do not depend on the umask: an agent started with umask 000 still
//! keeps its data dir closed to listing (0711), its state (server/ 0700, state.db and
//! its -wal/-shm 0600), its client files (client/ and handles/ 0700, the handle files
//! and node secret 0600), its task logs (0640) and the tasks' exit files (0644, not
//! writable by others); and no file holding a job's
//! environment is world-readable.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

const SECRET: &str = "s3cret-6f1d0c2e9b";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every regular file under `dir` whose content holds `needle`.
fn files_holding(dir: &Path, needle: &[u8], found: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files_holding(&path, needle, found);
        } else if meta.is_file() {
            let data = std::fs::read(&path).unwrap_or_default();
            if data.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
}

#[test]
fn files_keep_their_modes_under_a_umask_of_zero_as_root() {
    if skip_unless_root("files_keep_their_modes_under_a_umask_of_zero_as_root") {
        return;
    }
    let ws = Workspace::new();
    let launch = Launch {
        env: Vec::new(),
        umask: Some(0),
    };
    let agent = Agent::dev_launch(&ws, "dev", &launch);
    wait_for_ready_nodes(&agent, 1);
    let spec = ws.write(
        "secret.toml",
        &format!(
            r#"id = "secret"
[group.app]
count = 1
[group.app.task.main]
driver = "raw_exec"
config = {{ command = "/bin/sh", args = ["-c", "echo token=$API_TOKEN; sleep 300"] }}
env = {{ API_TOKEN = "{SECRET}" }}
resources = {{ cpu = 50, memory = 32 }}
"#
        ),
    );
    agent.job_run_file(&spec, Duration::from_secs(120));

    let data = agent.data_dir.clone();
    let alloc_id = wait_for(Duration::from_secs(60), "the task's log", || {
        let ids = alloc_ids_in(&data);
        ids.into_iter().find(|id| {
            let log = data.join("alloc").join(id).join("alloc/logs/main.stdout.0");
            std::fs::read_to_string(log).is_ok_and(|t| t.contains("token="))
        })
    });
    let handles = data.join("client/handles");
    let handle = wait_for(Duration::from_secs(30), "a handle file", || {
        std::fs::read_dir(&handles)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
    });

    assert_eq!(mode(&data), 0o711, "data dir");
    assert_eq!(mode(&data.join("server")), 0o700, "server dir");
    let db = data.join("server/state.db");
    assert_eq!(mode(&db), 0o600, "state.db");
    for suffix in ["-wal", "-shm"] {
        let p = data.join(format!("server/state.db{suffix}"));
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert_eq!(mode(&data.join("client")), 0o700, "client dir");
    assert_eq!(mode(&data.join("client/node-secret")), 0o600);
    assert_eq!(mode(&handles), 0o700, "handles dir");
    assert_eq!(mode(&handle), 0o600, "{}", handle.display());
    assert_eq!(mode(&data.join("alloc")), 0o711, "alloc root");
    let alloc = data.join("alloc").join(&alloc_id);
    assert_eq!(mode(&alloc), 0o755, "alloc dir");
    assert_eq!(mode(&alloc.join("alloc/logs")), 0o755, "logs dir");
    assert_eq!(mode(&alloc.join("alloc/logs/main.stdout.0")), 0o640);
    assert_eq!(mode(&alloc.join("alloc/logs/main.stderr.0")), 0o640);
    // The client's control files: its own, in a directory the task cannot write.
    assert_eq!(mode(&alloc.join(".ctl")), 0o700);
    assert_eq!(mode(&alloc.join(".ctl/main")), 0o700);
    assert_eq!(mode(&alloc.join(".ctl/main/exit.json")), 0o600);

    // The job's environment is in the state and, echoed, in the task's log: never in
    // a file others may read.
    let mut holding = Vec::new();
    files_holding(&data, SECRET.as_bytes(), &mut holding);
    assert!(
        !holding.is_empty(),
        "the secret should be somewhere (the state)"
    );
    for p in &holding {
        assert_eq!(mode(p) & 0o004, 0, "{} is world-readable", p.display());
    }

    let stop = agent.orch(&["job", "stop", "secret"], Duration::from_secs(60));
    assert_eq!(stop.code(), 0, "{}\n{}", stop.stdout, stop.stderr);
}
