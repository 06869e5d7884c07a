//! `FingerprintError`, and reading a fact file into it (every fingerprinter reads
//! through `read_file`, so every failure names its file).

use std::path::{Path, PathBuf};

/// Why the host could not be fingerprinted.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {field} found")]
    Missing { path: PathBuf, field: &'static str },
}

/// The whole of `path`, or a `Read` error naming it.
pub(crate) fn read_file(path: &Path) -> Result<String, FingerprintError> {
    std::fs::read_to_string(path).map_err(|source| FingerprintError::Read {
        path: path.to_path_buf(),
        source,
    })
}
