//! SQLite connections: how every connection of the store is opened (WAL, synchronous
//! FULL, busy timeout, private files) and the pool of read connections (`ReaderPool`,
//! `PooledConn`). The Raft log's database is opened the same way (`open_private`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::{SqlContext, StateError};

/// How many idle read connections the pool keeps.
const MAX_IDLE_READERS: usize = 8;
/// How long a statement waits for a lock before failing (checkpoints, the writer).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection to the database at `path` with the store's pragmas.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StateError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StateError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // Every statement the writer and the readers run fits in the cache.
    conn.set_prepared_statement_cache_capacity(64);
    let pragmas = || -> Result<(), rusqlite::Error> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers see a consistent snapshot while the writer commits.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, expected wal"
            )));
        }
        // FULL: a commit is on disk (WAL fsynced) before we answer the request.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(())
    };
    pragmas().map_err(|source| StateError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

/// Makes the state's directory (0700) and database file (0600) private whatever the
/// umask: the state holds every job's environment (secrets included) and the ACL
/// tokens. The file is created here, before SQLite sees it, because SQLite creates its
/// `-wal` and `-shm` files with the database file's mode; those of an earlier run are
/// narrowed too.
pub(crate) fn private_files(dir: &Path, db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Opens (creating it private, 0600 in a 0700 directory) the database at `path` with
/// the store's pragmas: for databases beside the state, such as the Raft log.
pub fn open_private(path: &Path) -> Result<Connection, StateError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_files(dir, path).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    open_connection(path)
}

/// Idle read connections to one database (`query_only`); `take` lends one out.
pub(crate) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub(crate) fn new(path: PathBuf) -> ReaderPool {
        ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Takes an idle read connection (or opens one); it goes back to the pool on drop.
    pub(crate) fn take(self: &Arc<Self>) -> Result<PooledConn, StateError> {
        let idle = self
            .idle
            .lock()
            .expect("state reader pool mutex poisoned")
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = open_connection(&self.path)?;
                c.pragma_update(None, "query_only", true)
                    .ctx(|| "setting query_only on a read connection".to_string())?;
                c
            }
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: self.clone(),
        })
    }
}

/// A read connection borrowed from the pool; goes back on drop (rolled back first).
pub(crate) struct PooledConn {
    conn: Option<Connection>,
    pool: Arc<ReaderPool>,
}

impl std::ops::Deref for PooledConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Only `Drop` takes the connection out.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("pooled connection used after drop"),
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            return; // a broken connection is not reused
        }
        let mut idle = self
            .pool
            .idle
            .lock()
            .expect("state reader pool mutex poisoned");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}
