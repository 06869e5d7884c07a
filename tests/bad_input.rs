//! Bad input is refused with the line and the field, a non-zero exit or a 4xx JSON
//! answer, and nothing is stored: malformed TOML, an unknown field, a negative count, a
//! missing driver, a 10 MiB request body, and numbers beyond their bounds (a request
//! cannot take a server down).

mod common;

use std::time::Duration;

use common::*;

/// Checks one bad spec through `orch job validate`, `orch job run` and the API.
/// `line` is the line the problem is on; `field` must be named in every error.
fn refused_everywhere(name: &str, text: &str, line: usize, field: &str) {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let file = ws.write(&format!("{name}.toml"), text);
    let path = file.to_str().unwrap();
    let location = format!("{path}:{line}");

    for cmd in [["job", "validate"], ["job", "run"]] {
        let out = server.orch(&[cmd[0], cmd[1], path], Duration::from_secs(30));
        assert_ne!(out.code(), 0, "`orch {}` accepted {name}", cmd.join(" "));
        assert!(
            out.stderr.contains(&location) && out.stderr.contains(field),
            "`orch {}` on {name} should name {location} and {field:?}:\n{}",
            cmd.join(" "),
            out.stderr
        );
        assert!(!out.stderr.contains("cannot reach"), "{}", out.stderr);
    }

    let resp = http()
        .post(format!("{}/v1/jobs", server.addr))
        .header("Content-Type", "application/toml")
        .body(text.to_string())
        .send()
        .expect("POST /v1/jobs");
    assert_eq!(resp.status().as_u16(), 400, "{name} via the API");
    let body: serde_json::Value = resp.json().expect("a JSON error body");
    let all = body.to_string();
    assert!(body["error"].is_string(), "{all}");
    assert!(
        all.contains(field),
        "API error for {name} should name {field:?}: {all}"
    );

    let jobs = server.get("/v1/jobs").expect("GET /v1/jobs");
    assert_eq!(
        jobs,
        serde_json::json!([]),
        "nothing may be stored after {name}"
    );
}

#[test]
fn malformed_toml_is_refused_with_its_line() {
    refused_everywhere(
        "malformed",
        "id = \"bad\"\n[group.web\ncount = 1\n",
        2,
        // A syntax error has no field path yet; the location is what matters.
        "",
    );
}

#[test]
fn an_unknown_field_is_refused_with_its_line_and_path() {
    let text = r#"id = "typo"

[group.web]
count = 1
cuont = 2

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/true" }
"#;
    refused_everywhere("unknown-field", text, 5, "cuont");
}

#[test]
fn a_negative_count_is_refused_with_its_line_and_path() {
    let text = r#"id = "negative"

[group.web]
count = -1

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/true" }
"#;
    refused_everywhere("negative-count", text, 4, "group.web.count");
}

#[test]
fn a_missing_driver_is_refused_with_its_line_and_path() {
    let text = r#"id = "nodriver"

[group.web]
count = 1

[group.web.task.server]
config = { command = "/bin/true" }
"#;
    refused_everywhere("missing-driver", text, 6, "driver");
}

#[test]
fn job_run_reports_spec_errors_without_contacting_a_server() {
    let ws = Workspace::new();
    let file = ws.write("bad.toml", "id = \"x\"\n[group.web]\ncount = -3\n");
    // Nothing listens on port 9: a contacted server would show up as a connection error.
    let out = orch_cmd(
        &[
            "--address",
            "http://127.0.0.1:9",
            "job",
            "run",
            file.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("group.web.count"), "{}", out.stderr);
    assert!(!out.stderr.contains("cannot reach"), "{}", out.stderr);
}

#[test]
fn a_ten_mib_request_body_is_refused_with_413_and_json() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let big = format!(
        "{{\"job\": {{\"id\": \"{}\"}}}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let resp = http()
        .post(format!("{}/v1/jobs", server.addr))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .expect("POST /v1/jobs");
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().expect("a JSON error body");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(
        server.get("/v1/jobs").expect("GET /v1/jobs"),
        serde_json::json!([])
    );
}

/// Regression: `lost_after = "200000000000000d"` panicked the heartbeat monitor, a
/// huge `?wait=` panicked a handler, and any count was accepted. Each is refused (or
/// clamped) and the agent stays healthy.
#[test]
fn huge_numbers_are_400s_and_the_agent_stays_up() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let post = |text: String| {
        let resp = http()
            .post(format!("{}/v1/jobs", server.addr))
            .header("Content-Type", "application/toml")
            .body(text)
            .send()
            .expect("POST /v1/jobs");
        let status = resp.status().as_u16();
        (
            status,
            resp.json::<serde_json::Value>().expect("JSON").to_string(),
        )
    };
    let spec = |group_line: &str, task_line: &str| {
        format!(
            "id = \"big\"\n\n[group.web]\n{group_line}\n\n[group.web.task.server]\n\
             driver = \"raw_exec\"\nconfig = {{ command = \"/bin/true\" }}\n{task_line}\n"
        )
    };

    let (status, body) = post(spec(
        "disconnect = { lost_after = \"200000000000000d\" }",
        "",
    ));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("line 4") && body.contains("lost_after"),
        "{body}"
    );

    let (status, body) = post(spec("count = 10001", ""));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 4") && body.contains("10000"), "{body}");

    // Two instances of 2^63-1 MiB each were once placed, and written as a cgroup limit.
    let (status, body) = post(spec(
        "count = 2",
        "resources = { memory = 9223372036854775807 }",
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 9") && body.contains("memory"), "{body}");

    assert_eq!(
        server.get("/v1/jobs").expect("GET /v1/jobs"),
        serde_json::json!([]),
        "nothing may be stored"
    );
    // A job in the table, and a wait for an index already passed, so that a clamped
    // wait answers at once.
    for count in ["count = 1", "count = 2"] {
        let (status, body) = post(spec(count, ""));
        assert_eq!(status, 200, "{body}");
    }
    let index: u64 = http()
        .get(format!("{}/v1/jobs", server.addr))
        .send()
        .expect("GET /v1/jobs")
        .headers()["X-Orch-Index"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("a number");
    assert!(index >= 2, "{index}");
    let passed = index - 1;

    for wait in [
        "100000000000h",
        "99999999999999999999999999h",
        "18446744073709551615",
    ] {
        let resp = http()
            .get(format!(
                "{}/v1/jobs?index={passed}&wait={wait}",
                server.addr
            ))
            .timeout(Duration::from_secs(20))
            .send()
            .expect("GET /v1/jobs with a huge wait");
        let status = resp.status().as_u16();
        // Too large to represent: refused; otherwise clamped to the longest wait (and
        // answered at once, the index being passed).
        let want = if wait.starts_with("9999") { 400 } else { 200 };
        assert_eq!(status, want, "wait={wait}");
    }

    assert!(server.get("/v1/agent/health").is_some(), "agent down");
}
