//! A structured diff between two versions of a job, for `orch job plan` and
//! `POST /v1/job/{id}/plan`: fields added, edited and deleted, per job, group and task,
//! with old and new values as text.
//!
//! The diff is computed on the jobs' JSON form (the API's field names), so every field
//! the spec has is covered without a hand-written case per field. Server-set fields
//! (`version`, indexes, `status`, ...) are left out. Groups and tasks are matched by
//! name; other lists of tables (constraints, ports, services, ...) are compared as sets,
//! so an element shows as deleted and its replacement as added. Nulls, empty lists and
//! tables with nothing set count as absent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::JobId;
use crate::model::Job;

/// Job fields the server sets: never part of a diff.
const SERVER_FIELDS: [&str; 8] = [
    "stop",
    "status",
    "version",
    "submit_time",
    "create_index",
    "modify_index",
    "job_modify_index",
    "stable",
];

/// Why a diff could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("job {job_id:?} could not be turned into JSON for diffing: {message}")]
    Serialize { job_id: JobId, message: String },
}

/// How one field, object, group or job changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DiffType {
    Added,
    Deleted,
    Edited,
    #[default]
    None,
}

impl DiffType {
    /// The marker `orch job plan` prints: `+`, `-`, `+/-` or nothing.
    pub fn marker(&self) -> &'static str {
        match self {
            DiffType::Added => "+",
            DiffType::Deleted => "-",
            DiffType::Edited => "+/-",
            DiffType::None => "",
        }
    }
}

/// One scalar field (or list of scalars) that changed. Values are text: strings as
/// they are, numbers and booleans printed, lists as compact JSON; absent is "".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiff {
    #[serde(rename = "type")]
    pub diff_type: DiffType,
    pub name: String,
    pub old: String,
    pub new: String,
}

/// A nested table (resources, restart, a constraint, a port, ...) and what changed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectDiff {
    #[serde(rename = "type")]
    pub diff_type: DiffType,
    pub name: String,
    #[serde(default)]
    pub fields: Vec<FieldDiff>,
    #[serde(default)]
    pub objects: Vec<ObjectDiff>,
}

/// One task group: its own fields and tables, and its tasks (matched by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGroupDiff {
    #[serde(rename = "type")]
    pub diff_type: DiffType,
    pub name: String,
    #[serde(default)]
    pub fields: Vec<FieldDiff>,
    #[serde(default)]
    pub objects: Vec<ObjectDiff>,
    /// One per task, unchanged ones included (type `None`).
    #[serde(default)]
    pub tasks: Vec<ObjectDiff>,
}

/// The whole job: `Added` when there is no running version, `None` when the spec is
/// unchanged. Every group is listed, unchanged ones with type `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDiff {
    #[serde(rename = "type")]
    pub diff_type: DiffType,
    pub id: JobId,
    #[serde(default)]
    pub fields: Vec<FieldDiff>,
    #[serde(default)]
    pub objects: Vec<ObjectDiff>,
    #[serde(default)]
    pub task_groups: Vec<TaskGroupDiff>,
}

/// Diffs the running version `old` (None: the job is new) against `new` (None: the
/// job would be removed).
pub fn job_diff(old: Option<&Job>, new: Option<&Job>) -> Result<JobDiff, DiffError> {
    let id = new.or(old).map(|j| j.id.clone()).unwrap_or_default();
    let old_v = old.map(job_value).transpose()?;
    let new_v = new.map(job_value).transpose()?;
    let empty = Map::new();
    let old_m = old_v.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let new_m = new_v.as_ref().and_then(Value::as_object).unwrap_or(&empty);

    let mut skip: Vec<&str> = SERVER_FIELDS.to_vec();
    skip.push("groups");
    let (fields, objects) = diff_maps(old_m, new_m, &skip);
    let task_groups: Vec<TaskGroupDiff> = by_name(old_m.get("groups"), new_m.get("groups"))
        .into_iter()
        .map(|(name, o, n)| group_diff(name, o, n))
        .collect();

    let changed = !fields.is_empty()
        || !objects.is_empty()
        || task_groups.iter().any(|g| g.diff_type != DiffType::None);
    let diff_type = match (old, new) {
        (None, Some(_)) => DiffType::Added,
        (Some(_), None) => DiffType::Deleted,
        _ if changed => DiffType::Edited,
        _ => DiffType::None,
    };
    Ok(JobDiff {
        diff_type,
        id,
        fields,
        objects,
        task_groups,
    })
}

fn job_value(job: &Job) -> Result<Value, DiffError> {
    serde_json::to_value(job).map_err(|e| DiffError::Serialize {
        job_id: job.id.clone(),
        message: e.to_string(),
    })
}

fn group_diff(
    name: String,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
) -> TaskGroupDiff {
    let empty = Map::new();
    let o = old.unwrap_or(&empty);
    let n = new.unwrap_or(&empty);
    let (fields, objects) = diff_maps(o, n, &["name", "tasks"]);
    let tasks: Vec<ObjectDiff> = by_name(o.get("tasks"), n.get("tasks"))
        .into_iter()
        .map(|(task, to, tn)| object_diff(task, to, tn, &["name"]))
        .collect();
    let changed = !fields.is_empty()
        || !objects.is_empty()
        || tasks.iter().any(|t| t.diff_type != DiffType::None);
    TaskGroupDiff {
        diff_type: kind(old.is_some(), new.is_some(), changed),
        name,
        fields,
        objects,
        tasks,
    }
}

type Named<'a> = (
    String,
    Option<&'a Map<String, Value>>,
    Option<&'a Map<String, Value>>,
);

/// Pairs the elements of two lists of named tables: the new list's order first, then
/// what only the old list has.
fn by_name<'a>(old: Option<&'a Value>, new: Option<&'a Value>) -> Vec<Named<'a>> {
    let named = |v: Option<&'a Value>| -> Vec<(String, &'a Map<String, Value>)> {
        v.and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|m| {
                        let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                        (name.to_string(), m)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = named(old);
    let new = named(new);
    let find = |list: &[(String, &'a Map<String, Value>)], name: &str| {
        list.iter().find(|(n, _)| n == name).map(|(_, m)| *m)
    };
    let mut out: Vec<Named<'a>> = new
        .iter()
        .map(|(name, m)| (name.clone(), find(&old, name), Some(*m)))
        .collect();
    for (name, m) in &old {
        if find(&new, name).is_none() {
            out.push((name.clone(), Some(*m), None));
        }
    }
    out
}

fn kind(had: bool, has: bool, changed: bool) -> DiffType {
    match (had, has) {
        (false, true) => DiffType::Added,
        (true, false) => DiffType::Deleted,
        _ if changed => DiffType::Edited,
        _ => DiffType::None,
    }
}

fn object_diff(
    name: String,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
    skip: &[&str],
) -> ObjectDiff {
    let empty = Map::new();
    let (fields, objects) = diff_maps(old.unwrap_or(&empty), new.unwrap_or(&empty), skip);
    let changed = !fields.is_empty() || !objects.is_empty();
    ObjectDiff {
        diff_type: kind(old.is_some(), new.is_some(), changed),
        name,
        fields,
        objects,
    }
}

/// Null, `[]` and a table with nothing present in it count as absent.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| is_present(v))
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => m.values().any(is_present),
        _ => true,
    }
}

fn is_table_list(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array)
        .map(|a| a.iter().all(Value::is_object))
        .unwrap_or(false)
}

/// `constraints` -> `constraint`, `affinities` -> `affinity`.
fn singular(key: &str) -> String {
    if let Some(stem) = key.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = key.strip_suffix('s') {
        stem.to_string()
    } else {
        key.to_string()
    }
}

/// The changed fields and tables between two JSON tables (keys sorted; `skip` ignored).
fn diff_maps(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    skip: &[&str],
) -> (Vec<FieldDiff>, Vec<ObjectDiff>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut fields = Vec::new();
    let mut objects = Vec::new();
    for key in keys {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let o = present(old.get(key));
        let n = present(new.get(key));
        if o.is_none() && n.is_none() {
            continue;
        }
        let tableish = |v: Option<&Value>| v.is_none() || v.map(Value::is_object) == Some(true);
        if tableish(o) && tableish(n) {
            let d = object_diff(
                key.clone(),
                o.and_then(Value::as_object),
                n.and_then(Value::as_object),
                &[],
            );
            if d.diff_type != DiffType::None {
                objects.push(d);
            }
            continue;
        }
        let listish = |v: Option<&Value>| v.is_none() || is_table_list(v);
        if listish(o) && listish(n) {
            objects.extend(set_diff(&singular(key), o, n));
            continue;
        }
        if o != n {
            fields.push(FieldDiff {
                diff_type: kind(o.is_some(), n.is_some(), true),
                name: key.clone(),
                old: text(o),
                new: text(n),
            });
        }
    }
    (fields, objects)
}

/// Lists of tables compared as sets: what only the old list has is deleted, what only
/// the new one has is added.
fn set_diff(name: &str, old: Option<&Value>, new: Option<&Value>) -> Vec<ObjectDiff> {
    let items = |v: Option<&Value>| -> Vec<Value> {
        v.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let old = items(old);
    let new = items(new);
    let mut out = Vec::new();
    for o in old.iter().filter(|o| !new.contains(o)) {
        out.push(object_diff(name.to_string(), o.as_object(), None, &[]));
    }
    for n in new.iter().filter(|n| !old.contains(n)) {
        out.push(object_diff(name.to_string(), None, n.as_object(), &[]));
    }
    out
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

impl JobDiff {
    /// True when nothing in the spec changed.
    pub fn is_empty(&self) -> bool {
        self.diff_type == DiffType::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobspec;

    const WEB: &str = r#"
id = "web"

[group.web]
count = 2

[[group.web.constraint]]
attribute = "${attr.kernel.name}"
value = "linux"

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/sleep", args = ["600"] }
resources = { cpu = 100, memory = 32 }
"#;

    fn web() -> Job {
        jobspec::parse(WEB).expect("valid spec")
    }

    fn field<'a>(fields: &'a [FieldDiff], name: &str) -> &'a FieldDiff {
        fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no field {name} in {fields:#?}"))
    }

    #[test]
    fn an_unchanged_job_has_no_differences() {
        let mut stored = web();
        stored.version = 3;
        stored.job_modify_index = 40;
        let d = job_diff(Some(&stored), Some(&web())).unwrap();
        assert_eq!(d.diff_type, DiffType::None);
        assert!(d.fields.is_empty() && d.objects.is_empty(), "{d:#?}");
        assert_eq!(d.task_groups.len(), 1);
        assert_eq!(d.task_groups[0].diff_type, DiffType::None);
        assert_eq!(d.task_groups[0].tasks[0].diff_type, DiffType::None);
    }

    #[test]
    fn a_new_job_is_added_with_every_field_added() {
        let d = job_diff(None, Some(&web())).unwrap();
        assert_eq!(d.diff_type, DiffType::Added);
        assert_eq!(field(&d.fields, "priority").diff_type, DiffType::Added);
        assert_eq!(field(&d.fields, "priority").new, "50");
        let g = &d.task_groups[0];
        assert_eq!(g.diff_type, DiffType::Added);
        assert_eq!(field(&g.fields, "count").new, "2");
        assert_eq!(g.tasks[0].diff_type, DiffType::Added);
    }

    #[test]
    fn a_changed_count_and_memory_are_edited_with_old_and_new_values() {
        let mut new = web();
        new.groups[0].count = 5;
        new.groups[0].tasks[0].resources.memory = 64;
        let d = job_diff(Some(&web()), Some(&new)).unwrap();
        assert_eq!(d.diff_type, DiffType::Edited);
        let g = &d.task_groups[0];
        assert_eq!(g.diff_type, DiffType::Edited);
        let count = field(&g.fields, "count");
        assert_eq!(
            (count.diff_type, count.old.as_str(), count.new.as_str()),
            (DiffType::Edited, "2", "5")
        );
        let task = &g.tasks[0];
        assert_eq!(task.diff_type, DiffType::Edited);
        let res = task.objects.iter().find(|o| o.name == "resources").unwrap();
        let mem = field(&res.fields, "memory");
        assert_eq!((mem.old.as_str(), mem.new.as_str()), ("32", "64"));
        assert!(res.fields.iter().all(|f| f.name != "cpu"), "{res:#?}");
    }

    #[test]
    fn a_replaced_constraint_is_one_deleted_and_one_added_object() {
        let mut new = web();
        new.groups[0].constraints[0].value = "freebsd".into();
        let d = job_diff(Some(&web()), Some(&new)).unwrap();
        let g = &d.task_groups[0];
        let kinds: Vec<(DiffType, &str)> = g
            .objects
            .iter()
            .map(|o| (o.diff_type, o.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DiffType::Deleted, "constraint"),
                (DiffType::Added, "constraint")
            ]
        );
        assert_eq!(field(&g.objects[1].fields, "value").new, "freebsd");
    }

    #[test]
    fn added_and_removed_groups_and_tasks_are_matched_by_name() {
        let mut new = web();
        let mut api = new.groups[0].clone();
        api.name = "api".into();
        new.groups.push(api);
        new.groups[0].tasks[0].name = "main".into();
        let d = job_diff(Some(&web()), Some(&new)).unwrap();
        let types: Vec<(&str, DiffType)> = d
            .task_groups
            .iter()
            .map(|g| (g.name.as_str(), g.diff_type))
            .collect();
        assert_eq!(
            types,
            vec![("web", DiffType::Edited), ("api", DiffType::Added)]
        );
        let tasks: Vec<(&str, DiffType)> = d.task_groups[0]
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.diff_type))
            .collect();
        assert_eq!(
            tasks,
            vec![("main", DiffType::Added), ("server", DiffType::Deleted)]
        );
    }

    #[test]
    fn lists_of_scalars_are_one_field_shown_as_json() {
        let mut new = web();
        new.datacenters = vec!["dc1".into(), "dc2".into()];
        let d = job_diff(Some(&web()), Some(&new)).unwrap();
        let dcs = field(&d.fields, "datacenters");
        assert_eq!(dcs.old, r#"["dc1"]"#);
        assert_eq!(dcs.new, r#"["dc1","dc2"]"#);
    }

    #[test]
    fn a_table_with_nothing_set_is_not_shown() {
        let d = job_diff(None, Some(&web())).unwrap();
        let g = &d.task_groups[0];
        assert!(g.objects.iter().all(|o| o.name != "network"), "{g:#?}");
    }

    proptest::proptest! {
        /// The diff sees a change exactly when the registration would make a new
        /// version (`Job::spec_changed`), and edited fields carry both values.
        #[test]
        fn the_diff_is_empty_exactly_when_the_spec_is_unchanged(
            count in 0u32..4,
            priority in 40u8..60,
            memory in proptest::sample::select(vec![32u64, 64]),
            extra_dc in proptest::bool::ANY,
            env in proptest::option::of("[a-z]{1,3}"),
            version in 0u64..5,
        ) {
            let old = web();
            let mut new = web();
            new.groups[0].count = count;
            new.priority = priority;
            new.groups[0].tasks[0].resources.memory = memory;
            if extra_dc {
                new.datacenters.push("dc2".into());
            }
            if let Some(v) = env {
                new.groups[0].tasks[0].env.insert("X".into(), v);
            }
            new.version = version;
            new.job_modify_index = version * 10;
            let d = job_diff(Some(&old), Some(&new)).unwrap();
            proptest::prop_assert_eq!(d.diff_type != DiffType::None, old.spec_changed(&new));
            let edited = d
                .fields
                .iter()
                .chain(d.task_groups.iter().flat_map(|g| g.fields.iter()))
                .filter(|f| f.diff_type == DiffType::Edited);
            for f in edited {
                proptest::prop_assert!(f.old != f.new && !f.old.is_empty() && !f.new.is_empty());
            }
        }
    }

    #[test]
    fn a_removed_job_is_deleted() {
        let d = job_diff(Some(&web()), None).unwrap();
        assert_eq!(d.diff_type, DiffType::Deleted);
        assert_eq!(d.task_groups[0].diff_type, DiffType::Deleted);
    }
}
