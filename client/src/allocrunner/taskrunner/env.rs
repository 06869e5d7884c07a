//! A task's runtime environment: the `ORCH_*` variables of INTERFACE.md, the job's meta
//! as `ORCH_META_*`, the task's own `env`, and `${...}` interpolation of config and env
//! values from those variables and from `attr.*`, `node.*` and `meta.*` of the node.

use std::collections::BTreeMap;
use std::path::Path;

use orch_common::model::{Allocation, Node, Resources, Task};

/// The variables a task sees and the names `${...}` can use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskEnv {
    /// Set in the task's process environment.
    pub vars: BTreeMap<String, String>,
    /// Everything `${name}` resolves: `vars` plus `attr.*`, `node.*`, `meta.*`.
    lookup: BTreeMap<String, String>,
}

/// What the environment is built from.
pub struct EnvInputs<'a> {
    pub alloc: &'a Allocation,
    pub task: &'a Task,
    pub node: &'a Node,
    /// `<alloc_root>/<alloc_id>`.
    pub alloc_dir: &'a Path,
}

impl TaskEnv {
    pub fn build(i: &EnvInputs<'_>) -> TaskEnv {
        let a = i.alloc;
        let t = i.task;
        let res: Resources = a
            .resources
            .tasks
            .get(&t.name)
            .copied()
            .unwrap_or(t.resources);
        let mut v = BTreeMap::new();
        let mut set = |k: &str, val: String| {
            v.insert(k.to_string(), val);
        };
        set("ORCH_JOB_ID", a.job_id.to_string());
        if let Some(job) = &a.job {
            set(
                "ORCH_JOB_NAME",
                if job.name.is_empty() {
                    job.id.to_string()
                } else {
                    job.name.clone()
                },
            );
        }
        set("ORCH_GROUP_NAME", a.group.clone());
        set("ORCH_TASK_NAME", t.name.clone());
        set("ORCH_ALLOC_ID", a.id.to_string());
        set("ORCH_ALLOC_NAME", a.name.clone());
        set("ORCH_ALLOC_INDEX", a.index.to_string());
        set(
            "ORCH_ALLOC_DIR",
            i.alloc_dir.join("alloc").display().to_string(),
        );
        set(
            "ORCH_TASK_DIR",
            i.alloc_dir
                .join(&t.name)
                .join("local")
                .display()
                .to_string(),
        );
        set("ORCH_NODE_ID", i.node.id.to_string());
        set("ORCH_NODE_NAME", i.node.name.clone());
        set("ORCH_DC", i.node.datacenter.clone());
        set("ORCH_CPU_LIMIT", res.cpu.to_string());
        set("ORCH_MEMORY_LIMIT", res.memory.to_string());
        if let Some(max) = res.memory_max {
            set("ORCH_MEMORY_MAX_LIMIT", max.to_string());
        }
        for p in &a.resources.ports {
            // raw_exec shares the host's network: the port to bind is the host port.
            set(&format!("ORCH_PORT_{}", p.label), p.value.to_string());
            set(&format!("ORCH_HOST_PORT_{}", p.label), p.value.to_string());
            set(&format!("ORCH_HOST_IP_{}", p.label), p.host_ip.clone());
            set(
                &format!("ORCH_ADDR_{}", p.label),
                format!("{}:{}", p.host_ip, p.value),
            );
        }
        // Job, then group, then task meta: the most specific wins.
        let mut meta = BTreeMap::new();
        if let Some(job) = &a.job {
            meta.extend(job.meta.clone());
            if let Some(g) = job.group(&a.group) {
                meta.extend(g.meta.clone());
            }
        }
        meta.extend(t.meta.clone());
        for (k, val) in meta {
            set(&format!("ORCH_META_{}", env_key(&k)), val);
        }

        let mut lookup = v.clone();
        for (k, val) in &i.node.attributes {
            lookup.insert(format!("attr.{k}"), val.clone());
        }
        for (k, val) in &i.node.meta {
            lookup.insert(format!("meta.{k}"), val.clone());
        }
        for (k, val) in [
            ("node.id", i.node.id.as_str()),
            ("node.unique.id", i.node.id.as_str()),
            ("node.name", &i.node.name),
            ("node.unique.name", &i.node.name),
            ("node.datacenter", &i.node.datacenter),
            ("node.class", &i.node.node_class),
            ("node.pool", &i.node.node_pool),
        ] {
            lookup.insert(k.to_string(), val.to_string());
        }

        let mut env = TaskEnv { vars: v, lookup };
        // The task's env may use ${...}; the ORCH_* names stay authoritative.
        for (k, val) in &t.env {
            if !env.vars.contains_key(k) {
                let val = env.interpolate(val);
                env.vars.insert(k.clone(), val);
            }
        }
        env
    }

    /// Replaces every `${name}` whose name is known; unknown ones are left as written.
    pub fn interpolate(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = after[..end].trim();
                    match self.lookup.get(name) {
                        Some(val) => out.push_str(val),
                        None => out.push_str(&rest[start..start + 2 + end + 1]),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Interpolates every string inside a driver config, recursively.
    pub fn interpolate_config(
        &self,
        config: &BTreeMap<String, serde_json::Value>,
    ) -> BTreeMap<String, serde_json::Value> {
        config
            .iter()
            .map(|(k, v)| (k.clone(), self.interpolate_value(v)))
            .collect()
    }

    fn interpolate_value(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.interpolate(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| self.interpolate_value(i)).collect())
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.interpolate_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// `rack-id` -> `RACK_ID`: a valid environment variable name.
fn env_key(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_common::mock::{task, AllocBuilder, JobBuilder, NodeBuilder, TaskBuilder};
    use serde_json::json;

    const NODE_ID: &str = "node-1-id";

    /// `t`'s environment in `alloc` on node `NODE_ID` (dc1, a linux kernel, rack r1).
    fn env_of(alloc: &Allocation, t: &Task) -> TaskEnv {
        let node = NodeBuilder::new()
            .id(NODE_ID)
            .datacenter("dc1")
            .attr("kernel.name", "linux")
            .meta("rack", "r1")
            .build();
        TaskEnv::build(&EnvInputs {
            alloc,
            task: t,
            node: &node,
            alloc_dir: Path::new("/data/alloc/a1"),
        })
    }

    /// Instance `index` of job "job1" whose group "web" runs `t`, on the node.
    fn alloc_of(t: &Task, index: u32) -> AllocBuilder {
        let job = JobBuilder::new("job1")
            .group_name("web")
            .tasks(vec![t.clone()])
            .build();
        AllocBuilder::new(&job).index(index).node_id(NODE_ID)
    }

    #[test]
    fn every_orch_variable_is_set() {
        let t = TaskBuilder::new("server", "raw_exec")
            .cpu(100)
            .memory(32)
            .build();
        let mut a = alloc_of(&t, 3).port("http", 20123, "127.0.0.1").build();
        a.resources.ports[0].to = Some(8080);
        let e = env_of(&a, &t);
        let want = [
            ("ORCH_JOB_ID", "job1".to_string()),
            ("ORCH_GROUP_NAME", "web".to_string()),
            ("ORCH_TASK_NAME", "server".to_string()),
            ("ORCH_ALLOC_ID", a.id.to_string()),
            ("ORCH_ALLOC_INDEX", "3".to_string()),
            ("ORCH_ALLOC_DIR", "/data/alloc/a1/alloc".to_string()),
            ("ORCH_TASK_DIR", "/data/alloc/a1/server/local".to_string()),
            ("ORCH_NODE_ID", NODE_ID.to_string()),
            ("ORCH_PORT_http", "20123".to_string()),
            ("ORCH_ADDR_http", "127.0.0.1:20123".to_string()),
            ("ORCH_CPU_LIMIT", "100".to_string()),
            ("ORCH_MEMORY_LIMIT", "32".to_string()),
        ];
        for (k, v) in want {
            assert_eq!(e.vars.get(k), Some(&v), "{k}");
        }
    }

    #[test]
    fn task_env_is_interpolated_and_cannot_override_orch_variables() {
        let mut t = task("server", "raw_exec");
        t.env.insert(
            "WHERE".into(),
            "${node.datacenter}/${attr.kernel.name}/${meta.rack}".into(),
        );
        t.env.insert("ORCH_ALLOC_INDEX".into(), "99".into());
        t.env
            .insert("KEEP".into(), "${unknown.thing} and $HOME".into());
        let a = alloc_of(&t, 0).build();
        let e = env_of(&a, &t);
        assert_eq!(e.vars["WHERE"], "dc1/linux/r1");
        assert_eq!(e.vars["ORCH_ALLOC_INDEX"], "0");
        assert_eq!(e.vars["KEEP"], "${unknown.thing} and $HOME");
    }

    #[test]
    fn config_strings_are_interpolated_recursively() {
        let t = task("server", "raw_exec");
        let a = alloc_of(&t, 1).port("http", 20001, "127.0.0.1").build();
        let e = env_of(&a, &t);
        let cfg = BTreeMap::from([
            ("command".to_string(), json!("/bin/httpd")),
            (
                "args".to_string(),
                json!(["-p", "${ORCH_PORT_http}", 7, {"x": "${ORCH_ALLOC_INDEX}"}]),
            ),
        ]);
        let out = e.interpolate_config(&cfg);
        assert_eq!(out["args"], json!(["-p", "20001", 7, {"x": "1"}]));
    }

    #[test]
    fn an_unterminated_reference_is_left_alone() {
        let e = TaskEnv::default();
        assert_eq!(e.interpolate("a ${b"), "a ${b");
        assert_eq!(e.interpolate("${}"), "${}");
    }

    #[test]
    fn job_group_and_task_meta_become_orch_meta_variables() {
        let mut t = task("server", "raw_exec");
        t.meta.insert("owner".into(), "task".into());
        let mut a = alloc_of(&t, 0).build();
        let job = a.job.as_mut().unwrap();
        job.meta.insert("owner".into(), "job".into());
        job.meta.insert("team-name".into(), "ops".into());
        let e = env_of(&a, &t);
        assert_eq!(e.vars["ORCH_META_OWNER"], "task");
        assert_eq!(e.vars["ORCH_META_TEAM_NAME"], "ops");
    }
}
