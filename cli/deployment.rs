//! `orch deployment ...`: list, status, promote, fail, pause and resume the rollouts of
//! job versions, and the renderers of a deployment (header, per-group table, progress
//! lines) shared with `orch job status` and the `orch job run` monitor.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use orch_common::api::{DeploymentPromoteRequest, DeploymentUpdateResponse};
use orch_common::model::{Deployment, DeploymentGroup};

use crate::api_client::{encode, ApiClient};
use crate::output::{self, key_values, relative_time, short, Table};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// List deployments, newest first (all jobs', or one job's).
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Only this job's deployments (a unique prefix is enough).
        #[arg(long)]
        job: Option<String>,
    },
    /// Show one deployment: its status and each group's progress.
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// Deployment id (a unique prefix is enough).
        id: String,
    },
    /// Promote the deployment's canaries (all groups', or the named ones'), so the
    /// rest of the old instances are replaced.
    #[command(after_help = PROMOTE_EXAMPLES)]
    Promote(PromoteArgs),
    /// Mark a running deployment failed (with auto_revert, the last stable version is
    /// registered again).
    #[command(after_help = FAIL_EXAMPLES)]
    Fail {
        /// Deployment id (a unique prefix is enough).
        id: String,
    },
    /// Pause a running deployment: no further instances are replaced until resumed.
    #[command(after_help = PAUSE_EXAMPLES)]
    Pause {
        /// Deployment id (a unique prefix is enough).
        id: String,
    },
    /// Resume a paused deployment.
    #[command(after_help = RESUME_EXAMPLES)]
    Resume {
        /// Deployment id (a unique prefix is enough).
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// Deployment id (a unique prefix is enough).
    id: String,
    /// Promote only this group's canaries (repeatable; default: every group).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
}

pub const DEPLOYMENT_EXAMPLES: &str = "EXAMPLES:
  orch deployment list
  orch deployment status 1f2e3d4c
  orch deployment promote 1f2e3d4c
  orch deployment fail 1f2e3d4c";

const LIST_EXAMPLES: &str = "EXAMPLES:
  orch deployment list
  orch deployment list --job web
  orch deployment list --json";

const STATUS_EXAMPLES: &str = "EXAMPLES:
  orch deployment status 1f2e3d4c
  orch deployment status --json 1f2e3d4c";

const PROMOTE_EXAMPLES: &str = "EXAMPLES:
  orch deployment promote 1f2e3d4c
  orch deployment promote 1f2e3d4c --group web --group api

Exit status: 1 when the deployment has no canaries, they are not all healthy yet, or it
is no longer running.";

const FAIL_EXAMPLES: &str = "EXAMPLES:
  orch deployment fail 1f2e3d4c";

const PAUSE_EXAMPLES: &str = "EXAMPLES:
  orch deployment pause 1f2e3d4c
  orch deployment resume 1f2e3d4c";

const RESUME_EXAMPLES: &str = "EXAMPLES:
  orch deployment resume 1f2e3d4c";

pub async fn run(ctx: &Ctx, cmd: DeploymentCommand) -> Result<ExitCode> {
    let api = ctx.api()?;
    match cmd {
        DeploymentCommand::List { job } => list(ctx, &api, job.as_deref()).await,
        DeploymentCommand::Status { id } => status(ctx, &api, &id).await,
        DeploymentCommand::Promote(args) => {
            let body = DeploymentPromoteRequest {
                groups: args.groups.clone(),
            };
            act(ctx, &api, &args.id, Action::Promote(&args.groups), &body).await
        }
        DeploymentCommand::Fail { id } => act(ctx, &api, &id, Action::Fail, &()).await,
        DeploymentCommand::Pause { id } => act(ctx, &api, &id, Action::Pause, &()).await,
        DeploymentCommand::Resume { id } => act(ctx, &api, &id, Action::Resume, &()).await,
    }
}

async fn list(ctx: &Ctx, api: &ApiClient, job: Option<&str>) -> Result<ExitCode> {
    let path = match job {
        // Resolve a job prefix to its id first: the list filter wants the whole id.
        Some(j) => {
            let job: orch_common::model::Job = api.get(&format!("/v1/job/{}", encode(j))).await?;
            format!("/v1/job/{}/deployments", encode(&job.id))
        }
        None => "/v1/deployments".to_string(),
    };
    if ctx.json {
        output::print_json(&api.get_json(&path).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let deployments: Vec<Deployment> = api.get(&path).await?;
    if deployments.is_empty() {
        println!("No deployments found");
    } else {
        print!("{}", list_table(&deployments));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID | JOB | VERSION | STATUS | DESCRIPTION`, one row per deployment.
pub fn list_table(deployments: &[Deployment]) -> String {
    let mut t = Table::new(&["ID", "JOB", "VERSION", "STATUS", "DESCRIPTION"]);
    for d in deployments {
        t.row(vec![
            short(&d.id),
            d.job_id.to_string(),
            d.job_version.to_string(),
            d.status.as_str().to_string(),
            d.status_description.clone(),
        ]);
    }
    t.render()
}

async fn status(ctx: &Ctx, api: &ApiClient, id: &str) -> Result<ExitCode> {
    let path = format!("/v1/deployment/{}", encode(id));
    if ctx.json {
        output::print_json(&api.get_json(&path).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let d: Deployment = api.get(&path).await?;
    print!("{}", render_status(&d, orch_common::ids::now_ms()));
    Ok(ExitCode::SUCCESS)
}

/// The whole text of `orch deployment status`: the header, then the groups.
pub fn render_status(d: &Deployment, now: u64) -> String {
    let mut out = key_values(&[
        ("ID", d.id.to_string()),
        ("Job ID", d.job_id.to_string()),
        ("Job Version", d.job_version.to_string()),
        ("Status", d.status.as_str().to_string()),
        ("Description", d.status_description.clone()),
    ]);
    out.push_str("\nDeployed\n");
    out.push_str(&group_table(d, now));
    out
}

/// The "Latest Deployment" section of `orch job status`.
pub fn render_latest(d: &Deployment, now: u64) -> String {
    let mut out = String::from("Latest Deployment\n");
    out.push_str(&key_values(&[
        ("ID", short(&d.id)),
        ("Version", d.job_version.to_string()),
        ("Status", d.status.as_str().to_string()),
        ("Description", d.status_description.clone()),
    ]));
    out.push_str("\nDeployed\n");
    out.push_str(&group_table(d, now));
    out
}

/// One row per group: `GROUP | AUTO REVERT | PROMOTED | DESIRED | CANARIES | PLACED |
/// HEALTHY | UNHEALTHY | PROGRESS DEADLINE`. The promoted column is "-" for groups
/// without canaries; the deadline is the time left while the deployment is active, the
/// configured duration once it is over.
pub fn group_table(d: &Deployment, now: u64) -> String {
    let mut t = Table::new(&[
        "GROUP",
        "AUTO REVERT",
        "PROMOTED",
        "DESIRED",
        "CANARIES",
        "PLACED",
        "HEALTHY",
        "UNHEALTHY",
        "PROGRESS DEADLINE",
    ]);
    for (name, g) in &d.task_groups {
        let promoted = if g.desired_canaries == 0 {
            "-".to_string()
        } else {
            g.promoted.to_string()
        };
        t.row(vec![
            name.clone(),
            g.auto_revert.to_string(),
            promoted,
            g.desired_total.to_string(),
            g.desired_canaries.to_string(),
            g.placed_allocs.to_string(),
            g.healthy_allocs.to_string(),
            g.unhealthy_allocs.to_string(),
            progress_deadline(g, d.status.is_active(), now),
        ]);
    }
    t.render()
}

/// "in 4m (2024-05-01T10:00:00Z)" while it counts, "passed ..." once gone by, else the
/// configured duration ("10m"), or "-" without one.
fn progress_deadline(g: &DeploymentGroup, active: bool, now: u64) -> String {
    match g.require_progress_by {
        Some(at) if active => {
            let when = relative_time(at, now);
            if at >= now {
                format!("{when} ({})", output::timestamp(at))
            } else {
                format!("passed {when} ({})", output::timestamp(at))
            }
        }
        _ if g.progress_deadline.is_zero() => "-".to_string(),
        _ => orch_common::duration::format(g.progress_deadline),
    }
}

/// The counters of one group a progress line shows; a line is printed when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProgress {
    pub desired: u32,
    pub placed: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    pub canaries_placed: usize,
    pub canaries_desired: u32,
    pub promoted: bool,
}

impl From<&DeploymentGroup> for GroupProgress {
    fn from(g: &DeploymentGroup) -> Self {
        GroupProgress {
            desired: g.desired_total,
            placed: g.placed_allocs,
            healthy: g.healthy_allocs,
            unhealthy: g.unhealthy_allocs,
            canaries_placed: g.placed_canaries.len(),
            canaries_desired: g.desired_canaries,
            promoted: g.promoted,
        }
    }
}

/// `Deployment "abcd1234" web: desired 3, placed 2, healthy 1, unhealthy 0, canaries 0/0`
/// (", promoted" once the group's canaries are).
pub fn progress_line(deployment_id: &str, group: &str, p: &GroupProgress) -> String {
    let promoted = if p.promoted { ", promoted" } else { "" };
    format!(
        "Deployment {:?} {group}: desired {}, placed {}, healthy {}, unhealthy {}, canaries {}/{}{promoted}",
        short(deployment_id),
        p.desired,
        p.placed,
        p.healthy,
        p.unhealthy,
        p.canaries_placed,
        p.canaries_desired
    )
}

/// What a deployment action is, for the request path and the message printed.
#[derive(Debug, Clone, Copy)]
enum Action<'a> {
    Promote(&'a [String]),
    Fail,
    Pause,
    Resume,
}

impl Action<'_> {
    fn path(&self) -> &'static str {
        match self {
            Action::Promote(_) => "promote",
            Action::Fail => "fail",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }
}

/// POSTs an action; prints what happened. A 4xx is an error (exit 1) with the server's
/// words.
async fn act<B: serde::Serialize>(
    ctx: &Ctx,
    api: &ApiClient,
    id: &str,
    action: Action<'_>,
    body: &B,
) -> Result<ExitCode> {
    // The server changes only what a full id names: resolve a prefix with a read.
    let d: Deployment = api.get(&format!("/v1/deployment/{}", encode(id))).await?;
    let resp: DeploymentUpdateResponse = api
        .post(
            &format!("/v1/deployment/{}/{}", encode(&d.id), action.path()),
            body,
        )
        .await?;
    if ctx.json {
        output::print_json(&resp)?;
    } else {
        print!("{}", action_message(action, &resp));
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines an action prints: what was done, the rollback when one happened, and the
/// evaluation created.
fn action_message(action: Action<'_>, r: &DeploymentUpdateResponse) -> String {
    let id = short(&r.deployment_id);
    let mut out = match action {
        Action::Promote([]) => format!("Deployment {id:?} promoted\n"),
        Action::Promote(groups) => {
            let names: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
            format!(
                "Deployment {id:?} promoted for group{} {}\n",
                if groups.len() == 1 { "" } else { "s" },
                names.join(", ")
            )
        }
        Action::Fail => format!("Deployment {id:?} marked as failed\n"),
        Action::Pause => format!("Deployment {id:?} paused\n"),
        Action::Resume => format!("Deployment {id:?} resumed\n"),
    };
    if let Some(v) = r.reverted_job_version {
        out.push_str(&format!("Job rolled back to version {v}\n"));
    }
    if !r.eval_id.is_empty() {
        out.push_str(&format!("Evaluation ID: {}\n", r.eval_id));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use orch_common::mock::{deployment_group, DeploymentBuilder, JobBuilder};
    use orch_common::model::{deployment_desc, DeploymentStatus};

    /// A running deployment "abcd1234-…" of `web` v2 with one group `web` of `desired`
    /// instances (reverted on failure, a 10-minute progress deadline).
    pub(crate) fn deployment(desired: u32) -> Deployment {
        let job = JobBuilder::new("web").version(2).build();
        let mut web = deployment_group(desired, 0);
        web.auto_revert = true;
        DeploymentBuilder::new(&job)
            .id("abcd1234-0000-0000-0000-000000000000")
            .group("web", web)
            .status(DeploymentStatus::Running, deployment_desc::RUNNING)
            .eval_id("e")
            .build()
    }

    fn group(d: &mut Deployment) -> &mut DeploymentGroup {
        d.task_groups.get_mut("web").unwrap()
    }

    #[test]
    fn the_status_shows_the_header_and_a_row_per_group_with_time_left() {
        let now = 1_714_557_600_000;
        let mut d = deployment(3);
        let g = group(&mut d);
        g.placed_allocs = 2;
        g.healthy_allocs = 1;
        g.require_progress_by = Some(now + 240_000);
        let text = render_status(&d, now);
        assert!(
            text.starts_with("ID          = abcd1234-0000-0000-0000-000000000000\n"),
            "{text}"
        );
        assert!(text.contains("Job ID      = web\n"), "{text}");
        assert!(text.contains("Job Version = 2\n"), "{text}");
        assert!(text.contains("Status      = running\n"), "{text}");
        assert!(
            text.contains("Description = Deployment is running\n"),
            "{text}"
        );
        assert!(text.contains("GROUP  AUTO REVERT  PROMOTED  DESIRED  CANARIES  PLACED  HEALTHY  UNHEALTHY  PROGRESS DEADLINE\n"), "{text}");
        assert!(
            text.contains("web    true         -         3        0         2       1        0          in 4m (2024-05-01T10:04:00Z)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_finished_deployment_shows_the_configured_deadline_and_canaries_show_promotion() {
        let mut d = deployment(3);
        d.status = DeploymentStatus::Successful;
        let g = group(&mut d);
        g.require_progress_by = Some(5);
        g.desired_canaries = 1;
        g.promoted = true;
        let table = group_table(&d, 1_000);
        let row = table.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["web", "true", "true", "3", "1", "0", "0", "0", "10m"],
            "{table}"
        );
    }

    #[test]
    fn the_latest_deployment_section_of_job_status_has_the_short_id_and_groups() {
        let d = deployment(2);
        let text = render_latest(&d, 0);
        assert!(
            text.starts_with("Latest Deployment\nID          = abcd1234\nVersion     = 2\nStatus      = running\nDescription = Deployment is running\n\nDeployed\nGROUP"),
            "{text}"
        );
        assert!(text.contains("\nweb "), "{text}");
    }

    #[test]
    fn a_passed_deadline_says_so() {
        let mut d = deployment(1);
        group(&mut d).require_progress_by = Some(1_000);
        let table = group_table(&d, 61_000);
        assert!(table.contains("passed 1m ago"), "{table}");
    }

    #[test]
    fn list_rows_show_short_ids_versions_and_descriptions() {
        let mut old = deployment(1);
        old.id = "11112222-x".into();
        old.job_version = 1;
        old.status = DeploymentStatus::Successful;
        old.status_description = "Deployment completed successfully".into();
        let text = list_table(&[deployment(1), old]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID        JOB  VERSION  STATUS      DESCRIPTION");
        assert_eq!(
            lines[1],
            "abcd1234  web  2        running     Deployment is running"
        );
        assert_eq!(
            lines[2],
            "11112222  web  1        successful  Deployment completed successfully"
        );
    }

    #[test]
    fn progress_lines_count_every_group_figure() {
        let mut d = deployment(3);
        let g = group(&mut d);
        g.placed_allocs = 2;
        g.healthy_allocs = 1;
        g.desired_canaries = 1;
        g.placed_canaries = vec!["c1".into()];
        let p = GroupProgress::from(&d.task_groups["web"]);
        assert_eq!(
            progress_line(&d.id, "web", &p),
            "Deployment \"abcd1234\" web: desired 3, placed 2, healthy 1, unhealthy 0, canaries 1/1"
        );
        let p = GroupProgress {
            promoted: true,
            ..p
        };
        assert!(progress_line(&d.id, "web", &p).ends_with("canaries 1/1, promoted"));
    }

    #[test]
    fn actions_say_what_happened_and_a_failure_names_the_rollback() {
        let r = DeploymentUpdateResponse {
            deployment_id: "abcd1234-rest".into(),
            eval_id: "eval-1".into(),
            deployment_modify_index: 5,
            reverted_job_version: Some(1),
        };
        assert_eq!(
            action_message(Action::Fail, &r),
            "Deployment \"abcd1234\" marked as failed\nJob rolled back to version 1\nEvaluation ID: eval-1\n"
        );
        let r = DeploymentUpdateResponse {
            eval_id: Default::default(),
            reverted_job_version: None,
            ..r
        };
        assert_eq!(
            action_message(Action::Pause, &r),
            "Deployment \"abcd1234\" paused\n"
        );
        assert_eq!(
            action_message(Action::Promote(&[]), &r),
            "Deployment \"abcd1234\" promoted\n"
        );
        assert_eq!(
            action_message(Action::Promote(&["web".into()]), &r),
            "Deployment \"abcd1234\" promoted for group \"web\"\n"
        );
        assert_eq!(
            action_message(Action::Resume, &r),
            "Deployment \"abcd1234\" resumed\n"
        );
    }
}
