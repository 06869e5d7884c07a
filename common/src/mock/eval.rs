//! Evaluations: `eval()` (Nomad's `mock.Eval()`) and `eval_triggered_by()`.

use super::time::NOW;
use crate::model::{triggers, Evaluation, Job};

/// A pending `job-register` evaluation of `job`, created at `NOW`, with a random id.
pub fn eval(job: &Job) -> Evaluation {
    eval_triggered_by(job, triggers::JOB_REGISTER)
}

/// A pending evaluation of `job` made for `trigger` (one of `model::triggers`), created
/// at `NOW`, with a random id.
pub fn eval_triggered_by(job: &Job, trigger: &str) -> Evaluation {
    let mut e = Evaluation::for_job(job, trigger);
    e.create_time = NOW;
    e.modify_time = NOW;
    e
}
