//! `Outcome`: what one scheduling pass (`generic` for service and batch jobs, `system`
//! for system and sysbatch jobs) hands back to `process`, which submits its plan and
//! records the evaluation's result from it.

use std::collections::BTreeMap;

use orch_common::model::{AllocMetric, Evaluation, Plan};

/// What one scheduling pass produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub plan: Plan,
    /// Group -> why its placements failed.
    pub failed: BTreeMap<String, AllocMetric>,
    /// Group -> instances not placed.
    pub queued: BTreeMap<String, u32>,
    pub class_eligibility: BTreeMap<String, bool>,
    /// When to evaluate the job again, and the trigger: a delayed reschedule or a
    /// disconnected allocation turning lost.
    pub follow_up: Option<(u64, &'static str)>,
    /// The job's blocked evaluation already waiting (other than the one processed).
    pub existing_blocked: Option<Evaluation>,
}
