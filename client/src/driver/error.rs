//! `DriverError`: why a driver could not do what it was asked, naming the task.

use std::path::PathBuf;

use nix::sys::signal::Signal;

use super::container::ContainerError;
use crate::cgroups::CgroupError;

/// Why a driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("task {task}: invalid driver config: {reason}")]
    InvalidConfig { task: String, reason: String },
    #[error("task {task}: starting {command:?}: {source}")]
    Start {
        task: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: opening log file {path}: {source}")]
    LogFile {
        task: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: user {user:?}: {reason}")]
    User {
        task: String,
        user: String,
        reason: String,
    },
    #[error("task {task}: {source}")]
    Cgroup {
        task: String,
        #[source]
        source: CgroupError,
    },
    #[error("task {task} is not known to driver {driver}")]
    UnknownTask { task: String, driver: &'static str },
    #[error("driver {driver} does not support {what} yet")]
    Unsupported {
        driver: &'static str,
        what: &'static str,
    },
    #[error("task {task}: {message}")]
    Injected { task: String, message: String },
    #[error("task {task}: sending {signal} to process group {pgid}: {source}")]
    Signal {
        task: String,
        signal: Signal,
        pgid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("task {task} was lost while no client ran: {reason}")]
    Lost { task: String, reason: String },
    #[error("unknown signal {name:?}")]
    BadSignal { name: String },
    #[error("task {task}: {source}")]
    Container {
        task: String,
        #[source]
        source: ContainerError,
    },
}

impl DriverError {
    /// False for mistakes that another attempt cannot fix (bad config, unknown user).
    pub fn is_recoverable(&self) -> bool {
        if let DriverError::Container { source, .. } = self {
            return source.is_recoverable();
        }
        !matches!(
            self,
            DriverError::InvalidConfig { .. }
                | DriverError::User { .. }
                | DriverError::BadSignal { .. }
                | DriverError::Unsupported { .. }
        )
    }
}
