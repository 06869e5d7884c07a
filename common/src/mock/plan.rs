//! Plans: `PlanBuilder`, a scheduler's plan for a job put together by hand.

use crate::ids::EvalId;
use crate::model::{Allocation, DesiredStatus, Job, Plan};

/// Builds the plan of an evaluation of a job: by default empty, for a random
/// evaluation id at the job's priority, carrying the job.
pub struct PlanBuilder(Plan);

impl PlanBuilder {
    pub fn new(job: &Job) -> PlanBuilder {
        PlanBuilder(Plan {
            eval_id: EvalId::generate(),
            priority: job.priority,
            job: Some(job.clone()),
            ..Plan::default()
        })
    }

    pub fn eval_id(mut self, eval_id: impl Into<EvalId>) -> Self {
        self.0.eval_id = eval_id.into();
        self
    }

    /// Places `alloc` (new, or updated in place) on its node.
    pub fn place(mut self, alloc: &Allocation) -> Self {
        self.0
            .node_allocation
            .entry(alloc.node_id.clone())
            .or_default()
            .push(alloc.clone());
        self
    }

    /// Stops `alloc` on its node (desired status `stop`).
    pub fn stop(mut self, alloc: &Allocation) -> Self {
        let mut stopped = alloc.clone();
        stopped.desired_status = DesiredStatus::Stop;
        self.0
            .node_update
            .entry(alloc.node_id.clone())
            .or_default()
            .push(stopped);
        self
    }

    pub fn build(self) -> Plan {
        self.0
    }
}
