//! The orch client: fingerprints the host, registers with the servers, heartbeats,
//! watches its allocations with blocking queries and runs them through drivers inside
//! cgroups, reporting status back in batches.
//!
//! Tour, following one allocation: `config` (`ClientConfig`) -> `agent` (`Client`:
//! `register` + heartbeats, the alloc `watch`, `status` batches; `lookup` for the HTTP
//! routes) -> `allocrunner` (one per allocation: its tasks, health checks in
//! `allocrunner::checks`, deployment `health`) -> `allocrunner::taskrunner` (the task
//! state machine, restarts, env) -> `driver` (the `Driver` trait and `DriverSet`;
//! `raw_exec`, `container`, `mock`) -> `cgroups` (v1/v2 limits). `allocdir` is an
//! allocation's directory on disk; `shim` is the task shim that supervises a
//! `raw_exec` task (and the client's side of it), so tasks outlive a client restart.
//! `fingerprint` describes the host, `state` persists task handles, `logrotate` writes
//! task output into rotated files, `logs` + `http` serve them, `exec_socket` carries
//! `orch alloc exec` over a WebSocket, `usage` keeps the tasks' resource samples,
//! `batcher` collects status updates and `rpc` makes the calls to the servers.
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
mod health;
mod http;
pub mod logrotate;
pub mod logs;
mod once;
pub mod rpc;
pub mod shim;
pub mod state;
pub mod usage;

pub use agent::{Client, ClientError, TokenCache};
pub use config::ClientConfig;
