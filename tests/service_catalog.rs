//! The service catalog end to end on a dev agent (jobspecs/web-checks.toml): the
//! running web server is listed by `orch service info web` with its allocated port, an
//! address that answers HTTP, and `passing` health; stopping the job removes it from
//! `orch service list`.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_running_web_service_is_in_the_catalog_until_its_job_stops_as_root() {
    if skip_unless_root("a_running_web_service_is_in_the_catalog_until_its_job_stops_as_root") {
        return;
    }
    let ws = Workspace::new();
    let agent = Agent::dev(&ws, "dev");
    wait_for_ready_nodes(&agent, 1);
    agent.job_run("web-checks.toml", Duration::from_secs(120));

    let instance = wait_for(
        Duration::from_secs(60),
        "one passing instance of service web",
        || {
            let out = agent.orch(
                &["service", "info", "web", "--json"],
                Duration::from_secs(20),
            );
            if out.code() != 0 {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            let list = v.as_array()?;
            (list.len() == 1 && list[0]["health"] == "passing").then(|| list[0].clone())
        },
    );
    let alloc = agent
        .job_allocs("web-checks")
        .into_iter()
        .find(|a| a["client_status"] == "running")
        .expect("a running allocation");
    assert_eq!(instance["alloc_id"], alloc["id"], "{instance:#?}");
    assert_eq!(instance["job_id"], "web-checks");
    assert_eq!(instance["checks"]["alive"]["status"], "passing");
    let full = agent
        .get(&format!("/v1/allocation/{}", alloc["id"].as_str().unwrap()))
        .expect("the allocation");
    let port = full["resources"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["label"] == "http"))
        .and_then(|p| p["value"].as_u64())
        .expect("an allocated http port");
    assert_eq!(instance["port"].as_u64(), Some(port), "{instance:#?}");
    let address = instance["address"].as_str().expect("an address");
    let url = format!("http://{address}:{port}/");
    let status = http()
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status();
    assert_eq!(status.as_u16(), 200, "GET {url}");

    // The table for people, the list, and the HTTP API agree.
    let text = agent
        .orch(&["service", "info", "web"], Duration::from_secs(20))
        .ok();
    assert!(
        text.stdout.contains(&format!("{address}:{port}")) && text.stdout.contains("passing"),
        "{}",
        text.stdout
    );
    let list = agent
        .orch(&["service", "list", "--json"], Duration::from_secs(20))
        .ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"name": "web", "tags": [], "instances": 1, "healthy": 1}]),
        "{}",
        list.stdout
    );
    let healthy = agent.get("/v1/service/web?healthy=true").unwrap();
    assert_eq!(healthy.as_array().map(Vec::len), Some(1), "{healthy}");

    let stop = agent.orch(&["job", "stop", "web-checks"], Duration::from_secs(60));
    assert_eq!(stop.code(), 0, "{}\n{}", stop.stdout, stop.stderr);
    wait_for(
        Duration::from_secs(30),
        "service web to leave the catalog",
        || {
            let out = agent.orch(&["service", "list", "--json"], Duration::from_secs(20));
            let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            (v == serde_json::json!([])).then_some(())
        },
    );
    let empty = agent
        .orch(&["service", "info", "web"], Duration::from_secs(20))
        .ok();
    assert!(empty.stdout.contains("No instances"), "{}", empty.stdout);
}
