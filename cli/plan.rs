//! `orch job plan FILE`: asks the server for a dry run (`POST /v1/job/{id}/plan`) and
//! prints it like `nomad job plan`: the `+`/`-`/`+/-` diff against the running
//! version with what happens to each group (in place or destructive, and the
//! scheduler's counts), the scheduler's dry-run verdict (failures in words),
//! preemptions, and the job modify index for `orch job run --check-index`.
//!
//! Exit status (as Nomad's): 0 when no allocations would be created or destroyed, 1
//! when some would, 255 on any error (a bad spec, an unreachable server, ...).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use orch_common::api::{JobPlanRequest, JobPlanResponse};
use orch_common::diff::{DiffType, FieldDiff, JobDiff, ObjectDiff, TaskGroupDiff};
use orch_common::model::{AllocMetric, DesiredUpdates};
use serde::Serialize;

use crate::api_client::encode;
use crate::job::load_spec;
use crate::output::{self, short, Table};
use crate::Ctx;

/// Exit status of `orch job plan` on errors.
pub const PLAN_ERROR_EXIT: u8 = 255;

pub const PLAN_EXAMPLES: &str = "EXAMPLES:
  orch job plan web.toml
  orch job run --check-index 42 web.toml    # then register only if nothing changed since

Exit status: 0 when no allocations would be created or destroyed, 1 when some would,
255 on an error.";

/// Runs the dry run; errors are printed here so they exit 255, not 1.
pub async fn plan(ctx: &Ctx, file: &Path) -> Result<ExitCode> {
    match plan_inner(ctx, file).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            Ok(ExitCode::from(PLAN_ERROR_EXIT))
        }
    }
}

async fn plan_inner(ctx: &Ctx, file: &Path) -> Result<ExitCode> {
    let Some(job) = load_spec(file)? else {
        return Ok(ExitCode::from(PLAN_ERROR_EXIT));
    };
    let api = ctx.api()?;
    let resp: JobPlanResponse = api
        .post(
            &format!("/v1/job/{}/plan", encode(&job.id)),
            &JobPlanRequest {
                job: job.clone(),
                diff: true,
            },
        )
        .await?;
    if ctx.json {
        // The response as the API gives it, plus how each changed group is updated.
        let mut value = serde_json::to_value(&resp)?;
        if let Some(diff) = &resp.diff {
            value["group_changes"] = serde_json::to_value(group_changes(diff))?;
        }
        output::print_json(&value)?;
    } else {
        print!("{}", render(&resp, &file.display().to_string()));
    }
    Ok(if resp.changes_allocations() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The whole text of `orch job plan`.
pub fn render(resp: &JobPlanResponse, file: &str) -> String {
    let mut out = String::new();
    for w in &resp.warnings {
        out.push_str(&format!("Warning: {w}\n"));
    }
    if let Some(diff) = &resp.diff {
        out.push_str(&render_diff(diff, &resp.annotations.desired_tg_updates));
        out.push('\n');
    }
    out.push_str("Scheduler dry-run:\n");
    if resp.failed_tg_allocs.is_empty() {
        out.push_str("- All tasks successfully allocated.\n");
    } else {
        out.push_str("- WARNING: Failed to place all allocations.\n");
        for (group, metric) in &resp.failed_tg_allocs {
            let n = metric.coalesced_failures + 1;
            out.push_str(&format!(
                "  Task Group {group:?} (failed to place {n} allocation{}):\n",
                plural(n)
            ));
            for line in failure_lines(metric) {
                out.push_str(&format!("    * {line}\n"));
            }
        }
        if !resp.created_evals.is_empty() {
            out.push_str(
                "  Once registered, the job would wait in a blocked evaluation and be placed when capacity appears.\n",
            );
        }
    }
    if !resp.preemptions.is_empty() {
        out.push_str("\nPreemptions:\n");
        let mut t = Table::new(&["ALLOC ID", "JOB ID", "GROUP", "NODE"]);
        for a in &resp.preemptions {
            let node = if a.node_name.is_empty() {
                short(&a.node_id)
            } else {
                a.node_name.clone()
            };
            t.row(vec![
                short(&a.id),
                a.job_id.to_string(),
                a.group.clone(),
                node,
            ]);
        }
        out.push_str(&t.render());
    }
    out.push_str(&format!(
        "\nJob Modify Index: {}\n\
         To submit the job with version verification run:\n\n\
         orch job run --check-index {} {file}\n\n\
         When running the job with the check-index flag, the job will only be run if the\n\
         job modify index given matches the server-side version. If the index has\n\
         changed, another user has modified the job and the plan's results are\n\
         potentially invalid.\n",
        resp.job_modify_index, resp.job_modify_index
    ));
    out
}

/// A placement failure in words: the `describe()` line, then the node classes involved
/// when nodes have classes.
pub fn failure_lines(m: &AllocMetric) -> Vec<String> {
    let mut lines = vec![m.describe()];
    for (class, n) in m.class_filtered.iter().filter(|(c, _)| !c.is_empty()) {
        lines.push(format!("class {class:?}: {n} node{} filtered", plural(*n)));
    }
    for (class, n) in m.class_exhausted.iter().filter(|(c, _)| !c.is_empty()) {
        lines.push(format!("class {class:?}: {n} node{} exhausted", plural(*n)));
    }
    lines
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `(1 create, 2 ignore, 1 in-place update)`, Nomad's words for the group's counts.
fn updates_words(u: &DesiredUpdates) -> String {
    let parts: Vec<String> = [
        (u.place, "create"),
        (u.stop, "destroy"),
        (u.migrate, "migrate"),
        (u.in_place_update, "in-place update"),
        (u.destructive_update, "create/destroy update"),
        (u.canary, "canary"),
        (u.preemptions, "preempt"),
        (u.reschedule_now, "reschedule"),
        (u.ignore, "ignore"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, w)| format!("{n} {w}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// How a changed group's new version reaches its running instances, by the
/// scheduler's rule (`tasks_updated`): a changed task or network replaces them; any
/// other change (count, update policy, services, meta, constraints, ...) is applied to
/// them in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupChange {
    InPlace,
    Destructive { reasons: Vec<String> },
}

impl GroupChange {
    /// `in place` / `destructive: task "app" changed, network changed`.
    pub fn words(&self) -> String {
        match self {
            GroupChange::InPlace => "in place".to_string(),
            GroupChange::Destructive { reasons } => format!("destructive: {}", reasons.join(", ")),
        }
    }
}

/// The change of an edited group; None for a group added, removed or unchanged.
pub fn group_change(g: &TaskGroupDiff) -> Option<GroupChange> {
    if g.diff_type != DiffType::Edited {
        return None;
    }
    let mut reasons: Vec<String> = Vec::new();
    for t in &g.tasks {
        let what = match t.diff_type {
            DiffType::None => continue,
            DiffType::Added => "added",
            DiffType::Deleted => "removed",
            DiffType::Edited => "changed",
        };
        reasons.push(format!("task {:?} {what}", t.name));
    }
    let network = g.objects.iter().any(|o| o.name == "network")
        || g.fields.iter().any(|f| f.name == "network");
    if network {
        reasons.push("network changed".to_string());
    }
    Some(if reasons.is_empty() {
        GroupChange::InPlace
    } else {
        GroupChange::Destructive { reasons }
    })
}

/// Group -> its change, for every edited group (for `--json`).
pub fn group_changes(d: &JobDiff) -> std::collections::BTreeMap<String, GroupChange> {
    d.task_groups
        .iter()
        .filter_map(|g| group_change(g).map(|c| (g.name.clone(), c)))
        .collect()
}

fn prefix(t: DiffType) -> String {
    match t {
        DiffType::None => String::new(),
        other => format!("{} ", other.marker()),
    }
}

/// The `+`/`-`/`+/-` tree of a job diff, edited groups annotated with how they are
/// updated (in place or destructive) and groups with the scheduler's counts.
pub fn render_diff(
    d: &JobDiff,
    updates: &std::collections::BTreeMap<String, DesiredUpdates>,
) -> String {
    let mut out = format!("{}Job: {:?}\n", prefix(d.diff_type), d.id);
    push_fields(&mut out, &d.fields, 0);
    push_objects(&mut out, &d.objects, 0);
    for g in &d.task_groups {
        let change = group_change(g)
            .map(|c| format!(" ({})", c.words()))
            .unwrap_or_default();
        let words = updates.get(&g.name).map(updates_words).unwrap_or_default();
        out.push_str(&format!(
            "{}Task Group: {:?}{change}{words}\n",
            prefix(g.diff_type),
            g.name
        ));
        push_fields(&mut out, &g.fields, 1);
        push_objects(&mut out, &g.objects, 1);
        for t in &g.tasks {
            out.push_str(&format!("  {}Task: {:?}\n", prefix(t.diff_type), t.name));
            push_fields(&mut out, &t.fields, 2);
            push_objects(&mut out, &t.objects, 2);
        }
    }
    out
}

/// A value as printed: quoted, except lists, which are already JSON.
fn quoted(v: &str) -> String {
    if v.starts_with('[') {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

fn push_fields(out: &mut String, fields: &[FieldDiff], depth: usize) {
    let pad = "  ".repeat(depth);
    for f in fields {
        let (old, new) = (quoted(&f.old), quoted(&f.new));
        let line = match f.diff_type {
            DiffType::Added => format!("+ {}: {new}", f.name),
            DiffType::Deleted => format!("- {}: {old}", f.name),
            DiffType::Edited => format!("+/- {}: {old} => {new}", f.name),
            DiffType::None => format!("{}: {new}", f.name),
        };
        out.push_str(&format!("{pad}{line}\n"));
    }
}

fn push_objects(out: &mut String, objects: &[ObjectDiff], depth: usize) {
    let pad = "  ".repeat(depth);
    for o in objects {
        out.push_str(&format!("{pad}{}{} {{\n", prefix(o.diff_type), o.name));
        push_fields(out, &o.fields, depth + 1);
        push_objects(out, &o.objects, depth + 1);
        out.push_str(&format!("{pad}}}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::model::PlanAnnotations;

    fn response(diff: JobDiff) -> JobPlanResponse {
        JobPlanResponse {
            job_modify_index: 7,
            next_version: 1,
            diff: Some(diff),
            annotations: PlanAnnotations::default(),
            failed_tg_allocs: Default::default(),
            failure_reasons: Default::default(),
            preemptions: vec![],
            created_evals: vec![],
            warnings: vec![],
        }
    }

    fn edited_count() -> JobDiff {
        JobDiff {
            diff_type: DiffType::Edited,
            id: "web".into(),
            fields: vec![],
            objects: vec![],
            task_groups: vec![orch_common::diff::TaskGroupDiff {
                diff_type: DiffType::Edited,
                name: "web".into(),
                fields: vec![FieldDiff {
                    diff_type: DiffType::Edited,
                    name: "count".into(),
                    old: "2".into(),
                    new: "3".into(),
                }],
                objects: vec![],
                tasks: vec![ObjectDiff {
                    diff_type: DiffType::None,
                    name: "server".into(),
                    fields: vec![],
                    objects: vec![],
                }],
            }],
        }
    }

    #[test]
    fn an_edited_count_prints_old_and_new_with_the_group_counts() {
        let mut resp = response(edited_count());
        resp.annotations.desired_tg_updates.insert(
            "web".into(),
            DesiredUpdates {
                place: 1,
                ignore: 2,
                ..Default::default()
            },
        );
        let text = render(&resp, "web.toml");
        assert!(text.starts_with("+/- Job: \"web\"\n"), "{text}");
        assert!(
            text.contains("+/- Task Group: \"web\" (in place) (1 create, 2 ignore)\n"),
            "{text}"
        );
        assert!(text.contains("  +/- count: \"2\" => \"3\"\n"), "{text}");
        assert!(text.contains("  Task: \"server\"\n"), "{text}");
        assert!(
            text.contains("- All tasks successfully allocated."),
            "{text}"
        );
        assert!(text.contains("Job Modify Index: 7"), "{text}");
        assert!(
            text.contains("orch job run --check-index 7 web.toml"),
            "{text}"
        );
        assert!(resp.changes_allocations());
    }

    #[test]
    fn failures_print_a_warning_with_reasons_and_classes() {
        let mut resp = response(edited_count());
        let mut m = AllocMetric {
            nodes_evaluated: 3,
            nodes_in_pool: 3,
            coalesced_failures: 2,
            ..Default::default()
        };
        m.dimension_exhausted.insert("memory".into(), 3);
        m.class_exhausted.insert("small".into(), 3);
        resp.failed_tg_allocs.insert("web".into(), m);
        let text = render(&resp, "web.toml");
        assert!(
            text.contains("- WARNING: Failed to place all allocations."),
            "{text}"
        );
        assert!(
            text.contains("Task Group \"web\" (failed to place 3 allocations):"),
            "{text}"
        );
        assert!(
            text.contains("* 3 nodes evaluated: 3 exhausted on memory"),
            "{text}"
        );
        assert!(
            text.contains("* class \"small\": 3 nodes exhausted"),
            "{text}"
        );
    }

    #[test]
    fn nested_objects_print_as_blocks() {
        let mut d = edited_count();
        d.task_groups[0].tasks[0] = ObjectDiff {
            diff_type: DiffType::Edited,
            name: "server".into(),
            fields: vec![],
            objects: vec![ObjectDiff {
                diff_type: DiffType::Edited,
                name: "resources".into(),
                fields: vec![FieldDiff {
                    diff_type: DiffType::Edited,
                    name: "memory".into(),
                    old: "32".into(),
                    new: "64".into(),
                }],
                objects: vec![],
            }],
        };
        let text = render_diff(&d, &Default::default());
        assert!(
            text.contains(
                "  +/- Task: \"server\"\n    +/- resources {\n      +/- memory: \"32\" => \"64\"\n    }\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn changed_tasks_or_network_are_destructive_and_the_rest_in_place() {
        let mut d = edited_count();
        assert_eq!(group_change(&d.task_groups[0]), Some(GroupChange::InPlace));
        d.task_groups[0].tasks[0].diff_type = DiffType::Edited;
        d.task_groups[0].tasks.push(ObjectDiff {
            diff_type: DiffType::Added,
            name: "sidecar".into(),
            fields: vec![],
            objects: vec![],
        });
        d.task_groups[0].objects.push(ObjectDiff {
            diff_type: DiffType::Edited,
            name: "network".into(),
            fields: vec![],
            objects: vec![],
        });
        let change = group_change(&d.task_groups[0]).unwrap();
        assert_eq!(
            change.words(),
            "destructive: task \"server\" changed, task \"sidecar\" added, network changed"
        );
        let mut updates = std::collections::BTreeMap::new();
        updates.insert(
            "web".to_string(),
            DesiredUpdates {
                destructive_update: 2,
                canary: 1,
                ..Default::default()
            },
        );
        let text = render_diff(&d, &updates);
        assert!(
            text.contains("+/- Task Group: \"web\" (destructive: task \"server\" changed, task \"sidecar\" added, network changed) (2 create/destroy update, 1 canary)\n"),
            "{text}"
        );
        assert_eq!(
            serde_json::to_value(group_changes(&d)).unwrap(),
            serde_json::json!({"web": {"kind": "destructive", "reasons": [
                "task \"server\" changed", "task \"sidecar\" added", "network changed"]}})
        );
    }

    #[test]
    fn added_removed_and_unchanged_groups_get_no_label() {
        let mut d = edited_count();
        for t in [DiffType::Added, DiffType::Deleted, DiffType::None] {
            d.task_groups[0].diff_type = t;
            assert_eq!(group_change(&d.task_groups[0]), None);
        }
        assert_eq!(
            serde_json::to_value(GroupChange::InPlace).unwrap(),
            serde_json::json!({"kind": "in_place"})
        );
    }

    #[test]
    fn an_unchanged_plan_creates_nothing() {
        let mut d = edited_count();
        d.diff_type = DiffType::None;
        let mut resp = response(d);
        resp.annotations.desired_tg_updates.insert(
            "web".into(),
            DesiredUpdates {
                ignore: 2,
                ..Default::default()
            },
        );
        assert!(!resp.changes_allocations());
    }
}
