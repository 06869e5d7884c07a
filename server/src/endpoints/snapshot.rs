//! State snapshots for operators: saving the state to a file (`save`, what
//! `GET /v1/operator/snapshot` streams) and restoring it from one (`restore`, after
//! `PUT /v1/operator/snapshot` wrote the upload to `upload_path`). The files live
//! beside the state database, so a restore's file is on the same file system and a
//! saved one never sits in memory. See `crate::state::backup` for what a snapshot is.

use std::path::{Path, PathBuf};

use orch_common::api::SnapshotRestoreResponse;

use super::context::Endpoints;
use crate::state::{LogError, SnapshotMeta, StateError};

/// Why a snapshot could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("snapshot task failed: {0}")]
    Task(String),
}

impl SnapshotError {
    /// Why the file itself is refused (not SQLite, damaged, truncated, of a newer
    /// schema), when that is the error: the caller's mistake, and nothing changed.
    /// Names the problem, not the server's path for the upload.
    pub fn bad_file_reason(&self) -> Option<String> {
        match self {
            SnapshotError::Log(LogError::Apply(StateError::InvalidSnapshot { reason, .. })) => {
                Some(format!(
                    "not a state snapshot this server can restore: {reason}"
                ))
            }
            SnapshotError::Log(LogError::Apply(e @ StateError::SchemaTooNew { .. })) => {
                Some(format!("the snapshot's {e}"))
            }
            _ => None,
        }
    }
}

/// A saved snapshot, open for reading; its file is already unlinked, so nothing is
/// left behind whatever happens to the reader.
#[derive(Debug)]
pub struct SavedSnapshot {
    pub file: std::fs::File,
    pub meta: SnapshotMeta,
}

/// A file in the state's directory for a snapshot in transit (`kind`: save or
/// upload), with a name of its own.
fn transit_path(ctx: &Endpoints, kind: &str) -> PathBuf {
    let dir = ctx
        .store
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join(format!(
        "snapshot-{kind}-{}.tmp",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Removes the files of snapshots that were in transit when the server last stopped
/// (a crash during a save or an upload); `dir` is the state's directory. Called at
/// start, before any request.
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snapshot-") && name.contains(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a snapshot left in transit"),
                Err(e) => tracing::warn!(file = %name, error = %e, "removing a leftover snapshot"),
            }
        }
    }
}

/// Where an uploaded snapshot is written before `restore` (beside the state).
pub fn upload_path(ctx: &Endpoints) -> PathBuf {
    transit_path(ctx, "upload")
}

/// Saves a consistent copy of the state, taken while writes go on.
pub async fn save(ctx: &Endpoints) -> Result<SavedSnapshot, SnapshotError> {
    let store = ctx.store.clone();
    let path = transit_path(ctx, "save");
    tokio::task::spawn_blocking(move || -> Result<SavedSnapshot, SnapshotError> {
        let meta = store.save_snapshot(&path)?;
        let opened = std::fs::File::open(&path);
        let _ = std::fs::remove_file(&path);
        let file = opened.map_err(|source| SnapshotError::Io {
            context: format!("opening the snapshot {}", path.display()),
            source,
        })?;
        tracing::info!(
            index = meta.index,
            bytes = meta.size_bytes,
            "state snapshot saved"
        );
        Ok(SavedSnapshot { file, meta })
    })
    .await
    .map_err(|e| SnapshotError::Task(e.to_string()))?
}

/// Replaces the whole state with the snapshot at `path` (then removed). A file that
/// is not a snapshot this server can restore changes nothing (`bad_file_reason`).
/// What it does to the rest of the server: `CommandLog::restore`.
pub async fn restore(
    ctx: &Endpoints,
    path: PathBuf,
) -> Result<SnapshotRestoreResponse, SnapshotError> {
    let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let restored = ctx.log.restore(path.clone()).await;
    let _ = tokio::fs::remove_file(&path).await;
    let outcome = restored?;
    Ok(SnapshotRestoreResponse {
        previous_index: outcome.previous_index,
        snapshot_index: outcome.snapshot_index,
        index: outcome.index,
        schema_version: outcome.schema_version,
        size_bytes,
    })
}
