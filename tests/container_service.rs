//! The INTERFACE.md container example's shape end to end on a dev agent: busybox
//! `httpd` in a `driver = "container"` task from a local root filesystem, serving on
//! its dynamic port through `${ORCH_PORT_http}` on the host network, and `orch job stop`
//! leaving no process and no cgroup behind; `orch alloc exec` runs inside the container.
//! Containers as root see no kernel secrets, and a client with the shipped defaults
//! confines them (root filesystems, capabilities, seccomp, network).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[test]
fn a_container_task_serves_on_its_port_and_stops_without_leftovers_as_root() {
    if skip_unless_root("a_container_task_serves_on_its_port_and_stops_without_leftovers_as_root") {
        return;
    }
    let ws = Workspace::new();
    let Some(rootfs) = busybox_rootfs_in(&ws) else {
        return;
    };
    let spec = ws.write(
        "api.toml",
        &format!(
            r#"id = "api"

[group.api]
count = 1

[group.api.network.port.http]

[[group.api.service]]
name = "api"
port = "http"
check = [{{ type = "http", path = "/health", interval = "2s", timeout = "1s" }}]

[group.api.task.app]
driver = "container"
kill_timeout = "5s"
kill_signal = "SIGTERM"
config = {{ rootfs = "{}", command = "/bin/httpd", args = ["-f", "-p", "${{ORCH_PORT_http}}", "-h", "/www"] }}
resources = {{ cpu = 100, memory = 64 }}
env = {{ MODE = "production" }}
"#,
            rootfs.display()
        ),
    );
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    agent.job_run_file(&spec, Duration::from_secs(120));
    let allocs = agent.job_allocs("api");
    assert_eq!(allocs.len(), 1, "{allocs:#?}");
    let id = allocs[0]["id"].as_str().unwrap().to_string();
    let full = agent.get(&format!("/v1/allocation/{id}")).unwrap();
    let port = full["resources"]["ports"][0]["value"]
        .as_u64()
        .expect("port value");

    let body = wait_for(Duration::from_secs(20), "httpd to answer", || {
        http()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
    });
    assert_eq!(body, "ok\n");
    // `orch alloc exec` runs inside the container: its hostname, user and processes.
    let exec = agent.orch(
        &["alloc", "exec", &id[..8], "--", "hostname"],
        Duration::from_secs(30),
    );
    assert_eq!(exec.code(), 0, "{}\n{}", exec.stdout, exec.stderr);
    assert_eq!(exec.stdout.trim(), &id[..8], "the container's hostname");
    let inside = agent.orch(
        &[
            "alloc",
            "exec",
            &id[..8],
            "--",
            "/bin/sh",
            "-c",
            "id -u; ps -o pid,comm; exit 7",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(inside.code(), 7, "{}\n{}", inside.stdout, inside.stderr);
    assert!(inside.stdout.starts_with("65534\n"), "{}", inside.stdout);
    // Only the container's processes, in its own pid namespace: its init (PID 1, the
    // re-executed helper), the task's httpd, and this exec's shell and ps.
    let procs: Vec<(u32, String)> = inside
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (pid, comm) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, comm.trim().to_string()))
        })
        .collect();
    let comms: BTreeSet<&str> = procs.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(procs.len(), 4, "{}", inside.stdout);
    assert_eq!(procs[0].0, 1, "{}", inside.stdout);
    assert!(
        comms.contains("httpd") && comms.contains("sh") && comms.contains("ps"),
        "{}",
        inside.stdout
    );

    let ids = BTreeSet::from([id]);
    assert!(!task_pids(None, &ids).is_empty(), "no task processes found");

    agent
        .orch(&["job", "stop", "api"], Duration::from_secs(60))
        .ok();
    wait_for(
        Duration::from_secs(30),
        "the task's processes and cgroups to be gone",
        || (task_pids(None, &ids).is_empty() && alloc_cgroups(&ids).is_empty()).then_some(()),
    );
    // The source root filesystem is as it was.
    let mut names: Vec<_> = std::fs::read_dir(&rootfs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bin", "www"]);
}

#[test]
fn a_container_sees_no_kernel_secrets_and_cannot_change_kernel_settings_as_root() {
    if skip_unless_root(
        "a_container_sees_no_kernel_secrets_and_cannot_change_kernel_settings_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let Some(rootfs) = busybox_rootfs_in(&ws) else {
        return;
    };
    // Each line: what was tried and what came of it.
    let script = r#"
echo "uid $(id -u)"
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
  [ -e $f ] || continue
  n=$(head -c 64 $f 2>/dev/null | wc -c); echo "read $f $n"
done
[ -d /sys/firmware ] && echo "list /sys/firmware $(ls /sys/firmware | wc -l)"
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo "write /proc/sys ok" || echo "write /proc/sys refused"
echo h > /proc/sysrq-trigger 2>/dev/null && echo "write sysrq ok" || echo "write sysrq refused"
touch /sys/orch-probe 2>/dev/null && echo "write /sys ok" || echo "write /sys refused"
echo done
"#;
    let spec = ws.write(
        "probe.toml",
        &format!(
            r#"id = "probe"
type = "batch"
[group.g]
restart = {{ attempts = 0 }}
[group.g.task.t]
driver = "container"
# root inside: what a container's root could do is the point (no user namespace).
user = "root"
config = {{ rootfs = "{}", command = "/bin/sh", args = ["-c", {script:?}] }}
resources = {{ cpu = 50, memory = 32 }}
"#,
            rootfs.display()
        ),
    );
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    agent.job_run_file(&spec, Duration::from_secs(120));
    let id = agent.job_allocs("probe")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = agent
        .orch(&["alloc", "logs", &id], Duration::from_secs(30))
        .ok()
        .stdout;
    assert!(out.contains("done"), "{out}");
    assert!(out.contains("uid 0"), "the probe ran as root: {out}");
    for line in out.lines().filter(|l| l.starts_with("read ")) {
        assert!(
            line.ends_with(" 0"),
            "a masked file had content: {line}\n{out}"
        );
    }
    // /proc/timer_list exists on every kernel here (kcore not always): masked.
    assert!(out.contains("read /proc/timer_list 0"), "{out}");
    if let Some(line) = out.lines().find(|l| l.starts_with("list /sys/firmware")) {
        assert!(line.ends_with(" 0"), "{line}");
    }
    for refused in [
        "write /proc/sys refused",
        "write sysrq refused",
        "write /sys refused",
    ] {
        assert!(out.contains(refused), "{refused}\n{out}");
    }
}

/// A client with the shipped defaults refuses a container whose root is the host's
/// `/`, or one outside its `container_rootfs`, or one that adds `SYS_ADMIN`, and the
/// allocation's events say why; a root filesystem under `<data_dir>/images` runs, in
/// a network namespace of its own and under the seccomp filter.
#[test]
fn a_default_client_runs_containers_only_from_its_images_dir_and_confined_as_root() {
    if skip_unless_root(
        "a_default_client_runs_containers_only_from_its_images_dir_and_confined_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let Some(outside) = busybox_rootfs_in(&ws) else {
        return;
    };
    let reserved = host_memory_mib().saturating_sub(200);
    let agent = Agent::with_config(
        &ws,
        "agent",
        &format!(
            "[server]\nenabled = true\n[client]\nenabled = true\nreserved = {{ cpu = 0, memory = {reserved} }}\n"
        ),
    );
    wait_for_ready_nodes(&agent, 1);
    let images = agent.data_dir.join("images");
    let inside = images.join("busybox");
    std::fs::create_dir_all(&images).unwrap();
    copy_tree(&outside, &inside);

    let job = |name: &str, config: String| {
        let file = ws.write(
            &format!("{name}.toml"),
            &format!(
                r#"id = "{name}"
type = "batch"
[group.g]
restart = {{ attempts = 0 }}
reschedule = {{ attempts = 0 }}
[group.g.task.t]
driver = "container"
user = "root"
config = {config}
resources = {{ cpu = 20, memory = 16 }}
"#
            ),
        );
        agent.run_to_end(&file, name)
    };
    let probe = "grep '^Seccomp:' /proc/self/status; cat /proc/net/dev | tail -n +3 | cut -d: -f1";
    let refusals = [
        (
            "hostroot",
            r#"{ rootfs = "/", command = "/bin/cat", args = ["/etc/shadow"] }"#.to_string(),
            "rootfs /: a host system directory; refused",
        ),
        (
            "outside",
            format!(
                r#"{{ rootfs = "{}", command = "/bin/true" }}"#,
                outside.display()
            ),
            "not under a directory the client allows in container_rootfs",
        ),
        (
            "admin",
            format!(
                r#"{{ rootfs = "{}", command = "/bin/true", cap_add = ["SYS_ADMIN"] }}"#,
                inside.display()
            ),
            "cap_add SYS_ADMIN is not allowed on this client",
        ),
    ];
    for (name, config, why) in refusals {
        let (status, alloc) = job(name, config);
        assert_eq!(status, "failed", "{name}: {alloc:#}");
        let events = alloc["task_states"]["t"]["events"].to_string();
        assert!(events.contains(why), "{name}: {why}\n{events}");
    }
    let (status, alloc) = job(
        "confined",
        format!(
            r#"{{ rootfs = "{}", command = "/bin/sh", args = ["-c", {probe:?}] }}"#,
            inside.display()
        ),
    );
    assert_eq!(status, "complete", "{alloc:#}");
    let id = alloc["id"].as_str().unwrap();
    let out = agent
        .orch(&["alloc", "logs", id], Duration::from_secs(30))
        .ok()
        .stdout;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["Seccomp:\t2", "lo"], "{out}");
}

/// `cp -a` of a directory tree (files, dirs, symlinks).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}
