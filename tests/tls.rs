//! Mutual TLS between separate processes, with certificates from `orch tls`: a server
//! and two clients run a job over HTTPS (the CLI, the clients' calls, the server's log
//! relay and the exec WebSocket); a caller without a certificate, a CLI certificate
//! calling the node routes, and a client certificate acting as a server are refused;
//! SIGHUP swaps the certificates in and a broken file leaves the old ones serving.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pair {
    fn tls_table(&self, ca: &Path) -> String {
        format!(
            "[tls]\nhttp = true\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            ca.display().to_string(),
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }

    fn pem(&self) -> Vec<u8> {
        let mut both = std::fs::read(&self.cert).unwrap();
        both.extend(std::fs::read(&self.key).unwrap());
        both
    }
}

/// `orch tls ca create` and one certificate per role, in `dir`.
fn make_certs(dir: &Path) -> (PathBuf, Pair, Pair, Pair) {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.to_str().unwrap();
    orch_cmd(&["tls", "ca", "create", "--dir", d], T).ok();
    let pair = |role: &str| {
        orch_cmd(
            &["tls", "cert", "create", &format!("--{role}"), "--dir", d],
            T,
        )
        .ok();
        Pair {
            cert: dir.join(format!("global-{role}-orch.pem")),
            key: dir.join(format!("global-{role}-orch-key.pem")),
        }
    };
    let (server, client, cli) = (pair("server"), pair("client"), pair("cli"));
    (dir.join("orch-agent-ca.pem"), server, client, cli)
}

fn cli_env<'a>(ca: &'a str, cli: &'a Pair) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ORCH_CACERT", ca),
        ("ORCH_CLIENT_CERT", cli.cert.to_str().unwrap()),
        ("ORCH_CLIENT_KEY", cli.key.to_str().unwrap()),
    ]
}

fn ready_nodes(agent: &Agent, env: &[(&str, &str)]) -> usize {
    let out = orch_cmd_env(
        &["--address", &agent.addr, "node", "status", "--json"],
        env,
        T,
    );
    if out.code() != 0 {
        return 0;
    }
    let nodes: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    nodes
        .as_array()
        .map(|a| a.iter().filter(|n| n["status"] == "ready").count())
        .unwrap_or(0)
}

/// A blocking HTTPS client trusting the CA, presenting `identity` when given.
fn https(ca: &Path, identity: Option<&Pair>) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut builder = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .tls_info(true)
        .timeout(Duration::from_secs(20));
    if let Some(pair) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(&pair.pem()).unwrap());
    }
    builder.build().unwrap()
}

/// The DER of the certificate the agent served on this answer.
fn served_certificate(resp: &reqwest::blocking::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the answer's TLS info")
        .to_vec()
}

fn pem_to_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    decode_base64(&body)
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn a_tls_cluster_runs_a_job_and_refuses_callers_without_the_right_certificate() {
    let ws = Workspace::new();
    let (ca, server_pair, client_pair, cli_pair) = make_certs(&ws.path("tls"));
    let ca_str = ca.to_str().unwrap().to_string();
    let env = cli_env(&ca_str, &cli_pair);

    let server = Agent::with_config(
        &ws,
        "server",
        &format!("[server]\nenabled = true\n{}", server_pair.tls_table(&ca)),
    );
    assert!(server.addr.starts_with("https://"), "{}", server.addr);
    let servers = [host_port(&server.addr)];
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let client_config = format!(
        "{}{}",
        client_section(&servers, 150, ""),
        client_pair.tls_table(&ca)
    );
    let _c1 = Agent::with_config(&ws, "client1", &client_config);
    let _c2 = Agent::with_config(&ws, "client2", &client_config);
    wait_for(T, "2 ready nodes over HTTPS", || {
        (ready_nodes(&server, &env) == 2).then_some(())
    });

    // A job over HTTPS end to end: submitted by the CLI, placed on both clients (they
    // watch and report over HTTPS), its logs relayed by the server to each client.
    let spec = ws.write(
        "web.toml",
        r#"id = "web"
[group.web]
count = 2
[[group.web.constraint]]
operator = "distinct_hosts"
[group.web.task.web]
driver = "raw_exec"
config = { command = "/bin/sh", args = ["-c", "echo hello-over-tls; exec sleep 300"] }
resources = { cpu = 50, memory = 32 }
"#,
    );
    let orch = |args: &[&str]| {
        let mut full = vec!["--address", server.addr.as_str()];
        full.extend_from_slice(args);
        orch_cmd_env(&full, &env, T)
    };
    let run = orch(&["job", "run", spec.to_str().unwrap()]);
    assert_eq!(
        run.code(),
        0,
        "{}\n{}\n{}",
        run.stdout,
        run.stderr,
        server.log()
    );
    let as_cli = https(&ca, Some(&cli_pair));
    let allocs: serde_json::Value = as_cli
        .get(format!("{}/v1/job/web/allocations", server.addr))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<String> = allocs
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{allocs}");
    for id in &ids {
        wait_for(T, "the task's output through the relay", || {
            let logs = orch(&["alloc", "logs", id]);
            (logs.code() == 0 && logs.stdout.contains("hello-over-tls")).then_some(())
        });
    }
    // The exec WebSocket goes straight to the client, over wss://.
    let exec = orch(&[
        "alloc",
        "exec",
        &ids[0],
        "--",
        "/bin/sh",
        "-c",
        "echo exec-over-tls",
    ]);
    assert_eq!(exec.code(), 0, "{}\n{}", exec.stdout, exec.stderr);
    assert!(exec.stdout.contains("exec-over-tls"), "{}", exec.stdout);

    // No client certificate: the handshake is refused, and the CLI says what to give.
    let ca_only = [("ORCH_CACERT", ca_str.as_str())];
    let refused = orch_cmd_env(&["--address", &server.addr, "node", "status"], &ca_only, T);
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr.contains("ORCH_CLIENT_CERT"),
        "{}",
        refused.stderr
    );
    assert!(https(&ca, None)
        .get(format!("{}/v1/agent/health", server.addr))
        .send()
        .is_err());
    // No CA: an https:// address is refused before any connection.
    let no_ca = orch_cmd(&["--address", &server.addr, "node", "status"], T);
    assert_ne!(no_ca.code(), 0);
    assert!(no_ca.stderr.contains("ORCH_CACERT"), "{}", no_ca.stderr);
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = format!("http://{}/v1/agent/health", host_port(&server.addr));
    assert!(http()
        .get(&plain)
        .send()
        .map(|r| !r.status().is_success())
        .unwrap_or(true));

    // A CLI certificate is not a node's: the node routes refuse it.
    let health = as_cli
        .get(format!("{}/v1/agent/health", server.addr))
        .send()
        .unwrap();
    assert!(health.status().is_success());
    let register = as_cli
        .post(format!("{}/v1/node/register", server.addr))
        .header("X-Orch-Node-Secret", "f".repeat(64))
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(register.status().as_u16(), 403);
    let body: serde_json::Value = register.json().unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("client or server certificate"),
        "{body}"
    );

    // A client certificate acting as a server: clients do not accept it.
    let fake = Agent::with_config(
        &ws,
        "fake-server",
        &format!("[server]\nenabled = true\n{}", client_pair.tls_table(&ca)),
    );
    let fake_servers = [host_port(&fake.addr)];
    let fake_servers: Vec<&str> = fake_servers.iter().map(String::as_str).collect();
    let fooled = Agent::with_config(
        &ws,
        "client3",
        &format!(
            "{}{}",
            client_section(&fake_servers, 150, ""),
            client_pair.tls_table(&ca)
        ),
    );
    wait_for(T, "the client to refuse the fake server", || {
        fooled
            .log()
            .contains(r#"not valid for name "server.global.orch""#)
            .then_some(())
    });
    assert_eq!(ready_nodes(&fake, &env), 0, "{}", fake.log());

    // SIGHUP: a new certificate is served to new connections; a broken file leaves
    // the one in use.
    let first = served_certificate(
        &as_cli
            .get(format!("{}/v1/agent/health", server.addr))
            .send()
            .unwrap(),
    );
    assert_eq!(first, pem_to_der(&server_pair.cert));
    let renewed = ws.path("renewed");
    std::fs::create_dir_all(&renewed).unwrap();
    let renewed_str = renewed.to_str().unwrap();
    orch_cmd(
        &[
            "tls",
            "cert",
            "create",
            "--server",
            "--ca",
            &ca_str,
            "--key",
            ws.path("tls/orch-agent-ca-key.pem").to_str().unwrap(),
            "--dir",
            renewed_str,
        ],
        T,
    )
    .ok();
    std::fs::copy(renewed.join("global-server-orch.pem"), &server_pair.cert).unwrap();
    std::fs::copy(renewed.join("global-server-orch-key.pem"), &server_pair.key).unwrap();
    let pid = nix::unistd::Pid::from_raw(server.pid().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(T, "the reload", || {
        server
            .log()
            .contains("reloaded the TLS certificates")
            .then_some(())
    });
    // A fresh client: connections are pooled.
    let second = served_certificate(
        &https(&ca, Some(&cli_pair))
            .get(format!("{}/v1/agent/health", server.addr))
            .send()
            .unwrap(),
    );
    assert_eq!(second, pem_to_der(&server_pair.cert));
    assert_ne!(first, second);
    std::fs::write(&server_pair.key, "not a key").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(T, "the failed reload", || {
        server.log().contains("TLS reload failed").then_some(())
    });
    let still = https(&ca, Some(&cli_pair))
        .get(format!("{}/v1/agent/health", server.addr))
        .send()
        .unwrap();
    assert_eq!(served_certificate(&still), second);
    assert_eq!(ready_nodes(&server, &env), 2, "{}", server.log());
    orch(&["job", "stop", "web"]).ok();
}
