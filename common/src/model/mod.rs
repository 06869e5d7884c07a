//! The cluster's data model, one file per aggregate: jobs (validated specs) with their
//! policies, services and placement rules; resources; nodes; allocations; evaluations;
//! deployments; plans; the scheduler configuration; and ACL policies and tokens.
//!
//! These are the validated types; `jobspec` turns TOML into a `Job`, the server stores
//! them, the scheduler reads them and the client runs them. Serialized field names are
//! snake_case and part of the public API. Everything is re-exported here, so users
//! write `orch_common::model::Job`.

mod acl;
mod allocation;
mod constraint;
mod deployment;
mod evaluation;
mod job;
mod job_type;
mod node;
mod plan;
mod policy;
mod resources;
mod scheduler_config;
mod service;

pub use acl::*;
pub use allocation::*;
pub use constraint::*;
pub use deployment::*;
pub use evaluation::*;
pub use job::*;
pub use job_type::*;
pub use node::*;
pub use plan::*;
pub use policy::*;
pub use resources::*;
pub use scheduler_config::*;
pub use service::*;
