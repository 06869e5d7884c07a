//! `orch node status [NODE]`: the node table, or one node's attributes, resources,
//! drain and allocations; `orch node eligibility`; `orch node drain` (start, change or
//! cancel a drain, and watch it until the node is empty).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use orch_common::api::{
    AllocListStub, DrainSpec, NodeDrainRequest, NodeDrainResponse, NodeEligibilityRequest,
    NodeEligibilityResponse, NodeListStub,
};
use orch_common::model::{
    ClientStatus, DesiredStatus, DrainOutcome, DrainStrategy, Eligibility, Node, Resources,
};

use crate::api_client::encode;
use crate::api_client::ApiClient;
use crate::job::desired_word;
use crate::output::{self, clock, key_values, mib, relative_time, short, Table};
use crate::Ctx;
use orch_common::ids::AllocId;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List client nodes, or show one with its attributes, resources and allocations.
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// Node id (a unique prefix is enough) or name; omit to list all nodes.
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
        /// Node id (a unique prefix is enough) or name.
        node: String,
    },
    /// Move a node's allocations elsewhere (for maintenance), or stop doing so.
    ///
    /// The node turns ineligible at once; each service group moves at its
    /// `migrate` pace (at most `max_parallel` at a time, the next once the
    /// replacement has run for `min_healthy_time`); batch allocations may finish
    /// until the deadline; system allocations stop last. At the deadline whatever is
    /// left moves at once. Without --detach, watches until the node is empty.
    #[command(after_help = DRAIN_EXAMPLES)]
    Drain {
        /// Start a drain (or change the deadline of the running one).
        #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
        enable: bool,
        /// Cancel the drain; the node turns eligible again unless --keep-ineligible.
        #[arg(long)]
        disable: bool,
        /// How long the migrate pace may take; then everything left moves at once.
        #[arg(long, default_value = "1h", conflicts_with_all = ["no_deadline", "force"])]
        deadline: String,
        /// No deadline: wait for every group's pace and every batch allocation.
        #[arg(long, conflicts_with = "force")]
        no_deadline: bool,
        /// Move everything at once (a deadline of now).
        #[arg(long)]
        force: bool,
        /// Leave system and sysbatch allocations running on the node.
        #[arg(long)]
        ignore_system: bool,
        /// With --disable: the node stays ineligible.
        #[arg(long, requires = "disable")]
        keep_ineligible: bool,
        /// Return once the drain is set instead of watching it.
        #[arg(long)]
        detach: bool,
        /// Node id (a unique prefix is enough) or name.
        node: String,
    },
}

const DRAIN_EXAMPLES: &str = "EXAMPLES:
  orch node drain --enable 3f1d9c2e                 # watch until empty (deadline 1h)
  orch node drain --enable --deadline 30m --detach node-1
  orch node drain --enable --no-deadline --ignore-system 3f1d9c2e
  orch node drain --enable --force 3f1d9c2e         # everything moves now
  orch node drain --disable 3f1d9c2e                # cancel; eligible again
  orch node drain --disable --keep-ineligible 3f1d9c2e";

const ELIGIBILITY_EXAMPLES: &str = "EXAMPLES:
  orch node eligibility --disable 3f1d9c2e
  orch node eligibility --enable 3f1d9c2e";

const STATUS_EXAMPLES: &str = "EXAMPLES:
  orch node status
  orch node status 3f1d9c2e
  orch node status node-1
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
        NodeCommand::Drain {
            enable,
            deadline,
            no_deadline,
            force,
            ignore_system,
            keep_ineligible,
            detach,
            node,
            ..
        } => {
            let req = if enable {
                NodeDrainRequest {
                    drain_spec: Some(DrainSpec {
                        deadline: (!no_deadline && !force).then_some(deadline),
                        force,
                        ignore_system_jobs: ignore_system,
                    }),
                    mark_eligible: false,
                }
            } else {
                NodeDrainRequest {
                    drain_spec: None,
                    mark_eligible: !keep_ineligible,
                }
            };
            drain(ctx, &node, &req, detach).await
        }
    }
}

/// A node's full id for a reference that is its exact name, else an id prefix (resolved
/// with a read: the server changes only what a full id names).
async fn node_id_for(api: &ApiClient, node_ref: &str) -> Result<String> {
    let nodes: Vec<NodeListStub> = api.get("/v1/nodes").await?;
    let mut named = nodes.iter().filter(|n| n.name == node_ref);
    match (named.next(), named.next()) {
        (Some(n), None) => Ok(n.id.to_string()),
        _ => {
            let node: Node = api.get(&format!("/v1/node/{}", encode(node_ref))).await?;
            Ok(node.id.to_string())
        }
    }
}

async fn drain(
    ctx: &Ctx,
    node_ref: &str,
    req: &NodeDrainRequest,
    detach: bool,
) -> Result<ExitCode> {
    let api = ctx.api()?;
    let id = node_id_for(&api, node_ref).await?;
    let path = format!("/v1/node/{}/drain", encode(&id));
    let answer: NodeDrainResponse = api.post(&path, req).await?;
    if ctx.json {
        output::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let node = short(&answer.node_id);
    let Some(strategy) = answer.drain else {
        println!(
            "Node {node:?} drain disabled; the node is {}",
            eligibility_word(answer.eligibility)
        );
        return Ok(ExitCode::SUCCESS);
    };
    let now = orch_common::ids::now_ms();
    println!(
        "{} Node {node:?} drain enabled ({})",
        clock(now),
        drain_words(&strategy, now)
    );
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    monitor_drain(&api, &answer.node_id, &strategy).await
}

/// "deadline in 59m", "no deadline", "deadline passed", plus "system jobs ignored".
fn drain_words(d: &DrainStrategy, now: u64) -> String {
    let mut words = match d.deadline {
        None => "no deadline".to_string(),
        Some(t) if t <= now => "deadline passed".to_string(),
        Some(t) => format!("deadline {}", relative_time(t, now)),
    };
    if d.ignore_system_jobs {
        words.push_str(", system jobs ignored");
    }
    words
}

/// Prints what happens to the node's allocations until its drain ends: 0 when it
/// completes, 1 when it is canceled. Ctrl-C only stops watching.
async fn monitor_drain(
    api: &ApiClient,
    node_id: &str,
    strategy: &DrainStrategy,
) -> Result<ExitCode> {
    let allocs_path = format!("/v1/allocations?node_id={}", encode(node_id));
    let node_path = format!("/v1/node/{}", encode(node_id));
    let mut index = 0;
    // What was last printed per allocation: (marked, terminal).
    let mut shown: BTreeMap<AllocId, (bool, bool)> = BTreeMap::new();
    let mut last_left = None;
    loop {
        let answer = api
            .get_indexed::<Vec<AllocListStub>>(&allocs_path, Some((index, Duration::from_secs(2))))
            .await?;
        index = answer.index;
        let now = orch_common::ids::now_ms();
        let mut allocs = answer.value;
        allocs.sort_by(|x, y| x.name.cmp(&y.name));
        for a in &allocs {
            let terminal = alloc_terminal(a);
            let marked = a.desired_transition.migrate;
            let before = shown.get(&a.id).copied();
            if before.is_none() && terminal {
                // Finished before the drain: nothing to report.
                shown.insert(a.id.clone(), (marked, terminal));
                continue;
            }
            if marked && before.is_none_or(|(m, _)| !m) {
                println!(
                    "{} Alloc {:?} ({}) marked for migration",
                    clock(now),
                    short(&a.id),
                    a.name
                );
            }
            if terminal && before.is_none_or(|(_, t)| !t) {
                println!(
                    "{} Alloc {:?} ({}) {}",
                    clock(now),
                    short(&a.id),
                    a.name,
                    a.client_status.as_str()
                );
            }
            shown.insert(a.id.clone(), (marked, terminal));
        }
        let left = allocs.iter().filter(|a| !alloc_terminal(a)).count();
        if last_left != Some(left) {
            println!(
                "{} {left} allocation{} left on the node",
                clock(now),
                if left == 1 { "" } else { "s" }
            );
            last_left = Some(left);
        }
        let node: Node = api.get(&node_path).await?;
        if node.drain.is_some() {
            continue;
        }
        let outcome = node
            .last_drain
            .filter(|l| l.started_at == strategy.started_at)
            .map(|l| l.outcome);
        return Ok(match outcome {
            Some(DrainOutcome::Complete) => {
                println!("{} Drain complete", clock(now));
                ExitCode::SUCCESS
            }
            _ => {
                println!("{} Drain canceled", clock(now));
                ExitCode::FAILURE
            }
        });
    }
}

/// Neither wanted by the server nor running on the client (`Allocation::is_terminal`).
fn alloc_terminal(a: &AllocListStub) -> bool {
    a.client_status.is_terminal()
        || (a.desired_status != DesiredStatus::Run && a.client_status != ClientStatus::Running)
}

async fn set_eligibility(ctx: &Ctx, node_ref: &str, eligibility: Eligibility) -> Result<ExitCode> {
    let api = ctx.api()?;
    let id = node_id_for(&api, node_ref).await?;
    let path = format!("/v1/node/{}/eligibility", encode(&id));
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
        "DRAIN",
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
            n.drain.to_string(),
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
    let id = node_id_for(&api, node_ref).await?;
    let path = format!("/v1/node/{}", encode(&id));
    if ctx.json {
        output::print_json(&api.get_json(&path).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let n: Node = api.get(&path).await?;
    let mut allocs: Vec<AllocListStub> = api
        .get(&format!("/v1/allocations?node_id={}", encode(&n.id)))
        .await?;
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
            ("ID", n.id.to_string()),
            ("Name", n.name.clone()),
            ("Datacenter", n.datacenter.clone()),
            ("Class", or_none(&n.node_class)),
            ("Pool", n.node_pool.clone()),
            ("HTTP Address", or_none(&n.http_addr)),
            ("Drivers", drivers.join(", ")),
            ("Eligibility", eligibility_word(n.eligibility).into()),
            ("Drain", drain_status(&n, &allocs, now)),
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
                a.job_id.to_string(),
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

/// "draining since 2m ago (deadline in 58m), 3 allocations left", or how the last drain
/// ended, or "-".
fn drain_status(n: &Node, allocs: &[AllocListStub], now: u64) -> String {
    if let Some(d) = &n.drain {
        let left = allocs.iter().filter(|a| !alloc_terminal(a)).count();
        return format!(
            "draining since {} ({}), {left} allocation{} left",
            relative_time(d.started_at, now),
            drain_words(d, now),
            if left == 1 { "" } else { "s" }
        );
    }
    match &n.last_drain {
        Some(l) => format!(
            "not draining (last drain {} {})",
            l.outcome.as_str(),
            relative_time(l.finished_at, now)
        ),
        None => "-".to_string(),
    }
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}
