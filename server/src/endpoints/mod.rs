//! The rules of every write, one module per resource: what a request may ask, what it
//! becomes (the `Command` submitted to the log, with the check-and-set it needs), and
//! what it answers. Each endpoint is a plain function from a typed request to a typed
//! result, with one error enum per module; the HTTP layer decodes requests into these
//! types, calls the endpoint and encodes its answer, and holds no rule and no lock.
//!
//! ```text
//!  http handler ──decode──► endpoint(&Endpoints, request) ──► Command ──► CommandLog
//!       ▲                        │ reads: Endpoints::read (blocking pool)     │
//!       └──encode◄── result / XError ◄── ApplyOutcome (index, rejected?) ◄──┘
//! ```
//!
//! Concurrent writes to one job are optimistic: an endpoint reads the job, builds the
//! new version and submits it with `enforce_index` = the `job_modify_index` it read;
//! the store refuses it if the job changed in between, and the endpoint reads again and
//! retries (a bounded number of times). A user's own `enforce_index` is never retried.
//!
//! - `jobs`: register, scale, deregister, revert; `plan`: the dry run of a
//!   registration.
//! - `deployments`: promote, fail, pause, resume, allocation health.
//! - `nodes`: register, heartbeat, eligibility, drain.
//! - `allocations`: stop (migrate) an allocation, a client's allocation updates.
//! - `operator`: the scheduler configuration, garbage collection now.
//! - `snapshot`: saving the state to a file and restoring it from one.
//! - `acl`: the bootstrap, policies, tokens, and what a request's token grants
//!   (`grants_cache`: those answers, until the next ACL change);
//!   `secrets`: how ACL tokens' and nodes' secrets are made and stored.
//! - `context`: `Endpoints` (the handles every endpoint shares) and `ReadError`.

pub mod acl;
pub mod allocations;
pub mod context;
pub mod deployments;
pub mod grants_cache;
pub mod jobs;
pub mod nodes;
pub mod operator;
pub mod plan;
pub mod secrets;
pub mod snapshot;

pub use context::{Endpoints, ReadError};

#[cfg(test)]
mod tests;
