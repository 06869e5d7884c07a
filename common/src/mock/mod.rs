//! Test fixtures of the cluster model, as Nomad's `nomad/mock/`: functions that return
//! complete, valid values (`job()`, `task()`, `node()`, `alloc()`, `eval()`,
//! `deployment()`, and the smaller parts a test sets on them: `service()`, `check()`,
//! `restart_policy()`, `deployment_group()`) and builders for the few fields a test
//! varies, so that a test states only what matters to it and no test writes a whole
//! struct literal of a model type.
//!
//! Compiled for this crate's tests and, through the `testing` feature, for the other
//! crates' tests and benches (their `[dev-dependencies]` turn it on); production builds
//! never contain it.
//!
//! Ids are random (`ids::new_id()`) unless a test gives them (every id parameter takes
//! `impl Into<JobId>`, `impl Into<NodeId>`, ...); times are `NOW`, a fixed fake clock; fields the server sets
//! when it stores a value (indexes, submit and create times, node names on
//! allocations) are left unset unless a builder is told.

mod alloc;
mod deployment;
mod eval;
mod job;
mod node;
mod plan;
mod service;
mod task;
mod time;

pub use alloc::{alloc, alloc_on, running_alloc, AllocBuilder};
pub use deployment::{deployment, deployment_group, DeploymentBuilder};
pub use eval::{eval, eval_triggered_by};
pub use job::{batch_job, job, restart_policy, system_job, JobBuilder};
pub use node::{node, NodeBuilder};
pub use plan::PlanBuilder;
pub use service::{check, service};
pub use task::{task, TaskBuilder};
pub use time::NOW;

#[cfg(test)]
mod tests;
