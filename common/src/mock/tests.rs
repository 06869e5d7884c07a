//! The fixtures are what they promise: valid jobs, schedulable nodes, allocations that
//! belong to their job and node.

use std::time::Duration;

use super::*;
use crate::jobspec;
use crate::model::{CheckType, ClientStatus, DesiredStatus, JobType, NodeStatus, RestartMode};

#[test]
fn every_mock_job_passes_validation() {
    for job in [job(), batch_job(), system_job()] {
        assert_eq!(jobspec::validate(&job).map_err(|e| e.lines()), Ok(()));
    }
    let mock_driver = JobBuilder::new("sim")
        .driver("mock")
        .task_config("run_for", "1h".into())
        .count(3)
        .build();
    assert_eq!(
        jobspec::validate(&mock_driver).map_err(|e| e.lines()),
        Ok(())
    );
    let mut web = service("web", Some("http"));
    web.checks = vec![
        check(CheckType::Http),
        check(CheckType::Tcp),
        check(CheckType::Script),
    ];
    let with_service = JobBuilder::new("svc")
        .dynamic_port("http")
        .service(web)
        .copy_group("api")
        .build();
    assert_eq!(
        jobspec::validate(&with_service).map_err(|e| e.lines()),
        Ok(())
    );
}

#[test]
fn a_built_task_has_its_drivers_default_config_and_what_the_test_sets() {
    let t = TaskBuilder::new("t", "raw_exec")
        .config("args", serde_json::json!(["-c", "true"]))
        .cpu(100)
        .memory(32)
        .kill_timeout(Duration::from_secs(1))
        .build();
    assert_eq!(t.config["command"], "/bin/true");
    assert_eq!(t.config["args"], serde_json::json!(["-c", "true"]));
    assert_eq!((t.resources.cpu, t.resources.memory), (100, 32));
    assert_eq!(t.kill_timeout, Duration::from_secs(1));
    assert!(task("m", "mock").config.is_empty());

    let job = JobBuilder::new("two")
        .group_name("g")
        .tasks(vec![task("a", "mock"), task("b", "mock")])
        .restart(restart_policy(
            0,
            Duration::from_millis(10),
            Duration::from_secs(60),
            RestartMode::Fail,
        ))
        .copy_group("h")
        .build();
    let names: Vec<&str> = job.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["g", "h"]);
    assert!(job.groups.iter().all(|g| g.tasks.len() == 2));
    assert!(job.groups.iter().all(|g| g.restart.attempts == 0));
}

#[test]
fn a_built_job_gets_its_types_policies_and_is_named_after_its_id() {
    let job = JobBuilder::new("frames").batch().count(4).cpu(100).build();
    assert_eq!((job.id.as_str(), job.name.as_str()), ("frames", "frames"));
    assert_eq!(job.job_type, JobType::Batch);
    let g = &job.groups[0];
    assert_eq!((g.name.as_str(), g.count), ("web", 4));
    assert_eq!(g.restart.attempts, 3, "batch restart defaults");
    assert!(!g.reschedule.unlimited, "batch reschedule defaults");
    assert_eq!(
        (g.tasks[0].resources.cpu, g.tasks[0].resources.memory),
        (100, 256)
    );
    assert_ne!(super::job().id, super::job().id, "random ids");
}

#[test]
fn a_mock_node_is_ready_eligible_and_runs_the_mock_jobs() {
    let n = node();
    assert!(n.is_schedulable());
    assert!(n.has_driver("raw_exec") && n.has_driver("mock"));
    assert!(!n.computed_class.is_empty());
    assert!(job().groups[0].resources().fits(&n.allocatable()).is_ok());
    let named = NodeBuilder::new().id("n1").status(NodeStatus::Down).build();
    assert_eq!((named.id.as_str(), named.name.as_str()), ("n1", "node-n1"));
    assert!(!named.is_schedulable());
}

#[test]
fn a_mock_alloc_is_an_instance_of_its_job_on_its_node() {
    let (job, node) = (super::job(), super::node());
    let a = alloc(&job, &node);
    assert_eq!(a.name, format!("{}.web[0]", job.id));
    assert_eq!(
        (a.node_id.as_str(), a.node_name.as_str()),
        (node.id.as_str(), node.name.as_str())
    );
    assert_eq!(a.resources.total(), job.groups[0].resources());
    assert_eq!(
        (a.desired_status, a.client_status),
        (DesiredStatus::Run, ClientStatus::Pending)
    );
    assert_eq!((a.create_index, a.create_time), (0, 0), "not stored yet");
    assert_eq!(a.job.as_deref(), Some(&job));

    let r = running_alloc(&job, "web", 2, &node);
    assert_eq!(r.name, format!("{}.web[2]", job.id));
    assert_eq!(r.client_status, ClientStatus::Running);
    assert_eq!((r.create_time, r.create_index), (NOW, 1));

    let canary = AllocBuilder::new(&job)
        .id("a1")
        .node_id("n1")
        .deployment("d1")
        .canary()
        .port("http", 20001, "127.0.0.1")
        .without_job()
        .build();
    assert!(canary.is_canary() && canary.job.is_none());
    assert_eq!((canary.id.as_str(), canary.node_name.as_str()), ("a1", ""));
    assert_eq!(canary.resources.ports[0].value, 20001);
}

#[test]
fn a_mock_deployment_and_plan_follow_their_job() {
    let job = JobBuilder::new("web").count(3).build();
    let d = deployment(&job);
    assert_eq!((d.job_id.as_str(), d.job_version), ("web", 0));
    assert_eq!(d.task_groups["web"], deployment_group(3, 0));
    let e = eval(&job);
    assert_eq!((e.job_id.as_str(), e.create_time), ("web", NOW));
    let a = alloc(&job, &node());
    let plan = PlanBuilder::new(&job)
        .eval_id("e1")
        .place(&a)
        .stop(&a)
        .build();
    assert_eq!(plan.eval_id, "e1");
    assert_eq!(plan.node_allocation[&a.node_id], vec![a.clone()]);
    assert_eq!(
        plan.node_update[&a.node_id][0].desired_status,
        DesiredStatus::Stop
    );
}
