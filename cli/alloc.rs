//! `orch alloc ...`: status (fields, health checks, per-task state and events, exit
//! codes, OOM kills, resource usage) and logs; logs and usage are fetched from the client agent that runs
//! the allocation (the node's `http_addr`).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use orch_common::api::{AllocResourceUsage, TaskResourceUsage};
use orch_common::model::{Allocation, CheckStatus, Node, TaskEvent, TaskState, TaskStateKind};

use crate::api_client::encode;
use crate::job::desired_word;
use crate::output::{self, key_values, relative_time, short, Table};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum AllocCommand {
    /// Show an allocation: placement, status, and each task's state and recent events.
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// Allocation id (a unique prefix, e.g. the 8 characters tables show, is enough).
        alloc: String,
    },
    /// Print (or follow) a task's stdout or stderr.
    #[command(after_help = LOGS_EXAMPLES)]
    Logs(LogsArgs),
    /// Stop an allocation: a replacement is placed (like for a failed one), then this
    /// one is stopped.
    #[command(
        after_help = "EXAMPLES:\n  orch alloc stop 8f3c2a1b\n  orch alloc stop --json 8f3c2a1b"
    )]
    Stop {
        /// Allocation id (a unique prefix is enough).
        alloc: String,
    },
    /// Restart a task (every task without TASK) in place, on its node; not counted
    /// against the restart policy.
    #[command(
        after_help = "EXAMPLES:\n  orch alloc restart 8f3c2a1b\n  orch alloc restart 8f3c2a1b server"
    )]
    Restart {
        /// Allocation id (a unique prefix is enough).
        alloc: String,
        /// Task name; every task when left out.
        task: Option<String>,
    },
    /// Run a command inside a running task (its cgroup, environment and user), with
    /// stdin, stdout and stderr attached; exits with the command's exit code.
    #[command(after_help = crate::alloc_exec::EXAMPLES)]
    Exec(crate::alloc_exec::ExecArgs),
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep streaming new output until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show stderr instead of stdout.
    #[arg(long)]
    stderr: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Allocation id (a unique prefix is enough).
    alloc: String,
    /// Task name; may be left out when the allocation has one task.
    task: Option<String>,
}

const STATUS_EXAMPLES: &str = "EXAMPLES:
  orch alloc status 8f3c2a1b
  orch alloc status --json 8f3c2a1b";

const LOGS_EXAMPLES: &str = "EXAMPLES:
  orch alloc logs 8f3c2a1b
  orch alloc logs 8f3c2a1b server
  orch alloc logs -f --stderr 8f3c2a1b server
  orch alloc logs --tail 20 8f3c2a1b";

pub async fn run(ctx: &Ctx, cmd: AllocCommand) -> Result<ExitCode> {
    match cmd {
        AllocCommand::Status { alloc } => status(ctx, &alloc).await,
        AllocCommand::Logs(args) => logs(ctx, args).await,
        AllocCommand::Exec(args) => crate::alloc_exec::exec(ctx, args).await,
        AllocCommand::Stop { alloc } => stop(ctx, &alloc).await,
        AllocCommand::Restart { alloc, task } => restart(ctx, &alloc, task.as_deref()).await,
    }
}

async fn status(ctx: &Ctx, alloc_ref: &str) -> Result<ExitCode> {
    let api = ctx.api()?;
    let path = format!("/v1/allocation/{}", encode(alloc_ref));
    let raw = api.get_json(&path).await?;
    let mut a: Allocation =
        serde_json::from_value(raw.clone()).context("GET allocation: unexpected answer")?;
    // Usage is best effort: a node that is down must not hide the allocation.
    let usage = fetch_usage(&api, &a).await;
    // The servers hear of a check's status and output changes; its client knows every
    // run. Best effort too: without the client, the servers' view is shown.
    if !a.checks.is_empty() && !a.client_status.is_terminal() {
        if let Ok(live) = fetch_checks(&api, &a).await {
            a.checks.extend(live);
        }
    }
    if ctx.json {
        let mut raw = raw;
        if let Some(obj) = raw.as_object_mut() {
            if let Ok(u) = &usage {
                obj.insert("resource_usage".to_string(), serde_json::to_value(u)?);
            }
            if !a.checks.is_empty() {
                obj.insert("checks".to_string(), serde_json::to_value(&a.checks)?);
            }
        }
        output::print_json(&raw)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = render_status(&a, usage.as_ref().ok(), orch_common::ids::now_ms());
    if let Err(e) = &usage {
        if !a.client_status.is_terminal() {
            text.push_str(&format!(
                "
Resource usage unavailable: {e:#}
"
            ));
        }
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn restart(ctx: &Ctx, alloc_ref: &str, task: Option<&str>) -> Result<ExitCode> {
    let api = ctx.api()?;
    let (a, client) = alloc_and_client(&api, alloc_ref).await?;
    let mut url = format!("{client}/v1/client/allocation/{}/restart", encode(&a.id));
    if let Some(t) = task {
        url.push_str(&format!("?task={}", encode(t)));
    }
    let answer: serde_json::Value = api.post_url(&url, &serde_json::json!({})).await?;
    if ctx.json {
        output::print_json(&answer)?;
    } else {
        let tasks: Vec<&str> = answer["restarted"]
            .as_array()
            .map(|v| v.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        println!(
            "Restarting {} of allocation {}",
            tasks.join(", "),
            short(&a.id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop(ctx: &Ctx, alloc_ref: &str) -> Result<ExitCode> {
    let api = ctx.api()?;
    // The server stops only what a full id names: resolve a prefix with a read.
    let alloc: Allocation = api
        .get(&format!("/v1/allocation/{}", encode(alloc_ref)))
        .await?;
    let answer: serde_json::Value = api
        .post(
            &format!("/v1/allocation/{}/stop", encode(&alloc.id)),
            &serde_json::json!({}),
        )
        .await?;
    if ctx.json {
        output::print_json(&answer)?;
    } else {
        println!(
            "Allocation {} is being replaced and stopped (evaluation {})",
            alloc_ref,
            short(answer["eval_id"].as_str().unwrap_or_default())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The address of the client that runs `a` (its node's `http_addr`).
async fn client_base(api: &crate::api_client::ApiClient, a: &Allocation) -> Result<String> {
    let node: Node = api
        .get(&format!("/v1/node/{}", encode(&a.node_id)))
        .await
        .with_context(|| format!("looking up node {} of the allocation", short(&a.node_id)))?;
    if node.http_addr.is_empty() {
        bail!("node {} does not advertise an HTTP address", node.name);
    }
    Ok(api.agent_base(&node.http_addr))
}

/// The latest run of each health check, from the client agent that runs the
/// allocation.
async fn fetch_checks(
    api: &crate::api_client::ApiClient,
    a: &Allocation,
) -> Result<std::collections::BTreeMap<String, CheckStatus>> {
    let base = client_base(api, a).await?;
    api.get_url(&format!(
        "{base}/v1/client/allocation/{}/checks",
        encode(&a.id)
    ))
    .await
}

/// Each task's resource usage, from the client agent that runs the allocation.
async fn fetch_usage(
    api: &crate::api_client::ApiClient,
    a: &Allocation,
) -> Result<AllocResourceUsage> {
    let base = client_base(api, a).await?;
    api.get_url(&format!(
        "{base}/v1/client/allocation/{}/stats",
        encode(&a.id)
    ))
    .await
}

/// The text of `orch alloc status`.
fn render_status(a: &Allocation, usage: Option<&AllocResourceUsage>, now: u64) -> String {
    let mut out = key_values(&[
        ("ID", a.id.to_string()),
        ("Name", a.name.clone()),
        ("Node ID", a.node_id.to_string()),
        ("Node Name", a.node_name.clone()),
        ("Job ID", a.job_id.to_string()),
        ("Job Version", a.job_version.to_string()),
        ("Group", a.group.clone()),
        ("Eval ID", a.eval_id.to_string()),
        ("Desired Status", desired_word(a.desired_status).to_string()),
        ("Desired Description", or_none(&a.desired_description)),
        ("Client Status", a.client_status.as_str().to_string()),
        ("Client Description", or_none(&a.client_description)),
        (
            "Created",
            format!(
                "{} ({})",
                output::timestamp(a.create_time),
                relative_time(a.create_time, now)
            ),
        ),
        (
            "Modified",
            format!(
                "{} ({})",
                output::timestamp(a.modify_time),
                relative_time(a.modify_time, now)
            ),
        ),
        (
            "Previous Allocation",
            a.previous_allocation.as_deref().unwrap_or("-").to_string(),
        ),
        (
            "Next Allocation",
            a.next_allocation.as_deref().unwrap_or("-").to_string(),
        ),
    ]);
    if !a.resources.ports.is_empty() {
        out.push_str("\nAllocated Ports\n");
        let mut t = Table::new(&["LABEL", "HOST ADDRESS", "TO"]);
        for p in &a.resources.ports {
            let host = if p.host_ip.is_empty() {
                p.value.to_string()
            } else {
                format!("{}:{}", p.host_ip, p.value)
            };
            let to = p.to.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
            t.row(vec![p.label.clone(), host, to]);
        }
        out.push_str(&t.render());
    }
    if !a.checks.is_empty() {
        out.push_str("\nChecks\n");
        out.push_str(&render_checks(&a.checks, now));
    }
    let mut tasks: Vec<&String> = a.resources.tasks.keys().collect();
    for t in a.task_states.keys() {
        if !tasks.contains(&t) {
            tasks.push(t);
        }
    }
    for name in tasks {
        let res = a.resources.tasks.get(name);
        let state = a.task_states.get(name).cloned().unwrap_or_default();
        out.push_str(&render_task(name, &state, res, now));
        if let Some(u) = usage.and_then(|u| u.tasks.get(name.as_str())) {
            out.push_str(&render_usage(u, now));
        }
    }
    out
}

/// One row per health check: its latest status, the first line of its last output
/// and when it last ran.
fn render_checks(checks: &std::collections::BTreeMap<String, CheckStatus>, now: u64) -> String {
    let mut t = Table::new(&["SERVICE", "CHECK", "TYPE", "STATUS", "OUTPUT", "LAST RUN"]);
    for c in checks.values() {
        let first = c
            .output
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let mut output: String = first.chars().take(60).collect();
        // A prefix shorter than the line, or more lines: say there is more.
        if output.len() < first.len() || c.output.trim().lines().count() > 1 {
            output.push_str(" ...");
        }
        t.row(vec![
            c.service.clone(),
            c.name.clone(),
            c.check_type.as_str().to_string(),
            c.status.as_str().to_string(),
            or_none(&output),
            relative_time(c.last_run_ms, now),
        ]);
    }
    t.render()
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn render_task(
    name: &str,
    st: &TaskState,
    res: Option<&orch_common::model::Resources>,
    now: u64,
) -> String {
    let state = match st.state {
        TaskStateKind::Pending => "pending",
        TaskStateKind::Running => "running",
        TaskStateKind::Dead => "dead",
    };
    let failed = if st.failed { " (failed)" } else { "" };
    let mut out = format!("\nTask {name:?} is {state:?}{failed}\n");
    let mut fields = vec![("Restarts", st.restarts.to_string())];
    if let Some(r) = res {
        let hard = if r.cpu_hard_limit {
            " (hard limit)"
        } else {
            ""
        };
        fields.push(("CPU", format!("{} MHz{hard}", r.cpu)));
        if let Some(n) = r.cores {
            fields.push(("Cores", n.to_string()));
        }
        let max = match r.memory_max {
            Some(m) if m > r.memory => format!(" (max {m} MiB)"),
            _ => String::new(),
        };
        fields.push(("Memory", format!("{} MiB{max}", r.memory)));
        if let Some(p) = r.pids {
            fields.push(("Pids", p.to_string()));
        }
    }
    if let Some(t) = st.started_at {
        fields.push(("Started At", output::timestamp(t)));
    }
    if let Some(t) = st.finished_at {
        fields.push(("Finished At", output::timestamp(t)));
    }
    if let Some(last) = st
        .events
        .iter()
        .rev()
        .find(|e| e.exit_code.is_some() || e.signal.is_some() || e.oom_killed)
    {
        fields.push(("Last Exit", exit_words(last)));
    }
    out.push_str(&key_values(&fields));
    if !st.events.is_empty() {
        out.push_str("\nRecent Events:\n");
        let mut t = Table::new(&["TIME", "TYPE", "DESCRIPTION"]);
        // Newest first, like a log you read from the top.
        for e in st.events.iter().rev().take(10) {
            t.row(vec![
                format!(
                    "{} ({})",
                    output::timestamp(e.time),
                    relative_time(e.time, now)
                ),
                e.kind.clone(),
                event_description(e),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// A task's usage as a one-row table: memory now / limit, peak, cpu time, throttling,
/// processes now / limit.
fn render_usage(u: &TaskResourceUsage, now: u64) -> String {
    let when = if u.running {
        format!("sampled {}", relative_time(u.sampled_at, now))
    } else {
        "last sample before the task stopped".to_string()
    };
    let mut out = format!("\nResource Usage ({when}):\n");
    let mut t = Table::new(&[
        "MEMORY",
        "PEAK",
        "CPU TIME (USER/SYSTEM)",
        "THROTTLED",
        "PIDS",
    ]);
    let of = |v: String, limit: Option<String>| match limit {
        Some(l) => format!("{v} / {l}"),
        None => v,
    };
    let memory = match u.memory {
        Some(m) => of(bytes(m.current_bytes), u.memory_limit_bytes.map(bytes)),
        None => "-".to_string(),
    };
    let peak = u
        .memory
        .and_then(|m| m.peak_bytes)
        .map(bytes)
        .unwrap_or_else(|| "-".to_string());
    let (cpu, throttled) = match u.cpu {
        Some(c) => {
            let split = match (c.user_ns, c.system_ns) {
                (Some(us), Some(sy)) => format!(" ({}/{})", seconds(us), seconds(sy)),
                _ => String::new(),
            };
            let throttled = if c.periods == 0 {
                "-".to_string()
            } else {
                format!(
                    "{} of {} periods ({})",
                    c.throttled_periods,
                    c.periods,
                    seconds(c.throttled_ns)
                )
            };
            (format!("{}{split}", seconds(c.usage_ns)), throttled)
        }
        None => ("-".to_string(), "-".to_string()),
    };
    let pids = of(u.pids.to_string(), u.pids_limit.map(|l| l.to_string()));
    t.row(vec![memory, peak, cpu, throttled, pids]);
    out.push_str(&t.render());
    if let Some(c) = &u.cpuset {
        out.push_str(&format!("Dedicated cpus: {c}\n"));
    }
    out
}

/// "12.5 MiB", "512 KiB", "1.2 GiB".
fn bytes(b: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = b as f64;
    if f >= KIB * KIB * KIB {
        format!("{:.1} GiB", f / (KIB * KIB * KIB))
    } else if f >= KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else {
        format!("{:.0} KiB", f / KIB)
    }
}

/// "1.25s" from nanoseconds.
fn seconds(ns: u64) -> String {
    format!("{:.2}s", ns as f64 / 1e9)
}

/// "OOM killed (exit code 137, signal 9)", "exit code 0", "signal 15".
fn exit_words(e: &TaskEvent) -> String {
    let mut parts = Vec::new();
    if let Some(c) = e.exit_code {
        parts.push(format!("exit code {c}"));
    }
    if let Some(s) = e.signal {
        parts.push(format!("signal {s}"));
    }
    let detail = parts.join(", ");
    if e.oom_killed {
        if detail.is_empty() {
            "OOM killed (out of memory)".to_string()
        } else {
            format!("OOM killed (out of memory; {detail})")
        }
    } else {
        detail
    }
}

/// The event's message; exit details only when the message has none.
fn event_description(e: &TaskEvent) -> String {
    if e.message.is_empty() {
        exit_words(e)
    } else {
        e.message.clone()
    }
}

/// Picks the task to show logs of: the one named, or the only one.
/// The allocation and the address of the client that runs it (its node's `http_addr`).
pub(crate) async fn alloc_and_client(
    api: &crate::api_client::ApiClient,
    alloc: &str,
) -> Result<(Allocation, String)> {
    let a: Allocation = api
        .get(&format!("/v1/allocation/{}", encode(alloc)))
        .await?;
    let client = client_base(api, &a).await?;
    Ok((a, client))
}

pub(crate) fn pick_task(a: &Allocation, wanted: Option<&str>) -> Result<String> {
    let mut tasks: Vec<String> = a.resources.tasks.keys().cloned().collect();
    for t in a.task_states.keys() {
        if !tasks.contains(t) {
            tasks.push(t.clone());
        }
    }
    match wanted {
        Some(t) if tasks.iter().any(|x| x == t) || tasks.is_empty() => Ok(t.to_string()),
        Some(t) => bail!(
            "allocation {} has no task {t:?} (tasks: {})",
            short(&a.id),
            tasks.join(", ")
        ),
        None if tasks.len() == 1 => Ok(tasks.remove(0)),
        None if tasks.is_empty() => bail!("allocation {} has no tasks", short(&a.id)),
        None => bail!(
            "allocation {} has several tasks; name one: {}",
            short(&a.id),
            tasks.join(", ")
        ),
    }
}

/// The last `n` lines of `bytes` (a trailing partial line counts as a line).
fn last_lines(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &bytes[bytes.len()..];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<ExitCode> {
    match copy_logs(ctx, args).await {
        // `orch alloc logs -f ... | head` closes the pipe: that is a normal end.
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                == Some(std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

async fn copy_logs(ctx: &Ctx, args: LogsArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    let (a, client) = alloc_and_client(&api, &args.alloc).await?;
    let task = pick_task(&a, args.task.as_deref())?;
    let base = format!(
        "{client}/v1/client/fs/logs/{}?task={}&type={}",
        encode(&a.id),
        encode(&task),
        if args.stderr { "stderr" } else { "stdout" }
    );
    let mut stdout = std::io::stdout();
    let mut origin = "start";
    if let Some(n) = args.tail {
        // Read the end of the log, reading further back until it holds N lines (or is
        // all of it), print those, then (with -f) follow from the end. Positions count
        // from the end: counted from the start they move as old files rotate away.
        let mut window: u64 = 16 * 1024;
        let bytes = loop {
            let url = format!("{base}&origin=end&offset={window}");
            let bytes = api.get_stream(&url).await?.bytes().await?;
            let lines = bytes.iter().filter(|b| **b == b'\n').count();
            if lines > n || (bytes.len() as u64) < window {
                break bytes;
            }
            window *= 4;
        };
        stdout.write_all(last_lines(&bytes, n))?;
        stdout.flush()?;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        origin = "end";
    }
    let url = format!("{base}&origin={origin}&offset=0&follow={}", args.follow);
    let mut resp = api.get_stream(&url).await?;
    while let Some(chunk) = resp.chunk().await.context("reading the log stream")? {
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, msg: &str) -> TaskEvent {
        TaskEvent {
            time: 1_714_557_600_000,
            kind: kind.into(),
            message: msg.into(),
            exit_code: None,
            signal: None,
            oom_killed: false,
        }
    }

    #[test]
    fn usage_renders_memory_against_the_limit_cpu_split_and_throttling() {
        let u = TaskResourceUsage {
            sampled_at: 1_714_557_655_000,
            running: true,
            memory: Some(orch_common::api::MemoryStats {
                current_bytes: 12 << 20,
                peak_bytes: Some(20 << 20),
            }),
            cpu: Some(orch_common::api::CpuStats {
                usage_ns: 1_500_000_000,
                user_ns: Some(1_000_000_000),
                system_ns: Some(500_000_000),
                periods: 40,
                throttled_periods: 7,
                throttled_ns: 250_000_000,
            }),
            pids: 3,
            memory_limit_bytes: Some(64 << 20),
            pids_limit: Some(1024),
            cpuset: Some("1".into()),
        };
        let text = render_usage(&u, 1_714_557_660_000);
        assert!(text.contains("Resource Usage (sampled 5s ago)"), "{text}");
        assert!(text.contains("12.0 MiB / 64.0 MiB"), "{text}");
        assert!(text.contains("20.0 MiB"), "{text}");
        assert!(text.contains("1.50s (1.00s/0.50s)"), "{text}");
        assert!(text.contains("7 of 40 periods (0.25s)"), "{text}");
        assert!(text.contains("3 / 1024"), "{text}");
        assert!(text.contains("Dedicated cpus: 1"), "{text}");
        let stopped = TaskResourceUsage {
            running: false,
            ..u
        };
        assert!(render_usage(&stopped, 0).contains("last sample before the task stopped"));
    }

    #[test]
    fn checks_render_status_first_output_line_and_last_run() {
        use orch_common::model::{CheckHealth, CheckType};
        let check = |name: &str, status, output: &str, last_run_ms| CheckStatus {
            service: "web".into(),
            name: name.into(),
            check_type: CheckType::Http,
            task: "server".into(),
            status,
            output: output.into(),
            last_run_ms,
            status_since_ms: 0,
        };
        let now = 1_714_557_660_000;
        let checks = std::collections::BTreeMap::from([
            (
                "web/alive".to_string(),
                check(
                    "alive",
                    CheckHealth::Passing,
                    "HTTP GET http://127.0.0.1:8080/: 200 OK",
                    now - 3_000,
                ),
            ),
            (
                "web/script".to_string(),
                check(
                    "script",
                    CheckHealth::Critical,
                    "\nnot ready\nsecond line",
                    now - 65_000,
                ),
            ),
            (
                "web/new".to_string(),
                check("new", CheckHealth::Pending, "", 0),
            ),
        ]);
        let text = render_checks(&checks, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVICE"), "{text}");
        assert!(
            lines[1].contains("alive") && lines[1].contains("passing"),
            "{text}"
        );
        assert!(
            lines[1].contains("200 OK") && lines[1].contains("3s ago"),
            "{text}"
        );
        assert!(
            lines[2].contains("pending") && lines[2].trim_end().ends_with('-'),
            "{text}"
        );
        assert!(
            lines[3].contains("critical") && lines[3].contains("not ready ..."),
            "{text}"
        );
        assert!(lines[3].contains("1m ago"), "{text}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }

    #[test]
    fn oom_kills_are_spelled_out() {
        let mut e = event("OOM Killed", "Task killed: out of memory");
        e.exit_code = Some(137);
        e.signal = Some(9);
        e.oom_killed = true;
        assert_eq!(
            exit_words(&e),
            "OOM killed (out of memory; exit code 137, signal 9)"
        );
        assert_eq!(event_description(&e), "Task killed: out of memory");
        e.message.clear();
        assert_eq!(
            event_description(&e),
            "OOM killed (out of memory; exit code 137, signal 9)"
        );
    }

    #[test]
    fn task_rendering_shows_restarts_last_exit_and_events() {
        let mut exit = event("Terminated", "Exited");
        exit.exit_code = Some(3);
        let st = TaskState {
            state: TaskStateKind::Dead,
            failed: true,
            restarts: 2,
            started_at: None,
            finished_at: None,
            events: vec![event("Started", "Task started by client"), exit],
        };
        let text = render_task("server", &st, None, 1_714_557_660_000);
        assert!(
            text.contains("Task \"server\" is \"dead\" (failed)"),
            "{text}"
        );
        assert!(text.contains("Restarts  = 2"), "{text}");
        assert!(text.contains("Last Exit = exit code 3"), "{text}");
        assert!(text.contains("Terminated  Exited"), "{text}");
        assert!(text.contains("1m ago"), "{text}");
    }
}
