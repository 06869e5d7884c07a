//! Scenario tests of the job spec parser and rules: the example files, every rule, all
//! errors at once, places in the source, defaults, and properties (no input panics).

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::model::{
    CheckType, DelayFunction, HealthCheckMode, Job, JobType, ReschedulePolicy, RestartMode,
    RestartPolicy, UpdatePolicy,
};

// ---------------------------------------------------------------------- helpers

fn jobspecs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobspecs")
}

fn read_spec(name: &str) -> String {
    let path = jobspecs_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// A valid spec with room for extra lines at the top level, in the group and in the task.
fn spec(top: &str, group: &str, task: &str) -> String {
    format!(
        "id = \"t\"\n{top}\n\n[group.web]\n{group}\n\n[group.web.task.server]\ndriver = \"raw_exec\"\nconfig = {{ command = \"/bin/true\" }}\n{task}\n"
    )
}

fn ok(src: &str) -> Job {
    match parse(src) {
        Ok(job) => job,
        Err(e) => panic!("expected the spec to parse, got:\n{e}\n--- spec:\n{src}"),
    }
}

fn errors(src: &str) -> Vec<SpecError> {
    match parse(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.0,
    }
}

/// The spec fails with exactly one problem at `path`, whose message contains `words`.
fn fails_once(src: &str, path: &str, words: &str) -> SpecError {
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:#?}");
    let e = errs.into_iter().next().unwrap();
    assert_eq!(e.path, path, "{e}");
    assert!(
        e.message.contains(words),
        "message {:?} lacks {words:?}",
        e.message
    );
    e
}

/// The spec fails with (at least) a problem at `path` whose message contains `words`.
fn fails_with(src: &str, path: &str, words: &str) -> SpecError {
    let errs = errors(src);
    errs.iter()
        .find(|e| e.path == path && e.message.contains(words))
        .cloned()
        .unwrap_or_else(|| panic!("no error at {path} containing {words:?}; got: {errs:#?}"))
}

fn validate_paths(job: &Job) -> Vec<String> {
    match validate(job) {
        Ok(()) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| e.path).collect(),
    }
}

// ---------------------------------------------------------------------- the files

#[test]
fn every_spec_in_jobspecs_parses_and_validates() {
    let files = toml_files(&jobspecs_dir());
    assert!(files.len() >= 7, "found only {files:?}");
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let job = match parse(&src) {
            Ok(job) => job,
            Err(e) => panic!("{}:\n{e}", path.display()),
        };
        validate(&job).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        let stem = path.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            job.id,
            stem,
            "{}: the id should match the file name",
            path.display()
        );
    }
}

#[test]
fn every_spec_in_jobspecs_bad_is_refused_with_a_place() {
    let files = toml_files(&jobspecs_dir().join("bad"));
    assert!(files.len() >= 4, "found only {files:?}");
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let errs = parse(&src).expect_err(&path.display().to_string());
        for e in &errs {
            assert!(e.line.is_some(), "{}: {e} has no line", path.display());
        }
    }
}

#[test]
fn bad_malformed_toml_reports_the_line_and_column_toml_gives() {
    let e = fails_once(&read_spec("bad/malformed.toml"), "", "invalid TOML");
    assert_eq!((e.line, e.column), (Some(4), Some(11)));
    assert!(e.message.contains("expected `]`"), "{}", e.message);
    assert!(
        e.to_string()
            .starts_with("line 4, column 11: invalid TOML:"),
        "{e}"
    );
}

#[test]
fn bad_unknown_field_names_the_field_its_line_and_the_expected_ones() {
    let e = fails_once(
        &read_spec("bad/unknown-field.toml"),
        "group.web.task.server.resources.memroy",
        "unknown field",
    );
    assert_eq!(
        e.message,
        "unknown field `memroy`; expected one of cores, cpu, cpu_hard_limit, memory, memory_max, pids"
    );
    assert_eq!((e.line, e.column), (Some(10), Some(26)));
}

#[test]
fn bad_negative_count_says_it_must_be_non_negative() {
    let e = fails_once(&read_spec("bad/negative-count.toml"), "group.web.count", "");
    assert_eq!(e.message, "must be >= 0");
    assert_eq!((e.line, e.column), (Some(5), Some(1)));
    assert_eq!(
        e.to_string(),
        "line 5, column 1: group.web.count: must be >= 0"
    );
}

#[test]
fn bad_missing_driver_is_placed_at_the_task_header() {
    let e = fails_once(
        &read_spec("bad/missing-driver.toml"),
        "group.web.task.server.driver",
        "",
    );
    assert_eq!(e.message, "missing; one of raw_exec, container, mock");
    assert_eq!((e.line, e.column), (Some(7), Some(17)));
}

#[test]
fn hello_example_maps_every_field_and_fills_service_defaults() {
    let job = ok(&read_spec("hello.toml"));
    assert_eq!(job.id, "hello");
    assert_eq!(job.name, "hello");
    assert_eq!(job.job_type, JobType::Service);
    assert_eq!(job.datacenters, vec!["dc1"]);
    assert_eq!(job.priority, 50);
    assert_eq!(job.groups.len(), 1);
    let g = &job.groups[0];
    assert_eq!((g.name.as_str(), g.count), ("web", 2));
    assert_eq!(g.restart, RestartPolicy::default_for(JobType::Service));
    assert_eq!(
        g.reschedule,
        ReschedulePolicy::default_for(JobType::Service)
    );
    assert_eq!(g.update, None);
    let t = &g.tasks[0];
    assert_eq!((t.name.as_str(), t.driver.as_str()), ("server", "raw_exec"));
    assert_eq!(t.config["command"], serde_json::json!("/bin/sh"));
    assert_eq!(t.config["args"][0], serde_json::json!("-c"));
    assert_eq!((t.resources.cpu, t.resources.memory), (100, 32));
    assert_eq!(t.kill_timeout, Duration::from_secs(5));
    assert_eq!(t.kill_signal, "SIGTERM");
}

#[test]
fn frames_example_is_a_batch_job_with_batch_defaults() {
    let job = ok(&read_spec("frames.toml"));
    assert_eq!(job.job_type, JobType::Batch);
    assert_eq!(job.total_count(), 20);
    let g = &job.groups[0];
    assert_eq!(g.restart, RestartPolicy::default_for(JobType::Batch));
    assert_eq!(g.reschedule, ReschedulePolicy::default_for(JobType::Batch));
    assert_eq!(g.tasks[0].resources.memory, 16);
}

#[test]
fn api_example_maps_ports_services_checks_and_policies() {
    let job = ok(&read_spec("api.toml"));
    let g = &job.groups[0];
    assert_eq!(g.count, 3);
    assert_eq!(g.network.ports.len(), 1);
    assert_eq!(g.network.ports[0].label, "http");
    assert_eq!(g.network.ports[0].to, Some(8080));
    assert_eq!(g.network.ports[0].static_port, None);
    assert_eq!(
        g.restart,
        RestartPolicy {
            attempts: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
            mode: RestartMode::Fail,
        }
    );
    assert_eq!(g.reschedule.attempts, 3);
    assert_eq!(g.reschedule.delay_function, DelayFunction::Exponential);
    assert_eq!(g.reschedule.max_delay, Duration::from_secs(60));
    assert!(
        !g.reschedule.unlimited,
        "attempts given means a limited policy"
    );
    let s = &g.services[0];
    assert_eq!((s.name.as_str(), s.port.as_deref()), ("api", Some("http")));
    assert_eq!(s.tags, vec!["v1"]);
    let c = &s.checks[0];
    assert_eq!(c.check_type, CheckType::Http);
    assert_eq!(c.path.as_deref(), Some("/health"));
    assert_eq!(
        (c.interval, c.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    let u = g.update.as_ref().unwrap();
    assert_eq!(u.max_parallel, 1);
    assert_eq!(u.min_healthy_time, Duration::from_secs(2));
    assert_eq!(u.healthy_deadline, Duration::from_secs(60));
    assert!(u.auto_revert);
    assert_eq!(
        u.progress_deadline,
        UpdatePolicy::default().progress_deadline
    );
    assert_eq!(job.update.as_ref(), Some(u));
    let t = &g.tasks[0];
    assert_eq!(t.driver, "container");
    assert_eq!(t.env["MODE"], "production");
    assert_eq!(t.config["args"][2], serde_json::json!("${ORCH_PORT_http}"));
}

#[test]
fn placement_example_reads_constraints_affinities_and_spreads() {
    let job = ok(&read_spec("placement.toml"));
    assert_eq!(job.constraints[0].attribute, "${attr.kernel.name}");
    assert_eq!(job.constraints[0].operator, "=");
    assert_eq!(job.constraints[0].value, "linux");
    let g = &job.groups[0];
    assert_eq!(g.affinities[0].attribute, "${node.class}");
    assert_eq!(g.affinities[0].operator, "=");
    assert_eq!(g.affinities[0].weight, 50);
    assert_eq!(g.spreads[0].attribute, "${node.datacenter}");
    assert_eq!(g.spreads[0].weight, 50);
    assert!(g.spreads[0].targets.is_empty());
}

#[test]
fn too_big_example_parses_with_its_huge_memory() {
    let job = ok(&read_spec("too-big.toml"));
    assert_eq!(job.groups[0].tasks[0].resources.memory, 1024 * 1024);
}

#[test]
fn oom_example_is_batch_without_restarts_or_reschedules() {
    let job = ok(&read_spec("oom.toml"));
    let g = &job.groups[0];
    assert_eq!(job.job_type, JobType::Batch);
    assert_eq!(g.restart.attempts, 0);
    assert_eq!(g.reschedule.attempts, 0);
    assert!(!g.reschedule.unlimited);
    assert_eq!(g.tasks[0].resources.memory, 16);
}

// ---------------------------------------------------------------------- errors

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let src = r#"id = "bad id!"
priority = 500
colour = "red"

[group.web]
count = "two"

[group.web.task.server]
driver = "docker"
resources = { cpu = 0, memory = 2, memroy = 3 }
kill_signal = "SIGNOPE"
kill_timeout = "5 seconds"
"#;
    let errs = errors(src);
    let got: Vec<(usize, &str)> = errs
        .iter()
        .map(|e| (e.line.unwrap(), e.path.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "id"),
            (2, "priority"),
            (3, "colour"),
            (6, "group.web.count"),
            (9, "group.web.task.server.driver"),
            (10, "group.web.task.server.resources.cpu"),
            (10, "group.web.task.server.resources.memory"),
            (10, "group.web.task.server.resources.memroy"),
            (11, "group.web.task.server.kill_signal"),
            (12, "group.web.task.server.kill_timeout"),
        ],
        "{errs:#?}"
    );
}

#[test]
fn the_memory_rule_reads_exactly_as_documented() {
    let src = spec("", "", "resources = { cpu = 100, memory = 2 }");
    let e = fails_once(&src, "group.web.task.server.resources.memory", "");
    assert_eq!(
        e.to_string(),
        "line 10, column 26: group.web.task.server.resources.memory: must be at least 4 (MiB)"
    );
}

#[test]
fn a_value_that_cannot_be_read_is_reported_once() {
    // The wrong type leaves the driver unset; "missing driver" would repeat the complaint.
    let src = spec("", "", "").replace("driver = \"raw_exec\"", "driver = 5");
    fails_once(
        &src,
        "group.web.task.server.driver",
        "expected a string, found an integer",
    );
}

#[test]
fn a_string_where_a_number_goes_names_the_field_and_line() {
    let e = fails_once(
        &spec("", "count = \"3\"", ""),
        "group.web.count",
        "expected an integer, found a string",
    );
    assert_eq!(e.line, Some(5));
}

#[test]
fn unknown_fields_are_errors_at_every_level() {
    let src = r#"id = "t"
idd = 1

[update]
max_paralel = 1

[group.web]
cuont = 1

[group.web.restart]
atempts = 1

[group.web.network.port.http]
statik = 80

[[group.web.service]]
name = "web"
port = "http"
tagz = []
check = [{ type = "tcp", interval = "5s", timeout = "1s", intervall = "1s" }]

[group.web.task.server]
driver = "raw_exec"
config = { command = "/bin/true" }
logs = { max_files = 1, maxfiles = 2 }
enviroment = {}
"#;
    let paths: Vec<String> = errors(src).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        vec![
            "idd",
            "update.max_paralel",
            "group.web.cuont",
            "group.web.restart.atempts",
            "group.web.network.port.http.statik",
            "group.web.service[0].tagz",
            "group.web.service[0].check[0].intervall",
            "group.web.task.server.logs.maxfiles",
            "group.web.task.server.enviroment",
        ]
    );
}

#[test]
fn unknown_top_level_field_lists_every_expected_key() {
    let e = fails_once(
        &spec("stopp = true", "", ""),
        "stopp",
        "unknown field `stopp`",
    );
    assert_eq!(
        e.message,
        "unknown field `stopp`; expected one of affinity, constraint, datacenters, group, id, meta, name, priority, spread, type, update"
    );
}

#[test]
fn a_table_where_a_value_goes_is_a_type_error() {
    fails_once(
        &spec("", "", "resources = 5"),
        "group.web.task.server.resources",
        "expected a table, found an integer",
    );
}

#[test]
fn display_without_a_place_is_path_then_message() {
    let e = SpecError {
        path: "id".into(),
        line: None,
        column: None,
        message: "missing".into(),
    };
    assert_eq!(e.to_string(), "id: missing");
    let all = SpecErrors(vec![e.clone(), e]);
    assert_eq!(all.to_string(), "id: missing\nid: missing");
    assert_eq!(all.lines().len(), 2);
}

#[test]
fn a_missing_id_has_no_place_and_comes_first() {
    let src = spec("", "", "").replace("id = \"t\"", "") + "kill_signal = \"X\"\n";
    let errs = errors(&src);
    assert_eq!(errs[0].path, "id");
    assert_eq!(errs[0].line, None);
    assert_eq!(errs[0].to_string(), "id: missing; every job needs an id");
    assert_eq!(errs[1].path, "group.web.task.server.kill_signal");
}

// ---------------------------------------------------------------------- defaults

#[test]
fn task_defaults_fill_resources_kill_and_logs() {
    let job = ok(&spec("", "", ""));
    let t = &job.groups[0].tasks[0];
    assert_eq!(
        (t.resources.cpu, t.resources.memory, t.resources.memory_max),
        (100, 300, None)
    );
    assert_eq!(t.kill_timeout, Duration::from_secs(5));
    assert_eq!(t.kill_signal, "SIGTERM");
    assert_eq!((t.logs.max_files, t.logs.max_file_size), (10, 10));
    assert_eq!(t.user, None);
}

#[test]
fn job_defaults_fill_name_type_datacenters_priority_and_count() {
    let job = ok(&spec("", "", ""));
    assert_eq!(job.name, "t");
    assert_eq!(job.job_type, JobType::Service);
    assert_eq!(job.datacenters, vec!["dc1"]);
    assert_eq!(job.priority, 50);
    assert_eq!(job.groups[0].count, 1);
}

#[test]
fn partial_resources_keep_the_default_for_the_rest() {
    let job = ok(&spec("", "", "resources = { memory = 64 }"));
    let r = job.groups[0].tasks[0].resources;
    assert_eq!((r.cpu, r.memory), (100, 64));
}

#[test]
fn a_partial_restart_table_keeps_the_job_type_defaults() {
    let job = ok(&spec(
        "type = \"batch\"",
        "[group.web.restart]\nattempts = 1",
        "",
    ));
    let r = &job.groups[0].restart;
    let d = RestartPolicy::default_for(JobType::Batch);
    assert_eq!(r.attempts, 1);
    assert_eq!((r.interval, r.delay, r.mode), (d.interval, d.delay, d.mode));
}

#[test]
fn a_service_reschedule_with_only_a_delay_stays_unlimited() {
    let job = ok(&spec("", "[group.web.reschedule]\ndelay = \"10s\"", ""));
    let r = &job.groups[0].reschedule;
    assert!(r.unlimited);
    assert_eq!(r.delay, Duration::from_secs(10));
    assert_eq!(r.delay_function, DelayFunction::Exponential);
}

#[test]
fn group_update_is_the_job_update_overridden_by_the_group() {
    let job = ok(&spec(
        "[update]\nmax_parallel = 2\ncanary = 1\nauto_revert = true",
        "[group.web.update]\nmax_parallel = 3\nhealth_check = \"task_states\"",
        "",
    ));
    let u = job.groups[0].update.as_ref().unwrap();
    assert_eq!(u.max_parallel, 3, "the group wins");
    assert_eq!(u.canary, 1, "inherited from the job");
    assert!(u.auto_revert);
    assert_eq!(u.health_check, HealthCheckMode::TaskStates);
    assert_eq!(u.min_healthy_time, UpdatePolicy::default().min_healthy_time);
    assert_eq!(job.update.as_ref().unwrap().max_parallel, 2);
}

#[test]
fn batch_groups_do_not_inherit_an_update_policy() {
    let job = ok(&spec(
        "type = \"batch\"\n[update]\nmax_parallel = 2",
        "",
        "",
    ));
    assert_eq!(job.groups[0].update, None);
}

#[test]
fn groups_and_tasks_are_ordered_by_name() {
    let src = r#"id = "order"
[group.zeta.task.b]
driver = "mock"
[group.zeta.task.a]
driver = "mock"
[group.alpha.task.only]
driver = "mock"
"#;
    let job = ok(src);
    let groups: Vec<&str> = job.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, vec!["alpha", "zeta"]);
    let tasks: Vec<&str> = job.groups[1]
        .tasks
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(tasks, vec!["a", "b"]);
}

#[test]
fn env_and_meta_take_numbers_as_text() {
    let job = ok(&spec(
        "meta = { version = 2 }",
        "",
        "env = { PORT = 8080, DEBUG = true }",
    ));
    assert_eq!(job.meta["version"], "2");
    assert_eq!(job.groups[0].tasks[0].env["PORT"], "8080");
    assert_eq!(job.groups[0].tasks[0].env["DEBUG"], "true");
}

#[test]
fn a_check_restart_and_disconnect_and_migrate_are_read() {
    let job = ok(&spec(
        "",
        "disconnect = { lost_after = \"1m\", replace = true }\n[group.web.migrate]\nmax_parallel = 2\n[group.web.network.port.db]\nstatic = 5432\n[[group.web.service]]\nname = \"db\"\nport = \"db\"\ncheck = [{ type = \"tcp\", interval = \"10s\", timeout = \"2s\", check_restart = { limit = 3 } }]",
        "",
    ));
    let g = &job.groups[0];
    let d = g.disconnect.as_ref().unwrap();
    assert_eq!(
        (d.lost_after, d.replace),
        (Some(Duration::from_secs(60)), true)
    );
    let m = g.migrate.as_ref().unwrap();
    assert_eq!(
        (m.max_parallel, m.healthy_deadline),
        (2, Duration::from_secs(300))
    );
    assert_eq!(g.network.ports[0].static_port, Some(5432));
    let cr = g.services[0].checks[0].check_restart.as_ref().unwrap();
    assert_eq!((cr.limit, cr.grace), (3, Duration::from_secs(1)));
}

// ---------------------------------------------------------------------- job rules

#[test]
fn id_may_only_hold_safe_characters() {
    fails_once(
        &spec("", "", "").replace("id = \"t\"", "id = \"a/b\""),
        "id",
        "may only contain",
    );
}

#[test]
fn id_is_at_most_128_characters() {
    let long = "x".repeat(129);
    fails_once(
        &spec("", "", "").replace("id = \"t\"", &format!("id = \"{long}\"")),
        "id",
        "at most 128",
    );
}

#[test]
fn priority_must_be_between_1_and_100() {
    for p in ["0", "101", "300", "-1"] {
        let e = fails_once(&spec(&format!("priority = {p}"), "", ""), "priority", "");
        assert_eq!(e.message, "must be between 1 and 100", "priority {p}");
    }
}

#[test]
fn datacenters_must_not_be_empty() {
    fails_once(
        &spec("datacenters = []", "", ""),
        "datacenters",
        "at least one",
    );
}

#[test]
fn unknown_job_type_lists_the_types() {
    fails_once(
        &spec("type = \"cron\"", "", ""),
        "type",
        "expected one of service, batch, system, sysbatch",
    );
}

#[test]
fn a_job_needs_a_group() {
    fails_once("id = \"empty\"\n", "group", "at least one group");
}

#[test]
fn a_group_needs_a_task() {
    let e = fails_once(
        "id = \"x\"\n[group.web]\ncount = 1\n",
        "group.web",
        "at least one task",
    );
    assert_eq!(e.line, Some(2));
}

#[test]
fn system_jobs_run_at_most_one_per_node_and_have_no_affinities() {
    fails_once(
        &spec("type = \"system\"", "count = 2", ""),
        "group.web.count",
        "0 or 1",
    );
    fails_once(
        &spec(
            "type = \"system\"",
            "[[group.web.affinity]]\nattribute = \"${node.class}\"\nvalue = \"a\"",
            "",
        ),
        "group.web.affinity[0]",
        "cannot have affinities",
    );
}

// ---------------------------------------------------------------------- task rules

#[test]
fn unknown_driver_lists_the_drivers() {
    let e = fails_once(
        &spec("", "", "").replace("\"raw_exec\"", "\"docker\""),
        "group.web.task.server.driver",
        "",
    );
    assert_eq!(
        e.message,
        "unknown driver \"docker\"; one of raw_exec, container, mock"
    );
}

#[test]
fn raw_exec_needs_a_command() {
    let src = spec("", "", "").replace(
        "config = { command = \"/bin/true\" }",
        "config = { args = [] }",
    );
    fails_once(&src, "group.web.task.server.config.command", "missing");
}

#[test]
fn raw_exec_args_must_be_strings() {
    let src = spec("", "", "").replace(
        "config = { command = \"/bin/true\" }",
        "config = { command = \"/bin/echo\", args = [\"a\", 2] }",
    );
    let e = fails_once(
        &src,
        "group.web.task.server.config.args[1]",
        "expected a string",
    );
    assert_eq!(e.line, Some(9));
}

#[test]
fn raw_exec_config_typos_are_unknown_fields() {
    let src = spec("", "", "").replace(
        "config = { command = \"/bin/true\" }",
        "config = { command = \"/bin/true\", arg = [] }",
    );
    fails_once(
        &src,
        "group.web.task.server.config.arg",
        "unknown field `arg`",
    );
}

#[test]
fn container_needs_a_rootfs_or_an_image() {
    let src = spec("", "", "").replace(
        "driver = \"raw_exec\"\nconfig = { command = \"/bin/true\" }",
        "driver = \"container\"\nconfig = { command = \"/bin/true\" }",
    );
    fails_once(&src, "group.web.task.server.config", "`rootfs`");
}

#[test]
fn container_config_keys_are_typed() {
    let container = |config: &str| {
        spec("", "", "").replace(
            "driver = \"raw_exec\"\nconfig = { command = \"/bin/true\" }",
            &format!("driver = \"container\"\nconfig = {config}"),
        )
    };
    ok(&container(
        "{ rootfs = \"/r\", command = \"/bin/httpd\", args = [\"-f\"], volumes = [\"/srv/data:/data:ro\"], cap_add = [\"NET_ADMIN\"], cap_drop = [\"ALL\"], network_mode = \"none\", seccomp = \"unconfined\" }",
    ));
    fails_once(
        &container("{ rootfs = \"/r\", command = \"/x\", seccomp = \"off\" }"),
        "group.web.task.server.config.seccomp",
        "\"default\" or \"unconfined\"",
    );
    fails_once(
        &container("{ rootfs = \"/r\", command = \"/x\", volumes = [\"data:/data\"] }"),
        "group.web.task.server.config.volumes[0]",
        "/host/path:/container/path",
    );
    fails_once(
        &container("{ rootfs = \"/r\", command = \"/x\", network_mode = \"bridge\" }"),
        "group.web.task.server.config.network_mode",
        "\"host\" or \"none\"",
    );
    // A directory has no command of its own; an image may (Entrypoint/Cmd).
    fails_once(
        &container("{ rootfs = \"/r\" }"),
        "group.web.task.server.config.command",
        "needs a command",
    );
    assert!(parse(&container("{ image = \"/i.tar\" }")).is_ok());
}

#[test]
fn the_mock_driver_takes_its_own_knobs() {
    let mock = |config: &str| {
        spec("", "", "").replace(
            "driver = \"raw_exec\"\nconfig = { command = \"/bin/true\" }",
            &format!("driver = \"mock\"\nconfig = {config}"),
        )
    };
    ok(&mock(
        "{ run_for = \"1s\", exit_code = 3, oom_killed = true }",
    ));
    fails_once(
        &mock("{ run_for = 1 }"),
        "group.web.task.server.config.run_for",
        "expected a duration string",
    );
    fails_once(
        &mock("{ runfor = \"1s\" }"),
        "group.web.task.server.config.runfor",
        "unknown field `runfor` for the mock driver",
    );
}

#[test]
fn cpu_must_be_at_least_1() {
    fails_once(
        &spec("", "", "resources = { cpu = 0 }"),
        "group.web.task.server.resources.cpu",
        "at least 1 (MHz)",
    );
}

#[test]
fn negative_memory_gets_the_memory_rule_message() {
    let e = fails_once(
        &spec("", "", "resources = { memory = -5 }"),
        "group.web.task.server.resources.memory",
        "",
    );
    assert_eq!(e.message, "must be at least 4 (MiB)");
}

#[test]
fn memory_max_must_not_be_below_memory() {
    fails_once(
        &spec("", "", "resources = { memory = 64, memory_max = 32 }"),
        "group.web.task.server.resources.memory_max",
        "at least memory (64 MiB)",
    );
}

#[test]
fn cpu_hard_limit_cores_and_pids_are_read() {
    let job = ok(&spec(
        "",
        "",
        "resources = { cpu = 2000, memory = 64, cpu_hard_limit = true, cores = 2, pids = 100 }",
    ));
    let r = job.groups[0].tasks[0].resources;
    assert!(r.cpu_hard_limit);
    assert_eq!((r.cores, r.pids), (Some(2), Some(100)));
    let plain = ok(&spec("", "", "")).groups[0].tasks[0].resources;
    assert!(!plain.cpu_hard_limit);
    assert_eq!((plain.cores, plain.pids), (None, None));
}

#[test]
fn zero_cores_or_pids_are_refused() {
    fails_once(
        &spec("", "", "resources = { cores = 0 }"),
        "group.web.task.server.resources.cores",
        "at least 1",
    );
    fails_once(
        &spec("", "", "resources = { pids = 0 }"),
        "group.web.task.server.resources.pids",
        "at least 1",
    );
}

#[test]
fn kill_signal_must_be_a_known_signal() {
    fails_once(
        &spec("", "", "kill_signal = \"TERM\""),
        "group.web.task.server.kill_signal",
        "unknown signal",
    );
    ok(&spec("", "", "kill_signal = \"SIGINT\""));
}

#[test]
fn durations_must_parse() {
    fails_once(
        &spec("", "", "kill_timeout = \"5\""),
        "group.web.task.server.kill_timeout",
        "invalid duration",
    );
    fails_once(
        &spec("", "", "kill_timeout = 5"),
        "group.web.task.server.kill_timeout",
        "expected a duration string",
    );
}

#[test]
fn log_rotation_needs_at_least_one_file() {
    fails_once(
        &spec("", "", "logs = { max_files = 0 }"),
        "group.web.task.server.logs.max_files",
        "at least 1",
    );
}

#[test]
fn env_names_cannot_hold_an_equals_sign() {
    fails_once(
        &spec("", "", "env = { \"A=B\" = \"x\" }"),
        "group.web.task.server.env",
        "not a valid variable name",
    );
}

#[test]
fn task_names_must_be_safe_for_directories() {
    let src = spec("", "", "").replace("[group.web.task.server]", "[group.web.task.\"../etc\"]");
    fails_once(&src, "group.web.task.../etc", "may only contain");
}

// ---------------------------------------------------------------------- group rules

#[test]
fn restart_mode_must_be_fail_or_delay() {
    fails_once(
        &spec("", "[group.web.restart]\nmode = \"retry\"", ""),
        "group.web.restart.mode",
        "expected one of fail, delay",
    );
}

#[test]
fn restart_attempts_must_fit_in_the_interval() {
    fails_once(
        &spec(
            "",
            "[group.web.restart]\nattempts = 10\ndelay = \"1m\"\ninterval = \"5m\"",
            "",
        ),
        "group.web.restart",
        "cannot fit in an interval of 5m",
    );
}

#[test]
fn reschedule_delay_function_must_be_known() {
    fails_once(
        &spec(
            "",
            "[group.web.reschedule]\ndelay_function = \"linear\"",
            "",
        ),
        "group.web.reschedule.delay_function",
        "constant, exponential, fibonacci",
    );
}

#[test]
fn reschedule_max_delay_must_cover_the_delay() {
    fails_once(
        &spec(
            "",
            "[group.web.reschedule]\ndelay = \"2m\"\nmax_delay = \"1m\"",
            "",
        ),
        "group.web.reschedule.max_delay",
        "at least delay (2m)",
    );
}

#[test]
fn port_labels_are_letters_digits_and_underscores() {
    fails_once(
        &spec("", "[group.web.network.port.\"my-port\"]", ""),
        "group.web.network.port.my-port",
        "may only contain letters, digits and `_`",
    );
}

#[test]
fn static_ports_are_between_1_and_65535() {
    for p in ["0", "70000", "-1"] {
        let e = fails_once(
            &spec(
                "",
                &format!("[group.web.network.port.http]\nstatic = {p}"),
                "",
            ),
            "group.web.network.port.http.static",
            "",
        );
        assert_eq!(e.message, "must be between 1 and 65535", "static {p}");
    }
}

#[test]
fn two_labels_cannot_pin_the_same_static_port() {
    fails_with(
        &spec(
            "",
            "[group.web.network.port.a]\nstatic = 8080\n[group.web.network.port.b]\nstatic = 8080",
            "",
        ),
        "group.web.network.port.b.static",
        "used by another label",
    );
}

#[test]
fn network_mode_must_be_known() {
    fails_once(
        &spec("", "[group.web.network]\nmode = \"overlay\"", ""),
        "group.web.network.mode",
        "host, bridge, none",
    );
}

#[test]
fn a_service_port_must_name_a_defined_label() {
    let e = fails_once(
        &spec(
            "",
            "[group.web.network.port.http]\n[[group.web.service]]\nname = \"web\"\nport = \"htp\"",
            "",
        ),
        "group.web.service[0].port",
        "",
    );
    assert_eq!(e.message, "unknown port label \"htp\"; defined: http");
}

#[test]
fn check_type_must_be_http_tcp_or_script() {
    fails_once(
        &spec(
            "",
            "[[group.web.service]]\nname = \"web\"\ncheck = [{ type = \"grpc\", command = \"x\", interval = \"5s\", timeout = \"1s\" }]",
            "",
        ),
        "group.web.service[0].check[0].type",
        "expected one of http, tcp, script",
    );
}

#[test]
fn an_http_check_needs_a_path() {
    fails_once(
        &spec(
            "",
            "[group.web.network.port.http]\n[[group.web.service]]\nname = \"web\"\nport = \"http\"\ncheck = [{ type = \"http\", interval = \"5s\", timeout = \"1s\" }]",
            "",
        ),
        "group.web.service[0].check[0].path",
        "http checks need a path",
    );
}

#[test]
fn a_script_check_needs_a_command() {
    fails_once(
        &spec(
            "",
            "[[group.web.service]]\nname = \"web\"\ncheck = [{ type = \"script\", interval = \"5s\", timeout = \"1s\" }]",
            "",
        ),
        "group.web.service[0].check[0].command",
        "script checks need a command",
    );
}

#[test]
fn a_tcp_check_needs_a_port() {
    fails_once(
        &spec(
            "",
            "[[group.web.service]]\nname = \"web\"\ncheck = [{ type = \"tcp\", interval = \"5s\", timeout = \"1s\" }]",
            "",
        ),
        "group.web.service[0].check[0]",
        "need a port",
    );
}

#[test]
fn check_interval_is_at_least_a_second_and_timeout_positive() {
    let src = spec(
        "",
        "[group.web.network.port.http]\n[[group.web.service]]\nname = \"web\"\nport = \"http\"\ncheck = [{ type = \"tcp\", interval = \"500ms\", timeout = \"0s\" }]",
        "",
    );
    let errs = errors(&src);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "group.web.service[0].check[0].interval",
            "group.web.service[0].check[0].timeout"
        ]
    );
    assert_eq!(errs[0].message, "must be at least 1s");
}

#[test]
fn check_interval_and_timeout_are_required() {
    let src = spec(
        "",
        "[group.web.network.port.http]\n[[group.web.service]]\nname = \"web\"\nport = \"http\"\ncheck = [{ type = \"tcp\" }]",
        "",
    );
    let paths: Vec<String> = errors(&src).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        vec![
            "group.web.service[0].check[0].interval",
            "group.web.service[0].check[0].timeout"
        ]
    );
}

#[test]
fn update_max_parallel_must_be_at_least_one() {
    fails_once(
        &spec("[update]\nmax_parallel = 0", "", ""),
        "update.max_parallel",
        "at least 1",
    );
}

#[test]
fn update_min_healthy_time_must_be_below_the_deadline() {
    fails_once(
        &spec(
            "[update]\nmin_healthy_time = \"5m\"\nhealthy_deadline = \"1m\"",
            "",
            "",
        ),
        "update.min_healthy_time",
        "less than healthy_deadline (1m)",
    );
}

// ---------------------------------------------------------------------- placement rules

#[test]
fn constraint_operators_must_be_known() {
    let e = fails_once(
        &spec(
            "[[constraint]]\nattribute = \"${attr.x}\"\noperator = \"~\"\nvalue = \"1\"",
            "",
            "",
        ),
        "constraint[0].operator",
        "unknown operator \"~\"",
    );
    assert_eq!(e.line, Some(4));
}

#[test]
fn constraint_attribute_must_be_an_interpolation() {
    fails_once(
        &spec(
            "[[constraint]]\nattribute = \"kernel.name\"\nvalue = \"linux\"",
            "",
            "",
        ),
        "constraint[0].attribute",
        "not a node attribute",
    );
}

#[test]
fn distinct_hosts_needs_no_attribute() {
    ok(&spec(
        "",
        "[[group.web.constraint]]\noperator = \"distinct_hosts\"\nvalue = true",
        "",
    ));
}

#[test]
fn a_regexp_constraint_must_compile() {
    fails_once(
        &spec(
            "",
            "[[group.web.constraint]]\nattribute = \"${attr.os.name}\"\noperator = \"regexp\"\nvalue = \"(deb\"",
            "",
        ),
        "group.web.constraint[0].value",
        "invalid regular expression",
    );
}

#[test]
fn comparisons_need_a_value() {
    fails_once(
        &spec(
            "[[constraint]]\nattribute = \"${attr.cpu.numcores}\"\noperator = \">=\"",
            "",
            "",
        ),
        "constraint[0].value",
        "needs a value",
    );
}

#[test]
fn affinity_weight_is_between_minus_100_and_100_and_not_zero() {
    for w in ["0", "101", "-101", "1000"] {
        fails_once(
            &spec(
                "",
                &format!("[[group.web.affinity]]\nattribute = \"${{node.class}}\"\nvalue = \"a\"\nweight = {w}"),
                "",
            ),
            "group.web.affinity[0].weight",
            "between -100 and 100",
        );
    }
    ok(&spec(
        "",
        "[[group.web.affinity]]\nattribute = \"${node.class}\"\nvalue = \"a\"\nweight = -100",
        "",
    ));
}

#[test]
fn spread_weight_is_between_0_and_100() {
    for w in ["101", "-1"] {
        fails_once(
            &spec(
                "",
                &format!(
                    "[[group.web.spread]]\nattribute = \"${{node.datacenter}}\"\nweight = {w}"
                ),
                "",
            ),
            "group.web.spread[0].weight",
            "between 0 and 100",
        );
    }
}

#[test]
fn spread_target_percents_may_not_exceed_100() {
    fails_once(
        &spec(
            "",
            "[[group.web.spread]]\nattribute = \"${node.datacenter}\"\ntarget = [{ value = \"dc1\", percent = 70 }, { value = \"dc2\", percent = 40 }]",
            "",
        ),
        "group.web.spread[0].target",
        "add up to 110",
    );
}

// ---------------------------------------------------------------------- JSON jobs

#[test]
fn the_examples_validate_after_a_json_round_trip() {
    for name in ["hello.toml", "frames.toml", "api.toml", "placement.toml"] {
        let job = ok(&read_spec(name));
        let json = serde_json::to_string(&job).unwrap();
        let back: Job = serde_json::from_str(&json).unwrap();
        assert_eq!(back, job, "{name}");
        validate(&back).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn validate_reports_paths_without_places() {
    let mut job = ok(&read_spec("hello.toml"));
    job.groups[0].tasks[0].resources.memory = 1;
    job.priority = 0;
    let errs = validate(&job).unwrap_err();
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            "priority: must be between 1 and 100",
            "group.web.task.server.resources.memory: must be at least 4 (MiB)",
        ]
    );
}

#[test]
fn validate_refuses_duplicate_group_task_and_port_names() {
    let mut job = ok(&read_spec("api.toml"));
    let group = job.groups[0].clone();
    job.groups.push(group);
    let task = job.groups[0].tasks[0].clone();
    job.groups[0].tasks.push(task);
    let port = job.groups[0].network.ports[0].clone();
    job.groups[0].network.ports.push(port);
    let paths = validate_paths(&job);
    assert!(paths.contains(&"group.api".to_string()), "{paths:?}");
    assert!(
        paths.contains(&"group.api.task.app".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"group.api.network.port.http".to_string()),
        "{paths:?}"
    );
}

#[test]
fn validate_checks_driver_config_of_json_jobs() {
    let mut job = ok(&read_spec("hello.toml"));
    job.groups[0].tasks[0].config.remove("command");
    job.groups[0].tasks[0].driver = String::new();
    assert_eq!(
        validate_paths(&job),
        vec!["group.web.task.server.driver"],
        "an unset driver has no config rules to apply"
    );
    job.groups[0].tasks[0].driver = "raw_exec".into();
    assert_eq!(
        validate_paths(&job),
        vec!["group.web.task.server.config.command"]
    );
}

#[test]
fn canonicalize_fills_the_name_and_inherits_update_for_services() {
    let mut job = ok(&read_spec("api.toml"));
    job.name.clear();
    job.groups[0].update = None;
    canonicalize(&mut job);
    assert_eq!(job.name, "api");
    assert_eq!(job.groups[0].update, job.update);
    job.job_type = JobType::Batch;
    canonicalize(&mut job);
    assert_eq!(job.groups[0].update, None);
}

// ---------------------------------------------------------------------- properties

fn arb_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..10_000_000).prop_map(Duration::from_millis)
    ]
}

fn arb_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("${attr.kernel.name}".to_string()),
        Just("raw_exec".to_string()),
        Just("container".to_string()),
        Just("regexp".to_string()),
        Just("distinct_hosts".to_string()),
        Just("SIGTERM".to_string()),
        "[ -~]{0,12}",
        ".{0,8}",
    ]
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        arb_word().prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        proptest::collection::vec(arb_word(), 0..3).prop_map(|v| serde_json::json!(v)),
        Just(serde_json::json!([1, null, {"a": 1}])),
    ]
}

prop_compose! {
    fn arb_job()(
        base in prop_oneof![Just("hello.toml"), Just("api.toml"), Just("placement.toml")],
        words in proptest::collection::vec(arb_word(), 16),
        numbers in proptest::collection::vec(any::<u64>(), 12),
        durations in proptest::collection::vec(arb_duration(), 10),
        config in proptest::collection::btree_map(
            prop_oneof![Just("command".to_string()), Just("args".to_string()), Just("rootfs".to_string()), arb_word()],
            arb_json(),
            0..4,
        ),
        job_type in prop_oneof![Just(JobType::Service), Just(JobType::Batch), Just(JobType::System), Just(JobType::Sysbatch)],
        drop_groups in any::<bool>(),
        drop_tasks in any::<bool>(),
    ) -> Job {
        let mut job = parse(&read_spec(base)).unwrap();
        job.id = words[0].clone().into();
        job.job_type = job_type;
        job.priority = numbers[0] as u8;
        job.datacenters = vec![words[1].clone()];
        job.constraints.push(crate::model::Constraint {
            attribute: words[2].clone(),
            operator: words[3].clone(),
            value: words[4].clone(),
        });
        job.affinities.push(crate::model::Affinity {
            attribute: words[5].clone(),
            operator: words[6].clone(),
            value: words[7].clone(),
            weight: numbers[1] as i8,
        });
        job.spreads.push(crate::model::Spread {
            attribute: words[8].clone(),
            weight: numbers[2] as u8,
            targets: vec![
                crate::model::SpreadTarget { value: words[9].clone(), percent: numbers[3] as u8 },
                crate::model::SpreadTarget { value: words[9].clone(), percent: numbers[4] as u8 },
            ],
        });
        job.update = Some(UpdatePolicy {
            max_parallel: numbers[5] as u32,
            min_healthy_time: durations[0],
            healthy_deadline: durations[1],
            progress_deadline: durations[2],
            ..UpdatePolicy::default()
        });
        for g in &mut job.groups {
            g.name = words[10].clone();
            g.count = numbers[6] as u32;
            g.restart.attempts = numbers[7] as u32;
            g.restart.delay = durations[3];
            g.restart.interval = durations[4];
            g.reschedule.delay = durations[5];
            g.reschedule.max_delay = durations[6];
            g.reschedule.unlimited = numbers[8] % 2 == 0;
            for p in &mut g.network.ports {
                p.static_port = Some(numbers[9] as u16);
                p.label = words[11].clone();
            }
            for s in &mut g.services {
                s.port = Some(words[12].clone());
                for c in &mut s.checks {
                    c.interval = durations[7];
                    c.timeout = durations[8];
                    c.path = None;
                }
            }
            for t in &mut g.tasks {
                t.name = words[13].clone();
                t.driver = words[14].clone();
                t.config = config.clone();
                t.kill_signal = words[15].clone();
                t.resources.cpu = numbers[10];
                t.resources.memory = numbers[11];
                t.resources.memory_max = Some(numbers[10]);
                t.kill_timeout = durations[9];
            }
            if drop_tasks {
                g.tasks.clear();
            }
        }
        if drop_groups {
            job.groups.clear();
        }
        job
    }
}

proptest! {
    #[test]
    fn validate_never_panics(job in arb_job()) {
        let _ = validate(&job);
    }

    #[test]
    fn parse_never_panics_on_any_text(src in ".{0,200}") {
        let _ = parse(&src);
    }

    #[test]
    fn parse_never_panics_on_a_mangled_example(
        base in prop_oneof![Just("hello.toml"), Just("api.toml"), Just("placement.toml"), Just("oom.toml")],
        cut in any::<prop::sample::Index>(),
        insert in "[ -~\n]{0,10}",
    ) {
        let src = read_spec(base);
        let mut at = cut.index(src.len() + 1);
        while !src.is_char_boundary(at) { at -= 1; }
        let mangled = format!("{}{}{}", &src[..at], insert, &src[at..]);
        if let Err(errs) = parse(&mangled) {
            prop_assert!(!errs.is_empty());
        }
    }

    #[test]
    fn a_job_that_parses_also_validates(
        base in prop_oneof![Just("hello.toml"), Just("api.toml"), Just("countdown.toml")],
        memory in -10i64..100,
        count in -3i64..5,
    ) {
        let src = regex::Regex::new(r"memory = \d+").unwrap()
            .replace(&read_spec(base), format!("memory = {memory}").as_str())
            .to_string();
        let src = regex::Regex::new(r"count = \d+").unwrap()
            .replace(&src, format!("count = {count}").as_str())
            .to_string();
        match parse(&src) {
            Ok(job) => {
                prop_assert!(validate(&job).is_ok());
                prop_assert!(memory >= 4 && count >= 0);
            }
            Err(errs) => prop_assert!(memory < 4 || count < 0, "{}", errs),
        }
    }
}

#[test]
fn affinities_take_comparison_operators_but_not_presence_or_distinctness() {
    let affinity = |op: &str| {
        spec(
            "",
            &format!("[[group.web.affinity]]\nattribute = \"${{meta.tags}}\"\noperator = \"{op}\"\nvalue = \"a\""),
            "",
        )
    };
    ok(&affinity("set_contains_any"));
    ok(&affinity("regexp"));
    for op in [
        "is_set",
        "is_not_set",
        "distinct_hosts",
        "distinct_property",
    ] {
        fails_once(
            &affinity(op),
            "group.web.affinity[0].operator",
            "unknown operator",
        );
    }
}

#[test]
fn shutdown_delay_is_a_group_duration_defaulting_to_zero() {
    let job = ok(&spec("", "shutdown_delay = \"5s\"", ""));
    assert_eq!(job.groups[0].shutdown_delay, Duration::from_secs(5));
    assert_eq!(
        ok(&spec("", "", "")).groups[0].shutdown_delay,
        Duration::ZERO
    );
    fails_once(
        &spec("", "shutdown_delay = \"5\"", ""),
        "group.web.shutdown_delay",
        "invalid duration",
    );
    fails_once(
        &spec("", "shutdown_delay = 5", ""),
        "group.web.shutdown_delay",
        "expected a duration string",
    );
    // A group key, not a task one.
    fails_with(
        &spec("", "", "shutdown_delay = \"5s\""),
        "group.web.task.server.shutdown_delay",
        "",
    );
}

// ---------------------------------------------------------------------- bounds
// "A request cannot take a server down": every number and duration a user gives has a
// bound, refused with the field's place rather than overflowing later.

#[test]
fn a_count_above_the_limit_is_refused_at_its_line() {
    let e = fails_once(
        &spec("", "count = 10001", ""),
        "group.web.count",
        "must be at most 10000",
    );
    assert!(e.line.is_some(), "{e}");
    assert_eq!(ok(&spec("", "count = 10000", "")).groups[0].count, 10_000);
}

#[test]
fn resources_beyond_any_machine_are_refused_at_their_line() {
    let huge = "resources = { cpu = 100, memory = 9223372036854775807 }";
    let e = fails_once(
        &spec("", "", huge),
        "group.web.task.server.resources.memory",
        "must be at most",
    );
    assert!(e.line.is_some(), "{e}");
    fails_with(
        &spec(
            "",
            "",
            "resources = { memory = 300, memory_max = 9223372036854775807 }",
        ),
        "group.web.task.server.resources.memory_max",
        "must be at most",
    );
    fails_once(
        &spec("", "", "resources = { cpu = 9223372036854775807 }"),
        "group.web.task.server.resources.cpu",
        "must be at most",
    );
    fails_once(
        &spec("", "", "resources = { pids = 9223372036854775807 }"),
        "group.web.task.server.resources.pids",
        "must be at most",
    );
    fails_once(
        &spec("", "", "resources = { cores = 4000000000 }"),
        "group.web.task.server.resources.cores",
        "must be at most",
    );
}

#[test]
fn reschedule_attempts_above_the_limit_are_refused_at_their_line() {
    let e = fails_once(
        &spec("", "reschedule = { attempts = 101, interval = \"1h\" }", ""),
        "group.web.reschedule.attempts",
        "must be at most 100",
    );
    assert!(e.line.is_some(), "{e}");
    let fine = ok(&spec(
        "",
        "reschedule = { attempts = 100, interval = \"1h\" }",
        "",
    ));
    assert_eq!(fine.groups[0].reschedule.attempts, 100);
    let mut json = fine.clone();
    json.groups[0].reschedule.attempts = 5000;
    let errs = crate::jobspec::validate(&json).unwrap_err();
    assert_eq!(errs.0[0].path, "group.web.reschedule.attempts", "{errs:?}");
}

#[test]
fn a_huge_lost_after_is_refused_at_its_line() {
    let e = fails_once(
        &spec("", "disconnect = { lost_after = \"200000000000000d\" }", ""),
        "group.web.disconnect.lost_after",
        "must be at most",
    );
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn a_duration_too_large_to_represent_is_an_error_not_a_panic() {
    let errs = errors(&spec(
        "",
        "shutdown_delay = \"99999999999999999999999999h\"",
        "",
    ));
    assert_eq!(errs[0].path, "group.web.shutdown_delay", "{errs:#?}");
    assert!(errs[0].line.is_some());
}

#[test]
fn every_duration_field_has_an_upper_bound() {
    let big = "\"4000d\"";
    let cases: &[(&str, &str, &str, &str)] = &[
        ("", &format!("restart = {{ interval = {big}, delay = \"1s\" }}"), "", "group.web.restart.interval"),
        ("", &format!("restart = {{ interval = {big}, delay = {big}, attempts = 1 }}"), "", "group.web.restart.delay"),
        ("", &format!("reschedule = {{ interval = {big} }}"), "", "group.web.reschedule.interval"),
        ("", &format!("reschedule = {{ delay = {big}, max_delay = {big} }}"), "", "group.web.reschedule.delay"),
        ("", &format!("reschedule = {{ max_delay = {big} }}"), "", "group.web.reschedule.max_delay"),
        (&format!("update = {{ progress_deadline = {big} }}"), "", "", "update.progress_deadline"),
        (&format!("update = {{ healthy_deadline = \"3999d\", progress_deadline = \"0s\", min_healthy_time = {big} }}"), "", "", "update.min_healthy_time"),
        (&format!("update = {{ stagger = {big} }}"), "", "", "update.stagger"),
        ("", &format!("migrate = {{ healthy_deadline = {big} }}"), "", "group.web.migrate.healthy_deadline"),
        ("", &format!("shutdown_delay = {big}"), "", "group.web.shutdown_delay"),
        ("", "", &format!("kill_timeout = {big}"), "group.web.task.server.kill_timeout"),
    ];
    for (top, group, task, path) in cases {
        let e = fails_with(&spec(top, group, task), path, "must be at most");
        assert!(e.line.is_some(), "{e}");
    }
}

#[test]
fn a_check_interval_and_timeout_have_an_upper_bound() {
    let src = "id = \"t\"\n[group.web]\n[group.web.network.port.http]\n\
        [[group.web.service]]\nname = \"web\"\nport = \"http\"\n\
        [[group.web.service.check]]\ntype = \"tcp\"\ninterval = \"4000d\"\ntimeout = \"4000d\"\n\
        check_restart = { grace = \"4000d\" }\n\
        [group.web.task.server]\ndriver = \"raw_exec\"\nconfig = { command = \"/bin/true\" }\n";
    for field in ["interval", "timeout", "check_restart.grace"] {
        let e = fails_with(
            src,
            &format!("group.web.service[0].check[0].{field}"),
            "must be at most",
        );
        assert!(e.line.is_some(), "{e}");
    }
}

#[test]
fn json_jobs_get_the_same_bounds() {
    let mut job = ok(&spec("", "", ""));
    job.groups[0].count = 10_001;
    job.groups[0].tasks[0].resources.memory = u64::MAX / 2;
    job.groups[0].restart.interval = Duration::MAX;
    let paths = validate_paths(&job);
    for want in [
        "group.web.count",
        "group.web.task.server.resources.memory",
        "group.web.restart.interval",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
}

#[test]
fn max_parallel_and_canary_have_the_count_bound() {
    fails_once(
        &spec("update = { max_parallel = 10001 }", "", ""),
        "update.max_parallel",
        "must be at most 10000",
    );
    fails_once(
        &spec("update = { canary = 10001 }", "", ""),
        "update.canary",
        "must be at most 10000",
    );
    fails_once(
        &spec("", "migrate = { max_parallel = 0 }", ""),
        "group.web.migrate.max_parallel",
        "must be at least 1",
    );
}
