//! A task cannot reach outside its sandbox through the client: the client (root)
//! never follows a symlink the task left in its own directory. A `raw_exec` task
//! running as `nobody` replaces its `local/` with a symlink to a root-only directory
//! and the client's exit record with a symlink to a root file, then fails so that the
//! client restarts it: the directory stays root's, the file keeps its bytes.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::time::Duration;

use common::*;

#[test]
fn a_restart_follows_no_symlink_the_task_left_as_root() {
    if skip_unless_root("a_restart_follows_no_symlink_the_task_left_as_root") {
        return;
    }
    let ws = Workspace::new();
    let victim_dir = ws.path("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim_file = ws.write("victim-file", "precious\n");
    std::fs::set_permissions(&victim_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The first run plants the symlinks and fails; the restart finds them.
    let script = format!(
        "cd \"$ORCH_TASK_DIR/..\" || exit 3
if [ -e \"$ORCH_ALLOC_DIR/data/planted\" ]; then exit 0; fi
touch \"$ORCH_ALLOC_DIR/data/planted\" || exit 4
for f in .exit.json .stdout.fifo .stderr.fifo; do rm -f $f; ln -s {file} $f; done
rm -rf local tmp && ln -s {dir} local && ln -s {dir} tmp || exit 5
exit 1",
        file = victim_file.display(),
        dir = victim_dir.display()
    );
    let spec = ws.write(
        "plant.toml",
        &format!(
            r#"id = "plant"
type = "batch"
[group.g]
restart = {{ attempts = 2, delay = "0s", mode = "fail" }}
reschedule = {{ attempts = 0, unlimited = false }}
[group.g.task.t]
driver = "raw_exec"
config = {{ command = "/bin/sh", args = ["-c", {script:?}] }}
resources = {{ cpu = 20, memory = 32 }}
"#
        ),
    );
    // A client with the secure defaults: tasks run as nobody.
    let agent = Agent::with_config(
        &ws,
        "agent",
        "[server]\nenabled = true\n[client]\nenabled = true\nraw_exec = true\n",
    );
    wait_for_ready_nodes(&agent, 1);
    let run = agent.orch(
        &["job", "run", spec.to_str().unwrap()],
        Duration::from_secs(90),
    );
    let allocs = agent.job_allocs("plant");
    let meta = std::fs::metadata(&victim_dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o700),
        "the root-only directory was given away\n{}\n{allocs:#?}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&victim_file).unwrap(),
        "precious\n",
        "the root file was written through the symlink"
    );
    let file_meta = std::fs::metadata(&victim_file).unwrap();
    assert_eq!((file_meta.uid(), file_meta.mode() & 0o777), (0, 0o600));
    // The restart still ran, in a fresh directory of its own.
    assert_eq!(
        run.code(),
        0,
        "{}\n{}\n{}",
        run.stdout,
        run.stderr,
        agent.log()
    );
}
