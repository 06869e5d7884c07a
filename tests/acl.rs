//! ACLs on a real agent: anonymous requests are refused on every route but the open
//! ones, the bootstrap answers a management token once, a read-only token reads but
//! cannot submit, and a client (a separate process) still registers with its node
//! secret.

mod common;

use common::*;

const SERVER: &str = "[acl]\nenabled = true\n[server]\nenabled = true\n";

fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    toml: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.header("X-Orch-Token", t);
    }
    if let Some(body) = toml {
        req = req
            .header("Content-Type", "application/toml")
            .body(body.to_string());
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn anonymous_is_refused_and_tokens_get_what_their_policies_grant() {
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", SERVER);
    let url = |p: &str| format!("{}{p}", server.addr);
    use reqwest::Method;

    let guarded = [
        (Method::GET, "/v1/jobs"),
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/job/web"),
        (Method::DELETE, "/v1/job/web"),
        (Method::GET, "/v1/job/web/allocations"),
        (Method::GET, "/v1/job/web/versions"),
        (Method::POST, "/v1/job/web/scale"),
        (Method::POST, "/v1/job/web/plan"),
        (Method::POST, "/v1/job/web/revert"),
        (Method::GET, "/v1/deployments"),
        (Method::GET, "/v1/deployment/0123"),
        (Method::POST, "/v1/deployment/0123/promote"),
        (Method::GET, "/v1/nodes"),
        (Method::GET, "/v1/node/0123"),
        (Method::POST, "/v1/node/0123/drain"),
        (Method::POST, "/v1/node/0123/eligibility"),
        (Method::GET, "/v1/allocations"),
        (Method::GET, "/v1/allocation/0123"),
        (Method::POST, "/v1/allocation/0123/stop"),
        (Method::GET, "/v1/evaluations"),
        (Method::GET, "/v1/evaluation/0123"),
        (Method::GET, "/v1/services"),
        (Method::GET, "/v1/service/web"),
        (Method::PUT, "/v1/system/gc"),
        (Method::GET, "/v1/operator/scheduler/configuration"),
        (Method::PUT, "/v1/operator/scheduler/configuration"),
        (Method::GET, "/v1/operator/snapshot"),
        (Method::PUT, "/v1/operator/snapshot"),
        (Method::GET, "/v1/agent/self"),
        (Method::GET, "/v1/acl/tokens"),
        (Method::GET, "/v1/acl/policies"),
        (Method::GET, "/v1/client/fs/logs/0123"),
        (Method::GET, "/v1/client/allocation/0123/stats"),
        (Method::GET, "/v1/client/allocation/0123/checks"),
        (Method::GET, "/v1/client/allocation/0123/exec"),
        (Method::POST, "/v1/client/allocation/0123/restart"),
    ];
    for (method, path) in &guarded {
        let (status, body) = call(method.clone(), &url(path), None, None);
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("lacks"), "{body}");
    }
    assert_eq!(
        call(Method::GET, &url("/v1/agent/health"), None, None).0,
        200
    );

    let (status, root) = call(Method::POST, &url("/v1/acl/bootstrap"), None, None);
    assert_eq!(status, 200, "{root}");
    let root = root["secret"].as_str().unwrap().to_string();
    assert_eq!(
        call(Method::POST, &url("/v1/acl/bootstrap"), None, None).0,
        409
    );
    // The management token passes every check (what the route then says is its own:
    // 404 for the made-up ids, 400 for the missing bodies).
    for (method, path) in &guarded {
        let (status, body) = call(method.clone(), &url(path), Some(&root), None);
        assert_ne!(status, 403, "{method} {path}: {body}");
        assert_ne!(status, 401, "{method} {path}: {body}");
    }
    assert_eq!(
        call(Method::GET, &url("/v1/jobs"), Some(&root), None).0,
        200
    );
    assert_eq!(
        call(Method::GET, &url("/v1/jobs"), Some("not-a-token"), None).0,
        403
    );

    let policy = "job = [\"read\"]\n";
    let (status, body) = call(
        Method::PUT,
        &url("/v1/acl/policy/ro"),
        Some(&root),
        Some(policy),
    );
    assert_eq!(status, 200, "{body}");
    let created = http()
        .post(url("/v1/acl/token"))
        .header("X-Orch-Token", &root)
        .json(&serde_json::json!({"name": "reader", "policies": ["ro"]}))
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 200);
    let reader: serde_json::Value = created.json().unwrap();
    let reader = reader["secret"].as_str().unwrap().to_string();

    assert_eq!(
        call(Method::GET, &url("/v1/jobs"), Some(&reader), None).0,
        200
    );
    // The state snapshot holds every secret: a management token only.
    let (status, body) = call(
        Method::GET,
        &url("/v1/operator/snapshot"),
        Some(&reader),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("management"),
        "{body}"
    );
    let spec = "id = \"web\"\n[group.g.task.t]\ndriver = \"raw_exec\"\nconfig = { command = \"/bin/true\" }\nresources = { cpu = 20, memory = 16 }\n";
    let (status, body) = call(Method::POST, &url("/v1/jobs"), Some(&reader), Some(spec));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("job:submit"),
        "{body}"
    );
    let (status, jobs) = call(Method::GET, &url("/v1/jobs"), Some(&root), None);
    assert_eq!(
        (status, jobs),
        (200, serde_json::json!([])),
        "nothing stored"
    );
    let (status, body) = call(Method::POST, &url("/v1/jobs"), Some(&root), Some(spec));
    assert_eq!(status, 200, "{body}");

    // A client registers and heartbeats with its node secret, not a token.
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let _client = Agent::with_config(&ws, "client", &client_section(&servers, 150, ""));
    wait_for(
        std::time::Duration::from_secs(30),
        "the client's node",
        || {
            let (_, nodes) = call(Method::GET, &url("/v1/nodes"), Some(&root), None);
            (nodes.as_array()?.len() == 1).then_some(())
        },
    );
}

#[test]
fn the_cli_works_with_its_token_and_says_what_is_missing_without() {
    let ws = Workspace::new();
    let agent = Agent::with_config(
        &ws,
        "agent",
        &format!(
            "{SERVER}\n{}",
            client_section(&[], 150, "").replace("servers = []\n", "")
        ),
    );
    let (status, root) = call(
        reqwest::Method::POST,
        &format!("{}/v1/acl/bootstrap", agent.addr),
        None,
        None,
    );
    assert_eq!(status, 200, "{root}");
    let root = root["secret"].as_str().unwrap().to_string();
    let long = std::time::Duration::from_secs(60);

    let spec = jobspec("hello.toml");
    let anonymous = agent.orch(&["job", "run", "-d", spec.to_str().unwrap()], long);
    assert_ne!(anonymous.code(), 0);
    assert!(
        anonymous.stderr.contains("job:submit"),
        "{}",
        anonymous.stderr
    );

    let run = agent.orch(
        &["--token", &root, "job", "run", spec.to_str().unwrap()],
        long,
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    let (_, allocs) = call(
        reqwest::Method::GET,
        &format!("{}/v1/allocations", agent.addr),
        Some(&root),
        None,
    );
    let alloc = allocs[0]["id"].as_str().unwrap().to_string();
    let exec = agent.orch(
        &[
            "--token",
            &root,
            "alloc",
            "exec",
            &alloc,
            "--",
            "/bin/echo",
            "inside",
        ],
        long,
    );
    assert_eq!(exec.code(), 0, "{}\n{}", exec.stdout, exec.stderr);
    assert!(exec.stdout.contains("inside"), "{}", exec.stdout);
    let denied = agent.orch(
        &["alloc", "exec", &alloc, "--", "/bin/echo", "inside"],
        long,
    );
    assert_ne!(denied.code(), 0);
    let stop = agent.orch(&["--token", &root, "job", "stop", "hello"], long);
    assert_eq!(stop.code(), 0, "{}\n{}", stop.stdout, stop.stderr);
}

#[test]
fn the_acl_commands_bootstrap_apply_create_and_show_tokens() {
    let ws = Workspace::new();
    let agent = Agent::with_config(&ws, "server", SERVER);
    let long = std::time::Duration::from_secs(30);

    let boot = agent.orch(&["--json", "acl", "bootstrap"], long);
    assert_eq!(boot.code(), 0, "{}\n{}", boot.stdout, boot.stderr);
    let root: serde_json::Value = serde_json::from_str(&boot.stdout).unwrap();
    let root = root["secret"].as_str().unwrap().to_string();
    let again = agent.orch(&["acl", "bootstrap"], long);
    assert_eq!(again.code(), 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("bootstrapped already"),
        "{}",
        again.stderr
    );

    let apply = |file: &std::path::Path| {
        agent.orch(
            &[
                "--token",
                &root,
                "acl",
                "policy",
                "apply",
                "ro",
                file.to_str().unwrap(),
            ],
            long,
        )
    };
    let bad = ws.write("bad.toml", "job = [\"read\"]\nalloc = [\"shell\"]\n");
    let out = apply(&bad);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains("bad.toml: line 2, column 10"),
        "{}",
        out.stderr
    );

    let good = ws.write("ro.toml", "description = \"read only\"\njob = [\"read\"]\n");
    let out = apply(&good);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let list = agent.orch(&["--token", &root, "acl", "policy", "list"], long);
    assert!(list.stdout.contains("read only"), "{}", list.stdout);

    let created = agent.orch(
        &[
            "--token", &root, "--json", "acl", "token", "create", "--name", "ci", "--policy", "ro",
            "--ttl", "1h",
        ],
        long,
    );
    assert_eq!(created.code(), 0, "{}", created.stderr);
    let ci: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    let ci = ci["secret"].as_str().unwrap().to_string();

    let me = agent.orch(&["--token", &ci, "acl", "token", "self"], long);
    assert_eq!(me.code(), 0, "{}", me.stderr);
    assert!(me.stdout.contains("job:read"), "{}", me.stdout);
    let tokens = agent.orch(&["--token", &root, "acl", "token", "list"], long);
    assert!(
        tokens.stdout.contains("ci") && tokens.stdout.contains("management"),
        "{}",
        tokens.stdout
    );
    assert!(!tokens.stdout.contains(&ci), "secrets are never listed");
    let denied = agent.orch(&["--token", &ci, "acl", "token", "list"], long);
    assert_eq!(denied.code(), 1);
    assert!(denied.stderr.contains("acl:write"), "{}", denied.stderr);
}

#[test]
fn a_client_only_agent_checks_tokens_with_the_servers() {
    use reqwest::Method;
    let ws = Workspace::new();
    let server = Agent::with_config(&ws, "server", SERVER);
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let client = Agent::with_config(
        &ws,
        "client",
        &format!(
            "[acl]\nenabled = true\n{}",
            client_section(&servers, 150, "")
        ),
    );
    let (_, root) = call(
        Method::POST,
        &format!("{}/v1/acl/bootstrap", server.addr),
        None,
        None,
    );
    let root = root["secret"].as_str().unwrap().to_string();
    let token_with = |name: &str, rules: &str| {
        let (status, body) = call(
            Method::PUT,
            &format!("{}/v1/acl/policy/{name}", server.addr),
            Some(&root),
            Some(rules),
        );
        assert_eq!(status, 200, "{body}");
        let created: serde_json::Value = http()
            .post(format!("{}/v1/acl/token", server.addr))
            .header("X-Orch-Token", &root)
            .json(&serde_json::json!({"name": name, "policies": [name]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        created["secret"].as_str().unwrap().to_string()
    };
    let reader = token_with("reader", "job = [\"read\"]\n");
    // node:read: the CLI finds the client that runs an allocation by its node.
    let logs = token_with(
        "logs",
        "job = [\"read\"]\nalloc = [\"logs\"]\nnode = [\"read\"]\n",
    );

    let spec = "id = \"web\"\n[group.g.task.t]\ndriver = \"raw_exec\"\nconfig = { command = \"/bin/sh\", args = [\"-c\", \"echo from-the-task; exec sleep 300\"] }\nresources = { cpu = 20, memory = 16 }\n";
    let (status, body) = call(
        Method::POST,
        &format!("{}/v1/jobs", server.addr),
        Some(&root),
        Some(spec),
    );
    assert_eq!(status, 200, "{body}");
    let alloc = wait_for(
        std::time::Duration::from_secs(60),
        "a running allocation",
        || {
            let (_, allocs) = call(
                Method::GET,
                &format!("{}/v1/allocations", server.addr),
                Some(&root),
                None,
            );
            let a = allocs.as_array()?.first()?.clone();
            (a["client_status"] == "running").then(|| a["id"].as_str().unwrap().to_string())
        },
    );

    // On the client's own address: its routes check the token through the servers.
    let stats = format!("{}/v1/client/allocation/{alloc}/stats", client.addr);
    let log_path = format!("/v1/client/fs/logs/{alloc}?task=t&type=stdout");
    let (status, body) = call(Method::GET, &stats, None, None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("job:read"),
        "{body}"
    );
    assert_eq!(call(Method::GET, &stats, Some("not-a-token"), None).0, 403);
    assert_eq!(call(Method::GET, &stats, Some(&reader), None).0, 200);
    let (status, body) = call(
        Method::GET,
        &format!("{}{log_path}", client.addr),
        Some(&reader),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("alloc:logs"),
        "{body}"
    );
    let read_logs = |base: &str, token: &str| {
        let resp = http()
            .get(format!("{base}{log_path}"))
            .header("X-Orch-Token", token)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    let (status, text) = read_logs(&client.addr, &logs);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("from-the-task"), "{text}");
    // Through the server, which relays the caller's token to the client.
    let (status, text) = read_logs(&server.addr, &logs);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("from-the-task"), "{text}");
    assert_eq!(read_logs(&server.addr, &reader).0, 403);

    // The exec WebSocket on the client: a token without alloc:exec is refused.
    let long = std::time::Duration::from_secs(60);
    let exec_as = |token: &str| {
        server.orch(
            &[
                "--token",
                token,
                "alloc",
                "exec",
                &alloc,
                "--",
                "/bin/echo",
                "hi",
            ],
            long,
        )
    };
    let denied = exec_as(&logs);
    assert_ne!(denied.code(), 0);
    assert!(denied.stderr.contains("alloc:exec"), "{}", denied.stderr);
    let exec = exec_as(&root);
    assert_eq!(exec.code(), 0, "{}\n{}", exec.stdout, exec.stderr);
    let (status, _) = call(
        Method::DELETE,
        &format!("{}/v1/job/web", server.addr),
        Some(&root),
        None,
    );
    assert_eq!(status, 200);
}
