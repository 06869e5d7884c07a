//! Shared types of orch: ids, durations, the cluster structs (jobs, nodes, allocations,
//! evaluations, plans), the job spec parser, and the HTTP API's request/response shapes.
//!
//! Every other crate depends on this one; it depends on no other orch crate.

pub mod api;
pub mod duration;
pub mod ids;
pub mod jobspec;
pub mod structs;
