//! `orch operator scheduler get-config|set-config`: the cluster-wide scheduler
//! configuration (`GET/PUT /v1/operator/scheduler/configuration`); `orch operator
//! snapshot` is `operator_snapshot`'s, `orch operator raft` `operator_raft`'s.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use orch_common::api::SchedulerConfigUpdateResponse;
use orch_common::model::{SchedulerAlgorithm, SchedulerConfiguration};

use crate::operator_raft::{self, RaftCommand, RAFT_EXAMPLES};
use crate::operator_snapshot::{self, SnapshotCommand, SNAPSHOT_EXAMPLES};
use crate::output::{self, key_values};
use crate::Ctx;

const PATH: &str = "/v1/operator/scheduler/configuration";

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// The scheduler's cluster-wide configuration.
    #[command(subcommand, after_help = SCHEDULER_EXAMPLES)]
    Scheduler(SchedulerCommand),
    /// Save the server's state to a file, or restore it from one.
    #[command(subcommand, after_help = SNAPSHOT_EXAMPLES)]
    Snapshot(SnapshotCommand),
    /// The servers of the Raft configuration: list them, remove one.
    #[command(subcommand, after_help = RAFT_EXAMPLES)]
    Raft(RaftCommand),
}

#[derive(Subcommand, Debug)]
pub enum SchedulerCommand {
    /// Show the scheduler configuration.
    GetConfig,
    /// Change the scheduler configuration; settings not given keep their value.
    SetConfig(SetConfigArgs),
}

const SCHEDULER_EXAMPLES: &str = "EXAMPLES:
  orch operator scheduler get-config
  orch operator scheduler set-config --scheduler-algorithm spread
  orch operator scheduler set-config --preempt-service-scheduler true";

#[derive(Args, Debug)]
pub struct SetConfigArgs {
    /// How feasible nodes are ranked: binpack (fill nodes) or spread (even load).
    #[arg(long, value_enum)]
    scheduler_algorithm: Option<Algorithm>,
    /// May service jobs preempt lower-priority allocations.
    #[arg(long, value_name = "true|false")]
    preempt_service_scheduler: Option<bool>,
    /// May batch jobs preempt lower-priority allocations.
    #[arg(long, value_name = "true|false")]
    preempt_batch_scheduler: Option<bool>,
    /// May system jobs preempt lower-priority allocations.
    #[arg(long, value_name = "true|false")]
    preempt_system_scheduler: Option<bool>,
    /// May sysbatch jobs preempt lower-priority allocations.
    #[arg(long, value_name = "true|false")]
    preempt_sysbatch_scheduler: Option<bool>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Algorithm {
    Binpack,
    Spread,
}

pub async fn run(ctx: &Ctx, cmd: OperatorCommand) -> Result<ExitCode> {
    match cmd {
        OperatorCommand::Scheduler(SchedulerCommand::GetConfig) => get_config(ctx).await,
        OperatorCommand::Scheduler(SchedulerCommand::SetConfig(args)) => {
            set_config(ctx, args).await
        }
        OperatorCommand::Snapshot(c) => operator_snapshot::run(ctx, c).await,
        OperatorCommand::Raft(c) => operator_raft::run(ctx, c).await,
    }
}

async fn get_config(ctx: &Ctx) -> Result<ExitCode> {
    let api = ctx.api()?;
    if ctx.json {
        output::print_json(&api.get_json(PATH).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config: SchedulerConfiguration = api.get(PATH).await?;
    print!("{}", render(&config));
    Ok(ExitCode::SUCCESS)
}

fn algorithm_word(a: SchedulerAlgorithm) -> &'static str {
    match a {
        SchedulerAlgorithm::Binpack => "binpack",
        SchedulerAlgorithm::Spread => "spread",
    }
}

/// The text of `get-config`.
fn render(c: &SchedulerConfiguration) -> String {
    let p = &c.preemption_config;
    key_values(&[
        (
            "Scheduler Algorithm",
            algorithm_word(c.scheduler_algorithm).to_string(),
        ),
        (
            "Preemption System Scheduler",
            p.system_scheduler_enabled.to_string(),
        ),
        (
            "Preemption SysBatch Scheduler",
            p.sysbatch_scheduler_enabled.to_string(),
        ),
        (
            "Preemption Service Scheduler",
            p.service_scheduler_enabled.to_string(),
        ),
        (
            "Preemption Batch Scheduler",
            p.batch_scheduler_enabled.to_string(),
        ),
        ("Modify Index", c.modify_index.to_string()),
    ])
}

/// The configuration after applying the flags given to `set-config`.
fn apply(mut c: SchedulerConfiguration, args: &SetConfigArgs) -> SchedulerConfiguration {
    if let Some(a) = args.scheduler_algorithm {
        c.scheduler_algorithm = match a {
            Algorithm::Binpack => SchedulerAlgorithm::Binpack,
            Algorithm::Spread => SchedulerAlgorithm::Spread,
        };
    }
    let p = &mut c.preemption_config;
    if let Some(v) = args.preempt_service_scheduler {
        p.service_scheduler_enabled = v;
    }
    if let Some(v) = args.preempt_batch_scheduler {
        p.batch_scheduler_enabled = v;
    }
    if let Some(v) = args.preempt_system_scheduler {
        p.system_scheduler_enabled = v;
    }
    if let Some(v) = args.preempt_sysbatch_scheduler {
        p.sysbatch_scheduler_enabled = v;
    }
    c
}

async fn set_config(ctx: &Ctx, args: SetConfigArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    // The API replaces the whole configuration: start from what is in force.
    let current: SchedulerConfiguration = api.get(PATH).await?;
    let wanted = apply(current, &args);
    let resp: SchedulerConfigUpdateResponse = api.put(PATH, &wanted).await?;
    if ctx.json {
        output::print_json(&resp)?;
    } else {
        println!("Scheduler configuration updated!");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_flags() -> SetConfigArgs {
        SetConfigArgs {
            scheduler_algorithm: None,
            preempt_service_scheduler: None,
            preempt_batch_scheduler: None,
            preempt_system_scheduler: None,
            preempt_sysbatch_scheduler: None,
        }
    }

    #[test]
    fn set_config_changes_only_the_flags_given() {
        let mut args = no_flags();
        args.scheduler_algorithm = Some(Algorithm::Spread);
        args.preempt_system_scheduler = Some(false);
        let c = apply(SchedulerConfiguration::default(), &args);
        assert_eq!(c.scheduler_algorithm, SchedulerAlgorithm::Spread);
        assert!(!c.preemption_config.system_scheduler_enabled);
        assert!(c.preemption_config.sysbatch_scheduler_enabled);
        assert!(!c.preemption_config.service_scheduler_enabled);
        assert_eq!(
            apply(SchedulerConfiguration::default(), &no_flags()),
            SchedulerConfiguration::default()
        );
    }

    #[test]
    fn get_config_prints_the_algorithm_and_each_preemption_switch() {
        let text = render(&SchedulerConfiguration::default());
        assert!(text.contains("Scheduler Algorithm"), "{text}");
        assert!(text.contains("binpack"), "{text}");
        assert!(text.contains("Preemption Service Scheduler"), "{text}");
    }
}
