//! `Planner`: where the scheduler sends its results (plans and evaluation updates),
//! and `PlannerError`, what a planner answers when it cannot take them. The worker
//! commits through the plan applier and the command log; the tests' harness and the
//! dry run of `orch job plan` only record.

use std::error::Error;
use std::fmt;

use orch_common::model::{Evaluation, Plan, PlanResult};

use super::state::State;

/// Where the scheduler sends its results.
pub trait Planner {
    /// Submits a plan; the answer says what was committed and, when only part was,
    /// gives a fresher snapshot to retry on.
    fn submit_plan(
        &mut self,
        plan: Plan,
    ) -> Result<(PlanResult, Option<Box<dyn State>>), PlannerError>;
    /// Records the evaluation's outcome (status, failed groups, queued counts).
    fn update_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError>;
    /// Creates a follow-up evaluation (a blocked one for unplaced instances).
    fn create_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError>;
    /// Puts a blocked evaluation back into the blocked set with updated eligibility.
    fn reblock_eval(&mut self, eval: Evaluation) -> Result<(), PlannerError>;
}

/// Why a planner could not take a plan or an evaluation update. (The scheduler stays
/// free of other crates, so this is written out rather than derived.)
#[derive(Debug)]
pub enum PlannerError {
    /// What commits plans has stopped (the server is shutting down).
    Stopped(&'static str),
    /// Committing the plan or the evaluation failed.
    Commit(Box<dyn Error + Send + Sync + 'static>),
    /// The plan was committed only in part and no fresher state could be read to retry on.
    Refresh(Box<dyn Error + Send + Sync + 'static>),
}

impl fmt::Display for PlannerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannerError::Stopped(what) => write!(f, "{what} has stopped"),
            PlannerError::Commit(e) => write!(f, "committing failed: {e}"),
            PlannerError::Refresh(e) => write!(f, "reading a fresher state failed: {e}"),
        }
    }
}

impl Error for PlannerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PlannerError::Stopped(_) => None,
            PlannerError::Commit(e) | PlannerError::Refresh(e) => Some(e.as_ref()),
        }
    }
}
