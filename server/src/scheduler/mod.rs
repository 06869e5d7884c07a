//! The scheduler: a pure function from (evaluation, state snapshot, now) to a plan.
//! It depends on `orch_common` and `std` only: no tokio, no SQL, no clock, no unseeded
//! randomness. The worker, the tests and `orch job plan` each provide a `Planner`.

//!
//! Layout (Nomad-style, one concern per file):
//! - `reconcile`: desired job vs. existing allocations -> place/stop/update buckets.
//! - `feasible`: the feasibility chain (datacenter, status, drivers, every constraint
//!   operator, distinct_hosts, distinct_property, resources and ports), class-level
//!   checks cached per computed node class; `version`: `version`/`semver` matching;
//!   `property`: allocations per property value (distinct_property, spread).
//! - `rank`: one normalized score per node (bin-pack or spread fit, job anti-affinity,
//!   reschedule penalty, affinities, spreads) over a bounded, seeded sample.
//! - `preempt`: the least disruptive set of lower-priority allocations to evict when
//!   nothing fits (priority gap 10, per the cluster's preemption configuration).
//! - `context`: the plan under construction and the node usage it implies.
//! - `deployment`: a service job's rollout: the deployment that governs it, the one a
//!   plan creates or cancels, canaries and the rolling limit of destructive updates.
//! - `evaluate`: `process`, the entry point: dispatch by job type, plan submission and retries,
//!   the evaluation's outcome (follow-up and blocked evaluations).
//! - `generic`: the pass for service and batch jobs; `system`: for system and
//!   sysbatch jobs. Each returns an `Outcome` (`outcome`); every plan carries per-group
//!   annotations.
//! - `rng`: the seeded SplitMix64 used for shuffling and port picking; `fxhash`: the
//!   fast hasher of the hot maps keyed by node classes and property values.

pub mod context;
pub mod deployment;
#[cfg(test)]
mod deployment_tests;
mod evaluate;
pub mod feasible;
pub mod fxhash;
pub mod generic;
mod outcome;
#[cfg(test)]
mod placement_tests;
mod planner;
pub mod preempt;
pub mod property;
pub mod rank;
pub mod reconcile;
pub mod rng;
mod state;
mod system;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod version;

pub use evaluate::{process, SchedulerError, MAX_PLAN_ATTEMPTS};
pub use planner::{Planner, PlannerError};
pub use state::State;
