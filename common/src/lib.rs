//! Shared types of orch: ids, durations, the cluster model (jobs, nodes, allocations,
//! evaluations, plans), the job spec parser, ACL policies, and the HTTP API's
//! request/response shapes.
//!
//! Every other crate depends on this one; it depends on no other orch crate.

pub mod acl;
pub mod api;
pub mod diff;
pub mod duration;
pub mod exec_frames;
pub mod ids;
pub mod jobspec;
#[cfg(any(test, feature = "testing"))]
pub mod mock;
pub mod model;
#[cfg(feature = "supervise")]
pub mod supervise;
#[cfg(feature = "tls")]
pub mod tls;

/// Re-exported (additive, for the scheduler) so the pure `scheduler/` module can evaluate
/// `regexp` constraints while importing only `orch_common` and `std`.
pub use regex;
