//! `ContainerError`: why a container could not be prepared or started.

use std::path::PathBuf;

use super::caps;
use super::image;

/// Why a container could not be prepared or started.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("rootfs {path}: {reason}")]
    Rootfs { path: PathBuf, reason: String },
    #[error("{key} {path}: {reason}; refused")]
    RootNotAllowed {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{asked} is not allowed on this client ({setting}); refused")]
    NotAllowed {
        asked: String,
        setting: &'static str,
    },
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("volume {volume:?}: host path {host} is not under any path the client allows in container_volumes ({allowed}); refused")]
    VolumeNotAllowed {
        volume: String,
        host: PathBuf,
        allowed: String,
    },
    #[error("volume {volume:?}: {reason}")]
    BadVolume { volume: String, reason: String },
    #[error(transparent)]
    Capability(#[from] caps::CapError),
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("setting up the container: {message}")]
    Setup { message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ContainerError {
    /// False for mistakes in the job or the image that another attempt cannot fix.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            ContainerError::Setup { .. } | ContainerError::Io { .. }
        )
    }
}
