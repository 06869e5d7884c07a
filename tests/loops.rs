//! Supervised background loops, seen from outside: a loop that may be restarted is
//! restarted after a panic and `/v1/agent/health` says so; a required loop's panic stops
//! the agent with a non-zero exit. Panics are injected with `ORCH_TEST_PANIC_LOOP`
//! (debug builds only).

mod common;

use std::time::Duration;

use common::*;

fn panicking(loops: &str) -> Launch {
    Launch {
        env: vec![("ORCH_TEST_PANIC_LOOP".to_string(), loops.to_string())],
        umask: None,
    }
}

#[test]
fn restartable_loops_come_back_after_a_panic_and_health_counts_it() {
    let ws = Workspace::new();
    let mut agent = Agent::dev_launch(&ws, "dev", &panicking("server.gc,client.heartbeat"));
    let health = wait_for(Duration::from_secs(20), "both loops restarted", || {
        let h = agent.get("/v1/agent/health")?;
        let restarted = |name: &str| {
            h["loops"][name]["restarts"] == 1 && h["loops"][name]["state"] == "running"
        };
        (restarted("server.gc") && restarted("client.heartbeat")).then_some(h)
    });
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["server"], "ok", "{health}");
    assert_eq!(health["client"], "ok", "{health}");
    let panic = health["loops"]["server.gc"]["last_panic"]
        .as_str()
        .unwrap_or_default();
    assert!(panic.contains("ORCH_TEST_PANIC_LOOP"), "{health}");
    assert_eq!(health["loops"]["server.plan-applier"]["state"], "running");
    let status = agent
        .terminate(Duration::from_secs(20))
        .expect("exit status");
    assert!(status.success(), "{status}\n{}", agent.log());
}

/// Starts an agent whose `loop` panics at once; it must stop by itself, non-zero.
fn agent_with_a_panicking_required_loop(tables: &str, name: &str) {
    let ws = Workspace::new();
    let cfg = ws.write(
        "agent.toml",
        &format!(
            "data_dir = {:?}\nbind_addr = \"127.0.0.1\"\n\n[ports]\nhttp = 0\ndns = 0\nrpc = 0\n\n{tables}\n",
            ws.path("data").display().to_string()
        ),
    );
    let out = orch_cmd_env(
        &["agent", "--config", cfg.to_str().unwrap()],
        &[("ORCH_TEST_PANIC_LOOP", name)],
        Duration::from_secs(40),
    );
    assert_ne!(out.code(), 0, "{}", out.stderr);
    assert!(out.stderr.contains(name), "{}", out.stderr);
    assert!(out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn a_server_whose_plan_applier_panics_exits_non_zero() {
    agent_with_a_panicking_required_loop("[server]\nenabled = true\n", "server.plan-applier");
}

#[test]
fn a_client_whose_allocation_watch_panics_exits_non_zero() {
    agent_with_a_panicking_required_loop(
        "[server]\nenabled = true\n\n[client]\nenabled = true\n",
        "client.watch",
    );
}
