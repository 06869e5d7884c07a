//! `raw_exec` is a privilege: a client that does not enable it gets no `raw_exec`
//! task, and the placement failure says why; a client that enables it runs a task
//! without `user` as its `default_user` (`nobody`), and no task as root unless
//! `allow_root_tasks = true`.

mod common;

use std::time::Duration;

use common::*;

/// One `raw_exec` batch task that records its uid in its task directory.
fn whoami_job(id: &str, user: Option<&str>) -> String {
    let user = user.map(|u| format!("user = {u:?}\n")).unwrap_or_default();
    format!(
        r#"
id = "{id}"
type = "batch"

[group.g]
count = 1
restart = {{ attempts = 0 }}

[group.g.task.t]
driver = "raw_exec"
config = {{ command = "/bin/sh", args = ["-c", "id -u > $ORCH_TASK_DIR/uid"] }}
resources = {{ cpu = 20, memory = 16 }}
{user}"#
    )
}

/// A client with `extra` client settings (on top of the secure defaults).
fn client(ws: &Workspace, server: &Agent, name: &str, extra: &str) -> Agent {
    let reserved = host_memory_mib().saturating_sub(200);
    Agent::with_config(
        ws,
        name,
        &format!(
            "[client]\nenabled = true\nservers = [{:?}]\nreserved = {{ cpu = 0, memory = {reserved} }}\n{extra}",
            host_port(&server.addr)
        ),
    )
}

#[test]
fn a_client_without_raw_exec_gets_no_raw_exec_task_and_the_failure_says_why() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let _client = client(&ws, &server, "client", "");
    wait_for_ready_nodes(&server, 1);

    let nodes = server.get("/v1/nodes").unwrap();
    let id = nodes[0]["id"].as_str().unwrap().to_string();
    let node = server.get(&format!("/v1/node/{id}")).unwrap();
    assert_eq!(node["drivers"]["raw_exec"]["healthy"], false, "{node:#}");

    let file = ws.write("job.toml", &whoami_job("whoami", None));
    let run = server.orch(
        &["job", "run", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("driver \"raw_exec\" unavailable: disabled on this client"),
        "{}",
        run.stdout
    );
    assert!(server.job_allocs("whoami").is_empty());
}

#[test]
fn raw_exec_tasks_run_as_the_default_user_and_never_as_root_unless_allowed_as_root() {
    if skip_unless_root(
        "raw_exec_tasks_run_as_the_default_user_and_never_as_root_unless_allowed_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let client = client(&ws, &server, "client", "raw_exec = true\n");
    wait_for_ready_nodes(&server, 1);

    let outcome = |job: &str, user: Option<&str>| {
        let file = ws.write(&format!("{job}.toml"), &whoami_job(job, user));
        server.run_to_end(&file, job)
    };

    let (status, alloc) = outcome("as-default", None);
    assert_eq!(status, "complete", "{alloc:#}");
    let id = alloc["id"].as_str().unwrap();
    let uid =
        std::fs::read_to_string(client.data_dir.join(format!("alloc/{id}/t/local/uid"))).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(
        uid.trim(),
        nobody.to_string(),
        "a task without user runs as nobody"
    );

    let (status, alloc) = outcome("as-root", Some("root"));
    assert_eq!(status, "failed", "{alloc:#}");
    let events = alloc["task_states"]["t"]["events"].to_string();
    assert!(events.contains("runs no task as root"), "{events}");
    let id = alloc["id"].as_str().unwrap();
    assert!(
        !client
            .data_dir
            .join(format!("alloc/{id}/t/local/uid"))
            .exists(),
        "it never ran"
    );
}
