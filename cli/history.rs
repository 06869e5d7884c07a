//! `orch job history JOB`: the job's versions, newest first, each with whether it is
//! stable (a deployment of it succeeded), when it was submitted and a one-line summary
//! of what it changed; `-p` prints the full diff of each version against the one before,
//! rendered as `orch job plan` renders its diff. The server keeps only a job's newest
//! versions (and the stable and running ones): a diff across pruned versions says
//! which version it is against.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use orch_common::diff::{job_diff, DiffType, FieldDiff, JobDiff, ObjectDiff};
use orch_common::model::Job;

use crate::api_client::encode;
use crate::output::{self, Table};
use crate::Ctx;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Job id (a unique prefix is enough).
    job: String,
    /// Print each version's full diff against the version before it.
    #[arg(short = 'p', long = "diff")]
    diff: bool,
    /// Only this version.
    #[arg(long, value_name = "N")]
    version: Option<u64>,
}

pub const HISTORY_EXAMPLES: &str = "EXAMPLES:
  orch job history web
  orch job history -p web
  orch job history -p --version 3 web
  orch job history --json web";

/// How many changes a summary names before it says "and N more".
const SUMMARY_ITEMS: usize = 4;

pub async fn history(ctx: &Ctx, args: HistoryArgs) -> Result<ExitCode> {
    let api = ctx.api()?;
    // Resolve a prefix to the whole id first.
    let job: Job = api.get(&format!("/v1/job/{}", encode(&args.job))).await?;
    let path = format!("/v1/job/{}/versions", encode(&job.id));
    let raw: Vec<serde_json::Value> = api.get(&path).await?;
    let mut versions: Vec<Job> = raw
        .iter()
        .map(|v| serde_json::from_value(v.clone()))
        .collect::<Result<_, _>>()?;
    versions.sort_by_key(|j| std::cmp::Reverse(j.version));
    if let Some(n) = args.version {
        if !versions.iter().any(|j| j.version == n) {
            if n < job.version {
                let kept: Vec<String> = versions.iter().map(|j| j.version.to_string()).collect();
                bail!(
                    "version {n} of job {:?} was pruned: the server keeps a job's newest \
                     versions, its newest stable one and those still running (kept: {})",
                    job.id,
                    kept.join(", ")
                );
            }
            bail!("job {:?} has no version {n}", job.id);
        }
    }
    let wanted = |v: u64| args.version.is_none_or(|n| n == v);
    if ctx.json {
        let chosen: Vec<&serde_json::Value> = raw
            .iter()
            .filter(|v| wanted(v.get("version").and_then(|x| x.as_u64()).unwrap_or(0)))
            .collect();
        output::print_json(&chosen)?;
        return Ok(ExitCode::SUCCESS);
    }
    let entries = entries(&versions)?;
    let chosen: Vec<&Entry> = entries.iter().filter(|e| wanted(e.version)).collect();
    if args.diff {
        print!("{}", render_diffs(&chosen));
    } else {
        print!("{}", render_table(&chosen));
    }
    Ok(ExitCode::SUCCESS)
}

/// One version with its diff against the next older version kept (None: none is).
pub struct Entry {
    pub version: u64,
    pub stable: bool,
    pub submit_time: u64,
    pub diff: Option<JobDiff>,
    /// The version the diff is against when it is not the one right before: the
    /// versions between were pruned by the server.
    pub since: Option<u64>,
}

/// Pairs each version (newest first) with its diff against the next older one kept;
/// version 0 is diffed against nothing (all added).
pub fn entries(newest_first: &[Job]) -> Result<Vec<Entry>> {
    let mut out = Vec::with_capacity(newest_first.len());
    for (i, job) in newest_first.iter().enumerate() {
        let older = newest_first.get(i + 1);
        let diff = match older {
            Some(prev) => Some(job_diff(Some(prev), Some(job))?),
            None if job.version == 0 => Some(job_diff(None, Some(job))?),
            None => None,
        };
        out.push(Entry {
            version: job.version,
            stable: job.stable,
            submit_time: job.submit_time,
            diff,
            since: older
                .map(|prev| prev.version)
                .filter(|v| v.saturating_add(1) != job.version),
        });
    }
    Ok(out)
}

/// `VERSION | STABLE | SUBMITTED | CHANGES`.
pub fn render_table(entries: &[&Entry]) -> String {
    let mut t = Table::new(&["VERSION", "STABLE", "SUBMITTED", "CHANGES"]);
    for e in entries {
        t.row(vec![
            e.version.to_string(),
            e.stable.to_string(),
            output::timestamp(e.submit_time),
            match (&e.diff, e.since) {
                (Some(d), Some(since)) => format!("since version {since}: {}", summarize(d)),
                (Some(d), None) => summarize(d),
                (None, _) => "(previous version no longer kept)".to_string(),
            },
        ]);
    }
    t.render()
}

/// Each version's header, then its diff as `orch job plan` prints one.
pub fn render_diffs(entries: &[&Entry]) -> String {
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "Version     = {}\nStable      = {}\nSubmitted   = {}\n",
            e.version,
            e.stable,
            output::timestamp(e.submit_time)
        ));
        match &e.diff {
            Some(d) if d.diff_type == DiffType::None => {
                out.push_str("Diff        = no spec changes\n");
            }
            Some(d) => {
                match e.since {
                    Some(since) => out.push_str(&format!("Diff (since version {since}):\n")),
                    None => out.push_str("Diff:\n"),
                }
                out.push_str(&crate::plan::render_diff(d, &Default::default()));
            }
            None => out.push_str("Diff        = previous version no longer kept\n"),
        }
    }
    out
}

/// What a version changed in one line: `web.count: 2 => 3; task web/app: config, env`.
pub fn summarize(d: &JobDiff) -> String {
    match d.diff_type {
        DiffType::Added => return "initial version".to_string(),
        DiffType::None => return "no spec changes".to_string(),
        DiffType::Deleted | DiffType::Edited => {}
    }
    let mut items: Vec<String> = Vec::new();
    items.extend(d.fields.iter().map(|f| field_words("", f)));
    items.extend(d.objects.iter().map(|o| object_words("", o)));
    for g in &d.task_groups {
        match g.diff_type {
            DiffType::None => {}
            DiffType::Added => items.push(format!("group {} added", g.name)),
            DiffType::Deleted => items.push(format!("group {} removed", g.name)),
            DiffType::Edited => {
                let prefix = format!("{}.", g.name);
                items.extend(g.fields.iter().map(|f| field_words(&prefix, f)));
                items.extend(g.objects.iter().map(|o| object_words(&prefix, o)));
                for t in &g.tasks {
                    let name = format!("{}/{}", g.name, t.name);
                    match t.diff_type {
                        DiffType::None => {}
                        DiffType::Added => items.push(format!("task {name} added")),
                        DiffType::Deleted => items.push(format!("task {name} removed")),
                        DiffType::Edited => {
                            let mut what: Vec<&str> = t
                                .fields
                                .iter()
                                .map(|f| f.name.as_str())
                                .chain(t.objects.iter().map(|o| o.name.as_str()))
                                .collect();
                            what.dedup();
                            items.push(format!("task {name}: {}", what.join(", ")));
                        }
                    }
                }
            }
        }
    }
    if items.len() > SUMMARY_ITEMS {
        let more = items.len() - SUMMARY_ITEMS;
        items.truncate(SUMMARY_ITEMS);
        items.push(format!("and {more} more"));
    }
    items.join("; ")
}

/// `count: 2 => 3` for short values, `command changed` for long ones.
fn field_words(prefix: &str, f: &FieldDiff) -> String {
    let short = f.old.chars().count() + f.new.chars().count() <= 32;
    match f.diff_type {
        DiffType::Edited if short => format!("{prefix}{}: {} => {}", f.name, f.old, f.new),
        DiffType::Added if short => format!("{prefix}{}: {} added", f.name, f.new),
        DiffType::Edited | DiffType::None => format!("{prefix}{} changed", f.name),
        DiffType::Added => format!("{prefix}{} added", f.name),
        DiffType::Deleted => format!("{prefix}{} removed", f.name),
    }
}

fn object_words(prefix: &str, o: &ObjectDiff) -> String {
    let what = match o.diff_type {
        DiffType::Added => "added",
        DiffType::Deleted => "removed",
        DiffType::Edited | DiffType::None => "changed",
    };
    format!("{prefix}{} {what}", o.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64, count: u32, command: &str, stable: bool) -> Job {
        let spec = format!(
            "id = \"web\"\n[group.web]\ncount = {count}\n\
             [group.web.task.app]\ndriver = \"raw_exec\"\nconfig = {{ command = \"{command}\" }}\n"
        );
        let mut j = orch_common::jobspec::parse(&spec).unwrap();
        j.version = n;
        j.stable = stable;
        j.submit_time = 1_714_557_600_000 + n * 60_000;
        j
    }

    #[test]
    fn each_version_is_summarized_against_the_one_before() {
        let versions = vec![
            version(2, 3, "/bin/sleep", false),
            version(1, 3, "/bin/true", true),
            version(0, 2, "/bin/true", true),
        ];
        let entries = entries(&versions).unwrap();
        let refs: Vec<&Entry> = entries.iter().collect();
        let text = render_table(&refs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "VERSION  STABLE  SUBMITTED             CHANGES",
            "{text}"
        );
        assert_eq!(
            lines[1], "2        false   2024-05-01T10:02:00Z  task web/app: config",
            "{text}"
        );
        assert_eq!(
            lines[2], "1        true    2024-05-01T10:01:00Z  web.count: 2 => 3",
            "{text}"
        );
        assert_eq!(
            lines[3], "0        true    2024-05-01T10:00:00Z  initial version",
            "{text}"
        );
    }

    #[test]
    fn the_stable_flag_alone_is_not_a_change_and_a_pruned_predecessor_is_said() {
        let versions = vec![
            version(4, 2, "/bin/true", true),
            version(3, 2, "/bin/true", false),
        ];
        let entries = entries(&versions).unwrap();
        assert_eq!(
            summarize(entries[0].diff.as_ref().unwrap()),
            "no spec changes"
        );
        assert!(entries[1].diff.is_none());
        let text = render_table(&[&entries[1]]);
        assert!(text.contains("(previous version no longer kept)"), "{text}");
    }

    #[test]
    fn a_diff_across_pruned_versions_says_which_version_it_is_against() {
        let versions = vec![
            version(9, 3, "/bin/true", false),
            version(2, 2, "/bin/true", true),
        ];
        let entries = entries(&versions).unwrap();
        assert_eq!(entries[0].since, Some(2));
        let text = render_table(&[&entries[0]]);
        assert!(
            text.contains("since version 2: web.count: 2 => 3"),
            "{text}"
        );
        let diffs = render_diffs(&[&entries[0]]);
        assert!(diffs.contains("Diff (since version 2):\n"), "{diffs}");
    }

    #[test]
    fn long_summaries_are_cut_after_a_few_changes() {
        let mut new = version(1, 5, "/bin/sleep", false);
        new.datacenters = vec!["dc2".into()];
        new.priority = 70;
        new.meta.insert("team".into(), "a".into());
        let d = job_diff(Some(&version(0, 2, "/bin/true", false)), Some(&new)).unwrap();
        let s = summarize(&d);
        assert!(s.ends_with("; and 1 more"), "{s}");
        assert!(s.starts_with("datacenters: [\"dc1\"] => [\"dc2\"]"), "{s}");
    }

    #[test]
    fn the_full_diff_prints_each_version_with_the_plan_rendering() {
        let versions = vec![
            version(1, 3, "/bin/true", false),
            version(0, 2, "/bin/true", true),
        ];
        let entries = entries(&versions).unwrap();
        let refs: Vec<&Entry> = entries.iter().collect();
        let text = render_diffs(&refs);
        assert!(
            text.starts_with("Version     = 1\nStable      = false\nSubmitted   = 2024-05-01T10:01:00Z\nDiff:\n+/- Job: \"web\"\n"),
            "{text}"
        );
        assert!(text.contains("  +/- count: \"2\" => \"3\"\n"), "{text}");
        assert!(text.contains("\nVersion     = 0\n"), "{text}");
        assert!(text.contains("+ Job: \"web\"\n"), "{text}");
    }
}
