//! The kinds of job (`service`, `batch`, `system`, `sysbatch`): how the scheduler and
//! the client treat a job, and the policy defaults of each.

use serde::{Deserialize, Serialize};

/// What kind of work a job is; decides how the scheduler and client treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Long-running; replaced when it dies.
    #[default]
    Service,
    /// Runs to completion; a success is never rerun.
    Batch,
    /// One allocation on every eligible node.
    System,
    /// Runs once to completion on every eligible node.
    Sysbatch,
}

impl JobType {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobType::Service => "service",
            JobType::Batch => "batch",
            JobType::System => "system",
            JobType::Sysbatch => "sysbatch",
        }
    }
}
