//! The orch client: fingerprints the host, registers with the servers, heartbeats,
//! watches its allocations with blocking queries and runs them through drivers inside
//! cgroups, reporting status back in batches.
//!
//! Tour: `config` (ClientConfig) -> `agent` (Client: register, heartbeat, alloc watch,
//! status batcher) -> `allocrunner` (one per allocation: alloc dir, task runners,
//! alloc status) -> `taskrunner` (the task state machine, restarts, env) -> `driver`
//! (raw_exec, mock) -> `cgroups` (v1/v2 limits). `fingerprint` describes the host,
//! `state` persists task handles, `logrotate` writes task output into rotated files,
//! `logs` + `http` serve them, `checks` runs the services' health checks, `batcher` collects
//! status updates and `rpc` makes the calls to the servers.
//!
//! cgroups are written by our own file-level v1/v2 backends (not youki's `libcgroups`):
//! see `cgroups` for why. Every limit is read back after writing; a missing controller
//! is an error, never a silently unlimited task.

pub mod agent;
pub mod allocdir;
pub mod allocrunner;
pub mod batcher;
pub mod cgroups;
pub mod config;
pub mod driver;
mod exec_socket;
pub mod fingerprint;
mod http;
pub mod logrotate;
pub mod logs;
mod once;
pub mod rpc;
pub mod shim;
pub mod state;
#[cfg(test)]
mod testutil;
pub mod usage;

pub use agent::{Client, ClientError};
pub use config::ClientConfig;
