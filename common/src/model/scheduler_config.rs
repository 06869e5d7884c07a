//! The cluster-wide scheduler configuration: the ranking algorithm and preemption.

use serde::{Deserialize, Serialize};

use super::job_type::JobType;

/// How the scheduler ranks feasible nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerAlgorithm {
    /// Favour the fullest node that fits (fewer nodes used).
    #[default]
    Binpack,
    /// Favour the emptiest node (load spread evenly).
    Spread,
}

/// Which job types may preempt lower-priority allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreemptionConfig {
    #[serde(default = "yes")]
    pub system_scheduler_enabled: bool,
    #[serde(default = "yes")]
    pub sysbatch_scheduler_enabled: bool,
    #[serde(default)]
    pub batch_scheduler_enabled: bool,
    #[serde(default)]
    pub service_scheduler_enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for PreemptionConfig {
    fn default() -> Self {
        PreemptionConfig {
            system_scheduler_enabled: true,
            sysbatch_scheduler_enabled: true,
            batch_scheduler_enabled: false,
            service_scheduler_enabled: false,
        }
    }
}

impl PreemptionConfig {
    pub fn enabled_for(&self, job_type: JobType) -> bool {
        match job_type {
            JobType::Service => self.service_scheduler_enabled,
            JobType::Batch => self.batch_scheduler_enabled,
            JobType::System => self.system_scheduler_enabled,
            JobType::Sysbatch => self.sysbatch_scheduler_enabled,
        }
    }
}

/// Cluster-wide scheduler settings: `GET/PUT /v1/operator/scheduler/configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfiguration {
    #[serde(default)]
    pub scheduler_algorithm: SchedulerAlgorithm,
    #[serde(default)]
    pub preemption_config: PreemptionConfig,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}
