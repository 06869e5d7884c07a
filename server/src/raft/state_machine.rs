//! The state store as openraft's `RaftStateMachine`. Committed entries go to the
//! command log's one writer (`CommandLog::apply_replicated`, `record_mark`), which
//! applies each in its own transaction together with the entry's mark (its log id and
//! the membership then in force), so after a crash the state says exactly which entry
//! it holds. Snapshots are state files (`StateStore::save_snapshot`, the SQLite
//! backup API) kept as `<data_dir>/server/raft-snapshots/current.db`; the mark inside
//! a file is its snapshot meta, so the file alone describes itself.
//!
//! ```text
//!  apply(entries) ─► for each: Normal ─► log.apply_replicated(time, cmd, mark,
//!                                          answer the submitter waiting here)
//!                              Blank/Membership ─► log.record_mark(mark)
//!                   (queued, not awaited: one writer, one order)
//!  build_snapshot ─► store.save_snapshot(building.db) ─► read its mark ─► current.db
//!  install_snapshot(bytes) ─► receiving.db ─► log.install_replicated ─► current.db
//! ```

// openraft's traits return its `StorageError` (224 bytes); the helpers here build it.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageError,
    StorageIOError, StoredMembership,
};

use super::proposer::Waiting;
use super::{Applied, OrchRaft, ServerId, ServerNode};
use crate::state::backup::read_mark;
use crate::state::{CommandLog, LogError, ReplicationMark, StateError, StateStore};

type Error = StorageError<ServerId>;
type Membership = StoredMembership<ServerId, ServerNode>;
type Meta = SnapshotMeta<ServerId, ServerNode>;

/// The snapshot file every server keeps: the newest built or installed.
const CURRENT: &str = "current.db";

/// The state machine of one server.
pub struct StateMachine {
    log: CommandLog,
    /// Submitters on this server waiting for their commands' outcomes.
    waiting: Waiting,
    snapshots: Arc<SnapshotDir>,
    /// The membership of the last applied entry (written into every mark).
    membership: Membership,
}

/// The snapshot directory and the meta of its current file.
struct SnapshotDir {
    dir: PathBuf,
    /// Held while the current file is replaced or read, so a snapshot being built
    /// and one being installed never replace each other out of order.
    current: Mutex<Option<Meta>>,
}

impl StateMachine {
    /// Opens the state machine over `log` (its store holds the last applied mark),
    /// with snapshots in `dir` (created; left-over partial files removed).
    pub fn open(
        log: CommandLog,
        waiting: Waiting,
        dir: PathBuf,
    ) -> Result<StateMachine, StateError> {
        std::fs::create_dir_all(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        for partial in ["building.db", "receiving.db"] {
            let _ = std::fs::remove_file(dir.join(partial));
        }
        let current_path = dir.join(CURRENT);
        let current = if current_path.exists() {
            read_mark(&current_path)?
                .map(|mark| meta_of(&mark))
                .transpose()
                .map_err(|reason| StateError::InvalidSnapshot {
                    path: current_path.clone(),
                    reason,
                })?
        } else {
            None
        };
        let membership = match log.store().replication_mark()? {
            Some(mark) => {
                decode_mark(&mark)
                    .map_err(|reason| StateError::InvalidSnapshot {
                        path: dir.clone(),
                        reason: format!("the state's Raft mark: {reason}"),
                    })?
                    .1
            }
            None => Membership::default(),
        };
        Ok(StateMachine {
            log,
            waiting,
            snapshots: Arc::new(SnapshotDir {
                dir,
                current: Mutex::new(current),
            }),
            membership,
        })
    }

    fn mark(&self, log_id: &LogId<ServerId>) -> Result<ReplicationMark, Error> {
        encode_mark(log_id, &self.membership).map_err(|e| sm_error(ErrorVerb::Write, e))
    }
}

/// The mark of the entry `log_id` under `membership`, as stored.
fn encode_mark(
    log_id: &LogId<ServerId>,
    membership: &Membership,
) -> Result<ReplicationMark, String> {
    Ok(ReplicationMark {
        log_id: serde_json::to_string(log_id).map_err(|e| e.to_string())?,
        membership: serde_json::to_string(membership).map_err(|e| e.to_string())?,
    })
}

fn decode_mark(mark: &ReplicationMark) -> Result<(LogId<ServerId>, Membership), String> {
    let log_id = serde_json::from_str(&mark.log_id).map_err(|e| format!("its log id: {e}"))?;
    let membership =
        serde_json::from_str(&mark.membership).map_err(|e| format!("its membership: {e}"))?;
    Ok((log_id, membership))
}

/// A snapshot's meta from the mark in its file; its id names the entry it holds.
fn meta_of(mark: &ReplicationMark) -> Result<Meta, String> {
    let (log_id, membership) = decode_mark(mark)?;
    Ok(Meta {
        snapshot_id: format!("{}-{}", log_id.leader_id.term, log_id.index),
        last_log_id: Some(log_id),
        last_membership: membership,
    })
}

fn sm_error(verb: ErrorVerb, e: impl ToString) -> Error {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snapshot_error(meta: Option<&Meta>, verb: ErrorVerb, e: impl ToString) -> Error {
    let subject = match meta {
        Some(meta) => ErrorSubject::Snapshot(Some(meta.signature())),
        None => ErrorSubject::Snapshot(None),
    };
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

impl RaftStateMachine<OrchRaft> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<ServerId>>, Membership), Error> {
        let store = self.log.store().clone();
        let mark = tokio::task::spawn_blocking(move || store.replication_mark())
            .await
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        match mark {
            None => Ok((None, Membership::default())),
            Some(mark) => {
                let (log_id, membership) =
                    decode_mark(&mark).map_err(|e| sm_error(ErrorVerb::Read, e))?;
                Ok((Some(log_id), membership))
            }
        }
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, Error>
    where
        I: IntoIterator<Item = Entry<OrchRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // An entry this server could not apply (its disk): stop here rather than go
        // on with a state that lacks it.
        if let Some(why) = self.log.replication_failure() {
            return Err(sm_error(ErrorVerb::Write, why));
        }
        let queue_error = |e: LogError| sm_error(ErrorVerb::Write, e);
        // Queued, not awaited: the writer applies them back to back in this order and
        // answers each command's submitter itself (openraft hands the state machine
        // one entry at a time, so waiting here would serialise every write on a round
        // trip to the writer).
        let mut applied = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            match entry.payload {
                EntryPayload::Normal(proposal) => {
                    let mark = self.mark(&log_id)?;
                    let (waiting, id) = (self.waiting.clone(), proposal.id);
                    self.log
                        .apply_replicated(
                            proposal.time_ms,
                            proposal.command,
                            mark,
                            Box::new(move |outcome| waiting.answer(id, outcome)),
                        )
                        .map_err(queue_error)?;
                }
                EntryPayload::Blank => {
                    let mark = self.mark(&log_id)?;
                    self.log.record_mark(mark).map_err(queue_error)?;
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(log_id), membership);
                    let mark = self.mark(&log_id)?;
                    self.log.record_mark(mark).map_err(queue_error)?;
                }
            }
            applied.push(Applied {
                index: log_id.index,
            });
        }
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.log.store().clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let receiving = self.snapshots.dir.join("receiving.db");
        {
            let (path, bytes) = (receiving.clone(), snapshot.into_inner());
            tokio::task::spawn_blocking(move || write_synced(&path, &bytes))
                .await
                .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?
                .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?;
        }
        let outcome = self
            .log
            .install_replicated(receiving.clone())
            .await
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            index = outcome.index,
            "installed a Raft snapshot from the leader"
        );
        self.membership = meta.last_membership.clone();
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || snapshots.replace(&receiving, meta))
            .await
            .map_err(|e| snapshot_error(None, ErrorVerb::Write, e))?
            .map_err(|e| snapshot_error(None, ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<OrchRaft>>, Error> {
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.read_current())
            .await
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, e))?
    }
}

impl SnapshotDir {
    /// Makes `file` (whose state is that of `meta`) the current snapshot, unless the
    /// current one is newer.
    fn replace(&self, file: &Path, meta: Meta) -> Result<(), String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.last_log_id > meta.last_log_id)
        {
            let _ = std::fs::remove_file(file);
            return Ok(());
        }
        let dest = self.dir.join(CURRENT);
        std::fs::rename(file, &dest)
            .map_err(|e| format!("renaming {} to {}: {e}", file.display(), dest.display()))?;
        sync_dir(&self.dir)?;
        *current = Some(meta);
        Ok(())
    }

    fn read_current(&self) -> Result<Option<Snapshot<OrchRaft>>, Error> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(meta) = current.clone() else {
            return Ok(None);
        };
        let bytes = std::fs::read(self.dir.join(CURRENT))
            .map_err(|e| snapshot_error(Some(&meta), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Writes a snapshot file, private to the server's user (it holds the whole state).
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// Builds a snapshot: a consistent copy of the state, taken while entries apply.
pub struct SnapshotBuilder {
    store: StateStore,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<OrchRaft> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<OrchRaft>, Error> {
        let (store, snapshots) = (self.store.clone(), self.snapshots.clone());
        tokio::task::spawn_blocking(move || -> Result<Snapshot<OrchRaft>, Error> {
            let building = snapshots.dir.join("building.db");
            let fail = |e: &dyn std::fmt::Display| snapshot_error(None, ErrorVerb::Write, e);
            store.save_snapshot(&building).map_err(|e| fail(&e))?;
            // The state commits without waiting for the disk (the log replays what a
            // power cut takes); the log before this snapshot is about to go, so the
            // state it held must be on disk first.
            store.sync_to_disk().map_err(|e| fail(&e))?;
            // The copy's own mark says which entry it holds: the state as of the
            // moment the backup read it, whatever applied since.
            let mark = read_mark(&building)
                .map_err(|e| fail(&e))?
                .ok_or_else(|| fail(&"the state holds no Raft mark yet"))?;
            let meta = meta_of(&mark).map_err(|e| fail(&e))?;
            let bytes = std::fs::read(&building).map_err(|e| fail(&e))?;
            snapshots
                .replace(&building, meta.clone())
                .map_err(|e| fail(&e))?;
            tracing::info!(
                snapshot = %meta.snapshot_id,
                bytes = bytes.len(),
                "built a Raft snapshot"
            );
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            })
        })
        .await
        .map_err(|e| snapshot_error(None, ErrorVerb::Write, e))?
    }
}

#[cfg(test)]
mod tests;
