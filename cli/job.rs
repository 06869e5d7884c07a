//! `orch job ...`: run (submit + monitor), scale, revert, validate, status and stop
//! (`plan` is in `plan.rs`, `history` in `history.rs`, the monitor that follows a
//! registration in `monitor.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use orch_common::api::{
    AllocListStub, JobDeregisterResponse, JobListStub, JobRegisterRequest, JobRegisterResponse,
    JobRevertRequest, JobScaleRequest,
};
use orch_common::model::{ClientStatus, Deployment, DesiredStatus, EvalStatus, Evaluation, Job};

use crate::api_client::encode;
use crate::monitor::{follow, now_clock, Counts, WATCH_WAIT};
use crate::output::{self, key_values, relative_time, short, Table};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job spec and watch it get placed and start.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Dry run: show the diff against the running version and what the scheduler would
    /// do (placements, updates, failures), without changing anything.
    #[command(after_help = crate::plan::PLAN_EXAMPLES)]
    Plan {
        /// Job spec (TOML).
        file: PathBuf,
    },
    /// Set a group's instance count (a new job version) and watch it take effect.
    #[command(after_help = SCALE_EXAMPLES)]
    Scale(ScaleArgs),
    /// Parse and validate a job spec locally, without contacting a server.
    #[command(after_help = VALIDATE_EXAMPLES)]
    Validate {
        /// Job spec (TOML).
        file: PathBuf,
    },
    /// List jobs, or show one job with its groups, placement failures and allocations.
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// Job id (a unique prefix is enough); omit to list all jobs.
        job: Option<String>,
    },
    /// Show a job's versions (stable or not, what each changed), or their full diffs.
    #[command(after_help = crate::history::HISTORY_EXAMPLES)]
    History(crate::history::HistoryArgs),
    /// Register an earlier version's spec again (as a new version) and watch it roll
    /// out like `orch job run`.
    #[command(after_help = REVERT_EXAMPLES)]
    Revert(RevertArgs),
    /// Stop a job and wait until its allocations have stopped.
    #[command(after_help = STOP_EXAMPLES)]
    Stop {
        /// Job id (a unique prefix is enough).
        job: String,
        /// Also delete the job from the server once stopped.
        #[arg(long)]
        purge: bool,
        /// Return once the stop is registered instead of waiting for the allocations.
        #[arg(long, short = 'd')]
        detach: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Job spec (TOML).
    file: PathBuf,
    /// Return as soon as the job is registered, printing the evaluation id.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Register only if the job's modify index is still N (0: only if it does not exist).
    #[arg(long, value_name = "N")]
    check_index: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Job id (a unique prefix is enough).
    job: String,
    /// Task group to scale.
    group: String,
    /// The group's new instance count.
    #[arg(allow_negative_numbers = true)]
    count: i64,
    /// Return as soon as the new version is registered, printing the evaluation id.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Scale only if the job's modify index is still N.
    #[arg(long, value_name = "N")]
    check_index: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RevertArgs {
    /// Job id (a unique prefix is enough).
    job: String,
    /// The version whose spec is registered again (see `orch job history`).
    version: u64,
    /// Return as soon as the new version is registered, printing the evaluation id.
    #[arg(long, short = 'd')]
    detach: bool,
}

const REVERT_EXAMPLES: &str = "EXAMPLES:
  orch job history web
  orch job revert web 3
  orch job revert --detach web 3

Exit status: as for `orch job run`; 1 when the version is unknown or is the current one.";

const SCALE_EXAMPLES: &str = "EXAMPLES:
  orch job scale hello web 5
  orch job scale --detach hello web 0

Exit status: as for `orch job run`.";

const RUN_EXAMPLES: &str = "EXAMPLES:
  orch job run jobspecs/hello.toml
  orch job run --detach jobspecs/frames.toml
  orch job run --check-index 0 web.toml     # only if the job does not exist yet

A service job with an [update] policy is followed through its deployment: a line per
group whenever its progress changes, until the rollout succeeds, fails or its canaries
wait for `orch deployment promote`.

Exit status: 0 when the allocations are running (service), the deployment succeeded or
its canaries wait for promotion, or the batch finished successfully; 1 on an error, a
failed allocation or a failed (or rolled back, or cancelled) deployment; 2 when
placements failed (the job stays registered and is placed once capacity appears).";

const VALIDATE_EXAMPLES: &str = "EXAMPLES:
  orch job validate jobspecs/hello.toml";

const STATUS_EXAMPLES: &str = "EXAMPLES:
  orch job status
  orch job status hello
  orch job status --json hello";

const STOP_EXAMPLES: &str = "EXAMPLES:
  orch job stop hello
  orch job stop --purge hello
  orch job stop --detach hello";

pub async fn run(ctx: &Ctx, cmd: JobCommand) -> Result<ExitCode> {
    match cmd {
        JobCommand::Run(args) => run_job(ctx, args).await,
        JobCommand::Plan { file } => crate::plan::plan(ctx, &file).await,
        JobCommand::Scale(args) => scale(ctx, args).await,
        JobCommand::Validate { file } => validate(ctx, &file),
        JobCommand::Status { job: None } => list(ctx).await,
        JobCommand::Status { job: Some(job) } => status(ctx, &job).await,
        JobCommand::History(args) => crate::history::history(ctx, args).await,
        JobCommand::Revert(args) => revert(ctx, args).await,
        JobCommand::Stop { job, purge, detach } => stop(ctx, &job, purge, detach).await,
    }
}

/// Reads and validates a spec; on problems prints each as `FILE:LINE:COL: path: msg`.
pub(crate) fn load_spec(file: &Path) -> Result<Option<Job>> {
    let source = std::fs::read_to_string(file)
        .with_context(|| format!("reading job spec {}", file.display()))?;
    match orch_common::jobspec::parse(&source) {
        Ok(job) => Ok(Some(job)),
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{}", spec_error_line(file, e));
            }
            eprintln!(
                "Error: {} has {} problem{}",
                file.display(),
                errs.0.len(),
                if errs.0.len() == 1 { "" } else { "s" }
            );
            Ok(None)
        }
    }
}

/// `FILE:LINE:COL: path: message` (location parts left out when unknown).
fn spec_error_line(file: &Path, e: &orch_common::jobspec::SpecError) -> String {
    let mut s = file.display().to_string();
    if let Some(line) = e.line {
        s.push_str(&format!(":{line}"));
        if let Some(col) = e.column {
            s.push_str(&format!(":{col}"));
        }
    }
    if !e.path.is_empty() {
        s.push_str(&format!(": {}", e.path));
    }
    s.push_str(&format!(": {}", e.message));
    s
}

fn validate(ctx: &Ctx, file: &Path) -> Result<ExitCode> {
    let Some(job) = load_spec(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    if ctx.json {
        output::print_json(&job)?;
    } else {
        println!("Job validation successful: {} ({})", job.id, file.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_job(ctx: &Ctx, args: RunArgs) -> Result<ExitCode> {
    let Some(job) = load_spec(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let api = ctx.api()?;
    let req = JobRegisterRequest {
        job: job.clone(),
        enforce_index: args.check_index,
    };
    let resp: JobRegisterResponse = match args.check_index {
        // Say which flag the server's compare-and-set refusal is about.
        Some(n) => api
            .post("/v1/jobs", &req)
            .await
            .with_context(|| format!("job not registered (--check-index {n})"))?,
        None => api.post("/v1/jobs", &req).await?,
    };
    let headline = "Job registration successful".to_string();
    after_register(
        ctx,
        &api,
        &job.id,
        &resp,
        args.detach,
        headline,
        "registered",
    )
    .await
}

/// After a registration (run, scale, revert): prints the server's warnings, then either
/// `headline` and the evaluation id (`--detach`) or follows it with the monitor (`what`
/// says what happened, e.g. "registered").
async fn after_register(
    ctx: &Ctx,
    api: &crate::api_client::ApiClient,
    job_id: &str,
    resp: &JobRegisterResponse,
    detach: bool,
    headline: String,
    what: &str,
) -> Result<ExitCode> {
    for w in &resp.warnings {
        eprintln!("Warning: {w}");
    }
    if !detach {
        return follow(ctx, api, job_id, resp, what).await;
    }
    if ctx.json {
        output::print_json(resp)?;
    } else {
        println!("{headline}");
        println!("Evaluation ID: {}", resp.eval_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `orch job scale`: registers the new count, then monitors like `job run`.
async fn scale(ctx: &Ctx, args: ScaleArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    let current: Job = api.get(&format!("/v1/job/{}", encode(&args.job))).await?;
    let resp: JobRegisterResponse = api
        .post(
            &format!("/v1/job/{}/scale", encode(&current.id)),
            &JobScaleRequest {
                group: args.group.clone(),
                count: args.count,
                enforce_index: args.check_index,
            },
        )
        .await?;
    let headline = format!(
        "Job {:?} group {:?} scaled to {}",
        current.id, args.group, args.count
    );
    let what = format!("group {:?} scaled to {}", args.group, args.count);
    after_register(ctx, &api, &current.id, &resp, args.detach, headline, &what).await
}

/// `orch job revert`: registers an earlier version's spec again, then monitors like
/// `job run`.
async fn revert(ctx: &Ctx, args: RevertArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    // Resolve a prefix first: the revert route wants the whole id.
    let current: Job = api.get(&format!("/v1/job/{}", encode(&args.job))).await?;
    let resp: JobRegisterResponse = api
        .post(
            &format!("/v1/job/{}/revert", encode(&current.id)),
            &JobRevertRequest {
                version: args.version,
                enforce_prior_version: None,
            },
        )
        .await?;
    let headline = format!("Job {:?} reverted to version {}", current.id, args.version);
    let what = format!("reverted to the spec of version {}", args.version);
    after_register(ctx, &api, &current.id, &resp, args.detach, headline, &what).await
}

async fn list(ctx: &Ctx) -> Result<ExitCode> {
    let api = ctx.api()?;
    if ctx.json {
        output::print_json(&api.get_json("/v1/jobs").await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let jobs: Vec<JobListStub> = api.get("/v1/jobs").await?;
    if jobs.is_empty() {
        println!("No running jobs");
        return Ok(ExitCode::SUCCESS);
    }
    let now = orch_common::ids::now_ms();
    let mut t = Table::new(&["ID", "TYPE", "PRIORITY", "STATUS", "SUBMITTED"]);
    for j in jobs {
        let status = if j.stop {
            "dead (stopped)".to_string()
        } else {
            job_status_word(j.status).to_string()
        };
        t.row(vec![
            j.id.to_string(),
            j.job_type.as_str().to_string(),
            j.priority.to_string(),
            status,
            relative_time(j.submit_time, now),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

fn job_status_word(s: orch_common::model::JobStatus) -> &'static str {
    match s {
        orch_common::model::JobStatus::Pending => "pending",
        orch_common::model::JobStatus::Running => "running",
        orch_common::model::JobStatus::Dead => "dead",
    }
}

async fn status(ctx: &Ctx, job_ref: &str) -> Result<ExitCode> {
    let api = ctx.api()?;
    let job_path = format!("/v1/job/{}", encode(job_ref));
    if ctx.json {
        let job = api.get_json(&job_path).await?;
        let id = job.get("id").and_then(|v| v.as_str()).unwrap_or(job_ref);
        let allocs = api
            .get_json(&format!("/v1/job/{}/allocations", encode(id)))
            .await?;
        let evals = api
            .get_json(&format!("/v1/job/{}/evaluations", encode(id)))
            .await?;
        let mut out = serde_json::json!({
            "job": job, "allocations": allocs, "evaluations": evals,
        });
        if let Some(d) = api
            .get_optional::<serde_json::Value>(&format!("/v1/job/{}/deployment", encode(id)))
            .await?
        {
            out["latest_deployment"] = d;
        }
        output::print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let job: Job = api.get(&job_path).await?;
    let mut allocs: Vec<AllocListStub> = api
        .get(&format!("/v1/job/{}/allocations", encode(&job.id)))
        .await?;
    let mut evals: Vec<Evaluation> = api
        .get(&format!("/v1/job/{}/evaluations", encode(&job.id)))
        .await?;
    // 404: the job never had a deployment (no [update] policy).
    let deployment: Option<Deployment> = api
        .get_optional(&format!("/v1/job/{}/deployment", encode(&job.id)))
        .await?;
    let now = orch_common::ids::now_ms();
    let status = if job.stop {
        "dead (stopped)".to_string()
    } else {
        job_status_word(job.status).to_string()
    };
    print!(
        "{}",
        key_values(&[
            ("ID", job.id.to_string()),
            ("Name", job.name.clone()),
            ("Type", job.job_type.as_str().to_string()),
            ("Priority", job.priority.to_string()),
            ("Datacenters", job.datacenters.join(",")),
            ("Status", status),
            ("Version", job.version.to_string()),
            (
                "Submitted",
                format!(
                    "{} ({})",
                    output::timestamp(job.submit_time),
                    relative_time(job.submit_time, now)
                )
            ),
        ])
    );

    println!("\nSummary");
    let mut t = Table::new(&[
        "GROUP", "DESIRED", "PLACED", "PENDING", "RUNNING", "COMPLETE", "FAILED", "LOST",
    ]);
    for g in &job.groups {
        let mut c = Counts::default();
        let mut placed = 0;
        for a in allocs.iter().filter(|a| a.group == g.name) {
            c.add(a.client_status);
            if a.desired_status == DesiredStatus::Run
                && a.job_version == job.version
                && a.next_allocation.is_none()
            {
                placed += 1;
            }
        }
        let desired = if job.stop { 0 } else { g.count };
        t.row(vec![
            g.name.clone(),
            desired.to_string(),
            placed.to_string(),
            c.pending.to_string(),
            c.running.to_string(),
            c.complete.to_string(),
            c.failed.to_string(),
            c.lost.to_string(),
        ]);
    }
    print!("{}", t.render());

    // The newest evaluation the scheduler has processed tells whether placements failed.
    evals.sort_by_key(|e| std::cmp::Reverse(e.create_index));
    if let Some(e) = evals
        .iter()
        .find(|e| matches!(e.status, EvalStatus::Complete | EvalStatus::Failed))
    {
        if !e.failed_tg_allocs.is_empty() && !job.stop {
            println!("\nPlacement Failure");
            for (group, m) in &e.failed_tg_allocs {
                let mut lines = crate::plan::failure_lines(m).into_iter();
                println!("Group {group:?}: {}", lines.next().unwrap_or_default());
                for line in lines {
                    println!("  {line}");
                }
                if let Some(q) = e.queued_allocations.get(group) {
                    println!("  {q} instance(s) waiting for capacity");
                }
            }
        }
    }
    if let Some(b) = evals.iter().find(|e| e.status == EvalStatus::Blocked) {
        println!(
            "\nBlocked evaluation {:?} will place the remaining instances when capacity appears",
            short(&b.id)
        );
    }

    if let Some(d) = &deployment {
        print!("\n{}", crate::deployment::render_latest(d, now));
    }

    println!("\nAllocations");
    if allocs.is_empty() {
        println!("No allocations placed");
        return Ok(ExitCode::SUCCESS);
    }
    allocs.sort_by_key(|a| std::cmp::Reverse(a.create_index));
    print!("{}", alloc_table(&allocs, now));
    Ok(ExitCode::SUCCESS)
}

/// The allocations table shared by `job status` and `node status`.
fn alloc_table(allocs: &[AllocListStub], now: u64) -> String {
    let mut t = Table::new(&[
        "ID", "NODE", "GROUP", "VERSION", "DESIRED", "STATUS", "CREATED",
    ]);
    for a in allocs {
        let node = if a.node_name.is_empty() {
            short(&a.node_id)
        } else {
            a.node_name.clone()
        };
        t.row(vec![
            short(&a.id),
            node,
            a.group.clone(),
            a.job_version.to_string(),
            desired_word(a.desired_status).to_string(),
            a.client_status.as_str().to_string(),
            relative_time(a.create_time, now),
        ]);
    }
    t.render()
}

pub fn desired_word(d: DesiredStatus) -> &'static str {
    match d {
        DesiredStatus::Run => "run",
        DesiredStatus::Stop => "stop",
        DesiredStatus::Evict => "evict",
    }
}

/// Done from the user's point of view: nothing of it runs any more.
fn alloc_stopped(a: &AllocListStub) -> bool {
    a.client_status.is_terminal()
        || (a.desired_status != DesiredStatus::Run && a.client_status != ClientStatus::Running)
}

async fn stop(ctx: &Ctx, job_ref: &str, purge: bool, detach: bool) -> Result<ExitCode> {
    let api = ctx.api()?;
    // Resolve a prefix to the full id first: after a purge it can no longer be resolved.
    let job: Job = api.get(&format!("/v1/job/{}", encode(job_ref))).await?;
    let path = if purge {
        format!("/v1/job/{}?purge=true", encode(&job.id))
    } else {
        format!("/v1/job/{}", encode(&job.id))
    };
    let resp: JobDeregisterResponse = api.delete(&path).await?;
    if ctx.json {
        output::print_json(&resp)?;
    } else {
        println!(
            "==> {} Job {:?} stopped{}",
            now_clock(),
            job.id,
            if purge { " and purged" } else { "" }
        );
        println!("    Evaluation ID: {}", resp.eval_id);
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let mut index = 0u64;
    let mut last_left: Option<usize> = None;
    loop {
        let r = api
            .get_indexed::<Vec<AllocListStub>>("/v1/allocations", Some((index, WATCH_WAIT)))
            .await?;
        let left = r
            .value
            .iter()
            .filter(|a| a.job_id == job.id && !alloc_stopped(a))
            .count();
        if left == 0 {
            if !ctx.json {
                println!(
                    "==> {} All allocations of {:?} have stopped",
                    now_clock(),
                    job.id
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        if last_left != Some(left) && !ctx.json {
            println!(
                "==> {} Waiting for {left} allocation(s) to stop",
                now_clock()
            );
            last_left = Some(left);
        }
        if r.index <= index {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        index = r.index.max(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::tests::stub;
    use orch_common::jobspec::SpecError;

    #[test]
    fn spec_errors_print_file_line_column_path_and_message() {
        let e = SpecError {
            path: "group.web.count".into(),
            line: Some(7),
            column: Some(9),
            message: "must not be negative".into(),
        };
        assert_eq!(
            spec_error_line(Path::new("web.toml"), &e),
            "web.toml:7:9: group.web.count: must not be negative"
        );
        let e = SpecError {
            path: String::new(),
            line: None,
            column: None,
            message: "empty".into(),
        };
        assert_eq!(spec_error_line(Path::new("x.toml"), &e), "x.toml: empty");
    }

    #[test]
    fn stopped_means_terminal_or_stopping_and_not_running() {
        assert!(alloc_stopped(&stub(
            1,
            DesiredStatus::Stop,
            ClientStatus::Complete
        )));
        assert!(alloc_stopped(&stub(
            1,
            DesiredStatus::Stop,
            ClientStatus::Pending
        )));
        assert!(!alloc_stopped(&stub(
            1,
            DesiredStatus::Stop,
            ClientStatus::Running
        )));
        assert!(!alloc_stopped(&stub(
            1,
            DesiredStatus::Run,
            ClientStatus::Pending
        )));
    }
}
