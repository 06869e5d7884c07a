//! `StateError`, what can go wrong in the state store, and `SqlContext`, which says what
//! was being done when a rusqlite call failed.

use std::path::PathBuf;

/// What can go wrong in the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("creating state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("syncing {path} to disk: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("migrating state database to schema version {version}: {source}")]
    Migrate {
        version: u32,
        source: rusqlite::Error,
    },
    #[error("state database has schema version {found}, newer than this binary knows ({supported}); upgrade orch")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("{context}: {source}")]
    Sql {
        context: String,
        source: rusqlite::Error,
    },
    #[error("decoding stored {kind} {id:?}: {source}")]
    Decode {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("encoding {kind} {id:?}: {source}")]
    Encode {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("reading command log entry {index}: {reason}")]
    CommandLogEntry { index: u64, reason: String },
    #[error("the command log no longer holds the entries after index {after}: garbage collection dropped those before index {first}; read the state (a snapshot) instead")]
    LogTruncated { after: u64, first: u64 },
    #[error("{context}: {source}")]
    SnapshotIo {
        context: String,
        source: std::io::Error,
    },
    #[error("{path} is not a state snapshot this server can restore: {reason}")]
    InvalidSnapshot { path: PathBuf, reason: String },
    #[error("index {index} is not after the last applied index {last}")]
    IndexNotIncreasing { index: u64, last: u64 },
}

impl StateError {
    /// Whether this says the database cannot be written here (a full disk, an I/O
    /// error, a read-only or damaged file, a lock held too long), as opposed to a
    /// failure that follows from the command and the state, which every server
    /// applying the same command to the same state meets the same way.
    pub fn is_storage_failure(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            StateError::Sql { source, .. } => match source.sqlite_error_code() {
                Some(ConstraintViolation | TooBig | TypeMismatch) => false,
                Some(_) => true,
                None => !matches!(
                    source,
                    rusqlite::Error::ToSqlConversionFailure(_)
                        | rusqlite::Error::FromSqlConversionFailure(..)
                        | rusqlite::Error::IntegralValueOutOfRange(..)
                        | rusqlite::Error::InvalidColumnType(..)
                        | rusqlite::Error::QueryReturnedNoRows
                ),
            },
            StateError::CreateDir { .. } | StateError::Open { .. } | StateError::Sync { .. } => {
                true
            }
            _ => false,
        }
    }
}

/// Adds a description of what was being done to a rusqlite error.
pub(crate) trait SqlContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StateError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StateError> {
        self.map_err(|source| StateError::Sql {
            context: context(),
            source,
        })
    }
}
