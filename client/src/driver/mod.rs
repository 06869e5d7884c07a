//! Task drivers: the `Driver` trait (fingerprint, start -> `TaskHandle`, wait, stop,
//! destroy, recover, stats) and its implementations: `raw_exec` (a host process in its
//! own process group and cgroup), `container` (the command in its own namespaces on
//! its own root filesystem) and `mock` (runs nothing; for tests).
//!
//! Drivers are async and object-safe (`Arc<dyn Driver>`), so their futures are boxed.
//! A driver keeps the live child of each task it started, keyed by `TaskHandle::id`;
//! the handle itself is plain data that `state` persists.
//!
//! Layout: `types` (the trait and the data that goes in and out of it), `error`
//! (`DriverError`), `set` (`DriverSet`: the client's configured drivers by name),
//! `procs` (what the process-running drivers share), `signals` and `pid` (small
//! helpers over signal names and `/proc`), then one module per driver and `suite`
//! (the tests every driver passes).

pub mod container;
mod error;
pub mod mock;
mod pid;
mod procs;
pub mod raw_exec;
mod set;
mod signals;
#[cfg(test)]
mod suite;
mod types;

pub use container::ContainerDriver;
pub use error::DriverError;
pub use mock::MockDriver;
pub use pid::{proc_start_ticks, process_alive};
pub use raw_exec::RawExecDriver;
pub use set::DriverSet;
pub use signals::{parse_signal, signal_name};
pub(crate) use types::wait_exit;
pub use types::{
    Driver, ExecRequest, ExecSession, ExitResult, StartRequest, TaskHandle, TaskStats,
};
