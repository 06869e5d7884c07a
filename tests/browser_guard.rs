//! A web page the operator visits cannot drive the agent, even with ACLs off: a
//! cross-origin `text/plain` POST and a cross-origin exec WebSocket are refused (403),
//! a write whose body is not declared JSON or TOML is refused (415), nothing is stored,
//! and an origin the configuration allows is served. Writes never resolve an id
//! prefix (`DELETE /v1/job/we` must not stop `web`); the CLI resolves one with a read.

mod common;

use common::*;

/// A job spec, a body a page could post as `text/plain` without a preflight.
const JOB: &str = r#"
id = "planted"

[group.g.task.t]
driver = "raw_exec"
config = { command = "/bin/true" }
resources = { cpu = 20, memory = 16 }
"#;

fn error_of(resp: reqwest::blocking::Response) -> String {
    let body: serde_json::Value = resp.json().expect("a JSON error body");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[test]
fn a_cross_origin_post_and_an_undeclared_body_are_refused_and_store_nothing() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let post = |content_type: &str, origin: Option<&str>| {
        let mut req = http()
            .post(format!("{}/v1/jobs", server.addr))
            .header("Content-Type", content_type)
            .body(JOB);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send().expect("POST /v1/jobs")
    };

    let cross = post("text/plain", Some("http://evil.example"));
    assert_eq!(cross.status().as_u16(), 403);
    assert!(error_of(cross).contains("http://evil.example"));

    // Even declared as TOML, another origin is refused.
    let cross_toml = post("application/toml", Some("http://evil.example:4747"));
    assert_eq!(cross_toml.status().as_u16(), 403);

    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let undeclared = post(content_type, None);
        assert_eq!(undeclared.status().as_u16(), 415, "{content_type}");
        assert!(error_of(undeclared).contains(content_type));
    }

    assert_eq!(
        server.get("/v1/jobs").expect("GET /v1/jobs"),
        serde_json::json!([]),
        "nothing may be stored"
    );

    // The agent's own page (as a browser on this machine names it) is served.
    let port = server.addr.rsplit(':').next().unwrap();
    let own = post(
        "application/toml",
        Some(&format!("http://localhost:{port}")),
    );
    assert_eq!(own.status().as_u16(), 200, "{}", own.text().unwrap());
    assert_eq!(server.get("/v1/jobs").unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn a_cross_origin_exec_websocket_is_refused() {
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    let upgrade = |origin: &str| {
        http()
            .get(format!(
                "{}/v1/client/allocation/0123abcd/exec?task=t&command=%5B%22sh%22%5D",
                agent.addr
            ))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Origin", origin)
            .send()
            .expect("GET exec")
    };
    let cross = upgrade("https://evil.example");
    assert_eq!(cross.status().as_u16(), 403);
    assert!(error_of(cross).contains("evil.example"));

    // The same request from the agent's own origin reaches the route, which does not
    // know the allocation.
    let own = upgrade(&agent.addr);
    assert_eq!(own.status().as_u16(), 404, "{}", own.text().unwrap());
}

#[test]
fn an_origin_in_allowed_origins_is_served() {
    let ws = Workspace::new();
    let server = Agent::with_config(
        &ws,
        "server",
        "[http]\nallowed_origins = [\"https://ui.example.com\"]\n[server]\nenabled = true\n",
    );
    let list = |origin: &str| {
        http()
            .get(format!("{}/v1/jobs", server.addr))
            .header("Origin", origin)
            .send()
            .expect("GET /v1/jobs")
            .status()
            .as_u16()
    };
    assert_eq!(list("https://ui.example.com"), 200);
    assert_eq!(list("https://ui.example.com.evil.example"), 403);
    assert_eq!(list("null"), 403);
}

#[test]
fn a_job_stop_by_prefix_through_the_api_is_refused_and_the_cli_resolves_it() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", "[server]\nenabled = true\n");
    let registered = http()
        .post(format!("{}/v1/jobs", server.addr))
        .header("Content-Type", "application/toml")
        .body(JOB.replace("planted", "web"))
        .send()
        .expect("POST /v1/jobs");
    assert_eq!(registered.status().as_u16(), 200);

    let by_prefix = http()
        .delete(format!("{}/v1/job/we", server.addr))
        .send()
        .expect("DELETE /v1/job/we");
    assert_eq!(by_prefix.status().as_u16(), 404);
    assert!(error_of(by_prefix).contains("full job id"));
    let job = server.get("/v1/job/web").expect("GET /v1/job/web");
    assert_eq!(job["stop"], false, "{job}");

    let out = server.orch(
        &["job", "stop", "-d", "we"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    let job = server.get("/v1/job/web").expect("GET /v1/job/web");
    assert_eq!(job["stop"], true, "{job}");
}
