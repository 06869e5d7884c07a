//! `orch node status [NODE]`: the node table, or one node's attributes, resources and
//! allocations.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use orch_common::api::{
    AllocListStub, NodeEligibilityRequest, NodeEligibilityResponse, NodeListStub,
};
use orch_common::structs::{Eligibility, Node, Resources};

use crate::api_client::encode;
use crate::job::desired_word;
use crate::output::{self, key_values, mib, relative_time, short, Table};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List client nodes, or show one with its attributes, resources and allocations.
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// Node id (a unique prefix is enough); omit to list all nodes.
        node: Option<String>,
    },
    /// Allow or forbid new placements on a node; what it runs keeps running.
    #[command(after_help = ELIGIBILITY_EXAMPLES)]
    Eligibility {
        /// The scheduler may place new allocations on the node again.
        #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
        enable: bool,
        /// The scheduler places nothing new on the node.
        #[arg(long)]
        disable: bool,
        /// Node id (a unique prefix is enough).
        node: String,
    },
}

const ELIGIBILITY_EXAMPLES: &str = "EXAMPLES:
  orch node eligibility --disable 3f1d9c2e
  orch node eligibility --enable 3f1d9c2e";

const STATUS_EXAMPLES: &str = "EXAMPLES:
  orch node status
  orch node status 3f1d9c2e
  orch node status --json";

pub async fn run(ctx: &Ctx, cmd: NodeCommand) -> Result<ExitCode> {
    match cmd {
        NodeCommand::Status { node: None } => list(ctx).await,
        NodeCommand::Status { node: Some(n) } => one(ctx, &n).await,
        NodeCommand::Eligibility { enable, node, .. } => {
            let eligibility = if enable {
                Eligibility::Eligible
            } else {
                Eligibility::Ineligible
            };
            set_eligibility(ctx, &node, eligibility).await
        }
    }
}

async fn set_eligibility(ctx: &Ctx, node_ref: &str, eligibility: Eligibility) -> Result<ExitCode> {
    let api = ctx.api()?;
    let path = format!("/v1/node/{}/eligibility", encode(node_ref));
    let answer: NodeEligibilityResponse = api
        .post(&path, &NodeEligibilityRequest { eligibility })
        .await?;
    if ctx.json {
        output::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let word = eligibility_word(answer.eligibility);
    if answer.changed {
        println!("Node {:?} is now {word}", short(&answer.node_id));
    } else {
        println!("Node {:?} was already {word}", short(&answer.node_id));
    }
    Ok(ExitCode::SUCCESS)
}

fn eligibility_word(e: Eligibility) -> &'static str {
    match e {
        Eligibility::Eligible => "eligible",
        Eligibility::Ineligible => "ineligible",
    }
}

async fn list(ctx: &Ctx) -> Result<ExitCode> {
    let api = ctx.api()?;
    if ctx.json {
        output::print_json(&api.get_json("/v1/nodes").await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let nodes: Vec<NodeListStub> = api.get("/v1/nodes").await?;
    if nodes.is_empty() {
        println!("No nodes registered");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "DC",
        "CLASS",
        "DRIVERS",
        "ELIGIBILITY",
        "STATUS",
    ]);
    for n in nodes {
        t.row(vec![
            short(&n.id),
            n.name,
            n.datacenter,
            if n.node_class.is_empty() {
                "<none>".into()
            } else {
                n.node_class
            },
            n.drivers.join(","),
            eligibility_word(n.eligibility).into(),
            n.status.as_str().into(),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

fn resources_line(r: &Resources) -> String {
    format!("{} MHz cpu, {} memory", r.cpu, mib(r.memory))
}

async fn one(ctx: &Ctx, node_ref: &str) -> Result<ExitCode> {
    let api = ctx.api()?;
    let path = format!("/v1/node/{}", encode(node_ref));
    if ctx.json {
        output::print_json(&api.get_json(&path).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let n: Node = api.get(&path).await?;
    let all: Vec<AllocListStub> = api.get("/v1/allocations").await?;
    let mut allocs: Vec<AllocListStub> = all.into_iter().filter(|a| a.node_id == n.id).collect();
    allocs.sort_by_key(|a| std::cmp::Reverse(a.create_index));
    let now = orch_common::ids::now_ms();
    let drivers: Vec<String> = n
        .drivers
        .iter()
        .map(|(name, d)| {
            let health = if d.detected && d.healthy {
                "healthy"
            } else if d.detected {
                "unhealthy"
            } else {
                "not detected"
            };
            format!("{name} ({health})")
        })
        .collect();
    print!(
        "{}",
        key_values(&[
            ("ID", n.id.clone()),
            ("Name", n.name.clone()),
            ("Datacenter", n.datacenter.clone()),
            ("Class", or_none(&n.node_class)),
            ("Pool", n.node_pool.clone()),
            ("HTTP Address", or_none(&n.http_addr)),
            ("Drivers", drivers.join(", ")),
            ("Eligibility", eligibility_word(n.eligibility).into()),
            ("Status", n.status.as_str().into()),
            ("Status Description", or_none(&n.status_description)),
            ("Status Updated", relative_time(n.status_updated_at, now)),
        ])
    );

    let used = allocs
        .iter()
        .filter(|a| !a.client_status.is_terminal())
        .count();
    println!("\nResources");
    print!(
        "{}",
        key_values(&[
            ("Total", resources_line(&n.resources)),
            ("Reserved", resources_line(&n.reserved)),
            ("Allocatable", resources_line(&n.allocatable())),
            ("Allocations Using It", used.to_string()),
        ])
    );

    if !n.meta.is_empty() {
        println!("\nMeta");
        let pairs: Vec<(&str, String)> = n
            .meta
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        print!("{}", key_values(&pairs));
    }

    println!("\nAttributes");
    let pairs: Vec<(&str, String)> = n
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    print!("{}", key_values(&pairs));

    println!("\nAllocations");
    if allocs.is_empty() {
        println!("No allocations placed");
    } else {
        let mut t = Table::new(&["ID", "JOB", "GROUP", "DESIRED", "STATUS", "CREATED"]);
        for a in &allocs {
            t.row(vec![
                short(&a.id),
                a.job_id.clone(),
                a.group.clone(),
                desired_word(a.desired_status).into(),
                a.client_status.as_str().into(),
                relative_time(a.create_time, now),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}
