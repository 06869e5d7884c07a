//! Ports end to end on a dev agent: two instances of a group with a dynamic port get
//! different ports on the one node, a static port is given as asked, each task sees
//! `ORCH_PORT_<label>` / `ORCH_ADDR_<label>`, and `orch alloc status` lists the ports.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const DYNAMIC: &str = r#"id = "ports"

[group.web]
count = 2

[group.web.network.port.http]

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo port=$ORCH_PORT_http addr=$ORCH_ADDR_http; exec sleep 600"] }
resources = { cpu = 50, memory = 16 }
"#;

const STATIC: &str = r#"id = "admin"

[group.api]
count = 1

[group.api.network.port.admin]
static = 24987

[group.api.task.server]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo admin=$ORCH_PORT_admin addr=$ORCH_ADDR_admin; exec sleep 600"] }
resources = { cpu = 50, memory = 16 }
"#;

/// The `key=value` words a task printed, waited for in its logs.
fn logged(agent: &Agent, alloc: &str, key: &str) -> String {
    wait_for(
        Duration::from_secs(20),
        &format!("{key}= in the logs of {alloc}"),
        || {
            let out = agent.orch(&["alloc", "logs", alloc], Duration::from_secs(20));
            out.stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        },
    )
}

#[test]
fn two_instances_with_a_dynamic_port_get_different_ports_and_see_them_as_root() {
    if skip_unless_root(
        "two_instances_with_a_dynamic_port_get_different_ports_and_see_them_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let file = ws.write("ports.toml", DYNAMIC);
    let run = agent.orch(
        &["job", "run", file.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);

    let allocs = agent.job_allocs("ports");
    assert_eq!(allocs.len(), 2, "{allocs:#?}");
    let mut ports = BTreeSet::new();
    for a in &allocs {
        let id = a["id"].as_str().expect("id");
        let full = agent
            .get(&format!("/v1/allocation/{id}"))
            .expect("allocation");
        let given = &full["resources"]["ports"][0];
        assert_eq!(given["label"], "http", "{full}");
        let value = given["value"].as_u64().expect("port value");
        assert!((20000..=32000).contains(&value), "{value}");
        ports.insert(value);

        let short = &id[..8];
        let port = logged(&agent, short, "port");
        assert_eq!(port, value.to_string(), "ORCH_PORT_http");
        let addr = logged(&agent, short, "addr");
        assert!(
            addr.ends_with(&format!(":{value}")),
            "ORCH_ADDR_http = {addr}"
        );

        let status = agent
            .orch(&["alloc", "status", short], Duration::from_secs(20))
            .ok();
        assert!(
            status.stdout.contains("Allocated Ports"),
            "{}",
            status.stdout
        );
        assert!(
            status.stdout.contains(&format!(":{value}")),
            "{}",
            status.stdout
        );
    }
    assert_eq!(ports.len(), 2, "two instances on one node share no port");
}

#[test]
fn a_static_port_is_given_as_asked_and_a_second_instance_cannot_have_it_as_root() {
    if skip_unless_root(
        "a_static_port_is_given_as_asked_and_a_second_instance_cannot_have_it_as_root",
    ) {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    let file = ws.write("admin.toml", STATIC);
    agent
        .orch(
            &["job", "run", file.to_str().unwrap()],
            Duration::from_secs(120),
        )
        .ok();
    let allocs = agent.job_allocs("admin");
    assert_eq!(allocs.len(), 1, "{allocs:#?}");
    let short = &allocs[0]["id"].as_str().expect("id")[..8];
    assert_eq!(logged(&agent, short, "admin"), "24987");

    // The only node already gives that port away: a second instance cannot be placed,
    // and the dry run says so in words.
    let two = ws.write("admin2.toml", &STATIC.replace("count = 1", "count = 2"));
    let plan = agent.orch(
        &["job", "plan", two.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(plan.code(), 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("Failed to place all allocations"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("exhausted on ports"),
        "{}",
        plan.stdout
    );
}

#[test]
fn a_clients_reserved_ports_are_never_given_to_allocations_as_root() {
    if skip_unless_root("a_clients_reserved_ports_are_never_given_to_allocations_as_root") {
        return;
    }
    let ws = Workspace::new();
    // A dynamic range of three ports, two of them reserved: one dynamic port is left.
    let agent = Agent::with_config(
        &ws,
        "agent",
        &format!(
            "[server]\nenabled = true\n\n[client]\nenabled = true\nmin_dynamic_port = 24100\n\
             max_dynamic_port = 24102\nreserved = {{ reserved_ports = \"24100-24101,24987\" }}\n\
             {TRUSTED_CLIENT}"
        ),
    );
    wait_for_ready_nodes(&agent, 1);
    let one = ws.write("one.toml", &DYNAMIC.replace("count = 2", "count = 1"));
    agent
        .orch(
            &["job", "run", one.to_str().unwrap()],
            Duration::from_secs(120),
        )
        .ok();
    let allocs = agent.job_allocs("ports");
    let id = allocs[0]["id"].as_str().expect("id");
    assert_eq!(logged(&agent, &id[..8], "port"), "24102");

    // A static port the client reserved is no node's to give.
    let file = ws.write("admin.toml", STATIC);
    let plan = agent.orch(
        &["job", "plan", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(plan.code(), 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("exhausted on ports"),
        "{}",
        plan.stdout
    );
}
