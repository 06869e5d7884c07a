//! `orch service list|info`: the service catalog (`GET /v1/services`,
//! `GET /v1/service/{name}`), one instance per service block of each running
//! allocation.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use orch_common::api::{ServiceInstance, ServiceListStub};

use crate::api_client::encode;
use crate::output::{self, Table};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// List the services with running instances: tags, instances, how many are healthy.
    #[command(after_help = LIST_EXAMPLES)]
    List,
    /// Show a service's instances: allocation, node, address:port, health and tags.
    #[command(after_help = INFO_EXAMPLES)]
    Info {
        /// The service's name (the `name` of a `[[group.G.service]]` block).
        name: String,
        /// Only the instances whose checks all pass.
        #[arg(long)]
        healthy: bool,
    },
}

const LIST_EXAMPLES: &str = "EXAMPLES:
  orch service list
  orch service list --json";

const INFO_EXAMPLES: &str = "EXAMPLES:
  orch service info web
  orch service info web --healthy
  orch service info web --json | jq -r '.[] | \"\\(.address):\\(.port)\"'";

pub async fn run(ctx: &Ctx, cmd: ServiceCommand) -> Result<ExitCode> {
    match cmd {
        ServiceCommand::List => list(ctx).await,
        ServiceCommand::Info { name, healthy } => info(ctx, &name, healthy).await,
    }
}

async fn list(ctx: &Ctx) -> Result<ExitCode> {
    let services: Vec<ServiceListStub> = ctx.api()?.get("/v1/services").await?;
    if ctx.json {
        output::print_json(&services)?;
    } else {
        print!("{}", render_list(&services));
    }
    Ok(ExitCode::SUCCESS)
}

async fn info(ctx: &Ctx, name: &str, healthy: bool) -> Result<ExitCode> {
    let mut path = format!("/v1/service/{}", encode(name));
    if healthy {
        path.push_str("?healthy=true");
    }
    let instances: Vec<ServiceInstance> = ctx.api()?.get(&path).await?;
    if ctx.json {
        output::print_json(&instances)?;
    } else {
        print!("{}", render_info(name, &instances));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_list(services: &[ServiceListStub]) -> String {
    if services.is_empty() {
        return "No services\n".to_string();
    }
    let mut t = Table::new(&["NAME", "TAGS", "INSTANCES", "HEALTHY"]);
    for s in services {
        t.row(vec![
            s.name.clone(),
            tags(&s.tags),
            s.instances.to_string(),
            s.healthy.to_string(),
        ]);
    }
    t.render()
}

fn render_info(name: &str, instances: &[ServiceInstance]) -> String {
    if instances.is_empty() {
        return format!("No instances of service {name:?}\n");
    }
    let mut t = Table::new(&["ALLOC", "NODE", "ADDRESS", "HEALTH", "TAGS"]);
    for i in instances {
        t.row(vec![
            output::short(&i.alloc_id),
            i.node_name.clone(),
            address(i),
            i.health.as_str().to_string(),
            tags(&i.tags),
        ]);
    }
    t.render()
}

/// `address:port` (`[v6]:port`), or the address alone for a service without a port.
fn address(i: &ServiceInstance) -> String {
    match i.port {
        Some(port) if i.address.contains(':') => format!("[{}]:{port}", i.address),
        Some(port) => format!("{}:{port}", i.address),
        None => i.address.clone(),
    }
}

fn tags(tags: &[String]) -> String {
    if tags.is_empty() {
        "-".to_string()
    } else {
        tags.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::model::CheckHealth;

    fn instance(alloc_id: &str, address: &str, port: Option<u16>) -> ServiceInstance {
        ServiceInstance {
            service: "web".into(),
            alloc_id: alloc_id.into(),
            job_id: "api".into(),
            group: "web".into(),
            node_id: "n1".into(),
            node_name: "node-1".into(),
            address: address.into(),
            port,
            address_mode: "auto".into(),
            tags: vec!["v1".into(), "blue".into()],
            canary_tags: vec![],
            canary: false,
            meta: Default::default(),
            health: CheckHealth::Passing,
            checks: Default::default(),
        }
    }

    #[test]
    fn the_info_table_shows_address_and_port_health_and_tags() {
        let text = render_info(
            "web",
            &[
                instance(
                    "8f3c2a1b-0000-0000-0000-000000000000",
                    "10.0.0.5",
                    Some(25000),
                ),
                instance("9a000000-0000-0000-0000-000000000000", "::1", Some(8080)),
                instance("7b000000-0000-0000-0000-000000000000", "10.0.0.6", None),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ALLOC"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["8f3c2a1b", "node-1", "10.0.0.5:25000", "passing", "v1,blue"]
        );
        assert!(lines[2].contains("[::1]:8080"), "{text}");
        assert!(lines[3].contains("10.0.0.6 "), "{text}");
    }

    #[test]
    fn empty_answers_say_so() {
        assert_eq!(render_list(&[]), "No services\n");
        assert_eq!(render_info("web", &[]), "No instances of service \"web\"\n");
    }

    #[test]
    fn the_list_table_counts_instances() {
        let text = render_list(&[ServiceListStub {
            name: "web".into(),
            tags: vec![],
            instances: 3,
            healthy: 2,
        }]);
        let cells: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(cells, ["web", "-", "3", "2"]);
    }
}
