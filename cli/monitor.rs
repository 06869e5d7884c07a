//! The monitor behind `orch job run`, `scale` and `revert`: follows the registration's
//! evaluation, the job's allocations and, when the new version is rolled out by a
//! deployment, that deployment; prints what changed and decides when it is done.
//!
//! ```text
//!   register ──> eval pending ──> eval complete ─┬─ failed placements ─────────> exit 2
//!                     │                          ├─ the version has a deployment:
//!                     └─ eval failed ──> exit 1  │    successful ───────────────> exit 0
//!                                                │    canaries healthy, manual
//!                                                │      promotion awaited ──────> exit 0
//!                                                │    failed (maybe reverted),
//!                                                │      cancelled ──────────────> exit 1
//!                                                ├─ service: all running ───────> exit 0
//!                                                └─ batch: all terminal ────────> exit 0
//!                                                       (any failed ─> exit 1)
//! ```
//!
//! The pieces: `spawn_watch` (one blocking-query loop per followed resource, feeding one
//! channel), `Reporter` (which lines to print for what changed), `alloc_verdict` and
//! `deployment_verdict` (pure end-state decisions) and `monitor`, the loop joining them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use orch_common::api::{AllocListStub, JobRegisterResponse};
use orch_common::model::{
    ClientStatus, Deployment, DeploymentGroup, DeploymentStatus, DesiredStatus, EvalStatus,
    Evaluation, Job, JobType,
};
use tokio::sync::mpsc;

use crate::api_client::{encode, ApiClient};
use crate::deployment::{progress_line, GroupProgress};
use crate::output::{self, short};
use crate::Ctx;
use orch_common::ids::{AllocId, DeploymentId, EvalId};

/// How long each blocking query waits on the server before it is re-issued.
pub(crate) const WATCH_WAIT: Duration = Duration::from_secs(30);

/// After a registration: prints the new version and monitors its evaluation,
/// allocations and deployment (`what` says what happened, e.g. "registered").
pub(crate) async fn follow(
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
    let end = monitor(api, &registered, &resp.eval_id, ctx.json).await?;
    if ctx.json {
        let mut out = serde_json::json!({
            "eval_id": resp.eval_id,
            "job_modify_index": resp.job_modify_index,
            "warnings": resp.warnings,
            "outcome": end.outcome.word(),
        });
        if let Some(id) = &end.deployment_id {
            out["deployment_id"] = serde_json::Value::from(id.as_str());
        }
        output::print_json(&out)?;
    }
    Ok(end.outcome.exit_code())
}

/// How a monitor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Service running (or its deployment successful), or batch finished successfully.
    Done,
    /// An allocation, the evaluation or the deployment failed (or it was cancelled).
    Failed,
    /// Some instances could not be placed.
    PlacementFailed,
    /// The deployment's canaries are healthy and wait for `orch deployment promote`.
    AwaitingPromotion,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done | Outcome::AwaitingPromotion => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::PlacementFailed => ExitCode::from(2),
        }
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::PlacementFailed => "placement_failed",
            Outcome::AwaitingPromotion => "awaiting_promotion",
        }
    }
}

/// The monitor's result: how it ended and the deployment it followed, if any.
struct End {
    outcome: Outcome,
    deployment_id: Option<DeploymentId>,
}

enum Update {
    Eval(Box<Evaluation>),
    Allocs(Vec<AllocListStub>),
    Deployment(Box<Deployment>),
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

/// Allocation counts of one group, as printed in progress lines and `job status`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counts {
    pub pending: u32,
    pub running: u32,
    pub complete: u32,
    pub failed: u32,
    pub lost: u32,
}

impl Counts {
    pub fn add(&mut self, s: ClientStatus) {
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

/// The allocations the monitor judges: the current version's, latest of each
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

pub(crate) fn now_clock() -> String {
    output::clock(orch_common::ids::now_ms())
}

// ------------------------------------------------------------------ end-state decisions

/// What the version's deployment says about the end of the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeploymentVerdict {
    /// The version has no deployment: its allocations decide, as without `[update]`.
    NoDeployment,
    /// Still rolling out (or paused): keep following.
    Wait,
    Successful,
    /// Failed; `reverted_to` is the version registered again by auto-revert.
    Failed {
        reverted_to: Option<u64>,
    },
    Cancelled,
    /// Every canary is placed and healthy, and a person has to promote them.
    AwaitingPromotion,
}

/// The end-state decision for a deployment (None: the version has none).
pub(crate) fn deployment_verdict(d: Option<&Deployment>) -> DeploymentVerdict {
    let Some(d) = d else {
        return DeploymentVerdict::NoDeployment;
    };
    match d.status {
        DeploymentStatus::Successful => DeploymentVerdict::Successful,
        DeploymentStatus::Failed => DeploymentVerdict::Failed {
            reverted_to: reverted_version(&d.status_description),
        },
        DeploymentStatus::Cancelled => DeploymentVerdict::Cancelled,
        DeploymentStatus::Running if awaits_manual_promotion(d) => {
            DeploymentVerdict::AwaitingPromotion
        }
        DeploymentStatus::Running | DeploymentStatus::Paused => DeploymentVerdict::Wait,
    }
}

/// True when every group with unpromoted canaries has them all placed and healthy, and
/// the watcher will not promote them by itself (it does only when every such group has
/// `auto_promote`).
fn awaits_manual_promotion(d: &Deployment) -> bool {
    let waiting: Vec<&DeploymentGroup> = d
        .task_groups
        .values()
        .filter(|g| g.desired_canaries > 0 && !g.promoted)
        .collect();
    !waiting.is_empty()
        && waiting.iter().all(|g| {
            g.placed_canaries.len() >= g.desired_canaries as usize
                && g.healthy_allocs >= g.desired_canaries
        })
        && !waiting.iter().all(|g| g.auto_promote)
}

/// The version in "... - rolling back to job version N" (`deployment_desc::rolling_back`).
fn reverted_version(description: &str) -> Option<u64> {
    let rest = description.split("rolling back to job version ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The outcome and the closing line for a deployment that ended the monitor.
fn deployment_end(d: &Deployment, verdict: &DeploymentVerdict) -> Option<(Outcome, String)> {
    let id = short(&d.id);
    let desc = &d.status_description;
    match verdict {
        DeploymentVerdict::NoDeployment | DeploymentVerdict::Wait => None,
        DeploymentVerdict::Successful => Some((
            Outcome::Done,
            format!("Deployment {id:?} successful: {desc}"),
        )),
        DeploymentVerdict::Failed { .. } => {
            Some((Outcome::Failed, format!("Deployment {id:?} failed: {desc}")))
        }
        DeploymentVerdict::Cancelled => Some((
            Outcome::Failed,
            format!("Deployment {id:?} cancelled: {desc}"),
        )),
        DeploymentVerdict::AwaitingPromotion => Some((
            Outcome::AwaitingPromotion,
            format!(
                "Deployment {id:?}: all canaries are healthy and wait for promotion; to \
                 roll out the rest run: orch deployment promote {}",
                d.id
            ),
        )),
    }
}

/// The allocation-based decision for a version without a deployment (after its
/// evaluation completed without placement failures): the outcome and its closing line,
/// or None to keep watching.
fn alloc_verdict(
    job: &Job,
    live: &[&AllocListStub],
    want: usize,
) -> Option<(Outcome, Option<String>)> {
    if live.len() < want {
        return None;
    }
    if matches!(job.job_type, JobType::Batch | JobType::Sysbatch) {
        if !live.iter().all(|a| a.client_status.is_terminal()) {
            return None;
        }
        let bad = live
            .iter()
            .filter(|a| a.client_status != ClientStatus::Complete)
            .count();
        if bad > 0 {
            return Some((
                Outcome::Failed,
                Some(format!(
                    "Job {:?} finished: {bad} of {} allocations did not complete",
                    job.id,
                    live.len()
                )),
            ));
        }
        return Some((
            Outcome::Done,
            Some(format!(
                "Job {:?} finished: all {} allocations complete",
                job.id,
                live.len()
            )),
        ));
    }
    if live
        .iter()
        .any(|a| matches!(a.client_status, ClientStatus::Failed | ClientStatus::Lost))
    {
        // The failed allocation was already reported by `Reporter::alloc_lines`.
        return Some((Outcome::Failed, None));
    }
    if live
        .iter()
        .all(|a| a.client_status == ClientStatus::Running)
    {
        return Some((
            Outcome::Done,
            Some(format!(
                "Job {:?} is running: {} of {} allocations running",
                job.id,
                live.len(),
                want
            )),
        ));
    }
    None
}

/// The lines explaining an evaluation's placement failures.
fn placement_failure_lines(job_id: &str, e: &Evaluation) -> Vec<String> {
    let mut lines = Vec::new();
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
        lines.push(format!(
            "Placement failed for group {group}: {}{more}",
            crate::plan::failure_lines(metric).join("; ")
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
    lines.push(format!(
        "Job {job_id:?} stays registered: {what} will be placed when capacity becomes available{blocked}"
    ));
    lines
}

/// True when the version may be rolled out by a deployment: a service job with an
/// update policy (other jobs never get one, so no request is made for them).
fn may_have_deployment(job: &Job) -> bool {
    job.job_type == JobType::Service
        && (job.update.is_some() || job.groups.iter().any(|g| g.update.is_some()))
}

// ------------------------------------------------------------------ what to print

/// Remembers what was printed, so only changes are printed again.
#[derive(Default)]
struct Reporter {
    eval_status: Option<EvalStatus>,
    placed: Option<usize>,
    counts: BTreeMap<String, Counts>,
    reported_failed: BTreeSet<AllocId>,
    groups: BTreeMap<String, GroupProgress>,
    deployment_state: Option<(DeploymentStatus, String)>,
}

impl Reporter {
    fn eval_lines(&mut self, e: &Evaluation) -> Vec<String> {
        if self.eval_status == Some(e.status) {
            return Vec::new();
        }
        self.eval_status = Some(e.status);
        vec![format!(
            "Evaluation {:?} status: {}",
            short(&e.id),
            eval_status_word(e.status)
        )]
    }

    /// Placed count, per-group client statuses, and each newly failed allocation.
    /// `gave_up`: the scheduler has given up on some instances, so "placed 0" says
    /// something (otherwise the allocation list may just lag the evaluation).
    fn alloc_lines(&mut self, live: &[&AllocListStub], want: usize, gave_up: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if self.placed != Some(live.len()) && (gave_up || !live.is_empty()) {
            self.placed = Some(live.len());
            lines.push(format!("Placed {} of {} allocations", live.len(), want));
        }
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for a in live {
            counts
                .entry(a.group.clone())
                .or_default()
                .add(a.client_status);
        }
        if counts != self.counts && !counts.is_empty() {
            let text: Vec<String> = counts
                .iter()
                .map(|(g, c)| format!("{g}: {}", c.describe()))
                .collect();
            lines.push(format!("Allocations: {}", text.join("; ")));
            self.counts = counts;
        }
        for a in live {
            if matches!(a.client_status, ClientStatus::Failed | ClientStatus::Lost)
                && self.reported_failed.insert(a.id.clone())
            {
                let why = if a.client_description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.client_description)
                };
                lines.push(format!(
                    "Allocation {:?} ({}) {}{why}; see `orch alloc status {}`",
                    short(&a.id),
                    a.name,
                    a.client_status.as_str(),
                    short(&a.id)
                ));
            }
        }
        lines
    }

    /// A progress line per group whose counters changed, and the status while it is
    /// active (the end is said by `deployment_end`).
    fn deployment_lines(&mut self, d: &Deployment) -> Vec<String> {
        let mut lines = Vec::new();
        let state = (d.status, d.status_description.clone());
        if d.status.is_active() && self.deployment_state.as_ref() != Some(&state) {
            lines.push(format!(
                "Deployment {:?} {}: {}",
                short(&d.id),
                d.status.as_str(),
                d.status_description
            ));
        }
        self.deployment_state = Some(state);
        for (name, g) in &d.task_groups {
            let p = GroupProgress::from(g);
            if self.groups.get(name) != Some(&p) {
                lines.push(progress_line(&d.id, name, &p));
                self.groups.insert(name.clone(), p);
            }
        }
        lines
    }
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

// ------------------------------------------------------------------ the loop

/// Where the monitor stands with the version's deployment.
enum Rollout {
    /// Not looked for yet: the evaluation has not completed.
    Unknown,
    /// The version has none; its allocations decide.
    None,
    /// Following this deployment (its newest state once one arrived).
    Following {
        id: DeploymentId,
        latest: Box<Deployment>,
        watch: tokio::task::JoinHandle<()>,
    },
}

/// The version's deployment, if the job's newest one is for this version.
async fn find_deployment(api: &ApiClient, job: &Job) -> Result<Option<Deployment>> {
    let newest: Option<Deployment> = api
        .get_optional(&format!("/v1/job/{}/deployment", encode(&job.id)))
        .await?;
    Ok(newest.filter(|d| d.job_version == job.version))
}

/// Watches the evaluation, the job's allocations and the version's deployment until
/// the monitor is done.
async fn monitor(api: &ApiClient, job: &Job, eval_id: &EvalId, quiet: bool) -> Result<End> {
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
    let mut following = eval_id.clone();
    let mut eval_watch = watch_eval(eval_id);
    let alloc_watch = spawn_watch::<Vec<AllocListStub>, _>(
        api.clone(),
        format!("/v1/job/{}/allocations", encode(&job.id)),
        tx.clone(),
        Update::Allocs,
        |_| false,
    );
    let total = job.total_count() as usize;
    let per_node = matches!(job.job_type, JobType::System | JobType::Sysbatch);

    let mut eval: Option<Evaluation> = None;
    let mut allocs: Vec<AllocListStub> = Vec::new();
    let mut reporter = Reporter::default();
    let mut rollout = Rollout::Unknown;

    let outcome = loop {
        let Some(update) = rx.recv().await else {
            break Err(anyhow::anyhow!("lost contact with the server's watch"));
        };
        match update {
            // A late answer about an evaluation no longer followed.
            Update::Eval(e) if e.id != following => continue,
            Update::Eval(e) => eval = Some(*e),
            Update::Allocs(a) => allocs = a,
            Update::Deployment(d) => {
                if let Rollout::Following { id, latest, .. } = &mut rollout {
                    if d.id == *id {
                        *latest = d;
                    }
                }
            }
            Update::Error(e) => break Err(e),
        }
        if let Some(e) = &eval {
            reporter.eval_lines(e).into_iter().for_each(say);
        }
        let live = live_allocs(&allocs, job.version);
        let want = if per_node { live.len() } else { total };
        let gave_up = eval
            .as_ref()
            .is_some_and(|e| e.status.is_terminal() && !e.failed_tg_allocs.is_empty());
        reporter
            .alloc_lines(&live, want, gave_up)
            .into_iter()
            .for_each(say);

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
                    reporter.eval_status = None;
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
            placement_failure_lines(&job.id, e)
                .into_iter()
                .for_each(say);
            break Ok(Outcome::PlacementFailed);
        }
        // The evaluation's plan created the version's deployment, if it has one: look
        // once, now that the plan is applied.
        if let Rollout::Unknown = rollout {
            let found = if may_have_deployment(job) {
                find_deployment(api, job).await?
            } else {
                None
            };
            rollout = match found {
                Some(d) => {
                    say(format!(
                        "Monitoring deployment {:?} of version {}",
                        short(&d.id),
                        d.job_version
                    ));
                    let watch = spawn_watch::<Deployment, _>(
                        api.clone(),
                        format!("/v1/deployment/{}", encode(&d.id)),
                        tx.clone(),
                        |d| Update::Deployment(Box::new(d)),
                        |d| !d.status.is_active(),
                    );
                    Rollout::Following {
                        id: d.id.clone(),
                        latest: Box::new(d),
                        watch,
                    }
                }
                None => Rollout::None,
            };
        }
        let end = match &rollout {
            Rollout::Unknown => None,
            Rollout::None => alloc_verdict(job, &live, want),
            Rollout::Following { latest, .. } => {
                reporter.deployment_lines(latest).into_iter().for_each(say);
                deployment_end(latest, &deployment_verdict(Some(latest)))
                    .map(|(outcome, line)| (outcome, Some(line)))
            }
        };
        if let Some((outcome, line)) = end {
            line.into_iter().for_each(say);
            break Ok(outcome);
        }
    };
    eval_watch.abort();
    alloc_watch.abort();
    let deployment_id = match rollout {
        Rollout::Following { id, watch, .. } => {
            watch.abort();
            Some(id)
        }
        Rollout::Unknown | Rollout::None => None,
    };
    Ok(End {
        outcome: outcome?,
        deployment_id,
    })
}

/// The id of the newest evaluation of the job created after `canceled` that was not
/// itself canceled, if any.
async fn superseding_eval(
    api: &ApiClient,
    job_id: &str,
    canceled: &Evaluation,
) -> Result<Option<EvalId>> {
    let evals: Vec<Evaluation> = api
        .get(&format!("/v1/job/{}/evaluations", encode(job_id)))
        .await?;
    Ok(newest_after(&evals, canceled))
}

fn newest_after(evals: &[Evaluation], canceled: &Evaluation) -> Option<EvalId> {
    evals
        .iter()
        .filter(|e| e.create_index > canceled.create_index && e.status != EvalStatus::Canceled)
        .max_by_key(|e| e.create_index)
        .map(|e| e.id.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deployment::tests::deployment;
    use orch_common::mock::JobBuilder;
    use orch_common::model::deployment_desc;

    /// An allocation of job `j` group `g` at `version`.
    pub(crate) fn stub(
        version: u64,
        desired: DesiredStatus,
        client: ClientStatus,
    ) -> AllocListStub {
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

    /// Job "j" of `job_type`, without an update policy.
    fn job(job_type: JobType) -> Job {
        JobBuilder::new("j").job_type(job_type).build()
    }

    #[test]
    fn a_canceled_evaluation_is_followed_by_the_newest_later_one_not_canceled() {
        let job = job(JobType::Service);
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
        assert_eq!(newest_after(&evals, &canceled), Some("c".into()));
        assert_eq!(newest_after(&evals[..3], &canceled), None);
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

    /// A deployment of one group with canaries: `placed` of 1 canary placed, `healthy`.
    fn with_canary(placed: bool, healthy: u32, auto_promote: bool) -> Deployment {
        let mut d = deployment(3);
        let g = d.task_groups.get_mut("web").unwrap();
        g.desired_canaries = 1;
        g.auto_promote = auto_promote;
        if placed {
            g.placed_canaries = vec!["c1".into()];
            g.placed_allocs = 1;
        }
        g.healthy_allocs = healthy;
        d
    }

    #[test]
    fn the_deployment_decides_the_end_state() {
        use DeploymentStatus as S;
        use DeploymentVerdict as V;
        let with = |status: S, desc: &str| {
            let mut d = deployment(3);
            d.status = status;
            d.status_description = desc.to_string();
            d
        };
        let reverted = deployment_desc::rolling_back(deployment_desc::FAILED_ALLOCATIONS, 4);
        let mut promoted = with_canary(true, 3, false);
        promoted.task_groups.get_mut("web").unwrap().promoted = true;
        let mut paused = with_canary(true, 1, false);
        paused.status = S::Paused;
        let cases: Vec<(&str, Option<Deployment>, V)> = vec![
            ("no deployment", None, V::NoDeployment),
            (
                "running",
                Some(with(S::Running, deployment_desc::RUNNING)),
                V::Wait,
            ),
            (
                "paused",
                Some(with(S::Paused, deployment_desc::PAUSED)),
                V::Wait,
            ),
            (
                "successful",
                Some(with(S::Successful, deployment_desc::SUCCESSFUL)),
                V::Successful,
            ),
            (
                "failed",
                Some(with(S::Failed, deployment_desc::FAILED_DEADLINE)),
                V::Failed { reverted_to: None },
            ),
            (
                "failed and reverted",
                Some(with(S::Failed, &reverted)),
                V::Failed {
                    reverted_to: Some(4),
                },
            ),
            (
                "cancelled",
                Some(with(S::Cancelled, deployment_desc::CANCELLED_NEWER_JOB)),
                V::Cancelled,
            ),
            (
                "canary placed and healthy, manual promotion",
                Some(with_canary(true, 1, false)),
                V::AwaitingPromotion,
            ),
            (
                "canary not placed yet",
                Some(with_canary(false, 0, false)),
                V::Wait,
            ),
            (
                "canary placed, not healthy yet",
                Some(with_canary(true, 0, false)),
                V::Wait,
            ),
            (
                "canary healthy, promoted automatically",
                Some(with_canary(true, 1, true)),
                V::Wait,
            ),
            ("promoted, rolling the rest", Some(promoted), V::Wait),
            ("paused with healthy canary", Some(paused), V::Wait),
        ];
        for (name, d, want) in cases {
            assert_eq!(deployment_verdict(d.as_ref()), want, "{name}");
        }
    }

    #[test]
    fn a_group_with_manual_canaries_needs_promotion_even_beside_an_auto_one() {
        let mut d = with_canary(true, 1, false);
        let mut api = d.task_groups["web"].clone();
        api.auto_promote = true;
        d.task_groups.insert("api".into(), api);
        assert_eq!(
            deployment_verdict(Some(&d)),
            DeploymentVerdict::AwaitingPromotion
        );
        d.task_groups.get_mut("web").unwrap().auto_promote = true;
        assert_eq!(deployment_verdict(Some(&d)), DeploymentVerdict::Wait);
    }

    #[test]
    fn deployment_ends_map_to_exit_outcomes_with_the_description() {
        let mut d = deployment(3);
        d.status = DeploymentStatus::Failed;
        d.status_description =
            deployment_desc::rolling_back(deployment_desc::FAILED_ALLOCATIONS, 1);
        let (o, line) = deployment_end(&d, &deployment_verdict(Some(&d))).unwrap();
        assert_eq!(o, Outcome::Failed);
        assert_eq!(
            line,
            "Deployment \"abcd1234\" failed: Failed due to unhealthy allocations - rolling back to job version 1"
        );
        assert_eq!(o.exit_code(), ExitCode::from(1));

        d.status = DeploymentStatus::Successful;
        d.status_description = deployment_desc::SUCCESSFUL.into();
        let (o, line) = deployment_end(&d, &deployment_verdict(Some(&d))).unwrap();
        assert_eq!(o, Outcome::Done);
        assert_eq!(
            line,
            "Deployment \"abcd1234\" successful: Deployment completed successfully"
        );

        d.status = DeploymentStatus::Cancelled;
        let (o, _) = deployment_end(&d, &deployment_verdict(Some(&d))).unwrap();
        assert_eq!(o, Outcome::Failed);

        let d = with_canary(true, 1, false);
        let (o, line) = deployment_end(&d, &deployment_verdict(Some(&d))).unwrap();
        assert_eq!(o, Outcome::AwaitingPromotion);
        assert_eq!(o.exit_code(), ExitCode::SUCCESS);
        assert!(
            line.ends_with("orch deployment promote abcd1234-0000-0000-0000-000000000000"),
            "{line}"
        );
        assert!(deployment_end(&deployment(1), &DeploymentVerdict::Wait).is_none());
    }

    #[test]
    fn without_a_deployment_services_end_when_all_run_and_batches_when_all_finish() {
        let service = job(JobType::Service);
        let running = stub(0, DesiredStatus::Run, ClientStatus::Running);
        let pending = stub(0, DesiredStatus::Run, ClientStatus::Pending);
        let failed = stub(0, DesiredStatus::Run, ClientStatus::Failed);
        assert_eq!(alloc_verdict(&service, &[&running], 2), None);
        assert_eq!(alloc_verdict(&service, &[&running, &pending], 2), None);
        let (o, line) = alloc_verdict(&service, &[&running, &running], 2).unwrap();
        assert_eq!(o, Outcome::Done);
        assert_eq!(
            line.as_deref(),
            Some("Job \"j\" is running: 2 of 2 allocations running")
        );
        let (o, _) = alloc_verdict(&service, &[&running, &failed], 2).unwrap();
        assert_eq!(o, Outcome::Failed);

        let batch = job(JobType::Batch);
        let complete = stub(0, DesiredStatus::Run, ClientStatus::Complete);
        assert_eq!(alloc_verdict(&batch, &[&complete, &running], 2), None);
        let (o, _) = alloc_verdict(&batch, &[&complete, &complete], 2).unwrap();
        assert_eq!(o, Outcome::Done);
        let (o, line) = alloc_verdict(&batch, &[&complete, &failed], 2).unwrap();
        assert_eq!(o, Outcome::Failed);
        assert_eq!(
            line.as_deref(),
            Some("Job \"j\" finished: 1 of 2 allocations did not complete")
        );
    }

    #[test]
    fn only_service_jobs_with_an_update_policy_look_for_a_deployment() {
        let mut j = job(JobType::Service);
        assert!(!may_have_deployment(&j));
        j.update = Some(Default::default());
        assert!(may_have_deployment(&j));
        j.job_type = JobType::Batch;
        assert!(!may_have_deployment(&j));
    }

    #[test]
    fn the_reporter_prints_a_progress_line_only_when_a_group_changes() {
        let mut r = Reporter::default();
        let mut d = deployment(3);
        assert_eq!(
            r.deployment_lines(&d),
            vec![
                "Deployment \"abcd1234\" running: Deployment is running".to_string(),
                "Deployment \"abcd1234\" web: desired 3, placed 0, healthy 0, unhealthy 0, canaries 0/0".to_string(),
            ]
        );
        assert!(r.deployment_lines(&d).is_empty());
        d.task_groups.get_mut("web").unwrap().placed_allocs = 1;
        assert_eq!(
            r.deployment_lines(&d),
            vec!["Deployment \"abcd1234\" web: desired 3, placed 1, healthy 0, unhealthy 0, canaries 0/0".to_string()]
        );
        d.status = DeploymentStatus::Successful;
        // The end is said by the closing line, not here.
        assert!(r.deployment_lines(&d).is_empty());
    }

    #[test]
    fn the_reporter_prints_placed_counts_and_each_failure_once() {
        let mut r = Reporter::default();
        let running = stub(0, DesiredStatus::Run, ClientStatus::Running);
        let mut failed = stub(0, DesiredStatus::Run, ClientStatus::Failed);
        failed.id = "ffff0000-1".into();
        failed.client_description = "exit 1".into();
        assert!(r.alloc_lines(&[], 2, false).is_empty());
        assert_eq!(
            r.alloc_lines(&[&running, &failed], 2, false),
            vec![
                "Placed 2 of 2 allocations".to_string(),
                "Allocations: g: 0 pending, 1 running, 0 complete, 1 failed".to_string(),
                "Allocation \"ffff0000\" (j.g[0]) failed: exit 1; see `orch alloc status ffff0000`"
                    .to_string(),
            ]
        );
        assert!(r.alloc_lines(&[&running, &failed], 2, false).is_empty());
    }
}
