//! State snapshots as files: `StateStore::save_snapshot` (a consistent online copy of
//! the database at one applied index, taken while writes go on), `check_snapshot`
//! (is a file a state database this binary can install; its schema brought up to
//! date) and `StateStore::install_snapshot` (the checked copy replaces the live
//! contents in one SQLite transaction; only the command log's writer thread calls
//! it, see `CommandLog::restore`). Raft's snapshot transfer and install reuse these.
//!
//! Both directions use SQLite's online backup API in one step (`step(-1)`):
//! - saving copies every page of the live database under one read transaction on a
//!   pooled reader, so the copy is the state at one commit and the writer is never
//!   blocked (WAL); the copy's own `indexes` table says which index it holds;
//! - installing copies every page of the checked file into the live database through
//!   the writer connection, as one write transaction: a crash leaves the old state or
//!   the new one, never a mix, and every open connection stays valid (readers in a
//!   transaction keep seeing the old state until it ends). Renaming a file over the
//!   live database instead would leave the store's open connections on the old file,
//!   and the last of them to close deletes `state.db-wal` by name, the new one's.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::error::{SqlContext, StateError};
use super::pool::BUSY_TIMEOUT;
use super::store::load_memory;
use super::table::{Table, ALLOC_GC_INDEX};
use super::{read, schema, StateStore};

/// What a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotMeta {
    /// The last applied index whose state the file holds.
    pub index: u64,
    /// The file's schema version (`PRAGMA user_version`).
    pub schema_version: u32,
    /// The file's size in bytes.
    pub size_bytes: u64,
}

/// A snapshot file that passed `check_snapshot`, open and migrated to this binary's
/// schema: what `install_snapshot` copies in.
pub struct CheckedSnapshot {
    conn: Connection,
    path: PathBuf,
    /// The file as found (its schema version before migration).
    pub meta: SnapshotMeta,
}

impl std::fmt::Debug for CheckedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedSnapshot")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

/// A name beside `dest` for the copy in progress (renamed to `dest` once durable).
fn temp_beside(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    PathBuf::from(name)
}

fn io_error(context: impl Into<String>, source: std::io::Error) -> StateError {
    StateError::SnapshotIo {
        context: context.into(),
        source,
    }
}

/// Flushes `path`'s contents to the disk.
fn fsync_file(path: &Path) -> Result<(), StateError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(format!("syncing {}", path.display()), e))
}

/// Flushes the directory holding `path`, so a rename into it survives a crash.
fn fsync_dir_of(path: &Path) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fsync_file(dir)
}

/// Copies every page of `from` into `to` in one step (one read transaction on
/// `from`, one write transaction on `to`).
fn copy_pages(from: &Connection, to: &mut Connection, what: &str) -> Result<(), StateError> {
    let backup = Backup::new(from, to).ctx(|| format!("starting the {what}"))?;
    match backup.step(-1).ctx(|| format!("copying the {what}"))? {
        StepResult::Done => Ok(()),
        other => Err(StateError::Sql {
            context: format!("copying the {what}"),
            source: rusqlite::Error::InvalidParameterName(format!(
                "the copy stopped early: {other:?}"
            )),
        }),
    }
}

/// The index and schema version a database holds.
fn meta_of(conn: &Connection, size_bytes: u64) -> Result<SnapshotMeta, StateError> {
    Ok(SnapshotMeta {
        index: read::last_index(conn)?,
        schema_version: schema::version(conn)?,
        size_bytes,
    })
}

impl StateStore {
    /// Writes a consistent copy of the state to `dest` (replacing it): the state at
    /// one applied index, taken while writes go on. The copy is written beside `dest`,
    /// synced and renamed over it, so `dest` is whole or absent after a crash.
    pub fn save_snapshot(&self, dest: &Path) -> Result<SnapshotMeta, StateError> {
        let tmp = temp_beside(dest);
        let saved = self.save_to(&tmp).and_then(|meta| {
            std::fs::rename(&tmp, dest).map_err(|e| {
                io_error(
                    format!("renaming {} to {}", tmp.display(), dest.display()),
                    e,
                )
            })?;
            fsync_dir_of(dest)?;
            Ok(meta)
        });
        if saved.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        saved
    }

    fn save_to(&self, tmp: &Path) -> Result<SnapshotMeta, StateError> {
        let mut out = Connection::open(tmp).map_err(|source| StateError::Open {
            path: tmp.to_path_buf(),
            source,
        })?;
        {
            let source = self.reader()?;
            copy_pages(&source, &mut out, "state snapshot")?;
        }
        // The copy's own `indexes` rows name the index it holds: read from the copy,
        // they cannot disagree with its contents.
        let mut meta = meta_of(&out, 0)?;
        out.close().map_err(|(_, source)| StateError::Sql {
            context: format!("closing the snapshot {}", tmp.display()),
            source,
        })?;
        fsync_file(tmp)?;
        meta.size_bytes = std::fs::metadata(tmp)
            .map_err(|e| io_error(format!("reading the size of {}", tmp.display()), e))?
            .len();
        Ok(meta)
    }

    /// Installs a checked snapshot as the whole state, at `index` (after the last
    /// applied index, so blocking queries and clients' watches see a change):
    /// every table's index becomes `index`, the command log is emptied (its entries
    /// are of another history), the copy replaces the live contents in one
    /// transaction, and the in-memory mirror and allocation index are rebuilt from
    /// it. Placements held in flight stay held (their commits release them).
    /// Called only on the command log's writer thread, so no command interleaves.
    pub(crate) fn install_snapshot(
        &self,
        mut snapshot: CheckedSnapshot,
        index: u64,
        mark: InstalledMark<'_>,
    ) -> Result<(), StateError> {
        let mut guard = self
            .inner
            .writer
            .lock()
            .expect("state writer mutex poisoned");
        let last = self.last_index();
        if index <= last {
            return Err(StateError::IndexNotIncreasing { index, last });
        }
        let (conn, _) = &mut *guard;
        // The backup API cannot change the page size of a database in WAL mode.
        let page_size = |c: &Connection| -> Result<u32, StateError> {
            c.query_row("PRAGMA page_size", [], |r| r.get(0))
                .ctx(|| "reading a page size".to_string())
        };
        let (theirs, ours) = (page_size(&snapshot.conn)?, page_size(conn)?);
        if theirs != ours {
            return Err(invalid(
                &snapshot.path,
                format!("its page size is {theirs} bytes, this server's database uses {ours}"),
            ));
        }
        mark_installed_at(&mut snapshot.conn, index, mark)?;
        {
            // Held across the copy's commit and the rebuild, as `apply` holds it across
            // its commit: no snapshot pairs the new rows with the old memory.
            let mut mirror = self
                .inner
                .mirror
                .write()
                .expect("state mirror lock poisoned");
            copy_pages(&snapshot.conn, conn, "snapshot into the state database")?;
            let loaded = load_memory(conn)?;
            loaded.alloc_index.raise_server_indexes(index);
            self.inner.alloc_index.replace(loaded.alloc_index);
            mirror.usage = Arc::new(loaded.usage);
            mirror.nodes = None;
            mirror.nodes_index = index;
            self.inner.alloc_gc_index.store(index, Ordering::SeqCst);
            // A token lookup cached before the restore was made at a lower index.
            self.inner.acl_index.store(index, Ordering::SeqCst);
        }
        // The copy went into the log as one big commit; move it into the database
        // now rather than leave a log the size of the state (best effort: readers
        // may hold it back, the checkpointer finishes later).
        let truncate = || -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_millis(500))?;
            let checkpointed = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            conn.busy_timeout(BUSY_TIMEOUT)?;
            checkpointed
        };
        if let Err(e) = truncate() {
            tracing::debug!(error = %e, "checkpointing after a snapshot install");
        }
        drop(guard);
        self.publish(index, &Table::ALL);
        Ok(())
    }
}

/// Which Raft mark an installed snapshot carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InstalledMark<'a> {
    /// The snapshot's own: a Raft snapshot from the leader, whose state is that of the
    /// log entry its mark names.
    Theirs,
    /// This server's (or none): an operator's restore replaces the state but not the
    /// Raft log this server follows, so the mark must stay the one that names it.
    Ours(Option<&'a super::ReplicationMark>),
}

/// Records in the snapshot (before it is copied in) that it is installed at `index`,
/// with the Raft mark `mark` says.
fn mark_installed_at(
    conn: &mut Connection,
    index: u64,
    mark: InstalledMark<'_>,
) -> Result<(), StateError> {
    let tx = conn
        .transaction()
        .ctx(|| "starting the snapshot's index update".to_string())?;
    if let InstalledMark::Ours(ours) = mark {
        tx.execute("DELETE FROM raft_applied", [])
            .ctx(|| "clearing the snapshot's Raft mark".to_string())?;
        if let Some(ours) = ours {
            super::mark::write(&tx, ours)?;
        }
    }
    tx.execute("DELETE FROM command_log", [])
        .ctx(|| "emptying the snapshot's command log".to_string())?;
    let names = Table::ALL
        .iter()
        .map(|t| t.name())
        .chain(["command_log", ALLOC_GC_INDEX]);
    for name in names {
        tx.execute(
            "INSERT INTO indexes (name, idx) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET idx = excluded.idx",
            rusqlite::params![name, index as i64],
        )
        .ctx(|| format!("setting the snapshot's {name} index"))?;
    }
    tx.commit()
        .ctx(|| "committing the snapshot's index update".to_string())
}

impl CheckedSnapshot {
    /// The Raft mark the snapshot holds (`None`: taken from a server that never
    /// applied a Raft entry).
    pub fn replication_mark(&self) -> Result<Option<super::ReplicationMark>, StateError> {
        super::mark::read(&self.conn)
    }
}

/// The Raft mark a state file holds, read without checking or changing the file
/// (`None` for a file from a server that never applied a Raft entry).
pub fn read_mark(path: &Path) -> Result<Option<super::ReplicationMark>, StateError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StateError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    super::mark::read(&conn)
}

/// Why a file is not a snapshot this binary can install.
fn invalid(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::InvalidSnapshot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The 100-byte SQLite header's magic string.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Checks the file header: SQLite, and as long as its header says.
fn check_header(path: &Path) -> Result<u64, StateError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
    let size = file
        .metadata()
        .map_err(|e| io_error(format!("reading the size of {}", path.display()), e))?
        .len();
    let mut header = [0u8; 100];
    if size < 100 || file.read_exact(&mut header).is_err() {
        return Err(invalid(
            path,
            format!("{size} bytes: too short for a SQLite database"),
        ));
    }
    if &header[..16] != SQLITE_MAGIC {
        return Err(invalid(path, "not a SQLite database (no SQLite header)"));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    // The header's page count is valid only when the change counter matches the
    // version-valid-for number (SQLite's own rule); a truncated copy is short of it.
    let counted = header[24..28] == header[92..96];
    if counted && pages > 0 && size < page_size * pages {
        return Err(invalid(
            path,
            format!(
                "truncated: the header says {} bytes ({pages} pages of {page_size}), the file has {size}",
                page_size * pages
            ),
        ));
    }
    Ok(size)
}

/// Checks that `path` is a whole state database of a schema this binary knows, and
/// migrates it (in place) to this binary's schema. Nothing of the live store is
/// touched; a bad file is an `InvalidSnapshot` or `SchemaTooNew` error.
pub fn check_snapshot(path: &Path) -> Result<CheckedSnapshot, StateError> {
    let size = check_header(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)
        .map_err(|e| invalid(path, format!("opening it: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .ctx(|| "setting the snapshot's busy timeout".to_string())?;
    // quick_check reads every page and checks every b-tree's structure (not that
    // each index matches its table, which integrity_check adds at several times the
    // cost): what a truncated or damaged file fails.
    let verdict: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(10)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match verdict {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => {
            return Err(invalid(
                path,
                format!("damaged: quick_check says {}", lines.join("; ")),
            ))
        }
        Err(e) => return Err(invalid(path, format!("damaged: {e}"))),
    }
    let found = schema::version(&conn).map_err(|e| invalid(path, e.to_string()))?;
    if found == 0 {
        return Err(invalid(
            path,
            "not an orch state snapshot (schema version 0)",
        ));
    }
    if found > schema::CURRENT_VERSION {
        return Err(StateError::SchemaTooNew {
            found,
            supported: schema::CURRENT_VERSION,
        });
    }
    let has_indexes: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'indexes')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| invalid(path, format!("reading its schema: {e}")))?;
    if !has_indexes {
        return Err(invalid(
            path,
            "not an orch state snapshot (no indexes table)",
        ));
    }
    let meta = meta_of(&conn, size)?;
    schema::migrate(&mut conn).map_err(|e| invalid(path, e.to_string()))?;
    Ok(CheckedSnapshot {
        conn,
        path: path.to_path_buf(),
        meta,
    })
}
