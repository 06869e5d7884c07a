//! A group's policies: restart (client), reschedule (server), update (deployments),
//! migrate (drains) and disconnect.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job_type::JobType;
use crate::duration::{human, human_opt};

/// `[group.G.restart]`: what the client does when a task exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub attempts: u32,
    #[serde(with = "human")]
    pub interval: Duration,
    #[serde(with = "human")]
    pub delay: Duration,
    pub mode: RestartMode,
}

impl RestartPolicy {
    /// Nomad's defaults: service 2 in 30m with 15s delay; batch 3 in 24h.
    pub fn default_for(job_type: JobType) -> Self {
        match job_type {
            JobType::Batch | JobType::Sysbatch => RestartPolicy {
                attempts: 3,
                interval: Duration::from_secs(24 * 3600),
                delay: Duration::from_secs(15),
                mode: RestartMode::Fail,
            },
            JobType::Service | JobType::System => RestartPolicy {
                attempts: 2,
                interval: Duration::from_secs(30 * 60),
                delay: Duration::from_secs(15),
                mode: RestartMode::Fail,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// Attempts exhausted: the task fails.
    Fail,
    /// Attempts exhausted: wait out the interval, then try again.
    Delay,
}

/// `[group.G.reschedule]`: what the server does when an allocation fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReschedulePolicy {
    pub attempts: u32,
    #[serde(with = "human")]
    pub interval: Duration,
    #[serde(with = "human")]
    pub delay: Duration,
    pub delay_function: DelayFunction,
    #[serde(with = "human")]
    pub max_delay: Duration,
    pub unlimited: bool,
}

impl ReschedulePolicy {
    /// Nomad's defaults: service unlimited, exponential from 30s to 1h; batch 1 in 24h.
    pub fn default_for(job_type: JobType) -> Self {
        match job_type {
            JobType::Batch | JobType::Sysbatch => ReschedulePolicy {
                attempts: 1,
                interval: Duration::from_secs(24 * 3600),
                delay: Duration::from_secs(5),
                delay_function: DelayFunction::Constant,
                max_delay: Duration::ZERO,
                unlimited: false,
            },
            JobType::Service | JobType::System => ReschedulePolicy {
                attempts: 0,
                interval: Duration::ZERO,
                delay: Duration::from_secs(30),
                delay_function: DelayFunction::Exponential,
                max_delay: Duration::from_secs(3600),
                unlimited: true,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelayFunction {
    Constant,
    Exponential,
    Fibonacci,
}

/// `[update]` / `[group.G.update]`: rolling deployment settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    pub max_parallel: u32,
    pub health_check: HealthCheckMode,
    #[serde(with = "human")]
    pub min_healthy_time: Duration,
    #[serde(with = "human")]
    pub healthy_deadline: Duration,
    #[serde(with = "human")]
    pub progress_deadline: Duration,
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub canary: u32,
    #[serde(with = "human")]
    pub stagger: Duration,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            max_parallel: 1,
            health_check: HealthCheckMode::Checks,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
            progress_deadline: Duration::from_secs(600),
            auto_revert: false,
            auto_promote: false,
            canary: 0,
            stagger: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckMode {
    Checks,
    TaskStates,
    Manual,
}

/// `[group.G.migrate]`: how a drain moves allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratePolicy {
    pub max_parallel: u32,
    pub health_check: HealthCheckMode,
    #[serde(with = "human")]
    pub min_healthy_time: Duration,
    #[serde(with = "human")]
    pub healthy_deadline: Duration,
}

impl Default for MigratePolicy {
    /// Nomad's defaults, for a group without `[group.G.migrate]` or fields it leaves out.
    fn default() -> Self {
        MigratePolicy {
            max_parallel: 1,
            health_check: HealthCheckMode::Checks,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
        }
    }
}

/// `group.G.disconnect`: what happens when a node loses contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectPolicy {
    #[serde(with = "human_opt", default)]
    pub lost_after: Option<Duration>,
    #[serde(default)]
    pub replace: bool,
}
