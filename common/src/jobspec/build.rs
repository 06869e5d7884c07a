//! The validated stage: turns what the user wrote (`raw`) into a `Job`, filling every
//! default — restart and reschedule per job type (a partial table keeps the defaults for
//! what it leaves out), a service group's `update` inherited from the job's `[update]`,
//! groups and tasks in name order.

use crate::model::{
    default_datacenters, default_priority, Job, JobStatus, JobType, ReschedulePolicy,
    RestartPolicy, TaskGroup, UpdatePolicy,
};

use super::raw::{RawGroup, RawJob, RawReschedule, RawRestart, RawUpdate};

pub(crate) fn job(raw: RawJob) -> Job {
    let job_type = raw.job_type.unwrap_or_default();
    let id = raw.id.unwrap_or_default();
    let job_update = raw.update;
    let mut groups: Vec<TaskGroup> = raw
        .groups
        .into_iter()
        .map(|g| group(g, job_type, job_update.as_ref()))
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Job {
        name: raw.name.unwrap_or_else(|| id.clone()),
        id: id.into(),
        job_type,
        datacenters: raw.datacenters.unwrap_or_else(default_datacenters),
        priority: raw.priority.unwrap_or_else(default_priority),
        meta: raw.meta,
        constraints: raw.placement.constraints,
        affinities: raw.placement.affinities,
        spreads: raw.placement.spreads,
        update: job_update.map(|u| update(&[&u])),
        groups,
        stop: false,
        status: JobStatus::Pending,
        version: 0,
        submit_time: 0,
        create_index: 0,
        modify_index: 0,
        job_modify_index: 0,
        stable: false,
    }
}

fn group(raw: RawGroup, job_type: JobType, job_update: Option<&RawUpdate>) -> TaskGroup {
    // Rolling updates are a service-job idea; other types replace allocations at once.
    let update_layers: Vec<&RawUpdate> =
        job_update.into_iter().chain(raw.update.as_ref()).collect();
    let group_update = if job_type == JobType::Service && !update_layers.is_empty() {
        Some(update(&update_layers))
    } else {
        None
    };
    let mut tasks = raw.tasks;
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    TaskGroup {
        name: raw.name,
        count: raw.count.unwrap_or(1),
        constraints: raw.placement.constraints,
        affinities: raw.placement.affinities,
        spreads: raw.placement.spreads,
        restart: restart(raw.restart.unwrap_or_default(), job_type),
        reschedule: reschedule(raw.reschedule.unwrap_or_default(), job_type),
        network: raw.network,
        services: raw.services,
        update: group_update,
        migrate: raw.migrate,
        disconnect: raw.disconnect,
        shutdown_delay: raw.shutdown_delay.unwrap_or_default(),
        meta: raw.meta,
        tasks,
    }
}

fn restart(raw: RawRestart, job_type: JobType) -> RestartPolicy {
    let d = RestartPolicy::default_for(job_type);
    RestartPolicy {
        attempts: raw.attempts.unwrap_or(d.attempts),
        interval: raw.interval.unwrap_or(d.interval),
        delay: raw.delay.unwrap_or(d.delay),
        mode: raw.mode.unwrap_or(d.mode),
    }
}

fn reschedule(raw: RawReschedule, job_type: JobType) -> ReschedulePolicy {
    let d = ReschedulePolicy::default_for(job_type);
    // Someone who writes `attempts` or `interval` means a limited policy, even where the
    // default (service jobs) is unlimited.
    let limited = raw.attempts.is_some() || raw.interval.is_some();
    ReschedulePolicy {
        attempts: raw.attempts.unwrap_or(d.attempts),
        interval: raw.interval.unwrap_or(d.interval),
        delay: raw.delay.unwrap_or(d.delay),
        delay_function: raw.delay_function.unwrap_or(d.delay_function),
        max_delay: raw.max_delay.unwrap_or(d.max_delay),
        unlimited: raw.unlimited.unwrap_or(d.unlimited && !limited),
    }
}

/// `UpdatePolicy::default()` overlaid with each layer in turn (job, then group).
fn update(layers: &[&RawUpdate]) -> UpdatePolicy {
    let mut p = UpdatePolicy::default();
    for u in layers {
        p.max_parallel = u.max_parallel.unwrap_or(p.max_parallel);
        p.health_check = u.health_check.unwrap_or(p.health_check);
        p.min_healthy_time = u.min_healthy_time.unwrap_or(p.min_healthy_time);
        p.healthy_deadline = u.healthy_deadline.unwrap_or(p.healthy_deadline);
        p.progress_deadline = u.progress_deadline.unwrap_or(p.progress_deadline);
        p.auto_revert = u.auto_revert.unwrap_or(p.auto_revert);
        p.auto_promote = u.auto_promote.unwrap_or(p.auto_promote);
        p.canary = u.canary.unwrap_or(p.canary);
        p.stagger = u.stagger.unwrap_or(p.stagger);
    }
    p
}
