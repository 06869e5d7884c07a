//! The Raft log store: entries, the vote and the commit point in their own SQLite
//! database (`<data_dir>/server/raft.db`, 0600, WAL, synchronous=FULL, so an append
//! is on disk before openraft hears it is), apart from the state so that appending
//! never waits on the state's writer. openraft's `RaftLogStorage`.
//!
//! ```text
//!  raft_log (idx PRIMARY KEY, entry JSON)      one row per entry, idx = log index
//!  raft_meta (key PRIMARY KEY, value JSON)     "vote", "committed", "last_purged"
//! ```
//!
//! Appends are group-committed: `append` hands the encoded entries to the flusher
//! thread and returns; the flusher writes whatever has queued up meanwhile in one
//! transaction (one fsync) and then tells openraft (`LogFlushed`) that those entries
//! are on disk, which is when they count towards a commit. openraft 0.9 appends one
//! entry per write, so without this every write would pay its own fsync. Truncates,
//! purges and reads that may reach unflushed entries wait for the flusher first.
//! Other calls run on the blocking pool with the one connection.
//!
//! The newest entries are also kept decoded in memory (`Recent`, bounded by count and
//! by encoded size): the leader reads each entry back once per follower to send it,
//! and decoding a plan of a thousand allocations from JSON costs far more than
//! cloning it.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::OrchRaft;
use crate::state::{open_private, StateError};

type NodeId = u64;
type Error = StorageError<NodeId>;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS raft_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// The log store; cheap to clone (its readers are clones).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Mutex<Connection>>,
    recent: Arc<Mutex<Recent>>,
    flusher: Arc<Flusher>,
}

/// The handle on the flusher thread.
struct Flusher {
    queue: Mutex<std::sync::mpsc::Sender<Flush>>,
    /// Every entry at or below this index is on disk (0: none yet).
    flushed: std::sync::atomic::AtomicU64,
}

/// Work for the flusher thread, done in order.
enum Flush {
    /// Entries to write, and whom to tell once they are on disk.
    Rows {
        entries: Vec<Entry<OrchRaft>>,
        callback: LogFlushed<OrchRaft>,
    },
    /// The commit point, written with the next batch (openraft only reads it to
    /// re-apply faster after a restart: it need not cost an fsync of its own).
    Committed(Option<LogId<NodeId>>),
    /// Answered once everything queued before it is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Most flush requests written in one transaction.
const FLUSH_BATCH: usize = 1024;

/// The flusher thread: writes what has queued up, one transaction (one fsync) at a
/// time, then reports it.
fn run_flusher(
    db: Arc<Mutex<Connection>>,
    flusher: std::sync::Weak<Flusher>,
    queue: std::sync::mpsc::Receiver<Flush>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < FLUSH_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let written = {
            let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
            (|| -> rusqlite::Result<Option<u64>> {
                let tx = conn.transaction()?;
                let mut last = None;
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)",
                    )?;
                    for flush in &batch {
                        if let Flush::Rows { entries, .. } = flush {
                            for entry in entries {
                                let text = to_json(entry)?;
                                stmt.execute(params![sql_index(entry.log_id.index), text])?;
                                last = Some(entry.log_id.index);
                            }
                        }
                    }
                }
                let committed = batch.iter().rev().find_map(|f| match f {
                    Flush::Committed(c) => Some(*c),
                    _ => None,
                });
                if let Some(committed) = committed {
                    write_meta(&tx, "committed", &committed)?;
                }
                // synchronous=FULL: on disk when the commit returns.
                tx.commit()?;
                Ok(last)
            })()
        };
        if let (Ok(Some(last)), Some(flusher)) = (&written, flusher.upgrade()) {
            flusher
                .flushed
                .fetch_max(*last, std::sync::atomic::Ordering::SeqCst);
        }
        for flush in batch {
            match flush {
                Flush::Rows { callback, .. } => callback.log_io_completed(match &written {
                    Ok(_) => Ok(()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }),
                Flush::Barrier(done) => {
                    let _ = done.send(());
                }
                Flush::Committed(_) => {}
            }
        }
        if let Err(e) = written {
            tracing::error!(error = %e, "writing Raft log entries failed");
        }
    }
}

/// About how many bytes an entry takes encoded (for `Recent`'s bound): a plan's
/// allocations dominate.
fn approximate_size(entry: &Entry<OrchRaft>) -> usize {
    use crate::state::Command;
    match &entry.payload {
        openraft::EntryPayload::Normal(p) => match &p.command {
            Command::ApplyPlan {
                allocs, stopped, ..
            } => 1024 + 1536 * (allocs.len() + stopped.len()),
            _ => 2048,
        },
        _ => 256,
    }
}

/// Most entries kept decoded, and most of their encoded bytes.
const RECENT_ENTRIES: usize = 64;
const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// The newest appended entries, decoded: a contiguous run of indexes.
#[derive(Default)]
struct Recent {
    entries: std::collections::BTreeMap<u64, (Entry<OrchRaft>, usize)>,
    bytes: usize,
}

impl Recent {
    /// Adds an appended entry; evicts the oldest beyond the bounds, but never one
    /// above `flushed` (not on disk yet: only here).
    fn push(&mut self, entry: Entry<OrchRaft>, size: usize, flushed: u64) {
        let index = entry.log_id.index;
        // Appends continue the run; anything else (a rewrite after a truncate that
        // was not seen, a gap) starts it again.
        if self
            .entries
            .last_key_value()
            .is_some_and(|(last, _)| *last + 1 != index)
        {
            self.clear();
        }
        self.bytes += size;
        self.entries.insert(index, (entry, size));
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            match self.entries.first_key_value() {
                Some((first, _)) if *first <= flushed => {
                    if let Some((_, (_, size))) = self.entries.pop_first() {
                        self.bytes -= size;
                    }
                }
                _ => break,
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the entries at and after `index` (a truncate).
    fn truncate(&mut self, index: u64) {
        for (_, (_, size)) in self.entries.split_off(&index) {
            self.bytes -= size;
        }
    }

    /// Drops the entries at and before `index` (a purge).
    fn purge(&mut self, index: u64) {
        let kept = self.entries.split_off(&index.saturating_add(1));
        for (_, (_, size)) in std::mem::replace(&mut self.entries, kept) {
            self.bytes -= size;
        }
    }

    /// The entries of `[start, end)` when all are here.
    fn range(&self, start: u64, end: u64) -> Option<Vec<Entry<OrchRaft>>> {
        let first = *self.entries.first_key_value()?.0;
        let last = *self.entries.last_key_value()?.0;
        let end = end.min(last + 1);
        if start < first || start > end {
            return None;
        }
        Some(
            self.entries
                .range(start..end)
                .map(|(_, (e, _))| e.clone())
                .collect(),
        )
    }
}

impl LogStore {
    /// Opens (creating) the log database at `path`.
    pub fn open(path: &Path) -> Result<LogStore, StateError> {
        let conn = open_private(path)?;
        conn.execute_batch(SCHEMA)
            .map_err(|source| StateError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let db = Arc::new(Mutex::new(conn));
        let (queue, rx) = std::sync::mpsc::channel();
        let flusher = Arc::new(Flusher {
            queue: Mutex::new(queue),
            flushed: std::sync::atomic::AtomicU64::new(0),
        });
        {
            let (db, weak) = (db.clone(), Arc::downgrade(&flusher));
            std::thread::Builder::new()
                .name("orch-raft-log".to_string())
                .spawn(move || run_flusher(db, weak, rx))
                .map_err(|e| StateError::Sync {
                    path: path.to_path_buf(),
                    source: e,
                })?;
        }
        Ok(LogStore {
            db,
            recent: Arc::new(Mutex::new(Recent::default())),
            flusher,
        })
    }

    /// Waits until everything appended before is on disk (or failed).
    async fn barrier(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = self
            .flusher
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Flush::Barrier(done));
        if sent.is_ok() {
            let _ = wait.await;
        }
    }

    fn flushed(&self) -> u64 {
        self.flusher
            .flushed
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This server's Raft id: chosen at random on the first call and kept in the
    /// log database (a server's identity in the cluster lives with its log).
    pub fn server_id(&self) -> Result<super::ServerId, StateError> {
        let conn = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let sql = |source| StateError::Sql {
            context: "reading or choosing this server's Raft id".to_string(),
            source,
        };
        if let Some(id) = read_meta::<u64>(&conn, "server_id").map_err(sql)? {
            return Ok(id);
        }
        // 53 bits: ids stay exact as JSON numbers in any client's hands.
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 11).max(1);
        write_meta(&conn, "server_id", &id).map_err(sql)?;
        Ok(id)
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the log store's task failed: {e}"))?
    }
}

fn to_json<T: Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn read_meta<T: DeserializeOwned>(c: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    c.query_row("SELECT value FROM raft_meta WHERE key = ?1", [key], |r| {
        r.get::<_, String>(0)
    })
    .optional()?
    .map(|text| from_json(&text))
    .transpose()
}

fn write_meta<T: Serialize>(c: &Connection, key: &str, value: &T) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO raft_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, to_json(value)?],
    )
    .map(|_| ())
}

/// A `u64` log index as SQLite stores it (indexes past `i64::MAX` never occur; they
/// are clamped so a range's open end still reads everything).
fn sql_index(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// `[start, end)` of a range of log indexes.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&n) => n.saturating_add(1),
        Bound::Excluded(&n) => n,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<OrchRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<OrchRaft>>, Error> {
        let (start, end) = index_range(&range);
        if let Some(entries) = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(start, end)
        {
            return Ok(entries);
        }
        if end.saturating_sub(1) > self.flushed() {
            self.barrier().await;
        }
        self.with_db(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )?;
            let rows = stmt.query_map(params![sql_index(start), sql_index(end)], |r| {
                r.get::<_, String>(0)
            })?;
            rows.map(|text| from_json(&text?)).collect()
        })
        .await
        .map_err(|e| StorageIOError::read_logs(openraft::AnyError::error(e)).into())
    }
}

impl RaftLogStorage<OrchRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<OrchRaft>, Error> {
        self.barrier().await;
        self.with_db(|c| {
            let last_purged: Option<LogId<NodeId>> = read_meta(c, "last_purged")?;
            let last: Option<Entry<OrchRaft>> = c
                .query_row(
                    "SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .map(|text| from_json(&text))
                .transpose()?;
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last.map(|e| e.log_id).or(last_purged),
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(openraft::AnyError::error(e)).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), Error> {
        let vote = *vote;
        self.with_db(move |c| write_meta(c, "vote", &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(openraft::AnyError::error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, Error> {
        self.with_db(|c| read_meta(c, "vote"))
            .await
            .map_err(|e| StorageIOError::read_vote(openraft::AnyError::error(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), Error> {
        self.flusher
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Flush::Committed(committed))
            .map_err(|_| {
                StorageIOError::write(openraft::AnyError::error(
                    "the Raft log's flusher thread stopped",
                ))
                .into()
            })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, Error> {
        self.barrier().await;
        self.with_db(|c| Ok(read_meta::<Option<LogId<NodeId>>>(c, "committed")?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(openraft::AnyError::error(e)).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<OrchRaft>) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry<OrchRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<OrchRaft>> = entries.into_iter().collect();
        // Encoded on the flusher thread, off openraft's core task; kept decoded here
        // for the reads that follow (replication to the followers).
        {
            let flushed = self.flushed();
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for entry in &entries {
                recent.push(entry.clone(), approximate_size(entry), flushed);
            }
        }
        let queued = self
            .flusher
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Flush::Rows { entries, callback });
        match queued {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::SendError(flush)) => {
                let e = "the Raft log's flusher thread stopped";
                if let Flush::Rows { callback, .. } = flush {
                    callback.log_io_completed(Err(std::io::Error::other(e)));
                }
                Err(StorageIOError::write_logs(openraft::AnyError::error(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        self.barrier().await;
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(log_id.index);
        self.with_db(move |c| {
            c.execute(
                "DELETE FROM raft_log WHERE idx >= ?1",
                [sql_index(log_id.index)],
            )
            .map(|_| ())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(openraft::AnyError::error(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        self.barrier().await;
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .purge(log_id.index);
        self.with_db(move |c| {
            let tx = c.transaction()?;
            write_meta(&tx, "last_purged", &log_id)?;
            tx.execute(
                "DELETE FROM raft_log WHERE idx <= ?1",
                [sql_index(log_id.index)],
            )?;
            tx.commit()
        })
        .await
        .map_err(|e| StorageIOError::write_logs(openraft::AnyError::error(e)).into())
    }
}

#[cfg(test)]
mod tests;
