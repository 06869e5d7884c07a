//! `orch job ...`: run (submit + monitor), scale, validate, status and stop (`plan`
//! is in `plan.rs`).
//!
//! `job run` monitors with two blocking-query watchers (the evaluation and the job's
//! allocations) feeding one loop that prints what changed and decides when it is done:
//!
//! ```text
//!   register ──> eval pending ──> eval complete ─┬─ failed placements ──────> exit 2
//!                     │                          ├─ service: all running ────> exit 0
//!                     └─ eval failed ──> exit 1  └─ batch: all terminal ─────> exit 0
//!                                                        (any failed ─> exit 1)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use orch_common::api::{
    AllocListStub, JobDeregisterResponse, JobListStub, JobRegisterRequest, JobRegisterResponse,
    JobScaleRequest,
};
use orch_common::structs::{ClientStatus, DesiredStatus, EvalStatus, Evaluation, Job, JobType};
use tokio::sync::mpsc;

use crate::api_client::{encode, ApiClient};
use crate::output::{self, key_values, relative_time, short, Table};
use crate::Ctx;

/// How long each blocking query waits on the server before it is re-issued.
const WATCH_WAIT: Duration = Duration::from_secs(30);

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

const SCALE_EXAMPLES: &str = "EXAMPLES:
  orch job scale hello web 5
  orch job scale --detach hello web 0

Exit status: as for `orch job run`.";

const RUN_EXAMPLES: &str = "EXAMPLES:
  orch job run jobspecs/hello.toml
  orch job run --detach jobspecs/frames.toml
  orch job run --check-index 0 web.toml     # only if the job does not exist yet

Exit status: 0 when the allocations are running (service) or finished successfully
(batch), 1 on an error or a failed allocation, 2 when placements failed (the job stays
registered and is placed once capacity appears).";

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
    for w in &resp.warnings {
        eprintln!("Warning: {w}");
    }
    if args.detach {
        if ctx.json {
            output::print_json(&resp)?;
        } else {
            println!("Job registration successful");
            println!("Evaluation ID: {}", resp.eval_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(ctx, &api, &job.id, &resp, "registered").await
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
    for w in &resp.warnings {
        eprintln!("Warning: {w}");
    }
    if args.detach {
        if ctx.json {
            output::print_json(&resp)?;
        } else {
            println!(
                "Job {:?} group {:?} scaled to {}",
                current.id, args.group, args.count
            );
            println!("Evaluation ID: {}", resp.eval_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let what = format!("group {:?} scaled to {}", args.group, args.count);
    follow(ctx, &api, &current.id, &resp, &what).await
}

/// After a registration: prints the new version and monitors its evaluation and
/// allocations (`what` says what happened, e.g. "registered").
async fn follow(
    ctx: &Ctx,
    api: &ApiClient,
    job_id: &str,
    resp: &JobRegisterResponse,
    what: &str,
) -> Result<ExitCode> {
    let registered: Job = api.get(&format!("/v1/job/{}", encode(job_id))).await?;
    if !ctx.json {
        println!(
            "==> {} Job {:?} {what} (version {}), monitoring evaluation {:?}",
            now_clock(),
            job_id,
            registered.version,
            short(&resp.eval_id)
        );
    }
    let outcome = monitor(api, &registered, &resp.eval_id, ctx.json).await?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "eval_id": resp.eval_id,
            "job_modify_index": resp.job_modify_index,
            "warnings": resp.warnings,
            "outcome": outcome.word(),
        }))?;
    }
    Ok(outcome.exit_code())
}

/// How a `job run` monitor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Service running, or batch finished successfully.
    Done,
    /// An allocation or the evaluation failed.
    Failed,
    /// Some instances could not be placed.
    PlacementFailed,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::PlacementFailed => ExitCode::from(2),
        }
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::PlacementFailed => "placement_failed",
        }
    }
}

enum Update {
    Eval(Box<Evaluation>),
    Allocs(Vec<AllocListStub>),
    Error(anyhow::Error),
}

/// Re-issues a blocking query forever, sending each answer; stops when the receiver is
/// gone or `done` says so.
fn spawn_watch<T, F>(
    api: ApiClient,
    path: String,
    tx: mpsc::Sender<Update>,
    wrap: F,
    done: fn(&T) -> bool,
) -> tokio::task::JoinHandle<()>
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(T) -> Update + Send + 'static,
{
    tokio::spawn(async move {
        let mut index = 0u64;
        loop {
            match api.get_indexed::<T>(&path, Some((index, WATCH_WAIT))).await {
                Ok(r) => {
                    let stop = done(&r.value);
                    if r.index <= index {
                        // The server answered without news (timeout); don't spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    index = r.index.max(index);
                    if tx.send(wrap(r.value)).await.is_err() || stop {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Update::Error(e)).await;
                    return;
                }
            }
        }
    })
}

/// Allocation counts of one group, as printed in progress lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    pending: u32,
    running: u32,
    complete: u32,
    failed: u32,
    lost: u32,
}

impl Counts {
    fn add(&mut self, s: ClientStatus) {
        match s {
            ClientStatus::Pending => self.pending += 1,
            ClientStatus::Running => self.running += 1,
            ClientStatus::Complete => self.complete += 1,
            ClientStatus::Failed => self.failed += 1,
            ClientStatus::Lost => self.lost += 1,
        }
    }

    fn describe(&self) -> String {
        let mut parts = vec![
            format!("{} pending", self.pending),
            format!("{} running", self.running),
            format!("{} complete", self.complete),
            format!("{} failed", self.failed),
        ];
        if self.lost > 0 {
            parts.push(format!("{} lost", self.lost));
        }
        parts.join(", ")
    }
}

/// The allocations `job run` judges: the current version's, latest of each
/// reschedule chain, that the server still wants running.
fn live_allocs(allocs: &[AllocListStub], version: u64) -> Vec<&AllocListStub> {
    allocs
        .iter()
        .filter(|a| {
            a.job_version == version
                && a.desired_status == DesiredStatus::Run
                && a.next_allocation.is_none()
        })
        .collect()
}

fn now_clock() -> String {
    output::clock(orch_common::ids::now_ms())
}

/// Watches the evaluation and the job's allocations until `job run` is done.
async fn monitor(api: &ApiClient, job: &Job, eval_id: &str, quiet: bool) -> Result<Outcome> {
    let say = |line: String| {
        if !quiet {
            println!("==> {} {line}", now_clock());
        }
    };
    let (tx, mut rx) = mpsc::channel(16);
    let watch_eval = |id: &str| {
        spawn_watch::<Evaluation, _>(
            api.clone(),
            format!("/v1/evaluation/{}", encode(id)),
            tx.clone(),
            |e| Update::Eval(Box::new(e)),
            |e| e.status.is_terminal(),
        )
    };
    // The evaluation followed; it changes when the broker supersedes it.
    let mut following = eval_id.to_string();
    let mut eval_watch = watch_eval(eval_id);
    let alloc_watch = spawn_watch::<Vec<AllocListStub>, _>(
        api.clone(),
        format!("/v1/job/{}/allocations", encode(&job.id)),
        tx.clone(),
        Update::Allocs,
        |_| false,
    );
    let total = job.total_count() as usize;
    let batch = matches!(job.job_type, JobType::Batch | JobType::Sysbatch);
    let per_node = matches!(job.job_type, JobType::System | JobType::Sysbatch);

    let mut eval: Option<Evaluation> = None;
    let mut allocs: Vec<AllocListStub> = Vec::new();
    let mut last_status: Option<EvalStatus> = None;
    let mut last_placed: Option<usize> = None;
    let mut last_counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut reported_failed: std::collections::BTreeSet<String> = Default::default();

    let outcome = loop {
        let Some(update) = rx.recv().await else {
            break Err(anyhow::anyhow!("lost contact with the server's watch"));
        };
        match update {
            // A late answer about an evaluation no longer followed.
            Update::Eval(e) if e.id != following => continue,
            Update::Eval(e) => eval = Some(*e),
            Update::Allocs(a) => allocs = a,
            Update::Error(e) => break Err(e),
        }
        if let Some(e) = &eval {
            if last_status != Some(e.status) {
                last_status = Some(e.status);
                say(format!(
                    "Evaluation {:?} status: {}",
                    short(&e.id),
                    eval_status_word(e.status)
                ));
            }
        }
        let live = live_allocs(&allocs, job.version);
        let want = if per_node { live.len() } else { total };
        // "Placed 0" says nothing unless the scheduler has given up on some instances
        // (the allocation list may also lag the evaluation by a moment).
        let gave_up = eval
            .as_ref()
            .map(|e| e.status.is_terminal() && !e.failed_tg_allocs.is_empty())
            .unwrap_or(false);
        if last_placed != Some(live.len()) && (gave_up || !live.is_empty()) {
            last_placed = Some(live.len());
            say(format!("Placed {} of {} allocations", live.len(), want));
        }
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for a in &live {
            counts
                .entry(a.group.clone())
                .or_default()
                .add(a.client_status);
        }
        if counts != last_counts && !counts.is_empty() {
            let text: Vec<String> = counts
                .iter()
                .map(|(g, c)| format!("{g}: {}", c.describe()))
                .collect();
            say(format!("Allocations: {}", text.join("; ")));
            last_counts = counts.clone();
        }
        for a in &live {
            if matches!(a.client_status, ClientStatus::Failed | ClientStatus::Lost)
                && reported_failed.insert(a.id.clone())
            {
                let why = if a.client_description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.client_description)
                };
                say(format!(
                    "Allocation {:?} ({}) {}{why}; see `orch alloc status {}`",
                    short(&a.id),
                    a.name,
                    a.client_status.as_str(),
                    short(&a.id)
                ));
            }
        }

        let Some(e) = &eval else { continue };
        match e.status {
            EvalStatus::Canceled => {
                // A newer evaluation of the job (e.g. a node joining) replaced this one
                // before it ran: follow that one instead.
                if let Some(next) = superseding_eval(api, &job.id, e).await? {
                    say(format!(
                        "Evaluation {:?} was superseded by evaluation {:?}; following it",
                        short(&e.id),
                        short(&next)
                    ));
                    eval_watch.abort();
                    eval_watch = watch_eval(&next);
                    following = next;
                    eval = None;
                    last_status = None;
                    continue;
                }
                say(format!(
                    "Evaluation {:?} {}: {}",
                    short(&e.id),
                    eval_status_word(e.status),
                    e.status_description
                ));
                break Ok(Outcome::Failed);
            }
            EvalStatus::Failed => {
                say(format!(
                    "Evaluation {:?} {}: {}",
                    short(&e.id),
                    eval_status_word(e.status),
                    e.status_description
                ));
                break Ok(Outcome::Failed);
            }
            EvalStatus::Pending | EvalStatus::Blocked => continue,
            EvalStatus::Complete => {}
        }
        if !e.failed_tg_allocs.is_empty() {
            for (group, metric) in &e.failed_tg_allocs {
                let more = if metric.coalesced_failures > 0 {
                    format!(
                        " ({} more instance{} failed the same way)",
                        metric.coalesced_failures,
                        if metric.coalesced_failures == 1 {
                            ""
                        } else {
                            "s"
                        }
                    )
                } else {
                    String::new()
                };
                let lines = crate::plan::failure_lines(metric);
                say(format!(
                    "Placement failed for group {group}: {}{more}",
                    lines.join("; ")
                ));
            }
            let queued: u32 = e.queued_allocations.values().sum();
            let blocked = e
                .blocked_eval
                .as_deref()
                .map(|b| format!(" (blocked evaluation {:?})", short(b)))
                .unwrap_or_default();
            let what = if queued > 0 {
                format!("its {queued} unplaced instance(s)")
            } else {
                "its unplaced instances".to_string()
            };
            say(format!(
                "Job {:?} stays registered: {what} will be placed when capacity becomes available{blocked}",
                job.id
            ));
            break Ok(Outcome::PlacementFailed);
        }
        if live.len() < want {
            continue;
        }
        if batch {
            if live.iter().all(|a| a.client_status.is_terminal()) {
                let bad = live
                    .iter()
                    .filter(|a| a.client_status != ClientStatus::Complete)
                    .count();
                if bad > 0 {
                    say(format!(
                        "Job {:?} finished: {bad} of {} allocations did not complete",
                        job.id,
                        live.len()
                    ));
                    break Ok(Outcome::Failed);
                }
                say(format!(
                    "Job {:?} finished: all {} allocations complete",
                    job.id,
                    live.len()
                ));
                break Ok(Outcome::Done);
            }
        } else {
            if live
                .iter()
                .any(|a| matches!(a.client_status, ClientStatus::Failed | ClientStatus::Lost))
            {
                break Ok(Outcome::Failed);
            }
            if live
                .iter()
                .all(|a| a.client_status == ClientStatus::Running)
            {
                say(format!(
                    "Job {:?} is running: {} of {} allocations running",
                    job.id,
                    live.len(),
                    want
                ));
                break Ok(Outcome::Done);
            }
        }
    };
    eval_watch.abort();
    alloc_watch.abort();
    outcome
}

/// The id of the newest evaluation of the job created after `canceled` that was not
/// itself canceled, if any.
async fn superseding_eval(
    api: &ApiClient,
    job_id: &str,
    canceled: &Evaluation,
) -> Result<Option<String>> {
    let evals: Vec<Evaluation> = api
        .get(&format!("/v1/job/{}/evaluations", encode(job_id)))
        .await?;
    Ok(newest_after(&evals, canceled))
}

fn newest_after(evals: &[Evaluation], canceled: &Evaluation) -> Option<String> {
    evals
        .iter()
        .filter(|e| e.create_index > canceled.create_index && e.status != EvalStatus::Canceled)
        .max_by_key(|e| e.create_index)
        .map(|e| e.id.clone())
}

fn eval_status_word(s: EvalStatus) -> &'static str {
    match s {
        EvalStatus::Pending => "pending",
        EvalStatus::Blocked => "blocked",
        EvalStatus::Complete => "complete",
        EvalStatus::Failed => "failed",
        EvalStatus::Canceled => "canceled",
    }
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
            j.id,
            j.job_type.as_str().to_string(),
            j.priority.to_string(),
            status,
            relative_time(j.submit_time, now),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

fn job_status_word(s: orch_common::structs::JobStatus) -> &'static str {
    match s {
        orch_common::structs::JobStatus::Pending => "pending",
        orch_common::structs::JobStatus::Running => "running",
        orch_common::structs::JobStatus::Dead => "dead",
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
        output::print_json(&serde_json::json!({
            "job": job, "allocations": allocs, "evaluations": evals,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let job: Job = api.get(&job_path).await?;
    let mut allocs: Vec<AllocListStub> = api
        .get(&format!("/v1/job/{}/allocations", encode(&job.id)))
        .await?;
    let mut evals: Vec<Evaluation> = api
        .get(&format!("/v1/job/{}/evaluations", encode(&job.id)))
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
            ("ID", job.id.clone()),
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
    use orch_common::jobspec::SpecError;

    fn stub(version: u64, desired: DesiredStatus, client: ClientStatus) -> AllocListStub {
        AllocListStub {
            deployment_id: None,
            deployment_status: None,
            id: "0123456789".into(),
            name: "j.g[0]".into(),
            job_id: "j".into(),
            job_version: version,
            group: "g".into(),
            node_id: "n".into(),
            node_name: "node".into(),
            eval_id: "e".into(),
            desired_status: desired,
            desired_description: String::new(),
            client_status: client,
            client_description: String::new(),
            task_states: Default::default(),
            previous_allocation: None,
            next_allocation: None,
            desired_transition: Default::default(),
            create_time: 0,
            modify_time: 0,
            create_index: 1,
            modify_index: 1,
        }
    }

    #[test]
    fn a_canceled_evaluation_is_followed_by_the_newest_later_one_not_canceled() {
        let job: Job =
            serde_json::from_value(serde_json::json!({"id": "j", "groups": []})).unwrap();
        let eval = |id: &str, index: u64, status: EvalStatus| {
            let mut e = Evaluation::for_job(&job, "job-register");
            e.id = id.into();
            e.create_index = index;
            e.status = status;
            e
        };
        let canceled = eval("a", 5, EvalStatus::Canceled);
        let evals = vec![
            eval("old", 3, EvalStatus::Complete),
            canceled.clone(),
            eval("b", 6, EvalStatus::Canceled),
            eval("c", 7, EvalStatus::Pending),
        ];
        assert_eq!(newest_after(&evals, &canceled), Some("c".to_string()));
        assert_eq!(newest_after(&evals[..3], &canceled), None);
    }

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
    fn live_allocs_skip_old_versions_stopped_and_rescheduled() {
        let mut rescheduled = stub(2, DesiredStatus::Run, ClientStatus::Failed);
        rescheduled.next_allocation = Some("next".into());
        let allocs = vec![
            stub(1, DesiredStatus::Run, ClientStatus::Running),
            stub(2, DesiredStatus::Stop, ClientStatus::Complete),
            rescheduled,
            stub(2, DesiredStatus::Run, ClientStatus::Pending),
        ];
        let live = live_allocs(&allocs, 2);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].client_status, ClientStatus::Pending);
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
